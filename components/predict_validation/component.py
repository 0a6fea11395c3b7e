"""KFP component: one round's validation predictions, what the round is scored on (a GPU task).

Thin wrapper around :func:`cosmos.selftraining.rounds.predict_validation` (an ensemble prediction
of the round's folds).
"""

from typing import List

from kfp.dsl import Dataset, Input, Model, Output


def predict_validation(
    fold_models: Input[List[Model]],
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    overrides: str,
    work_root: str,
    predictions: Output[Dataset],
) -> int:
    """Returns the number of predicted validation cases (0 when the data has none)."""
    from components import _runtime as rt
    from cosmos.config import checks_except

    model_paths = sorted(m.path for m in fold_models)

    def body(cfg, out):
        from cosmos.selftraining.rounds import fold_model_dirs
        from cosmos.selftraining.rounds import predict_validation as predict

        return predict(
            round_index, cfg, fold_dirs=fold_model_dirs(model_paths), data_dir=data.path, out_dir=out["predictions"]
        )

    result = rt.run_component(
        "predict_validation",
        body,
        {"predictions": predictions.path},
        profile=profile,
        config=config,
        overrides=overrides,
        work_root=work_root,
        run_name=f"predict_validation{round_index}",
        params={"round": round_index},
        inputs=[*model_paths, data.path],
        sections=["segmentation", "checks"],
        exclude=checks_except("volume_range_factor"),
    )
    predictions.metadata.update(result)
    return int(result["n_cases"])
