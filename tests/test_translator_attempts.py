"""The translator stage acts on its own label-free check: a candidate that fails it triggers another
attempt (new seed, the retry settings), the stage keeps the first that passes or else the best, and says
which checks failed. The training itself is replaced by a stub that writes each candidate's figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosmos.config import load_config
from cosmos.translation import attempts, fidelity
from cosmos.translation.training import FIDELITY_JSON, TranslatorResult

# An hrT2-like translation and the contrast-inverted one (bone bright, tumour black): its histogram may match,
# two anatomy signs fail.
GOOD = {
    "w1": 0.10,
    "w1_untranslated": 0.40,
    "vs_darker_than_fluid": 1.0,
    "cochlea_bright": 1.0,
    "cochlea_in_dark_bone": 1.0,
    "vs_above_median": 1.0,
    "vs_fluid_contrast": 0.5,
    "n_source": 4,
    "n_target": 4,
}
INVERTED = dict(GOOD, cochlea_in_dark_bone=0.0, vs_above_median=0.0)


def test_failed_checks_name_the_inverted_contrast():
    assert fidelity.failed_checks(GOOD, 0.5) == []
    # the default gate: the anatomy checks and the histogram; the contrast signs are shown, not gating
    assert fidelity.failed_checks(dict(GOOD, vs_darker_than_fluid=0.0), 0.5, fidelity.GATE_DEFAULT) == []
    assert len(fidelity.failed_checks(INVERTED, 0.5, fidelity.GATE_DEFAULT)) == 2
    failed = fidelity.failed_checks(INVERTED, 0.5)
    assert len(failed) == 2
    assert any("bone around it in 0%" in f for f in failed) and any("VS above the head's median" in f for f in failed)
    assert fidelity.failed_checks(INVERTED, 0.0) == []  # 0 switches the check off
    assert fidelity.failed_checks(None, 0.5) == []
    histogram = fidelity.failed_checks(dict(GOOD, w1=0.5), 0.5)
    assert histogram and "intensity distance" in histogram[0]
    missing = fidelity.failed_checks(dict(GOOD, vs_above_median=None), 0.5)
    assert missing and "n/a" in missing[0]  # no VS in the sample: cannot be shown to hold


class Stub:
    figures: list[dict]
    calls: list[dict]


@pytest.fixture
def stub(monkeypatch):
    """Replace the GAN training: candidate k writes ``figures[k-1]`` as its fidelity.json."""
    holder = Stub()
    calls: list[dict] = []

    def fake_train(data_dir, out_dir, cfg, tracking_uri=None, register=True):
        out = Path(out_dir)
        (out / "model").mkdir(parents=True, exist_ok=True)
        calls.append(
            {
                "dir": out,
                "seed": cfg.seed,
                "identity": cfg.translator.lambda_identity,
                "levels": cfg.translator.levels,
                "register": register,
            }
        )
        figures = holder.figures[len(calls) - 1]
        (out / FIDELITY_JSON).write_text(json.dumps({"epochs": 1, "selected_epoch": 1, **figures}))
        return TranslatorResult(out / "model", None, None, 1, [], None)

    monkeypatch.setattr(attempts, "train_translator", fake_train)
    holder.calls = calls
    return holder


def test_a_failing_translator_triggers_a_retry_with_the_retry_settings(stub, tmp_path):
    stub.figures = [INVERTED, GOOD, GOOD]
    cfg = load_config("tiny")
    res = attempts.train_checked(tmp_path / "data", tmp_path / "out", cfg, register=False)
    assert len(stub.calls) == 2  # the second passed: no third attempt
    first, second = stub.calls
    assert first["dir"] == tmp_path / "out" and second["dir"] == tmp_path / "out" / "attempt_2"
    assert second["seed"] == cfg.seed + 1 and second["identity"] == cfg.translator.retry[0]["lambda_identity"]
    assert res.model_dir == tmp_path / "out" / "attempt_2" / "model"
    summary = json.loads((tmp_path / "out" / "attempts.json").read_text())
    assert summary["passed"] and summary["kept_attempt"] == 2
    assert [a["passed"] for a in summary["attempts"]] == [False, True]
    assert summary["attempts"][0]["failed_checks"] and summary["attempts"][1]["kept"]
    assert json.loads((res.model_dir / "attempts.json").read_text()) == summary  # travels with the model


def test_no_passing_candidate_keeps_the_best_and_says_which_checks_failed(stub, tmp_path, caplog):
    worse = dict(INVERTED, cochlea_bright=0.0)
    stub.figures = [worse, INVERTED, worse]
    cfg = load_config("tiny")
    with caplog.at_level("ERROR"):
        res = attempts.train_checked(tmp_path / "data", tmp_path / "out", cfg, register=False)
    assert len(stub.calls) == cfg.translator.max_attempts == 3
    assert stub.calls[2]["levels"] == 2  # the last retry entry: also a second U-Net level
    summary = json.loads((tmp_path / "out" / "attempts.json").read_text())
    assert not summary["passed"] and summary["kept_attempt"] == 2  # the best fidelity score
    assert res.model_dir == tmp_path / "out" / "attempt_2" / "model"
    line = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert line and "bone around it" in line[0]


def test_one_attempt_when_the_checks_pass_or_retries_are_off(stub, tmp_path):
    stub.figures = [INVERTED]
    cfg = load_config("tiny", overrides=["translator.max_attempts=1"])
    attempts.train_checked(tmp_path / "data", tmp_path / "a", cfg, register=False)
    assert len(stub.calls) == 1
    summary = json.loads((tmp_path / "a" / "attempts.json").read_text())
    assert not summary["passed"] and summary["kept_attempt"] == 1


def test_attempt_overrides_repeat_the_last_retry_entry():
    cfg = load_config("tiny")
    assert attempts.attempt_overrides(cfg, 1) == {}
    assert attempts.attempt_overrides(cfg, 2)["seed"] == cfg.seed + 1
    assert attempts.attempt_overrides(cfg, 5)["translator.levels"] == cfg.translator.retry[-1]["levels"]
    bare = load_config("tiny", overrides=["translator.retry=[]"])
    assert attempts.attempt_overrides(bare, 2) == {"seed": bare.seed + 1}
