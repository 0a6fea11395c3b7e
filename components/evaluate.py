"""KFP component: score one round's validation predictions (Dice, ASSD; crossMoDA conventions).

Thin wrapper around :func:`cosmos.evaluation.metrics.evaluate_folder`. Runs in every round; when
the data has no validation labels it records that and scores nothing, so the DAG has one shape
whatever the data. The summary goes to the KFP Metrics artifact (UI) and to the round's MLflow run.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Output


def evaluate(
    predictions: Input[Dataset],
    data: Input[Dataset],
    round_index: int,
    round_run: Input[Dataset],
    profile: str,
    config: str,
    tracking_uri: str,
    work_root: str,
    scores: Output[Dataset],
    metrics: Output[Metrics],
) -> NamedTuple("EvaluateOutputs", [("has_metrics", bool), ("mean_dice", float)]):
    """scores: ``metrics.json`` in the ``cosmos evaluate`` schema (absent without labels)."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    key = rt.stage_key("evaluate", {"round": round_index}, [predictions.path, data.path, round_run.path], cfg, [])

    def body(out):
        import logging

        from cosmos.data.layout import VALIDATION_LABELS_DIR
        from cosmos.evaluation.metrics import evaluate_folder, write_json

        labels = Path(data.path) / VALIDATION_LABELS_DIR
        if not labels.is_dir() or not any(labels.glob("*.nii*")):
            logging.getLogger("cosmos.component").warning("no validation labels: round %d is not scored",
                                                          round_index)
            return {"has_metrics": False}
        result = evaluate_folder(predictions.path, labels)
        write_json(result, out["scores"] / "metrics.json")
        if result.get("errors"):
            logging.getLogger("cosmos.component").warning("evaluation errors: %s", result["errors"])
        run_id = rt.read_run_id(round_run.path)
        if run_id:
            rt.log_round_metrics(run_id, round_index, result, rt.mlflow_tracking(tracking_uri, out["scores"]))
        return {"has_metrics": True}

    result = rt.run_stage(f"evaluate{round_index}", {"scores": scores.path}, body, key=key, work_root=work_root)
    mean_dice = float("nan")
    if result["has_metrics"]:
        summary = json.loads((Path(scores.path) / "metrics.json").read_text()).get("summary", {})
        for structure, values in summary.items():
            for name, value in (values or {}).items():
                if isinstance(value, (int, float)):
                    metrics.log_metric(f"{structure}_{name}", float(value))
        mean_dice = float((summary.get("mean") or {}).get("dice_mean") or float("nan"))
    outputs = namedtuple("EvaluateOutputs", ["has_metrics", "mean_dice"])
    return outputs(bool(result["has_metrics"]), mean_dice)
