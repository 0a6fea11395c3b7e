"""Fast tests of the nnU-Net adapter pieces that need no training (export, plans, post-processing, inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cosmos.config import ConfigError, load_config
from cosmos.data import nifti
from cosmos.errors import CosmosError
from cosmos.segmentation import environment, export, planning
from cosmos.segmentation.inference import (
    collect_inputs,
    keep_confident_vs_component,
    keep_largest_vs_component,
    keep_one_cochlea_per_side,
    one_vs_component,
    output_name,
    predict,
)
from cosmos.segmentation.prepare import load_prepared
from cosmos.segmentation.training import train_fold

SHAPE = (40, 40, 12)


def _affine(n: int) -> np.ndarray:
    a = 0.15 * (n % 3 - 1)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.5, 0.5, -1.5])
    aff[:3, 3] = [10.0, -5.0, 20.0 + n]
    return aff


def _case(n: int, labels=(1, 2)):
    rng = np.random.default_rng(n)
    img = rng.normal(0.2, 0.05, SHAPE).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    if 1 in labels:
        lab[10:18, 12:20, 4:8] = 1
    if 2 in labels:
        lab[28:32, 26:30, 5:7] = 2
    img[lab == 1] += 0.5
    img[lab == 2] += 1.0
    return img, lab


def _write_pseudo(folder: Path, ids) -> Path:
    for n in ids:
        img, lab = _case(n)
        nifti.save(folder / f"crossmoda_{n}_hrT2pseudo.nii.gz", img, affine=_affine(n))
        nifti.save(folder / f"crossmoda_{n}_Label.nii.gz", lab, affine=_affine(n), label=True)
    return folder


def _write_real(images: Path, labels: Path, ids) -> None:
    for n in ids:
        img, lab = _case(n)
        nifti.save(images / f"crossmoda_{n}_hrT2.nii.gz", img, affine=_affine(n))
        nifti.save(labels / f"crossmoda_{n}_Label.nii.gz", lab, affine=_affine(n), label=True)


# ------------------------------------------------------------------------------ export
def test_export_names_cases_by_kind_and_keeps_provenance(tmp_path):
    pseudo = _write_pseudo(tmp_path / "pseudo", [1, 2])
    (tmp_path / "t").mkdir(), (tmp_path / "pl").mkdir()
    _write_real(tmp_path / "t", tmp_path / "pl", [106])
    nifti.save(tmp_path / "t" / "crossmoda_107_hrT2.nii.gz", _case(107)[0], affine=_affine(107))  # dropped by filter
    cases = export.collect_pseudo_cases(pseudo) + export.collect_real_cases(tmp_path / "t", tmp_path / "pl")
    folder = export.export_raw_dataset(cases, tmp_path / "raw", 700, 1)
    assert folder.name == "Dataset700_CosmosRound1"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "pseudo_crossmoda_1_0000.nii.gz",
        "pseudo_crossmoda_2_0000.nii.gz",
        "real_crossmoda_106_0000.nii.gz",
    ]
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "hrT2"}
    assert ds["labels"] == {"background": 0, "VS": 1, "cochlea": 2}
    assert ds["numTraining"] == 3 and ds["file_ending"] == ".nii.gz"
    meta = json.loads((folder / "cases.json").read_text())
    assert meta["real_crossmoda_106"]["kind"] == "real"
    assert meta["real_crossmoda_106"]["label"] == str(tmp_path / "pl" / "crossmoda_106_Label.nii.gz")
    assert meta["pseudo_crossmoda_2"]["image"].endswith("crossmoda_2_hrT2pseudo.nii.gz")
    # byte copies: the header (sform/qform) is exactly the source's
    assert (folder / "imagesTr" / "pseudo_crossmoda_1_0000.nii.gz").read_bytes() == (
        pseudo / "crossmoda_1_hrT2pseudo.nii.gz"
    ).read_bytes()


def test_export_errors_name_the_problem(tmp_path):
    with pytest.raises(CosmosError, match="not found"):
        export.collect_pseudo_cases(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CosmosError, match="hrT2pseudo"):
        export.collect_pseudo_cases(tmp_path / "empty")
    pseudo = _write_pseudo(tmp_path / "p", [1])
    (pseudo / "crossmoda_1_Label.nii.gz").unlink()
    with pytest.raises(CosmosError, match="crossmoda_1_hrT2pseudo.nii.gz"):
        export.collect_pseudo_cases(pseudo)
    (tmp_path / "t").mkdir(), (tmp_path / "pl").mkdir()
    _write_real(tmp_path / "t", tmp_path / "pl", [106])
    (tmp_path / "t" / "crossmoda_106_hrT2.nii.gz").unlink()
    with pytest.raises(CosmosError, match="crossmoda_106"):
        export.collect_real_cases(tmp_path / "t", tmp_path / "pl")


def test_precheck_rejects_misaligned_label_and_bad_values(tmp_path):
    pseudo = _write_pseudo(tmp_path / "p", [1, 2])
    img, lab = _case(2)
    lab[0, 0, 0] = 5
    nifti.save(pseudo / "crossmoda_2_Label.nii.gz", lab, affine=_affine(2), label=True)
    nifti.save(pseudo / "crossmoda_1_Label.nii.gz", _case(1)[1], affine=_affine(7), label=True)
    folder = export.export_raw_dataset(export.collect_pseudo_cases(pseudo), tmp_path / "raw", 700, 0)
    with pytest.raises(CosmosError) as err:
        planning.precheck_raw_dataset(folder, json.loads((folder / "cases.json").read_text()))
    assert "crossmoda_1_Label.nii.gz: not on the grid" in str(err.value)
    assert "crossmoda_2_Label.nii.gz: unexpected label values [5]" in str(err.value)


def test_precheck_names_cases_whose_label_holds_no_structure(tmp_path):
    pseudo = _write_pseudo(tmp_path / "p", [1, 2])
    nifti.save(pseudo / "crossmoda_2_Label.nii.gz", np.zeros(SHAPE, np.uint8), affine=_affine(2), label=True)
    folder = export.export_raw_dataset(export.collect_pseudo_cases(pseudo), tmp_path / "raw", 700, 0)
    assert planning.precheck_raw_dataset(folder, json.loads((folder / "cases.json").read_text())) == [
        "pseudo_crossmoda_2"
    ]


def test_export_passes_nnunet_integrity_check(tmp_path):
    """nnU-Net's own verify_dataset_integrity on a student-round export (pseudo + real, oblique affines)."""
    pseudo = _write_pseudo(tmp_path / "pseudo", [1, 2, 3])
    (tmp_path / "t").mkdir(), (tmp_path / "pl").mkdir()
    _write_real(tmp_path / "t", tmp_path / "pl", [106, 107])
    cases = export.collect_pseudo_cases(pseudo) + export.collect_real_cases(tmp_path / "t", tmp_path / "pl")
    folder = export.export_raw_dataset(cases, tmp_path / "raw", 701, 1)
    planning.verify_integrity(folder, num_processes=1)  # raises CosmosError on any problem
    with environment.dataset_pools_in_process():  # segmentation.num_processes=0: the same check, no processes
        planning.verify_integrity(folder, num_processes=1)
    # and the check really checks: a missing label makes it fail, in worker processes or in threads
    (folder / "labelsTr" / "real_crossmoda_107.nii.gz").unlink()
    with pytest.raises(CosmosError, match="integrity"):
        planning.verify_integrity(folder, num_processes=1)
    with pytest.raises(CosmosError, match="integrity"), environment.dataset_pools_in_process():
        planning.verify_integrity(folder, num_processes=1)


