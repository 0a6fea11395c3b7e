"""Whether a built config makes sense as a whole: the checks :func:`cosmos.config.from_dict` runs last.

Each field's type is already checked when the config is built (``cosmos.config_overrides._coerce``), and with
it every key that takes one of a few values (annotated ``Literal[...]`` in ``cosmos.config_schema``) and every
float's finiteness. Here are the numeric ranges (:data:`RANGES`) and the rules across fields (folds within
num_folds, image size divisible by the U-Net depth, one patch entry per axis, a promotion policy with what it
needs, ...). A few steps also normalise what they check (list entries to int or float, case ids to strings).
Every failure is a :class:`ConfigError` that names the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

from cosmos.config_overrides import ConfigError

if TYPE_CHECKING:
    from cosmos.config_schema import CosmosConfig, SegmentationConfig, SelfTrainingConfig, TrackingConfig

PROFILES = ("tiny", "small", "paper")

# The allowed range of each numeric key, by the words its refusal uses ("translator.lr must be > 0, got -0.1").
_BOUNDS: dict[str, Callable[[Any], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 0 (0 = no worker processes)": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    ">= 16 (pixels)": lambda v: v >= 16,
    ">= -1 (-1 = auto)": lambda v: v >= -1,
    "within 0..1": lambda v: 0 <= v <= 1,
    "within (0, 1]": lambda v: 0 < v <= 1,
    "within [0, 1)": lambda v: 0 <= v < 1,
}
RANGES: dict[str, str] = {
    "phantom.n_source": ">= 1",
    "phantom.n_target": ">= 1",
    "phantom.n_val": ">= 0",
    "translator.base_channels": ">= 1",
    "translator.levels": ">= 1",
    "translator.disc_channels": ">= 1",
    "translator.disc_layers": ">= 1",
    "translator.image_size": ">= 16 (pixels)",
    "translator.inplane_spacing": "> 0",
    "translator.epochs": ">= 1",
    "translator.batch_size": ">= 1",
    "translator.slices_per_epoch": ">= 0",
    "translator.lr": "> 0",
    "translator.lr_decay": "within (0, 1]",
    "translator.beta1": "within [0, 1)",
    "translator.lambda_cycle": ">= 0",
    "translator.lambda_adv": ">= 0",
    "translator.lambda_identity": ">= 0",
    "translator.lambda_seg": ">= 0",
    "translator.lambda_kspace": ">= 0",
    "translator.seg_translated_start_epoch": ">= 0",
    "translator.sample_every": ">= 0",
    "translator.convert_batch_size": ">= 1",
    "translator.num_threads": ">= 0",
    "translator.fg_oversample": "within 0..1",
    "translator.fidelity_cases": ">= 0",
    "translator.max_attempts": ">= 1",
    "segmentation.num_folds": ">= 1",
    "segmentation.epochs": ">= 1",
    "segmentation.epochs_multiplier": ">= 1",
    "segmentation.iterations_per_epoch": ">= 1",
    "segmentation.val_iterations_per_epoch": ">= 1",
    "segmentation.batch_size": ">= 1",
    "segmentation.initial_lr": "> 0",
    "segmentation.features_base": ">= 1",
    "segmentation.features_max": ">= 1",
    "segmentation.oversample_foreground": "within 0..1",
    "segmentation.fov_reference_patches": ">= 0",
    "segmentation.fov_max_factor": ">= 1",
    "segmentation.structure_intensity_p": "within 0..1",
    "segmentation.vs_min_component_mm3": ">= 0",
    "segmentation.save_every": ">= 1",
    "segmentation.num_processes": ">= 0 (0 = no worker processes)",
    "segmentation.da_workers": ">= -1 (-1 = auto)",
    "segmentation.tile_step_size": "within (0, 1]",
    "segmentation.torch_threads": ">= 0",
    "segmentation.not_learning_max_factor": ">= 1",
    "selftraining.rounds": ">= 0",
    "selftraining.confidence_threshold": "within 0..1",
    "selftraining.student_lr_scale": "> 0",
    "roi.margin_mm": ">= 0",
    "roi.min_size_mm": "> 0",
    "roi.source_extent_ratio": ">= 0",
    "checks.fidelity_min_pass": "within 0..1",
    "checks.min_pseudo_dice": "within 0..1",
    "checks.min_plausible": "within 0..1",
    "checks.volume_range_factor": ">= 1",
    "checks.min_kept_fraction": "within 0..1",
    "checks.min_label_agreement": "within 0..1",
}
# nnU-Net's smallest feature map edge (get_pool_and_conv_props): a patch axis below it cannot be planned.
MIN_PATCH_VOXELS = 4


def validate(cfg: CosmosConfig) -> None:
    if cfg.profile not in PROFILES and not cfg.profile.startswith("custom"):
        raise ConfigError(f"profile must be one of {PROFILES}, got {cfg.profile!r}")
    _validate_ranges(cfg)
    t, s = cfg.translator, cfg.segmentation
    if t.select_epoch == "fidelity" and t.fidelity_cases <= 0:
        raise ConfigError("translator.select_epoch=fidelity needs translator.fidelity_cases > 0")
    if not 0.0 <= t.norm_low_percentile < t.norm_high_percentile <= 100.0:
        raise ConfigError("translator.norm_low_percentile must be below norm_high_percentile, both within 0..100")
    if t.image_size % (2**t.levels):
        raise ConfigError(f"translator.image_size ({t.image_size}) must be divisible by 2**levels ({2**t.levels})")
    for sec, obj in (("translator", t), ("segmentation", s)):
        if obj.device not in ("auto", "cpu", "cuda") and not obj.device.startswith("cuda:"):
            raise ConfigError(f"{sec}.device must be auto, cpu or cuda, got {obj.device!r}")
    if not s.folds or any(f < 0 or f >= s.num_folds for f in s.folds):
        raise ConfigError(f"segmentation.folds {s.folds} must be non-empty and within 0..{s.num_folds - 1}")
    if len(set(s.folds)) != len(s.folds):
        raise ConfigError(f"segmentation.folds {s.folds} has duplicates")
    if s.features_max < s.features_base:
        raise ConfigError(
            f"segmentation.features_max ({s.features_max}) must be >= segmentation.features_base ({s.features_base})"
        )
    uri = s.checkpoint_uri.strip()
    if uri and not (uri.startswith("s3://") and len(uri) > len("s3://")) and not uri.startswith("/"):
        raise ConfigError(
            f"segmentation.checkpoint_uri must be empty, s3://bucket[/prefix] or an absolute "
            f"directory, got {s.checkpoint_uri!r}"
        )
    _validate_geometry(s)
    _validate_selftraining(cfg.selftraining)
    if s.mirror_axes is not None and (not s.mirror_axes or any(a not in (0, 1, 2) for a in s.mirror_axes)):
        raise ConfigError(
            f"segmentation.mirror_axes must be null or a non-empty subset of [0, 1, 2], got {s.mirror_axes}"
        )
    _validate_promotion(cfg.tracking)
    _validate_checks(cfg)


def _validate_ranges(cfg: CosmosConfig) -> None:
    """Every key of :data:`RANGES` within its range (its type, and a float's finiteness, are checked already).
    A null key (a recipe override left to the trainer, ``cosmos.config_schema.RECIPE_KEYS``) has nothing to check."""
    for key, bound in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        if not _BOUNDS[bound](value):
            raise ConfigError(f"{key} must be {bound}, got {value!r}")


def _validate_promotion(tr: TrackingConfig) -> None:
    """tracking.promote is one of its values already (and ``better`` refused with why: the field's metadata)."""
    tr.selection_cases = [str(c) for c in tr.selection_cases]
    if tr.promote == "labels" and not tr.selection_cases:
        raise ConfigError(
            "tracking.promote=labels needs tracking.selection_cases: validation case ids (e.g. "
            "[crossmoda_211, crossmoda_212]) that choose the champion and are left out of the reported Dice"
        )
    if len(set(tr.selection_cases)) != len(tr.selection_cases):
        raise ConfigError(f"tracking.selection_cases has duplicates: {tr.selection_cases}")


def _validate_checks(cfg: CosmosConfig) -> None:
    t = cfg.translator
    if not isinstance(t.retry, list) or not all(isinstance(r, Mapping) for r in t.retry):
        raise ConfigError(f"translator.retry must be a list of translator-key mappings, got {t.retry!r}")
    known = {f.name for f in dataclasses.fields(t)} - {"retry", "max_attempts"}
    for entry in t.retry:
        unknown = set(entry) - known
        if unknown:
            raise ConfigError(f"translator.retry: unknown translator key(s) {sorted(unknown)}")


def _validate_selftraining(st: SelfTrainingConfig) -> None:
    if st.min_component_voxels and len(st.min_component_voxels) != len(st.required_labels):
        raise ConfigError(
            f"selftraining.min_component_voxels {st.min_component_voxels} needs one entry per "
            f"required label {st.required_labels} (or [] for none)"
        )
    if any(int(v) < 1 for v in st.min_component_voxels):
        raise ConfigError(f"selftraining.min_component_voxels {st.min_component_voxels} must be >= 1")


def _validate_geometry(s: SegmentationConfig) -> None:
    """Patch / spacing / depth: one positive entry per axis of the configuration (three, z, y, x, for 3d; two for
    2d), a patch of at least :data:`MIN_PATCH_VOXELS` per axis; fail here rather than deep inside nnU-Net's planner."""
    counts: tuple[int, ...]
    if s.configuration == "2d":
        counts, shape = (2,), "two (y, x)"
    elif s.configuration.startswith("3d"):
        counts, shape = (3,), "three (z, y, x)"
    else:  # a plan's own configuration name: its dimensionality is not known here
        counts, shape = (2, 3), "three (z, y, x; two for 2d)"
    for name in ("patch_size", "patch_size_max", "target_spacing", "min_patch_mm"):
        value = getattr(s, name)
        if value is None:
            continue
        if (
            not isinstance(value, (list, tuple))
            or len(value) not in counts
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in value)
        ):
            raise ConfigError(
                f"segmentation.{name} must be {shape} positive numbers for segmentation.configuration="
                f"{s.configuration}, got {value!r}"
            )
        if name in ("patch_size", "patch_size_max"):
            if not all(float(v).is_integer() for v in value):
                raise ConfigError(f"segmentation.{name} must be whole voxel counts, got {value!r}")
            if min(value) < MIN_PATCH_VOXELS:
                raise ConfigError(
                    f"segmentation.{name} must be at least {MIN_PATCH_VOXELS} voxels along every axis (nnU-Net's "
                    f"smallest feature map), got {value!r}"
                )
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
    if s.ce_class_weights is not None and not all(0 <= w < math.inf for w in s.ce_class_weights):
        raise ConfigError(
            f"segmentation.ce_class_weights must be null (the trainer's), [] (unweighted) or finite numbers >= 0 "
            f"(one per label), got {s.ce_class_weights!r}"
        )
