"""nnU-Net end to end on tiny synthetic volumes: prepare -> 2 folds -> ensemble predict, resume.

One module-scoped fixture prepares the round and trains two tiny folds (CPU, 1 torch thread,
minutes-scale budgets cut to seconds); every test reuses them.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos.config import load_config
from cosmos.data import nifti
from cosmos.segmentation.inference import predict
from cosmos.segmentation.prepare import load_prepared, prepare_round
from cosmos.segmentation.trainer import effective_recipe
from cosmos.segmentation.training import train_fold

pytestmark = pytest.mark.slow

SHAPE = (48, 40, 12)  # NIfTI voxel order; the slice axis third, as in crossMoDA

OVERRIDES = [
    "segmentation.epochs=1",
    "segmentation.iterations_per_epoch=3",
    "segmentation.val_iterations_per_epoch=1",
    "segmentation.torch_threads=1",
    "segmentation.num_processes=1",
    "segmentation.mirroring=false",
    "segmentation.not_learning_max_factor=1",  # these tests count epochs: no training on when nothing is learnt
]


def _affine(n: int) -> np.ndarray:
    """Oblique in-plane rotation, x and z flipped, anisotropic spacing: far from identity."""
    a = 0.1 + 0.05 * (n % 3)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.5, 0.6, -1.5])
    aff[:3, 3] = [12.0, -30.0, 25.0 + n]
    return aff


def _case(n: int):
    rng = np.random.default_rng(n)
    img = rng.normal(0.2, 0.05, SHAPE).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    x0, y0 = 10 + n % 5, 8 + n % 4
    lab[x0 : x0 + 10, y0 : y0 + 8, 3:8] = 1
    lab[32:37, 26:31, 4:7] = 2
    img[lab == 1] += 0.5
    img[lab == 2] += 1.0
    return img, lab


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    pseudo = root / "pseudo"
    for n in range(1, 7):
        img, lab = _case(n)
        nifti.save(pseudo / f"crossmoda_{n}_hrT2pseudo.nii.gz", img, affine=_affine(n))
        nifti.save(pseudo / f"crossmoda_{n}_Label.nii.gz", lab, affine=_affine(n), label=True)
    target = root / "target"
    for n in (106, 107):
        nifti.save(target / f"crossmoda_{n}_hrT2.nii.gz", _case(n)[0], affine=_affine(n))
    cfg = load_config("tiny", overrides=OVERRIDES)
    t0 = time.perf_counter()
    prepared = prepare_round(pseudo, root / "prepared", cfg)
    prepare_s = time.perf_counter() - t0

    # the prepared dir is read-only input for the folds (tests run as root, so chmod proves
    # nothing): snapshot every path, size and mtime before training, compare after
    snapshot = _tree(prepared)
    calls: list[tuple[int, dict]] = []
    opened: list[dict] = []

    @contextlib.contextmanager
    def fake_fold_run(parent_run_id, fold, round_index=None, tracking_uri=None, *, fold_dir=None, cfg=None):
        opened.append(
            {
                "parent_run_id": parent_run_id,
                "fold": fold,
                "round_index": round_index,
                "tracking_uri": tracking_uri,
                "fold_dir": fold_dir,
            }
        )
        yield lambda epoch, metrics: calls.append((epoch, metrics))

    import cosmos.segmentation.mlflow_logging as ml

    mp = pytest.MonkeyPatch()
    mp.setattr(ml, "fold_run", fake_fold_run, raising=False)
    try:
        folds = [
            train_fold(
                prepared, f, root / "folds" / f"fold_{f}", cfg, parent_run_id="parent123", tracking_uri="sqlite:///x.db"
            )
            for f in (0, 1)
        ]
    finally:
        mp.undo()
    return {
        "root": root,
        "cfg": cfg,
        "prepared": prepared,
        "folds": folds,
        "target": target,
        "calls": calls,
        "opened": opened,
        "prepare_s": prepare_s,
        "untouched": _tree(prepared) == snapshot,
    }


def test_prepare_round_is_self_contained_and_resumable(trained):
    prepared = load_prepared(trained["prepared"])
    assert prepared.configuration == "3d_fullres_cosmos" and prepared.num_cases == 6 and prepared.num_real == 0
    pre = prepared.preprocessed_dataset
    for name in ("nnUNetPlans.json", "CosmosPlans.json", "splits_final.json", "dataset_fingerprint.json"):
        assert (pre / name).is_file(), name
    ours = prepared.plans()["configurations"]["3d_fullres_cosmos"]
    assert ours["inherits_from"] == "3d_fullres" and ours["batch_size"] == 2
    assert ours["architecture"]["arch_kwargs"]["features_per_stage"][:2] == [16, 32]
    manifest = trained["prepared"] / "cosmos_prepared.json"
    before = manifest.stat().st_mtime_ns
    t0 = time.perf_counter()
    prepare_round(trained["root"] / "pseudo", trained["prepared"], trained["cfg"])
    assert time.perf_counter() - t0 < 5
    assert manifest.stat().st_mtime_ns == before


def test_fold_trains_on_cpu_and_holds_what_predict_needs(trained):
    for f, fold_dir in enumerate(trained["folds"]):
        for name in (
            "checkpoint_final.pth",
            "plans.json",
            "dataset.json",
            "dataset_fingerprint.json",
            "progress.png",
            "cosmos_fold.json",
        ):
            assert (fold_dir / name).is_file(), (fold_dir, name)
        assert not list(fold_dir.glob(".nnunet_results_*"))
        meta = json.loads((fold_dir / "cosmos_fold.json").read_text())
        assert meta["fold"] == f and meta["trainer"] == trained["cfg"].segmentation.trainer and meta["seed"] == f
        assert meta["recipe"]["ce_class_weights"] == list(
            effective_recipe(trained["cfg"].segmentation).ce_class_weights
        )
        ckpt = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert ckpt["current_epoch"] == 1 and ckpt["init_args"]["configuration"] == "3d_fullres_cosmos"
    # training wrote nothing into the prepared dir (no split file, no unpacking, no results)
    assert trained["untouched"]


def test_epoch_callbacks_reach_the_mlflow_hook(trained):
    assert [o["fold"] for o in trained["opened"]] == [0, 1]
    assert all(o["parent_run_id"] == "parent123" and o["round_index"] == 0 for o in trained["opened"])
    assert trained["opened"][0]["fold_dir"] == trained["folds"][0]
    epochs = [e for e, _ in trained["calls"]]
    assert epochs == [0, 0]  # one epoch per fold
    metrics = trained["calls"][0][1]
    for key in ("train_loss", "val_loss", "pseudo_dice", "pseudo_dice_VS", "pseudo_dice_cochlea", "lr", "epoch_time_s"):
        assert key in metrics and isinstance(metrics[key], float), key
    assert metrics["lr"] == pytest.approx(1e-2)


def test_ensemble_prediction_keeps_input_geometry(trained, tmp_path):
    out = tmp_path / "pred"
    written = predict(trained["folds"], trained["target"], out, trained["cfg"], save_probabilities=True)
    assert [p.name for p in written] == ["crossmoda_106_Label.nii.gz", "crossmoda_107_Label.nii.gz"]
    for p in written:
        n = p.name.split("_")[1]
        img = nifti.load(trained["target"] / f"crossmoda_{n}_hrT2.nii.gz")
        lab = nifti.load(p, label=True)
        assert nifti.same_grid(img, lab) is None
        assert np.array_equal(lab.affine, img.affine)
        assert lab.header.get_sform(coded=True)[1] == img.header.get_sform(coded=True)[1]
        assert lab.header.get_qform(coded=True)[1] == img.header.get_qform(coded=True)[1]
        assert np.asanyarray(__import__("nibabel").load(str(p)).dataobj).dtype == np.uint8
        assert set(np.unique(lab.data)) <= {0, 1, 2}
        probs = np.load(out / p.name.replace(".nii.gz", ".npz"))["probabilities"]
        assert probs.shape == (3, *img.shape)
        assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=2e-2)
        # the label is the argmax of the saved probabilities, up to VS post-processing
        argmax = probs.argmax(0)
        agree = (argmax == lab.data) | ((argmax == 1) & (lab.data == 0))
        assert agree.mean() > 0.999
    # resumable: a second call with the same model and options writes nothing
    mtimes = [p.stat().st_mtime_ns for p in written]
    again = predict(trained["folds"], trained["target"], out, trained["cfg"], save_probabilities=True)
    assert again == written and [p.stat().st_mtime_ns for p in again] == mtimes


def test_resume_skips_a_finished_fold(trained):
    fold_dir = trained["folds"][0]
    ckpt = fold_dir / "checkpoint_final.pth"
    before = ckpt.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert train_fold(trained["prepared"], 0, fold_dir, trained["cfg"]) == fold_dir
    assert time.perf_counter() - t0 < 5
    assert ckpt.stat().st_mtime_ns == before


def test_killed_fold_resumes_from_latest_checkpoint(trained, tmp_path):
    """A fold with only checkpoint_latest.pth (epoch 1 done) continues to epoch 2 instead of restarting."""
    fold_dir = tmp_path / "fold_1"
    fold_dir.mkdir()
    src = trained["folds"][1]
    (fold_dir / "checkpoint_latest.pth").write_bytes((src / "checkpoint_final.pth").read_bytes())
    cfg = trained["cfg"].with_overrides({"segmentation.epochs": 2})
    train_fold(trained["prepared"], 1, fold_dir, cfg)
    ckpt = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2
    assert len(ckpt["logging"]["train_losses"]) == 2  # epoch 0 restored from the checkpoint, epoch 1 trained
    assert json.loads((fold_dir / "cosmos_fold.json").read_text())["resumed"] is True
    assert not (fold_dir / "checkpoint_latest.pth").exists()


def test_geometry_round_trip_with_a_perfect_model(trained, tmp_path, monkeypatch):
    """Swap the network for a thresholding 'oracle' (foreground = bright voxels) so the expected label
    is known: the output must equal the VS in NIfTI voxel order (no transposed or flipped axes), and
    VS largest-component post-processing must remove the separate bright cochlea blob."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    def oracle(self, data):
        d = data[0].float()
        fg = d > d.mean() + 3 * d.std()
        logits = torch.full((3, *d.shape), -5.0)
        logits[0] = 0.0
        logits[1] = torch.where(fg, 1.0, -1.0)
        return logits

    monkeypatch.setattr(nnUNetPredictor, "predict_logits_from_preprocessed_data", oracle)
    written = predict(trained["folds"][:1], trained["target"], tmp_path / "p", trained["cfg"])
    for p in written:
        n = int(p.name.split("_")[1])
        expected = (_case(n)[1] == 1).astype(np.uint8)
        got = nifti.load(p, label=True).data
        assert np.array_equal(got, expected), p.name


