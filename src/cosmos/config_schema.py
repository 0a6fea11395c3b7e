"""The typed sections of a COSMOS config, the whole :class:`CosmosConfig`, and :func:`from_dict`, which builds
and validates one from a mapping.

The comment on each field documents its key (``docs/configuration.md`` describes the profiles). A key that takes
one of a few values is annotated ``Literal[...]``: the loader (``cosmos.config_overrides._coerce``) reads the
annotations and refuses any other value, naming the allowed ones. Import these names from :mod:`cosmos.config`,
the public entry.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, get_args

import yaml

from cosmos.config_overrides import (
    ConfigError,
    _build,
    _coerce,
    _flatten,
    _resolve_loss_weights,
    _set_dotted,
    _split_override,
)
from cosmos.config_validation import validate

# Which round holds the champion alias (tracking.promote, documented at the field).
Promote = Literal["always", "label_free", "labels"]
PROMOTE_POLICIES: tuple[str, ...] = get_args(Promote)
# The translation checks that may gate (checks.fidelity_gate; cosmos.translation.fidelity).
FidelityCheck = Literal[
    "cochlea_in_dark_bone", "vs_above_median", "intensity", "vs_darker_than_fluid", "cochlea_bright"
]
# The nnU-Net trainer a fold trains with, by class name (segmentation.trainer; cosmos.segmentation.trainer.TRAINERS,
# where each class says what its recipe changes and why). A recipe is a trainer subclass, nnU-Net's way.
SegmentationTrainer = Literal[
    "nnUNetTrainerCosmosBudget",  # nnU-Net's training under the profile's budget (paper)
    "nnUNetTrainerCosmosCPU",  # the CPU recipe: CE class weights, oversampling, field-of-view and not-learning rules
    "nnUNetTrainerCosmosCPUStructureIntensity",  # the CPU recipe + label-aware structure intensity augmentation
]
SEGMENTATION_TRAINERS: tuple[str, ...] = get_args(SegmentationTrainer)
# The segmentation keys that override the trainer's recipe (cosmos.segmentation.trainer.TrainerRecipe): null takes
# the trainer's value. They are kept so that configs which set them load and train as before.
RECIPE_KEYS: tuple[str, ...] = (
    "ce_class_weights",
    "structure_intensity_p",
    "oversample_foreground",
    "probabilistic_oversampling",
    "fov_reference_patches",
    "fov_max_factor",
    "not_learning_max_factor",
)
# Why tracking.promote=better is refused rather than listed among the values it may take.
_PROMOTE_BETTER = (
    "tracking.promote=better chose the champion by the validation labels it was then scored on; use "
    "label_free (no labels read), always (the final round, as the paper) or labels with "
    "tracking.selection_cases (a labelled selection set kept out of the reported score)"
)


def _default_gate() -> list[FidelityCheck]:
    return ["cochlea_in_dark_bone", "vs_above_median", "intensity"]


@dataclass
class PhantomConfig:
    """Built-in synthetic crossMoDA-like dataset (used when no data is given)."""

    n_source: int = 8
    n_target: int = 8
    n_val: int = 4
    seed: int = 0
    scale: Literal["small", "full"] = "small"
    style: Literal["builtin", "random"] = "builtin"  # random: a style drawn from the seed (cosmos.data.phantom.style)


@dataclass
class TranslatorConfig:
    """Target-aware 2D CycleGAN (paper 3.1 and 4.2)."""

    base_channels: int = 16  # first-level width of each generator U-Net
    levels: int = 3  # U-Net depth (the paper: 3 levels)
    disc_channels: int = 16  # first-level width of the PatchGAN discriminators
    disc_layers: int = 3
    image_size: int = 64  # square in-plane training grid (pixels) after resampling
    inplane_spacing: float = 0.8  # mm; common in-plane spacing for training slices
    epochs: int = 3
    batch_size: int = 8
    slices_per_epoch: int = 256  # 0 = every slice of the larger domain each epoch
    lr: float = 1e-4
    lr_decay: float = 0.95  # multiplicative decay per epoch (paper: "multiplicative decay")
    beta1: float = 0.5
    loss_preset: Literal["paper", "report", "custom"] = "paper"  # LOSS_PRESETS, or custom: the lambdas below by hand
    lambda_cycle: float = 0.01
    lambda_adv: float = 0.1
    lambda_identity: float = 0.5
    lambda_seg: float = 1.0
    # Optional k-space cycle term (the team's challenge report; not in the paper): L1 between the 2D FFT
    # log-magnitudes of each input and its cycle reconstruction (cosmos.translation.losses.kspace_cycle_loss).
    lambda_kspace: float = 0.0
    gan_loss: Literal["bce", "lsgan"] = "bce"  # bce = the paper's log-likelihood form; lsgan also available
    seg_translated_start_epoch: int = 5  # Seg^{T->S}(C^{S->T}(x^s)) counts after this epoch
    segmentor: bool = True  # False = pure CycleGAN ablation ("DA w/o Seg.")
    sample_every: int = 1  # epochs between Fig.-3 style sample grids
    convert_batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N (a str, not a Literal: any N; config_validation checks it)
    num_threads: int = 0  # torch CPU threads for training/conversion; 0 = auto (cosmos.cpu)
    # slice sampling / augmentation / normalisation (see cosmos.translation.slices)
    fg_oversample: float = 0.0  # fraction of ceT1 slices drawn from foreground slices (0 = uniform, as the paper)
    # dice = eq. (5) as written; dice_ce adds cross-entropy (faster on tiny CPU runs)
    seg_loss: Literal["dice", "dice_ce"] = "dice"
    flip_augment: bool = True  # random in-plane flips: orientation must not tell the domains apart
    # False = every slice centre-cropped to image_size (the paper's fixed grid); True = slices kept whole (up to
    # 2 x image_size) and a random image_size window per batch, so a wide region of interest (both cochleae of a
    # life-sized head are ~65 mm apart) is seen whole; the fidelity is then scored on whole slices too
    random_crop: bool = False
    norm_low_percentile: float = 0.5  # per-volume robust min-max: clip to these percentiles, map to [-1, 1]
    norm_high_percentile: float = 99.5
    fidelity_cases: int = 4  # source/target volumes scored per epoch (translation fidelity); 0 = off
    # Which generator to keep: last = the final epoch's (the paper); fidelity = the latest epoch whose
    # label-free fidelity score (cosmos.translation.fidelity.Fidelity.score) is within one case of the
    # best (fidelity.EpochChoice). Why: a short GAN run can collapse into a ceT1-like epoch at its end,
    # and among near-tied epochs the later one has had more of the segmentation terms.
    select_epoch: Literal["last", "fidelity"] = "last"
    # How many translators the stage may train when the kept generator fails the label-free checks
    # (checks.fidelity_min_pass): attempt k > 1 trains a fresh generator with seed + k - 1 and the
    # translator-section overrides of retry[k - 2] (the last entry repeats), and the stage keeps the
    # candidate with the best fidelity score. Why: a short GAN run can land in a contrast-inverted
    # optimum (bone bright, tumour black) that no later epoch of the same run leaves; 1 = one attempt.
    max_attempts: int = 1
    retry: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SegmentationConfig:
    """nnU-Net v2 3d_fullres teacher/students (paper 3.2 and 4.2)."""

    configuration: str = "3d_fullres"
    # The nnU-Net trainer class, i.e. the training recipe: its loss weights, augmentation, foreground sampling and
    # budget rules (cosmos.segmentation.trainer; docs/nnunet-cpu.md). The CPU profiles name nnUNetTrainerCosmosCPU
    # (tiny: ...CPUStructureIntensity), paper nnUNetTrainerCosmosBudget (nnU-Net's own training).
    trainer: SegmentationTrainer = "nnUNetTrainerCosmosBudget"
    folds: list[int] = field(default_factory=lambda: [0, 1])
    num_folds: int = 5  # nnU-Net's cross-validation split size
    epochs: int = 2
    # Planned epochs x this (the benchmark's oracle row: K + 1, the cumulative budget of a warm-started chain of a
    # teacher and K students, so that the supervised upper bound is not an under-trained one)
    epochs_multiplier: int = 1
    iterations_per_epoch: int = 25
    val_iterations_per_epoch: int = 5
    batch_size: int = 2
    initial_lr: float = 1e-2
    features_base: int = 16  # 32 in nnU-Net's default plan
    features_max: int = 128  # 320 in nnU-Net's default plan
    # Patch, target spacing and depth, in the PLAN's axis order: nnU-Net moves the coarsest axis first, so for
    # crossMoDA (and the paper) it is (z, y, x). A patch_size or num_stages re-derives the network topology
    # (strides, kernel sizes) from patch + spacing with nnU-Net's own rule (segmentation.planning).
    patch_size: list[int] | None = None  # None = nnU-Net's planned patch (and topology)
    target_spacing: list[float] | None = None  # mm; None = nnU-Net's choice (median; 10th pct. of a coarse axis)
    num_stages: int | None = None  # resolution stages (= downsamplings + 1); None = as many as the patch allows
    patch_size_max: list[int] | None = None  # cap per axis of the planned patch (topology re-derived if need be)
    # The smallest field of view (mm per axis, plan order) the capped patch must cover: where patch_size_max x the
    # planned spacing falls short, the target spacing along that axis is coarsened until it does. Why: a voxel cap
    # means a different anatomy window on every scanner; on life-sized 0.43 mm heads [32, 48, 48] was 42 x 14 x 14 mm
    # and nnU-Net learned nothing in the CPU budgets, on the built-in phantom (0.59 mm) it is 47 x 28 x 28 mm.
    min_patch_mm: list[float] | None = None
    # --- Overrides of the trainer's recipe (RECIPE_KEYS): null = the value of the class `trainer` names; a value
    # set here replaces it (cosmos.segmentation.trainer.effective_recipe). Benchmarks and ablations vary them.
    # Fraction of patches forced to contain foreground (nnU-Net default 0.33; the CPU recipe 0.66). nnU-Net's default
    # rule forces the LAST round(batch_size * fraction) samples of each batch, so at batch size 2 both 0.33 and 0.66
    # force exactly ONE of the two samples (0.5 in effect). Only with probabilistic_oversampling (each sample forced
    # with this probability, nnU-Net's own alternative; the CPU recipe) does a value like 0.66 take effect.
    oversample_foreground: float | None = None
    probabilistic_oversampling: bool | None = None  # nnU-Net's per-sample coin flip instead of the last-XX-percent rule
    # Student rounds: iterations_per_epoch * n_train_cases / n_pseudo_cases (the teacher's case count), so every
    # case is seen as often as in the teacher (see cosmos.segmentation.trainer.TrainerBudget.from_config).
    scale_iterations_with_cases: bool = False
    # Recipe override: iterations per epoch x clip(patches per median case / fov_reference_patches, 1,
    # fov_max_factor); 0 = off (nnU-Net's fixed budget; the CPU recipe: 4 and 3). Why: a CPU budget measured on
    # small crops does not carry over to cases holding many patches (whole-head crops), where each iteration sees
    # a smaller part of each case (cosmos.segmentation.trainer.field_of_view_factor).
    fov_reference_patches: float | None = None
    fov_max_factor: float | None = None
    # Recipe override: cross-entropy weight per label (background, VS, cochlea); [] = nnU-Net's unweighted CE
    # (the paper's trainer; the CPU recipe: 1, 3, 20). Why: the cochlea is ~0.25 % of a patch, so plain CE drives
    # its softmax to ~0.001 within 60 iterations, where the Dice gradient vanishes (p(1-p)); nnU-Net escapes that
    # only after ~1000s of iterations. Measured on labelled phantom hrT2, 160 iterations: cochlea Dice 0.00
    # unweighted, ~0.8 with weight 10.
    ce_class_weights: list[float] | None = None
    # Recipe override: label-aware intensity augmentation (cosmos.segmentation.augmentation): per training patch
    # and labelled structure, the probability of re-rendering that structure at a random brightness inside its
    # label. Why: the teacher learns from pseudo-hrT2, and where the translator gets a structure's contrast wrong
    # the network learns that wrong appearance; 0 = off (nnU-Net's augmentation only; the paper; 1 in
    # nnUNetTrainerCosmosCPUStructureIntensity).
    structure_intensity_p: float | None = None
    mirroring: bool = True  # test-time augmentation (8x flips in 3D)
    # the flipped axes of that augmentation (nnU-Net's array axes z, y, x = 0, 1, 2); None = every axis (the
    # paper's 8 passes); CPU profiles flip fewer axes: each axis doubles the prediction time
    mirror_axes: list[int] | None = None
    # Which VS component a prediction keeps (cosmos.segmentation.inference): largest (the paper) | confident
    # (the highest mean VS probability among components of >= vs_min_component_mm3). Why: at CPU budgets the
    # network marks many VS-like blobs on whole-head crops, and a 4-7 mm tumour is smaller than most of them.
    vs_component: Literal["largest", "confident"] = "largest"
    vs_min_component_mm3: float = 20.0  # a 3.4 mm sphere: below the smallest tumour reported (4 mm)
    # Which cochlea components a prediction keeps (cosmos.segmentation.inference): all (the paper) | per_side (the
    # largest one on each side of the head's midline). Why: a head has two cochleae, and at CPU budgets the network
    # also marks the bright fluid next to them (vestibule, canals) and elsewhere as cochlea.
    cochlea_components: Literal["all", "per_side"] = "all"
    save_probabilities: bool = False
    run_validation: bool = False  # nnU-Net's full-case validation after training
    device: str = "auto"  # as translator.device
    save_every: int = 1  # epochs between checkpoint_latest.pth writes (resume granularity; nnU-Net: 50)
    # Cluster only: also upload each checkpoint to <checkpoint_uri>/<run id>/round_<k>/fold_<f>/ (an s3:// prefix
    # or a mounted directory) so a retried (preempted) fold pod resumes from it; "" = off (see
    # cosmos.segmentation.checkpoint_sync). Local runs resume from their keyed work dir instead.
    checkpoint_uri: str = ""
    # nnU-Net worker pools (integrity check, fingerprint, preprocess, validation); 0 = none: those run
    # in the calling process (a few small cases: spawned workers cost more than the work)
    num_processes: int = 2
    da_workers: int = -1  # augmentation processes: -1 = auto (0 on CPU: in-process, bit-identical; a few on GPU)
    compile: bool = False  # torch.compile the network (GPU only; warm-up dominates short runs)
    tile_step_size: float = 0.5  # sliding-window overlap at inference (nnU-Net default)
    torch_threads: int = 0  # CPU threads for torch; 0 = auto (every core; the local runner splits them per fold)
    # Recipe override: a fold whose own validation pseudo-Dice has not reached checks.min_pseudo_dice for every
    # label by its last planned epoch trains on, half its planned epochs at a time, up to this multiple of them
    # (1 = never: the paper's trainer; the CPU recipe: 2). Why: on scans unlike the ones a CPU budget was measured
    # on, the teacher can still be at all-background when the budget ends
    # (cosmos.segmentation.trainer.nnUNetTrainerCosmosBudget.extend_if_not_learning).
    not_learning_max_factor: float | None = None


@dataclass
class SelfTrainingConfig:
    """Iterative teacher-student self-training (paper 3.3, Algorithm 1)."""

    rounds: int = 2  # K student rounds after the teacher (paper: 3)
    required_labels: list[int] = field(default_factory=lambda: [1, 2])  # drop cases missing any
    # Per required label (same order): a structure whose LARGEST connected component has fewer voxels counts as
    # missing (a stray voxel is not a cochlea). [] = any voxel counts (the paper's filter).
    min_component_voxels: list[int] = field(default_factory=list)
    # image = the paper's case-level filter; pixel = also mark unsure voxels "ignore"
    filter: Literal["image", "pixel"] = "image"
    confidence_threshold: float = 0.9  # pixel filter: voxels whose ensemble max probability is below -> ignore
    # scratch (the paper) | teacher: warm-start each student fold from the previous round
    student_init: Literal["scratch", "teacher"] = "scratch"
    student_lr_scale: float = 1.0  # initial-LR factor for warm-started students (e.g. 0.1 to fine-tune)
    balance_domains: bool = False  # eq. 8: draw pseudo-hrT2 and real hrT2 cases equally often in a student
    # A case the filter rejects in this round keeps its last accepted pseudo-label (true), or leaves the student's
    # training set (false: the paper's Algorithm 1, where each round's filter alone decides).
    carry_over: bool = True


@dataclass
class RoiConfig:
    """Crop every scan to the inner-ear region learnt from the source labels (cosmos.data.roi).

    Why: on whole-head scans a CPU-budget nnU-Net rarely samples the few-mm structures and sliding-
    window prediction over the head costs thousands of patches; the crop makes both tractable.
    """

    enabled: bool = True
    margin_mm: float = 12.0  # widening of the learnt box on every side
    min_size_mm: float = 40.0  # smallest crop edge (mm)
    # along an axis the region cannot place (the head fills the field of view), a labelled source scan
    # longer than this many times the target scans' median window is cut to that window, centred on its
    # labels (a whole-head ceT1 against an hrT2 slab); 0 = never
    source_extent_ratio: float = 1.5


@dataclass
class TrackingConfig:
    """MLflow tracking and registry."""

    tracking_uri: str = ""  # "" = sqlite under the run's output directory
    experiment: str = "cosmos"
    translator_model_name: str = "cosmos-translator"
    segmenter_model_name: str = "cosmos-segmenter"
    champion_alias: str = "champion"
    # Which round holds the champion alias; never a round whose label-free checks failed (cosmos.selftraining.verdict):
    # always      the final round, as in the paper;
    # label_free  the latest round that passes every label-free check (no label is read);
    # labels      the round with the best mean Dice on selection_cases, a labelled selection set that is given
    #             explicitly and kept out of every reported score (the reported Dice is over the other cases).
    promote: Promote = field(default="label_free", metadata={"refused": {"better": _PROMOTE_BETTER}})
    selection_cases: list[str] = field(default_factory=list)  # validation case ids for promote=labels


@dataclass
class ChecksConfig:
    """Label-free quality gates (cosmos.selftraining.verdict): what a run checks without any target label.

    A round that fails one is registered but never promoted, and a run whose final round fails one ends
    with a failure verdict and exit code 3 (``cosmos run``, ``cosmos selftrain``). 0 switches a check off.
    """

    # translation: each sign check named in fidelity_gate must hold in at least this fraction of the sampled cases
    fidelity_min_pass: float = 0.5
    # which translation checks gate (cosmos.translation.fidelity.GATE_DEFAULT says why these): cochlea_in_dark_bone,
    # vs_above_median (the anatomy checks that catch an inverted contrast), intensity (histogram closer to real
    # hrT2 than the untranslated ceT1's), vs_darker_than_fluid, cochlea_bright (contrast signs; reported always)
    fidelity_gate: list[FidelityCheck] = field(default_factory=_default_gate)
    # learning: every label must reach this pseudo-Dice (nnU-Net's own validation patches) in some epoch of every fold
    min_pseudo_dice: float = 0.05
    # plausibility of predictions on real hrT2 (pseudo-labels and validation predictions): at least this fraction of
    # scans with one VS, at most one cochlea per side of the head, and volumes within the source labels' range
    min_plausible: float = 0.5
    # a structure's volume counts as plausible within [min / f, max * f] of the source labels' volumes
    volume_range_factor: float = 4.0
    # pseudo-labels: at least this fraction of the real hrT2 pseudo-labels must pass the filter
    min_kept_fraction: float = 0.25
    # pseudo-labels of a student: their mean Dice against the previous round's accepted labels (the same scans) must
    # reach this; a student that contradicts its teacher on most voxels has learned something else than it was taught
    min_label_agreement: float = 0.5


@dataclass
class CosmosConfig:
    """The whole run. Every stage reads only its own section."""

    profile: str = "tiny"
    seed: int = 0
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    selftraining: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def flat(self, section: str | None = None) -> dict[str, Any]:
        """Dotted-key view, e.g. for ``mlflow.log_params``."""
        data = self.to_dict() if section is None else {section: self.to_dict()[section]}
        return dict(_flatten(data))

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any]) -> CosmosConfig:
        data = self.to_dict()
        items = list(overrides.items()) if isinstance(overrides, Mapping) else [_split_override(o) for o in overrides]
        for key, value in items:
            _set_dotted(data, key, value)
        given = {k.split(".", 1)[1] for k, _ in items if k.startswith("translator.")}
        return from_dict(data, given_translator_keys=given)


_SECTIONS = {
    "phantom": PhantomConfig,
    "translator": TranslatorConfig,
    "segmentation": SegmentationConfig,
    "selftraining": SelfTrainingConfig,
    "roi": RoiConfig,
    "tracking": TrackingConfig,
    "checks": ChecksConfig,
}


def from_dict(data: Mapping[str, Any], given_translator_keys: set[str] | None = None) -> CosmosConfig:
    """Build and validate a config. ``given_translator_keys`` are the translator keys the user set
    explicitly (default: those present in ``data``); they decide how loss presets resolve."""
    data = dict(data)
    if given_translator_keys is None:
        given_translator_keys = set(data.get("translator", {}) or {})
    top = {}
    for key in ("profile", "seed"):
        if key in data:
            top[key] = data.pop(key)
    sections = {}
    for key, value in data.items():
        if key not in _SECTIONS:
            raise ConfigError(f"unknown config section {key!r}; known: {sorted(_SECTIONS)}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"config section {key!r} must be a mapping")
        sections[key] = _build(_SECTIONS[key], value, key)
    cfg = CosmosConfig(**sections)
    if "profile" in top:
        cfg.profile = str(top["profile"])
    if "seed" in top:
        cfg.seed = _coerce(top["seed"], int, "seed")
    _resolve_loss_weights(cfg.translator, given_translator_keys)
    validate(cfg)
    return cfg
