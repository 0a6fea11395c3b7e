"""Pseudo-label filtering: a case missing VS or cochlea is dropped; nothing kept -> loud alert."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from cosmos.data.nifti import load, save
from cosmos.errors import CosmosError
from cosmos.selftraining.filtering import SUMMARY_FILE, filter_pseudo_labels, read_filter_summary

AFFINE = np.diag([-0.5, 0.5, 1.0, 1.0])


def _label(path, vs: bool, cochlea: bool):
    arr = np.zeros((12, 10, 6), np.uint8)
    if vs:
        arr[2:5, 2:5, 1:3] = 1
    if cochlea:
        arr[8:10, 6:8, 3:5] = 2
    save(path, arr, affine=AFFINE, label=True)


@pytest.fixture()
def preds(tmp_path):
    d = tmp_path / "pred"
    _label(d / "crossmoda_106_Label.nii.gz", True, True)
    _label(d / "crossmoda_107_Label.nii.gz", True, False)  # lacks cochlea
    _label(d / "crossmoda_108_Label.nii.gz", False, True)  # lacks VS
    _label(d / "crossmoda_110_Label.nii.gz", False, False)  # lacks both
    _label(d / "crossmoda_109_Label.nii.gz", True, True)
    (d / "notes.txt").write_text("ignored")
    return d


def test_drops_cases_missing_a_structure(preds, tmp_path, caplog):
    out = tmp_path / "kept"
    with caplog.at_level(logging.INFO, logger="cosmos.selftraining.filtering"):
        res = filter_pseudo_labels(preds, out)
    assert res.kept == ["crossmoda_106", "crossmoda_109"]
    assert res.dropped == ["crossmoda_107", "crossmoda_108", "crossmoda_110"]
    assert res.reasons["crossmoda_107"] == "lacks cochlea"
    assert res.reasons["crossmoda_108"] == "lacks VS"
    assert res.reasons["crossmoda_110"] == "lacks VS and cochlea"
    assert res.alert is None and not res.degenerate
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["crossmoda_106_Label.nii.gz", "crossmoda_109_Label.nii.gz"]
    # copies are the predictions, geometry included
    assert np.array_equal(load(out / "crossmoda_106_Label.nii.gz").affine, AFFINE)
    assert "kept 2 of 5" in caplog.text and "crossmoda_108 (lacks VS)" in caplog.text
    assert json.loads((out / SUMMARY_FILE).read_text())["kept"] == res.kept
    assert read_filter_summary(out).dropped == res.dropped


def test_required_labels_configurable_and_rerun_removes_stale(preds, tmp_path):
    out = tmp_path / "kept"
    filter_pseudo_labels(preds, out, required_labels=[1])
    assert len(list(out.glob("*.nii.gz"))) == 3  # 106, 107, 109 have VS
    res = filter_pseudo_labels(preds, out, required_labels=(1, 2))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}_Label.nii.gz" for c in res.kept]


def test_none_kept_logs_error_alert(tmp_path, caplog):
    d = tmp_path / "pred"
    _label(d / "crossmoda_106_Label.nii.gz", True, False)
    _label(d / "crossmoda_107_Label.nii.gz", False, False)
    with caplog.at_level(logging.INFO):
        res = filter_pseudo_labels(d, tmp_path / "kept")
    assert res.kept == [] and res.degenerate
    assert res.alert and "degenerates to the teacher" in res.alert
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "kept NO case" in errors[0].getMessage()
    assert json.loads((tmp_path / "kept" / SUMMARY_FILE).read_text())["alert"] == res.alert


def test_bad_prediction_folders(tmp_path):
    with pytest.raises(CosmosError, match="not found"):
        filter_pseudo_labels(tmp_path / "missing", tmp_path / "kept")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CosmosError, match="no predictions"):
        filter_pseudo_labels(tmp_path / "empty", tmp_path / "kept")


# ------------------------------------------------------------------------------ refinements
def test_min_component_voxels_drops_a_one_voxel_cochlea(tmp_path):
    d = tmp_path / "pred"
    _label(d / "crossmoda_106_Label.nii.gz", True, True)  # cochlea 2x2x2 = 8 voxels
    arr = np.zeros((12, 10, 6), np.uint8)
    arr[2:5, 2:5, 1:3] = 1
    arr[9, 7, 4] = 2  # one stray cochlea voxel
    arr[1, 8, 0] = 2  # and another, not connected to it
    save(d / "crossmoda_107_Label.nii.gz", arr, affine=AFFINE, label=True)
    paper = filter_pseudo_labels(d, tmp_path / "paper")  # any voxel counts
    assert paper.kept == ["crossmoda_106", "crossmoda_107"]
    res = filter_pseudo_labels(d, tmp_path / "kept", (1, 2), min_component_voxels=[4, 4])
    assert res.kept == ["crossmoda_106"] and res.dropped == ["crossmoda_107"]
    assert "cochlea too small (largest component 1 < 4 voxels)" in res.reasons["crossmoda_107"]
    assert res.largest_component["crossmoda_106"] == {"VS": 18, "cochlea": 8}
    assert sorted(p.name for p in (tmp_path / "kept").glob("*.nii.gz")) == ["crossmoda_106_Label.nii.gz"]
    with pytest.raises(CosmosError, match="one entry per required label"):
        filter_pseudo_labels(d, tmp_path / "x", (1, 2), min_component_voxels=[4])


def test_rejected_case_keeps_its_last_accepted_label(preds, tmp_path):
    prev = tmp_path / "prev_kept"
    _label(prev / "crossmoda_107_Label.nii.gz", True, True)  # accepted last round, lacks cochlea now
    _label(prev / "crossmoda_106_Label.nii.gz", False, True)  # an older label of a case accepted again now
    out = tmp_path / "kept"
    res = filter_pseudo_labels(preds, out, previous_kept_dir=prev)
    assert res.kept == ["crossmoda_106", "crossmoda_109"]
    assert res.dropped == ["crossmoda_107", "crossmoda_108", "crossmoda_110"]
    assert res.carried_over == ["crossmoda_107"]
    assert res.training_cases == ["crossmoda_106", "crossmoda_107", "crossmoda_109"]
    assert (
        load(out / "crossmoda_107_Label.nii.gz", label=True).data
        == load(prev / "crossmoda_107_Label.nii.gz", label=True).data
    ).all()
    # an accepted case takes this round's prediction, not the older label
    assert (
        load(out / "crossmoda_106_Label.nii.gz", label=True).data
        == load(preds / "crossmoda_106_Label.nii.gz", label=True).data
    ).all()
    assert read_filter_summary(out).carried_over == ["crossmoda_107"]
    # without the previous folder the case is gone again (re-run removes the stale copy)
    res = filter_pseudo_labels(preds, out)
    assert res.carried_over == [] and not (out / "crossmoda_107_Label.nii.gz").exists()


def test_only_carried_over_labels_is_not_degenerate(tmp_path):
    d = tmp_path / "pred"
    _label(d / "crossmoda_106_Label.nii.gz", True, False)
    prev = tmp_path / "prev"
    _label(prev / "crossmoda_106_Label.nii.gz", True, True)
    res = filter_pseudo_labels(d, tmp_path / "kept", previous_kept_dir=prev)
    assert res.kept == [] and res.carried_over == ["crossmoda_106"] and not res.degenerate and res.alert is None


def test_pixel_filter_marks_unsure_voxels_with_the_ignore_label(tmp_path):
    from cosmos.config import load_config
    from cosmos.selftraining.filtering import IGNORE_LABEL, filter_from_config

    d = tmp_path / "pred"
    _label(d / "crossmoda_106_Label.nii.gz", True, True)
    lab = load(d / "crossmoda_106_Label.nii.gz", label=True).data
    probs = np.zeros((3, *lab.shape), np.float16)
    for c in range(3):
        probs[c][lab == c] = 0.97
    probs[0][lab != 0] = 0.03
    probs[1][lab != 1] = 0.015
    probs[2][lab != 2] = 0.015
    probs[:, 0, 0, 0] = [0.5, 0.3, 0.2]  # unsure background voxel
    probs[:, 3, 3, 1] = [0.3, 0.6, 0.1]  # unsure VS voxel
    np.savez_compressed(d / "crossmoda_106_Label.npz", probabilities=probs, labels=np.arange(3))
    cfg = load_config(
        "tiny",
        overrides=[
            "selftraining.filter=pixel",
            "selftraining.confidence_threshold=0.8",
            "selftraining.min_component_voxels=[]",
        ],
    )
    res = filter_from_config(d, tmp_path / "kept", cfg)
    out = load(tmp_path / "kept" / "crossmoda_106_Label.nii.gz", label=True).data
    assert res.kept == ["crossmoda_106"] and res.ignore_label == IGNORE_LABEL == 3
    assert sorted(zip(*np.nonzero(out == IGNORE_LABEL))) == [(0, 0, 0), (3, 3, 1)]
    assert np.array_equal(out[out != IGNORE_LABEL], lab[out != IGNORE_LABEL])
    assert res.ignored_fraction["crossmoda_106"] == pytest.approx(2 / lab.size, abs=1e-6)
    # image mode copies the prediction unchanged; pixel mode without probabilities is a clear error
    filter_pseudo_labels(d, tmp_path / "img")
    assert not (load(tmp_path / "img" / "crossmoda_106_Label.nii.gz", label=True).data == IGNORE_LABEL).any()
    (d / "crossmoda_106_Label.npz").unlink()
    with pytest.raises(CosmosError, match="save_probabilities"):
        filter_from_config(d, tmp_path / "kept2", cfg)
