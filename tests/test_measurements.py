"""Tumour measurements (cosmos.evaluation.measurements): volumes against SimpleITK's independent count, the
maximal axial diameter against analytic ellipsoids, sides from the RAS affine, confidence, removed components,
the JSON beside each prediction and the report's table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from cosmos.data.nifti import save
from cosmos.evaluation import measurements as m


def ellipsoid(shape, spacing, centre_vox, semi_axes_mm, angle_deg=0.0):
    """Voxels whose centres lie inside an ellipsoid (semi-axes in mm along x', y', z), x'/y' rotated in-plane."""
    idx = np.indices(shape, dtype=float)
    d = [(idx[a] - centre_vox[a]) * spacing[a] for a in range(3)]
    t = math.radians(angle_deg)
    xr = d[0] * math.cos(t) + d[1] * math.sin(t)
    yr = -d[0] * math.sin(t) + d[1] * math.cos(t)
    a, b, c = semi_axes_mm
    return (xr / a) ** 2 + (yr / b) ** 2 + (d[2] / c) ** 2 <= 1.0


def sitk_physical_size(mask: np.ndarray, spacing) -> float:
    """The independent count: SimpleITK's LabelShapeStatisticsImageFilter on the same voxels and spacing."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8).transpose(2, 1, 0))  # (i,j,k) -> SimpleITK's (z,y,x)
    img.SetSpacing(tuple(float(s) for s in spacing))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(img)
    return float(stats.GetPhysicalSize(1)) if stats.HasLabel(1) else 0.0


@pytest.mark.parametrize("spacing", [(0.4, 0.4, 1.5), (0.7, 0.5, 1.0), (1.0, 1.0, 1.0)])
def test_volume_matches_simpleitk_and_the_ellipsoid(spacing):
    rng = np.random.default_rng(int(sum(spacing) * 10))
    shape = (80, 80, 30)
    axes = tuple(float(v) for v in rng.uniform(5.0, 9.0, size=3))
    centre = tuple(float(v) for v in rng.uniform(30, 50, size=2)) + (15.0,)
    vs = ellipsoid(shape, spacing, centre, axes)
    label = vs.astype(np.uint8)
    label[2:5, 2:5, 2:4] = m.COCHLEA_LABEL  # cochlea voxels must not count as VS
    got = m.measure(label, np.diag([*spacing, 1.0]))
    independent = sitk_physical_size(vs, spacing)
    assert got.vs_volume_mm3 == pytest.approx(independent, rel=1e-9)
    assert got.vs_volume_ml == pytest.approx(independent / 1000.0, rel=1e-9)
    analytic = 4.0 / 3.0 * math.pi * axes[0] * axes[1] * axes[2]
    # voxelising an ellipsoid: the error is of the order of its surface times half a voxel
    surface = (
        4
        * math.pi
        * (((axes[0] * axes[1]) ** 1.6 + (axes[0] * axes[2]) ** 1.6 + (axes[1] * axes[2]) ** 1.6) / 3) ** (1 / 1.6)
    )
    assert abs(got.vs_volume_mm3 - analytic) <= surface * max(spacing) / 2
    assert got.cochlea_left_volume_mm3 + got.cochlea_right_volume_mm3 == pytest.approx(18 * np.prod(spacing))


def test_volume_uses_the_affine_determinant_on_oblique_grids():
    theta = math.radians(30)
    rot = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, 0.6, 1.2])
    label = np.zeros((10, 10, 10), np.uint8)
    label[2:6, 3:7, 4:6] = 1
    got = m.measure(label, affine)
    assert got.vs_volume_mm3 == pytest.approx(32 * 0.5 * 0.6 * 1.2)
    assert got.spacing_mm == pytest.approx((0.5, 0.6, 1.2))


