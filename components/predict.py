"""KFP components: ensemble prediction of one round's folds (GPU tasks).

* ``predict_pseudo_labels``: :func:`cosmos.selftraining.rounds.pseudo_label` (real target-training
  hrT2, mirroring on, then the pseudo-label filter; the accepted set trains the next student).
* ``predict_validation``: :func:`cosmos.selftraining.rounds.predict_validation` (what the round is
  scored on).
"""

from typing import List, NamedTuple, Optional

from kfp.dsl import Dataset, Input, Model, Output


def predict_pseudo_labels(
    fold_models: Input[List[Model]],
    data: Input[Dataset],
    round_index: int,
    round_run: Input[Dataset],
    profile: str,
    config: str,
    overrides: str,
    tracking_uri: str,
    work_root: str,
    pseudo_labels: Output[Dataset],
    kept_labels: Output[Dataset],
    previous_kept: Optional[Input[Dataset]] = None,
) -> NamedTuple("FilterOutputs", [("n_kept", int), ("n_dropped", int)]):
    """pseudo_labels: every prediction; kept_labels: the accepted ones (next round's labels)."""
    from collections import namedtuple

    from components import _runtime as rt
    from cosmos.config import ROUND_COUNT, checks_except
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config, "", overrides)
    model_paths = sorted(m.path for m in fold_models)
    previous = previous_kept.path if previous_kept is not None else None
    key = stage_key(
        "predict_pseudo_labels",
        {"round": round_index},
        [*model_paths, data.path, round_run.path, previous],
        cfg,
        ["segmentation", "selftraining", "checks"],
        exclude=(*ROUND_COUNT, *checks_except("volume_range_factor")),
    )

    def body(out):
        from cosmos.selftraining.rounds import fold_model_dirs, pseudo_label

        return pseudo_label(
            round_index,
            cfg,
            fold_dirs=fold_model_dirs(model_paths),
            data_dir=data.path,
            previous_kept_dir=previous,
            run_dir=round_run.path,
            labels_dir=out["pseudo_labels"],
            kept_dir=out["kept_labels"],
            tracking_uri=rt.tracking(tracking_uri, out["kept_labels"]),
        )

    result = rt.run(
        f"predict_pseudo_labels{round_index}",
        {"pseudo_labels": pseudo_labels.path, "kept_labels": kept_labels.path},
        body,
        key=key,
        work_root=work_root,
    )
    kept_labels.metadata.update({"n_kept": len(result["kept"]), "n_dropped": len(result["dropped"])})
    outputs = namedtuple("FilterOutputs", ["n_kept", "n_dropped"])
    return outputs(len(result["kept"]), len(result["dropped"]))


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
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config, "", overrides)
    model_paths = sorted(m.path for m in fold_models)
    key = stage_key(
        "predict_validation",
        {"round": round_index},
        [*model_paths, data.path],
        cfg,
        ["segmentation", "checks"],
        exclude=checks_except("volume_range_factor"),
    )

    def body(out):
        from cosmos.selftraining.rounds import fold_model_dirs
        from cosmos.selftraining.rounds import predict_validation as predict

        return predict(
            round_index, cfg, fold_dirs=fold_model_dirs(model_paths), data_dir=data.path, out_dir=out["predictions"]
        )

    result = rt.run(
        f"predict_validation{round_index}", {"predictions": predictions.path}, body, key=key, work_root=work_root
    )
    predictions.metadata.update(result)
    return int(result["n_cases"])
