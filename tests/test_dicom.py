"""DICOM in and out (cosmos.data.dicom, cosmos predict on a series folder, --dicom-seg).

A phantom hrT2 NIfTI (straight, oblique, oblique and flipped grids) is written as a DICOM MR series with
SimpleITK, predicted through the DICOM path and through the NIfTI path with the same (faked, deterministic)
segmenter the predict tests use, and the label NIfTI, the SEG's frames and the SEG's geometry are compared voxel
for voxel. Bad series (mixed series, a missing slice, a non-image modality, an unreadable compressed transfer
syntax) each end in one line."""

from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom")
pytest.importorskip("mlflow")

from test_registry_pyfunc import fake_predict_module, make_fold  # noqa: E402

from cosmos.cli import main  # noqa: E402
from cosmos.data import dicom  # noqa: E402
from cosmos.data.nifti import load, same_grid, save  # noqa: E402
from cosmos.data.phantom import make_case  # noqa: E402
from cosmos.errors import CosmosError  # noqa: E402

HTJ2K = "1.2.840.10008.1.2.4.201"  # High-Throughput JPEG 2000: SimpleITK's GDCM has no decoder for it


@pytest.fixture()
def calls(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "cosmos.segmentation.inference", fake_predict_module(calls))
    return calls


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-model")
    for f in (0, 1):
        make_fold(root / "folds" / f"fold_{f}", f)
    return root


def phantom_nifti(path: Path, orientation: int) -> Path:
    """A phantom hrT2 with integer intensities (0..4095), as a scanner stores them, on its (maybe oblique) grid."""
    case = make_case(0, 1, "hrT2", scale="small", orientation_index=orientation)
    img = case.image.astype(np.float64)
    img = np.round((img - img.min()) / (img.max() - img.min()) * 4095)
    return save(path, img, affine=case.affine, dtype=np.int16)


def phantom_series(tmp_path: Path, orientation: int = 0, name: str = "patient_A") -> tuple[Path, Path]:
    nii = phantom_nifti(tmp_path / "nifti" / "scan.nii.gz", orientation)
    folder = tmp_path / name
    dicom.write_series(sitk.ReadImage(str(nii)), folder)
    return nii, folder


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("orientation", [0, 1, 3])
def test_read_series_gives_the_nifti_grid_and_voxels(tmp_path, orientation):
    nii, folder = phantom_series(tmp_path, orientation)
    image, info = dicom.read_series(folder)
    original = sitk.ReadImage(str(nii))
    assert image.GetSize() == original.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), original.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), original.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original))
    assert info.modality == "MR" and info.n_slices == original.GetSize()[2] == len(info.datasets)
    assert info.spacing_mm[2] == pytest.approx(original.GetSpacing()[2], abs=1e-4)
    # through NIfTI (SimpleITK turns LPS into RAS) the grid is the original NIfTI's
    back = dicom.write_nifti(image, tmp_path / "back.nii.gz")
    assert same_grid(load(back), load(nii), atol=1e-3) is None


