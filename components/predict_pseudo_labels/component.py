"""KFP component: one round's pseudo-labels, an ensemble prediction of its folds (a GPU task).

Thin wrapper around :func:`cosmos.selftraining.rounds.pseudo_label` (real target-training hrT2,
mirroring on, then the pseudo-label filter; the accepted set trains the next student).
"""

from typing import List, NamedTuple, Optional

from kfp.dsl import Dataset, Input, Model, Output


def predict_pseudo_labels(
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
    fold_models: Optional[Input[List[Model]]] = None,
    fold_model_0: Optional[Input[Model]] = None,
    fold_model_1: Optional[Input[Model]] = None,
    fold_model_2: Optional[Input[Model]] = None,
    fold_model_3: Optional[Input[Model]] = None,
    fold_model_4: Optional[Input[Model]] = None,
    compiled_profile: str = "",
) -> NamedTuple("FilterOutputs", [("n_kept", int), ("n_dropped", int)]):  # type: ignore[valid-type]  # KFP's syntax for named outputs
    """pseudo_labels: every prediction; kept_labels: the accepted ones (next round's labels)."""
    from collections import namedtuple

    from components import _runtime as rt
    from cosmos.config import ROUND_COUNT, checks_except

    # the round's folds: gathered from the ParallelFor, or one input per fold (cosmos compile --unroll-folds)
    model_paths = rt.fold_model_paths(
        fold_models, (fold_model_0, fold_model_1, fold_model_2, fold_model_3, fold_model_4)
    )
    previous = previous_kept.path if previous_kept is not None else None

    def body(cfg, out):
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

    result = rt.run_component(
        "predict_pseudo_labels",
        body,
        {"pseudo_labels": pseudo_labels.path, "kept_labels": kept_labels.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        overrides=overrides,
        work_root=work_root,
        run_name=f"predict_pseudo_labels{round_index}",
        params={"round": round_index},
        inputs=[*model_paths, data.path, round_run.path, previous],
        sections=["segmentation", "selftraining", "checks"],
        exclude=(*ROUND_COUNT, *checks_except("volume_range_factor")),
    )
    kept_labels.metadata.update({"n_kept": len(result["kept"]), "n_dropped": len(result["dropped"])})
    outputs = namedtuple("FilterOutputs", ["n_kept", "n_dropped"])  # type: ignore[name-match]
    return outputs(len(result["kept"]), len(result["dropped"]))
