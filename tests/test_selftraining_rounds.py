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
    "policy, final, passed, figure, champion, moved",
    [
        ("always", False, True, None, None, False),  # the paper: only the final round
        ("always", True, True, None, None, True),
        ("always", True, False, None, None, False),  # a final round that fails its checks is never promoted
        ("label_free", False, True, None, None, True),  # every passing round: the alias ends on the latest
        ("label_free", True, False, None, None, False),
        ("labels", False, True, ("selection_dice_mean", 0.5), None, True),  # first candidate
        ("labels", False, True, ("selection_dice_mean", 0.5), ("selection_dice_mean", 0.6), False),  # worse
        ("labels", True, True, ("selection_dice_mean", 0.6), ("selection_dice_mean", 0.6), True),  # ties: later
        ("labels", True, False, ("selection_dice_mean", 0.9), ("selection_dice_mean", 0.6), False),  # failed checks
        ("labels", True, True, None, None, False),  # no selection score, no promotion
    ],
)
def test_promotion_decision(policy, final, passed, figure, champion, moved):
    got, why = rounds.promotion_decision(policy, final, passed, figure, champion)
    assert got is moved and why


def test_gate_never_reads_the_reported_labels(tmp_path):
    """Only promote=labels has a figure, and it is the selection set's: metrics.json (what is reported) is
    never read, whatever it holds."""
    (tmp_path / "metrics.json").write_text(json.dumps({"summary": {"mean": {"dice_mean": 0.99}}}))
    for policy in ("always", "label_free", "labels"):
        assert rounds.gate_figure(policy, tmp_path) is None
    (tmp_path / rounds.SELECTION_METRICS).write_text(json.dumps({"summary": {"mean": {"dice_mean": 0.4}}}))
    assert rounds.gate_figure("labels", tmp_path) == ("selection_dice_mean", 0.4)
    assert rounds.gate_figure("label_free", tmp_path) is None


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


def _fake_round(tmp_path, k: int, dice: float, learned: bool = True):
    """A registered-looking round: one fold dir with a checkpoint and its manifest, scores, predictions."""
    import torch

    fold = tmp_path / f"r{k}" / "fold_0"
    fold.mkdir(parents=True)
    torch.save({"network_weights": {}}, fold / "checkpoint_final.pth")
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        (fold / name).write_text("{}")
    best = {"VS": 0.8, "cochlea": 0.7} if learned else {"VS": 0.0, "cochlea": 0.0}
    (fold / "cosmos_fold.json").write_text(
        json.dumps(
            {
                "fold": 0,
                "epochs": 2,
                "pseudo_dice_best": best,
                "train_iterations": 50,
                "cumulative_iterations": 50 * (k + 1),
            }
        )
    )
    scores = tmp_path / f"scores{k}"
    scores.mkdir()
    block = {"dice_mean": dice, "dice_std": 0.0, "assd_mean": 1.0, "assd_std": 0.0}
    (scores / "metrics.json").write_text(
        json.dumps({"summary": {s: block for s in ("VS", "cochlea", "mean")}, "cases": {}, "errors": {}, "n_cases": 1})
    )
    (scores / rounds.SELECTION_METRICS).write_text(json.dumps({"summary": {"mean": {"dice_mean": dice}}}))
    preds = tmp_path / f"preds{k}"
    preds.mkdir()
    return fold, scores, preds


def _register_rounds(tmp_path, cfg, plan):
    """Register rounds ``plan`` = [(dice, learned), ...] into a fresh store; returns (client, summary rows)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = None
    for k, (dice, learned) in enumerate(plan):
        fold, scores, preds = _fake_round(tmp_path, k, dice, learned)
        summary, models = tmp_path / f"summary{k}", tmp_path / f"models{k}"
        summary.mkdir()
        models.mkdir()
        rounds.register(
            k,
            cfg,
            fold_dirs=[fold],
            scores_dir=scores,
            predictions_dir=preds,
            run_dir=None,
            is_final=k == len(plan) - 1,
            summary_dir=summary,
            models_dir=models,
            tracking_uri=uri,
            previous_summary_dir=previous,
        )
        previous = summary
    return MlflowClient(uri), json.loads((previous / rounds.ROUNDS_FILE).read_text())


@pytest.mark.parametrize(
    "policy, champion_version",
    [("label_free", "2"), ("always", "2"), ("labels", "1")],
)
def test_promotion_gate_by_policy(tmp_path, policy, champion_version):
    """The student is worse on the selection set than its teacher: only promote=labels keeps the teacher."""
    over = [f"tracking.promote={policy}", "tracking.experiment=gate"]
    if policy == "labels":
        over.append("tracking.selection_cases=[crossmoda_1]")
    client, final = _register_rounds(tmp_path, load_config("tiny", overrides=over), [(0.6, True), (0.5, True)])
    alias = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert str(alias.version) == champion_version
    assert [r["champion"] for r in final] == [champion_version == "1", champion_version == "2"]
    assert all(r["checks_passed"] for r in final)
    assert final[1]["cumulative_iterations"] == 100
    tags = client.get_model_version("cosmos-segmenter", "2").tags
    assert tags[rounds.VERSION_TAG_CHECKS] == "passed"
    if policy == "labels":
        assert tags["gate_metric"] == "selection_dice_mean" and float(tags["gate_score"]) == pytest.approx(0.5)
    else:
        assert "gate_metric" not in tags


@pytest.mark.parametrize("policy", ["label_free", "always"])
def test_a_round_that_learned_nothing_is_registered_but_never_promoted(tmp_path, policy):
    from mlflow.exceptions import MlflowException

    cfg = load_config("tiny", overrides=[f"tracking.promote={policy}", "tracking.experiment=gate"])
    client, final = _register_rounds(tmp_path, cfg, [(0.0, False), (0.0, False)])
    assert [v.version for v in client.search_model_versions("name='cosmos-segmenter'")]  # kept for inspection
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert not any(r["champion"] for r in final)
    learning = [c for c in final[-1]["checks"] if c["name"] == "learning"][0]
    assert learning["passed"] is False and "fold 0" in learning["detail"]
    from cosmos.selftraining.verdict import run_verdict

    outcome = run_verdict(final)
    assert not outcome["passed"] and "FAIL" in outcome["line"] and "no champion" in outcome["line"]
    assert "learning" in outcome["line"]
