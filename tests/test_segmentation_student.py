"""Student-round behaviour of the nnU-Net layer on tiny synthetic volumes (CPU, seconds per fold).

One module fixture prepares a teacher round (pseudo-hrT2 only) and a student round (pseudo-hrT2 +
real hrT2 with pixel-filtered pseudo-labels, i.e. nnU-Net's ignore label), and trains one teacher
fold. Tests: round-dependent seeds (no replay), warm start from the teacher, the ignore label in
dataset.json and in nnU-Net's loss, probabilistic foreground oversampling, domain-balanced
sampling, prediction's mirroring override.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos.config import load_config
from cosmos.data import nifti
from cosmos.errors import CosmosError
from cosmos.segmentation import environment
from cosmos.segmentation.prepare import load_prepared, prepare_round, training_set_digests, write_header
from cosmos.segmentation.trainer import (
    network_plan_differences,
    nnUNetTrainerCosmosBalancedDomains,
    trainer_named,
    warm_start,
)
from cosmos.segmentation.training import build_trainer, train_fold

pytestmark = pytest.mark.slow

SHAPE = (48, 40, 12)
N_PSEUDO, REAL = 6, (106, 107, 108)
OVERRIDES = [
    "segmentation.epochs=1",
    "segmentation.iterations_per_epoch=2",
    "segmentation.val_iterations_per_epoch=1",
    "segmentation.torch_threads=1",
    "segmentation.num_processes=1",
    "segmentation.mirroring=false",
    "selftraining.filter=pixel",
    "segmentation.not_learning_max_factor=1",  # these tests count epochs: no training on when nothing is learnt
]


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


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    aff = np.diag([0.5, 0.5, 1.5, 1.0])
    pseudo, target, kept = root / "pseudo", root / "target", root / "kept"
    for n in range(1, N_PSEUDO + 1):
        img, lab = _case(n)
        nifti.save(pseudo / f"crossmoda_{n}_hrT2pseudo.nii.gz", img, affine=aff)
        nifti.save(pseudo / f"crossmoda_{n}_Label.nii.gz", lab, affine=aff, label=True)
    real_aff = np.diag([0.4, 0.4, 1.0, 1.0])  # real hrT2 on another grid than the pseudo-hrT2 (ceT1 grid)
    for n in REAL:
        img, lab = _case(n)
        lab[:, :, 0] = 3  # pixel filter: one unsure slice -> ignore label
        nifti.save(target / f"crossmoda_{n}_hrT2.nii.gz", img, affine=real_aff)
        nifti.save(kept / f"crossmoda_{n}_Label.nii.gz", lab, affine=real_aff, label=True)
    cfg = load_config("tiny", overrides=OVERRIDES)
    teacher = prepare_round(pseudo, root / "teacher", cfg, round_index=0)
    # the teacher's plans, so that the student can be warm-started from the teacher's network; from the teacher's
    # header (no images), as the pipeline hands it over
    header = write_header(teacher, root / "teacher_header")
    student = prepare_round(
        pseudo,
        root / "student",
        cfg,
        round_index=1,
        target_images_dir=target,
        pseudo_labels_dir=kept,
        plans_from=header,
    )
    fold0 = train_fold(teacher, 0, root / "t_fold0", cfg)
    return {
        "root": root,
        "cfg": cfg,
        "teacher": teacher,
        "header": header,
        "student": student,
        "fold0": fold0,
        "pseudo": pseudo,
    }


def _weights(fold_dir: Path) -> dict:
    return torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]


def _trainer(prepared, cfg, out: Path, fold: int = 0, **kw):
    """An initialised trainer of ``prepared`` (inside the nnU-Net env it needs)."""
    p = load_prepared(prepared)
    with environment.nnunet_env(preprocessed=p.preprocessed_root, results=out / "results", n_proc_da=0):
        trainer = build_trainer(p, fold, out / f"fold_{fold}", cfg, torch.device("cpu"), continue_training=False, **kw)
        trainer.initialize()
    return trainer, p


def test_rounds_do_not_replay_each_other(rounds, tmp_path):
    """Same data, same fold, another round: another seed, other weights (the old seed was cfg.seed + fold)."""
    replay = tmp_path / "round1_same_data"
    shutil.copytree(rounds["teacher"], replay)
    manifest = json.loads((replay / "cosmos_prepared.json").read_text())
    manifest["round_index"] = 1
    (replay / "cosmos_prepared.json").write_text(json.dumps(manifest))
    again = train_fold(replay, 0, tmp_path / "fold0", rounds["cfg"])
    assert json.loads((rounds["fold0"] / "cosmos_fold.json").read_text())["seed"] == rounds["cfg"].seed
    assert json.loads((again / "cosmos_fold.json").read_text())["seed"] == rounds["cfg"].seed + 1000
    a, b = _weights(rounds["fold0"]), _weights(again)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_the_header_reads_like_the_prepared_round_without_its_images(rounds):
    full, header = load_prepared(rounds["teacher"]), load_prepared(rounds["header"])
    assert header.to_json().replace(str(rounds["header"]), "") == full.to_json().replace(str(rounds["teacher"]), "")
    assert header.plans() == full.plans()
    assert training_set_digests(rounds["header"]) == training_set_digests(rounds["teacher"])
    size = sum(f.stat().st_size for f in Path(rounds["header"]).rglob("*") if f.is_file())
    full_size = sum(f.stat().st_size for f in Path(rounds["teacher"]).rglob("*") if f.is_file())
    assert not list(Path(rounds["header"]).rglob("*.nii.gz")) and not list(Path(rounds["header"]).rglob("*.b2nd"))
    assert size < full_size / 10, (size, full_size)


def test_student_reuses_the_teacher_plans(rounds):
    teacher, student = load_prepared(rounds["teacher"]), load_prepared(rounds["student"])
    tp, sp = teacher.plans(), student.plans()
    assert sp["dataset_name"] == student.dataset_name != teacher.dataset_name
    assert sp["configurations"] == tp["configurations"] and student.configuration == teacher.configuration
    nn = json.loads((student.preprocessed_dataset / "nnUNetPlans.json").read_text())
    assert (
        nn["configurations"][student.base_configuration]["spacing"]
        == tp["configurations"][teacher.base_configuration]["spacing"]
    )
    # preprocessed at the teacher's spacing: every case is there, fingerprint included
    ids = sorted(
        p.name.split(".")[0]
        for p in (
            student.preprocessed_dataset / nn["configurations"][student.base_configuration]["data_identifier"]
        ).glob("*.b2nd")
        if not p.name.endswith("_seg.b2nd")
    )
    assert len(ids) == N_PSEUDO + len(REAL) and (student.preprocessed_dataset / "dataset_fingerprint.json").is_file()


def test_student_dataset_declares_the_ignore_label(rounds):
    teacher, student = load_prepared(rounds["teacher"]), load_prepared(rounds["student"])
    assert teacher.ignore_label is None and "ignore" not in teacher.dataset_json()["labels"]
    assert student.ignore_label == 3 and student.num_real == len(REAL) and student.num_pseudo == N_PSEUDO
    assert student.dataset_json()["labels"] == {"background": 0, "VS": 1, "cochlea": 2, "ignore": 3}
    raw = json.loads(next((student.raw_root).glob("Dataset*/dataset.json")).read_text())
    assert raw["labels"]["ignore"] == 3
    # image mode: the same student inputs make a dataset without it
    cfg = rounds["cfg"].with_overrides({"selftraining.filter": "image"})
    pl = rounds["root"] / "kept_image_mode"
    pl.mkdir()
    for n in REAL:
        nifti.save(pl / f"crossmoda_{n}_Label.nii.gz", _case(n)[1], affine=np.diag([0.5, 0.5, 1.5, 1.0]), label=True)
    from cosmos.segmentation import export

    cases = export.collect_pseudo_cases(rounds["pseudo"]) + export.collect_real_cases(rounds["root"] / "target", pl)
    folder = export.export_raw_dataset(cases, rounds["root"] / "raw_image", 701, 1)
    assert "ignore" not in json.loads((folder / "dataset.json").read_text())["labels"]
    assert cfg.selftraining.filter == "image"


def test_ignore_label_is_rejected_in_manual_labels(rounds, tmp_path):
    """Only pseudo-labels may carry the ignore label; a manual (pseudo-hrT2) label with it is bad input."""
    from cosmos.segmentation import export, planning

    bad = tmp_path / "pseudo"
    shutil.copytree(rounds["pseudo"], bad)
    lab = nifti.load(bad / "crossmoda_1_Label.nii.gz", label=True)
    arr = lab.data.copy()
    arr[0, 0, 0] = 3
    nifti.save(bad / "crossmoda_1_Label.nii.gz", arr, like=lab, label=True)
    folder = export.export_raw_dataset(export.collect_pseudo_cases(bad), tmp_path / "raw", 701, 1, ignore_label=3)
    with pytest.raises(CosmosError, match=r"crossmoda_1_Label.nii.gz: unexpected label values \[3\]"):
        planning.precheck_raw_dataset(folder, json.loads((folder / "cases.json").read_text()))


def test_nnunet_loss_ignores_the_ignore_label(rounds, tmp_path):
    """nnU-Net's DC_and_CE_loss gets ignore_label=3 from the label manager: logits at ignored voxels
    do not change the loss; at other voxels they do."""
    trainer, _ = _trainer(rounds["student"], rounds["cfg"], tmp_path)
    assert trainer.label_manager.ignore_label == 3 and trainer.label_manager.num_segmentation_heads == 3
    inner = trainer.loss.loss  # DeepSupervisionWrapper -> DC_and_CE_loss
    assert inner.ignore_label == 3
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 3, 8, 8, 8), generator=g)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=g)
    target[:, :, :4] = 3
    base = inner(logits, target)
    shaken = logits.clone()
    shaken[:, :, :4] = torch.randn((2, 3, 4, 8, 8), generator=g) * 10
    assert torch.allclose(inner(shaken, target), base)
    shaken[:, 0, 5] += 10  # one class only (a shift of all logits leaves softmax unchanged)
    assert not torch.allclose(inner(shaken, target), base)


def test_warm_start_loads_every_teacher_weight_with_a_fresh_optimizer(rounds, tmp_path):
    cfg = rounds["cfg"].with_overrides({"selftraining.student_init": "teacher", "selftraining.student_lr_scale": 0.5})
    trainer, _ = _trainer(rounds["student"], cfg, tmp_path, lr_scale=0.5)
    record = warm_start(trainer, rounds["fold0"])
    teacher = _weights(rounds["fold0"])
    own = trainer.network.state_dict()
    assert set(own) == set(teacher) and any(".seg_layers." in k for k in own)  # heads (deep supervision) too
    assert all(torch.equal(own[k], teacher[k]) for k in own)
    assert record["source_epoch"] == 1 and record["tensors"] == len(teacher)
    assert trainer.current_epoch == 0 and not trainer.optimizer.state  # fresh SGD momentum
    assert trainer.initial_lr == pytest.approx(5e-3)
    # and through train_fold: recorded in cosmos_fold.json
    fold = train_fold(rounds["student"], 0, tmp_path / "student_fold0", cfg, init_from=rounds["fold0"])
    meta = json.loads((fold / "cosmos_fold.json").read_text())
    assert meta["init"]["from"] == str(rounds["fold0"].resolve()) and meta["initial_lr"] == pytest.approx(5e-3)
    assert meta["init"]["lr_scale"] == 0.5
    # a killed warm-started fold resumes with its own weights and the LR it started with, even without init_from
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "checkpoint_latest.pth").write_bytes((fold / "checkpoint_final.pth").read_bytes())
    (killed / ".cosmos_init.json").write_text((fold / ".cosmos_init.json").read_text())
    train_fold(rounds["student"], 0, killed, cfg.with_overrides({"segmentation.epochs": 2}))
    meta = json.loads((killed / "cosmos_fold.json").read_text())
    assert meta["resumed"] and meta["initial_lr"] == pytest.approx(5e-3) and meta["init"]["lr_scale"] == 0.5
    assert meta["seed"] == cfg.seed + 1000 and meta["num_real"] == len(REAL)


def test_warm_start_refuses_another_network(rounds, tmp_path):
    fold0 = rounds["fold0"]
    plans = json.loads((fold0 / "plans.json").read_text())
    ds = json.loads((fold0 / "dataset.json").read_text())
    cfg_name = json.loads((fold0 / "cosmos_fold.json").read_text())["configuration"]
    assert network_plan_differences(plans, cfg_name, plans, cfg_name, ds, ds) == []
    other = copy.deepcopy(plans)
    other["configurations"][cfg_name]["architecture"]["arch_kwargs"]["features_per_stage"][0] = 8
    diffs = network_plan_differences(plans, cfg_name, other, cfg_name, ds, ds)
    assert len(diffs) == 1 and diffs[0].startswith("features_per_stage")
    bad = tmp_path / "other_fold"
    shutil.copytree(fold0, bad)
    (bad / "plans.json").write_text(json.dumps(other))
    trainer, _ = _trainer(rounds["student"], rounds["cfg"], tmp_path)
    with pytest.raises(CosmosError, match="features_per_stage"):
        warm_start(trainer, bad)
    with pytest.raises(CosmosError, match="checkpoint_final.pth missing"):
        train_fold(rounds["student"], 0, tmp_path / "f", rounds["cfg"], init_from=tmp_path / "nowhere")


def _forced_fraction(dataloader, draws: int = 4000) -> float:
    np.random.seed(0)
    hits = [
        dataloader.get_do_oversample(j)
        for _ in range(draws // dataloader.batch_size)
        for j in range(dataloader.batch_size)
    ]
    return float(np.mean(hits))


def test_probabilistic_oversampling_takes_effect_at_batch_size_2(rounds, tmp_path):
    """nnU-Net's default rule forces round(2 * (1 - p)).. -> one of two samples for p = 0.33 AND 0.66;
    nnU-Net's probabilistic rule forces each sample with probability p."""
    fractions = {}
    for p in (0.33, 0.66):
        for prob in (False, True):
            cfg = rounds["cfg"].with_overrides(
                {"segmentation.oversample_foreground": p, "segmentation.probabilistic_oversampling": prob}
            )
            trainer, pr = _trainer(rounds["teacher"], cfg, tmp_path / f"{p}_{prob}")
            with environment.nnunet_env(preprocessed=pr.preprocessed_root, n_proc_da=0):
                dl_tr, _ = trainer.get_dataloaders()
            assert trainer.batch_size == 2
            fractions[(p, prob)] = _forced_fraction(dl_tr.data_loader)
    assert fractions[(0.33, False)] == fractions[(0.66, False)] == 0.5
    assert fractions[(0.33, True)] == pytest.approx(0.33, abs=0.03)
    assert fractions[(0.66, True)] == pytest.approx(0.66, abs=0.03)


