"""KFP component: train one nnU-Net fold of one round (a GPU task; one ParallelFor iteration).

Thin wrapper around :func:`cosmos.segmentation.training.train_fold`, which depends on no other
fold and resumes from its own checkpoints.
"""

from kfp.dsl import Dataset, Input, Model, Output


def train_fold(
    prepared: Input[Dataset],
    fold: int,
    round_index: int,
    round_run: Input[Dataset],
    profile: str,
    config: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    model: Output[Model],
) -> int:
    """round_run: start_round_run's run_info (the round's MLflow run id). Returns the fold index."""
    from components import _runtime as rt

    rt.setup()
    fold = int(fold)  # kfp.local hands loop items over as they came; be strict
    cfg = rt.load_cfg(profile, config, experiment)
    key = rt.stage_key("train_fold", {"fold": fold, "round": round_index}, [prepared.path, round_run.path], cfg,
                       ["segmentation"])

    def body(out):
        from cosmos.segmentation.training import train_fold as train

        uri = rt.mlflow_tracking(tracking_uri, out["model"])
        fold_dir = train(prepared.path, fold, out["model"], cfg, parent_run_id=rt.read_run_id(round_run.path),
                         tracking_uri=uri)
        rt.write_pointer(out["model"], fold_dir)
        return {"fold": fold}

    result = rt.run_stage(f"train_fold{round_index}_{fold}", {"model": model.path}, body, key=key,
                          work_root=work_root)
    model.metadata.update({"fold": fold, "round": round_index})
    return int(result["fold"])
