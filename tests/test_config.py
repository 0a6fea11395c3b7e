"""The typed configuration: profiles, YAML, overrides, loss presets, fail-fast validation."""

import re
from importlib import resources

import pytest
import yaml

from cosmos.cli import main
from cosmos.config import (
    _SECTIONS,
    LOSS_PRESETS,
    PROFILES,
    PROMOTE_POLICIES,
    ConfigError,
    apply_loss_preset,
    choices,
    field_types,
    load_config,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_load_and_round_trip(profile, tmp_path):
    cfg = load_config(profile)
    assert cfg.profile == profile
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(profile, path).to_dict() == cfg.to_dict()


def test_profile_files_are_yaml_of_known_keys(tmp_path):
    """The profiles are package data (src/cosmos/profiles): tiny and small are the shared CPU recipe (cpu.yaml)
    plus their own budgets, paper stands alone over the dataclass defaults. A child may name a trainer that
    refines the base's (tiny: the CPU recipe plus an augmentation), never another recipe."""
    from cosmos.segmentation.trainer import trainer_named

    folder = resources.files("cosmos") / "profiles"
    files = {
        f.name.removesuffix(".yaml"): yaml.safe_load(f.read_text())
        for f in folder.iterdir()
        if f.name.endswith(".yaml")
    }
    assert set(files) == {*PROFILES, "cpu"} and all(isinstance(data, dict) for data in files.values())
    assert files["tiny"]["inherits"] == files["small"]["inherits"] == "cpu"
    assert "inherits" not in files["cpu"] and "inherits" not in files["paper"]
    tiny, small = load_config("tiny"), load_config("small")
    for section, values in files["cpu"].items():  # the shared values reach both; neither child repeats one
        for key, value in values.items():
            if (section, key) == ("segmentation", "trainer"):
                for child in (tiny, small):
                    assert issubclass(trainer_named(child.segmentation.trainer), trainer_named(value))
                continue
            assert getattr(getattr(tiny, section), key) == getattr(getattr(small, section), key) == value
            assert key not in files["small"].get(section, {})
            assert key not in files["tiny"].get(section, {}) or key == "trainer"
    # every key of every file is a config key: load_config raises ConfigError on an unknown section or key
    for name, data in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "inherits"}))
        assert load_config(name if name in PROFILES else "small", path).profile in PROFILES
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("cpu")  # a base, not a profile


def test_paper_profile_follows_the_paper():
    cfg = load_config("paper")
    t, s = cfg.translator, cfg.segmentation
    assert (t.levels, t.epochs, t.lr) == (3, 50, 1e-4)
    assert (t.lambda_cycle, t.lambda_adv, t.lambda_identity, t.lambda_seg) == (0.01, 0.1, 0.5, 1.0)
    assert t.seg_translated_start_epoch == 5
    assert (s.epochs, s.initial_lr, s.batch_size, s.features_base) == (200, 1e-2, 2, 32)
    assert s.folds == [0, 1, 2, 3, 4] and cfg.selftraining.rounds == 3
    # geometry (paper 4.2, z, y, x); depth: 6 stages = 5 downsamplings, what nnU-Net's rule allows on this
    # patch (the paper says 6 downsamplings; tests/test_paper_profile.py shows why it cannot be, docs/method.md says so)
    assert s.patch_size == [40, 224, 224] and s.target_spacing == [1.5, 0.41, 0.41] and s.num_stages == 6
    assert (s.features_max, s.num_folds, s.mirroring, s.patch_size_max, s.ce_class_weights) == (
        320,
        5,
        True,
        None,
        None,
    )
    assert (t.disc_layers, t.gan_loss, t.segmentor, t.lr_decay < 1) == (3, "bce", True, True)
    assert t.loss_preset == "paper" and t.lambda_kspace == 0.0  # the k-space term is the report's, not the paper's