def test_balanced_domains_draw_pseudo_and_real_equally(rounds, tmp_path):
    cfg = rounds["cfg"].with_overrides({"selftraining.balance_domains": True})
    trainer, pr = _trainer(rounds["student"], cfg, tmp_path)
    assert isinstance(trainer, nnUNetTrainerCosmosBalancedDomains)
    with environment.nnunet_env(preprocessed=pr.preprocessed_root, n_proc_da=0):
        dl_tr, _ = trainer.get_dataloaders()
    loader = dl_tr.data_loader
    keys = sorted(set(loader.indices))
    n_real = sum(k.startswith("real_") for k in keys)
    assert 0 < n_real < len(keys) - n_real  # fewer real than pseudo cases in the training split
    np.random.seed(0)
    drawn = np.concatenate([loader.get_indices() for _ in range(2000)])
    assert np.mean([k.startswith("real_") for k in drawn]) == pytest.approx(0.5, abs=0.03)
    # without the switch: uniform over cases, so real cases are drawn at their share
    plain, pr = _trainer(rounds["student"], rounds["cfg"], tmp_path / "plain")
    assert type(plain) is trainer_named(rounds["cfg"].segmentation.trainer)  # the profile's recipe, unbalanced
    with environment.nnunet_env(preprocessed=pr.preprocessed_root, n_proc_da=0):
        dl_plain, _ = plain.get_dataloaders()
    drawn = np.concatenate([dl_plain.data_loader.get_indices() for _ in range(2000)])
    assert np.mean([k.startswith("real_") for k in drawn]) == pytest.approx(n_real / len(keys), abs=0.03)


def test_mirroring_argument_overrides_the_profile(rounds, tmp_path, monkeypatch):
    """Pseudo-labelling always uses mirroring TTA, whatever the profile says (tiny: off)."""
    from cosmos.segmentation import inference

    seen = []
    real_build = inference.build_predictor

    def spy(*args, **kwargs):
        predictor = real_build(*args, **kwargs)
        seen.append(predictor.use_mirroring)
        return predictor

    monkeypatch.setattr(inference, "build_predictor", spy)
    assert rounds["cfg"].segmentation.mirroring is False
    img = rounds["root"] / "target" / "crossmoda_106_hrT2.nii.gz"
    inference.predict([rounds["fold0"]], [img], tmp_path / "on", rounds["cfg"], mirroring=True)
    inference.predict([rounds["fold0"]], [img], tmp_path / "off", rounds["cfg"])
    assert seen == [True, False]
    assert json.loads((tmp_path / "on" / ".cosmos_predict.json").read_text())["run"]["mirroring"] is True
