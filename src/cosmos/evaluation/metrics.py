"""Dice and ASSD (mm) for VS (label 1) and cochlea (label 2), scored the way crossMoDA scores them.

Why our own code and not medpy directly: the organisers' scorer calls medpy ``dc`` and ``assd``,
whose distance transforms run over the whole volume (about 31 M voxels for a 512x512x120 hrT2)
for a structure of a few hundred voxels. We return the SAME numbers (tests compare with medpy to
1e-6) but run every morphological and distance operation on the union bounding box of the two
masks only:

* surface = ``mask XOR binary_erosion(mask, connectivity 1)``, exactly as medpy. Erosion treats
  out-of-array voxels as background (``border_value=0``), and everything outside a mask's own
  bounding box is background, so eroding the cropped mask gives the same surface. We still keep a
  1-voxel margin (clipped to the volume) so nothing depends on that border rule.
* ``distance_transform_edt(~other_surface, sampling=spacing)`` gives, at each voxel, the exact
  Euclidean distance to the nearest voxel of the other surface. Every voxel of both surfaces lies
  inside the union box, so the nearest partner is always inside the crop: the crop changes nothing.
  The EDT is exact (not chamfer), so the distances are bit-for-bit the medpy ones up to rounding.

Voxel spacing is the ground-truth label's TRUE voxel size: the column norms of its affine (the
header zooms). The official scorer uses ``abs(affine[k, k])``, which is the same number on
axis-aligned data (all crossMoDA data) but wrong on oblique or axis-permuted grids.

Conventions for empty structures (the official scorer defines only the first):

===================  =================  =====  ===========
ground truth          prediction         Dice   ASSD (mm)
===================  =================  =====  ===========
non-empty             empty              0      350 (official crossMoDA value)
empty                 non-empty          0      350 (a false structure is as bad as a missed one)
empty                 empty              1      0   (nothing to find, nothing found)
===================  =================  =====  ===========

Dice for the two non-trivial rows equals medpy ``dc``; medpy's ``assd`` raises on an empty mask.

Summary statistics: mean and POPULATION standard deviation (``numpy.std``, ddof=0) over the scored
cases; "mean" is the per-case average of the VS and cochlea values, then mean ± std over cases
(the paper's Table 1 "Mean" column). Cases with an error (missing prediction, unreadable file,
grid mismatch) are listed under ``errors`` and left out of the summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from cosmos.data import layout
from cosmos.data.nifti import NiftiError, load, same_grid
from cosmos.errors import CosmosError
from cosmos.logs import progress

log = logging.getLogger(__name__)

#: ASSD (mm) given to a missing structure; the crossMoDA organisers' value for an empty prediction.
EMPTY_ASSD_MM = 350.0
#: Structures scored, name -> label value (VS = 1, cochlea = 2).
STRUCTURES: dict[str, int] = dict(layout.STRUCTURES)
#: Keys of each structure's entry in ``summary``.
SUMMARY_KEYS = ("dice_mean", "dice_std", "assd_mean", "assd_std")


# --------------------------------------------------------------------------- geometry helpers
def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """True voxel sizes (mm) per array axis: the affine's column norms (= header zooms)."""
    x, y, z = (float(v) for v in np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0))
    return x, y, z


