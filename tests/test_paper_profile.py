"""The ``paper`` profile against COSMOS section 4.2, and the optional k-space cycle term (issue 15).

The plan test runs nnU-Net's own fingerprint + planner (no preprocessing) on a crossMoDA-sized phantom
(``make_phantom(scale="full")``: 512 x 512 x ~120 ceT1 at 0.4 x 0.4 x 1.5 mm, the grid the pseudo-hrT2
inherits), so a change in nnU-Net, in planning.py or in the profile that moves the plan away from the
published numbers fails here. PUBLISHED holds the paper's numbers, nothing else.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos.config import load_config
from cosmos.errors import CosmosError
from cosmos.segmentation import environment, export, planning
from cosmos.translation import losses

# COSMOS paper, section 4.2 ("nnU-Net", "Cropping", "Resampling", "For training").
PUBLISHED = {
    "patch_size": [40, 224, 224],  # z, y, x
    "spacing": [1.5, 0.41, 0.41],  # mm, z, y, x
    "downsamplings": 6,
    "features_base": 32,
    "batch_size": 2,
}


# ------------------------------------------------------------------------------ topology (fast)
def test_nnunet_rule_gives_five_downsamplings_on_the_published_patch():
    """Why the profile has 6 stages, not the paper's 7: nnU-Net's own rule refuses a 6th halving here."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, padded, _ = get_pool_and_conv_props(
        PUBLISHED["spacing"], PUBLISHED["patch_size"], planning.FEATUREMAP_MIN_EDGE, 999999
    )
    assert list(padded) == PUBLISHED["patch_size"]  # nnU-Net keeps the published patch as is
    assert len(strides) - 1 == PUBLISHED["downsamplings"] - 1
    ours, our_kernels = planning.derive_topology(PUBLISHED["spacing"], PUBLISHED["patch_size"])
    assert ours == [list(s) for s in strides] and our_kernels == [list(k) for k in kernels]
    # anisotropic start: the first stage pools and convolves in-plane only (z is 3.7x coarser)
    assert ours[1] == [1, 2, 2] and our_kernels[0] == [1, 3, 3]
    total = np.prod(np.array(ours), axis=0)
    assert all(p % s == 0 for p, s in zip(PUBLISHED["patch_size"], total))
    # the paper's depth needs a larger patch, and the error says which
    with pytest.raises(CosmosError, match=r"7 stages need a patch of at least \[40, 256, 256\]"):
        planning.derive_topology(PUBLISHED["spacing"], PUBLISHED["patch_size"], num_stages=7)
    shallow, shallow_k = planning.derive_topology(PUBLISHED["spacing"], PUBLISHED["patch_size"], num_stages=4)
    assert shallow == ours[:4] and shallow_k[:3] == our_kernels[:3] and shallow_k[-1] == [3, 3, 3]
    with pytest.raises(CosmosError, match="divisible"):
        planning.derive_topology(PUBLISHED["spacing"], [40, 220, 224])


