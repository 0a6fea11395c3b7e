"""A trainer's recipe as data (:class:`TrainerRecipe`), and the arithmetic of the budget rules.

Values and arithmetic only, no nnU-Net trainer: each trainer class
(:mod:`cosmos.segmentation.nnunet_trainers`) carries a recipe; :mod:`cosmos.segmentation.trainer`
puts the config's overrides over it (``effective_recipe``) and turns it into one fold's budget
(``TrainerBudget.from_config``) with the functions here. Why a module of its own: the trainer classes
import torch and nnU-Net when loaded; a recipe and its arithmetic load without either
(:func:`patches_per_case` reads nnU-Net's plans only when called).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np


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
    #: nnU-Net's per-sample coin flip instead of forcing the last samples of a batch
    #: (see :mod:`cosmos.segmentation.nnunet_trainers`)
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
