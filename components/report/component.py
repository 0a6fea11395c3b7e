"""KFP component at the end of the run: the report and the run's bundle.

The Markdown + HTML report with pictures (:func:`cosmos.evaluation.report.write_report`, also
attached to the final round's MLflow run) and the *bundle*: ``report/``, ``predictions/`` (the
champion round's), ``metrics.json`` and ``summary.json``.
"""

from kfp.dsl import HTML, Dataset, Input, Markdown, Output


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
    compiled_profile: str = "",
) -> str:
    """Returns the champion round's mean Dice as text ("n/a" without validation labels)."""
    import shutil
    from pathlib import Path

    from components import _runtime as rt

    def body(cfg, out):
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

    result = rt.run_component(
        "report",
        body,
        {"bundle": bundle.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        work_root=work_root,
        inputs=[summary.path, data.path, pseudo.path],
    )
    report_dir = Path(bundle.path) / "report"
    shutil.copyfile(report_dir / "report.md", report_md.path)
    shutil.copyfile(report_dir / "report.html", report_html.path)
    return str(result["final_mean_dice"])
