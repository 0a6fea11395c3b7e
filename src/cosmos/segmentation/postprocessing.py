"""Post-processing of a predicted label map: each rule a named object that says when it applies.

A rule takes the ensemble's label array (with its probabilities when it needs them) on a scan's grid and
returns the array with some components removed. ``segmentation.vs_component`` and
``segmentation.cochlea_components`` choose the rules (:func:`rules_from_config`); :func:`postprocess` applies them
in order, VS first. Every prediction goes through the same rules: validation, pseudo-labels, ``cosmos predict`` and
``cosmos serve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cosmos.config import SegmentationConfig
from cosmos.data import nifti

VS_LABEL = 1
COCHLEA_LABEL = 2


class PostprocessingRule(Protocol):
    """One rule: ``apply`` returns the label array with the components it rejects set to background."""

    @property
    def needs_probabilities(self) -> bool: ...

    def apply(self, seg: np.ndarray, probabilities: np.ndarray | None, vol: nifti.Volume) -> np.ndarray: ...


def keep_largest_vs_component(seg: np.ndarray) -> np.ndarray:
    """All-but-largest 3D connected component removed for VS (label 1) only; cochlea untouched."""
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    if not np.any(seg == VS_LABEL):
        return seg
    return remove_all_but_largest_component_from_segmentation(seg, [VS_LABEL], background_label=0)


def keep_confident_vs_component(
    seg: np.ndarray, vs_probability: np.ndarray, voxel_mm3: float, min_mm3: float = 20.0
) -> np.ndarray:
    """Keep the VS component (3D, face-connected) with the highest mean VS probability among those of at
    least ``min_mm3`` (the largest one when none is that big); other VS voxels become background, the
    cochlea is untouched. ``vs_probability``: the ensemble's VS probability on ``seg``'s grid."""
    from scipy import ndimage

    if vs_probability.shape != seg.shape:
        raise ValueError(f"VS probabilities {vs_probability.shape} do not match the segmentation {seg.shape}")
    components, n = ndimage.label(seg == VS_LABEL)
    if n <= 1:
        return seg
    index = np.arange(1, n + 1)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    mean_p = np.asarray(ndimage.mean(vs_probability, components, index), dtype=np.float64)
    big_enough = sizes * float(voxel_mm3) >= float(min_mm3)
    keep = index[np.argmax(np.where(big_enough, mean_p, -1.0))] if big_enough.any() else index[np.argmax(sizes)]
    out = seg.copy()
    out[(components > 0) & (components != keep)] = 0
    return out


def head_midline_x(vol: nifti.Volume) -> float:
    """World left-right coordinate (RAS x, mm) of the head's midline: the centre of the head's bounding box
    (the largest bright connected component; :func:`cosmos.data.roi.head_box`), or of the field of view
    when no head is found. On an inner-ear crop the head fills the window, so this is the crop's centre."""
    from cosmos.data.roi import head_box

    box, _ = head_box(vol)
    lo, hi = (np.zeros(3), np.array(vol.shape, float) - 1) if box is None else box
    centre = (np.asarray(lo, float) + np.asarray(hi, float)) / 2.0
    return float(vol.affine[0, :3] @ centre + vol.affine[0, 3])


