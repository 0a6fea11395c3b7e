"""NIfTI I/O that keeps geometry exactly.

Why not SimpleITK for writing: SimpleITK rebuilds the header from direction/origin/spacing and
drops the sform/qform distinction. nibabel keeps the header we read (sform and qform codes and
matrices), so a volume written back on its source grid is bit-identical in geometry.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cosmos.errors import CosmosError

LABEL_DTYPE = np.uint8


class NiftiError(CosmosError, ValueError):
    """A NIfTI file that cannot be used; the message names the file and the problem."""


@dataclass
class Volume:
    """A 3D array with the header it came from (affine, sform/qform, zooms)."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header

    @property
    def spacing(self) -> tuple[float, float, float]:
        """True voxel sizes (mm): column norms of the affine, valid for oblique/permuted grids."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def load(path: str | Path, *, dtype=np.float32, label: bool = False) -> Volume:
    """Load a 3D NIfTI; raise NiftiError (never a library traceback) on any problem."""
    path = Path(path)
    if not path.exists():
        raise NiftiError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise NiftiError(f"{path}: not a NIfTI image ({type(img).__name__})")
        arr = np.asanyarray(img.dataobj)
    except NiftiError:
        raise
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise NiftiError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    except nib.filebasedimages.ImageFileError as exc:
        raise NiftiError(f"{path}: not a readable NIfTI file ({exc})") from None
    except (OSError, ValueError) as exc:
        raise NiftiError(f"{path}: truncated or unreadable NIfTI ({exc})") from None
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise NiftiError(f"{path}: expected a 3D volume, got {arr.ndim}D with shape {tuple(arr.shape)}")
    if label:
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)):
                raise NiftiError(f"{path}: label contains NaN or inf")
            rounded = np.rint(arr)
            if not np.array_equal(rounded, arr):
                raise NiftiError(f"{path}: label has non-integer values")
            arr = rounded
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
            raise NiftiError(f"{path}: label values outside 0..255")
        data = arr.astype(LABEL_DTYPE, copy=False)
    else:
        data = np.asarray(arr, dtype=dtype)
    return Volume(data=data, affine=img.affine.copy(), header=img.header.copy())


def save(path: str | Path, data: np.ndarray, like: Volume | None = None, *, affine: np.ndarray | None = None,
         label: bool = False, dtype=None) -> Path:
    """Write a 3D array on the grid of ``like`` (header kept: sform, qform, zooms, units).

    Labels are written as uint8; images as float32 unless ``dtype`` asks otherwise (an integer
    dtype rounds, as scanners store integers; it also makes files smaller and faster to gzip).
    Writes to a temp file then renames, so a killed writer never leaves a half-written NIfTI
    behind under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise NiftiError(f"{path}: refusing to write a {arr.ndim}D array as a 3D volume")
    if label:
        arr = arr.astype(LABEL_DTYPE)
    elif dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        arr = np.clip(np.rint(arr), info.min, info.max).astype(dtype)
    else:
        arr = arr.astype(np.float32 if dtype is None else dtype, copy=False)
    if like is not None:
        if tuple(like.shape) != tuple(arr.shape):
            raise NiftiError(f"{path}: array shape {arr.shape} differs from the reference grid {like.shape}")
        header = like.header.copy()
        header.set_data_dtype(arr.dtype)
        img = nib.Nifti1Image(arr, like.affine, header=header)
        # nibabel recomputes sform/qform from `affine` only when codes are 0; restore both exactly.
        sform, scode = like.header.get_sform(coded=True)
        qform, qcode = like.header.get_qform(coded=True)
        if scode:
            img.set_sform(sform, int(scode))
        if qcode:
            img.set_qform(qform, int(qcode))
    else:
        aff = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
        img = nib.Nifti1Image(arr, aff)
        img.set_sform(aff, 1)
        img.set_qform(aff, 1)
    img.header.set_xyzt_units("mm", "sec")
    if label:
        img.header["scl_slope"] = 1
        img.header["scl_inter"] = 0
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.tmp{suffix}")
    nib.save(img, str(tmp))
    tmp.replace(path)
    return path


def same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> str | None:
    """None when ``a`` and ``b`` share shape and affine (within ``atol`` mm); else what differs."""
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    diff = float(np.max(np.abs(a.affine - b.affine)))
    if diff > atol:
        return f"affine differs by up to {diff:.4g} (tolerance {atol})"
    return None