def test_cli_config_prints_the_published_values(capsys):
    import yaml

    assert main(["config", "--profile", "paper"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    seg, t = printed["segmentation"], printed["translator"]
    assert seg["patch_size"] == [40, 224, 224] and seg["target_spacing"] == [1.5, 0.41, 0.41]
    assert (seg["num_stages"], seg["features_base"], seg["features_max"], seg["batch_size"]) == (6, 32, 320, 2)
    assert (seg["initial_lr"], seg["epochs"], seg["folds"], seg["mirroring"]) == (0.01, 200, [0, 1, 2, 3, 4], True)
    assert (t["levels"], t["epochs"], t["lr"], t["seg_translated_start_epoch"]) == (3, 50, 1e-4, 5)
    assert [t[k] for k in ("lambda_cycle", "lambda_adv", "lambda_identity", "lambda_seg", "lambda_kspace")] == [
        0.01,
        0.1,
        0.5,
        1.0,
        0.0,
    ]


def test_segmentation_geometry_is_checked():
    cfg = load_config("tiny", overrides=["segmentation.target_spacing=[2, 0.5, 0.5]", "segmentation.num_stages=4"])
    assert cfg.segmentation.target_spacing == [2.0, 0.5, 0.5] and cfg.segmentation.num_stages == 4
    for bad, match in (
        ("segmentation.target_spacing=[1.5, 0.4, 0.4, 0.4]", "positive numbers"),
        ("segmentation.target_spacing=[1.5, 0, 0.4]", "positive numbers"),
        ("segmentation.patch_size=[40, 224.5, 224]", "whole voxel"),
        ("segmentation.patch_size=224", "positive numbers"),
        ("segmentation.num_stages=0", "positive integer"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config("tiny", overrides=[bad])


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
    with pytest.raises(ConfigError, match="num_processes"):
        load_config("tiny", overrides=["segmentation.num_processes=-1"])
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("huge")


def test_loss_presets_resolve():
    cfg = load_config("tiny")
    assert cfg.translator.loss_preset == "custom"  # tiny's translator weights are tuned by hand (profiles/cpu.yaml)
    report = apply_loss_preset(cfg, "report")
    for key, value in LOSS_PRESETS["report"].items():
        assert getattr(report.translator, key) == value
    assert report.translator.lambda_kspace > 0 == cfg.translator.lambda_kspace  # k-space term: report only
    kspace_by_hand = cfg.with_overrides(["translator.lambda_kspace=0.2"])
    assert kspace_by_hand.translator.loss_preset == "custom"
    by_hand = cfg.with_overrides(["translator.lambda_seg=2"])
    assert by_hand.translator.loss_preset == "custom" and by_hand.translator.lambda_seg == 2.0
    with pytest.raises(ConfigError, match="custom"):
        cfg.with_overrides(["translator.loss_preset=report", "translator.lambda_seg=3"])


def test_cli_config_errors_are_one_line(capsys):
    assert main(["config", "--set", "nope.x=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config section 'nope'" in err and "Traceback" not in err


# Every key that takes one of a few values, with those values (the schema's Literal annotations).
LITERAL_KEYS = {
    "phantom.scale": ("small", "full"),
    "phantom.style": ("builtin", "random"),
    "translator.loss_preset": ("paper", "report", "custom"),
    "translator.gan_loss": ("bce", "lsgan"),
    "translator.seg_loss": ("dice", "dice_ce"),
    "translator.select_epoch": ("last", "fidelity"),
    "segmentation.trainer": (
        "nnUNetTrainerCosmosBudget",
        "nnUNetTrainerCosmosCPU",
        "nnUNetTrainerCosmosCPUStructureIntensity",
    ),
    "segmentation.vs_component": ("largest", "confident"),
    "segmentation.cochlea_components": ("all", "per_side"),
    "selftraining.filter": ("image", "pixel"),
    "selftraining.student_init": ("scratch", "teacher"),
    "tracking.promote": ("always", "label_free", "labels"),
}


def test_keys_with_a_fixed_set_of_values_are_typed_and_refused_naming_them():
    typed = {
        f"{section}.{name}": choices(hint)
        for section, cls in _SECTIONS.items()
        for name, hint in field_types(cls).items()
        if choices(hint) is not None
    }
    assert typed == LITERAL_KEYS
    assert set(LITERAL_KEYS["translator.loss_preset"]) == {*LOSS_PRESETS, "custom"}
    assert PROMOTE_POLICIES == LITERAL_KEYS["tracking.promote"]
    for key, allowed in LITERAL_KEYS.items():
        with pytest.raises(ConfigError) as info:
            load_config("tiny", overrides=[f"{key}=nope"])
        listed = " or ".join(allowed) if len(allowed) == 2 else "one of " + " | ".join(allowed)
        assert str(info.value) == f"{key} must be {listed}, got 'nope'"
    with pytest.raises(ConfigError, match=re.escape("must be one of always | label_free | labels, got 'best'")):
        load_config("tiny", overrides=["tracking.promote=best"])
    with pytest.raises(ConfigError, match="scored on"):  # a retired value is refused with why
        load_config("tiny", overrides=["tracking.promote=better"])
    with pytest.raises(ConfigError, match="checks.fidelity_gate entries must be one of .* got 'vs_bright'"):
        load_config("tiny", overrides=["checks.fidelity_gate=[intensity, vs_bright]"])
    assert load_config("tiny", overrides=["checks.fidelity_gate=intensity,cochlea_bright"]).checks.fidelity_gate == [
        "intensity",
        "cochlea_bright",
    ]
    # device is not a Literal (any cuda:N): its own check
    assert load_config("tiny", overrides=["translator.device=cuda:1"]).translator.device == "cuda:1"
    with pytest.raises(ConfigError, match="segmentation.device must be auto, cpu or cuda, got 'tpu'"):
        load_config("tiny", overrides=["segmentation.device=tpu"])


@pytest.mark.parametrize(
    ("override", "got"),
    [
        ("translator.lr=nan", "nan"),
        ("translator.lr=.nan", "nan"),
        ("translator.lr=-inf", "-inf"),
        ("translator.lr=.inf", "inf"),
        ("translator.lr=0", "0.0"),
        ("translator.lr=-1e-4", "-0.0001"),
        ("translator.lr_decay=0", "0.0"),
        ("translator.lr_decay=1.5", "1.5"),
        ("translator.inplane_spacing=0", "0.0"),
        ("translator.inplane_spacing=-0.8", "-0.8"),
        ("segmentation.initial_lr=0", "0.0"),
        ("segmentation.initial_lr=nan", "nan"),
        ("segmentation.patch_size=[1,2]", "[1, 2]"),
        ("segmentation.patch_size=[2,64,64]", "[2, 64, 64]"),
        ("segmentation.patch_size_max=[32,3,48]", "[32, 3, 48]"),
        ("roi.margin_mm=-50", "-50.0"),
        ("roi.min_size_mm=0", "0.0"),
        ("roi.min_size_mm=-inf", "-inf"),
        ("segmentation.tile_step_size=0", "0.0"),
        ("segmentation.tile_step_size=1.5", "1.5"),
        ("translator.epochs=0", "0"),
        ("translator.batch_size=0", "0"),
        ("translator.convert_batch_size=0", "0"),
        ("segmentation.epochs=0", "0"),
        ("segmentation.epochs_multiplier=0", "0"),
        ("segmentation.iterations_per_epoch=0", "0"),
        ("segmentation.val_iterations_per_epoch=0", "0"),
        ("segmentation.batch_size=-2", "-2"),
        ("translator.image_size=8", "8"),
    ],
)
def test_bad_values_are_refused_at_load_naming_key_and_value(override, got, capsys):
    key = override.split("=", 1)[0]
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides=[override])
    message = str(info.value)
    assert message.startswith(key) and message.endswith(f"got {got}") and "\n" not in message
    assert main(["config", "--profile", "tiny", "--set", override]) == 2  # the CLI: one line, no traceback
    err = capsys.readouterr().err
    assert err == f"cosmos: error: {message}\n"


def test_recipe_keys_set_in_a_config_file_still_load_and_are_kept(tmp_path):
    """The knobs of the CPU recipe moved into the trainer class; a config that sets them (written for an older
    cosmos, or varying one knob) loads and keeps them, and null leaves the trainer's value."""
    from cosmos.config import RECIPE_KEYS

    given = {
        "ce_class_weights": [1.0, 2.0, 5.0],
        "structure_intensity_p": 0.5,
        "oversample_foreground": 0.5,
        "probabilistic_oversampling": False,
        "fov_reference_patches": 2.0,
        "fov_max_factor": 1.5,
        "not_learning_max_factor": 1.5,
    }
    assert set(given) == set(RECIPE_KEYS)
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"segmentation": given}))
    for profile in PROFILES:
        seg = load_config(profile, path).segmentation
        assert {key: getattr(seg, key) for key in RECIPE_KEYS} == given
        assert all(getattr(load_config(profile).segmentation, key) is None for key in RECIPE_KEYS)
    with pytest.raises(ConfigError, match="segmentation.structure_intensity_p must be within 0..1"):
        load_config("paper", overrides=["segmentation.structure_intensity_p=2"])
