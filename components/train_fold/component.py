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
    compiled_profile: str = "",
) -> int:
    """round_run: start_round_run's run_info; teacher_models: the previous round's fold models
    (used when ``selftraining.student_init`` is ``teacher``). Returns the fold index.

    pipeline_run_id: the KFP run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), the same for every
    retry of this task: on a cluster (no work_root) it keys the fold's checkpoints in
    ``segmentation.checkpoint_uri``, so a retried pod resumes from its last checkpoint. It is kept
    out of the stage key; a local run (work_root set) resumes from its keyed work dir instead."""
    from components import _runtime as rt
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT, checks_except

    fold = int(fold)  # kfp.local hands loop items over as they came; be strict
    teacher = teacher_models.path if teacher_models is not None else None

    def body(cfg, out):
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

    result = rt.run_component(
        "train_fold",
        body,
        {"model": model.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        experiment=experiment,
        overrides=overrides,
        work_root=work_root,
        run_name=f"train_fold{round_index}_{fold}",
        params={"fold": fold, "round": round_index},
        inputs=[prepared.path, round_run.path, teacher],
        sections=["segmentation", "selftraining", "checks"],
        exclude=(*PREDICTION_ONLY, *ROUND_COUNT, *checks_except("min_pseudo_dice")),
    )
    model.metadata.update({"fold": fold, "round": round_index})
    return int(result["fold"])
