"""KFP component at the end of a round: :func:`cosmos.selftraining.rounds.register`.

The round's fold models as one new ``cosmos-segmenter`` version, the promotion gate for the
``champion`` alias, the round's entry in the cumulative *summary* artifact (K is fixed at compile
time but a component's signature is fixed too, so each round hands the next everything the report
needs), and the fold models the next student may warm-start from.
"""

from typing import List, Optional

from kfp.dsl import Dataset, Input, Model, Output


def register_round(
    scores: Input[Dataset],
    val_predictions: Input[Dataset],
    round_run: Input[Dataset],
    round_index: int,
    is_final: bool,
    profile: str,
    config: str,
    overrides: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    summary: Output[Dataset],
    models: Output[Model],
    pseudo_labels: Optional[Input[Dataset]] = None,
    kept_labels: Optional[Input[Dataset]] = None,
    previous: Optional[Input[Dataset]] = None,
    fold_models: Optional[Input[List[Model]]] = None,
    fold_model_0: Optional[Input[Model]] = None,
    fold_model_1: Optional[Input[Model]] = None,
    fold_model_2: Optional[Input[Model]] = None,
    fold_model_3: Optional[Input[Model]] = None,
    fold_model_4: Optional[Input[Model]] = None,
    compiled_profile: str = "",
) -> str:
    """Returns the registered cosmos-segmenter version."""
    from components import _runtime as rt
    from cosmos.config import ROUND_COUNT

    # the round's folds: gathered from the ParallelFor, or one input per fold (cosmos compile --unroll-folds)
    model_paths = rt.fold_model_paths(
        fold_models, (fold_model_0, fold_model_1, fold_model_2, fold_model_3, fold_model_4)
    )
    optional = [x.path if x is not None else None for x in (pseudo_labels, kept_labels, previous)]

    def body(cfg, out):
        from cosmos.selftraining.rounds import fold_model_dirs, register

        res = register(
            round_index,
            cfg,
            fold_dirs=fold_model_dirs(model_paths),
            scores_dir=scores.path,
            predictions_dir=val_predictions.path,
            run_dir=round_run.path,
            is_final=bool(is_final),
            summary_dir=out["summary"],
            models_dir=out["models"],
            tracking_uri=rt.tracking(tracking_uri, out["summary"]),
            labels_dir=optional[0],
            kept_dir=optional[1],
            previous_summary_dir=optional[2],
        )
        return {"model_version": res["model_version"], "promoted": res["promoted"]}

    result = rt.run_component(
        "register_round",
        body,
        {"summary": summary.path, "models": models.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        experiment=experiment,
        overrides=overrides,
        work_root=work_root,
        run_name=f"register_round{round_index}",
        params={"round": round_index, "final": bool(is_final), "tracking_uri": tracking_uri},
        inputs=[*model_paths, scores.path, val_predictions.path, round_run.path, *optional],
        sections=["tracking", "selftraining", "checks"],
        exclude=ROUND_COUNT,
        # the next student warm-starts from these: a copy of the fold models, so a changed threshold of the
        # checks (which re-registers the round) must not retrain the students after it
        lineage={"models": model_paths},
    )
    summary.metadata.update({"round": round_index, **result})
    return str(result["model_version"])