def _bbox(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """Per-axis [start, stop) of the non-zero voxels; None when the mask is empty.

    Uses ``any`` over the other axes (one pass per axis, no index arrays), which is far cheaper than
    ``np.nonzero`` on a 31 M voxel volume.
    """
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def _union_crop(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the union bounding box of ``a`` and ``b`` plus ``margin`` voxels (clipped)."""
    boxes = [bx for bx in (_bbox(a), _bbox(b)) if bx is not None]
    if not boxes:
        return None
    return tuple(
        slice(max(0, min(bx[d][0] for bx in boxes) - margin), min(a.shape[d], max(bx[d][1] for bx in boxes) + margin))
        for d in range(a.ndim)
    )


# --------------------------------------------------------------------------- binary metrics
def _surface(mask: np.ndarray) -> np.ndarray:
    """medpy's 1-voxel border: the mask minus its erosion with the connectivity-1 cross."""
    footprint = generate_binary_structure(mask.ndim, 1)
    return mask ^ binary_erosion(mask, structure=footprint, iterations=1)


def _directed_distances(src_surface: np.ndarray, dst_surface: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from every voxel of ``src_surface`` to the nearest voxel of ``dst_surface``."""
    dt = distance_transform_edt(~dst_surface, sampling=spacing)
    return dt[src_surface]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks (non-zero = object); both empty -> 1.0 (as medpy ``dc``)."""
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(gt).astype(bool, copy=False)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / float(total)


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance (mm), equal to medpy ``assd(pred, gt, spacing, 1)``.

    Computed on the union bounding box only (see the module docstring for why that is exact).
    Empty masks follow the module's conventions: one empty -> ``EMPTY_ASSD_MM``, both empty -> 0.
    """
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(gt).astype(bool, copy=False)
    if p.shape != g.shape:
        raise ValueError(f"assd: shapes differ {p.shape} vs {g.shape}")
    crop = _union_crop(p, g)
    if crop is None:  # both empty
        return 0.0
    p, g = p[crop], g[crop]
    if not p.any() or not g.any():
        return EMPTY_ASSD_MM
    sp = None if spacing is None else np.asarray(spacing, dtype=np.float64)
    ps, gs = _surface(p), _surface(g)
    distances = np.concatenate([_directed_distances(ps, gs, sp), _directed_distances(gs, ps, sp)])
    return float(distances.mean())


def score_structures(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, structures: dict[str, int] | None = None
) -> dict[str, dict[str, float]]:
    """Dice and ASSD of each structure of two label maps: ``{"VS": {"dice", "assd"}, "cochlea": ...}``.

    Both maps are first cropped to the bounding box of all their foreground, so the per-label
    comparisons (``== label``) never touch the whole volume.
    """
    structures = STRUCTURES if structures is None else structures
    if pred.shape != gt.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {gt.shape}")
    crop = _union_crop(pred != 0, gt != 0)
    if crop is not None:
        pred, gt = pred[crop], gt[crop]
    out: dict[str, dict[str, float]] = {}
    for name, value in structures.items():
        if crop is None:
            out[name] = {"dice": 1.0, "assd": 0.0}
            continue
        p, g = pred == value, gt == value
        out[name] = {"dice": dice(p, g), "assd": assd(p, g, spacing)}
    return out


# --------------------------------------------------------------------------- cases and folders
#: Label values a prediction or ground truth may hold: background plus the scored structures.
ALLOWED_LABELS = frozenset({0, *STRUCTURES.values()})


def _check_label_values(path: str | Path, labels: np.ndarray) -> None:
    """Refuse a label map with values outside {0, 1, 2}, listing them (``load`` already refused < 0)."""
    if labels.size == 0 or int(labels.max()) <= max(ALLOWED_LABELS):
        return
    bad = [v for v in np.unique(labels).tolist() if v not in ALLOWED_LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise CosmosError(f"{path}: label values outside {{0, 1, 2}}: {shown}")


def evaluate_case(pred_path: str | Path, label_path: str | Path) -> dict[str, dict[str, float]]:
    """Score one prediction file against its ground-truth label file.

    Raises CosmosError (naming the file) for unreadable files, label values outside {0, 1, 2} (in
    the prediction or the ground truth: a 3 or a 255 would otherwise count as background and score a
    perfect Dice), or a prediction on another grid.
    """
    gt = load(label_path, label=True)
    _check_label_values(label_path, gt.data)
    pred = load(pred_path, label=True)
    _check_label_values(pred_path, pred.data)
    mismatch = same_grid(pred, gt)
    if mismatch:
        raise CosmosError(f"{pred_path}: prediction grid differs from the label {Path(label_path).name}: {mismatch}")
    return score_structures(pred.data, gt.data, voxel_spacing(gt.affine))


def _find_labels(label_dir: Path) -> dict[str, Path]:
    """``crossmoda_{k}_Label.nii.gz`` files of ``label_dir``; a crossMoDA root is also accepted."""
    if not label_dir.is_dir():
        raise CosmosError(f"{label_dir}: label directory not found")
    for folder in (label_dir, label_dir / layout.VALIDATION_LABELS_DIR, label_dir / layout.VALIDATION_DIR):
        if not folder.is_dir():
            continue
        found = {}
        for p in sorted(folder.iterdir()):
            parsed = layout.parse_name(p.name)
            if parsed and parsed[1] == "Label":
                found[parsed[0]] = p
        if found:
            if folder != label_dir:
                log.info("using labels from %s", folder)
            return found
    raise CosmosError(f"{label_dir}: no crossmoda_*_Label.nii.gz ground-truth files found")


def _find_predictions(pred_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Predictions by case id, plus errors for ids that have two competing prediction files."""
    if not pred_dir.is_dir():
        raise CosmosError(f"{pred_dir}: prediction directory not found")
    found: dict[str, Path] = {}
    clashes: dict[str, str] = {}
    for p in sorted(pred_dir.iterdir()):
        case = layout.parse_prediction_name(p.name)
        if case is None:
            continue
        if case in found:
            clashes[case] = f"two predictions for this case: {found[case].name} and {p.name}"
        else:
            found[case] = p
    return found, clashes


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def summarize(cases: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float | None]]:
    """Table-1 summary: per structure and for the per-case mean of the structures, mean and std."""
    summary: dict[str, dict[str, float | None]] = {}
    names = list(STRUCTURES)
    for name in names + ["mean"]:
        entry: dict[str, float | None] = {}
        for metric in ("dice", "assd"):
            if name == "mean":
                values = [float(np.mean([c[s][metric] for s in names])) for c in cases.values()]
            else:
                values = [c[name][metric] for c in cases.values()]
            entry[f"{metric}_mean"], entry[f"{metric}_std"] = _mean_std(values)
        summary[name] = entry
    return summary


def evaluate_folder(pred_dir: str | Path, label_dir: str | Path, only: Collection[str] | None = None) -> dict[str, Any]:
    """Score every ground-truth label in ``label_dir`` against its prediction in ``pred_dir``.

    Predictions are named ``crossmoda_{k}_Label.nii.gz`` or ``crossmoda_{k}.nii.gz``. ``label_dir``
    holds ``crossmoda_{k}_Label.nii.gz`` (a crossMoDA root with ``target_validation_labels/`` works
    too). A missing, unreadable or off-grid prediction is an error for that case only; the other
    cases are still scored. Returns the ``cosmos evaluate`` JSON::

        {"cases":   {"crossmoda_211": {"VS": {"dice": .., "assd": ..}, "cochlea": {...}}, ...},
         "summary": {"VS": {"dice_mean", "dice_std", "assd_mean", "assd_std"}, "cochlea": {...},
                     "mean": {...}},            # values are null when no case was scored
         "errors":  {"crossmoda_212": "message", ...},
         "n_cases": scored cases, "n_labels": ground-truth files,
         "unmatched_predictions": [case ids with a prediction but no label],
         "pred_dir": str, "label_dir": str}

    ``only``: score only these ground-truth case ids (None = every one); the promotion gate's selection
    set and the reported set are kept apart this way.

    Raises CosmosError only when a directory is missing or holds no ground truth at all.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    labels = all_labels = _find_labels(label_dir)
    if only is not None:
        wanted = set(only)
        missing = sorted(wanted - set(labels))
        if missing:
            raise CosmosError(f"{label_dir}: no ground truth for case(s) {', '.join(missing)}")
        labels = {k: v for k, v in labels.items() if k in wanted}
    preds, errors = _find_predictions(pred_dir)
    cases: dict[str, dict[str, dict[str, float]]] = {}
    ids = sorted(labels, key=layout.case_sort_key)
    for case in progress(ids, desc="evaluate", unit="case"):
        if case in errors:
            continue
        if case not in preds:
            errors[case] = f"no prediction in {pred_dir} (expected {layout.label_name(case)} or {case}.nii.gz)"
            continue
        try:
            cases[case] = evaluate_case(preds[case], labels[case])
        except (CosmosError, NiftiError) as exc:
            errors[case] = str(exc)
    unmatched = sorted(set(preds) - set(all_labels), key=layout.case_sort_key)
    if unmatched:
        log.warning(
            "%d prediction(s) have no ground truth and are not scored: %s", len(unmatched), ", ".join(unmatched)
        )
    for case, message in sorted(errors.items(), key=lambda kv: layout.case_sort_key(kv[0])):
        log.error("%s: %s", case, message)
    log.info("scored %d of %d labelled cases (%d errors)", len(cases), len(labels), len(errors))
    return {
        "cases": cases,
        "summary": summarize(cases),
        "errors": dict(sorted(errors.items(), key=lambda kv: layout.case_sort_key(kv[0]))),
        "n_cases": len(cases),
        "n_labels": len(labels),
        "unmatched_predictions": unmatched,
        "pred_dir": str(pred_dir),
        "label_dir": str(label_dir),
    }


# --------------------------------------------------------------------------- presentation
def format_pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``0.871 ± 0.063``; ``n/a`` when nothing was scored."""
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


TABLE_COLUMNS = (
    ("dice", "mean"),
    ("dice", "VS"),
    ("dice", "cochlea"),
    ("assd", "mean"),
    ("assd", "VS"),
    ("assd", "cochlea"),
)


def summary_row(summary: dict[str, dict[str, float | None]]) -> list[str]:
    """The six Table-1 cells (Dice mean/VS/cochlea, ASSD mean/VS/cochlea) as ``mean ± std``."""
    return [format_pm(summary[s][f"{m}_mean"], summary[s][f"{m}_std"]) for m, s in TABLE_COLUMNS]


TABLE1_HEADER = ["Dice mean", "Dice VS", "Dice cochlea", "ASSD mean (mm)", "ASSD VS (mm)", "ASSD cochlea (mm)"]


def format_table1(
    rows: list[tuple[str, dict[str, Any] | None, Sequence[object]]],
    extra_header: list[str] | None = None,
    style: str = "markdown",
    first: str = "Method",
) -> str:
    """THE Table-1 formatter: one row per (name, ``evaluate_folder`` summary or None, extra cells (``str()``-ed)).

    ``style``: ``markdown`` (README, report, benchmark.md) or ``text`` (aligned columns for a terminal).
    Unscored rows show ``n/a``.
    """
    extra_header = list(extra_header or [])
    header = [first] + TABLE1_HEADER + extra_header
    body = []
    for name, summary, extra in rows:
        cells = summary_row(summary) if summary else ["n/a"] * len(TABLE1_HEADER)
        body.append([name] + cells + [str(e) for e in extra])
    if style == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    table = [header] + body
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(result: dict[str, Any], per_case: bool = False) -> str:
    """A plain-text Table-1-style summary of an ``evaluate_folder`` result."""
    header = ["Dice mean", "Dice VS", "Dice cochlea", "ASSD mean (mm)", "ASSD VS (mm)", "ASSD cochlea (mm)"]
    rows: list[list[str]] = []
    if per_case:
        for case, scores in result["cases"].items():
            rows.append(
                [case]
                + [
                    f"{np.mean([scores[s][m] for s in STRUCTURES]) if s == 'mean' else scores[s][m]:.3f}"
                    for m, s in TABLE_COLUMNS
                ]
            )
    rows.append([f"all ({result['n_cases']} cases)"] + summary_row(result["summary"]))
    table = [["case"] + header] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(header) + 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if result["errors"]:
        lines.append(f"{len(result['errors'])} case(s) not scored:")
        lines += [f"  {case}: {msg}" for case, msg in result["errors"].items()]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write an ``evaluate_folder`` result as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