def keep_one_cochlea_per_side(seg: np.ndarray, affine: np.ndarray, midline_x: float) -> np.ndarray:
    """Keep, on each side of the head's midline (world x = ``midline_x``), the largest cochlea component
    (3D, 26-connected); other cochlea voxels become background, VS is untouched.

    Why: a head has two cochleae, one per inner ear, and crossMoDA labels both. Real hrT2 shows other bright
    fluid next to each (vestibule, semicircular canals) and elsewhere (CSF pockets), which a network trained on
    pseudo-hrT2 at CPU budgets marks as cochlea too: on life-sized phantom heads the student marked 7-41 cochlea
    components per scan, both true cochleae among them (cochlea Dice 0.48, ASSD up to 13 mm); this rule
    kept exactly the true pair in 4 of 4 scans (cochlea Dice 0.75). Sides are taken in world coordinates,
    so flipped or oblique affines are handled; ``affine`` maps ``seg``'s voxel indices to world mm.
    """
    from scipy import ndimage

    components, n = ndimage.label(seg == COCHLEA_LABEL, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return seg
    index = np.arange(1, n + 1)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    centres = np.asarray(ndimage.center_of_mass(np.ones(seg.shape, bool), components, index), float)
    world_x = centres @ np.asarray(affine, float)[0, :3] + float(affine[0, 3])
    right = world_x >= midline_x
    keep = [index[side][np.argmax(sizes[side])] for side in (right, ~right) if side.any()]
    out = seg.copy()
    out[(components > 0) & ~np.isin(components, keep)] = 0
    return out


@dataclass(frozen=True)
class LargestVSComponent:
    """The paper's rule (``vs_component: largest``): the largest 3D VS component, the cochlea untouched.

    Applies when the network marks the tumour as the biggest VS-like blob, as on ear-centred crops at GPU budgets.
    """

    needs_probabilities: bool = False

    def apply(self, seg: np.ndarray, probabilities: np.ndarray | None, vol: nifti.Volume) -> np.ndarray:
        return self.keep(seg, probabilities, float(np.prod(vol.spacing)))

    def keep(self, seg: np.ndarray, probabilities: np.ndarray | None, voxel_mm3: float) -> np.ndarray:
        return keep_largest_vs_component(seg)


@dataclass(frozen=True)
class MostConfidentVSComponent:
    """``vs_component: confident``: the VS component with the highest mean VS probability among those of at
    least ``min_mm3`` (:func:`keep_confident_vs_component`).

    Applies where a CPU-budget network marks many VS-like blobs (whole-head crops) and a small tumour is not the
    largest of them; where it marks one component, it keeps the same voxels as :class:`LargestVSComponent`.
    """

    min_mm3: float = 20.0
    needs_probabilities: bool = True

    def apply(self, seg: np.ndarray, probabilities: np.ndarray | None, vol: nifti.Volume) -> np.ndarray:
        return self.keep(seg, probabilities, float(np.prod(vol.spacing)))

    def keep(self, seg: np.ndarray, probabilities: np.ndarray | None, voxel_mm3: float) -> np.ndarray:
        if probabilities is None:
            raise ValueError("vs_component=confident needs the ensemble's probabilities")
        return keep_confident_vs_component(seg, probabilities[VS_LABEL], voxel_mm3, self.min_mm3)


@dataclass(frozen=True)
class AllCochleaComponents:
    """The paper's cochlea (``cochlea_components: all``): every cochlea voxel kept."""

    needs_probabilities: bool = False

    def apply(self, seg: np.ndarray, probabilities: np.ndarray | None, vol: nifti.Volume) -> np.ndarray:
        return seg


@dataclass(frozen=True)
class OneCochleaPerSide:
    """``cochlea_components: per_side``: the largest cochlea component on each side of the head's midline
    (:func:`keep_one_cochlea_per_side` says why). Applies to any head: one inner ear per side."""

    needs_probabilities: bool = False

    def apply(self, seg: np.ndarray, probabilities: np.ndarray | None, vol: nifti.Volume) -> np.ndarray:
        return keep_one_cochlea_per_side(seg, vol.affine, head_midline_x(vol))


def _vs_rule(seg_cfg: SegmentationConfig) -> LargestVSComponent | MostConfidentVSComponent:
    if seg_cfg.vs_component == "confident":
        return MostConfidentVSComponent(float(seg_cfg.vs_min_component_mm3))
    return LargestVSComponent()


def rules_from_config(seg_cfg: SegmentationConfig) -> tuple[PostprocessingRule, ...]:
    """The configured rules, in the order they apply (VS, then cochlea)."""
    vs: PostprocessingRule = _vs_rule(seg_cfg)
    cochlea: PostprocessingRule = (
        OneCochleaPerSide() if seg_cfg.cochlea_components == "per_side" else AllCochleaComponents()
    )
    return vs, cochlea


def one_vs_component(
    seg: np.ndarray, probabilities: np.ndarray | None, voxel_mm3: float, seg_cfg: SegmentationConfig
) -> np.ndarray:
    """The configured VS rule (``segmentation.vs_component``) of one label array."""
    return _vs_rule(seg_cfg).keep(seg, probabilities, voxel_mm3)


def postprocess(
    seg: np.ndarray, probabilities: np.ndarray | None, vol: nifti.Volume, seg_cfg: SegmentationConfig
) -> np.ndarray:
    """Every configured rule (:func:`rules_from_config`) applied to one label array on ``vol``'s grid."""
    for rule in rules_from_config(seg_cfg):
        seg = rule.apply(seg, probabilities, vol)
    return seg
