"""Pseudo-label filtering between self-training rounds.

COSMOS keeps a teacher's prediction on a real hrT2 scan as a training label only when it contains
every structure of interest: a case whose prediction lacks VS or lacks the cochlea entirely is
dropped, because an absent structure is almost always a miss (every crossMoDA scan has both), and
training a student on it would teach the student to miss it too.

If the filter keeps nothing the next student sees only the labelled pseudo-hrT2 again, i.e.
self-training silently degenerates to re-training the teacher. That is logged at ERROR level and
recorded in the result (and by the loop as an MLflow tag) so it can never go unnoticed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from cosmos.data.layout import LABELS, case_sort_key, label_name, parse_prediction_name
from cosmos.data.nifti import load
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

SUMMARY_FILE = "filter_summary.json"

NONE_KEPT_ALERT = (
    "pseudo-label filter kept NO case: every prediction lacks a required structure {labels}; "
    "the next student trains on labelled pseudo-hrT2 alone, so self-training degenerates to the teacher"
)


@dataclass
class FilterResult:
    """Which pseudo-labelled cases survive the filter (case ids, e.g. ``crossmoda_106``)."""

    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # dropped case -> what it lacks
    out_dir: Path | None = None
    alert: str | None = None  # set when nothing was kept

    @property
    def degenerate(self) -> bool:
        """True when no pseudo-label survived (the student can only repeat the teacher)."""
        return not self.kept

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir) if self.out_dir is not None else None
        return d


def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    if not pred_dir.is_dir():
        raise CosmosError(f"{pred_dir}: prediction folder not found")
    found: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        if not p.is_file():
            continue
        case = parse_prediction_name(p.name)
        if case is None:
            continue
        if case in found:
            raise CosmosError(f"{pred_dir}: two predictions for case {case}: {found[case].name} and {p.name}")
        found[case] = p
    if not found:
        raise CosmosError(
            f"{pred_dir}: no predictions named crossmoda_<id>_Label.nii.gz (or crossmoda_<id>.nii.gz) to filter"
        )
    return found


def filter_pseudo_labels(pred_dir: str | Path, out_dir: str | Path,
                         required_labels: Iterable[int] = (1, 2)) -> FilterResult:
    """Copy the predictions of ``pred_dir`` that contain every label in ``required_labels`` to
    ``out_dir`` (as ``crossmoda_{k}_Label.nii.gz``) and report kept/dropped case ids.

    ``out_dir`` ends up holding exactly the kept labels (stale labels from an earlier run are
    removed), plus ``filter_summary.json`` with the result, so a re-run is idempotent.
    """
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    required = [int(v) for v in required_labels]
    files = _prediction_files(pred_dir)
    result = FilterResult(out_dir=out_dir)
    for case in sorted(files, key=case_sort_key):
        data = load(files[case], label=True).data
        present = set(np.unique(data).tolist())
        missing = [v for v in required if v not in present]
        if missing:
            result.dropped.append(case)
            result.reasons[case] = "lacks " + " and ".join(LABELS.get(v, f"label {v}") for v in missing)
        else:
            result.kept.append(case)

    out_dir.mkdir(parents=True, exist_ok=True)
    keep_names = {label_name(c) for c in result.kept}
    for stale in out_dir.glob("*.nii*"):
        if stale.name not in keep_names:
            stale.unlink()
    for case in result.kept:
        shutil.copy2(files[case], out_dir / label_name(case))

    log.info("pseudo-label filter: kept %d of %d cases: %s", len(result.kept), len(files), ", ".join(result.kept) or "-")
    if result.dropped:
        log.info("pseudo-label filter: dropped %d: %s", len(result.dropped),
                 ", ".join(f"{c} ({result.reasons[c]})" for c in result.dropped))
    if result.degenerate:
        names = "/".join(LABELS.get(v, str(v)) for v in required)
        result.alert = NONE_KEPT_ALERT.format(labels=names)
        log.error("%s (predictions in %s)", result.alert, pred_dir)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2))
    return result


def read_filter_summary(out_dir: str | Path) -> FilterResult | None:
    """The result a previous :func:`filter_pseudo_labels` call recorded in ``out_dir`` (or None)."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return FilterResult(kept=list(d.get("kept", [])), dropped=list(d.get("dropped", [])),
                        reasons=dict(d.get("reasons", {})), out_dir=Path(out_dir), alert=d.get("alert"))
