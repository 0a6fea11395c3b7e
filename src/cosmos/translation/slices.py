"""Slice geometry and intensity normalisation shared by translator training and conversion.

Geometry choice (documented here because conversion must undo it exactly):

* **Slice axis.** The translator works on 2D axial slices. In crossMoDA (and in the built-in phantom)
  the third array axis is the axial (slice) axis. :func:`slice_axis` checks that with
  ``nib.aff2axcodes`` (the array axis closest to S/I); if a file is stored otherwise, the array is
  moved so that this axis comes last (:func:`to_slices_last`) and moved back afterwards. Only a
  transpose, never a flip: the output must land on the exact source voxels.
* **In-plane grid.** ceT1 and hrT2 differ in in-plane spacing (0.4 vs 0.5 mm in crossMoDA) and size.
  Each slice is resampled in PIXEL space by the per-axis zoom ``spacing / inplane_spacing`` (bilinear,
  anti-aliased when shrinking) so one pixel is ``inplane_spacing`` mm in every domain; no world-space
  resampling, so oblique or flipped affines need no special case. For training the resampled slice
  is centre-cropped / padded to ``image_size`` (the fixed training size). Conversion instead pads the
  whole resampled slice to a multiple of ``2**levels`` (the network is fully convolutional), so the
  full field of view is translated, then crops the pad and resamples back to the source in-plane
  shape: the pseudo-hrT2 has the source shape and affine, and the source label stays aligned voxel
  for voxel. A generator trained on ``image_size`` windows of larger slices (``translator.random_crop``,
  ``SliceGrid.windowed``) converts a slice that holds several such windows (:func:`windows_per_slice`)
  window by window instead, overlapping by half and blended (:func:`sliding_windows`): its instance
  norm then sees the statistics it was trained on (see :func:`sliding_windows`).
* **Orientation / flips.** Images are NOT flipped to a canonical orientation: conversion must return
  the source array layout and the network does not need one. The two domains may however be stored
  with different in-plane flips; a discriminator could then tell real hrT2 from translated ceT1 by
  orientation alone and push the generator to "flip" anatomy (fighting the cycle loss and breaking
  label alignment). Training therefore uses random in-plane flips on both domains
  (``translator.flip_augment``) so orientation carries no domain information.

Intensity choice: per-volume robust min-max. Values are clipped to the
``[norm_low_percentile, norm_high_percentile]`` percentiles of the volume (0.5 / 99.5 by default,
so a few hot voxels do not squash the contrast) and mapped linearly to **[-1, 1]**, the range of the
generator's ``tanh`` output. Padding uses -1 (= the darkest value, i.e. background).
Pseudo-hrT2 volumes are written as ``(y + 1) / 2`` in [0, 1] (nnU-Net z-scores MRI per case, so the
absolute scale does not matter downstream).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

PAD_VALUE = -1.0


@dataclass(frozen=True)
class SliceGrid:
    """The common 2D training grid plus the normalisation settings (stored in translator.json)."""

    inplane_spacing: float = 0.8
    image_size: int = 64
    divisor: int = 8
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    # trained on random image_size windows of larger slices (translator.random_crop): conversion then
    # translates such slices window by window (slices.sliding_windows); False in models saved before
    windowed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- orientation
def slice_axis(affine: np.ndarray) -> int:
    """Index of the array axis that points (closest to) superior/inferior."""
    codes = nib.aff2axcodes(affine)
    for i, c in enumerate(codes):
        if c in ("S", "I"):
            return i
    return 2  # degenerate affine: fall back to the crossMoDA convention


def to_slices_last(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float], int]:
    """(view with the slice axis last, in-plane spacings of the remaining two axes, original axis)."""
    axis = slice_axis(affine)
    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    inplane = tuple(float(zooms[i]) for i in range(3) if i != axis)
    return np.moveaxis(data, axis, -1), (inplane[0], inplane[1]), axis


def from_slices_last(data: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(data, -1, axis)


# --------------------------------------------------------------------------- intensities
def normalisation_range(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The robust (lo, hi) intensity range of a volume; ignores NaNs."""
    flat = np.asarray(data, dtype=np.float32).ravel()
    if flat.size > 4_000_000:  # percentiles on a strided sample: same value, bounded memory/time
        flat = flat[:: int(math.ceil(flat.size / 4_000_000))]
    lo, hi = np.nanpercentile(flat, [low, high])
    return float(lo), float(hi)


