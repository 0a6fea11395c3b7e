"""What a run knows without target labels: prediction plausibility, the per-round checks, the run's
verdict, the trainer that trains on when it is not learning, and the honest-protocol settings."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from cosmos.config import ConfigError, load_config
from cosmos.data import nifti
from cosmos.selftraining import plausibility, verdict

AFFINE = np.diag([0.5, 0.5, 1.0, 1.0])  # RAS, x grows with the first index


def _label(shape=(80, 40, 20), vs=True, cochleae=((15, 20, 10), (65, 20, 10)), extra_cochlea=None, vs_radius=4):
    seg = np.zeros(shape, np.uint8)
    if vs:
        seg[36 - vs_radius : 36 + vs_radius, 18 - vs_radius : 18 + vs_radius, 8:12] = 1
    for c in cochleae:
        seg[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 1 : c[2] + 1] = 2
    if extra_cochlea is not None:
        c = extra_cochlea
        seg[c[0] - 1 : c[0] + 1, c[1] - 1 : c[1] + 1, c[2] : c[2] + 1] = 2
    return nifti.Volume(seg, AFFINE, None)  # type: ignore[arg-type]


RANGES = {"VS": [100.0, 200.0], "cochlea": [20.0, 60.0]}
MIDLINE = 0.5 * 39.5  # world x of the centre of an 80-voxel axis at 0.5 mm


def test_a_plausible_head():
    row = plausibility.case_plausibility(_label(), MIDLINE, RANGES, 4.0)
    assert row["problems"] == [] and row["vs_components"] == 1 and row["cochlea_per_side"] == [1, 1]
    assert row["vs_mm3"] == pytest.approx(8 * 8 * 4 * 0.25)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(vs=False), "no VS"),
        (dict(cochleae=()), "no cochlea"),
        (dict(extra_cochlea=(8, 5, 3)), "2 cochlea components on one side"),
        (dict(vs_radius=16), "VS"),  # the bright CSF marked as tumour: far above the source range
    ],
)
def test_implausible_predictions_are_named(kwargs, problem):
    row = plausibility.case_plausibility(_label(**kwargs), MIDLINE, RANGES, 4.0)
    assert any(p.startswith(problem) for p in row["problems"]), row["problems"]


def test_source_volume_range_and_folder_assessment(tmp_path):
    from cosmos.data.phantom import make_phantom

    data = make_phantom(tmp_path / "d", n_source=2, n_target=1, n_val=1, seed=0, preview=False)
    ranges = plausibility.source_volume_range(data)
    assert set(ranges) == {"VS", "cochlea"} and 0 < ranges["VS"][0] <= ranges["VS"][1]
    # the phantom's own validation labels, judged as if predicted: plausible
    pred = tmp_path / "pred"
    pred.mkdir()
    for lab in (data / "target_validation_labels").glob("*_Label.nii.gz"):
        (pred / lab.name).write_bytes(lab.read_bytes())
    result = plausibility.assess_folder(pred, data / "target_validation", data, 4.0)
    assert result["n_cases"] == 1 and result["n_plausible"] == 1
    assert plausibility.read(pred) == json.loads((pred / plausibility.PLAUSIBILITY_FILE).read_text())
    # an empty prediction is not
    lab = next(pred.glob("*_Label.nii.gz"))
    vol = nifti.load(lab, label=True)
    nifti.save(lab, np.zeros_like(vol.data), like=vol, label=True)
    assert plausibility.assess_folder(pred, data / "target_validation", data, 4.0)["n_plausible"] == 0


def test_checks_of_a_round():
    fid_ok = {
        "w1": 0.1,
        "w1_untranslated": 0.4,
        **{k: 1.0 for k in ("vs_darker_than_fluid", "cochlea_bright", "cochlea_in_dark_bone", "vs_above_median")},
    }
    assert verdict.translation_check(fid_ok, None, 0.5).passed is True
    bad = verdict.translation_check(dict(fid_ok, vs_above_median=0.0), {"attempts": [{}, {}, {}]}, 0.5)
    assert bad.passed is False and "3 translator attempt(s)" in bad.detail
    assert verdict.translation_check(None, None, 0.5).passed is None

    learned = {"fold": 0, "epochs": 8, "pseudo_dice_best": {"VS": 0.8, "cochlea": 0.6}}
    dead = {"fold": 1, "epochs": 16, "pseudo_dice_best": {"VS": 0.0, "cochlea": 0.3}}
    assert verdict.learning_check([learned], 0.05).passed is True
    fail = verdict.learning_check([learned, dead], 0.05)
    assert fail.passed is False and "fold 1" in fail.detail and "VS 0.000" in fail.detail
    assert verdict.learning_check([dead], 0.0).passed is None

    assert verdict.pseudo_label_check({"kept": [], "dropped": ["a", "b"]}, 0.25).passed is False
    assert verdict.pseudo_label_check({"kept": ["a"], "dropped": ["b", "c"]}, 0.25).passed is True
    assert verdict.pseudo_label_check(None, 0.25).passed is None
    student = {"kept": ["a", "b"], "dropped": [], "change": {"mean_dice": 0.3}}
    contradicts = verdict.pseudo_label_check(student, 0.25, 0.5)
    assert contradicts.passed is False and "agreement" in contradicts.detail
    assert verdict.pseudo_label_check(dict(student, change={"mean_dice": 0.9}), 0.25, 0.5).passed is True
    replay = verdict.pseudo_label_check({"kept": ["a", "b"], "dropped": []}, 0.25, 0.5, replayed=True)
    assert replay.passed is False and "replay" in replay.detail


def test_a_student_that_replays_its_teacher_fails_its_checks(tmp_path):
    """The teacher's filter kept nothing, so the student trained on pseudo-hrT2 alone: whatever its own
    pseudo-labels and predictions look like, it is not self-training and is never promoted."""
    from cosmos.config import load_config

    fold = tmp_path / "fold_0"
    fold.mkdir()
    best = {"VS": 0.6, "cochlea": 0.5}
    manifest = {"fold": 0, "round_index": 1, "num_real": 0, "epochs": 8, "pseudo_dice_best": best}
    (fold / "cosmos_fold.json").write_text(json.dumps(manifest))
    checks = load_config("tiny").checks
    plausible = {"n_cases": 4, "n_plausible": 4, "cases": {}}
    got = verdict.round_checks(
        checks,
        fold_dirs=[fold],
        filter_summary={"kept": ["a", "b"], "dropped": []},
        validation_plausibility=plausible,
        pseudo_plausibility=None,
    )
    assert not verdict.passed(got) and [c.name for c in got if c.passed is False] == ["pseudo-labels"]
    (fold / "cosmos_fold.json").write_text(json.dumps(dict(manifest, num_real=8)))
    again = verdict.round_checks(
        checks,
        fold_dirs=[fold],
        filter_summary={"kept": ["a", "b"], "dropped": []},
        validation_plausibility=plausible,
        pseudo_plausibility=None,
    )
    assert verdict.passed(again)
    off = checks.__class__(**{**checks.__dict__, "min_kept_fraction": 0.0})  # 0 switches it off, as the kept fraction
    (fold / "cosmos_fold.json").write_text(json.dumps(manifest))
    assert verdict.passed(
        verdict.round_checks(
            off,
            fold_dirs=[fold],
            filter_summary={"kept": ["a", "b"], "dropped": []},
            validation_plausibility=plausible,
            pseudo_plausibility=None,
        )
    )

    cases = {
        "a": {"problems": ["no VS"]},
        "b": {"problems": []},
        "c": {"problems": ["no VS", "cochlea 11 mm3 outside 20-240"]},
        "d": {"problems": ["cochlea 9 mm3 outside 20-240", "2 VS components"]},
    }
    check = verdict.prediction_check({"n_cases": 4, "n_plausible": 1, "cases": cases}, 0.5, "validation predictions")
    assert check.passed is False and "1 of 4" in check.detail and "no VS in 2" in check.detail
    assert "cochlea volume out of range in 2" in check.detail


def test_the_run_verdict_is_the_final_rounds():
    ok = [
        {"name": "translation", "passed": True, "detail": "fine"},
        {"name": "learning", "passed": None, "detail": "-"},
    ]
    bad = [{"name": "learning", "passed": False, "detail": "fold 0: best pseudo-Dice VS 0.000"}]
    teacher = {"index": 0, "name": "teacher", "checks": ok, "champion": True}
    student = {"index": 1, "name": "student 1", "checks": bad, "champion": False}
    failed = verdict.run_verdict([teacher, student])
    assert not failed["passed"] and failed["line"].startswith("verdict: FAIL")
    assert "learning: fold 0" in failed["line"] and "champion stays on round 0" in failed["line"]
    passed = verdict.run_verdict([dict(student, checks=ok, champion=True)])
    assert passed["passed"] and passed["line"].startswith("verdict: PASS") and "champion: round 1" in passed["line"]
    assert not verdict.run_verdict([])["passed"]


def _fake_trainer(history, planned=4, current=4, factor=2.0, min_dice=0.05):
    """The attributes extend_if_not_learning reads, without building a network."""
    from cosmos.segmentation.trainer import nnUNetTrainerCosmosBudget as T

    t = types.SimpleNamespace(
        min_pseudo_dice=min_dice,
        planned_epochs=planned,
        num_epochs=planned,
        current_epoch=current,
        max_epochs_if_not_learning=int(planned * factor),
        fold=0,
        lr_scheduler=types.SimpleNamespace(max_steps=planned),
        logger=types.SimpleNamespace(get_value=lambda key, step: history),
        dataset_json={"labels": {"background": 0, "VS": 1, "cochlea": 2}},
        label_manager=types.SimpleNamespace(foreground_labels=[1, 2]),
        print_to_log_file=lambda *a: None,
    )
    for name in ("best_pseudo_dice", "labels_not_learned", "extend_if_not_learning", "_foreground_names"):
        setattr(t, name, types.MethodType(getattr(T, name), t))
    return t


def test_a_fold_that_is_not_learning_trains_on_within_its_cap():
    stuck = _fake_trainer([[0.0, 0.0]] * 4)
    assert stuck.labels_not_learned() == ["VS", "cochlea"]
    assert stuck.extend_if_not_learning() and stuck.num_epochs == 6 and stuck.lr_scheduler.max_steps == 6
    stuck.current_epoch = 6
    assert stuck.extend_if_not_learning() and stuck.num_epochs == 8  # the cap: 2 x 4 planned epochs
    stuck.current_epoch = 8
    assert not stuck.extend_if_not_learning() and stuck.num_epochs == 8

    learning = _fake_trainer([[0.0, 0.0], [0.3, 0.1]])
    assert learning.labels_not_learned() == [] and not learning.extend_if_not_learning()
    half = _fake_trainer([[0.4, 0.0]] * 4)  # the VS learned, the cochlea not: still extended
    assert half.labels_not_learned() == ["cochlea"] and half.extend_if_not_learning()
    off = _fake_trainer([[0.0, 0.0]] * 4, factor=1.0)
    assert not off.extend_if_not_learning()
    resumed = _fake_trainer([[0.0, 0.0]] * 6, current=6)  # resumed after an extension: planned bound re-read
    assert resumed.extend_if_not_learning() and resumed.num_epochs == 8


def test_protocol_settings():
    paper, tiny = load_config("paper"), load_config("tiny")
    assert paper.tracking.promote == "always" and paper.selftraining.carry_over is False
    assert tiny.tracking.promote == "label_free" and load_config("small").tracking.promote == "label_free"
    with pytest.raises(ConfigError, match="scored on"):
        load_config("tiny", overrides=["tracking.promote=better"])
    with pytest.raises(ConfigError, match="selection_cases"):
        load_config("tiny", overrides=["tracking.promote=labels"])
    cfg = load_config("tiny", overrides=["tracking.promote=labels", "tracking.selection_cases=[crossmoda_211]"])
    assert cfg.tracking.selection_cases == ["crossmoda_211"]
    for bad in ("checks.min_plausible=1.5", "checks.volume_range_factor=0.5", "translator.max_attempts=0",
                "translator.retry=[{no_such_key: 1}]", "segmentation.not_learning_max_factor=0.5"):  # fmt: skip
        with pytest.raises(ConfigError):
            load_config("tiny", overrides=[bad])


def test_the_oracle_row_gets_the_final_students_budget():
    import yaml

    from cosmos.ablation import row_overrides

    assert yaml.safe_load(row_overrides("oracle", "exp", 3))["segmentation"] == {"epochs_multiplier": 4}
    assert "segmentation" not in yaml.safe_load(row_overrides("cosmos", "exp", 3))  # cosmos run's exact rounds
    from cosmos.segmentation.trainer import TrainerBudget

    seg = load_config("small", overrides=["segmentation.epochs_multiplier=4"]).segmentation
    assert TrainerBudget.from_config(seg).epochs == 4 * seg.epochs


def test_the_closing_summary_states_the_verdict_and_the_exit_code(tmp_path):
    from pipelines.local_run import LocalRunResult, describe, exit_code

    def result(summary: dict) -> LocalRunResult:
        (tmp_path / "summary.json").write_text(json.dumps(summary))
        (tmp_path / "predictions").mkdir(exist_ok=True)
        return LocalRunResult(
            out_dir=tmp_path,
            predictions_dir=tmp_path / "predictions",
            report_dir=tmp_path / "report",
            metrics_file=None,
            summary_file=tmp_path / "summary.json",
            tracking_uri="sqlite:///x.db",
            wall_seconds=1.0,
        )

    failed = result(
        {"final_round": 1, "champion_round": None, "verdict": {"passed": False, "line": "verdict: FAIL - x"}}
    )
    text = describe(failed)
    assert "champion    : none promoted" in text and text.rstrip().endswith("verdict: FAIL - x")
    assert exit_code(failed) == verdict.EXIT_CHECKS_FAILED == 3
    other = result(
        {
            "final_round": 2,
            "champion_round": 1,
            "champion_mean_dice": 0.9,
            "verdict": {"passed": True, "line": "verdict: PASS"},
        }
    )
    text = describe(other)
    assert "round 1 (mean Dice 0.900) -- NOT the reported round" in text and exit_code(other) == 0
