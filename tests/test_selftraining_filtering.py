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
    _label(d / "crossmoda_107_Label.nii.gz", True, False)   # lacks cochlea
    _label(d / "crossmoda_108_Label.nii.gz", False, True)   # lacks VS
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
