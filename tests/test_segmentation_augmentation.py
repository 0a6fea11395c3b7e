"""Label-aware structure intensity augmentation (cosmos.segmentation.augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos.config import ConfigError, load_config
from cosmos.segmentation.augmentation import StructureIntensityTransform, with_structure_intensity


def _patch():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.normal(size=(1, 32, 64, 64)).astype(np.float32))
    seg = torch.zeros((1, 32, 64, 64), dtype=torch.int16)
    seg[0, 8:16, 10:30, 10:30] = 1  # a "tumour"
    seg[0, 20:24, 44:50, 44:50] = 2  # a "cochlea"
    seg[0, 0:2, 0:4, 0:4] = -1  # nnU-Net's padding value in the seg: never a structure
    return img, seg


def test_structure_is_rerendered_inside_its_label_and_nothing_far_from_it_changes():
    img, seg = _patch()
    np.random.seed(3)
    out = StructureIntensityTransform(labels=(1, 2), p_per_label=1.0, edge_sigma=1.0)(
        image=img.clone(), segmentation=seg.clone()
    )
    new, labels = out["image"], out["segmentation"]
    assert torch.equal(labels, seg)  # labels are never edited
    lo, hi = np.percentile(img.numpy(), [1.0, 99.5])
    for label in (1, 2):
        inside = seg[0] == label
        moved = float((new[0][inside] - img[0][inside]).abs().mean())
        assert moved > 0.05, f"label {label} not re-rendered"
        # the core of the structure sits at the drawn level, which lies within the patch's range
        assert lo - 1.0 < float(new[0][inside].mean()) < hi + 1.0
    # far from both structures (beyond the 3-sigma soft edge) the image is untouched, bit for bit
    far = torch.ones_like(seg[0], dtype=torch.bool)
    far[5:19, 7:33, 7:33] = False
    far[17:27, 41:53, 41:53] = False
    assert torch.equal(new[0][far], img[0][far])


def test_probability_zero_or_no_structure_leaves_the_patch_unchanged():
    img, seg = _patch()
    out = StructureIntensityTransform(p_per_label=0.0)(image=img.clone(), segmentation=seg.clone())
    assert torch.equal(out["image"], img)
    empty = torch.zeros_like(seg)
    out = StructureIntensityTransform(p_per_label=1.0)(image=img.clone(), segmentation=empty)
    assert torch.equal(out["image"], img)


def test_the_edit_follows_numpy_seed_like_nnunets_other_transforms():
    img, seg = _patch()
    t = StructureIntensityTransform(p_per_label=0.5)
    runs = []
    for _ in range(2):
        np.random.seed(11)
        runs.append([t(image=img.clone(), segmentation=seg.clone())["image"] for _ in range(4)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert not all(torch.equal(runs[0][0], r) for r in runs[0][1:])  # draws differ between patches


def test_edit_goes_after_nnunets_spatial_transform_and_the_pipeline_runs():
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pipeline = nnUNetTrainer.get_training_transforms(
        (16, 32, 32), (0.0, 0.0), None, (0, 1, 2), False, foreground_labels=[1, 2]
    )
    edit = StructureIntensityTransform(p_per_label=1.0)
    steps = with_structure_intensity(pipeline, edit).transforms
    at = steps.index(edit)
    assert isinstance(steps[at - 1], SpatialTransform)
    img, seg = _patch()
    np.random.seed(0)
    out = pipeline(image=img, segmentation=seg)
    assert tuple(out["image"].shape) == (1, 16, 32, 32)


def test_trainer_budget_and_config_carry_the_probability():
    """The probability is the trainer's (tiny names the CPU recipe with this augmentation); a config key overrides it."""
    from cosmos.segmentation.trainer import TrainerBudget, nnUNetTrainerCosmosCPUStructureIntensity

    def p(profile, *overrides):
        return TrainerBudget.from_config(load_config(profile, overrides=overrides).segmentation).structure_intensity_p

    assert p("tiny", "segmentation.structure_intensity_p=0.25") == 0.25
    assert p("tiny") == nnUNetTrainerCosmosCPUStructureIntensity.recipe.structure_intensity_p > 0
    assert p("small") == p("paper") == 0.0  # small: not measured there; the paper: nnU-Net's own augmentation
    assert p("paper", "segmentation.structure_intensity_p=0.5") == 0.5
    with pytest.raises(ConfigError, match="structure_intensity_p"):
        load_config(profile="tiny", overrides=["segmentation.structure_intensity_p=1.5"])
