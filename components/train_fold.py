"""KFP component: train one nnU-Net fold of one round (a GPU task; one ParallelFor iteration).

Thin wrapper around :func:`cosmos.selftraining.rounds.train`; a fold depends on no other fold and
resumes from its own checkpoints.
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Model, Output


def train_fold(
    prepared: Input[Dataset],
    fold: int,
    round_index: int,
    round_run: Input[Dataset],
    profile: str,
    config: str,
    overrides: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    model: Output[Model],
    teacher_models: Optional[Input[Model]] = None,
    pipeline_run_id: str = "",
) -> int:
    """round_run: start_round_run's run_info; teacher_models: the previous round's fold models
    (used when ``selftraining.student_init`` is ``teacher``). Returns the fold index.

    pipeline_run_id: the KFP run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), the same for every
    retry of this task: on a cluster (no work_root) it keys the fold's checkpoints in
    ``segmentation.checkpoint_uri``, so a retried pod resumes from its last checkpoint. It is kept
    out of the stage key; a local run (work_root set) resumes from its keyed work dir instead."""
    from components import _runtime as rt
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT, checks_except
    from cosmos.resume import stage_key

    rt.setup()
    fold = int(fold)  # kfp.local hands loop items over as they came; be strict
    cfg = rt.load_cfg(profile, config, experiment, overrides)
    teacher = teacher_models.path if teacher_models is not None else None
    key = stage_key(
        "train_fold",
        {"fold": fold, "round": round_index},
        [prepared.path, round_run.path, teacher],
        cfg,
        ["segmentation", "selftraining", "checks"],
        exclude=(*PREDICTION_ONLY, *ROUND_COUNT, *checks_except("min_pseudo_dice")),
    )

    def body(out):
        from cosmos.selftraining.rounds import train

        return train(
            round_index,
            fold,
            cfg,
            prepared_dir=prepared.path,
            run_dir=round_run.path,
            out_dir=out["model"],
            tracking_uri=rt.tracking(tracking_uri, out["model"]),
            teacher_models_dir=teacher,
            pipeline_run_id="" if work_root else pipeline_run_id,
        )

    result = rt.run(f"train_fold{round_index}_{fold}", {"model": model.path}, body, key=key, work_root=work_root)
    model.metadata.update({"fold": fold, "round": round_index})
    return int(result["fold"])
