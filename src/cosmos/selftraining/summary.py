"""The cumulative round summary, and the run's bundle and report built from it.

The summary artifact is cumulative: each round's ``register`` copies the previous summary and adds
its own entry (``rounds.json`` + ``round_<k>/``), so the report reads one artifact whatever K is.
:func:`build_bundle` turns the final summary into the run's outputs (the final round's predictions and
metrics, ``summary.json``, ``verdict.json``); :func:`report` adds the report and attaches it to the
final round's MLflow run.

Why apart from the steps (:mod:`cosmos.selftraining.rounds`): the summary outlives the rounds (the
report, the ablation and the benchmarks read it through :func:`load_summary`), and reading it needs
none of the steps.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from cosmos.resume import KEY_FILE, copy_tree, write_json
from cosmos.selftraining import verdict
from cosmos.selftraining.naming import FULL_PREDICTIONS, ROUNDS_FILE, round_name

log = logging.getLogger("cosmos.selftraining.rounds")  # the steps' logger, as before the split: same log lines


def summarize(
    index: int,
    summary_dir: str | Path,
    previous_summary_dir: str | Path | None,
    *,
    version: str,
    run_id: str | None,
    scores_dir: str | Path,
    predictions_dir: str | Path,
    labels_dir: str | Path | None,
    filter_summary: Mapping[str, Any] | None,
    gate: Mapping[str, Any],
    checks: Sequence[Mapping[str, Any]] = (),
    validation_plausibility: Mapping[str, Any] | None = None,
    iterations: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The cumulative summary artifact: the previous rounds plus this one.

    Layout: ``rounds.json`` (the report's ``rounds`` entries, paths relative to the artifact) and
    ``round_<k>/{metrics.json, predictions/, pseudo_labels/}``.
    """
    out = Path(summary_dir)
    rounds: list[dict[str, Any]] = []
    if previous_summary_dir is not None:
        shutil.copytree(previous_summary_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(KEY_FILE))
        rounds = json.loads((out / ROUNDS_FILE).read_text())
    rounds = [r for r in rounds if r["index"] != index]
    if gate.get("promoted"):
        for r in rounds:
            r["champion"] = False
    rdir = out / f"round_{index}"
    rdir.mkdir(parents=True, exist_ok=True)
    fs = dict(filter_summary or {})
    entry: dict[str, Any] = {
        "index": index,
        "name": round_name(index),
        "metrics": None,
        "kept": fs.get("kept", []),
        "dropped": fs.get("dropped", []),
        "carried": fs.get("carried_over", []),
        "filter_alert": fs.get("alert"),
        "label_change": fs.get("change"),
        "pseudo_labels_dir": None,
        "predictions_dir": None,
        "model_version": version or None,
        "run_id": run_id or None,
        "champion": bool(gate.get("promoted")),
        "gate": dict(gate),
        "checks": [dict(c) for c in checks],
        "checks_passed": verdict.passed(list(checks)),
        "pseudo_label_plausibility": fs.get("plausibility"),
        "validation_plausibility": dict(validation_plausibility) if validation_plausibility else None,
        "train_iterations": (iterations or {}).get("train_iterations"),
        "cumulative_iterations": (iterations or {}).get("cumulative_iterations"),
    }
    scores = Path(scores_dir) / "metrics.json"
    if scores.is_file():
        shutil.copyfile(scores, rdir / "metrics.json")
        entry["metrics"] = f"round_{index}/metrics.json"
    copy_tree(predictions_dir, rdir / "predictions")
    entry["predictions_dir"] = f"round_{index}/predictions"
    full = Path(scores_dir) / FULL_PREDICTIONS
    if full.is_dir():
        copy_tree(full, rdir / "full_predictions")
        entry["full_predictions_dir"] = f"round_{index}/full_predictions"
    if labels_dir is not None:
        copy_tree(labels_dir, rdir / "pseudo_labels")
        entry["pseudo_labels_dir"] = f"round_{index}/pseudo_labels"
    rounds.append(entry)
    rounds.sort(key=lambda r: r["index"])
    write_json(out / ROUNDS_FILE, rounds)
    return entry


