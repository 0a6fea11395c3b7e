"""DICOM in and out: one MR series read with SimpleITK (checked first), a DICOM SEG written with highdicom.

Scans come from a PACS as DICOM; the open nnU-Net deployments hospitals run (Kaapana, MONAI Deploy, MHub) take a
series in and write a DICOM SEG out. What :func:`read_series` checks before any voxel is read, each failure one
line naming the folder and the problem (:class:`DicomError`):

* exactly one series in the folder (SimpleITK's ``GetGDCMSeriesIDs``): a second series (another scan, a SEG or
  RTSTRUCT dropped beside the images) would otherwise be ignored silently or mixed in;
* an MR image series (Modality ``MR``): SEG, RTSTRUCT, SR, PR, ... hold no image to segment;
* a transfer syntax SimpleITK's GDCM can decode (:data:`READABLE_TRANSFER_SYNTAXES`); others (HTJ2K, JPEG XL,
  MPEG/HEVC video, ...) are refused with the syntax's name, not a decoder traceback;
* one grid: the same rows, columns, pixel spacing and orientation in every slice, and slice positions (projected
  on the slice normal) evenly spaced -- a gap larger than the others means a missing slice, a zero gap a duplicate.

The volume handed on is SimpleITK's (LPS world, as DICOM); :func:`write_nifti` writes it as NIfTI (SimpleITK turns
LPS into NIfTI's RAS), so the NIfTI path, nnU-Net and the label all share the DICOM series' geometry.
:func:`write_seg` writes a label array on that grid (VS = 1, cochlea = 2) as a DICOM SEG referencing the source
series (segment codes: :func:`segment_descriptions`).
"""

from __future__ import annotations

import contextlib
import io
import locale
import logging
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from cosmos.errors import CosmosError

if TYPE_CHECKING:
    import SimpleITK as sitk

# Transfer syntaxes SimpleITK's GDCM decodes (uncompressed, deflate, JPEG baseline/extended/lossless, JPEG-LS,
# JPEG 2000, RLE). Anything else is refused by name before reading.
READABLE_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}
IMAGE_MODALITIES = ("MR",)  # the segmenter is trained on hrT2 MR
SPACING_RTOL = 0.05  # a slice gap more than 5 % off the series' median gap is a missing (or extra) slice
SPACING_ATOL_MM = 0.01
MAX_ZIP_MEMBERS = 10_000

VS_SEGMENT = 1
COCHLEA_SEGMENT = 2


class DicomError(CosmosError, ValueError):
    """A DICOM input that cannot be used; the message names the folder/file and the problem."""


@dataclass
class SeriesInfo:
    """What :func:`read_series` found: the series' identity, its slices in volume order, its grid."""

    folder: Path
    series_uid: str
    study_uid: str
    modality: str
    transfer_syntax_uid: str
    files: list[Path]  # sorted along the slice normal, the order of the volume's slices (SimpleITK's k)
    spacing_mm: tuple[float, float, float]
    description: str = ""
    # The slices' headers (no pixel data), same order as ``files``: what a DICOM SEG references. Kept so a
    # zip's series can be answered with a SEG after its temporary folder is gone.
    datasets: list[Any] = field(default_factory=list, repr=False)

    @property
    def n_slices(self) -> int:
        return len(self.files)