@pytest.mark.parametrize("file_axes", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_target_spacing_is_given_in_plan_order_whatever_the_file_order(file_axes):
    """nnU-Net puts the coarsest axis first; planner_target_spacing undoes that for the planner's input."""
    true = np.array([1.5, 0.4, 0.45])  # one anatomy, z coarsest; the files store its axes as ``file_axes``
    spacings = [[float(true[a] * f) for a in file_axes] for f in (1.0, 0.9, 1.1)]
    first = int(np.argmax(np.median(spacings, axis=0)))
    assert file_axes[first] == 0  # the coarse axis is found wherever it is stored
    forward = [first] + [i for i in range(3) if i != first]  # nnU-Net's determine_transpose
    target = [1.5, 0.41, 0.43]  # in the plan's order
    given = planning.planner_target_spacing(target, spacings)
    assert np.allclose(np.array(given)[forward], target)
    assert int(np.argmax(given)) == first  # so nnU-Net derives the same transpose from the override


# ------------------------------------------------------------------------------ the plan (slow)
@pytest.mark.slow
def test_paper_profile_plans_the_published_network_on_a_crossmoda_sized_phantom(tmp_path):
    from cosmos.data import layout
    from cosmos.data.phantom import make_phantom

    cfg = load_config("paper", overrides=["segmentation.num_processes=1"])
    seg = cfg.segmentation
    root = make_phantom(tmp_path / "phantom", n_source=2, n_target=1, n_val=0, scale="full", preview=False)
    cases = [
        export.ExportCase(
            export.nnunet_case_id(export.KIND_PSEUDO, c.case_id),
            export.KIND_PSEUDO,
            c.case_id,
            str(c.image),
            str(c.label),
        )
        for c in layout.discover(root).source
    ]
    assert len(cases) == 2
    raw_root, pre_root = tmp_path / "raw", tmp_path / "pre"
    raw = export.export_raw_dataset(cases, raw_root, 790, 0)
    pre = pre_root / raw.name
    pre.mkdir(parents=True)
    with environment.nnunet_env(raw=raw_root, preprocessed=pre_root, n_proc_da=None, num_processes=1):
        nn_plans = planning.plan_dataset(790, raw, pre, seg)
    assert not (pre / "nnUNetPlans_3d_fullres").exists()  # planning only: nothing preprocessed

    base = nn_plans["configurations"]["3d_fullres"]
    # nnU-Net planned (and would preprocess) at the published spacing, z first
    assert nn_plans["transpose_forward"] == [0, 1, 2]
    assert base["spacing"] == pytest.approx(PUBLISHED["spacing"], rel=1e-6)
    # the constant we pass to nnU-Net's rule reproduces nnU-Net's own planned topology
    strides, kernels = planning.derive_topology(base["spacing"], base["patch_size"])
    assert strides == base["architecture"]["arch_kwargs"]["strides"]
    assert kernels == base["architecture"]["arch_kwargs"]["kernel_sizes"]

    plans, name = planning.cosmos_plans(nn_plans, seg)
    ours = plans["configurations"][name]
    arch = ours["architecture"]["arch_kwargs"]
    assert ours["patch_size"] == PUBLISHED["patch_size"]
    assert ours["batch_size"] == PUBLISHED["batch_size"]
    n = arch["n_stages"]
    assert n == seg.num_stages == len(arch["strides"]) == len(arch["kernel_sizes"]) == len(arch["n_conv_per_stage"])
    assert n - 1 == PUBLISHED["downsamplings"] - 1  # the documented deviation (see the test above and docs/method.md)
    assert arch["features_per_stage"][0] == PUBLISHED["features_base"]
    assert max(arch["features_per_stage"]) == seg.features_max and len(arch["features_per_stage"]) == n
    total = np.prod(np.array(arch["strides"]), axis=0)
    assert all(p % s == 0 for p, s in zip(ours["patch_size"], total))
    assert [p // s for p, s in zip(ours["patch_size"], total)] == [5, 7, 7]  # bottleneck edge >= 4 (nnU-Net)
    assert arch["norm_op"].endswith("InstanceNorm3d") and arch["nonlin"].endswith("LeakyReLU")

    # the plan builds: nnU-Net's own network factory, deep supervision on (as nnU-Net trains it)
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    conf = PlansManager(plans).get_configuration(name)
    assert conf.patch_size == PUBLISHED["patch_size"] and conf.spacing == pytest.approx(PUBLISHED["spacing"])
    net = get_network_from_plans(
        conf.network_arch_class_name,
        conf.network_arch_init_kwargs,
        conf.network_arch_init_kwargs_req_import,
        1,
        3,
        allow_init=False,
        deep_supervision=True,
    )
    assert net.decoder.deep_supervision and len(net.encoder.stages) == n


# ------------------------------------------------------------------------------ k-space cycle term
def test_kspace_log_magnitude_by_hand():
    x = torch.full((1, 1, 4, 4), 0.5)  # constant: all energy in the DC term, ortho DC = mean * sqrt(16)
    mag = losses.kspace_log_magnitude(x)
    assert mag[0, 0, 0, 0].item() == pytest.approx(math.log1p(0.5 * 4), rel=1e-5)
    assert mag[0, 0].flatten()[1:].max().item() == pytest.approx(math.log1p(math.sqrt(losses.KSPACE_EPS)), abs=1e-6)


def test_kspace_cycle_loss_is_zero_for_a_perfect_cycle_and_sees_fine_detail():
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    assert losses.kspace_cycle_loss(x_s, x_s, x_t, x_t).item() == pytest.approx(0.0, abs=1e-7)
    # a shift keeps every magnitude (phase only): the term ignores it, the image-domain L1 does not
    shifted = torch.roll(x_s, 3, dims=-1)
    assert losses.kspace_cycle_loss(x_s, shifted, x_t, x_t).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.cycle_loss(x_s, shifted, x_t, x_t).item() > 0.1
    # blurring (lost fine detail) is penalised, and gradients stay finite even on an all-zero image
    blurred = torch.nn.functional.avg_pool2d(x_s, 3, stride=1, padding=1, count_include_pad=False)
    assert losses.kspace_cycle_loss(x_s, blurred, x_t, x_t).item() > 0.05
    zero = torch.zeros(1, 1, 8, 8, requires_grad=True)
    losses.kspace_cycle_loss(zero, torch.ones(1, 1, 8, 8), zero, zero).backward()
    assert torch.isfinite(zero.grad).all()


def test_translator_step_adds_the_kspace_term_only_when_weighted():
    from cosmos.translation.training import TranslatorTrainer

    torch.manual_seed(0)
    x_s, x_t = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    y_s = torch.zeros(2, 32, 32, dtype=torch.long)
    small = ["translator.base_channels=4", "translator.disc_channels=4", "translator.image_size=32"]
    off = TranslatorTrainer(load_config("tiny", overrides=small), torch.device("cpu"))
    assert "kspace" not in off.step(x_s, y_s, x_t, seg_translated_on=False)
    report = load_config("tiny", overrides=small + ["translator.loss_preset=report"])
    assert report.translator.lambda_kspace > 0
    out = TranslatorTrainer(report, torch.device("cpu")).step(x_s, y_s, x_t, seg_translated_on=False)
    t = report.translator
    assert out["kspace"] > 0
    assert out["total"] == pytest.approx(
        t.lambda_cycle * out["cycle"]
        + t.lambda_adv * out["adv_G"]
        + t.lambda_identity * out["identity"]
        + t.lambda_kspace * out["kspace"],
        rel=1e-4,
    )
