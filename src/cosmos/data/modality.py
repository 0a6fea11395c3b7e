"""Modality by content, not by file name: what an image to segment must look like.

Why: ``cosmos predict`` and ``cosmos serve`` judged the modality by the file name only, so a ceT1 or a
label map renamed ``patientA.nii.gz`` (or a ceT1 renamed ``crossmoda_2_hrT2.nii.gz``) was segmented
with exit 0. Two levels, kept apart on purpose:

* **Refused** (:func:`content_problems`, defined in :mod:`cosmos.data.content` and re-exported here;
  called by ``cosmos.data.nifti.usability_problems``, so
  ``validate``, ``run``'s ingest, ``predict`` and ``serve`` all refuse the same files): a label map
  (at most :data:`MAX_LABEL_VALUES` distinct values, all integers: no scanner image is that coarse)
  and a constant image. Complex and RGB voxels are refused earlier, when the file is read
  (``cosmos.data.nifti.load``: one place for data types).
* **One entry point** for a scan to segment: :func:`load_scan` (a path) or :func:`check_scan` (a
  loaded volume): the reader's checks (``cosmos.data.nifti``: geometry, memory, data type), the
  content checks above, and the warning below.
* **Warned** (:func:`modality_warning`): an intensity profile that looks like ceT1 rather than hrT2.
  This is a heuristic on label-free intensity features, calibrated on the phantom, so it is a
  warning, never a gate: a real hrT2 with little fluid in view, or an unusual protocol, can trip it,
  and a ceT1 with an unusual contrast can pass it. docs/bad-input.md gives its measured error rates
  (``benchmarks/modality_check.py``).

The discriminator: in an hrT2 (CISS/FIESTA) the CSF and the labyrinth fluid are the brightest tissue,
several times the head's median, so the bright tail of the head's intensities is heavy. In a ceT1
the fluid is dark and only enhancing vessels, the tumour and fat are bright: a thin bright tail.
:func:`intensity_features` measures that tail relative to the head's median (scale-free, so stored
ranges, slopes and bias do not matter); :func:`looks_like_cet1` thresholds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cosmos.data.content import MAX_LABEL_VALUES as MAX_LABEL_VALUES
from cosmos.data.content import content_problems as content_problems
from cosmos.data.content import finite_sample
from cosmos.data.content import is_label_map as is_label_map
from cosmos.data.nifti import NiftiError, Volume, image_problems, load, memory_problems

# The bright-tail threshold and the share of head voxels above it. Tuned on the built-in phantom sites
# (benchmarks/modality_check.py prints the confusion counts on the built-in and the random phantom families).
BRIGHT_RATIO = 3.0
MIN_BRIGHT_FRACTION = 0.005


def head_mask_values(data: np.ndarray) -> np.ndarray:
    """The finite sampled voxels inside the head: above 10 % of the 99.5th percentile (air and noise out)."""
    sample = finite_sample(np.asarray(data, dtype=np.float32))
    if sample.size == 0:
        return sample
    lo = float(np.percentile(sample, 0.5))
    shifted = sample - lo
    top = float(np.percentile(shifted, 99.5))
    if top <= 0:
        return shifted[:0]
    return shifted[shifted > 0.1 * top]


def intensity_features(data: np.ndarray) -> dict[str, float]:
    """Scale-free, label-free intensity features of the head (see the module docstring).

    ``bright_fraction``: share of head voxels brighter than :data:`BRIGHT_RATIO` x the head's median (3x);
    ``p99_over_median``: the 99th percentile over the median; ``head_voxels``: how many sampled voxels
    the head mask kept.
    """
    head = head_mask_values(data)
    if head.size < 100:
        return {"bright_fraction": float("nan"), "p99_over_median": float("nan"), "head_voxels": float(head.size)}
    med = float(np.median(head))
    if med <= 0:
        return {"bright_fraction": float("nan"), "p99_over_median": float("nan"), "head_voxels": float(head.size)}
    return {
        "bright_fraction": float(np.mean(head > BRIGHT_RATIO * med)),
        "p99_over_median": float(np.percentile(head, 99) / med),
        "head_voxels": float(head.size),
    }


def looks_like_cet1(features: dict[str, float]) -> bool:
    """True when the bright tail is too thin for an hrT2 (little fluid brighter than 3x the median)."""
    frac = features.get("bright_fraction", float("nan"))
    return bool(np.isfinite(frac) and frac < MIN_BRIGHT_FRACTION)


def modality_warning(data: np.ndarray, spacing: tuple[float, ...] | None = None) -> str | None:
    """A one-phrase warning when ``data`` looks like a ceT1 rather than an hrT2; None when it looks like hrT2.

    ``spacing`` (mm) is accepted for callers that have it and for future features; the current
    features are scale-free and do not use it. A heuristic (see the module docstring): a warning,
    never a refusal.
    """
    del spacing  # the intensity features are scale-free
    feats = intensity_features(data)
    if not looks_like_cet1(feats):
        return None
    return (
        f"intensity profile looks like a ceT1, not an hrT2: only {100 * feats['bright_fraction']:.1f}% of the head "
        f"is brighter than {BRIGHT_RATIO:g}x its median (hrT2 fluid is; expected at least "
        f"{100 * MIN_BRIGHT_FRACTION:g}%); the segmenter was trained for hrT2, check the input"
    )


def check_scan(vol: Volume, name: str | Path, target_spacing: Sequence[float] | None = None) -> str | None:
    """The one check of a loaded scan to segment; raises :class:`NiftiError` naming ``name``, else returns
    the ceT1 warning (or None).

    Refused: everything ``cosmos.data.nifti.image_problems`` refuses (NaN/inf voxels, a bad affine,
    pixdim vs affine, zero/negative/implausible or sheared voxels, sform vs qform, too much memory
    from the header alone, a constant image, a label map) and, with ``target_spacing`` (the model's
    voxel size, mm), a grid that would need more than the memory cap once resampled to it.
    """
    problems = image_problems(vol)
    if target_spacing is not None and not problems:
        problems = memory_problems(vol.shape, vol.spacing, target_spacing)
    if problems:
        raise NiftiError(f"{name}: " + "; ".join(problems))
    return modality_warning(vol.data, vol.spacing)


def load_scan(
    path: str | Path, *, name: str | Path | None = None, target_spacing: Sequence[float] | None = None
) -> tuple[Volume, str | None]:
    """Read and check a scan to segment: ``(volume, ceT1 warning or None)``; one NiftiError line otherwise.

    The single entry point of ``predict`` (through ``cosmos.segmentation.inputs``) and ``serve``:
    ``cosmos.data.nifti.load`` (size cap from the header, whole gzip stream, complex/RGB data types
    refused) then :func:`check_scan`. ``name``: what to call the file in messages (``serve`` passes
    the client's file name, never its temporary copy); default ``path``.
    """
    shown = path if name is None else name
    try:
        vol = load(path)
    except NiftiError as exc:
        if name is None:
            raise
        raise NiftiError(str(exc).replace(str(path), str(name))) from None
    return vol, check_scan(vol, shown, target_spacing)
