"""`cosmos predict`: NIfTI in, NIfTI out on the same grid from a registered or local model, and a
clear one-line error (exit 2) for every bad input. nnU-Net is faked (see test_registry_pyfunc)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("mlflow")

from test_registry_pyfunc import AFFINE, fake_predict_module, make_fold, make_image  # noqa: E402

from cosmos.cli import main  # noqa: E402
from cosmos.config import load_config  # noqa: E402
from cosmos.data.nifti import load, same_grid, save  # noqa: E402
from cosmos.segmentation import registry  # noqa: E402


@pytest.fixture()
def calls(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "cosmos.segmentation.inference", fake_predict_module(calls))
    return calls


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-cli")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config("tiny", overrides=["tracking.experiment=predict-cli"])
    folds = [make_fold(root / "round_0" / "folds" / f"fold_{f}", f) for f in (0, 1)]
    registry.register_round(folds, 0, cfg, alias="champion", tracking_uri=uri)
    return {"uri": uri, "root": root}


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_predict_from_champion_keeps_grid(store, calls, tmp_path, capsys):
    a = make_image(tmp_path / "val" / "crossmoda_211_hrT2.nii.gz")
    make_image(tmp_path / "val" / "crossmoda_212_hrT2.nii.gz", seed=2)
    single = make_image(tmp_path / "patient.nii.gz", seed=3)
    rc, out, err = run(
        capsys,
        "predict",
        "--model",
        "models:/cosmos-segmenter@champion",
        str(tmp_path / "val"),
        str(single),
        "-o",
        str(tmp_path / "out"),
        "--tracking-uri",
        store["uri"],
        "--no-mirroring",
    )
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert names == [
        "crossmoda_211_Label.nii.gz",
        "crossmoda_211_measurements.json",
        "crossmoda_212_Label.nii.gz",
        "crossmoda_212_measurements.json",
        "patient_measurements.json",
        "patient_seg.nii.gz",
    ]
    pred = load(tmp_path / "out" / "crossmoda_211_Label.nii.gz", label=True)
    assert same_grid(load(a), pred) is None and pred.data.dtype == np.uint8
    assert calls[-1]["mirroring"] is False and calls[-1]["n"] == 3
    assert "segmented 3 image(s)" in out and "version 1" in out


def test_predict_by_version_and_local_folder(store, calls, tmp_path, capsys):
    img = make_image(tmp_path / "crossmoda_300_hrT2.nii.gz")
    rc, _, err = run(
        capsys,
        "predict",
        "--model",
        "models:/cosmos-segmenter/1",
        str(img),
        "-o",
        str(tmp_path / "o1"),
        "--tracking-uri",
        store["uri"],
    )
    assert rc == 0, err
    rc, out, err = run(
        capsys, "predict", "--model", str(store["root"] / "round_0"), str(img), "-o", str(tmp_path / "o2")
    )
    assert rc == 0, err
    assert (tmp_path / "o2" / "crossmoda_300_Label.nii.gz").is_file() and "(2 folds)" in out


def _bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    save(tmp_path / "flat.nii.gz", np.zeros((5, 5, 1)), affine=AFFINE)  # fine: 3D with one slice
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "slice2d.nii.gz"))
    make_image(tmp_path / "crossmoda_1_ceT1.nii.gz")
    src = tmp_path / "data" / "source_training"
    make_image(src / "crossmoda_2_ceT1.nii.gz")
    (tmp_path / "data" / "target_validation").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")


@pytest.mark.parametrize(
    "name, message",
    [
        ("notes.txt", "not a NIfTI file"),
        ("slice2d.nii.gz", "expected a 3D volume, got 2D"),
        ("crossmoda_1_ceT1.nii.gz", "wrong modality: a contrast-enhanced T1"),
        ("data/source_training", "wrong modality"),
        ("data", "is a crossMoDA dataset root"),
        ("empty", "no NIfTI images"),
        ("missing.nii.gz", "no such file or folder"),
        ("corrupt.nii.gz", "corrupt|truncated|not a readable"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, capsys, name, message, calls):
    _bad_inputs(tmp_path)
    rc, out, err = run(capsys, "predict", "--model", str(tmp_path), str(tmp_path / name), "-o", str(tmp_path / "o"))
    assert rc == 2
    assert err.startswith("cosmos: error:") and "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert not calls  # nothing was predicted


@pytest.mark.parametrize(
    "model, message",
    [
        ("models:/cosmos-segmenter@staging", "has no alias @staging; versions: \\[1\\]; aliases: @champion"),
        ("models:/cosmos-segmenter/7", "has no version 7"),
        ("models:/segmenter-typo@champion", "no registered model 'segmenter-typo'"),
    ],
)
def test_unknown_model_or_alias(store, tmp_path, capsys, model, message):
    img = make_image(tmp_path / "crossmoda_300_hrT2.nii.gz")
    rc, _, err = run(
        capsys, "predict", "--model", model, str(img), "-o", str(tmp_path / "o"), "--tracking-uri", store["uri"]
    )
    import re

    assert rc == 2 and re.search(message, err), err


def test_duplicate_output_names_are_refused(tmp_path, capsys):
    make_image(tmp_path / "a" / "crossmoda_5_hrT2.nii.gz")
    make_image(tmp_path / "b" / "crossmoda_5_hrT2.nii.gz")
    rc, _, err = run(
        capsys, "predict", "--model", str(tmp_path), str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "o")
    )
    assert rc == 2 and "would write crossmoda_5_Label.nii.gz" in err


def test_registry_model_without_tracking_uri(tmp_path, capsys, monkeypatch):
    from mlflow.tracking._tracking_service import utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(utils, "is_tracking_uri_set", lambda: False)
    img = make_image(tmp_path / "crossmoda_300_hrT2.nii.gz")
    rc, _, err = run(capsys, "predict", str(img), "-o", str(tmp_path / "o"))  # default: @champion
    assert rc == 2 and "no MLflow tracking URI" in err and "--tracking-uri" in err
