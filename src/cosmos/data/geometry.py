"""Can a scan's geometry be trusted, and does segmenting it fit in memory? Checked from the header alone.

Why a geometry check (:func:`header_problems`, :func:`affine_problems`): nibabel takes the
voxel-to-world matrix from the sform, SimpleITK (and so nnU-Net) takes the voxel size from ``pixdim``. A header where the two
disagree, a zero or negative ``pixdim`` (nibabel silently "fixes" it on load, SimpleITK does not),
an implausible voxel size or a sheared direction matrix means one scan with two geometries: the
segmenter runs at the wrong scale without any error, or fails deep inside SimpleITK on a temporary
copy. Every image that is segmented or trained on passes this check first
(``cosmos.data.nifti.check_usable``). The memory check (:func:`memory_problems`) estimates, from the
header's grid and voxel size, what segmenting the scan would need before any voxel is read.

Functions of a header and an affine, nothing read from disk: reading a file is :mod:`cosmos.data.nifti`'s
job, and its ``geometry_problems`` (which also takes a path) runs :func:`affine_problems` and
:func:`header_problems`. nifti re-exports these names, so ``nifti.memory_problems`` and the rest keep
working; both raise :class:`~cosmos.data.nifti_errors.NiftiError`, defined below them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cosmos.data.nifti_errors import NiftiError

# Plausible MRI voxel edges (mm): crossMoDA scans are 0.4-1.5 mm; outside this range the header's
# units or scale are wrong (50 mm voxels made nnU-Net resample to tens of GiB).
MIN_VOXEL_MM = 0.05
MAX_VOXEL_MM = 10.0
PIXDIM_TOLERANCE = 0.01  # relative: affine voxel size vs pixdim
SHEAR_TOLERANCE = 1e-3  # |cos| between normalised direction columns
# Working memory to segment one scan (nnU-Net): float32 copies alive at once (image, resampled image, 3 logits,
# 3 probabilities, their sum, the segmentation and slack) and the cap on their total (override by environment).
WORK_COPIES = 12
MAX_WORK_ENV = "COSMOS_MAX_WORK_BYTES"
DEFAULT_MAX_WORK_BYTES = 16 * 1024**3


def max_work_bytes() -> int:
    """The memory one scan may need to be segmented (bytes): ``$COSMOS_MAX_WORK_BYTES`` or 16 GiB.

    Why: nnU-Net resamples a scan to the model's voxel size and keeps several float32 copies of it
    (image, logits and probabilities per class); a plausible-looking header (50 mm voxels resampled to
    0.5 mm, or a huge grid) used to make it try to allocate tens of GiB. :func:`work_bytes` estimates
    the need from the header alone, before any voxel is read.
    """
    text = os.environ.get(MAX_WORK_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_WORK_BYTES
    try:
        value = float(text)
    except ValueError:
        raise NiftiError(f"${MAX_WORK_ENV}={text!r}: expected a number of bytes") from None
    if not np.isfinite(value) or value <= 0:
        raise NiftiError(f"${MAX_WORK_ENV}={text!r}: must be a positive number of bytes")
    return int(value)


def work_bytes(shape: tuple[int, ...], spacing: Any, target_spacing: Any = None) -> float:
    """Estimated memory (bytes) to segment a scan of ``shape`` at ``spacing`` (mm), from the header alone.

    The grid is resampled to ``target_spacing`` (the model's voxel size; None: kept as is), then
    :data:`WORK_COPIES` float32 copies of it are alive at once. Only the product of the spacings
    matters, so the axis order (NIfTI or SimpleITK) does not.
    """
    n_vox = float(np.prod([max(int(v), 1) for v in shape[:3]], dtype=np.float64))
    if target_spacing is not None:
        here = float(np.prod(np.asarray(spacing, dtype=float)[:3]))
        there = float(np.prod(np.asarray(target_spacing, dtype=float)[:3]))
        if np.isfinite(here) and np.isfinite(there) and here > 0 and there > 0:
            n_vox *= here / there
    return n_vox * 4.0 * WORK_COPIES


def memory_problems(shape: tuple[int, ...], spacing: Any, target_spacing: Any = None) -> list[str]:
    """The memory check of ``nifti.geometry_problems``: refuse a scan needing more than :func:`max_work_bytes`."""
    need, cap = work_bytes(shape, spacing, target_spacing), max_work_bytes()
    if need <= cap:
        return []
    at = "" if target_spacing is None else f" once resampled to {_mm(target_spacing)}"
    return [
        f"segmenting its {'x'.join(str(int(v)) for v in shape[:3])} grid of {_mm(spacing)} voxels{at} would need "
        f"about {human_bytes(need)} of memory, above the {human_bytes(cap)} limit (${MAX_WORK_ENV})"
    ]


def human_bytes(n: float) -> str:
    """``n`` bytes in words (``1.5 GB``), for messages."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _mm(values) -> str:
    return " x ".join(f"{float(v):.4g}" for v in values) + " mm"


def _header_field(header, name: str):
    try:
        return header[name]
    except Exception:  # no such field (a header of another format) or none at all
        return None


def header_problems(header: Any, affine: Any) -> list[str]:
    """The checks of ``nifti.geometry_problems`` beyond a NaN/inf or singular affine (:func:`affine_problems`)."""
    problems: list[str] = []
    aff = None if affine is None else np.asarray(affine, dtype=float)
    zooms = None
    if aff is not None and aff.shape[0] >= 3 and aff.shape[1] >= 3 and np.all(np.isfinite(aff[:3, :3])):
        z = np.linalg.norm(aff[:3, :3], axis=0)
        if np.all(z > 0) and abs(float(np.linalg.det(aff[:3, :3]))) >= 1e-12:
            zooms = z
    raw_pixdim = _header_field(header, "pixdim")
    pixdim = None if raw_pixdim is None else np.asarray(raw_pixdim, dtype=float)[1:4]
    sform_code = _header_field(header, "sform_code")
    qform_code = _header_field(header, "qform_code")
    if sform_code is not None and int(sform_code) > 0:
        source = "sform"
    elif qform_code is not None and int(qform_code) > 0:
        source = "qform"
    else:
        source = "affine"
    pixdim_ok = pixdim is not None and pixdim.size == 3 and bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0))
    if pixdim is not None and pixdim.size == 3 and not pixdim_ok:
        problems.append(
            f"pixdim gives a voxel size of {_mm(pixdim)}: each must be positive and finite "
            "(SimpleITK and nnU-Net take the voxel size from pixdim)"
        )
    if zooms is not None and pixdim_ok:
        assert pixdim is not None
        ratio = float(np.max(np.maximum(zooms, pixdim) / np.minimum(zooms, pixdim)))
        if ratio - 1 > PIXDIM_TOLERANCE:
            apart = f"{ratio:.3g}x" if ratio >= 1.5 else f"{100 * (ratio - 1):.1f}%"
            problems.append(
                f"voxel size disagrees: the {source} says {_mm(zooms)}, pixdim says {_mm(pixdim)} "
                f"(up to {apart} apart); nibabel reads the {source}, SimpleITK and nnU-Net read pixdim, "
                "so the scan would be segmented at the wrong scale"
            )
    edges = zooms if zooms is not None else (pixdim if pixdim_ok else None)
    if edges is not None and (float(edges.min()) < MIN_VOXEL_MM or float(edges.max()) > MAX_VOXEL_MM):
        problems.append(
            f"voxel size {_mm(edges)} is outside the plausible MRI range "
            f"({MIN_VOXEL_MM:g}-{MAX_VOXEL_MM:g} mm per voxel edge): wrong units or a broken header"
        )
    if edges is not None:
        shape = _header_shape(header)
        if shape is not None:
            problems.extend(memory_problems(shape, edges))
    if zooms is not None and aff is not None:
        direction = aff[:3, :3] / zooms
        gram = direction.T @ direction
        off = np.abs(gram - np.eye(3))
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        if float(off[i, j]) > SHEAR_TOLERANCE:
            angle = float(np.degrees(np.arccos(np.clip(gram[i, j], -1.0, 1.0))))
            problems.append(
                f"direction matrix of the {source} is not orthogonal: voxel axes {'ijk'[min(i, j)]} and "
                f"{'ijk'[max(i, j)]} meet at {angle:.1f} degrees, not 90 (a sheared grid, which SimpleITK "
                "and nnU-Net refuse)"
            )
    return problems


def _header_shape(header) -> tuple[int, ...] | None:
    try:
        shape = tuple(int(v) for v in header.get_data_shape())
    except Exception:  # not a NIfTI header (a bare mapping in a test, say): no memory check
        return None
    return shape if len(shape) >= 3 else None


_AFFINE_NOT_FINITE = "affine holds NaN or inf (no usable voxel-to-world geometry)"
_AFFINE_SINGULAR = "affine is singular (a zero voxel size or collapsed axes)"


def affine_problems(affine: Any) -> list[str]:
    """A NaN/inf or singular voxel-to-world matrix, as one phrase ([] = usable)."""
    aff = np.asarray(affine, dtype=float)
    if not np.all(np.isfinite(aff)):
        return [_AFFINE_NOT_FINITE]
    if abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12:
        return [_AFFINE_SINGULAR]
    return []
