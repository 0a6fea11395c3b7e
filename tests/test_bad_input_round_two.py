"""Issue 28, the kinds not covered elsewhere: atomic writes, --overwrite, the memory cap, modality by content.

* A failed write (a full disk, simulated by a write that raises ENOSPC halfway) ends in one line naming
  the user's path and leaves nothing behind: not in the output folder, not in /tmp.
* ``predict``, ``evaluate --json``, ``translator convert`` and ``phantom`` refuse an existing output they
  did not write unless ``--overwrite``; never an input, even with it; their own folders resume.
* SIGTERM during ``predict`` removes its ``/tmp/cosmos-*`` folders.
* The working-memory cap, from the header alone (``$COSMOS_MAX_WORK_BYTES``), in the one reader.
* Modality by content: a label map or a constant image given as a scan is refused; a ceT1 phantom
  renamed as a plain scan gets a warning from ``predict``, an hrT2 phantom none.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import modality, nifti, outputs
from cosmos.data.phantom import make_phantom
from cosmos.errors import CosmosError

AFFINE = np.diag([0.5, 0.5, 1.0, 1.0])


def _scan(path: Path, seed: int = 0) -> Path:
    """An hrT2-like scan: air around a grey head holding bright fluid (so no modality warning)."""
    rng = np.random.default_rng(seed)
    data = np.abs(rng.normal(0, 3, (20, 18, 10))).astype(np.float32)
    data[2:18, 2:16, 1:9] = 100 + rng.normal(0, 5, (16, 14, 8))
    data[6:12, 6:12, 3:7] = 600
    return nifti.save(path, data, affine=AFFINE)


def _sums(*folders: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for f in folders
        for p in sorted(Path(f).rglob("*"))
        if p.is_file()
    }


def _one_error_line(err: str) -> str:
    """The one ``cosmos: error:`` line of a refusal (progress bars and log lines aside)."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("cosmos: error:")]
    assert len(lines) == 1 and "Traceback" not in err and "unexpected error" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("ph") / "p", n_source=1, n_target=1, n_val=0, preview=False)