def _syntax_name(uid: str) -> str:
    from pydicom.uid import UID

    name = READABLE_TRANSFER_SYNTAXES.get(uid) or UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _read_header(path: Path, folder: Path):
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise DicomError(f"{folder}: {path.name} is not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _check_grid(folder: Path, headers: list) -> tuple[list[int], float]:
    """Slice order along the normal and the slice spacing; DicomError on inconsistent geometry."""
    first = headers[0]
    for attr in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        missing = [h for h in headers if attr not in h]
        if missing:
            raise DicomError(f"{folder}: {len(missing)} slice(s) lack {attr}; not a usable image series")
    orient = np.asarray([float(v) for v in first.ImageOrientationPatient])
    for h in headers[1:]:
        if (h.Rows, h.Columns) != (first.Rows, first.Columns):
            raise DicomError(
                f"{folder}: slices differ in size ({first.Rows}x{first.Columns} vs {h.Rows}x{h.Columns}); "
                "one series per folder"
            )
        if not np.allclose([float(v) for v in h.ImageOrientationPatient], orient, atol=1e-4):
            raise DicomError(f"{folder}: slices differ in orientation (ImageOrientationPatient); not one volume")
        if not np.allclose([float(v) for v in h.PixelSpacing], [float(v) for v in first.PixelSpacing], rtol=1e-4):
            raise DicomError(f"{folder}: slices differ in pixel spacing; not one volume")
    normal = np.cross(orient[:3], orient[3:])
    pos = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers]) @ normal
    order = [int(i) for i in np.argsort(pos, kind="stable")]
    gaps = np.diff(pos[order])
    if len(gaps) == 0:
        return order, 1.0
    step = float(np.median(gaps))
    if step <= SPACING_ATOL_MM:
        raise DicomError(f"{folder}: several slices share one position (duplicate slices?); not one volume")
    bad = np.flatnonzero(np.abs(gaps - step) > max(SPACING_ATOL_MM, SPACING_RTOL * step))
    if len(bad):
        i = int(bad[0])
        what = "missing slice(s)" if gaps[i] > step else "uneven or duplicate slices"
        raise DicomError(
            f"{folder}: {what}: gap of {gaps[i]:.3g} mm between slices at {pos[order][i]:.3g} and "
            f"{pos[order][i + 1]:.3g} mm where the series steps {step:.3g} mm ({len(bad)} uneven gap(s))"
        )
    return order, step


