"""Bad label values in ``cosmos evaluate``, complex / RGB voxel types, and a ``--config`` that is not a file.

Each is one line naming the user's file (never a traceback, never a perfect Dice for a nonsense map).
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import nifti

AFFINE = np.diag([0.5, 0.5, 1.0, 1.0])
RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _phantom(out, **kw):
    """A small phantom tree; logging is pointed at this test's stderr first (an earlier ``main`` left it elsewhere)."""
    from cosmos.data.phantom import make_phantom
    from cosmos.logs import setup_logging

    setup_logging()
    return make_phantom(out, n_source=1, n_target=1, preview=False, **kw)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("cosmos: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- (9) label values in evaluate
@pytest.fixture(scope="module")
def phantom_labels(tmp_path_factory):
    root = _phantom(tmp_path_factory.mktemp("phantom"), n_val=2, seed=5)
    return root / "target_validation_labels"


def test_phantom_labels_against_themselves_score_dice_one(phantom_labels, tmp_path, capsys):
    out = tmp_path / "result.json"
    rc = main(["evaluate", str(phantom_labels), str(phantom_labels), "--json", str(out)])
    assert rc == 0, capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["n_cases"] == 2
    assert all(c[s]["dice"] == 1.0 for c in result["cases"].values() for s in ("VS", "cochlea"))


def _bad_pair(tmp_path, pred: np.ndarray, gt: np.ndarray):
    pred_path = _write(tmp_path / "pred" / "crossmoda_300_Label.nii.gz", pred)
    gt_path = _write(tmp_path / "labels" / "crossmoda_300_Label.nii.gz", gt)
    return pred_path, gt_path


@pytest.mark.parametrize(
    "which,pred_values,gt_values,shown",
    [
        ("pred", (3, 255), (0, 0), "3, 255"),  # VS/cochlea written as 3/255: used to score Dice 1.000
        ("pred", (-1, -1), (0, 0), "outside"),  # -1 as background
        ("gt", (0, 0), (255, 255), "255"),  # ground truth with 255
    ],
)
def test_evaluate_refuses_label_values_outside_0_1_2(tmp_path, capsys, which, pred_values, gt_values, shown):
    shape = (8, 8, 4)
    pred = np.zeros(shape, np.int16)
    gt = np.zeros(shape, np.uint8)
    pred[1:3, 1:3, 1], pred[5:7, 5:7, 2] = pred_values
    gt[1:3, 1:3, 1], gt[5:7, 5:7, 2] = gt_values
    pred_path, gt_path = _bad_pair(tmp_path, pred, gt)
    out = tmp_path / "result.json"
    rc = main(["evaluate", str(pred_path.parent), str(gt_path.parent), "--json", str(out), "--per-case"])
    captured = capsys.readouterr()
    assert rc != 0
    result = json.loads(out.read_text())
    assert result["cases"] == {} and result["n_cases"] == 0  # no Dice at all for the bad case
    message = result["errors"]["crossmoda_300"]
    bad_path = pred_path if which == "pred" else gt_path
    assert message.startswith(f"{bad_path}: ") and shown in message
    assert "1.000" not in captured.out
    assert str(bad_path) in captured.out and "could not be scored" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_evaluate_case_lists_the_bad_values(tmp_path):
    from cosmos.errors import CosmosError
    from cosmos.evaluation.metrics import evaluate_case

    pred = np.zeros((6, 6, 3), np.uint8)
    pred[1, 1, 1], pred[2, 2, 2], pred[3, 3, 1] = 1, 3, 255
    pred_path, gt_path = _bad_pair(tmp_path, pred, np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(CosmosError, match=r"label values outside \{0, 1, 2\}: 3, 255$"):
        evaluate_case(pred_path, gt_path)


# --------------------------------------------------------------------------- (10, 11) complex and RGB voxels
def _complex_image(path):
    data = np.random.default_rng(0).random((8, 8, 4)).astype(np.complex64) * (1 + 1j)
    return _write(path, data)


def _rgb_image(path):
    data = np.zeros((8, 8, 4), RGB)
    data["R"] = np.arange(8)[:, None, None]
    return _write(path, data)


@pytest.mark.parametrize("make,dtype_name", [(_complex_image, "complex64"), (_rgb_image, "RGB")])
@pytest.mark.parametrize("label", [False, True])
def test_load_refuses_complex_and_rgb(tmp_path, make, dtype_name, label):
    path = make(tmp_path / "crossmoda_300_hrT2.nii.gz")
    with pytest.raises(nifti.NiftiError) as info:
        nifti.load(path, label=label)
    msg = str(info.value)
    assert msg.startswith(f"{path}: unsupported NIfTI data type {dtype_name}") and "\n" not in msg


@pytest.mark.parametrize("make,dtype_name", [(_complex_image, "complex64"), (_rgb_image, "RGB")])
def test_validate_names_the_file_and_the_dtype(tmp_path, capsys, make, dtype_name):
    root = _phantom(tmp_path / "data", n_val=1, seed=2)
    target = sorted((root / "target_training").glob("*.nii.gz"))[0]
    target.unlink()
    make(target)
    rc = main(["validate", str(root)])
    captured = capsys.readouterr()
    assert rc == 1
    lines = [ln for ln in captured.out.splitlines() if str(target) in ln]
    assert len(lines) == 1 and dtype_name in lines[0], captured.out
    assert "Traceback" not in captured.out + captured.err and "TypeError" not in captured.out


@pytest.mark.parametrize("make,dtype_name", [(_complex_image, "complex64"), (_rgb_image, "RGB")])
def test_load_image_refuses_before_any_arithmetic(tmp_path, make, dtype_name, recwarn):
    path = make(tmp_path / "scan.nii.gz")
    with pytest.raises(nifti.NiftiError, match=dtype_name):
        nifti.load_image(path)
    assert not [w for w in recwarn if "ComplexWarning" in type(w.message).__name__]


def test_evaluate_refuses_rgb_prediction(tmp_path, capsys):
    pred_path = _rgb_image(tmp_path / "pred" / "crossmoda_300_Label.nii.gz")
    gt_path = _write(tmp_path / "labels" / "crossmoda_300_Label.nii.gz", np.zeros((8, 8, 4), np.uint8))
    rc = main(["evaluate", str(pred_path.parent), str(gt_path.parent)])
    captured = capsys.readouterr()
    assert rc == 1 and f"{pred_path}: unsupported NIfTI data type RGB" in captured.out
    assert "TypeError" not in captured.out + captured.err


# --------------------------------------------------------------------------- (14) --config not a regular file
@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory", "too_large"])
def test_config_refuses_non_regular_or_huge_file(tmp_path, capsys, kind):
    if kind == "dev_zero":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero")
        path = "/dev/zero"
        expected = "not a regular file"
    elif kind == "fifo":
        path = str(tmp_path / "config.yaml")
        os.mkfifo(path)
        expected = "not a regular file but a FIFO"
    elif kind == "directory":
        path = str(tmp_path / "conf.d")
        os.mkdir(path)
        expected = "not a regular file but a directory"
    else:
        path = str(tmp_path / "big.yaml")
        with open(path, "w") as fh:
            fh.write("# " + "x" * (1024**2 + 10) + "\n")
        expected = "config file too large"
    rc = main(["config", "--config", path])
    captured = capsys.readouterr()
    assert rc == 2
    line = _one_error_line(captured.err)
    assert line.startswith(f"cosmos: error: {path}: {expected}"), line
    assert captured.out == ""


def test_config_regular_file_still_loads(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text("seed: 7\n")
    assert main(["config", "--config", str(path)]) == 0
    assert "seed: 7" in capsys.readouterr().out