# ------------------------------------------------------------------------------ full disk
def _enospc_after_some_bytes(monkeypatch):
    """Make nibabel's file writes fail with ENOSPC after a few bytes are on disk (a disk that fills up)."""
    import nibabel as nib

    real = nib.save

    def full(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(nib, "save", full)
    return real


def test_nifti_save_on_a_full_disk_names_the_target_and_leaves_nothing(tmp_path, monkeypatch):
    _enospc_after_some_bytes(monkeypatch)
    target = tmp_path / "out" / "scan_seg.nii.gz"
    with pytest.raises(nifti.NiftiError) as info:
        nifti.save(target, np.zeros((4, 4, 4)), affine=AFFINE, label=True)
    assert str(info.value).startswith(f"{target}: cannot write it (no space left on the device)")
    assert list((tmp_path / "out").iterdir()) == []  # no hidden .tmp file


def test_atomic_write_on_a_full_disk(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[:3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(CosmosError, match=r"old\.json: cannot write it \(no space left on the device\)"):
        outputs.atomic_write(tmp_path / "old.json", "x" * 100)
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"] and (tmp_path / "old.json").read_text() == "{}"


def test_evaluate_json_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[2:5, 2:5, 1:3] = 1
    for d in (pred, gt):
        nifti.save(d / "crossmoda_1_Label.nii.gz", lab, affine=AFFINE, label=True)
    monkeypatch.setattr(
        outputs.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left", str(a)))
    )
    rc = main(["evaluate", str(pred), str(gt), "--json", str(tmp_path / "res" / "r.json")])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(tmp_path / "res" / "r.json") in line and "no space left" in line
    assert list((tmp_path / "res").iterdir()) == []


# ------------------------------------------------------------------------------ --overwrite
def test_evaluate_json_overwrite(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[2:5, 2:5, 1:3] = 1
    for d in (pred, gt):
        nifti.save(d / "crossmoda_1_Label.nii.gz", lab, affine=AFFINE, label=True)
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(["evaluate", str(pred), str(gt), "--json", str(notes)]) == 2
    assert "pass --overwrite" in _one_error_line(capsys.readouterr().err) and json.loads(notes.read_text()) == {
        "mine": 1
    }
    assert main(["evaluate", str(pred), str(gt), "--json", str(notes), "--overwrite"]) == 0
    assert "summary" in json.loads(notes.read_text())
    before = _sums(pred)  # never an input, even with --overwrite
    assert main(["evaluate", str(pred), str(gt), "--json", str(pred / "r.json"), "--overwrite"]) == 2
    assert _sums(pred) == before


def test_predict_overwrite_lets_a_foreign_output_go_but_never_an_input(tmp_path, capsys):
    scan = _scan(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "scan_seg.nii.gz").write_bytes(b"the user's own file")
    argv = ["predict", str(scan), "-o", str(out), "--model", str(tmp_path / "no_model")]
    assert main(argv) == 2
    assert "pass --overwrite" in _one_error_line(capsys.readouterr().err)
    assert main([*argv, "--overwrite"]) == 2  # past the output check: now the missing model is the problem
    assert "model not found" in _one_error_line(capsys.readouterr().err)
    before = _sums(tmp_path / "in")
    assert main(["predict", str(scan), "-o", str(tmp_path / "in"), "--model", "x", "--overwrite"]) == 2
    assert "input" in _one_error_line(capsys.readouterr().err) and _sums(tmp_path / "in") == before


def _cet1_folder(tmp: Path) -> Path:
    folder = tmp / "cet1"
    rng = np.random.default_rng(1)
    lab = np.zeros((16, 16, 8), np.uint8)
    lab[4:8, 4:8, 2:5] = 1
    nifti.save(folder / "crossmoda_1_ceT1.nii.gz", (rng.random((16, 16, 8)) * 100), affine=AFFINE)
    nifti.save(folder / "crossmoda_1_Label.nii.gz", lab, affine=AFFINE, label=True)
    return folder


def test_translator_convert_refuses_the_input_folder_and_foreign_files(tmp_path, capsys):
    src = _cet1_folder(tmp_path)
    before = _sums(src)
    model = str(tmp_path / "no_model")
    assert main(["translator", "convert", "--model", model, "--input", str(src), "--out", str(src)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"cosmos: error: {src}") and "input" in line and _sums(src) == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "crossmoda_1_Label.nii.gz").write_bytes(b"someone else's label")
    assert main(["translator", "convert", "--model", model, "--input", str(src), "--out", str(out)]) == 2
    assert "not written by cosmos translator convert" in _one_error_line(capsys.readouterr().err)
    outputs.record_outputs(out, {"crossmoda_1_Label.nii.gz": "x"}, outputs.CONVERT_MANIFEST)  # now it is ours
    assert main(["translator", "convert", "--model", model, "--input", str(src), "--out", str(out)]) == 2
    assert "not written" not in _one_error_line(capsys.readouterr().err)


def test_phantom_refuses_foreign_files_and_resumes_its_own(tmp_path, capsys):
    root = tmp_path / "ph"
    foreign = root / "source_training" / "crossmoda_1_ceT1.nii.gz"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"the user's scan")
    argv = ["phantom", str(root), "--n-source", "1", "--n-target", "1", "--n-val", "0", "--no-preview"]
    assert main(argv) == 2
    assert "not written by cosmos phantom" in _one_error_line(capsys.readouterr().err)
    assert foreign.read_bytes() == b"the user's scan"
    assert main([*argv, "--overwrite"]) == 0 and foreign.read_bytes() != b"the user's scan"
    capsys.readouterr()
    mtime = foreign.stat().st_mtime_ns
    assert main(argv) == 0 and foreign.stat().st_mtime_ns == mtime  # its own folder: resumed, nothing redone


def test_a_killed_phantom_resumes(tmp_path, monkeypatch):
    from cosmos.data.phantom import writer

    calls = {"n": 0}
    real = writer.make_case

    def dies_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(writer, "make_case", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        make_phantom(tmp_path / "p", n_source=1, n_target=1, n_val=0, preview=False)
    monkeypatch.setattr(writer, "make_case", real)
    root = make_phantom(tmp_path / "p", n_source=1, n_target=1, n_val=0, preview=False)  # not refused
    assert set(json.loads((root / "phantom.json").read_text())["cases"]) == {"crossmoda_1", "crossmoda_2"}
    assert not list(root.rglob(".*tmp*"))


# ------------------------------------------------------------------------------ SIGTERM
def test_sigterm_during_predict_removes_its_temporary_folders(tmp_path, capsys, monkeypatch):
    from cosmos.segmentation import registry

    scan = _scan(tmp_path / "in" / "scan.nii.gz")
    before = set(Path(tempfile.gettempdir()).glob("cosmos-model-*"))
    seen: list[Path] = []

    def resolve(reference, tracking_uri=None, dst_dir=None):
        seen.append(Path(dst_dir))
        (Path(dst_dir) / "partial.bin").write_bytes(b"downloading")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(registry, "resolve_model", resolve)
    rc = main(["predict", str(scan), "-o", str(tmp_path / "out"), "--model", "models:/x@y"])
    assert rc == 143 and "terminated" in capsys.readouterr().err
    assert seen and not seen[0].exists()
    assert set(Path(tempfile.gettempdir()).glob("cosmos-model-*")) <= before
    assert signal.getsignal(signal.SIGTERM) is not None  # restored after the command


# ------------------------------------------------------------------------------ the memory cap
def test_memory_cap_from_the_header(tmp_path, monkeypatch, capsys):
    scan = _scan(tmp_path / "in" / "scan.nii.gz")
    assert nifti.geometry_problems(scan) == []
    need = nifti.work_bytes((20, 18, 10), (0.5, 0.5, 1.0))
    monkeypatch.setenv(nifti.MAX_WORK_ENV, str(int(need) - 1))
    problems = nifti.geometry_problems(scan)
    assert len(problems) == 1 and nifti.MAX_WORK_ENV in problems[0]
    from cosmos.data.validate import check_pair  # what validate and run's ingest check per image

    assert any(nifti.MAX_WORK_ENV in str(p) and str(scan) in str(p) for p in check_pair(scan))
    rc = main(["predict", str(scan), "-o", str(tmp_path / "out"), "--model", "models:/x@y"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(scan) in line and "memory" in line
    monkeypatch.setenv(nifti.MAX_WORK_ENV, "nan")
    with pytest.raises(nifti.NiftiError, match=nifti.MAX_WORK_ENV):
        nifti.geometry_problems(scan)


def test_work_bytes_counts_the_resampling():
    coarse = nifti.work_bytes((100, 100, 20), (5.0, 5.0, 5.0), target_spacing=(0.5, 0.5, 0.5))
    native = nifti.work_bytes((100, 100, 20), (5.0, 5.0, 5.0))
    assert coarse == pytest.approx(native * 1000)
    assert nifti.memory_problems((100, 100, 20), (5.0, 5.0, 5.0), (0.05, 0.05, 0.05))  # 1e6 x: refused


# ------------------------------------------------------------------------------ modality by content
def test_label_map_and_constant_images_are_refused(tmp_path, capsys, phantom):
    label = phantom / "source_training" / "crossmoda_1_Label.nii.gz"
    renamed = tmp_path / "in" / "patientA.nii.gz"
    renamed.parent.mkdir()
    renamed.write_bytes(label.read_bytes())
    rc = main(["predict", str(renamed), "-o", str(tmp_path / "out"), "--model", "models:/x@y"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(renamed) in line and "label map" in line
    with pytest.raises(nifti.NiftiError, match="label map"):
        modality.load_scan(renamed, name="scan 0")
    const = nifti.save(tmp_path / "c" / "crossmoda_9_hrT2.nii.gz", np.full((8, 8, 4), 7.0), affine=AFFINE)
    assert modality.content_problems(nifti.load(const).data) == [
        "image is constant (every voxel is 7): nothing to segment"
    ]


def test_a_renamed_cet1_gets_a_warning_an_hrt2_none(tmp_path, capsys, phantom):
    cet1 = tmp_path / "in" / "patientA.nii.gz"
    cet1.parent.mkdir()
    cet1.write_bytes((phantom / "source_training" / "crossmoda_1_ceT1.nii.gz").read_bytes())
    main(["predict", str(cet1), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no_model")])
    err = capsys.readouterr().err
    assert f"cosmos: warning: {cet1}: intensity profile looks like a ceT1" in err and "model not found" in err
    hrt2 = phantom / "target_training" / "crossmoda_2_hrT2.nii.gz"
    main(["predict", str(hrt2), "-o", str(tmp_path / "out2"), "--model", str(tmp_path / "no_model")])
    assert "warning" not in capsys.readouterr().err
    vol, warning = modality.load_scan(hrt2)
    assert warning is None and modality.modality_warning(vol.data, vol.spacing) is None


def test_a_real_scan_is_no_label_map():
    rng = np.random.default_rng(0)
    assert modality.is_label_map(rng.integers(0, 3, (10, 10, 10)))[0]
    assert not modality.is_label_map(rng.integers(0, 200, (10, 10, 10)))[0]
    assert not modality.is_label_map(rng.integers(0, 3, (10, 10, 10)) + 0.5)[0]


# ------------------------------------------------------------------------------ what nnU-Net reads
def test_the_roi_crop_nnunet_reads_carries_the_checked_geometry(tmp_path, phantom):
    """A model trained on crops reads a cropped copy: its pixdim, sform and qform must be the checked ones."""
    import nibabel as nib

    from cosmos.data import layout, roi

    model = roi.fit(layout.list_cases(phantom / "source_training", "ceT1"))
    scan = phantom / "target_training" / "crossmoda_2_hrT2.nii.gz"
    crops = roi.crop_inputs([scan], model, tmp_path / "crops")
    crop_path, _ = crops[scan]
    original, crop = nifti.load(scan), nib.load(str(crop_path))
    assert nifti.geometry_problems(crop_path) == []
    zooms = np.linalg.norm(crop.affine[:3, :3], axis=0)
    np.testing.assert_allclose(crop.header["pixdim"][1:4], zooms, rtol=1e-5)  # what SimpleITK reads
    np.testing.assert_allclose(zooms, original.spacing, rtol=1e-5)  # the spacing the checks saw
    np.testing.assert_allclose(crop.header.get_qform(), crop.header.get_sform(), atol=1e-4)
