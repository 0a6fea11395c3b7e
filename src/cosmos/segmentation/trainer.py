"""nnUNetTrainerCosmosBudget: nnU-Net's trainer with the training budget taken from our profile.

What it changes (and nothing else; loss = Dice + CE with deep supervision, SGD + poly LR,
augmentation: all nnU-Net defaults):

* epochs, iterations per epoch, validation iterations per epoch (nnU-Net: 1000 x 250 / 50),
* initial learning rate (nnU-Net: 1e-2, the paper's value too),
* foreground oversampling (nnU-Net: 0.33; CPU profiles raise it so the small cochlea is seen),
* optional cross-entropy class weights (nnU-Net: unweighted). Why: at CPU budgets (60-200 iterations)
  unweighted CE drives the tiny cochlea's softmax to ~0.001 before the network can tell it apart,
  and there the Dice gradient vanishes; the cochlea is then never predicted (Dice 0.00 at 160
  iterations on labelled phantom hrT2; ~0.8 with weight 10 on the cochlea),
* checkpoint cadence (``save_every``; nnU-Net: 50 epochs) so a killed fold loses little work,
* writes checkpoints atomically (temp file + rename) so a kill never leaves a truncated
  ``checkpoint_final.pth`` that would look finished,
* relocates its output folder to a flat fold directory chosen by the caller,
* calls ``epoch_end_callbacks`` after every epoch (the MLflow hook; see below).

Why it is constructed directly: nnU-Net's name lookup (CLI ``-tr``, ``nnUNet_extTrainer``) imports
every trainer module in nnunetv2, including ``primus`` -> timm -> torchvision, which crashes on the
CPU torch here; it also would not find a class outside nnunetv2. ``training.train_fold`` builds it
with nnU-Net's exact ``__init__`` signature (as ``nnunetv2.run.run_training`` does) and drives it
through ``run_training()``.

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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]


@dataclass
class TrainerBudget:
    """The knobs the profile controls (see ``cosmos.config.SegmentationConfig``)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    oversample_foreground: float = 0.33
    save_every: int = 50
    ce_class_weights: list[float] | None = None  # one per label (background first); None = unweighted

    @classmethod
    def from_config(cls, seg) -> "TrainerBudget":
        return cls(epochs=seg.epochs, iterations_per_epoch=seg.iterations_per_epoch,
                   val_iterations_per_epoch=seg.val_iterations_per_epoch, initial_lr=seg.initial_lr,
                   oversample_foreground=seg.oversample_foreground, save_every=seg.save_every,
                   ce_class_weights=None if seg.ce_class_weights is None else [float(w) for w in seg.ce_class_weights])


class nnUNetTrainerCosmosBudget(nnUNetTrainer):
    """nnU-Net trainer whose budget comes from the COSMOS profile (see the module docstring)."""

    #: Applied in ``__init__`` when set. Lets code that constructs the trainer the nnU-Net way
    #: (``nnunetv2.run.run_training``, used by benchmarks/nnunet_overhead.py) get the same budget.
    default_budget: TrainerBudget | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.epoch_end_callbacks: list[EpochCallback] = []
        self.ce_class_weights: list[float] | None = None
        if type(self).default_budget is not None:
            self.apply_budget(type(self).default_budget)

    # ------------------------------------------------------------------ configuration
    def apply_budget(self, budget: TrainerBudget) -> None:
        """Set the budget; must happen before training starts (initialize() reads lr/oversampling)."""
        if self.was_initialized:
            raise RuntimeError("apply_budget must be called before the trainer is initialized")
        self.num_epochs = int(budget.epochs)
        self.num_iterations_per_epoch = int(budget.iterations_per_epoch)
        self.num_val_iterations_per_epoch = int(budget.val_iterations_per_epoch)
        self.initial_lr = float(budget.initial_lr)
        self.oversample_foreground_percent = float(budget.oversample_foreground)
        self.save_every = max(1, int(budget.save_every))
        self.ce_class_weights = None if budget.ce_class_weights is None else [float(w) for w in budget.ce_class_weights]

    def _build_loss(self):
        """nnU-Net's Dice + CE (deep supervision), with ``ce_class_weights`` put on the CE term."""
        loss = super()._build_loss()
        if self.ce_class_weights is None:
            return loss
        if self.label_manager.has_regions:
            raise RuntimeError("ce_class_weights needs label (not region) training")
        n = len(self.label_manager.all_labels)
        if len(self.ce_class_weights) != n:
            raise RuntimeError(f"ce_class_weights has {len(self.ce_class_weights)} entries; the dataset has {n} labels "
                               f"({self.label_manager.all_labels})")
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

    # ------------------------------------------------------------------ hooks
    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if not self.epoch_end_callbacks:
            return
        metrics = self.epoch_metrics()
        for cb in list(self.epoch_end_callbacks):
            try:
                cb(epoch, dict(metrics))
            except Exception as exc:  # never fail a training because logging failed
                log.warning("epoch-end callback %r failed at epoch %d: %s", cb, epoch, exc)

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
            out["epoch_time_s"] = float(get("epoch_end_timestamps", step=step) - get("epoch_start_timestamps", step=step))
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
