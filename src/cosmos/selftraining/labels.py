"""Round-to-round bookkeeping of pseudo-labels and training sets.

Why: self-training only helps when each round learns from something new. Two questions the
orchestration asks after every round:

* :func:`label_change` - how much did the accepted pseudo-labels move between round k-1 and
  round k (per-case Dice per structure, how many cases changed at all)? A change near zero means
  the students have converged -- or are replaying each other.
* :func:`compare_training_sets` - is a round's nnU-Net training set exactly the previous round's
  (same cases, same image bytes, same label voxels, same label declaration)? Then the student can
  only reproduce its teacher, and the orchestration should stop with a clear message instead of
  spending a round on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cosmos.data.layout import IGNORE_LABEL, LABELS, case_sort_key, parse_prediction_name
from cosmos.data.nifti import load
from cosmos.errors import CosmosError


# ------------------------------------------------------------------------------ label change
def _label_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise CosmosError(f"{folder}: pseudo-label folder not found")
    out = {}
    for p in sorted(folder.iterdir()):
        case = parse_prediction_name(p.name) if p.is_file() else None
        if case is not None:
            out[case] = p
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (nothing to disagree about)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def label_change(previous_kept_dir: str | Path, kept_dir: str | Path, labels: Sequence[int] = (1, 2)) -> dict:
    """Per-case Dice between two rounds' kept pseudo-labels, for the cases both sets hold.

    Returns a JSON-able dict::

        {"per_case": {case: {"VS": d, "cochlea": d, "mean": d, "changed": bool}},
         "mean_dice": mean of the per-case means (NaN when no case is in both sets),
         "mean_dice_per_structure": {"VS": ..., "cochlea": ...},
         "n_compared": int, "n_changed": int (cases whose label map differs in any voxel),
         "added": [cases only in kept_dir], "removed": [cases only in previous_kept_dir]}

    Voxels marked with the pixel filter's ignore label in either set are left out of the Dice
    (a label's confidence mask is no structure), but do count for ``changed``.
    """
    prev, cur = _label_files(Path(previous_kept_dir)), _label_files(Path(kept_dir))
    common = sorted(set(prev) & set(cur), key=case_sort_key)
    names = [LABELS.get(int(v), f"label {v}") for v in labels]
    per_case: dict[str, dict] = {}
    for case in common:
        a, b = load(prev[case], label=True), load(cur[case], label=True)
        if a.shape != b.shape:
            raise CosmosError(f"{cur[case]}: shape {b.shape} differs from the previous round's {prev[case]} {a.shape}")
        da, db = a.data, b.data
        valid = (da != IGNORE_LABEL) & (db != IGNORE_LABEL)
        entry: dict = {n: _dice((da == v) & valid, (db == v) & valid) for n, v in zip(names, labels)}
        entry["mean"] = float(np.mean([entry[n] for n in names]))
        entry["changed"] = not np.array_equal(da, db)
        per_case[case] = entry
    per_structure = {n: (float(np.mean([e[n] for e in per_case.values()])) if per_case else math.nan) for n in names}
    return {
        "per_case": per_case,
        "mean_dice": float(np.mean([e["mean"] for e in per_case.values()])) if per_case else math.nan,
        "mean_dice_per_structure": per_structure,
        "n_compared": len(per_case),
        "n_changed": sum(e["changed"] for e in per_case.values()),
        "added": sorted(set(cur) - set(prev), key=case_sort_key),
        "removed": sorted(set(prev) - set(cur), key=case_sort_key),
    }


# ------------------------------------------------------------------------------ training sets
@dataclass
class TrainingSetComparison:
    """Difference between two prepared rounds' training sets (nnU-Net case ids)."""

    identical: bool
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # same case id, other image or label content
    labels_changed: bool = False  # dataset.json label declaration (e.g. the ignore label) differs
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare_training_sets(current_prepared: str | Path, previous_prepared: str | Path) -> TrainingSetComparison:
    """Whether ``current_prepared``'s training set is exactly ``previous_prepared``'s.

    Compares per-case content digests (image bytes, label voxels + grid) that ``prepare_round``
    records in ``training_set.json`` (computed from the raw export for older prepared dirs), so a
    re-written but identical label file still counts as identical, and seeds or budgets do not
    matter: only what the network is shown. ``message`` says what to tell the user.
    """
    from cosmos.segmentation.prepare import training_set_digests

    cur, prev = training_set_digests(current_prepared), training_set_digests(previous_prepared)
    cc, pc = cur["cases"], prev["cases"]
    added = sorted(set(cc) - set(pc))
    removed = sorted(set(pc) - set(cc))
    changed = sorted(k for k in set(cc) & set(pc) if cc[k] != pc[k])
    labels_changed = cur.get("labels") != prev.get("labels")
    identical = not (added or removed or changed or labels_changed)
    if identical:
        n_real = sum(k.startswith("real_") for k in cc)
        message = (
            f"{current_prepared}: the training set is identical to {previous_prepared} ({len(cc)} cases, "
            f"{n_real} pseudo-labelled real hrT2): this student would only retrain its teacher's data; "
            "stop self-training here"
        )
    else:
        message = (
            f"{current_prepared}: training set differs from {previous_prepared}: {len(added)} added, "
            f"{len(removed)} removed, {len(changed)} changed case(s)"
            + (", label declaration changed" if labels_changed else "")
        )
    return TrainingSetComparison(identical, added, removed, changed, labels_changed, message)


def same_training_set(current_prepared: str | Path, previous_prepared: str | Path) -> bool:
    """True when the two prepared rounds train on exactly the same data (see :func:`compare_training_sets`)."""
    return compare_training_sets(current_prepared, previous_prepared).identical
