"""KFP components for the start of a self-training round.

* ``prepare_round``: nnU-Net raw export + plan + preprocess into one self-contained directory
  (the artifact every fold task of the round reads), via
  :func:`cosmos.segmentation.prepare.prepare_round`. Round 0 (the teacher) uses the labelled
  pseudo-hrT2 only; round k > 0 adds the real hrT2 images whose pseudo-labels survived the filter.
* ``start_round_run``: opens the round's MLflow parent run; fold tasks (separate pods) nest
  under it through the ``mlflow.parentRunId`` tag. The run id travels as a small *artifact*
  (``run_info/run.json``), not only as a parameter: kfp.local 2.17 hands a task-output
  parameter consumed inside a ParallelFor the loop item instead (measured), artifacts are right.
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Output


def prepare_round(
    pseudo: Input[Dataset],
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    work_root: str,
    prepared: Output[Dataset],
    kept_labels: Optional[Input[Dataset]] = None,
) -> int:
    """kept_labels: the previous round's filtered pseudo-labels (None for the teacher).
    Returns the number of training cases."""
    from pathlib import Path

    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    kept_path = kept_labels.path if kept_labels is not None else None
    key = rt.stage_key("prepare_round", {"round": round_index}, [pseudo.path, data.path, kept_path], cfg,
                       ["segmentation", "selftraining"])

    def body(out):
        from cosmos.data.layout import TARGET_DIR
        from cosmos.segmentation.prepare import prepare_round as prepare

        target = Path(data.path) / TARGET_DIR if kept_path else None
        prepare(pseudo.path, out["prepared"], cfg, round_index=round_index, target_images_dir=target,
                pseudo_labels_dir=kept_path)
        n = len(list(Path(pseudo.path).glob("*_Label.nii.gz")))
        if kept_path:
            n += len(list(Path(kept_path).glob("*_Label.nii.gz")))
        return {"n_cases": n}

    result = rt.run_stage(f"prepare_round{round_index}", {"prepared": prepared.path}, body, key=key,
                          work_root=work_root)
    prepared.metadata.update(result)
    return int(result["n_cases"])


def start_round_run(
    prepared: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    run_info: Output[Dataset],
) -> str:
    """Returns the MLflow run id of the round ("" when tracking is unavailable); run_info holds
    the same id in ``run.json`` for consumers inside the fold loop."""
    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config, experiment)
    key = rt.stage_key("start_round_run", {"round": round_index, "tracking_uri": tracking_uri},
                       [prepared.path], cfg, ["segmentation", "tracking"])

    def body(out):
        from cosmos.segmentation.mlflow_logging import start_round_run as start

        uri = rt.mlflow_tracking(tracking_uri, out["run_info"])
        run = start(round_index, experiment=cfg.tracking.experiment, tracking_uri=uri,
                    params=cfg.flat("segmentation"), tags={"cosmos.profile": cfg.profile})
        rt.write_run_info(out["run_info"], run.run_id or "", round_index)
        return {"run_id": run.run_id or ""}

    result = rt.run_stage(f"start_round_run{round_index}", {"run_info": run_info.path}, body, key=key,
                          work_root=work_root)
    return str(result["run_id"])
