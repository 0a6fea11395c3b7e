"""cosmos.selftraining.rounds: the round steps' own bookkeeping (names, the compiled-shape check,
the promotion gate, the gate's figure), fast and without training anything."""

from __future__ import annotations

import json

import pytest

from cosmos.config import load_config
from cosmos.errors import CosmosError
from cosmos.selftraining import rounds


def test_round_names_are_spelled_once():
    assert [rounds.round_name(k) for k in range(3)] == ["teacher", "student 1", "student 2"]
    assert rounds.round_run_name(0) == "round_0-teacher" and rounds.round_run_name(2) == "round_2-student_2"


def test_round_params_and_tags_carry_the_round_and_its_config():
    cfg = load_config("tiny")
    params = rounds.round_params(1, cfg)
    assert params["round"] == 1 and params["profile"] == "tiny"
    assert "segmentation.epochs" in params and "selftraining.min_component_voxels" in params
    # what the round's training does not depend on stays out: a reused run would show a stale value
    assert "selftraining.rounds" not in params and "segmentation.cochlea_components" not in params
    tags = rounds.round_tags(1, cfg)
    assert tags[rounds.TAG_ROUND_NAME] == "student 1" and tags[rounds.TAG_PROFILE] == "tiny"


def test_compiled_shape_check():
    cfg = load_config("tiny")  # folds [0]
    rounds.check_compiled_shape(cfg, compiled_rounds=cfg.selftraining.rounds, folds=[0.0])  # kfp.local floats
    with pytest.raises(CosmosError, match="recompile"):
        rounds.check_compiled_shape(cfg, compiled_rounds=3, folds=[0])
    with pytest.raises(CosmosError, match=r"folds=\[0\]"):
        rounds.check_compiled_shape(cfg, compiled_rounds=cfg.selftraining.rounds, folds=[0, 1, 2, 3, 4])


@pytest.mark.parametrize(
    "policy, final, figure, champion, moved",
    [
        ("always", False, ("val_dice_mean", 0.9), None, False),  # the paper: only the final round
        ("always", True, ("val_dice_mean", 0.1), ("val_dice_mean", 0.9), True),
        ("better", False, ("val_dice_mean", 0.5), None, True),  # first candidate
        ("better", False, ("val_dice_mean", 0.5), ("val_dice_mean", 0.6), False),  # worse: the alias stays
        ("better", True, ("val_dice_mean", 0.6), ("val_dice_mean", 0.6), True),  # ties promote the later round
        ("better", True, ("pseudo_label_stability", 0.9), ("val_dice_mean", 0.6), False),  # incomparable figures
        ("better", True, ("val_dice_mean", 0.2), ("pseudo_label_stability", 0.9), True),  # labels beat label-free
        ("better", False, None, None, False),
        ("better", True, None, None, True),  # nothing to compare, nothing promoted yet: the final round
    ],
)
def test_promotion_decision(policy, final, figure, champion, moved):
    got, why = rounds.promotion_decision(policy, final, figure, champion)
    assert got is moved and why


def test_gate_figure_prefers_validation_dice_then_label_stability(tmp_path):
    assert rounds.gate_figure(tmp_path, None) is None
    assert rounds.gate_figure(tmp_path, {"change": {"mean_dice": 0.8}}) == ("pseudo_label_stability", 0.8)
    (tmp_path / "metrics.json").write_text(json.dumps({"summary": {"mean": {"dice_mean": 0.7}}}))
    assert rounds.gate_figure(tmp_path, {"change": {"mean_dice": 0.8}}) == ("val_dice_mean", 0.7)


def test_metric_values_names():
    metrics = {
        "summary": {
            s: {"dice_mean": 0.5, "dice_std": 0.1, "assd_mean": 1.0, "assd_std": 0.2} for s in ("VS", "cochlea", "mean")
        },
        "n_cases": 3,
        "errors": {},
    }
    names = set(rounds.metric_values(metrics))
    assert {"val_dice_VS", "val_dice_cochlea_std", "val_assd_mean", "val_cases_scored"} <= names
    assert rounds.metric_values(None) == {}


def test_teacher_fold_picks_the_same_fold_else_the_first(tmp_path):
    for f in (0, 2):
        (tmp_path / f"fold_{f}").mkdir()
        (tmp_path / f"fold_{f}" / "checkpoint_final.pth").write_bytes(b"x")
    assert rounds.teacher_fold(tmp_path, 2) == tmp_path / "fold_2"
    assert rounds.teacher_fold(tmp_path, 1) == tmp_path / "fold_0"
    assert rounds.teacher_fold(tmp_path / "none", 1) is None and rounds.teacher_fold(None, 0) is None


def test_there_is_one_orchestration():
    """No second round loop in the library: the DAG is the only one (issue: one round engine)."""
    import re
    from pathlib import Path

    src = Path(rounds.__file__).resolve().parents[1]
    offenders = [str(p) for p in src.rglob("*.py") if re.search(r"def _run_round|class \w*Loop\b", p.read_text())]
    assert offenders == []


def _fake_round(tmp_path, k: int, dice: float):
    """A registered-looking round: one fold dir with a checkpoint, scores, predictions."""
    import torch

    fold = tmp_path / f"r{k}" / "fold_0"
    fold.mkdir(parents=True)
    torch.save({"network_weights": {}}, fold / "checkpoint_final.pth")
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        (fold / name).write_text("{}")
    scores = tmp_path / f"scores{k}"
    scores.mkdir()
    block = {"dice_mean": dice, "dice_std": 0.0, "assd_mean": 1.0, "assd_std": 0.0}
    (scores / "metrics.json").write_text(
        json.dumps({"summary": {s: block for s in ("VS", "cochlea", "mean")}, "cases": {}, "errors": {}, "n_cases": 1})
    )
    preds = tmp_path / f"preds{k}"
    preds.mkdir()
    return fold, scores, preds


@pytest.mark.parametrize("policy, champion_version", [("better", "1"), ("always", "2")])
def test_promotion_gate_holds_the_alias_when_a_round_gets_worse(tmp_path, policy, champion_version):
    from mlflow import MlflowClient

    cfg = load_config("tiny", overrides=[f"tracking.promote={policy}", "tracking.experiment=gate"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = None
    entries = []
    for k, dice in ((0, 0.6), (1, 0.5)):  # the student is worse than its teacher
        fold, scores, preds = _fake_round(tmp_path, k, dice)
        summary, models = tmp_path / f"summary{k}", tmp_path / f"models{k}"
        summary.mkdir()
        models.mkdir()
        res = rounds.register(
            k,
            cfg,
            fold_dirs=[fold],
            scores_dir=scores,
            predictions_dir=preds,
            run_dir=None,
            is_final=k == 1,
            summary_dir=summary,
            models_dir=models,
            tracking_uri=uri,
            previous_summary_dir=previous,
        )
        entries.append(res["entry"])
        previous = summary
    alias = MlflowClient(uri).get_model_version_by_alias("cosmos-segmenter", "champion")
    assert str(alias.version) == champion_version
    final = json.loads((previous / rounds.ROUNDS_FILE).read_text())
    assert [r["champion"] for r in final] == ([True, False] if policy == "better" else [False, True])
    why = final[1]["gate"]["why"]
    assert ("alias stays" in why) if policy == "better" else ("final round" in why)
    tags = MlflowClient(uri).get_model_version("cosmos-segmenter", "2").tags
    assert tags["gate_metric"] == "val_dice_mean" and float(tags["gate_score"]) == pytest.approx(0.5)
