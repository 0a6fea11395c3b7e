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
