"""One typed configuration object for every COSMOS stage.

Why one object: every stage (translator, nnU-Net rounds, pipeline) reads only its own section, but
the run as a whole must be reproducible from a single YAML file that MLflow logs as params.
Named profiles (YAML files in ``cosmos/profiles/``: a shared CPU base plus deltas) give sensible starting points:

* ``tiny``  - CPU tests and the demo (minutes on 2 cores),
* ``small`` - a meaningful CPU benchmark (the Table-1 ablation in ~75 min of compute on 2 cores),
* ``paper`` - the published settings (GPU; COSMOS paper section 4.2).

Overrides use dotted keys, e.g. ``translator.epochs=3`` or ``segmentation.folds=[0,1]``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from cosmos.errors import CosmosError

PROFILES = ("tiny", "small", "paper")

# Fields that steer only how a trained model predicts (test-time flips, tiling, post-processing). The stages
# that prepare, open and train a round keep them out of their stage keys and the round's MLflow params, so
# changing one re-predicts and re-scores every round but re-trains none (cosmos.resume.stage_key).
PREDICTION_ONLY: tuple[str, ...] = (
    "segmentation.mirroring",
    "segmentation.mirror_axes",
    "segmentation.tile_step_size",
    "segmentation.vs_component",
    "segmentation.vs_min_component_mm3",
    "segmentation.cochlea_components",
    "segmentation.save_probabilities",
)
# How many rounds run. No round's own work depends on it (the last round is a task parameter), so it stays out
# of every per-round stage key: a finished K=1 run resumed with K=2 reuses the teacher and student 1.
ROUND_COUNT: tuple[str, ...] = ("selftraining.rounds",)


def checks_except(*keep: str) -> tuple[str, ...]:
    """The dotted ``checks`` fields other than ``keep``: a stage that reads only ``keep`` leaves the rest out of
    its stage key (``cosmos.resume.stage_key(..., exclude=...)``), so changing a threshold that only the round's
    verdict reads re-registers the rounds but re-trains nothing."""
    return tuple(f"checks.{f.name}" for f in dataclasses.fields(ChecksConfig) if f.name not in keep)


# Loss-weight presets for the translator (lambda_1..lambda_4 of paper eq. 1).
LOSS_PRESETS: dict[str, dict[str, float]] = {
    # The paper, section 4.2, as written: cycle, adversarial, identity, segmentation.
    # No k-space term: the paper has none.
    "paper": {"lambda_cycle": 0.01, "lambda_adv": 0.1, "lambda_identity": 0.5, "lambda_seg": 1.0, "lambda_kspace": 0.0},
    # The team's crossMoDA 2021 technical report: adv:cycle:identity:seg = 1:10:5:100, plus a k-space cycle
    # term. The report's k-space weight is not available to us: 0.1 (= its image-domain cycle weight) is OUR
    # choice (docs/configuration.md).
    "report": {
        "lambda_cycle": 0.1,
        "lambda_adv": 0.01,
        "lambda_identity": 0.05,
        "lambda_seg": 1.0,
        "lambda_kspace": 0.1,
    },
}


class ConfigError(CosmosError, ValueError):
    """A configuration value or override that cannot be applied."""


@dataclass
class PhantomConfig:
    """Built-in synthetic crossMoDA-like dataset (used when no data is given)."""

    n_source: int = 8
    n_target: int = 8
    n_val: int = 4
    seed: int = 0
    scale: str = "small"  # small | full
    style: str = "builtin"  # builtin | random (a dataset style drawn from the seed: cosmos.data.phantom.style)


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
    loss_preset: str = "paper"
    lambda_cycle: float = 0.01
    lambda_adv: float = 0.1
    lambda_identity: float = 0.5
    lambda_seg: float = 1.0
    # Optional k-space cycle term (the team's challenge report; not in the paper): L1 between the 2D FFT
    # log-magnitudes of each input and its cycle reconstruction (cosmos.translation.losses.kspace_cycle_loss).
    lambda_kspace: float = 0.0
    gan_loss: str = "bce"  # bce = the paper's log-likelihood form; lsgan also available
    seg_translated_start_epoch: int = 5  # Seg^{T->S}(C^{S->T}(x^s)) counts after this epoch
    segmentor: bool = True  # False = pure CycleGAN ablation ("DA w/o Seg.")
    sample_every: int = 1  # epochs between Fig.-3 style sample grids
    convert_batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch CPU threads for training/conversion; 0 = auto (cosmos.cpu)
    # slice sampling / augmentation / normalisation (see cosmos.translation.slices)
    fg_oversample: float = 0.0  # fraction of ceT1 slices drawn from foreground slices (0 = uniform, as the paper)
    seg_loss: str = "dice"  # dice = eq. (5) as written; dice_ce adds cross-entropy (faster on tiny CPU runs)
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
    select_epoch: str = "last"
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
    # Fraction of patches forced to contain foreground (nnU-Net default 0.33). nnU-Net's default rule forces
    # the LAST round(batch_size * fraction) samples of each batch, so at batch size 2 both 0.33 and 0.66 force
    # exactly ONE of the two samples (0.5 in effect). Only with probabilistic_oversampling (each sample forced
    # with this probability, nnU-Net's own alternative) does a value like 0.66 take effect.
    oversample_foreground: float = 0.66
    probabilistic_oversampling: bool = False  # nnU-Net's per-sample coin flip instead of the last-XX-percent rule
    # Student rounds: iterations_per_epoch * n_train_cases / n_pseudo_cases (the teacher's case count), so every
    # case is seen as often as in the teacher (see cosmos.segmentation.trainer.TrainerBudget.from_config).
    scale_iterations_with_cases: bool = False
    # Iterations per epoch x clip(patches per median case / fov_reference_patches, 1, fov_max_factor); 0 = off
    # (nnU-Net's fixed budget). Why: a CPU budget measured on small crops does not carry over to cases holding
    # many patches (whole-head crops), where each iteration sees a smaller part of each case
    # (cosmos.segmentation.trainer.field_of_view_factor).
    fov_reference_patches: float = 0.0
    fov_max_factor: float = 3.0
    # Cross-entropy weight per label (background, VS, cochlea); None = nnU-Net's unweighted CE. Why: the
    # cochlea is ~0.25 % of a patch, so plain CE drives its softmax to ~0.001 within 60 iterations, where the
    # Dice gradient vanishes (p(1-p)); nnU-Net escapes that only after ~1000s of iterations. Measured on
    # labelled phantom hrT2, 160 iterations: cochlea Dice 0.00 unweighted, ~0.8 with weight 10.
    ce_class_weights: list[float] | None = None
    # Label-aware intensity augmentation (cosmos.segmentation.augmentation): per training patch and labelled
    # structure, the probability of re-rendering that structure at a random brightness inside its label. Why: the
    # teacher learns from pseudo-hrT2, and where the translator gets a structure's contrast wrong the network
    # learns that wrong appearance; 0 = off (nnU-Net's augmentation only; the paper).
    structure_intensity_p: float = 0.0
    mirroring: bool = True  # test-time augmentation (8x flips in 3D)
    # the flipped axes of that augmentation (nnU-Net's array axes z, y, x = 0, 1, 2); None = every axis (the
    # paper's 8 passes); CPU profiles flip fewer axes: each axis doubles the prediction time
    mirror_axes: list[int] | None = None
    # Which VS component a prediction keeps (cosmos.segmentation.inference): largest (the paper) | confident
    # (the highest mean VS probability among components of >= vs_min_component_mm3). Why: at CPU budgets the
    # network marks many VS-like blobs on whole-head crops, and a 4-7 mm tumour is smaller than most of them.
    vs_component: str = "largest"
    vs_min_component_mm3: float = 20.0  # a 3.4 mm sphere: below the smallest tumour reported (4 mm)
    # Which cochlea components a prediction keeps (cosmos.segmentation.inference): all (the paper) | per_side (the
    # largest one on each side of the head's midline). Why: a head has two cochleae, and at CPU budgets the network
    # also marks the bright fluid next to them (vestibule, canals) and elsewhere as cochlea.
    cochlea_components: str = "all"
    save_probabilities: bool = False
    run_validation: bool = False  # nnU-Net's full-case validation after training
    device: str = "auto"
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
    # A fold whose own validation pseudo-Dice has not reached checks.min_pseudo_dice for every label by its last
    # planned epoch trains on, half its planned epochs at a time, up to this multiple of them (1 = never). Why: on
    # scans unlike the ones a CPU budget was measured on, the teacher can still be at all-background when the budget
    # ends (cosmos.segmentation.trainer.nnUNetTrainerCosmosBudget.extend_if_not_learning).
    not_learning_max_factor: float = 1.0


@dataclass
class SelfTrainingConfig:
    """Iterative teacher-student self-training (paper 3.3, Algorithm 1)."""

    rounds: int = 2  # K student rounds after the teacher (paper: 3)
    required_labels: list[int] = field(default_factory=lambda: [1, 2])  # drop cases missing any
    # Per required label (same order): a structure whose LARGEST connected component has fewer voxels counts as
    # missing (a stray voxel is not a cochlea). [] = any voxel counts (the paper's filter).
    min_component_voxels: list[int] = field(default_factory=list)
    filter: str = "image"  # image = the paper's case-level filter; pixel = also mark unsure voxels "ignore"
    confidence_threshold: float = 0.9  # pixel filter: voxels whose ensemble max probability is below -> ignore
    student_init: str = "scratch"  # scratch (paper) | teacher: warm-start each student fold from the previous round
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
    promote: str = "label_free"
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
    fidelity_gate: list[str] = field(default_factory=lambda: ["cochlea_in_dark_bone", "vs_above_median", "intensity"])
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


def _flatten(data: Mapping[str, Any], prefix: str = ""):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"unknown config section {'.'.join(parts[: i + 1])!r} in override {key!r}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {key!r}; known keys here: {sorted(node)}")
    node[parts[-1]] = value


_SECTIONS = {
    "phantom": PhantomConfig,
    "translator": TranslatorConfig,
    "segmentation": SegmentationConfig,
    "selftraining": SelfTrainingConfig,
    "roi": RoiConfig,
    "tracking": TrackingConfig,
    "checks": ChecksConfig,
}


def _build(cls, values: Mapping[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {where!r}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        kwargs[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Type-check a value against the field's default so typos fail fast."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true/false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):  # "0,1,2" from a CLI
            try:
                return [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{where} must be a list, got {value!r}") from None
        if isinstance(value, int):
            return [value]
        raise ConfigError(f"{where} must be a list, got {value!r}")
    return value


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
        cfg.seed = _coerce(top["seed"], 0, "seed")
    _resolve_loss_weights(cfg.translator, given_translator_keys)
    validate(cfg)
    return cfg


_LAMBDAS = ("lambda_cycle", "lambda_adv", "lambda_identity", "lambda_seg", "lambda_kspace")


def _resolve_loss_weights(t: TranslatorConfig, given: set[str]) -> None:
    """A named preset sets lambda_1..4; weights given by hand make the preset ``custom``."""
    if t.loss_preset not in LOSS_PRESETS and t.loss_preset != "custom":
        raise ConfigError(
            f"translator.loss_preset must be one of {sorted(LOSS_PRESETS) + ['custom']}, got {t.loss_preset!r}"
        )
    hand = [k for k in _LAMBDAS if k in given]
    if "loss_preset" in given and t.loss_preset != "custom":
        preset = LOSS_PRESETS[t.loss_preset]
        clash = [k for k in hand if getattr(t, k) != preset[k]]
        if clash:
            raise ConfigError(
                f"translator.loss_preset={t.loss_preset} fixes {clash}; set translator.loss_preset=custom "
                "to give loss weights by hand"
            )
        for k, v in preset.items():
            setattr(t, k, v)
    elif hand:
        t.loss_preset = "custom"
    elif t.loss_preset != "custom":
        for k, v in LOSS_PRESETS[t.loss_preset].items():
            setattr(t, k, v)


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
    known = {f.name for f in dataclasses.fields(TranslatorConfig)} - {"retry", "max_attempts"}
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


def _profile_dict(name: str) -> dict[str, Any]:
    """A named profile as a config mapping: ``cosmos/profiles/<name>.yaml`` over the profile it inherits."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {PROFILES}")
    return {"profile": name, **_profile_file(name, ())}


