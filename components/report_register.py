"""KFP components at the end of a round and of the run.

* ``register_round``: :func:`cosmos.selftraining.rounds.register`: the round's fold models as one new
  ``cosmos-segmenter`` version, the promotion gate for the ``champion`` alias, the round's entry in
  the cumulative *summary* artifact (K is fixed at compile time but a component's signature is
  fixed too, so each round hands the next everything the report needs), and the fold models the
  next student may warm-start from.
* ``report``: the Markdown + HTML report with pictures (:func:`cosmos.evaluation.report.write_report`,
  also attached to the final round's MLflow run) and the run's *bundle*: ``report/``,
  ``predictions/`` (the champion round's), ``metrics.json`` and ``summary.json``.
"""

from typing import List, Optional

from kfp.dsl import HTML, Dataset, Input, Markdown, Model, Output


def register_round(
    fold_models: Input[List[Model]],
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
) -> str:
    """Returns the registered cosmos-segmenter version."""
    from components import _runtime as rt
    from cosmos.config import ROUND_COUNT
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config, experiment, overrides)
    model_paths = sorted(m.path for m in fold_models)
    optional = [x.path if x is not None else None for x in (pseudo_labels, kept_labels, previous)]
    key = stage_key(
        "register_round",
        {"round": round_index, "final": bool(is_final), "tracking_uri": tracking_uri},
        [*model_paths, scores.path, val_predictions.path, round_run.path, *optional],
        cfg,
        ["tracking", "selftraining", "checks"],
        exclude=ROUND_COUNT,
    )

    def body(out):
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

    result = rt.run(
        f"register_round{round_index}",
        {"summary": summary.path, "models": models.path},
        body,
        key=key,
        work_root=work_root,
    )
    summary.metadata.update({"round": round_index, **result})
    return str(result["model_version"])


def report(
    summary: Input[Dataset],
    data: Input[Dataset],
    pseudo: Input[Dataset],
    profile: str,
    config: str,
    tracking_uri: str,
    work_root: str,
    bundle: Output[Dataset],
    report_md: Output[Markdown],
    report_html: Output[HTML],
) -> str:
    """Returns the champion round's mean Dice as text ("n/a" without validation labels)."""
    import shutil
    from pathlib import Path

    from components import _runtime as rt
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    key = stage_key("report", {}, [summary.path, data.path, pseudo.path], cfg, [])

    def body(out):
        from cosmos.selftraining.rounds import report as write_run_report

        dice = write_run_report(
            summary.path,
            out["bundle"],
            data_dir=data.path,
            pseudo_dir=pseudo.path,
            profile=cfg.profile,
            tracking_uri=rt.tracking(tracking_uri, out["bundle"]),
        )
        return {"final_mean_dice": dice}

    result = rt.run("report", {"bundle": bundle.path}, body, key=key, work_root=work_root)
    report_dir = Path(bundle.path) / "report"
    shutil.copyfile(report_dir / "report.md", report_md.path)
    shutil.copyfile(report_dir / "report.html", report_html.path)
    return str(result["final_mean_dice"])