def test_dataset_pools_in_process_swaps_nnunet_pools_for_threads_and_restores_them():
    import multiprocessing
    from multiprocessing.pool import ThreadPool

    from nnunetv2.preprocessing.preprocessors import default_preprocessor

    with environment.dataset_pools_in_process():
        assert default_preprocessor.multiprocessing.get_context("spawn").Pool is ThreadPool
        assert multiprocessing.get_context("spawn").Pool is not ThreadPool  # only nnU-Net's name is replaced
    assert default_preprocessor.multiprocessing is multiprocessing
    with environment.nnunet_env(num_processes=0):  # segmentation.num_processes=0 means exactly this
        assert default_preprocessor.multiprocessing.get_context("spawn").Pool is ThreadPool
    with environment.nnunet_env(num_processes=2):
        assert default_preprocessor.multiprocessing is multiprocessing
    with pytest.raises(ValueError), environment.dataset_pools_in_process():
        raise ValueError("restored on errors too")
    assert default_preprocessor.multiprocessing is multiprocessing


# ------------------------------------------------------------------------------ plans
def _fake_plans() -> dict:
    return {
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                # what nnU-Net's planner derives for this patch at this spacing (planning.derive_topology)
                "data_identifier": "nnUNetPlans_3d_fullres",
                "batch_size": 5,
                "patch_size": [24, 64, 64],
                "spacing": [1.5, 0.5, 0.5],
                "architecture": {
                    "network_class_name": "x.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": 5,
                        "features_per_stage": [32, 64, 128, 256, 320],
                        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                        "n_conv_per_stage": [2, 2, 2, 2, 2],
                        "n_conv_per_stage_decoder": [2, 2, 2, 2],
                    },
                },
            },
            "2d": {"data_identifier": "nnUNetPlans_2d"},
        },
    }


