"""KFP component: one round's validation predictions, what the round is scored on (a GPU task).

Thin wrapper around :func:`cosmos.selftraining.rounds.predict_validation` (an ensemble prediction
of the round's folds).
"""

from typing import List, Optional

from kfp.dsl import Dataset, Input, Model, Output


def predict_validation(
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    overrides: str,
    work_root: str,
    predictions: Output[Dataset],
    fold_models: Optional[Input[List[Model]]] = None,
    fold_model_0: Optional[Input[Model]] = None,
    fold_model_1: Optional[Input[Model]] = None,
    fold_model_2: Optional[Input[Model]] = None,
    fold_model_3: Optional[Input[Model]] = None,
    fold_model_4: Optional[Input[Model]] = None,
    compiled_profile: str = "",
) -> int:
    """Returns the number of predicted validation cases (0 when the data has none)."""
    from components import _runtime as rt
    from cosmos.config import checks_except

    # the round's folds: gathered from the ParallelFor, or one input per fold (cosmos compile --unroll-folds)
    model_paths = rt.fold_model_paths(
        fold_models, (fold_model_0, fold_model_1, fold_model_2, fold_model_3, fold_model_4)
    )

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
        compiled_profile=compiled_profile,
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