@pytest.mark.parametrize(
    ("spacing", "angle"),
    [((0.4, 0.4, 1.5), 0.0), ((0.5, 0.3, 1.0), 35.0), ((0.6, 0.6, 2.0), 70.0), ((0.25, 0.5, 1.2), 0.0)],
)
def test_max_axial_diameter_matches_the_analytic_ellipsoid(spacing, angle):
    """The central axial slice of an ellipsoid centred on a voxel centre holds its full in-plane major axis 2a;
    from voxel centres the caliper is at most one in-plane voxel per end shorter (rotated: the voxel diagonal)."""
    a, b, c = 8.0, 5.0, 4.0
    shape = (100, 100, 20)
    vs = ellipsoid(shape, spacing, (50.0, 50.0, 10.0), (a, b, c), angle)
    got = m.max_axial_diameter_mm(vs, np.diag([*spacing, 1.0]))
    tolerance = 2 * math.hypot(spacing[0], spacing[1]) if angle else 2 * max(spacing[0], spacing[1])
    assert 2 * a - tolerance <= got <= 2 * a + 1e-9
    # the Feret diameter of a rotated ellipse is its major axis, not the bounding box's extent
    wide = m.measure(vs.astype(np.uint8), np.diag([*spacing, 1.0]))
    assert wide.vs_max_axial_diameter_mm == pytest.approx(got)


def test_diameter_is_axial_only_and_uses_the_superior_axis_of_the_affine():
    """A cigar along world z has a small axial diameter; the same voxels on a grid whose first voxel axis
    runs superior give the long extent in-plane instead (axial = the voxel axis closest to RAS z)."""
    label = np.zeros((12, 12, 40), np.uint8)
    label[5:7, 5:7, 2:38] = 1
    along_z = m.max_axial_diameter_mm(label == 1, np.eye(4))
    assert along_z == pytest.approx(math.sqrt(2))  # 2x2 voxel centres: diagonal sqrt(1 + 1)
    permuted = np.zeros((4, 4))
    permuted[0, 2] = permuted[1, 1] = permuted[2, 0] = permuted[3, 3] = 1.0  # voxel k -> world x, i -> z
    across = m.max_axial_diameter_mm(label == 1, permuted)
    assert across == pytest.approx(math.hypot(35, 1))


