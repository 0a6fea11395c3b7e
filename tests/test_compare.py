"""Follow-up: ``cosmos compare PRIOR CURRENT`` and ``cosmos predict --prior`` (VS volume change in ml and %,
growth above a threshold, labels on different grids, one line for bad input)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cosmos.cli import main
from cosmos.data.nifti import load, save


def ellipsoid_label(path, spacing, semi_axes_mm, shape=(90, 90, 40), flip_x=False):
    """A VS ellipsoid (label 1) plus a small cochlea (label 2) on a grid of the given spacing."""
    idx = np.indices(shape, dtype=float)
    centre = (np.asarray(shape, float) - 1) / 2
    inside = sum(((idx[a] - centre[a]) * spacing[a] / semi_axes_mm[a]) ** 2 for a in range(3)) <= 1.0
    label = inside.astype(np.uint8)
    label[1:3, 1:3, 1:3] = 2
    affine = np.diag([-spacing[0] if flip_x else spacing[0], spacing[1], spacing[2], 1.0])
    return save(path, label, affine=affine, label=True)


def sitk_vs_mm3(path) -> float:
    """Independent volume: SimpleITK's label statistics on the file as SimpleITK reads it."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.ReadImage(str(path)))
    return float(stats.GetPhysicalSize(1)) if stats.HasLabel(1) else 0.0


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_compare_on_different_grids_flags_growth(tmp_path, capsys):
    prior = ellipsoid_label(tmp_path / "prior.nii.gz", (0.5, 0.5, 1.0), (6.0, 5.0, 4.0))
    current = ellipsoid_label(tmp_path / "current.nii.gz", (0.4, 0.45, 1.5), (7.0, 6.0, 4.5), flip_x=True)
    v0, v1 = sitk_vs_mm3(prior), sitk_vs_mm3(current)
    pct = 100 * (v1 - v0) / v0
    assert pct > 20  # the shapes are chosen to grow past the default threshold
    rc, out, err = run(capsys, "compare", prior, current, "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["prior_vs_volume_ml"] == pytest.approx(v0 / 1000)
    assert got["current_vs_volume_ml"] == pytest.approx(v1 / 1000)
    assert got["vs_volume_change_ml"] == pytest.approx((v1 - v0) / 1000)
    assert got["vs_volume_change_pct"] == pytest.approx(pct)
    assert got["growth"] is True and got["growth_threshold_pct"] == 20.0
    rc, out, _ = run(capsys, "compare", prior, current)
    assert rc == 0 and len(out.strip().splitlines()) == 1
    assert f"{(v1 - v0) / 1000:+.3f} ml ({pct:+.1f} %)" in out and "GROWTH above 20 %" in out
    # a threshold above the change: no flag
    rc, out, _ = run(capsys, "compare", prior, current, "--growth-threshold", f"{pct + 1:.1f}")
    assert rc == 0 and "no growth above" in out
    # shrinking: negative change, no flag
    rc, out, _ = run(capsys, "compare", current, prior, "--json")
    assert json.loads(out)["vs_volume_change_pct"] < 0 and json.loads(out)["growth"] is False


def test_prior_without_vs_says_the_percentage_is_undefined(tmp_path, capsys):
    empty = np.zeros((10, 10, 10), np.uint8)
    empty[1:3, 1:3, 1:3] = 2
    prior = save(tmp_path / "prior.nii.gz", empty, affine=np.eye(4), label=True)
    current = ellipsoid_label(tmp_path / "current.nii.gz", (0.5, 0.5, 1.0), (3.0, 3.0, 3.0))
    rc, out, _ = run(capsys, "compare", prior, current, "--json")
    got = json.loads(out)
    assert rc == 0 and got["vs_volume_change_pct"] is None and got["growth"] is True
    assert "% change undefined" in got["note"]
    rc, out, _ = run(capsys, "compare", prior, current)
    assert "% undefined: no VS in the prior" in out and "new VS" in out


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", r"missing\.nii\.gz: label file not found"),
        ("image", r"image\.nii\.gz: label has non-integer values"),
        ("values", r"values\.nii\.gz: not a VS/cochlea label map \(values \[7\]"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, which, message):
    import re

    good = ellipsoid_label(tmp_path / "good.nii.gz", (1.0, 1.0, 1.0), (3.0, 3.0, 3.0), shape=(12, 12, 12))
    rng = np.random.default_rng(0)
    save(tmp_path / "image.nii.gz", rng.random((8, 8, 8)), affine=np.eye(4))
    save(tmp_path / "values.nii.gz", np.full((4, 4, 4), 7, np.uint8), affine=np.eye(4), label=True)
    rc, _, err = run(capsys, "compare", good, tmp_path / f"{which}.nii.gz")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and re.search(message, lines[0]), err
    rc, _, err = run(capsys, "compare", good, good, "--growth-threshold", "-5")
    assert rc == 2 and "--growth-threshold: -5.0 is not a percentage >= 0" in err


def test_predict_with_prior_adds_the_comparison(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    from test_registry_pyfunc import fake_predict_module, make_fold

    calls: list = []
    monkeypatch.setitem(sys.modules, "cosmos.segmentation.inference", fake_predict_module(calls))
    for f in (0, 1):
        make_fold(tmp_path / "model" / "folds" / f"fold_{f}", f)
    rng = np.random.default_rng(1)
    scan = save(tmp_path / "scans" / "patient.nii.gz", rng.random((20, 18, 12)), affine=np.diag([0.5, 0.5, 1, 1]))
    prior = ellipsoid_label(tmp_path / "prior.nii.gz", (0.6, 0.6, 1.2), (2.0, 2.0, 2.0), shape=(30, 30, 10))
    out_dir = tmp_path / "out"
    rc, out, err = run(
        capsys,
        "predict",
        "--model",
        tmp_path / "model",
        scan,
        "-o",
        out_dir,
        "--prior",
        prior,
        "--growth-threshold",
        30,
    )
    assert rc == 0, err
    measured = json.loads((out_dir / "patient_measurements.json").read_text())
    label = load(out_dir / "patient_seg.nii.gz", label=True)
    v1 = float((label.data == 1).sum()) * 0.5 * 0.5 * 1.0
    v0 = sitk_vs_mm3(prior)
    assert measured["vs_volume_mm3"] == pytest.approx(v1)
    cmp = measured["comparison"]
    assert cmp["prior_label"] == str(prior) and cmp["growth_threshold_pct"] == 30.0
    assert cmp["vs_volume_change_pct"] == pytest.approx(100 * (v1 - v0) / v0)
    assert cmp["growth"] is (100 * (v1 - v0) / v0 > 30)
    assert "VS volume" in out and "->" in out
    # --prior compares one scan; a prior that is not a label map is refused before any model
    second = save(tmp_path / "scans2" / "b.nii.gz", rng.random((8, 8, 8)), affine=np.eye(4))
    n = len(calls)
    rc, _, err = run(
        capsys, "predict", "--model", tmp_path / "model", scan, second, "-o", tmp_path / "o2", "--prior", prior
    )
    assert rc == 2 and "--prior: compares one scan; got 2 inputs" in err
    rc, _, err = run(capsys, "predict", "--model", tmp_path / "model", scan, "-o", tmp_path / "o3", "--prior", second)
    assert rc == 2 and "b.nii.gz: label has non-integer values" in err and len(calls) == n
