"""The run report (Markdown + HTML + PNGs) from a phantom-based fake run, and the plot helpers."""

import json
import re
import shutil

import numpy as np
import pytest
from scipy import ndimage

from cosmos.data import layout, nifti
from cosmos.evaluation import plots
from cosmos.evaluation.metrics import evaluate_folder, format_pm
from cosmos.evaluation.report import FIGURES, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _perturb(label: np.ndarray, iterations: int) -> np.ndarray:
    """VS dilated ``iterations`` times (0 = exact), cochlea kept: a prediction that improves per round."""
    out = label.copy()
    if iterations:
        vs = ndimage.binary_dilation(label == 1, iterations=iterations)
        out[vs & (label != 2)] = 1
    return out


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """Phantom data, a fake translator output and two fake rounds of pseudo-labels and predictions."""
    from cosmos.data.phantom import make_phantom

    work = tmp_path_factory.mktemp("run")
    root = make_phantom(work / "data", n_source=2, n_target=2, n_val=2, seed=1, preview=False, target_labels=True)
    ds = layout.discover(root)
    pseudo = work / "pseudo"
    for c in ds.source:
        v = nifti.load(c.image)
        nifti.save(pseudo / layout.image_name(c.case_id, "hrT2pseudo"), v.data.max() - v.data, like=v)
        shutil.copy(c.label, pseudo / layout.label_name(c.case_id))
    rounds = []
    for k in range(2):
        pl, pr = work / f"round{k}" / "pseudo_labels", work / f"round{k}" / "predictions"
        kept, dropped = [], []
        for c in ds.target:
            gt = nifti.load(root / "target_training_labels" / layout.label_name(c.case_id), label=True)
            lab = _perturb(gt.data, 1 - k)
            if k == 0 and c is ds.target[-1]:
                lab[lab == 2] = 0  # teacher missed the cochlea here -> dropped
            nifti.save(pl / layout.label_name(c.case_id), lab, like=gt, label=True)
            (kept if (lab == 2).any() and (lab == 1).any() else dropped).append(c.case_id)
        for c in ds.validation:
            gt = nifti.load(c.label, label=True)
            nifti.save(pr / layout.label_name(c.case_id), _perturb(gt.data, 2 - k), like=gt, label=True)
        rounds.append(
            {
                "index": k,
                "name": "teacher" if k == 0 else "student 1",
                "metrics": evaluate_folder(pr, root / layout.VALIDATION_LABELS_DIR),
                "kept": kept,
                "dropped": dropped,
                "pseudo_labels_dir": str(pl),
                "predictions_dir": str(pr),
                "model_version": str(k + 1),
            }
        )
    summary = {
        "title": "COSMOS test report",
        "profile": "tiny",
        "data_dir": str(root),
        "pseudo_dir": str(pseudo),
        "rounds": rounds,
        "extra_rows": [{"name": "ablation row", "metrics": rounds[0]["metrics"]}],
    }
    return json.loads(json.dumps(summary))  # the schema is JSON-serialisable


def test_report_writes_every_file_and_table_matches_evaluate_folder(fake_run, tmp_path):
    out = write_report(tmp_path / "report", fake_run)
    assert out == tmp_path / "report"
    for name in FIGURES.values():
        png = out / name
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000, name
    md = (out / "report.md").read_text()
    html_text = (out / "report.html").read_text()
    for rnd in fake_run["rounds"]:
        s = rnd["metrics"]["summary"]
        cells = [
            format_pm(s[st][f"{m}_mean"], s[st][f"{m}_std"])
            for m, st in (
                ("dice", "mean"),
                ("dice", "VS"),
                ("dice", "cochlea"),
                ("assd", "mean"),
                ("assd", "VS"),
                ("assd", "cochlea"),
            )
        ]
        row = next(line for line in md.splitlines() if line.startswith(f"| {rnd['name']} |"))
        assert row.split(" | ")[2:8] == cells
        for cell in cells:
            assert cell in html_text
    assert "| ablation row |" in md
    # the student improves on the teacher in the fake run, and the table says so
    t, s1 = (r["metrics"]["summary"]["mean"]["dice_mean"] for r in fake_run["rounds"])
    assert s1 > t
    # kept/dropped counts per round
    teacher = fake_run["rounds"][0]
    assert len(teacher["dropped"]) == 1
    assert f"| teacher | {len(teacher['kept'])} | 1 | 0 | - | {teacher['dropped'][0]} |" in md
    # Markdown links the PNGs; HTML embeds them (renders alone in the KFP UI)
    for name in FIGURES.values():
        assert f"]({name})" in md
    assert html_text.count("data:image/png;base64,") == len(FIGURES)