def load_summary(summary_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds of a summary artifact with metrics loaded and paths made absolute."""
    src = Path(summary_dir).resolve()
    entries = []
    for r in json.loads((src / ROUNDS_FILE).read_text()):
        e = dict(r)
        e["metrics"] = json.loads((src / r["metrics"]).read_text()) if r.get("metrics") else None
        for k in ("pseudo_labels_dir", "predictions_dir", "full_predictions_dir"):
            e[k] = str(src / r[k]) if r.get(k) else None
        entries.append(e)
    return entries


def champion_entry(rounds: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The round that holds the champion alias after the run (None when no round was promoted)."""
    promoted = [r for r in rounds if r.get("champion")]
    return promoted[-1] if promoted else None


def _mean_dice(entry: Mapping[str, Any] | None) -> float | None:
    metrics = (entry or {}).get("metrics") or {}
    value = ((metrics.get("summary") or {}).get("mean") or {}).get("dice_mean")
    return float(value) if isinstance(value, (int, float)) else None


def build_bundle(
    summary_dir: str | Path,
    bundle_dir: str | Path,
    *,
    data_dir: str,
    pseudo_dir: str | None,
    profile: str,
    translator_fidelity: Mapping[str, Any] | None = None,
    translator_attempts: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str, str | None]:
    """The run's final outputs and the report's summary dict.

    Fills ``bundle_dir`` with ``predictions/`` (the final round's, on the original grids: the paper's
    protocol reports its fixed last round), ``metrics.json`` (its scores, when labelled),
    ``summary.json`` and ``verdict.json`` (:func:`cosmos.selftraining.verdict.run_verdict`). Where the
    champion is another round, ``summary.json`` names it and its score beside the final one. Returns
    the summary, the final round's mean Dice as text and the final round's MLflow run id.
    """
    bundle = Path(bundle_dir)
    entries = load_summary(summary_dir)
    final = entries[-1]
    champion = champion_entry(entries)
    copy_tree(final.get("full_predictions_dir") or final["predictions_dir"], bundle / "predictions")
    value = _mean_dice(final)
    dice = f"{value:.3f}" if value is not None else "n/a"
    if final["metrics"] is not None:
        (bundle / "metrics.json").write_text(json.dumps(final["metrics"], indent=2))
    outcome = verdict.run_verdict(entries)
    summary = {
        "title": f"COSMOS run ({profile} profile)",
        "profile": profile,
        "data_dir": str(data_dir),
        "pseudo_dir": str(pseudo_dir) if pseudo_dir else None,
        "rounds": entries,
        "final_round": final["index"],
        "final_mean_dice": value,
        "champion_round": champion["index"] if champion is not None else None,
        "champion_mean_dice": _mean_dice(champion),
        "verdict": outcome,
        "translator_fidelity": translator_fidelity,
        "translator_attempts": translator_attempts,
    }
    (bundle / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (bundle / verdict.VERDICT_FILE).write_text(json.dumps(outcome, indent=2))
    (log.info if outcome["passed"] else log.error)("%s", outcome["line"])
    return summary, dice, final.get("run_id")


def attach_report(run_id: str, index: int, report_dir: str | Path, tracking_uri: str) -> None:
    """Attach the report (Markdown, HTML, PNGs) to the final round's MLflow run under ``report/``."""
    from cosmos.segmentation.mlflow_logging import start_round_run

    run = start_round_run(index, tracking_uri=tracking_uri, resume_run_id=run_id)
    for path in sorted(Path(report_dir).iterdir()):
        if path.is_file():
            run.log_artifact(path, "report")
    run.end("FINISHED")


def report(
    summary_dir: str | Path,
    bundle_dir: str | Path,
    *,
    data_dir: str | Path,
    pseudo_dir: str | Path | None,
    profile: str,
    tracking_uri: str,
) -> str:
    """The run's bundle and report (attached to the final round's MLflow run); returns the final
    round's mean Dice as text ("n/a" without validation labels)."""
    from cosmos.evaluation.report import write_report
    from cosmos.translation.model_io import ATTEMPTS_JSON

    pseudo = Path(pseudo_dir) if pseudo_dir is not None else None
    summary, dice, run_id = build_bundle(
        summary_dir,
        bundle_dir,
        data_dir=str(data_dir),
        pseudo_dir=str(pseudo_dir) if pseudo_dir else None,
        profile=profile,
        translator_fidelity=verdict.read_json(pseudo / "fidelity.json") if pseudo else None,
        translator_attempts=verdict.read_json(pseudo / ATTEMPTS_JSON) if pseudo else None,
    )
    write_report(Path(bundle_dir) / "report", summary)
    if run_id:
        attach_report(run_id, summary["rounds"][-1]["index"], Path(bundle_dir) / "report", tracking_uri)
    return dice
