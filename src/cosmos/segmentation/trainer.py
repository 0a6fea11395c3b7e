"""What one fold trains with: the COSMOS nnU-Net trainer ``segmentation.trainer`` names, its recipe, its budget.

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

Where each part lives (every name stays importable from here, as before the split):

* the trainer classes, their epoch-end hook and the domain-balanced draw:
  :mod:`cosmos.segmentation.nnunet_trainers`,
* :class:`TrainerRecipe` and the budget rules' arithmetic (:func:`scaled_iterations`,
  :func:`field_of_view_factor`, :func:`patches_per_case`): :mod:`cosmos.segmentation.recipe`,
* ``warm_start(trainer, fold_dir)`` (a student fold starts from a trained fold's network weights):
  :mod:`cosmos.segmentation.warm_start`,
* here: from a config to what one fold trains with -- the class (:data:`TRAINERS`,
  :func:`trainer_named`, :func:`balanced_domains_variant`), its recipe with the config's overrides
  (:func:`effective_recipe`) and its budget (:class:`TrainerBudget`).

How a trainer is found: :data:`TRAINERS` maps each class name to its class (:func:`trainer_named`).
nnU-Net's own name lookup (CLI ``-tr``, ``nnUNet_extTrainer``) imports every trainer module in
nnunetv2, including ``primus`` -> timm -> torchvision, which crashes on the CPU torch here; it also
would not find a class outside nnunetv2. ``training.train_fold`` takes the class from
:data:`TRAINERS` and builds it with nnU-Net's exact ``__init__`` signature (as
``nnunetv2.run.run_training`` does) and drives it through ``run_training()``; code that runs
nnU-Net's own entry point substitutes :func:`trainer_named` for its lookup
(``benchmarks/nnunet_overhead.py``). A trainer constructed that way applies its recipe in
``__init__`` and its ``default_budget`` when one is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cosmos.segmentation.nnunet_trainers import EpochCallback as EpochCallback
from cosmos.segmentation.nnunet_trainers import ProgressPlotThrottledLogger as ProgressPlotThrottledLogger
from cosmos.segmentation.nnunet_trainers import balanced_identifiers as balanced_identifiers
from cosmos.segmentation.nnunet_trainers import domain_of as domain_of
from cosmos.segmentation.nnunet_trainers import nnUNetTrainerCosmosBalancedDomains as nnUNetTrainerCosmosBalancedDomains
from cosmos.segmentation.nnunet_trainers import nnUNetTrainerCosmosBudget as nnUNetTrainerCosmosBudget
from cosmos.segmentation.nnunet_trainers import nnUNetTrainerCosmosCPU as nnUNetTrainerCosmosCPU
from cosmos.segmentation.nnunet_trainers import (
    nnUNetTrainerCosmosCPUBalancedDomains as nnUNetTrainerCosmosCPUBalancedDomains,
)
from cosmos.segmentation.nnunet_trainers import (
    nnUNetTrainerCosmosCPUStructureIntensity as nnUNetTrainerCosmosCPUStructureIntensity,
)
from cosmos.segmentation.nnunet_trainers import (
    nnUNetTrainerCosmosCPUStructureIntensityBalancedDomains as nnUNetTrainerCosmosCPUStructureIntensityBalancedDomains,
)
from cosmos.segmentation.recipe import TrainerRecipe as TrainerRecipe
from cosmos.segmentation.recipe import field_of_view_factor as field_of_view_factor
from cosmos.segmentation.recipe import patches_per_case as patches_per_case
from cosmos.segmentation.recipe import scaled_iterations as scaled_iterations
from cosmos.segmentation.warm_start import network_plan_differences as network_plan_differences
from cosmos.segmentation.warm_start import warm_start as warm_start

log = logging.getLogger(__name__)


@dataclass
class TrainerBudget:
    """The knobs the profile controls (see ``cosmos.config.SegmentationConfig``), with the recipe's
    values resolved: what one fold's trainer applies (:meth:`nnUNetTrainerCosmosBudget.apply_budget`)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    oversample_foreground: float = 0.33
    probabilistic_oversampling: bool = False  # nnU-Net's per-sample coin flip (see nnunet_trainers)
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