def test_report_degrades_gracefully(fake_run, tmp_path):
    one = dict(fake_run["rounds"][0], metrics=None, predictions_dir=None)
    summary = {
        "title": "no labels",
        "profile": "tiny",
        "data_dir": fake_run["data_dir"],
        "pseudo_dir": None,
        "rounds": [one],
    }
    out = write_report(tmp_path / "r1", summary)
    md = (out / "report.md").read_text()
    assert "no validation labels" in md.lower()
    assert "No translator output given" in md
    assert not (out / FIGURES["metrics"]).exists() and not (out / FIGURES["translation"]).exists()
    assert (out / FIGURES["pseudo_labels"]).exists()  # pseudo-labels need no validation labels
    assert (out / "report.html").exists()

    out = write_report(tmp_path / "r2", {"title": "empty", "rounds": []})
    md = (out / "report.md").read_text()
    assert "No segmentation rounds" in md and re.search(r"!\[", md) is None

    # a re-run without the inputs must not leave a stale figure behind
    write_report(tmp_path / "r3", fake_run, max_cases=1)
    assert (tmp_path / "r3" / FIGURES["metrics"]).exists()
    write_report(tmp_path / "r3", summary, max_cases=1)
    assert not (tmp_path / "r3" / FIGURES["metrics"]).exists()


def test_report_rejects_a_malformed_summary(tmp_path):
    from cosmos.errors import CosmosError

    with pytest.raises(CosmosError, match="rounds"):
        write_report(tmp_path, {"rounds": "teacher"})


# --------------------------------------------------------------------------- plot helpers
def test_slice_with_most_foreground_uses_the_third_axis():
    lab = np.zeros((6, 7, 9), np.uint8)
    lab[1:3, 1:3, 2] = 1  # 4 voxels on slice 2
    lab[0:3, 0:3, 5] = 2  # 9 voxels on slice 5
    assert plots.slice_with_most_foreground(lab) == 5
    assert plots.slice_with_most_foreground(lab, labels=[1]) == 2
    assert plots.slice_with_most_foreground(np.zeros((4, 4, 8))) == 4  # empty -> middle


def test_canonical_gives_one_view_for_flipped_and_permuted_files():
    rng = np.random.default_rng(0)
    ras = rng.random((5, 6, 7))
    spacing = (0.5, 0.6, 1.5)
    ras_affine = np.diag(spacing + (1.0,))
    flipped = ras[::-1, :, ::-1]  # LAI storage of the same volume
    flip_affine = np.diag((-0.5, 0.6, -1.5, 1.0))
    permuted = np.transpose(ras, (2, 0, 1))  # stored as S, R, A
    perm_affine = np.zeros((4, 4))
    perm_affine[:3, :3] = np.array([[0, 0.5, 0], [0, 0, 0.6], [1.5, 0, 0]])
    perm_affine[3, 3] = 1
    for data, affine in ((ras, ras_affine), (flipped, flip_affine), (permuted, perm_affine)):
        out, sp = plots.canonical(data, affine)
        np.testing.assert_array_equal(out, ras)
        assert sp == pytest.approx(spacing)


def test_display_plane_orientation_and_overlay_png(tmp_path):
    plane = np.zeros((4, 3))  # array order: (x = right, y = anterior)
    plane[3, 2] = 1  # most right, most anterior voxel
    shown = plots.display_plane(plane)
    assert shown.shape == (3, 4) and shown[0, 3] == 1  # top row (anterior), right column (subject's right)
    label = np.zeros((40, 30), np.uint8)
    label[10:20, 5:15] = 1
    label[25:28, 20:23] = 2
    image = np.random.default_rng(1).random((40, 30))
    path = plots.overlay_png(image, label, tmp_path / "sub" / "o.png", title="case", aspect=0.5)
    assert path.read_bytes()[:8] == PNG_MAGIC
    box = plots.foreground_box([label], label.shape, spacing=(1.0, 1.0), margin_mm=2, min_size_mm=5)
    assert box[0].start <= 10 and box[0].stop >= 28 and box[1].start <= 5 and box[1].stop >= 23
    assert plots.foreground_box([np.zeros_like(label)], label.shape) is None


def test_metrics_figure_with_a_missed_structure_and_labels_only_summary(tmp_path):
    """A 350 mm ASSD (empty prediction) and a report built from metrics alone (no data on disk)."""
    from cosmos.evaluation.metrics import summarize

    good = {"VS": {"dice": 0.9, "assd": 0.4}, "cochlea": {"dice": 0.8, "assd": 0.2}}
    missed = {"VS": {"dice": 0.0, "assd": 350.0}, "cochlea": {"dice": 0.7, "assd": 0.3}}
    rounds = []
    per_round = ({"crossmoda_1": missed, "crossmoda_2": good}, {"crossmoda_1": good, "crossmoda_2": good})
    for k, cases in enumerate(per_round):
        metrics = {"cases": cases, "summary": summarize(cases), "errors": {}, "n_cases": 2}
        rounds.append({"index": k, "metrics": metrics})
    out = write_report(tmp_path, {"title": "t", "rounds": rounds})
    assert (out / FIGURES["metrics"]).read_bytes()[:8] == PNG_MAGIC
    md = (out / "report.md").read_text()
    assert "| teacher | 2 | 0.600 ± 0.250 | 0.450 ± 0.450 |" in md  # names default from the index
    assert "| student 1 | 2 |" in md and "175.200 ± 174.800" in md