def normalise(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi] and map linearly to [-1, 1] (a constant volume maps to -1)."""
    out = np.asarray(data, dtype=np.float32)
    if not hi > lo:
        return np.full(out.shape, PAD_VALUE, dtype=np.float32)
    out = np.clip(out, lo, hi)
    out = (out - lo) * (2.0 / (hi - lo)) - 1.0
    return np.nan_to_num(out, nan=PAD_VALUE).astype(np.float32, copy=False)


def to_output_intensity(y: np.ndarray | torch.Tensor):
    """Generator output [-1, 1] -> the written pseudo-hrT2 range [0, 1]."""
    return (y + 1.0) * 0.5


# --------------------------------------------------------------------------- in-plane resampling
def resampled_shape(shape: tuple[int, int], spacing: tuple[float, float], target: float) -> tuple[int, int]:
    """In-plane shape after bringing pixels of ``spacing`` mm to ``target`` mm."""
    return tuple(max(1, int(round(n * s / target))) for n, s in zip(shape, spacing))  # type: ignore[return-value]


def resample(batch: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (N, C, H, W) to ``size``; anti-aliased when shrinking; a no-op when already there."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    if mode == "nearest":
        return F.interpolate(batch, size=size, mode="nearest-exact")
    shrink = size[0] < batch.shape[-2] or size[1] < batch.shape[-1]
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def resample_labels(labels: torch.Tensor, size: tuple[int, int], num_classes: int = 3) -> torch.Tensor:
    """Resize (N, H, W) integer labels via one-hot bilinear + argmax (keeps thin structures better
    than nearest neighbour when shrinking)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    onehot = F.one_hot(labels.long().clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    return resample(onehot, size).argmax(dim=1)


def centre_crop_or_pad(batch: torch.Tensor, size: tuple[int, int], value: float = PAD_VALUE) -> torch.Tensor:
    """Centre crop / pad the last two dims of ``batch`` to ``size``."""
    h, w = batch.shape[-2:]
    th, tw = size
    # pad first (symmetric, extra pixel at the end), then crop
    ph, pw = max(0, th - h), max(0, tw - w)
    if ph or pw:
        batch = F.pad(batch, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)
        h, w = batch.shape[-2:]
    top, left = (h - th) // 2, (w - tw) // 2
    return batch[..., top : top + th, left : left + tw]


def pad_to_multiple(
    batch: torch.Tensor, divisor: int, minimum: int = 0, value: float = PAD_VALUE
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (…, H, W) at the end so both are multiples of ``divisor`` (and >= ``minimum``).
    Returns the padded batch and the (top, bottom, left, right) pad to undo with :func:`unpad`."""
    h, w = batch.shape[-2:]
    th = max(minimum, int(math.ceil(h / divisor) * divisor))
    tw = max(minimum, int(math.ceil(w / divisor) * divisor))
    th = int(math.ceil(th / divisor) * divisor)
    tw = int(math.ceil(tw / divisor) * divisor)
    top, left = (th - h) // 2, (tw - w) // 2
    pads = (top, th - h - top, left, tw - w - left)
    if th != h or tw != w:
        batch = F.pad(batch, (pads[2], pads[3], pads[0], pads[1]), value=value)
    return batch, pads


def unpad(batch: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    top, bottom, left, right = pads
    h, w = batch.shape[-2:]
    return batch[..., top : h - bottom, left : w - right]


def volume_to_training_slices(
    data: np.ndarray, affine: np.ndarray, grid: SliceGrid, label: np.ndarray | None = None, crop: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All axial slices of one volume on the training grid: images (Z, 1, S, S) in [-1, 1]
    (+ labels (Z, S, S) uint8). Constant (empty) slices are dropped: they teach nothing.

    ``crop=False`` keeps the resampled extent (no centre crop or pad to ``image_size``): the caller
    puts slices of several volumes onto one canvas (:func:`canvas_size`, ``translator.random_crop``)."""
    lo, hi = normalisation_range(data, grid.low_percentile, grid.high_percentile)
    arr, spacing, axis = to_slices_last(normalise(data, lo, hi), affine)
    size = resampled_shape(arr.shape[:2], spacing, grid.inplane_spacing)
    imgs = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0)))[:, None]  # (Z, 1, H, W)
    imgs = resample(imgs, size)
    if crop:
        imgs = centre_crop_or_pad(imgs, (grid.image_size, grid.image_size))
    keep = (imgs.amax(dim=(1, 2, 3)) - imgs.amin(dim=(1, 2, 3))) > 1e-3
    labs = None
    if label is not None:
        lab = np.moveaxis(np.moveaxis(label, axis, -1), -1, 0)
        labs = resample_labels(torch.from_numpy(np.ascontiguousarray(lab)).long(), size)
        if crop:
            labs = centre_crop_or_pad_labels(labs, grid.image_size)
        labs = labs.round().to(torch.uint8)[keep]
    return imgs[keep].contiguous(), (labs.contiguous() if labs is not None else None)