def _seg_world_points(seg, frame_index: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """World RAS (mm) of pixels (row, column) of a SEG frame, from the SEG's own plane position/orientation."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.asarray([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    dr, dc = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    ipp = np.asarray(
        [
            float(v)
            for v in seg.PerFrameFunctionalGroupsSequence[frame_index].PlanePositionSequence[0].ImagePositionPatient
        ]
    )
    lps = ipp + np.outer(cols * dc, iop[:3]) + np.outer(rows * dr, iop[3:])
    return lps * np.array([-1.0, -1.0, 1.0])  # DICOM's LPS -> NIfTI's RAS


@pytest.mark.parametrize("orientation", [0, 3])
def test_predict_dicom_series_matches_the_nifti_path_and_writes_a_seg(tmp_path, capsys, calls, model_dir, orientation):
    import highdicom as hd

    nii, folder = phantom_series(tmp_path, orientation)
    rc, out, err = run(capsys, "predict", "--model", model_dir, folder, "--dicom-seg", "-o", tmp_path / "out")
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert names == ["patient_A_Label.nii.gz", "patient_A_SEG.dcm", "patient_A_measurements.json"]
    rc, _, err = run(capsys, "predict", "--model", model_dir, nii, "-o", tmp_path / "out_nifti")
    assert rc == 0, err
    from_dicom = load(tmp_path / "out" / "patient_A_Label.nii.gz", label=True)
    from_nifti = load(tmp_path / "out_nifti" / "scan_seg.nii.gz", label=True)
    assert same_grid(from_dicom, from_nifti, atol=1e-3) is None
    np.testing.assert_array_equal(from_dicom.data, from_nifti.data)
    assert {1, 2} <= set(np.unique(from_dicom.data).tolist())

    _, info = dicom.read_series(folder)
    seg = hd.seg.segread(str(tmp_path / "out" / "patient_A_SEG.dcm"))
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == info.series_uid
    assert seg.FrameOfReferenceUID == info.datasets[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == info.study_uid
    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert segments[1].SegmentLabel == "Vestibular schwannoma" and segments[2].SegmentLabel == "Cochlea"
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # SCT Neoplasm
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "22945000"  # SCT Inner ear
    uids = [d.SOPInstanceUID for d in info.datasets]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    # frames x rows x columns of the series == the label NIfTI's (k, j, i)
    np.testing.assert_array_equal(frames, from_nifti.data.transpose(2, 1, 0))

    # geometry: every VS/cochlea pixel of the SEG lies where the NIfTI label's voxel lies, in world mm
    by_position = {}
    for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        key = tuple(round(float(v), 3) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        by_position.setdefault(key, n)
    for k in np.unique(np.argwhere(from_nifti.data > 0)[:, 2])[:: max(1, from_nifti.shape[2] // 6)]:
        ipp = tuple(round(float(v), 3) for v in info.datasets[k].ImagePositionPatient)
        j, i = np.nonzero(from_nifti.data[:, :, k].T)
        world_seg = _seg_world_points(seg, by_position[ipp], j.astype(float), i.astype(float))
        vox = np.stack([i, j, np.full_like(i, k), np.ones_like(i)])
        world_nifti = (from_nifti.affine @ vox)[:3].T
        np.testing.assert_allclose(world_seg, world_nifti, atol=1e-3)

    measured = json.loads((tmp_path / "out" / "patient_A_measurements.json").read_text())
    from cosmos.evaluation.measurements import measure

    expected = measure(from_nifti.data, from_nifti.affine).to_dict()
    assert measured["vs_volume_mm3"] == pytest.approx(expected["vs_volume_mm3"])
    assert measured["vs_max_axial_diameter_mm"] == pytest.approx(expected["vs_max_axial_diameter_mm"])
    assert "patient_A_SEG.dcm" in out


def test_dicom_seg_needs_a_dicom_input(tmp_path, capsys, calls, model_dir):
    nii = phantom_nifti(tmp_path / "scan.nii.gz", 0)
    rc, _, err = run(capsys, "predict", "--model", model_dir, nii, "--dicom-seg", "-o", tmp_path / "out")
    assert (
        rc == 2
        and err.strip()
        == "cosmos: error: --dicom-seg: needs a DICOM series input (a folder holding one series); got NIfTI only"
    )
    assert not calls


def _mixed(tmp_path: Path, folder: Path) -> None:
    other = tmp_path / "other"
    dicom.write_series(sitk.ReadImage(str(tmp_path / "nifti" / "scan.nii.gz")), other)
    for i, f in enumerate(sorted(other.iterdir())[:3]):
        shutil.copy(f, folder / f"other_{i}.dcm")


def _missing(tmp_path: Path, folder: Path) -> None:
    files = sorted(folder.iterdir())
    files[len(files) // 2].unlink()


def _seg_only(tmp_path: Path, folder: Path) -> None:
    image, info = dicom.read_series(folder)
    label = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    label[3:5, 10:20, 10:20] = 1
    seg = dicom.write_seg(label, info, tmp_path / "seg.dcm")
    for f in folder.iterdir():
        f.unlink()
    shutil.copy(seg, folder / "seg.dcm")


def _htj2k(tmp_path: Path, folder: Path) -> None:
    import pydicom
    from pydicom.encaps import encapsulate

    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PixelData = encapsulate([ds.PixelData])  # not a real codestream: nothing could decode it
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(HTJ2K)
        ds.save_as(f, enforce_file_format=True)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_mixed, r"patient_A: 2 DICOM series in one folder \(.+\); give a folder holding one$"),
        (_missing, r"patient_A: missing slice\(s\): gap of [\d.]+ mm between slices at .+ where the series steps"),
        (_seg_only, r"patient_A: modality SEG is not an MR image series"),
        (_htj2k, r"patient_A: transfer syntax High-Throughput JPEG 2000.*\(1\.2\.840\.10008\.1\.2\.4\.201\) cannot be"),
    ],
    ids=["mixed-series", "missing-slice", "non-image-modality", "unreadable-compression"],
)
def test_bad_series_give_one_clear_line(tmp_path, capsys, calls, model_dir, spoil, message):
    import re

    _, folder = phantom_series(tmp_path)
    spoil(tmp_path, folder)
    with pytest.raises(CosmosError) as exc:
        dicom.read_series(folder)
    assert re.search(message, str(exc.value)), exc.value
    rc, out, err = run(capsys, "predict", "--model", model_dir, folder, "-o", tmp_path / "out")
    assert rc == 2 and not calls
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cosmos: error: ") and re.search(message, lines[0]), err


def test_read_series_zip(tmp_path):
    nii, folder = phantom_series(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"study/series/{f.name}")
    data = buf.getvalue()
    image, info = dicom.read_series_zip(data, max_bytes=50 * 2**20)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(sitk.ReadImage(str(nii))))
    assert info.files[0].as_posix().startswith("study/series/") and len(info.datasets) == info.n_slices
    (tmp_path / "s.zip").write_bytes(data)
    assert dicom.read_series_zip(tmp_path / "s.zip", max_bytes=50 * 2**20)[0].GetSize() == image.GetSize()
    with pytest.raises(CosmosError, match="uncompressed, over the limit of 1000"):
        dicom.read_series_zip(_deflated(folder), max_bytes=1000 + 0 * len(data))
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/x.dcm", b"x")
    with pytest.raises(CosmosError, match=r"unsafe member name '\.\./\.\./etc/x\.dcm'"):
        dicom.read_series_zip(evil.getvalue(), max_bytes=2**20)
    with pytest.raises(CosmosError, match="zip: not a zip file"):
        dicom.read_series_zip(b"not a zip", max_bytes=2**20)


def _deflated(folder: Path) -> bytes:
    """A zip whose compressed size is small but whose members expand past a small limit."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * 100_000)
    return buf.getvalue()


def test_writing_a_series_keeps_the_process_locale(tmp_path):
    """SimpleITK's GDCM writer sets the C locale and leaves it: Python would then read text files as ASCII."""
    import locale

    before = locale.getpreferredencoding(False)
    phantom_series(tmp_path)
    dicom.read_series(tmp_path / "patient_A")
    assert locale.getpreferredencoding(False) == before
