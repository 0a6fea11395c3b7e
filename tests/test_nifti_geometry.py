"""One geometry check wherever a scan enters: `nifti.geometry_problems` refuses headers that
nibabel and SimpleITK/nnU-Net would read as two different scans ("the wrong scale, silently").

Each bad file is built with nibabel the way a user's scan arrives: pixdim disagreeing with the sform
(5 mm vs 0.475 mm), a zero / negative / NaN pixdim beside a valid sform, 50 mm voxels, a sheared
sform. Each is refused by the check itself, by `cosmos validate` (naming the file), by
`cosmos predict` (exit 2, one line naming the user's file, before any model is resolved) and by
`cosmos serve` (a 400 naming "scan 0", never the server's temporary copy). Phantom scans, oblique
and flipped grids and headers a float32 round trip nudges all still pass.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import nifti
from cosmos.data.nifti import geometry_problems

SPACING = (0.475, 0.475, 1.0)
AFFINE = np.diag([*SPACING, 1.0])
SHAPE = (12, 10, 6)


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32) * 100


def _pixdim(values):
    def edit(img):
        img.header["pixdim"][1:4] = values

    return edit


def _qform_only_zero_pixdim(img):
    img.header.set_sform(None, 0)
    img.header.set_qform(AFFINE, 1)
    img.header["pixdim"][1:4] = 0  # nibabel's loader turns these into 1 mm: only the stored header shows them


def _large_voxels(img):
    big = np.diag([50.0, 50.0, 50.0, 1.0])
    img.set_sform(big, 1)
    img.set_qform(big, 1)


def _tiny_voxels(img):
    small = np.diag([0.01, 0.01, 0.01, 1.0])
    img.set_sform(small, 1)
    img.set_qform(small, 1)


def _sheared(img):
    a = AFFINE.copy()
    a[0, 1] = 0.3  # the j axis leans towards x: columns no longer orthogonal
    img.set_sform(a, 1)
    img.header["pixdim"][1:4] = np.linalg.norm(a[:3, :3], axis=0)  # pixdim agrees: only the shear is wrong


# case -> (header edit, what the problem says)
BAD = {
    "pixdim_5mm": (
        _pixdim([5.0, 5.0, 5.0]),
        r"voxel size disagrees: the sform says 0\.475 x 0\.475 x 1 mm, pixdim says 5 x 5 x 5 mm",
    ),
    "pixdim_zero": (_pixdim([0.0, 0.0, 0.0]), r"pixdim gives a voxel size of 0 x 0 x 0 mm: each must be positive"),
    "pixdim_negative": (_pixdim([-0.475, 0.475, 1.0]), r"pixdim gives a voxel size of -0\.475 x 0\.475 x 1 mm"),
    "pixdim_nan": (_pixdim([np.nan, 0.475, 1.0]), r"pixdim gives a voxel size of nan x 0\.475 x 1 mm"),
    "pixdim_inf": (_pixdim([0.475, np.inf, 1.0]), r"pixdim gives a voxel size of 0\.475 x inf x 1 mm"),
    "qform_zero_pixdim": (_qform_only_zero_pixdim, r"pixdim gives a voxel size of 0 x 0 x 0 mm"),
    "voxels_50mm": (_large_voxels, r"voxel size 50 x 50 x 50 mm is outside the plausible MRI range \(0\.05-10 mm"),
    "voxels_10um": (_tiny_voxels, r"voxel size 0\.01 x 0\.01 x 0\.01 mm is outside the plausible MRI range"),
    "sheared": (_sheared, r"direction matrix of the sform is not orthogonal: voxel axes i and j meet at 57\.7 degrees"),
}


def _bad_image(case: str, seed: int = 0) -> nib.Nifti1Image:
    if case == "qform_zero_pixdim":  # no affine given: nib.save keeps the header's own qform/sform
        img = nib.Nifti1Image(_data(seed), None)
    else:
        img = nib.Nifti1Image(_data(seed), AFFINE)  # sets pixdim from the affine: consistent so far
    BAD[case][0](img)
    return img


def _write_bad(path: Path, case: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(_bad_image(case), str(path))
    return path


# ------------------------------------------------------------------------------ the check itself
@pytest.mark.parametrize("case", sorted(BAD))
def test_geometry_problems_names_the_problem(tmp_path, case):
    import re

    message = BAD[case][1]
    img = _bad_image(case)
    assert any(re.search(message, p) for p in geometry_problems(img)), geometry_problems(img)
    # from the file: the header as stored (nibabel's loader would turn a zero pixdim into 1)
    path = _write_bad(tmp_path / f"{case}.nii.gz", case)
    assert any(re.search(message, p) for p in geometry_problems(path)), geometry_problems(path)
    assert any(re.search(message, p) for p in geometry_problems(nifti.read_header(path)))
    with pytest.raises(nifti.NiftiError, match=f"^{re.escape(str(path))}: .*{message}"):
        nifti.load_image(path)
    vol = nifti.load(path)  # reading is not refused: labels and predictions are read with it too
    assert any(re.search(message, p) for p in nifti.image_problems(vol))


def test_zero_pixdim_is_refused_without_nibabel_noise(tmp_path, capfd):
    path = _write_bad(tmp_path / "zero.nii.gz", "pixdim_zero")
    capfd.readouterr()
    with pytest.raises(nifti.NiftiError):
        nifti.load_image(path)
    out, err = capfd.readouterr()
    assert "setting 0 dims to 1" not in out + err  # nibabel's own "fix" line is not shown beside ours


def test_consistent_geometry_passes(tmp_path):
    # oblique (rotated), flipped, sform and qform differing slightly: all real scanner headers
    c, s = np.cos(0.1), np.sin(0.1)
    oblique = np.eye(4)
    oblique[:3, :3] = np.array([[-c, -s, 0], [s, -c, 0], [0, 0, 1.0]]) @ np.diag([0.6, 0.6, 1.5])
    oblique[:3, 3] = [12.5, -30.25, 7.0]
    img = nib.Nifti1Image(_data(), None)
    qform = oblique.copy()
    qform[:3, 3] += [0.2, 0.0, -0.1]
    img.set_sform(oblique, 1)
    img.set_qform(qform, 2)
    path = tmp_path / "oblique.nii.gz"
    nib.save(img, str(path))
    assert geometry_problems(path) == []
    assert nifti.load_image(path).shape == SHAPE
    flipped = tmp_path / "flipped.nii"
    nib.save(nib.Nifti1Image(_data(), np.diag([-0.5, 0.5, -1.2, 1.0])), str(flipped))
    assert geometry_problems(flipped) == []
    # pixdim within 1 % of the sform (float32 rounding, a scanner's 3-decimal pixdim) passes
    near = nib.Nifti1Image(_data(), AFFINE)
    near.header["pixdim"][1:4] = [0.4772, 0.4728, 1.004]
    assert geometry_problems(near) == []
    # the project's own writer (sform and qform, pixdim from the affine)
    saved = nifti.save(tmp_path / "saved.nii.gz", _data(), affine=oblique)
    assert geometry_problems(saved) == [] and nifti.image_problems(nifti.load(saved)) == []
    # a Volume built in memory without a header: only the data/affine checks apply
    assert nifti.usability_problems(_data(), AFFINE) == []
    assert nifti.check_usable("mem", nifti.Volume(data=_data(), affine=AFFINE, header=None)).shape == SHAPE


def test_phantom_scans_have_no_geometry_problem(tmp_path):
    from cosmos.data.phantom import make_phantom

    root = make_phantom(tmp_path / "phantom", n_source=1, n_target=1, n_val=1, preview=False)
    scans = sorted(root.rglob("*.nii.gz"))
    assert len(scans) >= 5  # ceT1 + label, hrT2, hrT2 + validation label
    for scan in scans:
        assert geometry_problems(scan) == [], scan
        if not scan.name.endswith("_Label.nii.gz"):
            assert nifti.image_problems(nifti.load(scan)) == [], scan
    assert main(["validate", str(root)]) == 0


# ------------------------------------------------------------------------------ cosmos validate
def _tree(root: Path) -> Path:
    """A minimal crossMoDA tree: one labelled source case, one target case."""
    rng = np.random.default_rng(1)
    img = (rng.random(SHAPE) * 100).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:6, 3:6, 2:4] = 1
    lab[8, 7, 3] = 2
    nifti.save(root / "source_training" / "crossmoda_1_ceT1.nii.gz", img, affine=AFFINE)
    nifti.save(root / "source_training" / "crossmoda_1_Label.nii.gz", lab, affine=AFFINE, label=True)
    nifti.save(root / "target_training" / "crossmoda_2_hrT2.nii.gz", img[::-1].copy(), affine=AFFINE)
    return root


@pytest.mark.parametrize("case", ["pixdim_5mm", "pixdim_zero", "voxels_50mm", "sheared"])
def test_validate_reports_the_file(tmp_path, capsys, case):
    import re

    root = _tree(tmp_path / "data")
    assert main(["validate", str(root)]) == 0
    capsys.readouterr()
    bad = _write_bad(root / "target_training" / "crossmoda_2_hrT2.nii.gz", case)
    rc = main(["validate", str(root)])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = [line for line in out.splitlines() if line.startswith(str(bad))]
    assert lines and re.search(BAD[case][1], lines[0]), out
    assert "Traceback" not in out + err


# ------------------------------------------------------------------------------ cosmos predict
@pytest.mark.parametrize("case", sorted(BAD))
def test_predict_refuses_before_resolving_a_model(tmp_path, capsys, monkeypatch, case):
    import re

    from cosmos.segmentation import registry

    def no_model(*args, **kwargs):  # pragma: no cover - reached only if inputs were accepted
        raise AssertionError("the model was resolved before the inputs were checked")

    monkeypatch.setattr(registry, "resolve_model", no_model)
    bad = _write_bad(tmp_path / "scans" / "patient.nii.gz", case)
    rc = main(["predict", str(bad), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no-such-model")])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"cosmos: error: {bad}: ") and re.search(BAD[case][1], lines[0]), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------ cosmos serve
class _Untouchable:
    """A loaded model's stand-in that can only be closed: a request refused by the input checks never uses it."""

    def close(self) -> None:
        pass


