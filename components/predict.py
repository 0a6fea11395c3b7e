"""KFP components: ensemble prediction of one round's folds (a GPU task).

* ``predict_pseudo_labels``: predicts the real target_training hrT2 images, then keeps only the
  cases whose prediction holds every required structure (COSMOS filter, paper 3.3); the kept
  set trains the next round's student. Wraps
  :func:`cosmos.segmentation.inference.predict` and
  :func:`cosmos.selftraining.filtering.filter_pseudo_labels`.
* ``predict_validation``: predicts target_validation (what the round is scored on).
"""

from typing import List, NamedTuple

from kfp.dsl import Dataset, Input, Model, Output


def predict_pseudo_labels(
    fold_models: Input[List[Model]],
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    work_root: str,
    pseudo_labels: Output[Dataset],
    kept_labels: Output[Dataset],
) -> NamedTuple("FilterOutputs", [("n_kept", int), ("n_dropped", int)]):
    """pseudo_labels: every prediction; kept_labels: the filtered ones (next round's labels)."""
    from collections import namedtuple
    from pathlib import Path

    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    model_paths = sorted(m.path for m in fold_models)
    key = rt.stage_key("predict_pseudo_labels", {"round": round_index}, [*model_paths, data.path], cfg,
                       ["segmentation", "selftraining"])

    def body(out):
        from cosmos.data.layout import TARGET_DIR
        from cosmos.segmentation.inference import predict
        from cosmos.selftraining.filtering import filter_pseudo_labels

        fold_dirs = [rt.read_pointer(p) for p in model_paths]
        predict(fold_dirs, Path(data.path) / TARGET_DIR, out["pseudo_labels"], cfg)
        res = filter_pseudo_labels(out["pseudo_labels"], out["kept_labels"],
                                   required_labels=tuple(cfg.selftraining.required_labels))
        return {"kept": list(res.kept), "dropped": list(res.dropped)}

    result = rt.run_stage(f"predict_pseudo_labels{round_index}",
                          {"pseudo_labels": pseudo_labels.path, "kept_labels": kept_labels.path}, body, key=key,
                          work_root=work_root)
    kept_labels.metadata.update({"n_kept": len(result["kept"]), "n_dropped": len(result["dropped"])})
    outputs = namedtuple("FilterOutputs", ["n_kept", "n_dropped"])
    return outputs(len(result["kept"]), len(result["dropped"]))


def predict_validation(
    fold_models: Input[List[Model]],
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    work_root: str,
    predictions: Output[Dataset],
) -> int:
    """Returns the number of predicted validation cases (0 when the data has none)."""
    from pathlib import Path

    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    model_paths = sorted(m.path for m in fold_models)
    key = rt.stage_key("predict_validation", {"round": round_index}, [*model_paths, data.path], cfg,
                       ["segmentation"])

    def body(out):
        import logging

        from cosmos.data.layout import VALIDATION_DIR
        from cosmos.segmentation.inference import predict

        images = Path(data.path) / VALIDATION_DIR
        if not images.is_dir() or not any(images.glob("*.nii*")):
            logging.getLogger("cosmos.component").warning("no target_validation images: nothing to predict")
            return {"n_cases": 0}
        written = predict([rt.read_pointer(p) for p in model_paths], images, out["predictions"], cfg)
        return {"n_cases": len(written)}

    result = rt.run_stage(f"predict_validation{round_index}", {"predictions": predictions.path}, body, key=key,
                          work_root=work_root)
    predictions.metadata.update(result)
    return int(result["n_cases"])
