"""The typed configuration: profiles, YAML, overrides, loss presets, fail-fast validation."""

import pytest

from cosmos.cli import main
from cosmos.config import LOSS_PRESETS, PROFILES, ConfigError, apply_loss_preset, load_config


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_load_and_round_trip(profile, tmp_path):
    cfg = load_config(profile)
    assert cfg.profile == profile
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(profile, path).to_dict() == cfg.to_dict()


def test_paper_profile_follows_the_paper():
    cfg = load_config("paper")
    t, s = cfg.translator, cfg.segmentation
    assert (t.levels, t.epochs, t.lr) == (3, 50, 1e-4)
    assert (t.lambda_cycle, t.lambda_adv, t.lambda_identity, t.lambda_seg) == (0.01, 0.1, 0.5, 1.0)
    assert t.seg_translated_start_epoch == 5
    assert (s.epochs, s.initial_lr, s.batch_size, s.features_base) == (200, 1e-2, 2, 32)
    assert s.folds == [0, 1, 2, 3, 4] and cfg.selftraining.rounds == 3


def test_overrides_are_typed_and_checked():
    cfg = load_config("tiny", overrides=["translator.epochs=7", "segmentation.folds=0,1,2", "seed=3"])
    assert cfg.translator.epochs == 7 and cfg.segmentation.folds == [0, 1, 2] and cfg.seed == 3
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("tiny", overrides=["translator.epochz=7"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("tiny", overrides=["translator.epochs=many"])
    # YAML 1.1 reads 2e-3 (no dot) as a string; a float field still takes it
    assert load_config("tiny", overrides=["translator.lr=2e-3"]).translator.lr == pytest.approx(0.002)
    with pytest.raises(ConfigError, match="must be a number"):
        load_config("tiny", overrides=["translator.lr=fast"])
    with pytest.raises(ConfigError, match="folds"):
        load_config("tiny", overrides=["segmentation.folds=[0,7]"])
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("huge")


def test_loss_presets_resolve():
    cfg = load_config("tiny")
    assert cfg.translator.loss_preset == "paper"
    report = apply_loss_preset(cfg, "report")
    for key, value in LOSS_PRESETS["report"].items():
        assert getattr(report.translator, key) == value
    by_hand = cfg.with_overrides(["translator.lambda_seg=2"])
    assert by_hand.translator.loss_preset == "custom" and by_hand.translator.lambda_seg == 2.0
    with pytest.raises(ConfigError, match="custom"):
        cfg.with_overrides(["translator.loss_preset=report", "translator.lambda_seg=3"])


def test_cli_config_errors_are_one_line(capsys):
    assert main(["config", "--set", "nope.x=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config section 'nope'" in err and "Traceback" not in err