def _profile_file(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """One profile file (package data, so an installed package finds it) with its ``inherits`` chain resolved:
    the file's mappings deep-merged over its parent's, lists replaced (``deep_merge``)."""
    if name in seen:
        raise ConfigError(f"profile {name!r} inherits from itself: {' -> '.join((*seen, name))}")
    resource = resources.files("cosmos") / "profiles" / f"{name}.yaml"
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"profile file {name}.yaml not found in cosmos/profiles") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile file {name}.yaml: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {name}.yaml: top level must be a mapping")
    parent = data.pop("inherits", None)
    if parent is None:
        return data
    return deep_merge(_profile_file(str(parent), (*seen, name)), data)


def load_config(
    profile: str = "tiny",
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> CosmosConfig:
    """Profile defaults, then a YAML file (if given), then dotted overrides."""
    data = _profile_dict(profile)
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = deep_merge(data, loaded)
    cfg = from_dict(data)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    check_no_credentials(cfg)
    return cfg


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_loss_preset(cfg: CosmosConfig, preset: str) -> CosmosConfig:
    """Return a copy whose translator loss weights follow a named preset."""
    return cfg.with_overrides({"translator.loss_preset": preset})


def check_no_credentials(cfg: CosmosConfig) -> None:
    """Refuse a password or token inside any URI of the config (``--set`` or ``--config``).

    Why here: every command (run, compile, submit, each KFP task) loads its config through
    ``load_config``, and a credential accepted here lands in the compiled YAML, the logs and MLflow.
    The message masks the value and points to the Kubernetes Secret (see ``cosmos.secrets``).
    """
    from cosmos.secrets import credential_problems

    problems = credential_problems(cfg.to_dict())
    if problems:
        raise ConfigError(problems[0])