@pytest.mark.parametrize("case", ["pixdim_5mm", "pixdim_zero", "voxels_50mm", "sheared"])
def test_serve_answers_400_naming_the_request_element(tmp_path, case):
    import re

    pytest.importorskip("kserve")
    from cosmos.config import load_config
    from cosmos.serving.codec import RequestError, Scan
    from cosmos.serving.model import CosmosSegmenterModel

    good = nifti.save(tmp_path / "good.nii.gz", _data(3), affine=AFFINE).read_bytes()
    bad = _write_bad(tmp_path / "bad.nii.gz", case).read_bytes()
    model = CosmosSegmenterModel("cosmos-segmenter", str(tmp_path / "unused-model"))
    try:
        # as after load(): the request is refused by the input checks, before any fold is touched
        model.ready, model.cfg = True, load_config("tiny")
        model.segmenter = _Untouchable()  # no segment(): touching the model would fail the test
        with pytest.raises(RequestError) as refused:
            model.segment([Scan(data=good), Scan(data=bad)])
        assert refused.value.status == 400
        reason = refused.value.reason
        assert reason.startswith("scan 1: ") and re.search(BAD[case][1], reason), reason
        assert str(model._home) not in reason and "/tmp" not in reason and "request-" not in reason
    finally:
        model.stop()
    assert not model._home.exists()
