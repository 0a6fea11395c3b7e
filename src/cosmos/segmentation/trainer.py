"""The COSMOS nnU-Net trainers: nnU-Net's trainer with the budget from our profile, and named recipes.

A recipe is a trainer subclass named after what it changes, nnU-Net's own way to express one
(``nnUNetTrainerDA5``, ``nnUNetTrainer_250epochs``); ``segmentation.trainer`` names the class a
profile trains with:

* ``nnUNetTrainerCosmosBudget`` (``paper``): nnU-Net's training -- loss, augmentation, sampling --
  under the profile's budget,
* ``nnUNetTrainerCosmosCPU`` (the CPU base ``cpu.yaml``, so ``small``): the recipe that learns the
  few-mm structures within minutes on 2 cores (class weights of the CE loss, probabilistic foreground
  oversampling, the field-of-view and not-learning budget rules; the class docstring says why),
* ``nnUNetTrainerCosmosCPUStructureIntensity`` (``tiny``): that recipe plus the label-aware structure
  intensity augmentation (:mod:`cosmos.segmentation.augmentation`).

A recipe is the class attribute ``recipe`` (:class:`TrainerRecipe`). Its fields keep their config
keys under ``segmentation`` (``ce_class_weights``, ``structure_intensity_p``, ...): null (the
default) takes the trainer's value, a value set in a config overrides it (:func:`effective_recipe`),
so configs that set one still load and train as before.

What nnUNetTrainerCosmosBudget changes (and nothing else; loss = Dice + CE with deep supervision,
SGD + poly LR, augmentation: all nnU-Net defaults unless the recipe says otherwise):

* epochs, iterations per epoch, validation iterations per epoch (nnU-Net: 1000 x 250 / 50),
* initial learning rate (nnU-Net: 1e-2, the paper's value too),
* foreground oversampling (nnU-Net: 0.33; the CPU recipe raises it so the small cochlea is seen) and
  nnU-Net's own ``probabilistic_oversampling`` switch: nnU-Net's default forces the last
  ``round(batch_size * fraction)`` samples of a batch, which at batch size 2 is ONE sample for any
  fraction in (0.25, 0.75); with the switch each sample is forced with probability ``fraction``,
* optional cross-entropy class weights (nnU-Net: unweighted). Why: at CPU budgets (60-200 iterations)
  unweighted CE drives the tiny cochlea's softmax to ~0.001 before the network can tell it apart,
  and there the Dice gradient vanishes; the cochlea is then never predicted (Dice 0.00 at 160
  iterations on labelled phantom hrT2; ~0.8 with weight 10 on the cochlea),
* checkpoint cadence (``save_every``; nnU-Net: 50 epochs) so a killed fold loses little work,
* writes checkpoints atomically (temp file + rename) so a kill never leaves a truncated
  ``checkpoint_final.pth`` that would look finished,
* relocates its output folder to a flat fold directory chosen by the caller,
* redraws ``progress.png`` at most once a minute, and always after the last epoch
  (:class:`ProgressPlotThrottledLogger`; nnU-Net: every epoch). Why: on 2 CPU cores an epoch takes
  ~20 s and nnU-Net's three-panel matplotlib figure ~1 s, so drawing it every epoch cost 5% of
  training; on a GPU (epochs of a minute or more) it still redraws every epoch,
* calls ``epoch_end_callbacks`` after every epoch (the MLflow hook; see below).

Two more behaviours, each in its own place:

* ``warm_start(trainer, fold_dir)``: a student fold starts from a trained fold's network weights
  (all of them, segmentation heads included; fresh optimizer and LR schedule),
* ``nnUNetTrainerCosmosBalancedDomains`` (and its recipe variants, e.g.
  ``nnUNetTrainerCosmosCPUBalancedDomains``): paper eq. 8 as written -- the pseudo-hrT2 term and the
  real-hrT2 term each averaged over their own cases -- realised by drawing cases so that both
  domains are sampled equally often, whatever their case counts.

How a trainer is found: :data:`TRAINERS` maps each class name to its class (:func:`trainer_named`).
nnU-Net's own name lookup (CLI ``-tr``, ``nnUNet_extTrainer``) imports every trainer module in
nnunetv2, including ``primus`` -> timm -> torchvision, which crashes on the CPU torch here; it also
would not find a class outside nnunetv2. ``training.train_fold`` takes the class from
:data:`TRAINERS` and builds it with nnU-Net's exact ``__init__`` signature (as
``nnunetv2.run.run_training`` does) and drives it through ``run_training()``; code that runs
nnU-Net's own entry point substitutes :func:`trainer_named` for its lookup
(``benchmarks/nnunet_overhead.py``). A trainer constructed that way applies its recipe in
``__init__`` and its ``default_budget`` when one is set.

Epoch-end hook
--------------
``trainer.epoch_end_callbacks`` is a list of callables ``cb(epoch: int, metrics: dict[str, float])``
called after nnU-Net's own ``on_epoch_end`` (so the progress plot and checkpoints are written).
``epoch`` is 0-based. ``metrics`` holds (values read from nnU-Net's logger for that epoch):

* ``train_loss``, ``val_loss``        - mean Dice+CE loss (negative values are normal for nnU-Net)
* ``pseudo_dice``                     - nnU-Net's mean foreground pseudo-Dice on the val iterations
* ``ema_pseudo_dice``                 - its exponential moving average (what nnU-Net uses for "best")
* ``pseudo_dice_<label name>``        - per class, e.g. ``pseudo_dice_VS``, ``pseudo_dice_cochlea``
* ``lr``                              - learning rate used during the epoch
* ``epoch_time_s``                    - wall time of the epoch

A callback that raises is logged as a warning and never stops training.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosmos import events
from cosmos.segmentation.environment import FINAL_CHECKPOINT

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]


def scaled_iterations(base: int, n_train_cases: int, n_pseudo_cases: int) -> int:
    """``base * n_train_cases / n_pseudo_cases``, rounded (at least ``base`` cases' worth: never below 1).

    Why: the teacher trains on the ``n_pseudo_cases`` labelled pseudo-hrT2 cases; a student adds the
    kept real hrT2 cases. With the same iterations each case would be seen less often than in the
    teacher, so at CPU budgets a student can lose what the teacher barely learned.
    """
    if n_pseudo_cases <= 0:
        raise ValueError(f"n_pseudo_cases must be > 0, got {n_pseudo_cases}")
    return max(1, int(round(base * n_train_cases / n_pseudo_cases)))


def patches_per_case(plans: dict, configuration: str) -> float:
    """How many patches the median case holds: prod(median image size) / prod(patch size), in voxels.

    Both at the configuration's spacing (the base configuration is planned at the spacing the COSMOS
    configuration trains at; the latter only changes patch and topology, and inherits the median).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(plans).get_configuration(configuration)  # nnU-Net resolves ``inherits_from``
    return float(np.prod(cm.median_image_size_in_voxels)) / float(np.prod(cm.patch_size))


