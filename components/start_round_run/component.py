"""KFP component: the round's MLflow parent run (:func:`cosmos.selftraining.rounds.open_round`).

Fold tasks (separate pods) nest under it through ``mlflow.parentRunId``. The run id travels as a
small *artifact* (``run.json``): kfp.local 2.17 hands a task-output parameter consumed inside a
ParallelFor the loop item instead, artifacts arrive intact.
"""

from kfp.dsl import Dataset, Input, Output


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
    compiled_profile: str = "",
) -> str:
    """prepared: the round's ``prepared_header`` (manifest and plans; no images). Returns the MLflow run id of the
    round ("" when tracking is unavailable)."""
    from components import _runtime as rt
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT

    def body(cfg, out):
        from cosmos.selftraining.rounds import open_round

        return open_round(
            round_index,
            cfg,
            prepared_dir=prepared.path,
            out_dir=out["run_info"],
            tracking_uri=rt.tracking(tracking_uri, out["run_info"]),
        )

    result = rt.run_component(
        "start_round_run",
        body,
        {"run_info": run_info.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        experiment=experiment,
        overrides=overrides,
        work_root=work_root,
        run_name=f"start_round_run{round_index}",
        params={"round": round_index, "tracking_uri": tracking_uri},
        inputs=[prepared.path],
        sections=["segmentation", "selftraining", "tracking"],
        exclude=(*PREDICTION_ONLY, *ROUND_COUNT),
    )
    return str(result["run_id"])
