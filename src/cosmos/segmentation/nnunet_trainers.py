"""The COSMOS nnU-Net trainer classes: nnU-Net's trainer with the budget from our profile, and named recipes.

A recipe is a trainer subclass named after what it changes, nnU-Net's own way to express one
(``nnUNetTrainerDA5``, ``nnUNetTrainer_250epochs``); ``segmentation.trainer`` names the class a
profile trains with (:mod:`cosmos.segmentation.trainer` looks it up and resolves its budget):

* ``nnUNetTrainerCosmosBudget`` (``paper``): nnU-Net's training -- loss, augmentation, sampling --
  under the profile's budget,
* ``nnUNetTrainerCosmosCPU`` (the CPU base ``cpu.yaml``, so ``small``): the recipe that learns the
  few-mm structures within minutes on 2 cores (class weights of the CE loss, probabilistic foreground
  oversampling, the field-of-view and not-learning budget rules; the class docstring says why),
* ``nnUNetTrainerCosmosCPUStructureIntensity`` (``tiny``): that recipe plus the label-aware structure
  intensity augmentation (:mod:`cosmos.segmentation.augmentation`).

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

A trainer's recipe is its class attribute ``recipe`` (:class:`cosmos.segmentation.recipe.TrainerRecipe`).
``nnUNetTrainerCosmosBalancedDomains`` (and its recipe variants, e.g.
``nnUNetTrainerCosmosCPUBalancedDomains``) implements paper eq. 8 as written -- the pseudo-hrT2 term and
the real-hrT2 term each averaged over their own cases -- by drawing cases so that both domains are
sampled equally often, whatever their case counts. A student's warm start from its teacher's weights
is :mod:`cosmos.segmentation.warm_start`.

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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosmos import events
from cosmos.segmentation.recipe import TrainerRecipe

if TYPE_CHECKING:  # the budget is resolved from the config in cosmos.segmentation.trainer, which imports this module
    from cosmos.segmentation.trainer import TrainerBudget

log = logging.getLogger("cosmos.segmentation.trainer")  # the trainer's logger, as before the split: same log lines

EpochCallback = Callable[[int, dict], None]


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
