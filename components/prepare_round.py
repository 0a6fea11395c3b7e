"""KFP components for the start of a self-training round.

* ``prepare_round``: the round's nnU-Net dataset (raw export + plan + preprocess, one
  self-contained directory every fold task reads): :func:`cosmos.selftraining.rounds.prepare`.
* ``start_round_run``: the round's MLflow parent run: :func:`cosmos.selftraining.rounds.open_round`.
  Fold tasks (separate pods) nest under it through ``mlflow.parentRunId``. The run id travels as a
  small *artifact* (``run.json``): kfp.local 2.17 hands a task-output parameter consumed inside a
  ParallelFor the loop item instead, artifacts arrive intact.
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Output


def prepare_round(
    pseudo: Input[Dataset],
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    overrides: str,
    work_root: str,
    prepared: Output[Dataset],
    kept_labels: Optional[Input[Dataset]] = None,
    previous_prepared: Optional[Input[Dataset]] = None,
) -> int:
    """kept_labels: the previous round's accepted pseudo-labels (None for the teacher);
    previous_prepared: the previous round's dataset (its plan, for warm-started students, and the
    replay check). Returns the number of training cases."""
    from components import _runtime as rt
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config, "", overrides)
    kept_path = kept_labels.path if kept_labels is not None else None
    previous = previous_prepared.path if previous_prepared is not None else None
    key = stage_key(
        "prepare_round",
        {"round": round_index},
        [pseudo.path, data.path, kept_path, previous],
        cfg,
        ["segmentation", "selftraining"],
        exclude=(*PREDICTION_ONLY, *ROUND_COUNT),
    )

    def body(out):
        from cosmos.selftraining.rounds import prepare

        return prepare(
            round_index,
            cfg,
            pseudo_dir=pseudo.path,
            data_dir=data.path,
            kept_dir=kept_path,
            out_dir=out["prepared"],
            previous_prepared_dir=previous,
        )

    result = rt.run(f"prepare_round{round_index}", {"prepared": prepared.path}, body, key=key, work_root=work_root)
    prepared.metadata.update({k: v for k, v in result.items() if v is not None})
    return int(result["n_cases"])


def start_round_run(
    prepared: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    overrides: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    run_info: Output[Dataset],
) -> str:
    """Returns the MLflow run id of the round ("" when tracking is unavailable)."""
    from components import _runtime as rt
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config, experiment, overrides)
    key = stage_key(
        "start_round_run",
        {"round": round_index, "tracking_uri": tracking_uri},
        [prepared.path],
        cfg,
        ["segmentation", "selftraining", "tracking"],
        exclude=(*PREDICTION_ONLY, *ROUND_COUNT),
    )

    def body(out):
        from cosmos.selftraining.rounds import open_round

        return open_round(
            round_index,
            cfg,
            prepared_dir=prepared.path,
            out_dir=out["run_info"],
            tracking_uri=rt.tracking(tracking_uri, out["run_info"]),
        )

    result = rt.run(f"start_round_run{round_index}", {"run_info": run_info.path}, body, key=key, work_root=work_root)
    return str(result["run_id"])