def test_cochlea_sides_follow_ras_x():
    """Patient-left is +x in RAS: with a flipped x axis (voxel i grows to the patient's right), the same voxels
    swap sides."""
    label = np.zeros((20, 8, 8), np.uint8)
    label[2:4, 3:5, 3:5] = 2  # 8 voxels at low i
    label[15:18, 3:5, 3:5] = 2  # 12 voxels at high i
    ras = m.measure(label, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert (ras.cochlea_left_volume_mm3, ras.cochlea_right_volume_mm3) == (12.0, 8.0)
    flipped = m.measure(label, np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert (flipped.cochlea_left_volume_mm3, flipped.cochlea_right_volume_mm3) == (8.0, 12.0)
    # an explicit midline moves the split
    shifted = m.measure(label, np.eye(4), midline_x=1.0)
    assert (shifted.cochlea_left_volume_mm3, shifted.cochlea_right_volume_mm3) == (20.0, 0.0)


def test_confidence_is_the_mean_max_probability_inside_the_vs():
    rng = np.random.default_rng(3)
    label = np.zeros((10, 10, 6), np.uint8)
    label[3:6, 3:6, 2:4] = 1
    logits = rng.normal(size=(3, 10, 10, 6))
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    got = m.measure(label, np.eye(4), probabilities=probs)
    expected = float(np.mean([probs[:, i, j, k].max() for i, j, k in np.argwhere(label == 1)]))
    assert got.vs_confidence_mean_max_prob == pytest.approx(expected)
    assert m.measure(label, np.eye(4)).vs_confidence_mean_max_prob is None
    assert m.measure(np.zeros_like(label), np.eye(4), probabilities=probs).vs_confidence_mean_max_prob is None
    with pytest.raises(ValueError, match="do not match"):
        m.measure(label, np.eye(4), probabilities=probs[:, :5])


def test_a_confidence_taken_on_a_crop_carries_over_to_the_whole_scan():
    """A model trained on ROI crops has its softmax on the crop only: the confidence is taken there
    (vs_confidence) and handed to the whole scan's measurements."""
    rng = np.random.default_rng(4)
    crop = np.zeros((10, 10, 6), np.uint8)
    crop[3:6, 3:6, 2:4] = 1
    logits = rng.normal(size=(3, 10, 10, 6))
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    on_crop = m.vs_confidence(probs, crop)
    assert on_crop == pytest.approx(m.measure(crop, np.eye(4), probabilities=probs).vs_confidence_mean_max_prob)
    whole = np.zeros((30, 30, 12), np.uint8)
    whole[10:20, 10:20, 3:9] = crop  # the crop put back on its scan
    got = m.measure(whole, np.eye(4), confidence=on_crop)
    assert got.vs_confidence_mean_max_prob == on_crop and got.vs_voxels == int((crop == 1).sum())
    assert m.vs_confidence(probs, np.zeros_like(crop)) is None
    assert m.measure(np.zeros_like(whole), np.eye(4), confidence=0.9).vs_confidence_mean_max_prob is None  # no VS


def test_removed_components_counts_what_postprocessing_dropped():
    from cosmos.config import load_config
    from cosmos.data.nifti import Volume
    from cosmos.segmentation.postprocessing import postprocess

    raw = np.zeros((30, 20, 10), np.uint8)
    raw[2:8, 2:8, 2:6] = 1  # largest VS blob
    raw[12:14, 12:14, 2:4] = 1
    raw[20:22, 2:4, 2:4] = 1
    raw[25:27, 15:17, 5:7] = 2  # cochlea, untouched by the paper's rule
    raw[3:5, 15:17, 5:7] = 2
    cfg = load_config(
        "tiny", overrides=["segmentation.vs_component=largest", "segmentation.cochlea_components=all"]
    ).segmentation
    vol = Volume(np.zeros(raw.shape, np.float32), np.eye(4), None)  # type: ignore[arg-type]
    kept = postprocess(raw.copy(), None, vol, cfg)
    removed = m.removed_components(raw, kept)
    assert removed == {"vs": 2, "cochlea": 0}
    got = m.measure(kept, np.eye(4), removed_components=removed).to_dict()
    assert got["components_removed"] == {"vs": 2, "cochlea": 0}
    assert got["vs_volume_mm3"] == 6 * 6 * 4


def test_to_dict_keys_and_atomic_json(tmp_path):
    label = np.zeros((6, 6, 6), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    d = m.measure(label, np.diag([0.5, 0.5, 2.0, 1.0])).to_dict()
    for key in (
        "vs_volume_mm3",
        "vs_volume_ml",
        "cochlea_left_volume_mm3",
        "cochlea_right_volume_mm3",
        "vs_max_axial_diameter_mm",
        "components_removed",
        "vs_confidence_mean_max_prob",
        "spacing_mm",
        "schema_version",
    ):
        assert key in d
    assert d["schema_version"] == m.SCHEMA_VERSION and d["spacing_mm"] == [0.5, 0.5, 2.0]
    assert "comparison" not in d
    target = m.measurements_path(tmp_path / "crossmoda_7_Label.nii.gz")
    assert target.name == "crossmoda_7_measurements.json"
    assert m.measurements_path(tmp_path / "scan_seg.nii.gz").name == "scan_measurements.json"
    m.write_json(target, d)
    assert json.loads(target.read_text()) == d
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left behind


def test_measure_file_refuses_what_is_not_a_label_map(tmp_path):
    from cosmos.errors import CosmosError

    img = save(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((6, 6, 6)), affine=np.eye(4))
    with pytest.raises(CosmosError, match="scan.nii.gz.*non-integer"):
        m.measure_file(img)
    many = save(tmp_path / "many.nii.gz", np.arange(216).reshape(6, 6, 6) % 7, affine=np.eye(4), label=True)
    with pytest.raises(CosmosError, match=r"many.nii.gz: not a VS/cochlea label map \(values \[3, 4, 5, 6\]"):
        m.measure_file(many)
    with pytest.raises(CosmosError, match="missing.nii.gz: label file not found"):
        m.measure_file(tmp_path / "missing.nii.gz")


def test_report_shows_the_final_predictions_measurements(tmp_path):
    from cosmos.evaluation.report_summary import _measurements_blocks

    preds = tmp_path / "round_1" / "predictions"
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:5, 2:5, 2:5] = 1
    m.write_json(preds / "crossmoda_9_measurements.json", m.measure(label, np.eye(4)))
    m.write_json(preds / "crossmoda_10_measurements.json", m.measure(label[::-1] * 0, np.eye(4)))
    rounds = [
        {"index": 0, "predictions_dir": str(tmp_path / "round_0")},
        {"index": 1, "predictions_dir": str(preds), "champion": True},
    ]
    blocks = _measurements_blocks(rounds)
    table = [b for b in blocks if b.kind == "table"][0]
    assert [r[0] for r in table.rows] == ["crossmoda_9", "crossmoda_10"]
    assert table.rows[0][1] == "27.0" and table.rows[1][1] == "0.0"
    assert _measurements_blocks([{"index": 0, "predictions_dir": str(tmp_path / "nothing")}]) == []


def test_predict_writes_measurements_beside_each_label(tmp_path, monkeypatch):
    """inference.predict's own write path (nnU-Net replaced by a fixed softmax): the JSON holds the post-processed
    label's volume, the components the rule removed and the softmax's confidence; the manifest lists it as ours."""
    import types

    from cosmos.config import load_config
    from cosmos.data.outputs import our_outputs
    from cosmos.segmentation import inference

    shape = (24, 20, 10)
    affine = np.diag([0.5, 0.6, 1.5, 1.0])
    rng = np.random.default_rng(5)
    save(tmp_path / "in" / "crossmoda_3_hrT2.nii.gz", rng.random(shape) + 1, affine=affine)
    raw = np.zeros(shape, np.uint8)
    raw[4:10, 4:10, 2:6] = 1
    raw[15:17, 15:17, 2:4] = 1  # a second VS blob the largest-component rule removes
    raw[20:22, 2:4, 7:9] = 2
    probs = rng.random((3, *shape)) + np.eye(3)[raw].transpose(3, 0, 1, 2) * 2
    probs /= probs.sum(axis=0)

    asked: list[bool] = []

    def fake_case(predictor, image, want_probabilities):
        asked.append(want_probabilities)
        return raw.transpose(2, 1, 0), probs.transpose(0, 3, 2, 1) if want_probabilities else None

    monkeypatch.setattr(inference, "_predict_case", fake_case)
    monkeypatch.setattr(inference, "load_folds", lambda dirs: types.SimpleNamespace(fold_dirs=list(dirs), digest="d"))
    monkeypatch.setattr(inference, "predictor_for", lambda *a, **k: None)
    cfg = load_config("tiny", overrides=["segmentation.vs_component=largest", "segmentation.cochlea_components=all"])
    written = inference.predict([tmp_path / "fold_0"], tmp_path / "in", tmp_path / "out", cfg, mirroring=False)
    assert [p.name for p in written] == ["crossmoda_3_Label.nii.gz"]
    assert asked == [True]  # the confidence needs the softmax
    got = json.loads((tmp_path / "out" / "crossmoda_3_measurements.json").read_text())
    kept = raw.copy()
    kept[15:17, 15:17, 2:4] = 0
    assert got["vs_volume_mm3"] == pytest.approx(int((kept == 1).sum()) * 0.5 * 0.6 * 1.5)
    assert got["components_removed"] == {"vs": 1, "cochlea": 0}
    assert got["vs_confidence_mean_max_prob"] == pytest.approx(float(probs.max(axis=0)[kept == 1].mean()))
    assert "crossmoda_3_measurements.json" in our_outputs(tmp_path / "out")
    # pseudo-labels (measurements=False): no JSON
    inference.predict(
        [tmp_path / "fold_0"], tmp_path / "in", tmp_path / "pseudo", cfg, mirroring=False, measurements=False
    )
    assert not list((tmp_path / "pseudo").glob("*_measurements.json"))
