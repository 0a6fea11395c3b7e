"""Unit tests of the translator: networks, each loss term on hand-computed inputs, slice geometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cosmos.config import load_config
from cosmos.errors import CosmosError
from cosmos.translation import losses
from cosmos.translation.conversion import convert_volume
from cosmos.translation.model_io import load_model_dir, save_model_dir
from cosmos.translation.networks import Generator, GeneratorSpec, PatchDiscriminator
from cosmos.translation.slices import (
    SliceGrid,
    centre_crop_or_pad,
    normalisation_range,
    normalise,
    pad_to_multiple,
    resample_labels,
    slice_axis,
    unpad,
    volume_to_training_slices,
)
from cosmos.translation.training import _check_resume_compatible, epoch_indices, random_flips


# ----------------------------------------------------------------------------------- networks
def test_generator_and_discriminator_shapes():
    gen = Generator(GeneratorSpec(base_channels=4, levels=3))
    x = torch.randn(2, 1, 40, 56)  # any multiple of 2**levels, not square
    img, seg = gen.translate_and_segment(x)
    assert img.shape == (2, 1, 40, 56) and seg.shape == (2, 3, 40, 56)
    assert float(img.detach().abs().max()) <= 1.0  # tanh range = the normalised intensity range
    assert gen(x).shape == (2, 1, 40, 56) and gen.segment(x).shape == (2, 3, 40, 56)
    d = PatchDiscriminator(1, 4, 3)
    out = d(torch.randn(2, 1, 64, 64))
    assert out.shape[:2] == (2, 1) and 1 < out.shape[-1] < 64  # a map of patch logits, not one number


def test_three_level_unet_has_three_poolings_and_shared_encoder():
    gen = Generator(GeneratorSpec(base_channels=4, levels=3))
    assert len(gen.encoder.blocks) == 3 and gen.encoder.widths == [4, 8, 16, 32]
    # exactly one encoder, used by both decoders
    enc_ids = {id(p) for p in gen.encoder.parameters()}
    assert not enc_ids & {id(p) for p in gen.translation_decoder.parameters()}
    assert not enc_ids & {id(p) for p in gen.segmentation_decoder.parameters()}


def test_segmentation_gradients_reach_the_encoder_including_skips():
    gen = Generator(GeneratorSpec(base_channels=4, levels=3))
    x = torch.randn(2, 1, 32, 32)
    gen.segment(x).sum().backward()
    # every encoder level (the skips feed the decoder from levels 0..2, the bottleneck from level 3)
    for block in list(gen.encoder.blocks) + [gen.encoder.bottleneck]:
        g = block[0].weight.grad
        assert g is not None and float(g.abs().sum()) > 0
    # the translation decoder is not touched by the segmentation loss
    assert all(p.grad is None for p in gen.translation_decoder.parameters())


def test_no_segmentor_builds_no_segmentation_decoder():
    gen = Generator(GeneratorSpec(base_channels=4, levels=2, with_seg=False))
    img, seg = gen.translate_and_segment(torch.randn(1, 1, 16, 16))
    assert seg is None and gen.segmentation_decoder is None
    with pytest.raises(RuntimeError):
        gen.segment(torch.randn(1, 1, 16, 16))


# ----------------------------------------------------------------------------------- losses
def test_cycle_and_identity_are_l1_means_summed_over_both_directions():
    x_s, x_t = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    rec_s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # |diff| mean = 0.25
    rec_t = torch.full((1, 1, 2, 2), 0.5)  # |diff| mean = 0.5
    assert losses.cycle_loss(x_s, rec_s, x_t, rec_t).item() == pytest.approx(0.75)
    assert losses.identity_loss(x_t, rec_t, x_s, rec_s).item() == pytest.approx(0.75)


def test_gan_terms_bce_and_lsgan_by_hand():
    logit = torch.tensor([0.0, 2.0])
    # bce: real -> mean(-log sigmoid), fake -> mean(-log(1 - sigmoid))
    sig = 1 / (1 + np.exp(-np.array([0.0, 2.0])))
    assert losses.gan_term(logit, True, "bce").item() == pytest.approx(float(np.mean(-np.log(sig))), rel=1e-5)
    assert losses.gan_term(logit, False, "bce").item() == pytest.approx(float(np.mean(-np.log(1 - sig))), rel=1e-5)
    assert losses.gan_term(logit, True, "lsgan").item() == pytest.approx((1 + 1) / 2)  # (0-1)^2, (2-1)^2
    assert losses.gan_term(logit, False, "lsgan").item() == pytest.approx((0 + 4) / 2)
    d_loss = losses.discriminator_loss(torch.zeros(1), torch.zeros(1), "bce")
    assert d_loss.item() == pytest.approx(2 * math.log(2), rel=1e-5)  # eq. (3) at D = 1/2 everywhere
    g_loss = losses.generator_adversarial_loss(torch.zeros(1), torch.zeros(1), "bce")
    assert g_loss.item() == pytest.approx(2 * math.log(2), rel=1e-5)
    with pytest.raises(ValueError):
        losses.gan_term(logit, True, "wgan")


def _logits_for(labels: torch.Tensor, classes: int = 3, big: float = 50.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float() * big


def test_soft_dice_perfect_wrong_and_half():
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    y[0, :2, :2] = 1  # 4 VS pixels
    y[0, 3, 3] = 2  # 1 cochlea pixel
    assert losses.soft_dice_loss(_logits_for(y), y).item() == pytest.approx(0.0, abs=1e-4)
    assert losses.soft_dice_loss(_logits_for(torch.zeros_like(y)), y).item() == pytest.approx(1.0, abs=1e-4)
    # VS predicted on 8 pixels (the 4 true + 4 false), cochlea perfect:
    pred = y.clone()
    pred[0, 2, :2] = 1
    pred[0, :2, 2] = 1
    vs_dice = 2 * 4 / (8 + 4)
    assert losses.soft_dice_loss(_logits_for(pred), y).item() == pytest.approx(1 - (vs_dice + 1) / 2, abs=1e-4)


def test_segmentation_term_only_counts_foreground_slices():
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[0, 1, 1] = 1  # slice 0 has foreground, slice 1 is empty
    logits = _logits_for(y)
    logits[1] = _logits_for(torch.ones(1, 4, 4, dtype=torch.long))[0]  # slice 1 all-VS: ignored
    assert losses.segmentation_loss_term(logits, y).item() == pytest.approx(0.0, abs=1e-4)
    assert losses.segmentation_loss_term(logits, torch.zeros_like(y)) is None
    assert losses.segmentation_loss_term(None, y) is None
    with_ce = losses.segmentation_loss_term(torch.zeros(2, 3, 4, 4), y, "dice_ce").item()
    assert with_ce > losses.segmentation_loss_term(torch.zeros(2, 3, 4, 4), y, "dice").item()
    assert with_ce == pytest.approx(1 - 2 * (1 / 3) / (16 / 3 + 1) + math.log(3), abs=1e-3)


# ----------------------------------------------------------------------------------- slices
def test_robust_normalisation_clips_outliers_and_maps_to_minus1_1():
    data = np.linspace(0, 100, 10001, dtype=np.float32).reshape(1, 1, -1)
    data[0, 0, -1] = 1e6  # a hot voxel must not squash the contrast
    lo, hi = normalisation_range(data, 0.5, 99.5)
    assert lo == pytest.approx(0.5, abs=0.02) and hi == pytest.approx(99.5, abs=0.05)
    out = normalise(data, lo, hi)
    assert out.min() == -1.0 and out.max() == 1.0 and out[0, 0, 5000] == pytest.approx(0.0, abs=1e-3)
    assert np.all(normalise(np.ones((2, 2, 2)), 1.0, 1.0) == -1.0)


def test_crop_pad_and_pad_unpad_round_trip():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    padded, pads = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (8, 8) and torch.equal(unpad(padded, pads), x)
    assert padded[0, 0, 0, 0] == -1.0
    c = centre_crop_or_pad(x, (3, 9))
    assert c.shape[-2:] == (3, 9) and torch.equal(c[0, 0, :, 1:8], x[0, 0, 1:4])


def test_label_resampling_keeps_small_structures():
    lab = torch.zeros(1, 20, 20, dtype=torch.long)
    lab[0, 4:6, 4:6] = 2
    lab[0, 10:16, 10:16] = 1
    small = resample_labels(lab, (10, 10))
    assert set(small.unique().tolist()) == {0, 1, 2}


def test_slice_axis_follows_the_affine():
    assert slice_axis(np.diag([0.5, 0.5, 1.0, 1.0])) == 2
    assert slice_axis(np.diag([-0.5, 0.5, -1.0, 1.0])) == 2  # flips keep the axis
    perm = np.zeros((4, 4))
    perm[2, 0], perm[0, 1], perm[1, 2], perm[3, 3] = 1.5, 0.5, 0.5, 1  # array axis 0 runs S/I
    assert slice_axis(perm) == 0


def test_training_slices_on_the_common_grid():
    vol = np.random.default_rng(0).random((50, 40, 6)).astype(np.float32)
    vol[..., 0] = 0  # an empty slice is dropped
    lab = np.zeros(vol.shape, np.uint8)
    lab[20:30, 15:25, 3] = 1
    grid = SliceGrid(inplane_spacing=1.0, image_size=32, divisor=8)
    imgs, labs = volume_to_training_slices(vol, np.diag([0.6, 0.8, 1.5, 1.0]), grid, lab)
    assert imgs.shape == (5, 1, 32, 32) and labs.shape == (5, 32, 32)
    assert imgs.min() >= -1 and imgs.max() <= 1
    # a 10x10-voxel square at 0.6x0.8 mm is ~6x8 pixels at 1 mm
    assert 30 <= int((labs[2] == 1).sum()) <= 70 and int(labs[0].sum()) == 0


class _Identity(Generator):
    """A 'translator' that returns its input: conversion must then give back the normalised source."""

    def forward(self, x):
        return x


@pytest.mark.parametrize("case", ["flipped", "permuted", "oblique"])
def test_convert_volume_returns_the_source_grid_aligned(case):
    rng = np.random.default_rng(1)
    shape = (36, 44, 7)
    vol = np.zeros(shape, np.float32)
    vol[10:20, 12:30, :] = 100.0  # a block: its edges must land on the same voxels
    vol += rng.random(shape).astype(np.float32)
    aff = np.diag([-0.7, 0.5, -1.5, 1.0])
    if case == "permuted":  # slice axis stored first: conversion must find it and put it back
        vol = np.ascontiguousarray(np.moveaxis(vol, 2, 0))
        aff = np.zeros((4, 4))
        aff[2, 0], aff[0, 1], aff[1, 2], aff[3, 3] = 1.5, -0.7, 0.5, 1
    if case == "oblique":
        c, s = math.cos(0.2), math.sin(0.2)
        aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ aff[:3, :3]
    gen = _Identity(GeneratorSpec(base_channels=2, levels=3, with_seg=False))
    grid = SliceGrid(inplane_spacing=0.9, image_size=32, divisor=8)
    out = convert_volume(gen, vol, aff, grid, batch_size=3)
    assert out.shape == vol.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    block = vol > 50
    inner = ndimage.binary_erosion(block, iterations=2, border_value=1)
    outer = ~ndimage.binary_dilation(block, iterations=2)
    assert out[inner].mean() > 0.95 and out[outer].mean() < 0.05  # the edges land on the same voxels
    # voxel-wise agreement with the (normalised) source despite the resampling round trip
    assert np.corrcoef(out.ravel(), vol.ravel())[0, 1] > 0.9


def test_convert_volume_chunking_gives_identical_results():
    gen = Generator(GeneratorSpec(base_channels=4, levels=3, with_seg=False))
    vol = np.random.default_rng(2).random((30, 34, 9)).astype(np.float32)
    aff = np.diag([0.6, 0.6, 1.5, 1.0])
    grid = SliceGrid(inplane_spacing=0.8, image_size=32, divisor=8)
    a = convert_volume(gen, vol, aff, grid, batch_size=1)
    b = convert_volume(gen, vol, aff, grid, batch_size=9)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_windowed_generator_converts_large_slices_window_by_window():
    """A generator trained on windows (``grid.windowed``) translates a slice that holds several of them window by
    window, blended: an identity net comes back exactly (the weights are normalised), an instance-normed generator
    differs from its whole-slice translation (its statistics are the window's), chunking does not matter, and a
    slice of about one window goes through whole, exactly as before (the built-in phantom's case)."""
    from cosmos.translation.slices import sliding_windows

    torch.manual_seed(0)
    x = torch.randn(2, 1, 70, 100)
    np.testing.assert_allclose(sliding_windows(lambda t: 2 * t, x, 32).numpy(), 2 * x.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at least 32"):
        sliding_windows(lambda t: t, x[..., :20, :], 32)
    gen = Generator(GeneratorSpec(base_channels=4, levels=1, with_seg=False))
    aff = np.diag([0.6, 0.6, 1.5, 1.0])
    whole = SliceGrid(inplane_spacing=0.6, image_size=32, divisor=2)
    windowed = SliceGrid(inplane_spacing=0.6, image_size=32, divisor=2, windowed=True)
    big = np.random.default_rng(3).random((72, 64, 3)).astype(np.float32)  # 4.5 windows per slice
    big[:, 40:] += 3.0
    a, b = convert_volume(gen, big, aff, whole), convert_volume(gen, big, aff, windowed, batch_size=1)
    assert a.shape == b.shape == big.shape and np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(b, convert_volume(gen, big, aff, windowed, batch_size=3), atol=1e-6)
    small = np.ascontiguousarray(big[:34, :34])  # one window per slice: whole, as without windows
    np.testing.assert_array_equal(convert_volume(gen, small, aff, whole), convert_volume(gen, small, aff, windowed))


def test_windowed_grid_is_saved_and_older_models_load_unwindowed(tmp_path):
    gen = Generator(GeneratorSpec(base_channels=4, levels=1))
    save_model_dir(gen, SliceGrid(image_size=32, divisor=2, windowed=True), tmp_path / "m")
    assert load_model_dir(tmp_path / "m").grid.windowed
    meta_file = tmp_path / "m" / "translator.json"
    meta = json.loads(meta_file.read_text())
    del meta["grid"]["windowed"]  # a model saved before the field existed
    meta_file.write_text(json.dumps(meta))
    assert load_model_dir(tmp_path / "m").grid.windowed is False


def test_model_dir_round_trip_and_errors(tmp_path):
    gen = Generator(GeneratorSpec(base_channels=4, levels=3))
    grid = SliceGrid(inplane_spacing=0.7, image_size=32, divisor=8)
    save_model_dir(gen, grid, tmp_path / "m", extra={"profile": "tiny"})
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.grid == grid and loaded.meta["profile"] == "tiny"
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.generator(x), gen.eval()(x))
    with pytest.raises(CosmosError, match="generator_s2t.pt"):
        load_model_dir(tmp_path)
    (tmp_path / "m" / "generator_s2t.pt").write_bytes(b"not a torch file")
    with pytest.raises(CosmosError, match="cannot load"):
        load_model_dir(tmp_path / "m")


# ----------------------------------------------------------------------------------- training helpers
def test_epoch_indices_cover_every_slice_and_oversample_foreground():
    rng = np.random.default_rng(0)
    idx = epoch_indices(rng, 10, 20)
    assert sorted(idx.tolist()) == sorted(list(range(10)) * 2)
    fg = np.array([3])
    idx = epoch_indices(np.random.default_rng(0), 100, 1000, fg, 0.5)
    assert 0.4 < np.mean(idx == 3) < 0.6


def test_random_flips_keep_image_and_label_aligned():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
    y = torch.arange(16).reshape(1, 4, 4).repeat(8, 1, 1)
    fx, fy = random_flips(np.random.default_rng(3), x, y)
    assert torch.equal(fx[:, 0].long(), fy)
    assert not torch.equal(fx, x)  # some flips happened with 8 samples


def test_resume_refuses_a_different_architecture(tmp_path):
    cfg = load_config("tiny")
    saved = cfg.flat("translator")
    _check_resume_compatible(saved, cfg.with_overrides(["translator.epochs=9"]), tmp_path)  # fine
    with pytest.raises(CosmosError, match="base_channels"):
        _check_resume_compatible(saved, cfg.with_overrides(["translator.base_channels=32"]), tmp_path)


def test_random_crop_keeps_whole_slices_that_a_centre_crop_cuts(tmp_path):
    """A wide ROI: the centre crop loses labelled voxels at the edges, the random-crop canvas keeps them all."""
    from cosmos.data.phantom import make_phantom
    from cosmos.translation.slices import canvas_size, random_window
    from cosmos.translation.training import load_slices

    root = make_phantom(tmp_path / "d", n_source=1, n_target=1, n_val=0, seed=2, scale="small", preview=False)
    grid = SliceGrid(inplane_spacing=0.8, image_size=32, divisor=2)
    centre = load_slices(root, grid)
    whole = load_slices(root, grid, random_crop=True)
    side = whole.source.shape[-1]
    assert centre.source.shape[-1] == 32 and 32 < side <= 64 and side % 2 == 0
    assert whole.target.shape[-1] == side and whole.labels.shape[-1] == side
    kept_centre = int((centre.labels > 0).sum())
    kept_whole = int((whole.labels > 0).sum())
    assert kept_whole > kept_centre  # the phantom's cochleae lie outside the central 25.6 mm
    assert canvas_size([(10, 12)], grid) == 32 and canvas_size([(200, 90)], grid) == 64
    rng = np.random.default_rng(0)
    windows = [random_window(rng, side, 32) for _ in range(50)]
    corners = {(w[1].start, w[2].start) for w in windows}
    assert all(0 <= t <= side - 32 and 0 <= left <= side - 32 for t, left in corners) and len(corners) > 1
    assert all(whole.source[w].shape[-2:] == (32, 32) for w in windows)


def test_an_epoch_shows_every_slice_the_same_share_whatever_the_crop():
    from cosmos.translation.slices import windows_per_slice

    assert windows_per_slice(160, 80) == 4  # life-sized heads: a canvas of 2 x 2 windows
    assert windows_per_slice(86, 80) == 1  # the built-in phantom keeps its budget
    assert windows_per_slice(80, 80) == 1 and windows_per_slice(120, 80) == 2
