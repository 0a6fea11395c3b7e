"""KFP component: score one round's validation predictions (Dice, ASSD; crossMoDA conventions).

Thin wrapper around :func:`cosmos.selftraining.rounds.score` (which first puts the predictions
back on the original grids, so a round is scored exactly as ``cosmos evaluate`` would score it). Runs in every round; without
validation labels it records that and scores nothing, so the DAG has one shape whatever the data.
The summary also goes to the KFP Metrics artifact (the UI's metrics view).
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Output


def evaluate(
    predictions: Input[Dataset],
    validation: Input[Dataset],
    roi_records: Input[Dataset],
    round_index: int,
    round_run: Input[Dataset],
    profile: str,
    config: str,
    overrides: str,
    tracking_uri: str,
    work_root: str,
    scores: Output[Dataset],
    metrics: Output[Metrics],
    compiled_profile: str = "",
) -> NamedTuple("EvaluateOutputs", [("has_metrics", bool), ("mean_dice", float)]):  # type: ignore[valid-type]  # KFP's syntax for named outputs
    """predictions: on the ROI-cropped grids whose windows ``roi_records`` holds (crop_roi's roi.json);
    validation: ingest_validate's validation scans and labels (not the whole ingest: on a cluster a task
    downloads its inputs whole); scores: ``predictions/`` back on the original grids and ``metrics.json``
    (``cosmos evaluate`` schema; absent without labels)."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from components import _runtime as rt

    def body(cfg, out):
        from cosmos.selftraining.rounds import score

        return score(
            round_index,
            cfg,
            predictions_dir=predictions.path,
            data_dir=validation.path,
            roi_data_dir=roi_records.path,
            run_dir=round_run.path,
            out_dir=out["scores"],
            tracking_uri=rt.tracking(tracking_uri, out["scores"]),
        )

    result = rt.run_component(
        "evaluate",
        body,
        {"scores": scores.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        overrides=overrides,
        work_root=work_root,
        run_name=f"evaluate{round_index}",
        params={"round": round_index},
        inputs=[predictions.path, validation.path, roi_records.path, round_run.path],
        sections=["tracking"],
    )
    mean_dice = float("nan")
    if result["has_metrics"]:
        summary = json.loads((Path(scores.path) / "metrics.json").read_text()).get("summary", {})
        for structure, values in summary.items():
            for name, value in (values or {}).items():
                if isinstance(value, (int, float)):
                    metrics.log_metric(f"{structure}_{name}", float(value))
        mean_dice = float(result["mean_dice"]) if result["mean_dice"] is not None else float("nan")
    outputs = namedtuple("EvaluateOutputs", ["has_metrics", "mean_dice"])  # type: ignore[name-match]
    return outputs(bool(result["has_metrics"]), mean_dice)
