"""The per-epoch translation fidelity sample: a fixed set of training volumes, converted and scored
(:mod:`cosmos.translation.fidelity`) after every epoch, because the losses alone cannot tell a
translator from a blurring identity map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos.data import nifti
from cosmos.data.layout import discover
from cosmos.translation import fidelity
from cosmos.translation.conversion import case_fidelity, convert_volume, reference_of, spread_indices
from cosmos.translation.slices import SliceGrid
from cosmos.translation.trainer import TranslatorTrainer


@dataclass
class FidelitySample:
    """A fixed set of source volumes (native grids, with their labels) scored after every epoch.

    Scored exactly as conversion scores them (:func:`conversion.convert_volume` on the whole native
    volume, then :func:`conversion.case_fidelity`; the reference from the native hrT2 files), because
    what the teacher trains on is the conversion. Why not the training canvas: the generator's
    InstanceNorm sees a slice's statistics, and a slice padded onto the training canvas is not the
    slice conversion translates (measured on life-sized heads: the canvas said the cochlea was bright
    in 6 of 6 cases, the conversion of the same generator made it dark in 8 of 8).
    """

    source: list[np.ndarray]  # per source volume, native grid
    affines: list[np.ndarray]
    labels: list[np.ndarray]
    ref_q: np.ndarray  # quantile function of the real hrT2 sample (native grids)
    n_target: int
    grid: SliceGrid
    batch_size: int = 16

    def score(self, trainer: TranslatorTrainer) -> fidelity.Fidelity:
        rows = []
        try:
            for vol, affine, lab in zip(self.source, self.affines, self.labels):
                pseudo = convert_volume(trainer.g_st, vol, affine, self.grid, self.batch_size, trainer.device)
                rows.append(case_fidelity(pseudo, lab, vol, affine, self.ref_q, self.grid))
        finally:
            trainer.g_st.train()  # convert_volume leaves the generator in eval mode
        return fidelity.summarise(rows, self.n_target)


def fidelity_sample(data_dir: str | Path, count: int, grid: SliceGrid, batch_size: int = 16) -> FidelitySample | None:
    """``count`` source volumes (with their labels) and ``count`` target volumes, read from ``data_dir``.

    Why training volumes: conversion translates exactly these ceT1 volumes, and the GAN is judged
    against exactly this hrT2 distribution (CycleGAN is transductive); the figure needs no label of
    the target domain. Volumes are evenly spread over the case list, so 4 of 8 is not the first 4.
    """
    if count <= 0:
        return None
    ds = discover(Path(data_dir))
    sources = [ds.source[i] for i in spread_indices(len(ds.source), count) if ds.source[i].label is not None]
    if not sources or not ds.target:
        return None
    vols, affines, labels = [], [], []
    for case in sources:
        img = nifti.load(case.image)
        assert case.label is not None
        vols.append(img.data)
        affines.append(img.affine)
        labels.append(nifti.load(case.label, label=True).data)
    targets = [ds.target[i].image for i in spread_indices(len(ds.target), count)]
    return FidelitySample(vols, affines, labels, reference_of(targets, grid), len(targets), grid, batch_size)
