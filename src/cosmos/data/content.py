"""Is an array a scan to segment at all? The content checks every reader of an image shares.

Why a module of its own: the reader (``cosmos.data.nifti.usability_problems``) refuses a constant
image and a label map given as an image, and the modality checks (:mod:`cosmos.data.modality`, which
read files through the reader) sample voxels the same way. Kept below both, one definition serves
both and the import graph has no circle; modality re-exports every name.
"""

from __future__ import annotations

import numpy as np

# A label map has a handful of classes (crossMoDA: 0, 1, 2); a scanner image has hundreds of grey values.
MAX_LABEL_VALUES = 8
# Voxels sampled for the statistics: enough for stable quantiles, cheap on a 512x512x120 volume.
_SAMPLE = 1_000_000


def finite_sample(data: np.ndarray, n: int = _SAMPLE) -> np.ndarray:
    """A deterministic strided sample of the finite voxels (the whole array when small)."""
    flat = np.asarray(data).reshape(-1)
    if flat.size > n:
        flat = flat[:: max(1, flat.size // n)]
    return flat[np.isfinite(flat)]


def is_label_map(data: np.ndarray) -> tuple[bool, list[float]]:
    """(True, values) when ``data`` holds at most :data:`MAX_LABEL_VALUES` distinct integer values."""
    arr = np.asarray(data)
    sample = finite_sample(arr)
    if sample.size == 0:
        return False, []
    values = np.unique(sample)
    if values.size > MAX_LABEL_VALUES or not np.array_equal(values, np.rint(values)):
        return False, []
    full = np.unique(arr[np.isfinite(arr)]) if arr.size > sample.size else values
    if full.size > MAX_LABEL_VALUES or not np.array_equal(full, np.rint(full)):
        return False, []
    return True, [float(v) for v in full]


def content_problems(data: np.ndarray) -> list[str]:
    """Why ``data`` is not a scan to segment at all: a constant image or a label map (empty list = ok).

    NaN/inf voxels are reported by the caller (``cosmos.data.nifti.usability_problems``); only the
    finite voxels are looked at here.
    """
    arr = np.asarray(data)
    finite = arr[np.isfinite(arr)] if not np.all(np.isfinite(arr)) else arr
    if finite.size == 0:
        return []
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        return [f"image is constant (every voxel is {lo:g}): nothing to segment"]
    label, values = is_label_map(finite)
    if label:
        shown = ", ".join(f"{v:g}" for v in values)
        return [
            f"looks like a label map, not an image: only {len(values)} distinct integer values ({shown}); "
            "give the hrT2 scan itself"
        ]
    return []
