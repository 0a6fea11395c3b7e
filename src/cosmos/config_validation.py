"""Whether a built config makes sense as a whole: the checks :func:`cosmos.config.from_dict` runs last.

Each field's type is already checked when the config is built (``cosmos.config_overrides._coerce``); here
are the allowed values and the rules across fields (folds within num_folds, image size divisible by the
U-Net depth, a promotion policy with what it needs, ...). A few steps also normalise what they check
(list entries to int or float, case ids to strings). Every failure is a :class:`ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping

from cosmos.config_overrides import ConfigError

if TYPE_CHECKING:
    from cosmos.config_schema import CosmosConfig, SegmentationConfig, SelfTrainingConfig, TrackingConfig

PROFILES = ("tiny", "small", "paper")


def validate(cfg: CosmosConfig) -> None:
    if cfg.profile not in PROFILES and not cfg.profile.startswith("custom"):
        raise ConfigError(f"profile must be one of {PROFILES}, got {cfg.profile!r}")
    t, s = cfg.translator, cfg.segmentation
    if t.gan_loss not in ("bce", "lsgan"):
        raise ConfigError(f"translator.gan_loss must be bce or lsgan, got {t.gan_loss!r}")
    if t.select_epoch not in ("last", "fidelity"):
        raise ConfigError(f"translator.select_epoch must be last or fidelity, got {t.select_epoch!r}")
    if t.select_epoch == "fidelity" and t.fidelity_cases <= 0:
        raise ConfigError("translator.select_epoch=fidelity needs translator.fidelity_cases > 0")
    if t.seg_loss not in ("dice", "dice_ce"):
        raise ConfigError(f"translator.seg_loss must be dice or dice_ce, got {t.seg_loss!r}")
    if not 0.0 <= t.fg_oversample <= 1.0:
        raise ConfigError(f"translator.fg_oversample must be within 0..1, got {t.fg_oversample}")
    if not 0.0 <= t.norm_low_percentile < t.norm_high_percentile <= 100.0:
        raise ConfigError("translator.norm_low_percentile must be below norm_high_percentile, both within 0..100")
    if t.levels < 1 or t.image_size % (2**t.levels):
        raise ConfigError(f"translator.image_size ({t.image_size}) must be divisible by 2**levels ({2**t.levels})")
    for name in ("device",):
        for sec, obj in (("translator", t), ("segmentation", s)):
            if getattr(obj, name) not in ("auto", "cpu", "cuda") and not str(getattr(obj, name)).startswith("cuda:"):
                raise ConfigError(f"{sec}.device must be auto, cpu or cuda, got {getattr(obj, name)!r}")
    if not s.folds or any(f < 0 or f >= s.num_folds for f in s.folds):
        raise ConfigError(f"segmentation.folds {s.folds} must be non-empty and within 0..{s.num_folds - 1}")
    if len(set(s.folds)) != len(s.folds):
        raise ConfigError(f"segmentation.folds {s.folds} has duplicates")
    uri = s.checkpoint_uri.strip()
    if uri and not (uri.startswith("s3://") and len(uri) > len("s3://")) and not uri.startswith("/"):
        raise ConfigError(
            f"segmentation.checkpoint_uri must be empty, s3://bucket[/prefix] or an absolute "
            f"directory, got {s.checkpoint_uri!r}"
        )
    _validate_geometry(s)
    _validate_selftraining(cfg.selftraining)
    if not 0.0 <= s.oversample_foreground <= 1.0:
        raise ConfigError(f"segmentation.oversample_foreground must be within 0..1, got {s.oversample_foreground}")
    if s.num_processes < 0:
        raise ConfigError(f"segmentation.num_processes must be >= 0 (0 = no worker processes), got {s.num_processes}")
    if s.vs_component not in ("largest", "confident"):
        raise ConfigError(f"segmentation.vs_component must be largest or confident, got {s.vs_component!r}")
    if s.cochlea_components not in ("all", "per_side"):
        raise ConfigError(f"segmentation.cochlea_components must be all or per_side, got {s.cochlea_components!r}")
    if not (isinstance(s.vs_min_component_mm3, (int, float)) and s.vs_min_component_mm3 >= 0):
        raise ConfigError(f"segmentation.vs_min_component_mm3 must be >= 0, got {s.vs_min_component_mm3!r}")
    if not (isinstance(s.fov_reference_patches, (int, float)) and s.fov_reference_patches >= 0):
        raise ConfigError(f"segmentation.fov_reference_patches must be >= 0, got {s.fov_reference_patches!r}")
    if not (isinstance(s.fov_max_factor, (int, float)) and s.fov_max_factor >= 1):
        raise ConfigError(f"segmentation.fov_max_factor must be >= 1, got {s.fov_max_factor!r}")
    if not (isinstance(s.structure_intensity_p, (int, float)) and 0.0 <= s.structure_intensity_p <= 1.0):
        raise ConfigError(f"segmentation.structure_intensity_p must be in [0, 1], got {s.structure_intensity_p!r}")
    if s.mirror_axes is not None and (not s.mirror_axes or any(a not in (0, 1, 2) for a in s.mirror_axes)):
        raise ConfigError(
            f"segmentation.mirror_axes must be null or a non-empty subset of [0, 1, 2], got {s.mirror_axes}"
        )
    _validate_promotion(cfg.tracking)
    _validate_checks(cfg)
    if cfg.phantom.style not in ("builtin", "random"):
        raise ConfigError(f"phantom.style must be builtin or random, got {cfg.phantom.style!r}")
    if cfg.phantom.scale not in ("small", "full"):
        raise ConfigError(f"phantom.scale must be small or full, got {cfg.phantom.scale!r}")


PROMOTE_POLICIES = ("always", "label_free", "labels")


def _validate_promotion(tr: TrackingConfig) -> None:
    if tr.promote == "better":
        raise ConfigError(
            "tracking.promote=better chose the champion by the validation labels it was then scored on; use "
            "label_free (no labels read), always (the final round, as the paper) or labels with "
            "tracking.selection_cases (a labelled selection set kept out of the reported score)"
        )
    if tr.promote not in PROMOTE_POLICIES:
        raise ConfigError(f"tracking.promote must be one of {PROMOTE_POLICIES}, got {tr.promote!r}")
    tr.selection_cases = [str(c) for c in tr.selection_cases]
    if tr.promote == "labels" and not tr.selection_cases:
        raise ConfigError(
            "tracking.promote=labels needs tracking.selection_cases: validation case ids (e.g. "
            "[crossmoda_211, crossmoda_212]) that choose the champion and are left out of the reported Dice"
        )
    if len(set(tr.selection_cases)) != len(tr.selection_cases):
        raise ConfigError(f"tracking.selection_cases has duplicates: {tr.selection_cases}")


def _validate_checks(cfg: CosmosConfig) -> None:
    c, t = cfg.checks, cfg.translator
    for name in ("fidelity_min_pass", "min_pseudo_dice", "min_plausible", "min_kept_fraction", "min_label_agreement"):
        value = getattr(c, name)
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ConfigError(f"checks.{name} must be within 0..1, got {value!r}")
    known_gate = {"cochlea_in_dark_bone", "vs_above_median", "intensity", "vs_darker_than_fluid", "cochlea_bright"}
    if not set(c.fidelity_gate) <= known_gate:
        raise ConfigError(f"checks.fidelity_gate {c.fidelity_gate}: each must be one of {sorted(known_gate)}")
    if not (isinstance(c.volume_range_factor, (int, float)) and c.volume_range_factor >= 1.0):
        raise ConfigError(f"checks.volume_range_factor must be >= 1, got {c.volume_range_factor!r}")
    if t.max_attempts < 1:
        raise ConfigError(f"translator.max_attempts must be >= 1, got {t.max_attempts}")
    if not isinstance(t.retry, list) or not all(isinstance(r, Mapping) for r in t.retry):
        raise ConfigError(f"translator.retry must be a list of translator-key mappings, got {t.retry!r}")
    known = {f.name for f in dataclasses.fields(t)} - {"retry", "max_attempts"}
    for entry in t.retry:
        unknown = set(entry) - known
        if unknown:
            raise ConfigError(f"translator.retry: unknown translator key(s) {sorted(unknown)}")
    s = cfg.segmentation
    if s.epochs < 1 or s.epochs_multiplier < 1:
        raise ConfigError(
            f"segmentation.epochs ({s.epochs}) and epochs_multiplier ({s.epochs_multiplier}) must be >= 1"
        )
    if not (isinstance(s.not_learning_max_factor, (int, float)) and s.not_learning_max_factor >= 1.0):
        raise ConfigError(f"segmentation.not_learning_max_factor must be >= 1, got {s.not_learning_max_factor!r}")


def _validate_selftraining(st: SelfTrainingConfig) -> None:
    if st.rounds < 0:
        raise ConfigError("selftraining.rounds must be >= 0")
    if st.min_component_voxels and len(st.min_component_voxels) != len(st.required_labels):
        raise ConfigError(
            f"selftraining.min_component_voxels {st.min_component_voxels} needs one entry per "
            f"required label {st.required_labels} (or [] for none)"
        )
    if any(int(v) < 1 for v in st.min_component_voxels):
        raise ConfigError(f"selftraining.min_component_voxels {st.min_component_voxels} must be >= 1")
    if st.filter not in ("image", "pixel"):
        raise ConfigError(f"selftraining.filter must be image or pixel, got {st.filter!r}")
    if not 0.0 <= st.confidence_threshold <= 1.0:
        raise ConfigError(f"selftraining.confidence_threshold must be within 0..1, got {st.confidence_threshold}")
    if st.student_init not in ("scratch", "teacher"):
        raise ConfigError(f"selftraining.student_init must be scratch or teacher, got {st.student_init!r}")
    if not st.student_lr_scale > 0:
        raise ConfigError(f"selftraining.student_lr_scale must be > 0, got {st.student_lr_scale}")


def _validate_geometry(s: SegmentationConfig) -> None:
    """Patch / spacing / depth: three entries, positive; fail here rather than deep inside nnU-Net's planner."""
    for name in ("patch_size", "patch_size_max", "target_spacing", "min_patch_mm"):
        value = getattr(s, name)
        if value is None:
            continue
        if (
            not isinstance(value, (list, tuple))
            or len(value) not in (2, 3)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise ConfigError(
                f"segmentation.{name} must be three (z, y, x; two for 2d) positive numbers, got {value!r}"
            )
        if name in ("patch_size", "patch_size_max") and not all(float(v).is_integer() for v in value):
            raise ConfigError(f"segmentation.{name} must be whole voxel counts, got {value!r}")
    if s.target_spacing is not None:
        s.target_spacing = [float(v) for v in s.target_spacing]
    if s.min_patch_mm is not None:
        s.min_patch_mm = [float(v) for v in s.min_patch_mm]  # no effect without patch_size(_max): nothing to cover
    for name in ("patch_size", "patch_size_max"):
        if getattr(s, name) is not None:
            setattr(s, name, [int(v) for v in getattr(s, name)])
    if s.num_stages is not None and (
        isinstance(s.num_stages, bool) or not isinstance(s.num_stages, int) or s.num_stages < 1
    ):
        raise ConfigError(f"segmentation.num_stages must be a positive integer or null, got {s.num_stages!r}")
