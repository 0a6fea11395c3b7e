"""Label-aware intensity augmentation: each labelled structure re-rendered at a random brightness.

Why: the teacher learns from pseudo-hrT2, whose tumour and cochlea carry whatever intensity the
translator gave them. Where the translator gets a structure's contrast wrong (on life-sized heads:
a cochlea barely brighter than the bone around it, a tumour with a dark core in a bright rim; real
hrT2 shows a bright cochlea and a grey tumour), a network trained on those images learns the wrong
appearance and finds nothing on real hrT2, however well it fits its own data. Re-rendering each
structure -- inside its (source) label, where the label is exact -- at a brightness drawn from the
patch's own range teaches the network the structure's shape and surroundings rather than one
intensity. nnU-Net's global intensity augmentations (brightness, contrast, gamma) scale the whole
patch and cannot change a structure's contrast against its neighbours.

The edit is ``img + m * ((img - mu) * s + t - img)`` where ``m`` is the structure's mask softened
by a Gaussian (so no label-shaped step edge is painted in), ``mu`` the structure's mean, ``s`` a
texture scale and ``t`` a target level drawn uniformly between low and high percentiles of the
patch. Labels are not changed. Applied after nnU-Net's spatial transform (on the patch) and before
its noise, blur and intensity transforms, so those act on the edited image as on any other.
"""

from __future__ import annotations

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from scipy.ndimage import gaussian_filter


class StructureIntensityTransform(BasicTransform):
    """Per sample and per label present: with probability ``p_per_label``, re-render the structure."""

    def __init__(
        self,
        labels: tuple[int, ...] = (1, 2),
        p_per_label: float = 0.5,
        level_percentiles: tuple[float, float] = (1.0, 99.5),
        texture_scale: tuple[float, float] = (0.5, 1.5),
        edge_sigma: float = 0.5,
    ):
        super().__init__()
        if not 0.0 <= p_per_label <= 1.0:
            raise ValueError(f"p_per_label must be in [0, 1], got {p_per_label}")
        self.labels = tuple(int(v) for v in labels)
        self.p_per_label = float(p_per_label)
        self.level_percentiles = (float(level_percentiles[0]), float(level_percentiles[1]))
        self.texture_scale = (float(texture_scale[0]), float(texture_scale[1]))
        self.edge_sigma = float(edge_sigma)

    def get_parameters(self, **data_dict) -> dict:
        seg = data_dict.get("segmentation")
        img = data_dict.get("image")
        edits: list[tuple[np.ndarray, tuple[slice, ...], list[float], float]] = []
        if seg is None or img is None or self.p_per_label <= 0.0:
            return {"edits": edits}
        seg0 = np.asarray(seg[0])
        image = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        levels: list[tuple[float, float]] | None = None
        for label in self.labels:
            if np.random.uniform() >= self.p_per_label:
                continue
            mask = seg0 == label
            if not mask.any():
                continue
            if levels is None:  # the patch's intensity range per channel (sub-sampled: speed)
                flat = image.reshape(image.shape[0], -1)[:, :: flat_step(image[0].size)]
                levels = [
                    (
                        float(np.percentile(c, self.level_percentiles[0])),
                        float(np.percentile(c, self.level_percentiles[1])),
                    )
                    for c in flat
                ]
            box = _padded_box(mask, pad=int(np.ceil(3 * self.edge_sigma)))
            soft = gaussian_filter(mask[box].astype(np.float32), self.edge_sigma) if self.edge_sigma > 0 else mask[box]
            soft = np.clip(soft.astype(np.float32), 0.0, 1.0)
            targets = [float(np.random.uniform(lo, hi)) for lo, hi in levels]
            scale = float(np.random.uniform(*self.texture_scale))
            edits.append((soft, box, targets, scale))
        return {"edits": edits}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        for soft, box, targets, scale in params["edits"]:
            m = torch.from_numpy(soft).to(img.dtype)
            w = m.sum()
            for c, target in enumerate(targets):
                region = img[c][box]
                mu = (region * m).sum() / w if w > 0 else region.mean()
                rendered = (region - mu) * scale + target
                img[c][box] = region + m * (rendered - region)
        return img

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return segmentation


def flat_step(n_voxels: int, keep: int = 65536) -> int:
    """Stride that keeps about ``keep`` voxels of ``n_voxels`` for the percentile estimate."""
    return max(1, n_voxels // keep)


def _padded_box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """The mask's bounding box grown by ``pad`` voxels per side, clipped to the array."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - pad), min(s, int(i.max()) + pad + 1)) for i, s in zip(idx, mask.shape))


def with_structure_intensity(transforms, transform: StructureIntensityTransform):
    """nnU-Net's training pipeline with ``transform`` inserted after its spatial part.

    nnU-Net's ``get_training_transforms`` returns ``ComposeTransforms([Spatial..., RandomTransform(noise),
    ...])``; the edit goes before the first ``RandomTransform`` (the first intensity augmentation), i.e.
    after the spatial transform (and the 2D<->3D conversions around it).
    """
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    steps = transforms.transforms
    at = next((i for i, t in enumerate(steps) if isinstance(t, RandomTransform)), len(steps))
    steps.insert(at, transform)
    return transforms
