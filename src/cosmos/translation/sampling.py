"""Which slices the translator sees: the shuffled (foreground-oversampled) slice indices of an epoch,
random in-plane flips, and the fixed slices of the per-epoch sample grid with their hrT2 reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cosmos.translation.slice_data import SliceData


def epoch_indices(
    rng: np.random.Generator, n: int, count: int, preferred: np.ndarray | None = None, preferred_fraction: float = 0.0
) -> np.ndarray:
    """``count`` slice indices: shuffled passes over all ``n`` slices, with ``preferred_fraction`` of
    them drawn from ``preferred`` (foreground slices) instead."""
    reps = int(math.ceil(count / n))
    idx = np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]
    if preferred is not None and len(preferred) and preferred_fraction > 0:
        swap = rng.random(count) < preferred_fraction
        idx[swap] = rng.choice(preferred, size=int(swap.sum()))
    return idx


def random_flips(rng: np.random.Generator, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """The same random in-plane flips (each axis p=0.5, per sample) applied to aligned tensors."""
    n = tensors[0].shape[0]
    fh, fv = rng.random(n) < 0.5, rng.random(n) < 0.5
    out = []
    for x in tensors:
        x = x.clone()
        if fh.any():
            x[torch.from_numpy(fh)] = x[torch.from_numpy(fh)].flip(-1)
        if fv.any():
            x[torch.from_numpy(fv)] = x[torch.from_numpy(fv)].flip(-2)
        out.append(x)
    return out


def pick_sample_slices(data: SliceData, count: int = 4) -> np.ndarray:
    """Largest-foreground slice of the first ``count`` volumes that have foreground."""
    area = (data.labels.reshape(len(data.labels), -1) > 0).sum(1).numpy()
    chosen = []
    for v in np.unique(data.source_volume):
        idx = np.nonzero(data.source_volume == v)[0]
        best = idx[np.argmax(area[idx])]
        if area[best] > 0:
            chosen.append(best)
        if len(chosen) == count:
            break
    if not chosen:
        chosen = list(range(min(count, len(data.source))))
    return np.asarray(chosen)


def pick_reference_targets(data: SliceData, count: int = 4) -> np.ndarray:
    """Real hrT2 slices for the reference column: per volume, the slice with the most bright (fluid)
    pixels, i.e. through the cistern / canals where VS and cochlea are."""
    bright = (data.target.float() > 0.3).reshape(len(data.target), -1).sum(1).numpy()
    chosen = []
    for v in np.unique(data.target_volume)[:count]:
        idx = np.nonzero(data.target_volume == v)[0]
        chosen.append(idx[np.argmax(bright[idx])])
    return np.asarray(chosen)
