"""NIfTI I/O that keeps geometry exactly, and the one reader every stage uses.

Why our own read path: nibabel stops decompressing at the last voxel, so a flipped bit in the
compressed data (or a wrong CRC trailer) passes unnoticed, and it trusts the header's dimensions
enough to allocate whatever they claim. :func:`read_bytes` checks the claimed size first and reads
the gzip stream to its end, so both problems become one line naming the file.

Why not SimpleITK for writing: SimpleITK rebuilds the header from direction/origin/spacing and
drops the sform/qform distinction. nibabel keeps the header we read (sform and qform codes and
matrices), so a volume written back on its source grid is bit-identical in geometry.

Why a geometry check: nibabel and SimpleITK (so nnU-Net) can read one header as two geometries,
and a scan segmented at the wrong scale raises no error. The header checks (pixdim vs affine, zero
or implausible voxel sizes, shear, the memory a grid would need: :func:`memory_problems`) live in
:mod:`cosmos.data.geometry` and are re-exported here; :func:`geometry_problems` runs them on an image,
a header or a file, and every image that is segmented or trained on passes them first
(:func:`check_usable`), with the content checks of :mod:`cosmos.data.content` (a constant image, a
label map). :class:`NiftiError` comes from :mod:`cosmos.data.nifti_errors`, below the checks that raise it.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import logging
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cosmos.data.content import content_problems
from cosmos.data.geometry import DEFAULT_MAX_WORK_BYTES as DEFAULT_MAX_WORK_BYTES
from cosmos.data.geometry import MAX_VOXEL_MM as MAX_VOXEL_MM
from cosmos.data.geometry import MAX_WORK_ENV as MAX_WORK_ENV
from cosmos.data.geometry import MIN_VOXEL_MM as MIN_VOXEL_MM
from cosmos.data.geometry import PIXDIM_TOLERANCE as PIXDIM_TOLERANCE
from cosmos.data.geometry import SHEAR_TOLERANCE as SHEAR_TOLERANCE
from cosmos.data.geometry import WORK_COPIES as WORK_COPIES
from cosmos.data.geometry import affine_problems as affine_problems
from cosmos.data.geometry import header_problems as header_problems
from cosmos.data.geometry import human_bytes as human_bytes
from cosmos.data.geometry import max_work_bytes as max_work_bytes
from cosmos.data.geometry import memory_problems as memory_problems
from cosmos.data.geometry import work_bytes as work_bytes
from cosmos.data.nifti_errors import NiftiError as NiftiError

LABEL_DTYPE = np.uint8
MAX_BYTES_ENV = "COSMOS_MAX_NIFTI_BYTES"
DEFAULT_MAX_BYTES = 4 * 1024**3
_MAX_DEFLATE_RATIO = 1032  # deflate cannot compress better than ~1032:1
_READ_SLACK = 64 * 1024**2  # trailing bytes tolerated after the voxel data
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Volume:
    """A 3D array with the header it came from (affine, sform/qform, zooms)."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    # The header exactly as stored in the file (``load`` sets it): nibabel's loader rewrites a zero
    # or negative pixdim in ``header``, which SimpleITK would still read as stored.
    file_header: Any = field(default=None, repr=False, compare=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """True voxel sizes (mm): column norms of the affine, valid for oblique/permuted grids."""
        x, y, z = (float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def max_bytes() -> int:
    """The largest voxel payload one NIfTI may claim (bytes): ``$COSMOS_MAX_NIFTI_BYTES`` or 4 GiB.

    Why a cap: a 4 KB file whose header claims 1200^3 voxels would otherwise make us allocate
    gigabytes (or die with a bare MemoryError) before any check could name the file. The largest
    crossMoDA volume is ~0.2 GB as float32, so 4 GiB leaves room for real data.
    """
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise NiftiError(f"${MAX_BYTES_ENV}={text!r}: expected a number of bytes") from None
    if value <= 0:
        raise NiftiError(f"${MAX_BYTES_ENV}={text!r}: must be positive")
    return value


def _stat_file(path: Path) -> int:
    """The file's size; symlink loops, dangling links and folders become one NiftiError line."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            raise NiftiError(f"{path}: dangling symlink (points to {target}, which does not exist)") from None
        raise NiftiError(f"{path}: file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NiftiError(f"{path}: symlink loop (too many levels of symbolic links)") from None
        raise NiftiError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise NiftiError(f"{path}: not a regular file")
    return int(st.st_size)


def _open_raw(path: Path):
    """A binary stream of the file's *decompressed* bytes (gzip detected by magic, not by name)."""
    fh = open(path, "rb")
    magic = fh.read(2)
    fh.seek(0)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb"), True
    return fh, False


def _parse_header(path: Path, head: bytes):
    """The image class and header from the first bytes; refuses non-NIfTI files in one line."""
    if len(head) < 348:
        raise NiftiError(f"{path}: truncated NIfTI (only {len(head)} header bytes, need at least 348)")
    for order in ("<", ">"):
        size = int.from_bytes(head[:4], "little" if order == "<" else "big")
        if size == 348:
            klass = nib.Nifti1Image
            magic = head[344:348]
            if magic == b"ni1\x00":
                raise NiftiError(f"{path}: a two-file NIfTI header (.hdr/.img pair); convert it to one .nii.gz")
            if magic != b"n+1\x00":
                raise NiftiError(f"{path}: not a NIfTI-1 file (bad magic {magic!r}; an Analyze header?)")
            break
        if size == 540:
            klass = nib.Nifti2Image
            if len(head) < 540:
                raise NiftiError(f"{path}: truncated NIfTI-2 header ({len(head)} of 540 bytes)")
            break
    else:
        raise NiftiError(f"{path}: not a NIfTI file (header size field is neither 348 nor 540)")
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(head), check=False)
        shape = tuple(int(v) for v in header.get_data_shape())
        itemsize = int(header.get_data_dtype().itemsize)
        offset = int(header.get_data_offset())
    except Exception as exc:  # any malformed header field: still one line naming the file
        raise NiftiError(f"{path}: unreadable NIfTI header ({exc})") from None
    if any(v < 0 for v in shape):
        raise NiftiError(f"{path}: header has a negative dimension {shape}")
    return klass, header, shape, itemsize, offset


def read_bytes(path: str | Path, cap: int | None = None) -> tuple[bytes, type[nib.Nifti1Image]]:
    """The whole (decompressed) NIfTI file, checked before and after reading.

    Before: the header's claimed size against the file's own size (a ``.nii`` must hold it all; a
    ``.nii.gz`` cannot inflate more than ~1032x, deflate's limit) and against ``cap``, so a forged
    header is refused without allocating anything. After: a gzip stream is read through to its end,
    so its CRC-32 and length trailer are verified (nibabel alone stops at the last voxel and never
    sees a flipped bit in the compressed data).
    """
    path = Path(path)
    cap = max_bytes() if cap is None else int(cap)
    file_size = _stat_file(path)
    if file_size == 0:
        raise NiftiError(f"{path}: empty file (0 bytes)")
    try:
        raw, gz = _open_raw(path)
        with raw:
            head = raw.read(540)
            klass, header, shape, itemsize, offset = _parse_header(path, head)
            n_vox = int(np.prod(shape, dtype=np.float64)) if shape else 0
            claimed = offset + n_vox * itemsize
            shown = "x".join(str(v) for v in shape)
            if n_vox * itemsize > cap:
                raise NiftiError(
                    f"{path}: header claims {shown} voxels ({human_bytes(n_vox * itemsize)}), above the "
                    f"{human_bytes(cap)} limit (${MAX_BYTES_ENV}); refusing to read it"
                )
            if gz and claimed > file_size * _MAX_DEFLATE_RATIO + 4096:
                raise NiftiError(
                    f"{path}: header claims {shown} voxels ({human_bytes(claimed)}), impossible for a "
                    f"{human_bytes(file_size)} gzip file: corrupt or forged header"
                )
            if not gz and claimed > file_size:
                raise NiftiError(
                    f"{path}: truncated NIfTI: header claims {human_bytes(claimed)} ({shown} voxels), "
                    f"the file holds {human_bytes(file_size)}"
                )
            # Read to the end of the stream (bounded): gzip checks CRC-32 and ISIZE at EOF.
            limit = min(cap + offset, 2 * claimed + _READ_SLACK)
            rest = raw.read(limit + 1 - len(head))
    except NiftiError:
        raise
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise NiftiError(f"{path}: corrupt gzip stream ({exc})") from None
    except EOFError:
        raise NiftiError(
            f"{path}: corrupt or truncated gzip stream (it ends before its end-of-stream marker)"
        ) from None
    except MemoryError:
        raise NiftiError(f"{path}: out of memory while reading it ({human_bytes(claimed)} claimed)") from None
    except OSError as exc:
        raise NiftiError(f"{path}: cannot read ({exc.strerror or exc})") from None
    data = head + rest
    if len(data) > limit:
        raise NiftiError(
            f"{path}: decompresses to more than {human_bytes(limit)} although its header describes "
            f"{human_bytes(claimed)}: corrupt or a decompression bomb"
        )
    if len(data) < claimed:
        raise NiftiError(
            f"{path}: truncated NIfTI: header claims {human_bytes(claimed)} ({shown} voxels), "
            f"the data holds {human_bytes(len(data))}"
        )
    return data, klass


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_nibabel():
    """Silence nibabel's header "fixes" (``pixdim[1,2,3] should be non-zero; setting 0 dims to 1``):
    a stray line beside our own, and :func:`geometry_problems` reports the stored values instead."""
    logger, quiet = logging.getLogger("nibabel.global"), _BelowError()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _check_dtype(path: Path, header: Any) -> None:
    """Refuse a voxel data type that is not one real number per voxel, before any arithmetic.

    Complex voxels would lose their imaginary part with only a numpy warning; RGB/RGBA (structured)
    voxels make numpy raise a TypeError deep inside the first cast or ``min``.
    """
    dt = np.dtype(header.get_data_dtype())
    if dt.kind in "biuf" and dt.fields is None:
        return
    try:
        name = str(header.get_value_label("datatype"))
    except Exception:  # a header without a NIfTI datatype code: numpy's name is still clear
        name = str(dt)
    if dt.kind == "c":
        why = "complex voxels (the imaginary part would be lost); store a real-valued (integer or float) image"
    elif dt.fields is not None or dt.kind == "V":
        why = "non-scalar voxels (RGB/RGBA or another multi-component type); store one grey value per voxel"
    else:
        why = "not a numeric voxel type; store an integer or float image"
    raise NiftiError(f"{path}: unsupported NIfTI data type {name}: {why}")


def load(path: str | Path, *, dtype=np.float32, label: bool = False, cap: int | None = None) -> Volume:
    """Load a 3D NIfTI; raise NiftiError (never a library traceback) on any problem.

    Every stage reads NIfTI through here, so every stage gets the same checks (see
    :func:`read_bytes`): bounded by the header, whole gzip stream verified.
    """
    path = Path(path)
    data, klass = read_bytes(path, cap)
    try:
        stored = _parse_header(path, data[:540])[1]  # as in the file: nibabel "fixes" pixdim on load
        with _quiet_nibabel():
            img = klass.from_bytes(data)
        del data
        _check_dtype(path, img.header)
        arr = np.asanyarray(img.dataobj)
    except NiftiError:
        raise
    except MemoryError:
        raise NiftiError(f"{path}: out of memory while decoding its voxels") from None
    except Exception as exc:  # nibabel's header/array errors: one line about this file
        raise NiftiError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
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
        out = arr.astype(LABEL_DTYPE, copy=False)
    else:
        out = np.asarray(arr, dtype=dtype)
    return Volume(data=out, affine=img.affine.copy(), header=img.header.copy(), file_header=stored)


def read_header(path: str | Path):
    """The NIfTI header of ``path`` exactly as stored (no voxel data read, nothing "fixed")."""
    path = Path(path)
    if _stat_file(path) == 0:
        raise NiftiError(f"{path}: empty file (0 bytes)")
    try:
        raw, _ = _open_raw(path)
        with raw:
            head = raw.read(540)
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise NiftiError(f"{path}: corrupt gzip stream ({exc})") from None
    except OSError as exc:
        raise NiftiError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _parse_header(path, head)[1]


def geometry_problems(source: Any, affine: np.ndarray | None = None) -> list[str]:
    """Why a scan's geometry cannot be trusted (empty list = consistent), from the header alone.

    ``source``: a nibabel image, a NIfTI header (as stored; nibabel's loader rewrites a zero or
    negative pixdim, so pass :attr:`Volume.file_header` or :func:`read_header`), or a file path (its
    header is read, no voxels). ``affine``: the voxel-to-world matrix nibabel chose (sform if
    sform_code > 0, else qform); by default the image's, or the header's best affine. Refused: a
    NaN/inf or singular affine; a zero, negative, NaN or inf pixdim; voxel sizes of the affine and
    of pixdim more than 1 % apart (SimpleITK and nnU-Net read pixdim, nibabel the affine: one scan,
    two sizes); a voxel edge outside 0.05-10 mm; a sheared (non-orthogonal) direction matrix; a grid
    needing more working memory than :func:`max_work_bytes` (:func:`memory_problems`, from the
    header alone). The checks themselves are :mod:`cosmos.data.geometry`'s; this reads the header
    when given a path, which is why it lives with the reader.
    Each problem is one phrase with the numbers; the caller names the file.
    """
    if isinstance(source, (str, Path)):
        header = read_header(source)
    elif hasattr(source, "header") and hasattr(source, "affine"):
        header = source.header
        if affine is None:
            affine = source.affine
    else:
        header = source
    if affine is None and header is not None:
        try:
            affine = header.get_best_affine()
        except Exception:  # a header too broken to give one: the pixdim checks still run
            affine = None
    problems = [] if affine is None else affine_problems(affine)
    return problems + header_problems(header, affine)


def usability_problems(data: np.ndarray, affine: np.ndarray, header: Any = None) -> list[str]:
    """Why an *image* cannot be segmented meaningfully (empty list = usable).

    NaN/inf voxels, a NaN/inf or singular affine, an all-constant image (all zeros, say) and a label
    map given as an image (:func:`cosmos.data.content.content_problems`) each produce an empty or
    meaningless mask without any error downstream, so they are refused up front.
    With the file's ``header`` (as stored), its geometry is checked too (:func:`geometry_problems`).
    """
    problems: list[str] = []
    finite = np.isfinite(data)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad:
        what = "every voxel is" if n_bad == finite.size else f"{n_bad} of {finite.size} voxel(s) are"
        problems.append(f"{what} NaN or inf")
    aff = np.asarray(affine, dtype=float)
    problems.extend(affine_problems(aff))
    if header is not None:
        problems.extend(header_problems(header, aff))
    if n_bad < finite.size and data.size:
        problems.extend(content_problems(data))
    return problems


def image_problems(vol: Volume) -> list[str]:
    """:func:`usability_problems` of a loaded image, geometry included (from the header as stored)."""
    header = vol.file_header if vol.file_header is not None else vol.header
    return usability_problems(vol.data, vol.affine, header)


def check_usable(path: str | Path, vol: Volume) -> Volume:
    """``vol`` if it is a usable image (see :func:`image_problems`), else one NiftiError line."""
    problems = image_problems(vol)
    if problems:
        raise NiftiError(f"{path}: " + "; ".join(problems))
    return vol


def load_image(path: str | Path, *, dtype=np.float32, cap: int | None = None) -> Volume:
    """Load an image to segment or train on, refusing NaN/inf voxels, bad geometry or a constant image."""
    return check_usable(path, load(path, dtype=dtype, cap=cap))


def save(
    path: str | Path,
    data: np.ndarray,
    like: Volume | None = None,
    *,
    affine: np.ndarray | None = None,
    label: bool = False,
    dtype=None,
) -> Path:
    """Write a 3D array on the grid of ``like`` (header kept: sform, qform, zooms, units).

    Labels are written as uint8; images as float32 unless ``dtype`` asks otherwise (an integer
    dtype rounds, as scanners store integers; it also makes files smaller and faster to gzip).
    Writes to a temp file then renames, so a killed writer never leaves a half-written NIfTI
    behind under the final name; a failed write (a full disk) removes the temp file and raises one
    NiftiError line naming ``path``.
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
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}.tmp{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: name the user's path, leave no temp file
        from cosmos.data.outputs import write_reason

        tmp.unlink(missing_ok=True)
        raise NiftiError(f"{path}: cannot write it ({write_reason(exc)}); nothing was left behind") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> str | None:
    """None when ``a`` and ``b`` share shape and affine (within ``atol`` mm); else what differs."""
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    diff = float(np.max(np.abs(a.affine - b.affine)))
    if diff > atol:
        return f"affine differs by up to {diff:.4g} (tolerance {atol})"
    return None
