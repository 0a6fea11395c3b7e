"""KFP components at the end of a round and of the run.

* ``register_round``: registers the round's fold models as one new version of the
  ``cosmos-segmenter`` MLflow model (the final round also gets the ``champion`` alias), via
  :func:`cosmos.segmentation.registry.register_round`, and appends the round to a cumulative
  *summary* artifact. Why cumulative: the number of rounds is fixed at compile time but a KFP
  component has a fixed signature, so each round hands the next one everything the report needs
  (metrics, predictions, pseudo-labels, kept/dropped) and the report reads only the last summary.
* ``report``: the Markdown + HTML report with pictures
  (:func:`cosmos.evaluation.report.write_report`, also attached to the final round's MLflow run)
  and the run's final *bundle*: ``report/``,
  ``predictions/crossmoda_{k}_Label.nii.gz`` (final round, every validation case),
  ``metrics.json`` (final round, when labels exist) and ``summary.json``.
"""

from typing import List, Optional

from kfp.dsl import HTML, Dataset, Input, Markdown, Model, Output


def register_round(
    fold_models: Input[List[Model]],
    scores: Input[Dataset],
    val_predictions: Input[Dataset],
    round_run: Input[Dataset],
    round_index: int,
    alias: str,
    profile: str,
    config: str,
    tracking_uri: str,
    experiment: str,
    work_root: str,
    summary: Output[Dataset],
    pseudo_labels: Optional[Input[Dataset]] = None,
    kept_labels: Optional[Input[Dataset]] = None,
    previous: Optional[Input[Dataset]] = None,
) -> str:
    """Returns the registered cosmos-segmenter version ("" when MLflow is unavailable)."""
    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config, experiment)
    model_paths = sorted(m.path for m in fold_models)
    optional = [x.path if x is not None else None for x in (pseudo_labels, kept_labels, previous)]
    key = rt.stage_key("register_round", {"round": round_index, "alias": alias, "tracking_uri": tracking_uri},
                       [*model_paths, scores.path, val_predictions.path, round_run.path, *optional], cfg,
                       ["tracking"])

    def body(out):
        from cosmos.segmentation.registry import register_round as register

        uri = rt.mlflow_tracking(tracking_uri, out["summary"])
        run_id = rt.read_run_id(round_run.path)
        final_alias = cfg.tracking.champion_alias if alias == "champion" else alias  # the configured name
        version = register([rt.read_pointer(p) for p in model_paths], round_index, cfg,
                           tags={"cosmos.profile": cfg.profile}, alias=final_alias or None, tracking_uri=uri,
                           run_id=run_id)
        if run_id:
            rt.end_round_run(run_id, round_index, uri)
        rt.append_round_summary(out["summary"], previous.path if previous is not None else None,
                                round_index=round_index, model_version=version or "", scores_dir=scores.path,
                                predictions_dir=val_predictions.path,
                                pseudo_labels_dir=pseudo_labels.path if pseudo_labels is not None else None,
                                kept_dir=kept_labels.path if kept_labels is not None else None, run_id=run_id)
        return {"model_version": str(version or "")}

    result = rt.run_stage(f"register_round{round_index}", {"summary": summary.path}, body, key=key,
                          work_root=work_root)
    summary.metadata.update({"round": round_index, "model_version": result["model_version"]})
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
    """Returns the final round's mean Dice as text ("n/a" without validation labels)."""
    import shutil
    from pathlib import Path

    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    key = rt.stage_key("report", {}, [summary.path, data.path, pseudo.path], cfg, [])

    def body(out):
        from cosmos.evaluation.report import write_report

        report_summary, dice, run_id = rt.build_report_summary(summary.path, out["bundle"], data_dir=data.path,
                                                               pseudo_dir=pseudo.path, profile=cfg.profile)
        write_report(out["bundle"] / "report", report_summary)
        if run_id:
            rt.log_report(run_id, report_summary["rounds"][-1]["index"], out["bundle"] / "report",
                          rt.mlflow_tracking(tracking_uri, out["bundle"]))
        return {"final_mean_dice": dice}

    result = rt.run_stage("report", {"bundle": bundle.path}, body, key=key, work_root=work_root)
    report_dir = Path(bundle.path) / "report"
    shutil.copyfile(report_dir / "report.md", report_md.path)
    Path(report_html.path).write_text(rt.self_contained_html(report_dir / "report.html"))
    return str(result["final_mean_dice"])