def is_dicom_folder(folder: str | Path, probe: int = 16) -> bool:
    """Whether ``folder`` looks like a DICOM series folder: a folder with no NIfTI file in it and at least one
    file (among the first ``probe``) that carries the DICOM preamble (``DICM`` at byte 128). How ``cosmos
    predict`` tells a DICOM input from a folder of NIfTI scans, before any check."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if any(p.name.endswith((".nii", ".nii.gz")) for p in files):
        return False
    for p in files[:probe]:
        try:
            with open(p, "rb") as fh:
                if fh.read(132)[128:132] == b"DICM":
                    return True
        except OSError:
            continue
    return False


def read_series(folder: str | Path) -> tuple[sitk.Image, SeriesInfo]:
    """Read the one MR series in ``folder`` with SimpleITK's ImageSeriesReader, after the checks in the module
    docstring. Returns the 3D image (LPS, as DICOM) and :class:`SeriesInfo`."""
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: DICOM folder not found")
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise DicomError(f"{folder}: no DICOM series found (give a folder holding the slices of one series)")
    if len(ids) > 1:
        raise DicomError(
            f"{folder}: {len(ids)} DICOM series in one folder ({', '.join(sorted(ids))}); give a folder holding one"
        )
    files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])]
    headers = [_read_header(f, folder) for f in files]
    first = headers[0]
    modalities = sorted({str(getattr(h, "Modality", "") or "?") for h in headers})
    bad_mod = [m for m in modalities if m not in IMAGE_MODALITIES]
    if bad_mod:
        raise DicomError(
            f"{folder}: modality {'/'.join(bad_mod)} is not an MR image series (cosmos segments hrT2 MR; "
            "SEG, RTSTRUCT, SR and other non-image objects cannot be segmented)"
        )
    syntaxes = sorted({str(getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", "") or "") for h in headers})
    unreadable = [s for s in syntaxes if s not in READABLE_TRANSFER_SYNTAXES]
    if unreadable:
        names = ", ".join(_syntax_name(s) if s else "(none in the file meta)" for s in unreadable)
        raise DicomError(
            f"{folder}: transfer syntax {names} cannot be read by SimpleITK; export the series uncompressed "
            "(or as JPEG, JPEG-LS, JPEG 2000 or RLE)"
        )
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise DicomError(f"{folder}: enhanced multi-frame DICOM is not supported; export one file per slice")
    if len(headers) < 2:
        raise DicomError(f"{folder}: a single slice is not a 3D volume")
    order, step = _check_grid(folder, headers)
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        image = reader.Execute()  # the reader leaves the locale alone (the writer does not: _keep_locale)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DicomError(f"{folder}: SimpleITK could not read the series ({first_line})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomError(f"{folder}: not a 3D greyscale series")
    sx, sy, sz = image.GetSpacing()
    info = SeriesInfo(
        folder=folder,
        series_uid=ids[0],
        study_uid=str(getattr(first, "StudyInstanceUID", "")),
        modality=modalities[0],
        transfer_syntax_uid=syntaxes[0],
        files=files,
        spacing_mm=(float(sx), float(sy), float(step)),
        description=str(getattr(first, "SeriesDescription", "") or ""),
        datasets=headers,
    )
    return image, info


def _safe_member(name: str) -> bool:
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts and not name.startswith(("/", "\\"))


def read_series_zip(source: str | Path | bytes, max_bytes: int) -> tuple[sitk.Image, SeriesInfo]:
    """:func:`read_series` on a zip of one series (a path or the zip's bytes), for ``cosmos serve``.

    Bounded before anything is extracted: the zip itself and the sum of its members' uncompressed sizes must stay
    under ``max_bytes``, at most :data:`MAX_ZIP_MEMBERS` members, no absolute or ``..`` names. The members are
    extracted into a temporary folder that is removed on return: ``info.datasets`` keeps the slices' headers
    (enough for :func:`write_seg`); ``info.files`` name the members as they were.
    """
    label = "zip" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            if len(source) > max_bytes:
                raise DicomError(f"{label}: {len(source)} bytes, over the limit of {max_bytes}")
            zf = zipfile.ZipFile(io.BytesIO(bytes(source)))
        else:
            path = Path(source)
            if not path.is_file():
                raise DicomError(f"{path}: zip file not found")
            if path.stat().st_size > max_bytes:
                raise DicomError(f"{path}: {path.stat().st_size} bytes, over the limit of {max_bytes}")
            zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DicomError(f"{label}: not a zip file ({exc})") from None
    with zf, tempfile.TemporaryDirectory(prefix="cosmos-dicom-") as tmp:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise DicomError(f"{label}: empty zip (expected the DICOM files of one series)")
        if len(members) > MAX_ZIP_MEMBERS:
            raise DicomError(f"{label}: {len(members)} files, over the limit of {MAX_ZIP_MEMBERS}")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise DicomError(f"{label}: {total} bytes uncompressed, over the limit of {max_bytes}")
        bad = [m.filename for m in members if not _safe_member(m.filename)]
        if bad:
            raise DicomError(f"{label}: unsafe member name {bad[0]!r} (absolute or '..')")
        folder = Path(tmp) / "series"
        folder.mkdir()
        names: dict[str, str] = {}
        written = 0
        for i, m in enumerate(members):
            dst = folder / f"{i:05d}.dcm"  # flat: nested folders of one series read as one folder
            with zf.open(m) as src, open(dst, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # a member that lies about its size
                        raise DicomError(f"{label}: more than {max_bytes} bytes uncompressed")
                    out.write(chunk)
            names[dst.name] = m.filename
        try:
            image, info = read_series(folder)
        except DicomError as exc:
            raise DicomError(str(exc).replace(str(folder), label, 1)) from None
        info.folder = Path(label)
        info.files = [Path(names.get(f.name, f.name)) for f in info.files]
    return image, info


def write_nifti(image: sitk.Image, path: str | Path) -> Path:
    """Write a series read by :func:`read_series` as NIfTI (SimpleITK converts LPS to RAS), via a temp file."""
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    sitk.WriteImage(image, str(tmp))
    tmp.replace(path)
    return path


@contextlib.contextmanager
def _keep_locale() -> Iterator[None]:
    """Restore the process's locale after a GDCM call: SimpleITK's GDCM DICOM writer sets it to "C" and leaves it
    there, after which Python decodes text files as ASCII by default (measured: UTF-8 -> ANSI_X3.4-1968)."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_series(
    image: sitk.Image,
    folder: str | Path,
    *,
    modality: str = "MR",
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "hrT2",
) -> list[Path]:
    """Write a 3D image as a DICOM series, one file per slice, with SimpleITK's ImageFileWriter (after
    SimpleITK's "Dicom Series From Array" example): the tags a reader needs to rebuild the grid (position,
    orientation, spacing), study/series UIDs, modality. For tests and demos: a phantom scan as a PACS would
    send it. Pixels are written as int16 (MR scanners store integers): integer intensities as they are, others
    rescaled to 0..4095."""
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = sitk.GetArrayViewFromImage(image)
    if np.array_equal(arr, np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767:
        img = sitk.Cast(image, sitk.sitkInt16)  # integer intensities are stored as they are
    else:
        img = sitk.Cast(sitk.RescaleIntensity(image, 0, 4095), sitk.sitkInt16)
    direction = image.GetDirection()
    series = series_uid or generate_uid()
    study = study_uid or generate_uid()
    frame_of_reference = generate_uid()
    orientation = "\\".join(f"{v:.10g}" for v in (*direction[0:7:3], *direction[1:8:3]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    out = []
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {
            "0008|0060": modality,
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
            "0008|0018": generate_uid(),
            "0008|103e": description,
            "0010|0010": "PHANTOM^COSMOS",
            "0010|0020": "COSMOS-PHANTOM",
            "0020|000d": study,
            "0020|000e": series,
            "0020|0011": "1",
            "0020|0052": frame_of_reference,
            "0020|0013": str(k + 1),
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": f"{image.GetSpacing()[2]:.10g}",
            "0018|0088": f"{image.GetSpacing()[2]:.10g}",  # SimpleITK writes 1 for a 2D slice otherwise
            "0028|0030": f"{image.GetSpacing()[1]:.10g}\\{image.GetSpacing()[0]:.10g}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        dst = folder / f"slice_{k:04d}.dcm"
        writer.SetFileName(str(dst))
        with _keep_locale():
            writer.Execute(sl)
        out.append(dst)
    return out


def segment_descriptions(software_version: str = "") -> list[Any]:
    """The SEG's two segments with coded concepts from pydicom's SNOMED CT dictionary (``codes.SCT``).

    Neither "vestibular schwannoma" nor "cochlea" is in that dictionary, so: segment 1 ``Vestibular schwannoma``,
    category Morphologically Abnormal Structure (SCT 49755003), type Neoplasm (SCT 108369006), anatomic region
    Vestibulocochlear nerve (SCT 8598002); segment 2 ``Cochlea``, category Anatomical Structure (SCT 91723000),
    type Inner ear (SCT 22945000, the structure the cochlea belongs to). Both automatic, algorithm COSMOS
    (family: artificial intelligence, DCM 113112 via highdicom's CID 7162).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="COSMOS nnU-Net ensemble",
        family=codes.cid7162.ArtificialIntelligence,
        version=software_version or "unknown",
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=VS_SEGMENT,
            segment_label="Vestibular schwannoma",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.VestibulocochlearNerve],
        ),
        hd.seg.SegmentDescription(
            segment_number=COCHLEA_SEGMENT,
            segment_label="Cochlea",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.InnerEar,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ),
    ]


def write_seg(label_zyx: np.ndarray, info: SeriesInfo, path: str | Path, software_version: str = "") -> Path:
    """Write ``label_zyx`` (frames x rows x columns in ``info.files``' order, i.e. SimpleITK's array of the
    series; values 0, 1 = VS, 2 = cochlea) as a BINARY DICOM SEG referencing the source series, via a temp
    file. Empty frames are kept, so frame k is source slice k."""
    import highdicom as hd

    path = Path(path)
    label = np.asarray(label_zyx)
    if not info.datasets:
        raise DicomError(f"{info.folder}: no source headers to reference in a DICOM SEG")
    first = info.datasets[0]
    expected = (len(info.datasets), int(first.Rows), int(first.Columns))
    if label.shape != expected:
        raise DicomError(f"{path}: label {label.shape} does not match the series {expected} (frames, rows, columns)")
    extra = sorted(set(np.unique(label).tolist()) - {0, VS_SEGMENT, COCHLEA_SEGMENT})
    if extra:
        raise DicomError(f"{path}: label values {extra} are neither VS (1) nor cochlea (2)")
    # highdicom logs every module it copies at INFO: not news for a cosmos user
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    seg = hd.seg.Segmentation(
        source_images=info.datasets,
        pixel_array=label.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(software_version),
        series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="COSMOS",
        manufacturer_model_name="COSMOS VS/cochlea segmenter",
        software_versions=software_version or "unknown",
        device_serial_number="0",
        series_description="COSMOS VS and cochlea",
        omit_empty_frames=False,
        # the spacing measured from the slice positions, not the source's SpacingBetweenSlices (often absent
        # or, as SimpleITK writes it per 2D slice, 1): a reader rebuilds the volume from it
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=[float(v) for v in first.PixelSpacing],
            slice_thickness=float(getattr(first, "SliceThickness", 0) or info.spacing_mm[2]),
            spacing_between_slices=float(info.spacing_mm[2]),
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    seg.save_as(str(tmp))
    tmp.replace(path)
    return path
