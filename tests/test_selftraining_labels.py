"""Round-to-round pseudo-label change and training-set identity (cosmos.selftraining.labels)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cosmos.data.nifti import save
from cosmos.errors import CosmosError
from cosmos.selftraining.filtering import label_change as filtering_label_change
from cosmos.selftraining.labels import compare_training_sets, label_change, same_training_set

AFFINE = np.diag([-0.5, 0.5, 1.0, 1.0])
SHAPE = (12, 10, 6)


def _write(path, vs_rows=(2, 5), cochlea=True, ignore_at=None):
    arr = np.zeros(SHAPE, np.uint8)
    arr[vs_rows[0] : vs_rows[1], 2:5, 1:3] = 1
    if cochlea:
        arr[8:10, 6:8, 3:5] = 2
    if ignore_at is not None:
        arr[ignore_at] = 3
    save(path, arr, affine=AFFINE, label=True)
    return arr


def test_label_change_per_case_dice_and_changed_count(tmp_path):
    prev, cur = tmp_path / "r1", tmp_path / "r2"
    _write(prev / "crossmoda_106_Label.nii.gz")
    _write(cur / "crossmoda_106_Label.nii.gz")  # unchanged
    _write(prev / "crossmoda_107_Label.nii.gz", vs_rows=(2, 5))
    _write(cur / "crossmoda_107_Label.nii.gz", vs_rows=(3, 6))  # VS shifted by one row: 2 of 3 rows overlap
    _write(prev / "crossmoda_108_Label.nii.gz")  # only in the previous set
    _write(cur / "crossmoda_109_Label.nii.gz")  # only in the new set
    ch = label_change(prev, cur)
    assert ch["n_compared"] == 2 and ch["n_changed"] == 1
    assert ch["added"] == ["crossmoda_109"] and ch["removed"] == ["crossmoda_108"]
    assert ch["per_case"]["crossmoda_106"] == {"VS": 1.0, "cochlea": 1.0, "mean": 1.0, "changed": False}
    moved = ch["per_case"]["crossmoda_107"]
    assert moved["VS"] == pytest.approx(2 * 12 / (18 + 18)) and moved["cochlea"] == 1.0 and moved["changed"]
    assert ch["mean_dice"] == pytest.approx((1.0 + (moved["VS"] + 1.0) / 2) / 2)
    assert ch["mean_dice_per_structure"]["VS"] == pytest.approx((1.0 + moved["VS"]) / 2)
    json.dumps(ch)  # JSON-able for the report
    assert filtering_label_change(prev, cur) == ch  # the same function, reachable from filtering


def test_label_change_leaves_ignored_voxels_out_of_the_dice(tmp_path):
    prev, cur = tmp_path / "r1", tmp_path / "r2"
    _write(prev / "crossmoda_106_Label.nii.gz")
    _write(cur / "crossmoda_106_Label.nii.gz", ignore_at=(2, 2, 1))  # one VS voxel now unsure
    ch = label_change(prev, cur)
    assert ch["per_case"]["crossmoda_106"]["VS"] == 1.0 and ch["n_changed"] == 1


def test_label_change_with_nothing_in_common_and_bad_input(tmp_path):
    _write(tmp_path / "a" / "crossmoda_106_Label.nii.gz")
    (tmp_path / "b").mkdir()
    ch = label_change(tmp_path / "a", tmp_path / "b")
    assert ch["n_compared"] == 0 and math.isnan(ch["mean_dice"]) and ch["removed"] == ["crossmoda_106"]
    with pytest.raises(CosmosError, match="not found"):
        label_change(tmp_path / "missing", tmp_path / "b")
    save(tmp_path / "b" / "crossmoda_106_Label.nii.gz", np.zeros((4, 4, 4), np.uint8), affine=AFFINE, label=True)
    with pytest.raises(CosmosError, match="crossmoda_106_Label.nii.gz: shape"):
        label_change(tmp_path / "a", tmp_path / "b")


def _fake_prepared(root, cases: dict[str, np.ndarray], labels=None):
    """A prepared dir's raw export only (what the training-set digest reads)."""
    raw = root / "nnUNet_raw" / "Dataset701_CosmosRound1"
    for nn_id, lab in cases.items():
        save(raw / "imagesTr" / f"{nn_id}_0000.nii.gz", lab.astype(np.float32) + 0.5, affine=AFFINE)
        save(raw / "labelsTr" / f"{nn_id}.nii.gz", lab, affine=AFFINE, label=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": labels or {"background": 0, "VS": 1, "cochlea": 2}}))
    return root


def test_training_set_identity(tmp_path):
    a = _write(tmp_path / "l" / "a.nii.gz")
    b = _write(tmp_path / "l" / "b.nii.gz", vs_rows=(3, 6))
    r1 = _fake_prepared(tmp_path / "r1", {"pseudo_crossmoda_1": a, "real_crossmoda_106": b})
    r2 = _fake_prepared(tmp_path / "r2", {"pseudo_crossmoda_1": a, "real_crossmoda_106": b})
    cmp = compare_training_sets(r2, r1)
    assert cmp.identical and same_training_set(r2, r1)
    assert "identical" in cmp.message and "stop self-training" in cmp.message
    r3 = _fake_prepared(tmp_path / "r3", {"pseudo_crossmoda_1": a, "real_crossmoda_106": a, "real_crossmoda_107": b})
    cmp = compare_training_sets(r3, r1)
    assert not cmp.identical and cmp.added == ["real_crossmoda_107"] and cmp.changed == ["real_crossmoda_106"]
    r4 = _fake_prepared(
        tmp_path / "r4",
        {"pseudo_crossmoda_1": a, "real_crossmoda_106": b},
        labels={"background": 0, "VS": 1, "cochlea": 2, "ignore": 3},
    )
    assert compare_training_sets(r4, r1).labels_changed and not same_training_set(r4, r1)