def centre_crop_or_pad_labels(labels: torch.Tensor, side: int) -> torch.Tensor:
    """:func:`centre_crop_or_pad` for label slices (Z, H, W): padded with background, same dtype."""
    return centre_crop_or_pad(labels[:, None].float(), (side, side), value=0)[:, 0].to(labels.dtype)


def canvas_size(extents: list[tuple[int, int]], grid: SliceGrid, cap_factor: int = 2) -> int:
    """The square canvas that holds every resampled slice: the largest extent rounded up to the
    network's divisor, at least ``image_size`` and at most ``cap_factor * image_size``.

    Why: training on random ``image_size`` windows of this canvas (``translator.random_crop``) shows
    the translator the whole region of interest. A fixed centre crop of a wide ROI (both cochleae
    of a life-sized head are ~65 mm apart) never shows it the cochleae at all.
    """
    largest = max((max(h, w) for h, w in extents), default=grid.image_size)
    side = int(math.ceil(largest / grid.divisor) * grid.divisor)
    return int(min(max(side, grid.image_size), cap_factor * grid.image_size))


def random_window(rng: np.random.Generator, canvas: int, size: int) -> tuple[Any, slice, slice]:
    """The index of a random ``size`` x ``size`` window of ``canvas`` x ``canvas`` slices (last two dims)."""
    top, left = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
    return (..., slice(top, top + size), slice(left, left + size))


def windows_per_slice(extent: int, window: int) -> int:
    """How many ``window`` x ``window`` windows show an ``extent`` x ``extent`` slice once, rounded.

    Used twice, with one meaning: translator training shows ``slices_per_epoch`` x this many windows
    per epoch (``translator.random_crop``), and conversion of a windowed-trained generator goes window
    by window where a slice holds more than one (:func:`sliding_windows`).

    Why: on life-sized heads the crop fills a 160 px canvas against an 80 px window (4 windows per
    slice) and the ``tiny`` budget, 8 epochs of 128 windows, never learned the hrT2 contrast (best
    fidelity score 0.05; with 4x the windows: 0.85). Rounded, so the built-in phantom's 86 px canvas
    (1.16 windows) keeps its budget and its whole-slice conversion.
    """
    return max(1, int(round((extent / max(window, 1)) ** 2)))


def _window_starts(length: int, window: int, step: int) -> list[int]:
    starts = list(range(0, max(1, length - window + 1), step))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def sliding_windows(net, batch: torch.Tensor, window: int) -> torch.Tensor:
    """``net`` applied to ``window`` x ``window`` windows of ``batch`` (N, C, H, W; H, W >= ``window``),
    overlapping by half, each output weighted by a separable Hann window and normalised by the summed
    weights (every pixel is covered; the weights are > 0 up to the window's edge).

    Why: an instance-normalised generator's output depends on the statistics of the whole image it is
    given. One trained on 80 px windows of life-sized heads translated the same heads differently as
    whole slices: cochlea brighter than the head's median in 1 of 8 cases whole, 4 of 8 window by window
    (label-free fidelity score 0.43 -> 0.64, the in-head histogram distance 0.100 -> 0.084).
    """
    h, w = batch.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"sliding_windows needs slices of at least {window} px, got {h} x {w}")
    hann = torch.hann_window(window + 2, periodic=False, dtype=batch.dtype, device=batch.device)[1:-1]
    weight = hann[:, None] * hann[None, :]
    out: torch.Tensor | None = None
    total = torch.zeros((h, w), dtype=batch.dtype, device=batch.device)
    step = max(1, window // 2)
    for top in _window_starts(h, window, step):
        for left in _window_starts(w, window, step):
            y = net(batch[..., top : top + window, left : left + window]) * weight
            if out is None:
                out = torch.zeros((*y.shape[:-2], h, w), dtype=y.dtype, device=y.device)
            out[..., top : top + window, left : left + window] += y
            total[top : top + window, left : left + window] += weight
    assert out is not None
    return out / total
