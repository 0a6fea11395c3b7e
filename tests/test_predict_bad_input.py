"""Issue 14 row 7 at prediction: an all-NaN, all-constant or NaN-affine scan is refused in one line.

The model is replaced by a stub (no weights are needed to reach the input check); the stub would
happily return an empty mask, which is exactly the silent nonsense the old code wrote.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cosmos.config import load_config
from cosmos.data import nifti
from cosmos.segmentation import inference


@pytest.fixture
def stub_model(monkeypatch):
    ensemble = inference.FoldEnsemble(
        fold_dirs=[],
        plans={},
        dataset_json={},
        configuration="3d_fullres",
        trainer_name="stub",
        parameters=[],
        mirror_axes=None,
        digest="stub",
    )
    monkeypatch.setattr(inference, "load_folds", lambda dirs: ensemble)
    monkeypatch.setattr(inference, "build_predictor", lambda *a, **k: object())
    monkeypatch.setattr(inference.environment, "resolve_device", lambda d: "cpu")

    def empty_mask(predictor, image, want_probabilities):
        shape = nib.load(str(image)).shape[::-1]
        probs = np.stack([np.ones(shape), np.zeros(shape), np.zeros(shape)]).astype(np.float32)
        return np.zeros(shape, np.uint8), (probs if want_probabilities else None)

    monkeypatch.setattr(inference, "_predict_case", empty_mask)


@pytest.mark.parametrize("kind,expected", [("nan", "every voxel is NaN or inf"), ("zeros", "image is constant")])
def test_predict_refuses_unusable_scans(tmp_path, stub_model, kind, expected):
    data = np.full((8, 8, 4), np.nan if kind == "nan" else 0.0, np.float32)
    scan = tmp_path / "in" / "crossmoda_300_hrT2.nii.gz"
    nifti.save(scan, data, affine=np.diag([0.5, 0.5, 1.0, 1.0]))
    cfg = load_config("tiny")
    with pytest.raises(nifti.NiftiError) as info:
        inference.predict(["stub"], scan, tmp_path / "out", cfg)
    assert str(info.value).startswith(f"{scan}: ") and expected in str(info.value)
    assert not list((tmp_path / "out").glob("*.nii.gz"))  # no empty mask written


def test_predict_still_segments_a_usable_scan(tmp_path, stub_model):
    scan = tmp_path / "in" / "crossmoda_301_hrT2.nii.gz"
    nifti.save(
        scan, np.random.default_rng(0).random((8, 8, 4)).astype(np.float32), affine=np.diag([0.5, 0.5, 1.0, 1.0])
    )
    written = inference.predict(["stub"], scan, tmp_path / "out", load_config("tiny"))
    assert [p.name for p in written] == ["crossmoda_301_Label.nii.gz"]
