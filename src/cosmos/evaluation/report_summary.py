"""Reading the report's ``summary`` dict: its shape check and the accessors that the section
builders and the figures share.

Why a module of its own: :mod:`cosmos.evaluation.report` (the tables and text) and
:mod:`cosmos.evaluation.report_figures` (the PNGs) read rounds the same way -- a round's display
name, whether it has scores, a case's mean over the structures -- and neither should import the
other for it (the figures are drawn for the report, not the other way round).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from cosmos.errors import CosmosError
from cosmos.evaluation.metrics import STRUCTURES


def _path(value: Any) -> Path | None:
    return Path(value) if value not in (None, "") else None


def _has_scores(metrics: dict | None) -> TypeGuard[dict]:
    return bool(metrics and metrics.get("n_cases", len(metrics.get("cases", {}))))


def _round_name(rnd: dict) -> str:
    name = rnd.get("name")
    if name:
        return str(name)
    idx = int(rnd.get("index", 0))
    return "teacher" if idx == 0 else f"student {idx}"


def _case_mean(scores: dict, metric: str) -> float:
    return float(np.mean([scores[s][metric] for s in STRUCTURES]))


def _check(summary: Any) -> dict:
    if not isinstance(summary, dict):
        raise CosmosError(f"report summary must be a dict, got {type(summary).__name__}")
    rounds = summary.get("rounds") or []
    if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
        raise CosmosError("report summary 'rounds' must be a list of dicts")
    extra = summary.get("extra_rows") or []
    if not isinstance(extra, list) or not all(isinstance(r, dict) and "name" in r for r in extra):
        raise CosmosError("report summary 'extra_rows' must be a list of {'name', 'metrics'} dicts")
    return summary


def _final_predictions_round(rounds: list[dict]) -> dict | None:
    """The round whose predictions are the run's: the last champion, else the last round with predictions."""
    with_preds = [r for r in rounds if _path(r.get("predictions_dir")) is not None]
    champions = [r for r in with_preds if r.get("champion")]
    chosen = champions or with_preds
    return chosen[-1] if chosen else None


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _measurements_blocks(rounds: list[dict]) -> list:
    """A per-case table of the final predictions' ``<case>_measurements.json`` (the numbers
    ``cosmos predict`` writes, :mod:`cosmos.evaluation.measurements`); nothing when there are none."""
    import json

    from cosmos.data.layout import case_sort_key
    from cosmos.evaluation.measurements import MEASUREMENTS_SUFFIX
    from cosmos.evaluation.report_document import _Block

    rnd = _final_predictions_round(rounds)
    folder = _path(rnd.get("predictions_dir")) if rnd else None
    if rnd is None or folder is None or not folder.is_dir():
        return []
    rows = []
    for path in sorted(folder.glob(f"*{MEASUREMENTS_SUFFIX}"), key=lambda p: case_sort_key(p.name)):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict):
            continue
        removed = m.get("components_removed")
        rows.append(
            [
                path.name[: -len(MEASUREMENTS_SUFFIX)],
                _fmt(m.get("vs_volume_mm3"), ".1f"),
                _fmt(m.get("vs_volume_ml"), ".3f"),
                _fmt(m.get("vs_max_axial_diameter_mm"), ".1f"),
                _fmt(m.get("cochlea_left_volume_mm3"), ".1f"),
                _fmt(m.get("cochlea_right_volume_mm3"), ".1f"),
                ", ".join(f"{k} {v}" for k, v in removed.items()) if isinstance(removed, dict) else "-",
                _fmt(m.get("vs_confidence_mean_max_prob"), ".3f"),
            ]
        )
    if not rows:
        return []
    header = [
        "case",
        "VS mm³",
        "VS ml",
        "VS max axial diameter mm",
        "cochlea left mm³",
        "cochlea right mm³",
        "components removed",
        "VS confidence",
    ]
    return [
        _Block("h2", f"Tumour measurements ({_round_name(rnd)}'s predictions on target_validation)"),
        _Block(
            "p",
            "From each case's `<case>_measurements.json`: volumes from the voxel spacing, the largest in-plane "
            "(Feret) VS diameter over axial slices, cochlea sides in RAS (patient-left = +x), the connected "
            "components the post-processing removed, and the mean ensemble max-probability inside the VS "
            "(docs/clinical.md).",
        ),
        _Block("table", header=header, rows=rows),
    ]