def test_cosmos_plans_inherit_and_override_budget():
    seg = load_config("tiny", overrides=["segmentation.patch_size_max=null"]).segmentation
    plans, name = planning.cosmos_plans(_fake_plans(), seg)
    assert name == "3d_fullres_cosmos" and plans["plans_name"] == "CosmosPlans"
    ours = plans["configurations"][name]
    assert ours["inherits_from"] == "3d_fullres"
    assert ours["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64, 128, 128]
    assert ours["architecture"]["arch_kwargs"]["strides"][1] == [1, 2, 2]  # whole architecture block kept
    assert ours["batch_size"] == 2 and "patch_size" not in ours  # no cap: nnU-Net's planned patch is inherited
    capped, _ = planning.cosmos_plans(_fake_plans(), load_config("tiny").segmentation)  # tiny caps at 32x48x48
    assert capped["configurations"][name]["patch_size"] == [24, 48, 48]
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32
    paper = load_config("paper").segmentation  # its own patch: the topology is re-derived (6 stages on 40x224x224)
    plans, _ = planning.cosmos_plans(_fake_plans(), paper)
    arch = plans["configurations"][name]["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [32, 64, 128, 256, 320, 320] and arch["n_stages"] == 6
    assert plans["configurations"][name]["patch_size"] == [40, 224, 224]
    assert len(arch["kernel_sizes"]) == len(arch["n_conv_per_stage"]) == len(arch["n_conv_per_stage_decoder"]) + 1 == 6


def test_cosmos_plans_patch_size_must_fit_the_network_strides():
    seg = load_config("tiny", overrides=["segmentation.patch_size=[16,32,32]"]).segmentation
    plans, name = planning.cosmos_plans(_fake_plans(), seg)
    assert plans["configurations"][name]["patch_size"] == [16, 32, 32]
    # the smaller patch gets nnU-Net's topology for it (one stage fewer), not the planned one
    assert plans["configurations"][name]["architecture"]["arch_kwargs"]["strides"] == [
        [1, 1, 1],
        [1, 2, 2],
        [2, 2, 2],
        [2, 2, 2],
    ]
    assert (
        planning.derive_topology([1.5, 0.5, 0.5], [24, 64, 64])[0]
        == _fake_plans()["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"]
    )
    bad = load_config("tiny", overrides=["segmentation.patch_size=[16,30,32]"]).segmentation
    with pytest.raises(CosmosError, match="divisible"):
        planning.cosmos_plans(_fake_plans(), bad)


def test_splits_need_enough_cases(tmp_path):
    path = planning.write_splits(tmp_path, [f"pseudo_crossmoda_{i}" for i in range(7)], 5)
    splits = json.loads(path.read_text())
    assert len(splits) == 5
    assert sorted(sum((s["val"] for s in splits), [])) == sorted(f"pseudo_crossmoda_{i}" for i in range(7))
    with pytest.raises(CosmosError, match="folds"):
        planning.write_splits(tmp_path, ["a", "b"], 5)


# ------------------------------------------------------------------------------ post-processing
def test_vs_largest_component_keeps_a_separate_cochlea():
    seg = np.zeros((30, 30, 10), np.uint8)
    seg[2:10, 2:10, 2:6] = 1  # the VS
    seg[20:22, 20:22, 2:3] = 1  # a stray VS speck
    seg[15:18, 2:5, 2:4] = 2  # cochlea, separate from the VS
    seg[25:27, 25:27, 7:8] = 2  # a second (contralateral) cochlea component: must stay
    out = keep_largest_vs_component(seg)
    assert (out[20:22, 20:22, 2:3] == 0).all()
    assert (out[2:10, 2:10, 2:6] == 1).all()
    assert (out == 2).sum() == (seg == 2).sum()
    assert out is not seg and (seg[20:22, 20:22, 2:3] == 1).all()  # input untouched
    assert (keep_largest_vs_component(np.zeros((4, 4, 4), np.uint8)) == 0).all()


def test_confident_vs_component_keeps_a_small_sure_tumour_over_larger_unsure_blobs():
    """The life-sized failure: a 4-7 mm tumour among larger false VS blobs. ``largest`` keeps a false blob,
    ``confident`` the tumour; too-small specks never win, whatever their probability; cochlea untouched."""
    seg = np.zeros((40, 40, 12), np.uint8)
    prob = np.zeros(seg.shape, np.float32)
    seg[2:14, 2:14, 2:8] = 1  # a large false blob (864 voxels), p ~ 0.8
    prob[2:14, 2:14, 2:8] = 0.8
    seg[30:35, 30:35, 4:8] = 1  # the tumour (100 voxels), p ~ 0.95
    prob[30:35, 30:35, 4:8] = 0.95
    seg[20, 20, 5] = 1  # a sure one-voxel speck: 1 mm3 < 20 mm3
    prob[20, 20, 5] = 1.0
    seg[18:21, 2:5, 2:4] = 2  # cochlea
    out = keep_confident_vs_component(seg, prob, voxel_mm3=1.0, min_mm3=20.0)
    assert (out[30:35, 30:35, 4:8] == 1).all() and (out == 1).sum() == 100
    assert (out == 2).sum() == (seg == 2).sum()
    assert (keep_largest_vs_component(seg)[2:14, 2:14, 2:8] == 1).all()  # the paper's rule keeps the blob
    # no component reaches the floor: the largest one, as the paper
    out = keep_confident_vs_component(seg, prob, voxel_mm3=0.01, min_mm3=20.0)
    assert (out[2:14, 2:14, 2:8] == 1).all() and (out == 1).sum() == 864
    # one component: untouched; the config picks the rule; confident needs probabilities
    single = (seg == 2).astype(np.uint8) * 2
    single[2:14, 2:14, 2:8] = 1
    assert (keep_confident_vs_component(single, prob, 1.0) == single).all()
    cfg = load_config(profile="tiny")
    assert (
        cfg.segmentation.vs_component == "confident"
        and load_config(profile="paper").segmentation.vs_component == "largest"
    )
    three = np.stack([1 - prob, prob, np.zeros_like(prob)])
    assert (one_vs_component(seg, three, 1.0, cfg.segmentation)[30:35, 30:35, 4:8] == 1).all()
    with pytest.raises(ValueError, match="probabilities"):
        one_vs_component(seg, None, 1.0, cfg.segmentation)
    with pytest.raises(CosmosError, match="vs_component"):
        load_config(profile="tiny", overrides=["segmentation.vs_component=smallest"])


def test_one_cochlea_per_side_keeps_the_largest_on_each_side_in_world_coordinates():
    """Two cochleae (one per inner ear) among bright-fluid false positives next to each and far away: the largest
    component on each side of the midline stays, everything else goes; the VS is untouched; sides are world sides,
    so a flipped x axis (LPS-like storage) gives the same anatomy."""
    seg = np.zeros((40, 20, 10), np.uint8)
    seg[4:9, 8:12, 4:7] = 2  # left cochlea (60 voxels)
    seg[10:12, 8:10, 4:6] = 2  # left vestibule, marked as cochlea (8)
    seg[30:35, 8:12, 4:7] = 2  # right cochlea (60)
    seg[27:29, 8:10, 4:6] = 2  # right vestibule (8)
    seg[33:35, 1:3, 0:2] = 2  # a far CSF speck, right (8)
    seg[25:29, 14:18, 2:6] = 1  # the VS, right
    seg[2:4, 1:3, 8:10] = 1  # a second VS blob: not this rule's business
    for sign in (1.0, -1.0):
        affine = np.diag([sign * 0.5, 0.5, 1.0, 1.0])
        affine[0, 3] = -sign * 10.0  # voxel 20 sits at world x = 0
        out = keep_one_cochlea_per_side(seg, affine, midline_x=0.0)
        assert (out[4:9, 8:12, 4:7] == 2).all() and (out[30:35, 8:12, 4:7] == 2).all()
        assert (out == 2).sum() == 120
        assert ((out == 1) == (seg == 1)).all()
    assert (seg == 2).sum() == 144  # input untouched
    # the midline matters: past every component, they are all on one side and only one cochlea stays
    out = keep_one_cochlea_per_side(seg, np.diag([0.5, 0.5, 1.0, 1.0]), midline_x=100.0)
    assert (out == 2).sum() == 60
    single = np.zeros_like(seg)
    single[4:9, 8:12, 4:7] = 2
    assert (keep_one_cochlea_per_side(single, np.eye(4), 0.0) == single).all()


def test_head_midline_is_the_head_centre_in_world_x_and_the_config_picks_the_rule(tmp_path):
    from cosmos.data import nifti
    from cosmos.segmentation.inference import head_midline_x, postprocess

    data = np.zeros((80, 40, 20), np.float32)
    data[30:70, 5:35, 3:17] = 100.0  # a head off the centre of the field of view: voxels 30-69
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # x flipped
    affine[0, 3] = 40.0
    vol = nifti.Volume(data=data, affine=affine, header=None)
    assert abs(head_midline_x(vol) - (40.0 - 49.5)) < 2.0  # the head's centre, not the field of view's (40 - 39.5)
    seg = np.zeros(data.shape, np.uint8)
    seg[35:40, 10:14, 8:11] = 2  # one cochlea per side of voxel 49.5
    seg[60:65, 10:14, 8:11] = 2
    seg[55:57, 10:12, 8:10] = 2  # a vestibule on the second side
    paper = load_config(profile="paper").segmentation
    tiny = load_config(profile="tiny").segmentation
    assert paper.cochlea_components == "all" and tiny.cochlea_components == "per_side"
    assert load_config(profile="small").segmentation.cochlea_components == "per_side"
    assert (postprocess(seg, None, vol, paper) == 2).sum() == 128
    probs = np.zeros((3, *seg.shape), np.float32)
    assert (postprocess(seg, probs, vol, tiny) == 2).sum() == 120
    with pytest.raises(CosmosError, match="cochlea_components"):
        load_config(profile="tiny", overrides=["segmentation.cochlea_components=two"])


# ------------------------------------------------------------------------------ inputs / errors
def test_output_names_and_input_collection(tmp_path):
    assert output_name("/x/crossmoda_211_hrT2.nii.gz") == "crossmoda_211_Label.nii.gz"
    assert output_name("scan.nii") == "scan_seg.nii.gz"
    d = tmp_path / "val"
    d.mkdir()
    for name in (
        "crossmoda_212_hrT2.nii.gz",
        "crossmoda_211_hrT2.nii.gz",
        "crossmoda_3_ceT1.nii.gz",
        "crossmoda_211_Label.nii.gz",
        "notes.txt",
    ):
        (d / name).write_bytes(b"")
    assert [p.name for p in collect_inputs(d)] == ["crossmoda_211_hrT2.nii.gz", "crossmoda_212_hrT2.nii.gz"]
    with pytest.raises(CosmosError, match="no hrT2"):
        (tmp_path / "e").mkdir()
        collect_inputs(tmp_path / "e")
    with pytest.raises(CosmosError, match="not found"):
        collect_inputs([tmp_path / "missing.nii.gz"])


def test_missing_artifacts_raise_cosmos_errors(tmp_path):
    cfg = load_config("tiny")
    with pytest.raises(CosmosError, match="not a prepared"):
        load_prepared(tmp_path)
    with pytest.raises(CosmosError, match="not a prepared"):
        train_fold(tmp_path, 0, tmp_path / "f0", cfg)
    img = tmp_path / "in" / "crossmoda_1_hrT2.nii.gz"
    nifti.save(img, _case(1)[0], affine=_affine(1))
    with pytest.raises(CosmosError, match="not a trained fold model"):
        predict([tmp_path / "nofold"], img.parent, tmp_path / "out", cfg)


def test_patch_size_max_caps_the_planned_patch_and_rederives_a_topology_that_does_not_fit():
    seg = load_config("tiny", overrides=["segmentation.patch_size_max=[32,48,100]"]).segmentation
    plans, name = planning.cosmos_plans(_fake_plans(), seg)
    # planned [24, 64, 64], total stride [4, 16, 16]: 48 is on the stride grid, the planned topology is kept
    ours = plans["configurations"][name]
    assert ours["patch_size"] == [24, 48, 64]
    planned = _fake_plans()["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"]
    assert ours["architecture"]["arch_kwargs"]["strides"] == planned
    # 40 is not: the patch is NOT rounded down to 32; nnU-Net's rule plans the network for 40
    seg = load_config("tiny", overrides=["segmentation.patch_size_max=[32,40,100]"]).segmentation
    plans, name = planning.cosmos_plans(_fake_plans(), seg)
    ours = plans["configurations"][name]
    assert ours["patch_size"] == [24, 40, 64]
    strides = ours["architecture"]["arch_kwargs"]["strides"]
    assert (strides, ours["architecture"]["arch_kwargs"]["n_stages"]) == (
        planning.derive_topology([1.5, 0.5, 0.5], [24, 40, 64])[0],
        len(strides),
    )
    seg = load_config("tiny", overrides=["segmentation.patch_size_max=[64,64,64]"]).segmentation
    plans, name = planning.cosmos_plans(_fake_plans(), seg)
    assert "patch_size" not in plans["configurations"][name]


def test_a_fine_scan_keeps_the_capped_patch_instead_of_a_third_of_it():
    # measured on life-sized heads: nnU-Net plans 6 stages (in-plane stride 32) at 0.43 mm, and rounding the
    # tiny cap 48 down to that stride left a 32 x 32 x 32 patch, 14 mm in-plane
    fine = _fake_plans()
    base = fine["configurations"]["3d_fullres"]
    base.update({"patch_size": [56, 128, 256], "spacing": [1.32, 0.43, 0.43]})
    base["architecture"]["arch_kwargs"].update(
        {
            "n_stages": 6,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
            "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 5,
            "n_conv_per_stage": [2] * 6,
            "n_conv_per_stage_decoder": [2] * 5,
        }
    )
    plans, name = planning.cosmos_plans(fine, load_config("tiny").segmentation)
    ours = plans["configurations"][name]
    assert ours["patch_size"] == [32, 48, 48]
    total = np.prod(np.array(ours["architecture"]["arch_kwargs"]["strides"]), axis=0)
    assert all(p % t == 0 for p, t in zip([32, 48, 48], total))


def test_min_patch_mm_coarsens_only_the_axes_that_fall_short():
    # life-sized heads: 48 voxels x 0.43 mm = 21 mm in-plane < 23 -> 23 / 48 mm; z (32 x 1.32 = 42 mm) stays
    out = planning.spacing_for_field_of_view([1.32, 0.43, 0.43], [32, 48, 48], [35.0, 23.0, 23.0])
    assert out == pytest.approx([1.32, 23 / 48, 23 / 48])
    # the built-in phantom's grids already cover it: nothing changes (pseudo-hrT2 and real hrT2)
    assert planning.spacing_for_field_of_view([1.47, 0.588, 0.588], [32, 48, 48], [35.0, 23.0, 23.0]) is None
    assert planning.spacing_for_field_of_view([1.0955, 0.488, 0.488], [32, 48, 48], [35.0, 23.0, 23.0]) is None
    assert planning.spacing_for_field_of_view([1.0, 0.4, 0.4], None, [35.0, 23.0, 23.0]) is None
    with pytest.raises(CosmosError, match="min_patch_mm"):
        planning.spacing_for_field_of_view([1.0, 0.4, 0.4], [32, 48, 48], [23.0, 23.0])


# ------------------------------------------------------------------------------ budget / config
def test_iterations_scale_with_the_student_case_count():
    from types import SimpleNamespace

    from cosmos.segmentation.trainer import TrainerBudget, scaled_iterations
    from cosmos.segmentation.training import fold_seed

    fov_off = "segmentation.fov_reference_patches=0"  # the field-of-view factor has its own test
    seg = load_config("tiny", overrides=[fov_off]).segmentation
    base = seg.iterations_per_epoch
    student = SimpleNamespace(num_cases=16 + 11, num_pseudo=16, num_real=11)
    teacher = SimpleNamespace(num_cases=16, num_pseudo=16, num_real=0)
    assert TrainerBudget.from_config(seg, student).iterations_per_epoch == base  # off by default (paper)
    on = load_config("tiny", overrides=["segmentation.scale_iterations_with_cases=true", fov_off]).segmentation
    assert TrainerBudget.from_config(on, student).iterations_per_epoch == round(base * 27 / 16)
    assert TrainerBudget.from_config(on, teacher).iterations_per_epoch == base
    assert TrainerBudget.from_config(on).iterations_per_epoch == base  # no round given: unchanged
    assert scaled_iterations(25, 7, 4) == 44 and scaled_iterations(1, 1, 100) == 1
    assert TrainerBudget.from_config(seg, lr_scale=0.1).initial_lr == pytest.approx(seg.initial_lr * 0.1)
    assert fold_seed(0, 0, 1) == 1 and fold_seed(7, 2, 1) == 2008


def test_iterations_scale_with_the_field_of_view_within_bounds():
    from types import SimpleNamespace

    from cosmos.segmentation.trainer import TrainerBudget, field_of_view_factor, patches_per_case

    def plans(median):  # our plans as cosmos_plans writes them: tiny caps the planned 24x64x64 patch at 24x48x48
        nn = _fake_plans()
        nn["configurations"]["3d_fullres"]["median_image_size_in_voxels"] = median
        return planning.cosmos_plans(nn, load_config("tiny").segmentation)[0]

    def round_with(median):
        p = plans(median)
        return SimpleNamespace(
            num_cases=8, num_pseudo=8, num_real=0, configuration="3d_fullres_cosmos", plans=lambda: p
        )

    # the patch comes from the COSMOS configuration, the median case from the base it inherits
    assert patches_per_case(plans([24, 96, 96]), "3d_fullres_cosmos") == pytest.approx(4.0)
    assert patches_per_case(plans([24, 96, 96]), "3d_fullres") == pytest.approx(96 * 96 / (64 * 64))
    assert field_of_view_factor(3.0, 4.0, 3.0) == 1.0  # never fewer iterations than the profile's
    assert field_of_view_factor(8.0, 4.0, 3.0) == 2.0
    assert field_of_view_factor(40.0, 4.0, 3.0) == 3.0  # bounded
    assert field_of_view_factor(40.0, 0.0, 3.0) == 1.0  # off
    off = load_config("tiny", overrides=["segmentation.fov_reference_patches=0"]).segmentation
    on = load_config(
        "tiny", overrides=["segmentation.fov_reference_patches=4", "segmentation.fov_max_factor=3"]
    ).segmentation
    base = on.iterations_per_epoch
    small_crop, whole_head = round_with([18, 96, 96]), round_with([24, 240, 192])  # 3.0 and 20.0 patches
    assert TrainerBudget.from_config(off, whole_head).iterations_per_epoch == base
    assert TrainerBudget.from_config(on, small_crop).iterations_per_epoch == base
    assert TrainerBudget.from_config(on, whole_head).iterations_per_epoch == 3 * base
    assert TrainerBudget.from_config(on).iterations_per_epoch == base  # no round given: unchanged
    with pytest.raises(ConfigError, match="fov_max_factor"):
        load_config("tiny", overrides=["segmentation.fov_max_factor=0.5"])
    with pytest.raises(ConfigError, match="fov_reference_patches"):
        load_config("tiny", overrides=["segmentation.fov_reference_patches=-1"])


# ------------------------------------------------------------------------------ trainer recipes
def test_every_trainer_the_config_can_name_is_a_registered_nnunet_trainer():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from cosmos.config import SEGMENTATION_TRAINERS
    from cosmos.segmentation.trainer import (
        TRAINERS,
        balanced_domains_variant,
        nnUNetTrainerCosmosBalancedDomains,
        trainer_named,
    )

    assert set(SEGMENTATION_TRAINERS) <= set(TRAINERS)
    for name, cls in TRAINERS.items():
        assert cls.__name__ == name and issubclass(cls, nnUNetTrainer) and trainer_named(name) is cls
    for name in SEGMENTATION_TRAINERS:  # each recipe trains its own recipe when it balances the domains
        cls = trainer_named(name)
        balanced = balanced_domains_variant(cls)
        assert issubclass(balanced, cls) and issubclass(balanced, nnUNetTrainerCosmosBalancedDomains)
        assert balanced.recipe == cls.recipe and balanced_domains_variant(balanced) is balanced
    with pytest.raises(CosmosError, match="not a COSMOS trainer"):
        trainer_named("nnUNetTrainer")
    with pytest.raises(ConfigError, match="segmentation.trainer must be one of"):
        load_config("tiny", overrides=["segmentation.trainer=nnUNetTrainerNope"])


def test_recipe_keys_of_the_config_are_the_fields_of_the_trainers_recipe():
    """Every field of TrainerRecipe has a segmentation key that overrides it, null by default (the trainer's)."""
    import dataclasses

    from cosmos.config import RECIPE_KEYS, SegmentationConfig
    from cosmos.segmentation.trainer import TrainerRecipe

    assert set(RECIPE_KEYS) == {f.name for f in dataclasses.fields(TrainerRecipe)}
    defaults = SegmentationConfig()
    assert all(getattr(defaults, key) is None for key in RECIPE_KEYS)


def test_profiles_train_with_the_recipe_their_trainer_carries():
    import dataclasses

    from cosmos.config import RECIPE_KEYS
    from cosmos.segmentation.trainer import (
        TrainerRecipe,
        effective_recipe,
        nnUNetTrainerCosmosBudget,
        nnUNetTrainerCosmosCPU,
        trainer_named,
    )

    cfgs = {name: load_config(name).segmentation for name in ("tiny", "small", "paper")}
    for seg in cfgs.values():  # no profile overrides its trainer's recipe: the class alone says it
        assert all(getattr(seg, key) is None for key in RECIPE_KEYS)
        assert effective_recipe(seg) == trainer_named(seg.trainer).recipe
    assert trainer_named(cfgs["paper"].trainer) is nnUNetTrainerCosmosBudget
    assert nnUNetTrainerCosmosBudget.recipe == TrainerRecipe()  # nnU-Net's own training
    assert issubclass(trainer_named(cfgs["small"].trainer), nnUNetTrainerCosmosCPU)
    assert issubclass(trainer_named(cfgs["tiny"].trainer), nnUNetTrainerCosmosCPU)
    cpu = nnUNetTrainerCosmosCPU.recipe
    assert cpu.ce_class_weights is not None and cpu.probabilistic_oversampling and cpu.fov_reference_patches > 0
    tiny_only = {
        f.name
        for f in dataclasses.fields(TrainerRecipe)
        if getattr(effective_recipe(cfgs["tiny"]), f.name) != getattr(effective_recipe(cfgs["small"]), f.name)
    }
    assert tiny_only == {"structure_intensity_p"}


def test_a_config_key_set_by_hand_overrides_the_trainers_recipe():
    """Configs written before the recipes were trainers set the knobs themselves: they train as before."""
    from cosmos.config import RECIPE_KEYS, from_dict
    from cosmos.segmentation.trainer import DEFAULT_TRAINER, TrainerBudget, effective_recipe

    seg = load_config("tiny", overrides=["segmentation.ce_class_weights=[1,1,10]"]).segmentation
    assert effective_recipe(seg).ce_class_weights == (1.0, 1.0, 10.0)
    assert TrainerBudget.from_config(seg).ce_class_weights == [1.0, 1.0, 10.0]
    unweighted = load_config("small", overrides=["segmentation.ce_class_weights=[]"]).segmentation
    assert effective_recipe(unweighted).ce_class_weights is None  # [] = nnU-Net's unweighted CE on any trainer
    for name in ("tiny", "small", "paper"):
        cfg = load_config(name)
        recipe = effective_recipe(cfg.segmentation)
        data = cfg.to_dict()  # the same run spelt the old way: the generic trainer, every knob given
        data["segmentation"]["trainer"] = DEFAULT_TRAINER
        for key in RECIPE_KEYS:
            value = getattr(recipe, key)
            if key == "ce_class_weights":
                value = [] if value is None else list(value)
            data["segmentation"][key] = value
        spelt = from_dict(data).segmentation
        assert effective_recipe(spelt) == recipe
        for prepared in (None, _whole_head_round(cfg.segmentation)):
            assert TrainerBudget.from_config(spelt, prepared) == TrainerBudget.from_config(cfg.segmentation, prepared)


def _whole_head_round(seg):
    """A round whose median case holds 20 patches of ``seg``'s plan (the field-of-view rule's case)."""
    from types import SimpleNamespace

    nn = _fake_plans()
    nn["configurations"]["3d_fullres"]["median_image_size_in_voxels"] = [24, 240, 192]
    plans = planning.cosmos_plans(nn, seg)[0]
    return SimpleNamespace(
        num_cases=8, num_pseudo=8, num_real=0, configuration="3d_fullres_cosmos", plans=lambda: plans
    )


def test_trainer_class_follows_the_config_and_balances_domains_within_the_recipe():
    from types import SimpleNamespace

    from cosmos.segmentation.trainer import nnUNetTrainerCosmosBalancedDomains, trainer_named
    from cosmos.segmentation.training import trainer_class

    student = SimpleNamespace(num_cases=11, num_pseudo=8, num_real=3)
    teacher = SimpleNamespace(num_cases=8, num_pseudo=8, num_real=0)
    for name in ("tiny", "small", "paper"):
        cfg = load_config(name)
        chosen = trainer_named(cfg.segmentation.trainer)
        assert trainer_class(cfg, student) is chosen and trainer_class(cfg, teacher) is chosen
        balanced = cfg.with_overrides(["selftraining.balance_domains=true"])
        assert trainer_class(balanced, teacher) is chosen  # one domain: nothing to balance
        cls = trainer_class(balanced, student)
        assert issubclass(cls, chosen) and issubclass(cls, nnUNetTrainerCosmosBalancedDomains)
        assert cls.recipe == chosen.recipe


def test_selftraining_config_validation():
    from cosmos.config import ConfigError

    cfg = load_config("paper")
    st, seg = cfg.selftraining, cfg.segmentation
    assert (st.filter, st.student_init, st.balance_domains, st.min_component_voxels) == ("image", "scratch", False, [])
    assert not seg.probabilistic_oversampling and not seg.scale_iterations_with_cases
    ok = load_config(
        "tiny",
        overrides=[
            "selftraining.min_component_voxels=[20,5]",
            "selftraining.filter=pixel",
            "selftraining.student_init=teacher",
            "selftraining.student_lr_scale=0.1",
        ],
    )
    assert ok.selftraining.min_component_voxels == [20, 5]
    for bad, match in (
        ("selftraining.min_component_voxels=[5]", "one entry per"),
        ("selftraining.min_component_voxels=[0,5]", ">= 1"),
        ("selftraining.filter=voxel", "image or pixel"),
        ("selftraining.confidence_threshold=1.5", "0..1"),
        ("selftraining.student_init=copy", "scratch or teacher"),
        ("selftraining.student_lr_scale=0", "> 0"),
        ("segmentation.oversample_foreground=1.2", "0..1"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config("tiny", overrides=[bad])


def test_progress_plot_is_throttled_but_forced_plots_always_draw(tmp_path):
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    from cosmos.segmentation.trainer import ProgressPlotThrottledLogger

    inner = MetaLogger(str(tmp_path), False)
    logger = ProgressPlotThrottledLogger.adopt(inner)
    for epoch in range(2):
        for key, value in (
            ("mean_fg_dice", 0.5),
            ("train_losses", -0.3),
            ("val_losses", -0.2),
            ("lrs", 0.01),
            ("epoch_start_timestamps", float(epoch)),
            ("epoch_end_timestamps", epoch + 0.9),
            ("dice_per_class_or_region", [0.5, 0.4]),
        ):
            logger.log(key, value, epoch)
    assert logger.get_value("ema_fg_dice", step=-1) == pytest.approx(0.5)  # nnU-Net's own state, adopted
    png = tmp_path / "progress.png"
    logger.plot_progress_png(str(tmp_path))  # within a minute of the start: skipped
    assert not png.exists()
    logger.plot_progress_png(str(tmp_path), force=True)
    assert png.is_file()
    png.unlink()
    logger.min_interval_s = 0.0  # instance override: every call draws
    logger.plot_progress_png(str(tmp_path))
    assert png.is_file()


def test_post_processing_rules_are_named_objects_chosen_by_the_config():
    from cosmos.config import load_config
    from cosmos.segmentation.postprocessing import (
        AllCochleaComponents,
        LargestVSComponent,
        MostConfidentVSComponent,
        OneCochleaPerSide,
        rules_from_config,
    )

    paper, tiny = load_config("paper").segmentation, load_config("tiny").segmentation
    assert rules_from_config(paper) == (LargestVSComponent(), AllCochleaComponents())
    assert rules_from_config(tiny) == (MostConfidentVSComponent(tiny.vs_min_component_mm3), OneCochleaPerSide())
    assert [r.needs_probabilities for r in rules_from_config(tiny)] == [True, False]
    for rule in (*rules_from_config(paper), *rules_from_config(tiny)):  # each says when it applies
        doc = (type(rule).__doc__ or "").lower()
        assert "applies" in doc or "the paper's" in doc, type(rule).__name__