def field_of_view_factor(n_patches: float, reference: float, max_factor: float) -> float:
    """``clip(n_patches / reference, 1, max_factor)``; 1 when ``reference`` <= 0 (off).

    Why: one training iteration sees a patch; where a case holds many patches (a whole-head crop
    around two ears) each iteration covers a smaller part of it, and at CPU budgets the network
    meets too little of the background it must learn to leave unmarked (VS-like blobs, the other
    bright fluid) and too few views of a structure a few mm wide. nnU-Net's fixed 250,000
    iterations make this moot on a GPU; a CPU budget measured on small crops does not carry over.
    """
    if reference <= 0:
        return 1.0
    return float(min(max(n_patches / reference, 1.0), max(1.0, max_factor)))


class ProgressPlotThrottledLogger(MetaLogger):
    """nnU-Net's logger, drawing ``progress.png`` at most every ``min_interval_s`` seconds.

    ``plot_progress_png(folder, force=True)`` always draws (the trainer forces the final picture).
    Everything else -- values, checkpoint state, optional W&B -- is nnU-Net's own logger's.
    """

    min_interval_s: float = 60.0
    _last_plot: float = 0.0  # time.monotonic() of the last drawing (or of adoption)

    @classmethod
    def adopt(cls, logger: MetaLogger) -> ProgressPlotThrottledLogger:
        """The same logger (same state, same sub-loggers) with the throttled plot: nothing is
        constructed twice, so an enabled W&B logger does not open a second run."""
        new = cls.__new__(cls)
        new.__dict__.update(logger.__dict__)
        new._last_plot = time.monotonic()
        return new

    def plot_progress_png(self, output_folder: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_plot >= self.min_interval_s:
            super().plot_progress_png(output_folder)
            self._last_plot = now


@dataclass(frozen=True)
class TrainerRecipe:
    """What a trainer changes in nnU-Net's training besides the budget: loss weights, augmentation,
    foreground sampling and the budget rules. A trainer class carries one as ``recipe``.

    Each field has a ``segmentation`` config key of the same name; null there (the default) takes the
    trainer's value, anything else overrides it (:func:`effective_recipe`). Why both: the recipe is
    named and reviewed as a class, nnU-Net's way, while benchmarks and ablations still vary one knob
    from the command line without writing a class per value.
    """

    #: cross-entropy weight per label (background first); None = nnU-Net's unweighted CE
    ce_class_weights: tuple[float, ...] | None = None
    #: label-aware structure intensity augmentation per structure (0 = off: nnU-Net's augmentation only)
    structure_intensity_p: float = 0.0
    #: fraction of patches forced to hold foreground (nnU-Net: 0.33)
    oversample_foreground: float = 0.33
    #: nnU-Net's per-sample coin flip instead of forcing the last samples of a batch (see the module docstring)
    probabilistic_oversampling: bool = False
    #: iterations x clip(patches per median case / this, 1, fov_max_factor); 0 = off (:func:`field_of_view_factor`)
    fov_reference_patches: float = 0.0
    fov_max_factor: float = 3.0
    #: a fold with a label below checks.min_pseudo_dice trains on up to this multiple of its epochs (1 = never)
    not_learning_max_factor: float = 1.0

    def overridden_by(self, seg: Any) -> TrainerRecipe:
        """This recipe with every field that ``seg`` (a ``SegmentationConfig``) sets (not None) put over it.

        ``ce_class_weights: []`` means unweighted CE whatever the trainer (null already means "the
        trainer's"). Values are normalised (floats, a tuple of weights) so equal recipes compare equal.
        """
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(seg, f.name, None)
            if value is None:
                continue
            if f.name == "ce_class_weights":
                changes[f.name] = tuple(float(w) for w in value) or None
            elif f.name == "probabilistic_oversampling":
                changes[f.name] = bool(value)
            else:
                changes[f.name] = float(value)
        return replace(self, **changes)


@dataclass
class TrainerBudget:
    """The knobs the profile controls (see ``cosmos.config.SegmentationConfig``), with the recipe's
    values resolved: what one fold's trainer applies (:meth:`nnUNetTrainerCosmosBudget.apply_budget`)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    oversample_foreground: float = 0.33
    probabilistic_oversampling: bool = False  # nnU-Net's per-sample coin flip (see module docstring)
    save_every: int = 50
    ce_class_weights: list[float] | None = None  # one per label (background first); None = unweighted
    structure_intensity_p: float = 0.0  # label-aware intensity augmentation per structure (0 = off, nnU-Net's)
    # not learning: a label below min_pseudo_dice in every epoch so far extends training (see extend_if_not_learning)
    not_learning_max_factor: float = 1.0
    min_pseudo_dice: float = 0.0

    @classmethod
    def from_config(
        cls,
        seg,
        prepared=None,
        lr_scale: float = 1.0,
        min_pseudo_dice: float = 0.0,
        trainer: type[nnUNetTrainerCosmosBudget] | None = None,
    ) -> TrainerBudget:
        """The budget for one fold.

        ``trainer``: the class that will train (default: the one ``seg.trainer`` names); its
        :class:`TrainerRecipe`, overridden by the keys ``seg`` sets, gives the loss weights,
        augmentation, oversampling and budget rules (:func:`effective_recipe`).
        ``prepared`` (a ``PreparedRound``): with ``seg.scale_iterations_with_cases`` the iterations
        per epoch follow :func:`scaled_iterations` with the round's ``num_cases`` / ``num_pseudo``
        (a teacher has no real cases, so its budget is unchanged); with the recipe's
        ``fov_reference_patches`` > 0 they are also multiplied by :func:`field_of_view_factor` of the
        round's plan. ``lr_scale`` multiplies the initial learning rate
        (``selftraining.student_lr_scale`` for warm-started students).
        """
        recipe = effective_recipe(seg, trainer)
        iterations = int(seg.iterations_per_epoch)
        if getattr(seg, "scale_iterations_with_cases", False) and prepared is not None:
            iterations = scaled_iterations(iterations, prepared.num_cases, prepared.num_pseudo)
        if recipe.fov_reference_patches > 0 and prepared is not None:
            n_patches = patches_per_case(prepared.plans(), prepared.configuration)
            factor = field_of_view_factor(n_patches, recipe.fov_reference_patches, recipe.fov_max_factor)
            if factor > 1.0:
                log.info(
                    "field of view: the median case holds %.1f patches (reference %.1f): iterations x %.2f",
                    n_patches,
                    recipe.fov_reference_patches,
                    factor,
                )
            iterations = max(1, int(round(iterations * factor)))
        return cls(
            epochs=int(seg.epochs) * max(1, int(getattr(seg, "epochs_multiplier", 1))),
            iterations_per_epoch=iterations,
            val_iterations_per_epoch=seg.val_iterations_per_epoch,
            initial_lr=seg.initial_lr * float(lr_scale),
            oversample_foreground=recipe.oversample_foreground,
            probabilistic_oversampling=recipe.probabilistic_oversampling,
            save_every=seg.save_every,
            ce_class_weights=None if recipe.ce_class_weights is None else list(recipe.ce_class_weights),
            structure_intensity_p=recipe.structure_intensity_p,
            not_learning_max_factor=recipe.not_learning_max_factor,
            min_pseudo_dice=float(min_pseudo_dice),
        )


class nnUNetTrainerCosmosBudget(nnUNetTrainer):
    """nnU-Net trainer whose budget comes from the COSMOS profile (see the module docstring).

    Its recipe is nnU-Net's own: unweighted CE, nnU-Net's augmentation, foreground oversampling 0.33
    by nnU-Net's last-samples rule, a fixed budget. The ``paper`` profile trains with it.
    """

    #: What this trainer changes in nnU-Net's training besides the budget (subclasses name a recipe).
    recipe: ClassVar[TrainerRecipe] = TrainerRecipe()
    #: Applied in ``__init__`` when set. Lets code that constructs the trainer the nnU-Net way
    #: (``nnunetv2.run.run_training``, used by benchmarks/nnunet_overhead.py) get the same budget.
    default_budget: TrainerBudget | None = None
    #: Set by ``nnUNetTrainer.__init__`` (untyped there): the path of its text log.
    log_file: str
    #: nnU-Net's logger, adopted in ``__init__`` (progress plot throttled).
    logger: ProgressPlotThrottledLogger

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger = ProgressPlotThrottledLogger.adopt(self.logger)
        self.epoch_end_callbacks: list[EpochCallback] = []
        self.ce_class_weights: list[float] | None = None
        self.structure_intensity_p = 0.0
        self.planned_epochs = self.num_epochs
        self.max_epochs_if_not_learning = self.num_epochs
        self.min_pseudo_dice = 0.0
        self.apply_recipe(type(self).recipe)
        budget = type(self).default_budget
        if budget is not None:
            self.apply_budget(budget)

    # ------------------------------------------------------------------ configuration
    def apply_recipe(self, recipe: TrainerRecipe) -> None:
        """The recipe's loss weights, augmentation and oversampling at nnU-Net's own budget: what a
        trainer constructed the nnU-Net way (``nnunetv2.run.run_training``, no budget) trains with.
        :meth:`apply_budget` later replaces all of it with the profile's resolved values."""
        if self.was_initialized:
            raise RuntimeError("apply_recipe must be called before the trainer is initialized")
        self.oversample_foreground_percent = float(recipe.oversample_foreground)
        self.probabilistic_oversampling = bool(recipe.probabilistic_oversampling)
        self.ce_class_weights = None if recipe.ce_class_weights is None else [float(w) for w in recipe.ce_class_weights]
        self.structure_intensity_p = float(recipe.structure_intensity_p)
        self.max_epochs_if_not_learning = max(
            self.num_epochs, int(math.ceil(self.num_epochs * float(recipe.not_learning_max_factor)))
        )

    def apply_budget(self, budget: TrainerBudget) -> None:
        """Set the budget; must happen before training starts (initialize() reads lr/oversampling)."""
        if self.was_initialized:
            raise RuntimeError("apply_budget must be called before the trainer is initialized")
        self.num_epochs = int(budget.epochs)
        self.num_iterations_per_epoch = int(budget.iterations_per_epoch)
        self.num_val_iterations_per_epoch = int(budget.val_iterations_per_epoch)
        self.initial_lr = float(budget.initial_lr)
        self.oversample_foreground_percent = float(budget.oversample_foreground)
        self.probabilistic_oversampling = bool(budget.probabilistic_oversampling)  # read by get_dataloaders
        self.save_every = max(1, int(budget.save_every))
        self.ce_class_weights = None if budget.ce_class_weights is None else [float(w) for w in budget.ce_class_weights]
        self.structure_intensity_p = float(budget.structure_intensity_p)
        self.planned_epochs = self.num_epochs
        self.max_epochs_if_not_learning = max(
            self.num_epochs, int(math.ceil(self.num_epochs * float(budget.not_learning_max_factor)))
        )
        self.min_pseudo_dice = float(budget.min_pseudo_dice)

    def get_training_transforms(self, *args, **kwargs):  # type: ignore[override]
        """nnU-Net's training augmentation, plus the label-aware structure intensity edit when
        ``structure_intensity_p`` > 0 (:mod:`cosmos.segmentation.augmentation`). nnU-Net calls this
        through ``self`` in ``get_dataloaders``; its own definition is a staticmethod."""
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        if self.structure_intensity_p <= 0.0:
            return transforms
        from cosmos.segmentation.augmentation import StructureIntensityTransform, with_structure_intensity

        labels = tuple(int(v) for v in self.label_manager.foreground_labels)
        log.info("structure intensity augmentation: labels %s, p %.2f per label", labels, self.structure_intensity_p)
        return with_structure_intensity(
            transforms, StructureIntensityTransform(labels=labels, p_per_label=self.structure_intensity_p)
        )

    def _build_loss(self):
        """nnU-Net's Dice + CE (deep supervision), with ``ce_class_weights`` put on the CE term."""
        loss = super()._build_loss()
        if self.ce_class_weights is None:
            return loss
        if self.label_manager.has_regions:
            raise RuntimeError("ce_class_weights needs label (not region) training")
        n = len(self.label_manager.all_labels)
        if len(self.ce_class_weights) != n:
            raise RuntimeError(
                f"ce_class_weights has {len(self.ce_class_weights)} entries; the dataset has {n} labels "
                f"({self.label_manager.all_labels})"
            )
        inner = getattr(loss, "loss", loss)  # DeepSupervisionWrapper -> DC_and_CE_loss
        inner.ce.weight = torch.tensor(self.ce_class_weights, dtype=torch.float32, device=self.device)
        log.info("cross-entropy class weights %s", self.ce_class_weights)
        return loss

    def use_output_folder(self, folder: str | Path) -> None:
        """Write everything (checkpoints, plans.json, logs, progress.png) flat into ``folder``.

        nnU-Net derives ``output_folder`` from ``nnUNet_results`` in ``__init__`` and has already
        created its log file there; we move that log file over and repoint both folders.
        """
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        old_log = Path(self.log_file) if self.log_file else None
        self.output_folder_base = str(folder)
        self.output_folder = str(folder)
        self.logger.output_folder = str(folder)
        if old_log is not None and old_log.exists() and old_log.parent != folder:
            new_log = folder / old_log.name
            shutil.move(str(old_log), str(new_log))
            self.log_file = str(new_log)

    # ------------------------------------------------------------------ not learning
    def best_pseudo_dice(self) -> dict[str, float]:
        """Per foreground label, the best validation pseudo-Dice of any epoch so far (0 before the first)."""
        try:
            history = list(self.logger.get_value("dice_per_class_or_region", step=None))
        except (KeyError, TypeError):
            history = []
        names = self._foreground_names()
        best = [0.0] * len(names)
        for per_class in history:
            for i, value in enumerate(list(per_class)[: len(names)]):
                if np.isfinite(value):
                    best[i] = max(best[i], float(value))
        return dict(zip(names, best))

    def labels_not_learned(self) -> list[str]:
        """Foreground labels whose validation pseudo-Dice never reached ``min_pseudo_dice`` in any epoch so far."""
        return [name for name, value in self.best_pseudo_dice().items() if value < self.min_pseudo_dice]

    def extend_if_not_learning(self) -> bool:
        """At the end of the planned epochs: train on when a label is not learned yet, within the cap.

        Adds half the planned epochs (at least one) at a time, up to ``max_epochs_if_not_learning``, and
        stretches the poly learning-rate schedule over the new length. Returns True when it extended.
        Why here: the budget was measured on other scans; a fold still at pseudo-Dice 0 when it ends is
        useless, and a few more epochs at a non-zero learning rate is the cheapest remedy to try.
        """
        if self.min_pseudo_dice <= 0 or self.num_epochs >= self.max_epochs_if_not_learning:
            return False
        missing = self.labels_not_learned()
        if not missing:
            return False
        step = max(1, self.planned_epochs // 2)
        # a fold resumed after an earlier extension has current_epoch past the planned end
        new = min(self.max_epochs_if_not_learning, max(self.num_epochs, self.current_epoch) + step)
        if new <= self.current_epoch:
            return False
        log.warning(
            "fold %d: pseudo-Dice of %s still below %.2f after %d epochs: training on to %d epochs (cap %d)",
            self.fold,
            "/".join(missing),
            self.min_pseudo_dice,
            self.num_epochs,
            new,
            self.max_epochs_if_not_learning,
        )
        self.print_to_log_file(f"not learning {missing}: extending to {new} epochs")
        self.num_epochs = new
        if hasattr(self.lr_scheduler, "max_steps"):
            self.lr_scheduler.max_steps = new
        return True

    def run_training(self):
        """nnU-Net's training loop, with its epoch bound re-read each epoch (:meth:`extend_if_not_learning`)."""
        self.on_train_start()
        while self.current_epoch < self.num_epochs or self.extend_if_not_learning():
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.on_train_end()

    # ------------------------------------------------------------------ hooks
    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        events.progress("nnU-Net", self.current_epoch, self.num_epochs, "epoch")  # the console's bar (cosmos.events)
        if not self.epoch_end_callbacks:
            return
        metrics = self.epoch_metrics()
        for cb in list(self.epoch_end_callbacks):
            try:
                cb(epoch, dict(metrics))
            except Exception as exc:  # never fail a training because logging failed
                log.warning("epoch-end callback %r failed at epoch %d: %s", cb, epoch, exc)

    def on_train_end(self):
        """The final ``progress.png`` (the throttled logger may have skipped the last epochs'), then nnU-Net's end."""
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder, force=True)
        super().on_train_end()

    def epoch_metrics(self, step: int = -1) -> dict[str, float]:
        """Metrics of one epoch (default: the last) from nnU-Net's logger, as plain floats."""
        get = self.logger.get_value
        out: dict[str, float] = {}

        def put(key: str, name: str) -> None:
            try:
                out[name] = float(get(key, step=step))
            except (IndexError, KeyError, TypeError, ValueError):
                pass

        put("train_losses", "train_loss")
        put("val_losses", "val_loss")
        put("mean_fg_dice", "pseudo_dice")
        put("ema_fg_dice", "ema_pseudo_dice")
        put("lrs", "lr")
        try:
            out["epoch_time_s"] = float(
                get("epoch_end_timestamps", step=step) - get("epoch_start_timestamps", step=step)
            )
        except (IndexError, KeyError, TypeError):
            pass
        try:
            per_class = list(get("dice_per_class_or_region", step=step))
        except (IndexError, KeyError, TypeError):
            per_class = []
        names = self._foreground_names()
        for i, value in enumerate(per_class):
            name = names[i] if i < len(names) else f"class_{i + 1}"
            out[f"pseudo_dice_{name}"] = float(value)
        return {k: v for k, v in out.items() if np.isfinite(v)}

    def _foreground_names(self) -> list[str]:
        by_value = {}
        for name, value in self.dataset_json.get("labels", {}).items():
            if isinstance(value, int) and value != 0:
                by_value[value] = name
        return [by_value.get(int(v), f"class_{v}") for v in self.label_manager.foreground_labels]

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temp file then renamed (a kill never leaves half a file)."""
        tmp = f"{filename}.tmp"
        super().save_checkpoint(tmp)
        if os.path.exists(tmp):
            os.replace(tmp, filename)


class nnUNetTrainerCosmosCPU(nnUNetTrainerCosmosBudget):
    """The CPU recipe: nnU-Net learning a few-mm cochlea and a 4-7 mm tumour within minutes on 2 cores
    (``cpu.yaml``, so ``small``). Every value was measured on the built-in phantom or life-sized heads:

    * CE class weights (background, VS, cochlea) 1, 3, 20: unweighted CE drives the cochlea's softmax to
      ~0.001 within ~60 iterations, where the Dice gradient vanishes. Measured in ``small``'s teacher
      (250 iterations): [1, 1, 10] learned no cochlea in one fold and nothing in the other; [1, 3, 20]
      learned both (cochlea pseudo-Dice 0.73 / 0.64);
    * foreground oversampling 0.66, probabilistic: nnU-Net's rule forces one sample of a batch of 2
      whatever the fraction; the per-sample coin flip makes 0.66 mean 0.66;
    * budget by field of view (reference 4 patches, at most 3x): up to 3x the iterations where the median
      case holds more than 4 patches (whole-head crops; the phantom's ROI crops hold 2.8-3.8, unchanged).
      Measured on life-sized heads: cochlea Dice 0.52 at 240 iterations, 0.78 at 720;
    * not learning: a fold whose pseudo-Dice for a label is still below ``checks.min_pseudo_dice`` after
      its planned epochs trains on, up to twice them (the budget was measured on other scans).

    Loss (Dice + CE), optimiser, schedule and augmentation are otherwise nnU-Net's.
    """

    recipe: ClassVar[TrainerRecipe] = replace(
        nnUNetTrainerCosmosBudget.recipe,
        ce_class_weights=(1.0, 3.0, 20.0),
        oversample_foreground=0.66,
        probabilistic_oversampling=True,
        fov_reference_patches=4.0,
        fov_max_factor=3.0,
        not_learning_max_factor=2.0,
    )


class nnUNetTrainerCosmosCPUStructureIntensity(nnUNetTrainerCosmosCPU):
    """The CPU recipe plus the label-aware structure intensity augmentation at p = 1 per structure
    (``tiny``; :mod:`cosmos.segmentation.augmentation`): every labelled structure of a training patch
    is re-rendered at a random brightness inside its label, so the network learns the structures'
    shape and surroundings rather than the translator's rendering of them. Measured: life-sized mean
    Dice 0.04 -> 0.35; the demo's teacher 0.785 -> 0.803. Not in ``small``: not measured there.
    """

    recipe: ClassVar[TrainerRecipe] = replace(nnUNetTrainerCosmosCPU.recipe, structure_intensity_p=1.0)


# ---------------------------------------------------------------------------------- warm start
def network_plan_differences(
    trained_plans: dict,
    trained_configuration: str,
    plans: dict,
    configuration: str,
    trained_dataset_json: dict,
    dataset_json: dict,
) -> list[str]:
    """What makes a trained fold's network unusable as the start of a new fold ([] = compatible).

    Compared: network class and all its constructor arguments (stages, features, kernels, strides,
    deep-supervision layout), input channels and segmentation heads (an ``ignore`` label adds no
    head, so a pixel-filtered student still matches its teacher). Spacing and patch size may differ:
    the weights are a valid start at any patch size.
    """
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    diffs: list[str] = []
    pm_a, pm_b = PlansManager(trained_plans), PlansManager(plans)
    try:
        cm_a, cm_b = pm_a.get_configuration(trained_configuration), pm_b.get_configuration(configuration)
    except (KeyError, RuntimeError) as exc:
        return [f"configuration missing ({exc})"]
    if cm_a.network_arch_class_name != cm_b.network_arch_class_name:
        diffs.append(f"network class {cm_a.network_arch_class_name} vs {cm_b.network_arch_class_name}")
    ka, kb = cm_a.network_arch_init_kwargs, cm_b.network_arch_init_kwargs
    for key in sorted(set(ka) | set(kb)):
        if ka.get(key) != kb.get(key):
            diffs.append(f"{key} {ka.get(key)} vs {kb.get(key)}")
    ch_a = determine_num_input_channels(pm_a, cm_a, trained_dataset_json)
    ch_b = determine_num_input_channels(pm_b, cm_b, dataset_json)
    if ch_a != ch_b:
        diffs.append(f"input channels {ch_a} vs {ch_b}")
    heads_a = pm_a.get_label_manager(trained_dataset_json).num_segmentation_heads
    heads_b = pm_b.get_label_manager(dataset_json).num_segmentation_heads
    if heads_a != heads_b:
        diffs.append(f"segmentation heads {heads_a} vs {heads_b}")
    if cm_a.normalization_schemes != cm_b.normalization_schemes:
        diffs.append(f"normalization {cm_a.normalization_schemes} vs {cm_b.normalization_schemes}")
    return diffs


def warm_start(trainer: nnUNetTrainer, fold_dir: str | Path, checkpoint: str = FINAL_CHECKPOINT) -> dict:
    """Load a trained fold's network weights into ``trainer`` (initialising it first); returns a record.

    Network weights only: the optimizer, LR schedule, epoch counter and logs stay fresh, so the
    student runs its own full schedule from its own initial LR. Every weight is taken, the
    segmentation heads (``seg_layers``, one per deep-supervision output) included -- unlike nnU-Net's
    ``load_pretrained_weights``, which skips the heads because it fine-tunes onto other labels; here
    the labels are the same. The training network always has all heads (deep supervision only
    changes which outputs ``forward`` returns), so state dicts match key for key.

    Raises ``CosmosError`` naming both sides when the plans' networks differ.
    """
    import json

    from torch._dynamo import OptimizedModule

    from cosmos.errors import CosmosError

    fold_dir = Path(fold_dir)
    ckpt_path, plans_path, ds_path = fold_dir / checkpoint, fold_dir / "plans.json", fold_dir / "dataset.json"
    for p in (ckpt_path, plans_path, ds_path):
        if not p.is_file():
            raise CosmosError(f"{fold_dir}: cannot warm-start from it ({p.name} missing; not a trained fold)")
    try:
        ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CosmosError(f"{ckpt_path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    trained_cfg = ckpt.get("init_args", {}).get("configuration", trainer.configuration_name)
    diffs = network_plan_differences(
        json.loads(plans_path.read_text()),
        trained_cfg,
        trainer.plans_manager.plans,
        trainer.configuration_name,
        json.loads(ds_path.read_text()),
        trainer.dataset_json,
    )
    if diffs:
        raise CosmosError(
            f"{fold_dir}: its network plan differs from this round's ({'; '.join(diffs)}); a student "
            "can only warm-start from a teacher planned identically (use selftraining.student_init="
            "scratch, or prepare the student with prepare_round(..., plans_from=<teacher prepared dir>))"
        )
    if not trainer.was_initialized:
        trainer.initialize()
    net = trainer.network
    if isinstance(net, OptimizedModule):
        net = net._orig_mod
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["network_weights"].items()}
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    bad_shape = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or extra or bad_shape:
        raise CosmosError(
            f"{ckpt_path}: weights do not fit this round's network (missing {missing[:3]}, "
            f"unexpected {extra[:3]}, other shape {bad_shape[:3]})"
        )
    net.load_state_dict(weights)  # copies into the same Parameters the optimizer already holds
    log.info(
        "warm start: network weights from %s (epoch %s of its round); fresh optimizer, initial lr %g",
        ckpt_path,
        ckpt.get("current_epoch"),
        trainer.initial_lr,
    )
    return {
        "from": str(fold_dir.resolve()),
        "checkpoint": checkpoint,
        "source_epoch": ckpt.get("current_epoch"),
        "source_configuration": trained_cfg,
        "tensors": len(weights),
    }


# ---------------------------------------------------------------------------------- domain balance
def domain_of(identifier: str) -> str:
    """``pseudo`` or ``real`` from an nnU-Net case id made by ``export.nnunet_case_id``."""
    from cosmos.segmentation.export import KIND_PSEUDO, KIND_REAL

    for kind in (KIND_PSEUDO, KIND_REAL):
        if identifier.startswith(f"{kind}_"):
            return kind
    raise ValueError(f"case id {identifier!r} has no pseudo_/real_ prefix")


def balanced_identifiers(identifiers: list[str]) -> list[str]:
    """The identifiers repeated so that a uniform draw picks each domain with probability 1/2.

    Each pseudo case appears ``n_real / g`` times, each real case ``n_pseudo / g`` times
    (``g = gcd``): within a domain cases stay equally likely. One domain only -> unchanged.
    """
    import math

    by_kind: dict[str, list[str]] = {}
    for i in identifiers:
        by_kind.setdefault(domain_of(i), []).append(i)
    if len(by_kind) < 2:
        return list(identifiers)
    n = {k: len(v) for k, v in by_kind.items()}
    g = math.gcd(*n.values())
    other = {"pseudo": n["real"], "real": n["pseudo"]}
    return [i for i in identifiers for _ in range(other[domain_of(i)] // g)]


class nnUNetTrainerCosmosBalancedDomains(nnUNetTrainerCosmosBudget):
    """Draws training cases so pseudo-hrT2 and real hrT2 are each half of the samples (paper eq. 8).

    nnU-Net draws cases uniformly (``np.random.choice(dataloader.indices)``, infinite mode) from
    ``dataset.identifiers``; here the training dataset's identifiers are repeated per domain
    (:func:`balanced_identifiers`), so the draw stays nnU-Net's own -- same RNG calls, works with
    in-process and multi-process augmentation alike. Validation sampling is unchanged.
    """

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        ids = list(dataset_tr.identifiers)
        dataset_tr.identifiers = balanced_identifiers(ids)
        kinds = [domain_of(i) for i in ids]
        log.info(
            "balanced domains: %d pseudo + %d real training cases, each domain drawn with p=0.5",
            kinds.count("pseudo"),
            kinds.count("real"),
        )
        return dataset_tr, dataset_val


class nnUNetTrainerCosmosCPUBalancedDomains(nnUNetTrainerCosmosCPU, nnUNetTrainerCosmosBalancedDomains):
    """The CPU recipe (:class:`nnUNetTrainerCosmosCPU`) drawing pseudo-hrT2 and real hrT2 equally often."""


class nnUNetTrainerCosmosCPUStructureIntensityBalancedDomains(
    nnUNetTrainerCosmosCPUStructureIntensity, nnUNetTrainerCosmosBalancedDomains
):
    """The CPU recipe with structure intensity augmentation, drawing pseudo-hrT2 and real hrT2 equally often."""


# ---------------------------------------------------------------------------------- lookup
#: Every COSMOS trainer by class name: the lookup nnU-Net's own cannot do here (see the module docstring).
TRAINERS: dict[str, type[nnUNetTrainerCosmosBudget]] = {
    cls.__name__: cls
    for cls in (
        nnUNetTrainerCosmosBudget,
        nnUNetTrainerCosmosCPU,
        nnUNetTrainerCosmosCPUStructureIntensity,
        nnUNetTrainerCosmosBalancedDomains,
        nnUNetTrainerCosmosCPUBalancedDomains,
        nnUNetTrainerCosmosCPUStructureIntensityBalancedDomains,
    )
}
#: Each recipe's domain-balanced variant (``selftraining.balance_domains``).
BALANCED_DOMAINS: dict[type[nnUNetTrainerCosmosBudget], type[nnUNetTrainerCosmosBudget]] = {
    nnUNetTrainerCosmosBudget: nnUNetTrainerCosmosBalancedDomains,
    nnUNetTrainerCosmosCPU: nnUNetTrainerCosmosCPUBalancedDomains,
    nnUNetTrainerCosmosCPUStructureIntensity: nnUNetTrainerCosmosCPUStructureIntensityBalancedDomains,
}
DEFAULT_TRAINER = nnUNetTrainerCosmosBudget.__name__


def trainer_named(name: str) -> type[nnUNetTrainerCosmosBudget]:
    """The trainer class called ``name`` (``segmentation.trainer``); a CosmosError listing the known ones otherwise.

    Also a stand-in for nnU-Net's ``recursive_find_trainer_class_by_name`` where its entry point
    (``nnunetv2.run.run_training``) is driven with ``-tr <name>``.
    """
    from cosmos.errors import CosmosError

    try:
        return TRAINERS[name]
    except KeyError:
        raise CosmosError(f"segmentation.trainer={name!r} is not a COSMOS trainer; known: {sorted(TRAINERS)}") from None


def balanced_domains_variant(cls: type[nnUNetTrainerCosmosBudget]) -> type[nnUNetTrainerCosmosBudget]:
    """The trainer that trains ``cls``'s recipe drawing both domains equally often (itself if it already does)."""
    if issubclass(cls, nnUNetTrainerCosmosBalancedDomains):
        return cls
    try:
        return BALANCED_DOMAINS[cls]
    except KeyError:
        raise RuntimeError(f"{cls.__name__} has no domain-balanced variant; add one to BALANCED_DOMAINS") from None


def effective_recipe(seg: Any, trainer: type[nnUNetTrainerCosmosBudget] | None = None) -> TrainerRecipe:
    """The recipe a fold trains with: ``trainer``'s (default: the class ``seg.trainer`` names) with the
    ``segmentation`` keys that ``seg`` sets put over it (:meth:`TrainerRecipe.overridden_by`)."""
    cls = trainer if trainer is not None else trainer_named(getattr(seg, "trainer", None) or DEFAULT_TRAINER)
    return cls.recipe.overridden_by(seg)