def test_cpu_training_is_bit_identical_for_the_same_seed(trained, tmp_path):
    """random/numpy/torch seeded from cfg.seed + fold, augmentation in-process: same weights again."""
    again = train_fold(trained["prepared"], 0, tmp_path / "fold_0", trained["cfg"])
    a = torch.load(trained["folds"][0] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(again / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert a["network_weights"].keys() == b["network_weights"].keys()
    assert all(torch.equal(a["network_weights"][k], b["network_weights"][k]) for k in a["network_weights"])
    assert a["logging"]["train_losses"] == b["logging"]["train_losses"]


@contextlib.contextmanager
def _initialized_trainer(trained, fold_dir: Path, **segmentation):
    """Fold 0's trainer on the fixture's prepared round, built as training builds it and initialised,
    with ``segmentation`` fields set on a copy of the fixture's config; inside nnU-Net's environment."""
    import copy

    from cosmos.segmentation import environment
    from cosmos.segmentation.training import build_trainer

    prepared = load_prepared(trained["prepared"])
    cfg = copy.deepcopy(trained["cfg"])
    for key, value in segmentation.items():
        setattr(cfg.segmentation, key, value)
    with environment.nnunet_env(
        preprocessed=prepared.preprocessed_root, results=fold_dir.parent / "results", n_proc_da=0
    ):
        trainer = build_trainer(prepared, 0, fold_dir, cfg, torch.device("cpu"), continue_training=False)
        trainer.initialize()
        yield trainer


def test_ce_class_weights_reach_the_loss(trained, tmp_path):
    """The CPU recipe weights the cochlea's cross-entropy (unweighted, a 160-iteration fold never learns it);
    the paper's trainer keeps nnU-Net's unweighted loss; a config key overrides the trainer's weights."""
    from cosmos.segmentation.trainer import nnUNetTrainerCosmosCPU

    cpu = list(nnUNetTrainerCosmosCPU.recipe.ce_class_weights or ())
    assert cpu and effective_recipe(load_config("paper").segmentation).ce_class_weights is None
    cases = {  # segmentation keys -> the CE weights the loss must hold
        "tiny": ({}, cpu),
        "paper": ({"trainer": "nnUNetTrainerCosmosBudget"}, None),
        "set": ({"ce_class_weights": [1.0, 2.0, 7.0]}, [1.0, 2.0, 7.0]),
        "unweighted": ({"ce_class_weights": []}, None),
        "paper_set": ({"trainer": "nnUNetTrainerCosmosBudget", "ce_class_weights": cpu}, cpu),
    }
    for name, (keys, weights) in cases.items():
        with _initialized_trainer(trained, tmp_path / f"fold_{name}", **keys) as trainer:
            pass
        ce = trainer.loss.loss.ce  # DeepSupervisionWrapper -> DC_and_CE_loss -> RobustCrossEntropyLoss
        assert (None if ce.weight is None else ce.weight.tolist()) == weights, name


def test_a_trainer_built_the_nnunet_way_trains_its_own_recipe(trained, tmp_path):
    """Constructed as nnunetv2.run.run_training does (no COSMOS budget), a recipe trainer still applies its
    recipe: loss weights, oversampling, augmentation; nnU-Net's budget otherwise."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from cosmos.segmentation import environment
    from cosmos.segmentation.augmentation import StructureIntensityTransform
    from cosmos.segmentation.trainer import TRAINERS

    prepared = load_prepared(trained["prepared"])
    for name, cls in TRAINERS.items():
        with environment.nnunet_env(
            preprocessed=prepared.preprocessed_root, results=tmp_path / name / "results", n_proc_da=0
        ):
            args = (prepared.configuration, 0, prepared.dataset_json(), torch.device("cpu"))
            trainer = cls({**prepared.plans(), "continue_training": False}, *args)  # as run_training passes them
            plain = nnUNetTrainer({**prepared.plans(), "continue_training": False}, *args)
            trainer.initialize()
            loader, _ = trainer.get_dataloaders()
        recipe = cls.recipe
        assert trainer.num_epochs == plain.num_epochs and trainer.initial_lr == plain.initial_lr, name
        assert trainer.oversample_foreground_percent == recipe.oversample_foreground, name
        assert trainer.probabilistic_oversampling == recipe.probabilistic_oversampling, name
        ce = trainer.loss.loss.ce
        assert (None if ce.weight is None else tuple(ce.weight.tolist())) == recipe.ce_class_weights, name
        edits = [t for t in loader.data_loader.transforms.transforms if isinstance(t, StructureIntensityTransform)]
        assert [e.p_per_label for e in edits] == (
            [recipe.structure_intensity_p] if recipe.structure_intensity_p else []
        )


def test_structure_intensity_augmentation_reaches_the_training_loader(trained, tmp_path):
    """`segmentation.structure_intensity_p` > 0 puts the structure re-rendering into the loader nnU-Net
    trains from (right after its spatial transform); 0 leaves nnU-Net's pipeline as it is."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    from cosmos.segmentation.augmentation import StructureIntensityTransform

    found = {}
    for p in (1.0, 0.0):
        with _initialized_trainer(trained, tmp_path / f"fold_{p}", structure_intensity_p=p) as trainer:
            loader, _ = trainer.get_dataloaders()
        steps = loader.data_loader.transforms.transforms  # SingleThreadedAugmenter -> nnUNetDataLoader -> Compose
        edits = [t for t in steps if isinstance(t, StructureIntensityTransform)]
        found[p] = edits
        if edits:
            at = steps.index(edits[0])
            spatial = [i for i, t in enumerate(steps) if isinstance(t, SpatialTransform)]
            assert spatial and spatial[0] < at  # after the spatial transform (and nnU-Net's 2D<->3D wrapping)...
            assert not any(isinstance(t, RandomTransform) for t in steps[:at])  # ...before every intensity transform
            assert edits[0].labels == (1, 2) and edits[0].p_per_label == 1.0
            batch = next(loader)  # the pipeline runs end to end with the edit in it
            assert tuple(batch["data"].shape[:2]) == (2, 1)
    assert len(found[1.0]) == 1 and found[0.0] == []


@pytest.mark.slow
def test_a_fold_that_learns_nothing_trains_on_to_its_cap(trained, tmp_path):
    """The real nnU-Net loop: 1 planned epoch of 3 iterations learns no label, so the fold trains on, half its
    planned epochs (at least one) at a time, to not_learning_max_factor x them, and records what happened."""
    cfg = trained["cfg"].with_overrides(["segmentation.not_learning_max_factor=3", "checks.min_pseudo_dice=0.99"])
    fold = train_fold(trained["prepared"], 0, tmp_path / "fold_0", cfg)
    meta = json.loads((fold / "cosmos_fold.json").read_text())
    assert meta["planned_epochs"] == 1 and meta["epochs"] == 3
    assert meta["train_iterations"] == 3 * meta["iterations_per_epoch"] == meta["cumulative_iterations"]
    assert meta["labels_not_learned"] and set(meta["pseudo_dice_best"]) == set(meta["labels_not_learned"])
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "checkpoint_latest.pth").exists()
