"""Dice/ASSD equal medpy's (the crossMoDA scorer) to 1e-6; empty conventions; folder scoring; CLI."""

import json

import nibabel as nib
import numpy as np
import pytest
from medpy.metric.binary import assd as medpy_assd
from medpy.metric.binary import dc as medpy_dc
from scipy import ndimage

from cosmos.cli import main
from cosmos.data import layout, nifti
from cosmos.evaluation.metrics import (
    EMPTY_ASSD_MM,
    assd,
    dice,
    evaluate_folder,
    format_summary,
    score_structures,
    voxel_spacing,
)


def _medpy_scores(pred, gt, spacing):
    out = {}
    for name, value in (("VS", 1), ("cochlea", 2)):
        p, g = pred == value, gt == value
        out[name] = {"dice": medpy_dc(p, g), "assd": medpy_assd(p, g, voxelspacing=spacing, connectivity=1)}
    return out


def _blob(shape, centre, radii, rng, roughness=0.3):
    """A bumpy ellipsoid (random surface) so surfaces are not trivially symmetric."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    r = sum(((g - c) / rr) ** 2 for g, c, rr in zip(grid, centre, radii))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * roughness * 4
    return r + noise <= 1.0


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_match_medpy(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(12, 40, size=3))
    spacing = tuple(float(v) for v in rng.uniform(0.3, 2.5, size=3))  # anisotropic
    density = rng.uniform(0.02, 0.4)
    pred = rng.random(shape) < density
    gt = rng.random(shape) < density
    assert abs(dice(pred, gt) - medpy_dc(pred, gt)) < 1e-6
    assert abs(assd(pred, gt, spacing) - medpy_assd(pred, gt, voxelspacing=spacing, connectivity=1)) < 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_small_distant_and_border_structures_match_medpy(seed):
    """Small structures far apart and touching the volume edge: where a wrong crop would show."""
    rng = np.random.default_rng(100 + seed)
    shape = (60, 50, 24)
    spacing = (0.41, 0.41, 1.5) if seed % 2 else (1.0, 0.5, 2.0)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    gt[_blob(shape, (20, 20, 10), (6, 5, 3), rng)] = 1
    pred[_blob(shape, (22, 19, 11), (6, 6, 3), rng)] = 1
    # cochlea-like: tiny, one touching the array border in the prediction, a far false positive too
    gt[_blob(shape, (45, 40, 0), (2, 2, 1.5), rng, 0.1)] = 2
    pred[_blob(shape, (46, 40, 1), (2, 2, 1.5), rng, 0.1)] = 2
    pred[57:60, 2:4, 20:24] = 2
    assert (gt == 2).any() and (pred == 1).any()
    ours = score_structures(pred, gt, spacing)
    ref = _medpy_scores(pred, gt, spacing)
    for s in ("VS", "cochlea"):
        for m in ("dice", "assd"):
            assert ours[s][m] == pytest.approx(ref[s][m], abs=1e-6), (s, m)


def test_empty_conventions():
    shape = (10, 10, 10)
    empty = np.zeros(shape, bool)
    some = np.zeros(shape, bool)
    some[3:6, 3:6, 3:6] = True
    assert (dice(empty, some), assd(empty, some, (1, 1, 1))) == (0.0, EMPTY_ASSD_MM)  # missed structure
    assert (dice(some, empty), assd(some, empty, (1, 1, 1))) == (0.0, EMPTY_ASSD_MM)  # false structure
    assert (dice(empty, empty), assd(empty, empty, (1, 1, 1))) == (1.0, 0.0)  # nothing there, nothing found
    assert EMPTY_ASSD_MM == 350.0
    labels = np.zeros(shape, np.uint8)
    labels[some] = 1
    scores = score_structures(np.zeros(shape, np.uint8), labels, (0.5, 0.5, 1.0))
    assert scores["VS"] == {"dice": 0.0, "assd": 350.0}
    assert scores["cochlea"] == {"dice": 1.0, "assd": 0.0}
    both_empty = score_structures(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8))
    assert both_empty == {"VS": {"dice": 1.0, "assd": 0.0}, "cochlea": {"dice": 1.0, "assd": 0.0}}


def test_spacing_is_true_voxel_size_on_oblique_and_permuted_affines():
    zooms = np.array([0.5, 0.7, 1.5])
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(zooms)
    assert voxel_spacing(affine) == pytest.approx(tuple(zooms))
    assert not np.allclose(np.abs(np.diag(affine)[:3]), zooms)  # the official shortcut would be wrong here
    permuted = np.eye(4)
    permuted[:3, :3] = np.array([[0, 0, -1.5], [0.5, 0, 0], [0, 0.7, 0]])
    assert voxel_spacing(permuted) == pytest.approx((0.5, 0.7, 1.5))
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), affine)
    assert voxel_spacing(affine) == pytest.approx(img.header.get_zooms())


# --------------------------------------------------------------------------- folders (phantom)
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from cosmos.data.phantom import make_phantom

    return make_phantom(tmp_path_factory.mktemp("phantom"), n_source=1, n_target=1, n_val=3, seed=3, preview=False)


def _perturbed(label: np.ndarray, case_index: int) -> np.ndarray:
    """Prediction = ground truth with a one-voxel VS dilation and a shifted cochlea (both structures change)."""
    vs = ndimage.binary_dilation(label == 1, iterations=1 + case_index % 2)
    cochlea = np.roll(label == 2, shift=1, axis=case_index % 3)
    out = np.zeros_like(label)
    out[cochlea] = 2
    out[vs] = 1
    return out


def _write_predictions(phantom, pred_dir):
    ds = layout.discover(phantom)
    for i, case in enumerate(ds.validation):
        gt = nifti.load(case.label, label=True)
        nifti.save(pred_dir / layout.label_name(case.case_id), _perturbed(gt.data, i), like=gt, label=True)
    return ds


def test_phantom_folder_matches_medpy_with_header_zooms(phantom, tmp_path):
    ds = _write_predictions(phantom, tmp_path / "pred")
    result = evaluate_folder(tmp_path / "pred", phantom / layout.VALIDATION_LABELS_DIR)
    assert result["errors"] == {} and result["n_cases"] == len(ds.validation) == 3
    for case in ds.validation:
        gt_img = nib.load(str(case.label))
        gt = np.asarray(gt_img.dataobj)
        pred = np.asarray(nib.load(str(tmp_path / "pred" / layout.label_name(case.case_id))).dataobj)
        ref = _medpy_scores(pred, gt, gt_img.header.get_zooms()[:3])
        for s in ("VS", "cochlea"):
            assert 0 < ref[s]["dice"] < 1
            for m in ("dice", "assd"):
                assert result["cases"][case.case_id][s][m] == pytest.approx(ref[s][m], abs=1e-6)
    # summary: mean/std over cases; "mean" = per-case average of the two structures first
    cases = result["cases"].values()
    vs_dice = [c["VS"]["dice"] for c in cases]
    per_case_mean_assd = [(c["VS"]["assd"] + c["cochlea"]["assd"]) / 2 for c in cases]
    assert result["summary"]["VS"]["dice_mean"] == pytest.approx(np.mean(vs_dice))
    assert result["summary"]["VS"]["dice_std"] == pytest.approx(np.std(vs_dice))
    assert result["summary"]["mean"]["assd_mean"] == pytest.approx(np.mean(per_case_mean_assd))
    assert result["summary"]["mean"]["assd_std"] == pytest.approx(np.std(per_case_mean_assd))
    json.dumps(result)  # JSON-serialisable


def test_folder_errors_do_not_stop_other_cases(phantom, tmp_path):
    ds = _write_predictions(phantom, tmp_path / "pred")
    ids = [c.case_id for c in ds.validation]
    # case 0: bare name crossmoda_{k}.nii.gz is accepted; case 1: missing; case 2: on another grid
    (tmp_path / "pred" / layout.label_name(ids[0])).rename(tmp_path / "pred" / f"{ids[0]}.nii.gz")
    (tmp_path / "pred" / layout.label_name(ids[1])).unlink()
    gt2 = nifti.load(ds.validation[2].label, label=True)
    shifted = gt2.affine.copy()
    shifted[:3, 3] += 2.0
    nifti.save(tmp_path / "pred" / layout.label_name(ids[2]), gt2.data, affine=shifted, label=True)
    result = evaluate_folder(tmp_path / "pred", phantom)  # a crossMoDA root works as the label dir
    assert list(result["cases"]) == [ids[0]]
    assert set(result["errors"]) == {ids[1], ids[2]}
    assert "no prediction" in result["errors"][ids[1]]
    assert "grid" in result["errors"][ids[2]] and "affine" in result["errors"][ids[2]]
    assert result["summary"]["VS"]["dice_mean"] == result["cases"][ids[0]]["VS"]["dice"]
    text = format_summary(result)
    assert "2 case(s) not scored" in text and ids[1] in text


def test_unreadable_prediction_is_a_case_error(phantom, tmp_path):
    ds = _write_predictions(phantom, tmp_path / "pred")
    (tmp_path / "pred" / layout.label_name(ds.validation[0].case_id)).write_bytes(b"not a nifti")
    result = evaluate_folder(tmp_path / "pred", phantom / layout.VALIDATION_LABELS_DIR)
    assert set(result["errors"]) == {ds.validation[0].case_id}
    assert result["n_cases"] == 2


# --------------------------------------------------------------------------- CLI
def test_cli_prints_table_writes_json_and_sets_exit_codes(phantom, tmp_path, capsys):
    ds = _write_predictions(phantom, tmp_path / "pred")
    labels = phantom / layout.VALIDATION_LABELS_DIR
    out_json = tmp_path / "out" / "metrics.json"
    assert main(["evaluate", str(tmp_path / "pred"), str(labels), "--json", str(out_json), "--per-case"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert set(data) >= {"cases", "summary", "errors"}
    assert set(data["summary"]) == {"VS", "cochlea", "mean"}
    assert set(data["summary"]["VS"]) == {"dice_mean", "dice_std", "assd_mean", "assd_std"}
    s = data["summary"]["mean"]
    assert f"{s['dice_mean']:.3f} ± {s['dice_std']:.3f}" in printed
    assert "Dice VS" in printed and ds.validation[0].case_id in printed

    (tmp_path / "pred" / layout.label_name(ds.validation[1].case_id)).unlink()
    out_json.unlink()
    assert main(["evaluate", str(tmp_path / "pred"), str(labels), "--json", str(out_json)]) == 1
    data = json.loads(out_json.read_text())  # still written
    assert list(data["errors"]) == [ds.validation[1].case_id] and data["n_cases"] == 2

    assert main(["evaluate", str(tmp_path / "nowhere"), str(labels)]) == 2
    assert "prediction directory not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(tmp_path / "pred"), str(empty)]) == 2
    assert "no crossmoda_*_Label.nii.gz" in capsys.readouterr().err
