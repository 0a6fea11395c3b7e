"""Training slices of the translator: every source (ceT1 + label) and target (hrT2) slice of a crossMoDA
root in memory on one common grid (:class:`SliceData`), read by :func:`load_slices` on the grid the
translator configuration asks for (:func:`grid_from_config`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos.config import CosmosConfig
from cosmos.data import nifti
from cosmos.data.layout import SOURCE_DIR, TARGET_DIR, discover
from cosmos.errors import CosmosError
from cosmos.logs import progress
from cosmos.translation.slices import (
    SliceGrid,
    canvas_size,
    centre_crop_or_pad,
    centre_crop_or_pad_labels,
    volume_to_training_slices,
)

log = logging.getLogger("cosmos.translation.training")  # the training logger, as before the split: same log lines


@dataclass
class SliceData:
    """All training slices in memory on the common grid (float16 images: half the RAM, ample precision)."""

    source: torch.Tensor  # (Ns, 1, S, S)
    labels: torch.Tensor  # (Ns, S, S) uint8
    target: torch.Tensor  # (Nt, 1, S, S)
    source_volume: np.ndarray  # (Ns,) volume index of each source slice
    target_volume: np.ndarray  # (Nt,) volume index of each target slice
    files: list[Path]

    @property
    def foreground(self) -> np.ndarray:
        return (self.labels.reshape(self.labels.shape[0], -1) > 0).any(dim=1).numpy()


def grid_from_config(cfg: CosmosConfig) -> SliceGrid:
    t = cfg.translator
    return SliceGrid(
        inplane_spacing=t.inplane_spacing,
        image_size=t.image_size,
        divisor=2**t.levels,
        low_percentile=t.norm_low_percentile,
        high_percentile=t.norm_high_percentile,
        windowed=t.random_crop,
    )


def load_slices(data_dir: str | Path, grid: SliceGrid, random_crop: bool = False) -> SliceData:
    """Read source (ceT1 + Label) and target (hrT2) volumes of a crossMoDA root onto the slice grid.

    ``random_crop``: keep each slice whole on a common canvas (:func:`slices.canvas_size`) for random
    ``image_size`` windows at training time; otherwise every slice is centre-cropped to ``image_size``.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise CosmosError(f"{root}: data directory not found")
    ds = discover(root)
    if not ds.source:
        raise CosmosError(f"{root / SOURCE_DIR}: no crossmoda_*_ceT1.nii.gz source images")
    if not ds.target:
        raise CosmosError(f"{root / TARGET_DIR}: no crossmoda_*_hrT2.nii.gz target images")
    missing = [c.image.name for c in ds.source if c.label is None]
    if missing:
        raise CosmosError(f"{root / SOURCE_DIR}: no label (crossmoda_*_Label.nii.gz) for {', '.join(missing)}")
    src, labs, vol_idx, tgt, tgt_idx, files = [], [], [], [], [], []
    empty_labels: list[str] = []  # legal, but worth saying: they teach the segmentor "nothing here"
    for i, case in enumerate(progress(ds.source, desc="load ceT1", unit="vol")):
        label_path = case.label
        assert label_path is not None  # every source case has its label (checked above)
        img = nifti.load(case.image)
        lab = nifti.load(label_path, label=True)
        problem = nifti.same_grid(img, lab)
        if problem:
            raise CosmosError(f"{label_path}: label is not on the grid of {case.image.name} ({problem})")
        if not np.any(lab.data):
            empty_labels.append(case.case_id)
        s, l_ = volume_to_training_slices(img.data, img.affine, grid, lab.data, crop=not random_crop)
        assert l_ is not None  # labels in, labels out
        src.append(s.half())
        labs.append(l_)
        vol_idx.append(np.full(len(s), i))
        files += [case.image, label_path]
    for j, case in enumerate(progress(ds.target, desc="load hrT2", unit="vol")):
        img = nifti.load(case.image)
        t, _ = volume_to_training_slices(img.data, img.affine, grid, crop=not random_crop)
        tgt.append(t.half())
        tgt_idx.append(np.full(len(t), j))
        files.append(case.image)
    if random_crop:  # whole slices of varying extent: onto one canvas
        side = canvas_size([(int(x.shape[-2]), int(x.shape[-1])) for x in src + tgt], grid)
        src = [centre_crop_or_pad(x, (side, side)) for x in src]
        labs = [centre_crop_or_pad_labels(x, side) for x in labs]
        tgt = [centre_crop_or_pad(x, (side, side)) for x in tgt]
    data = SliceData(
        torch.cat(src), torch.cat(labs), torch.cat(tgt), np.concatenate(vol_idx), np.concatenate(tgt_idx), files
    )
    if len(data.source) == 0 or len(data.target) == 0:
        raise CosmosError(f"{root}: every slice is empty (constant) in the source or target images")
    log.info(
        "training slices on a %dx%d grid at %.2f mm: %d ceT1 (%d with foreground), %d hrT2%s",
        data.source.shape[-1],
        data.source.shape[-1],
        grid.inplane_spacing,
        len(data.source),
        int(data.foreground.sum()),
        len(data.target),
        f"; {len(empty_labels)} source label(s) with no foreground at all: {', '.join(empty_labels)}"
        if empty_labels
        else "",
    )
    return data
