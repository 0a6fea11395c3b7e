"""Self-training loop orchestration (Algorithm 1) with nnU-Net faked: round layout, pseudo-label
hand-over between rounds, MLflow round/fold runs, one registry version per round, champion on the
last, per-round validation metrics, the none-kept alert, and resume. The real nnU-Net path is the
slow end-to-end test in test_selftraining_e2e.py."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from cosmos.config import load_config  # noqa: E402
from cosmos.data.layout import label_name, parse_name  # noqa: E402
from cosmos.data.nifti import load, save  # noqa: E402
from cosmos.selftraining import loop  # noqa: E402


AFFINE = np.diag([-0.5, -0.5, 1.0, 1.0])
SHAPE = (16, 16, 8)


def _truth(shift: int = 0) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3 + shift:8 + shift, 3:8, 2:6] = 1
    lab[11:14, 11:14, 3:5] = 2
    return lab


class FakeSeg:
    """prepare_round / train_fold / predict stand-ins that record their calls.

    The teacher (round 0) predicts a VS shifted by 2 voxels and misses the cochlea on the
    ``lacking`` cases; students predict the truth. ``drop_all`` makes every prediction lack cochlea.
    """

    def __init__(self, lacking=("crossmoda_12",), drop_all=False):
        self.calls: list[tuple] = []
        self.lacking, self.drop_all = set(lacking), drop_all

    def prepare_round(self, pseudo_dir, out_dir, cfg, round_index=0, target_images_dir=None, pseudo_labels_dir=None):
        real = sorted(p.name for p in Path(pseudo_labels_dir).glob("*_Label.nii.gz")) if pseudo_labels_dir else []
        self.calls.append(("prepare", round_index, tuple(real)))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cosmos_prepared.json").write_text(json.dumps({"num_real": len(real)}))
        return out

    def load_prepared(self, prepared):
        n_real = json.loads((Path(prepared) / "cosmos_prepared.json").read_text())["num_real"]
        return types.SimpleNamespace(num_cases=3 + n_real, num_pseudo=3, num_real=n_real)

    def train_fold(self, prepared, fold, out_dir, cfg, parent_run_id=None, tracking_uri=None):
        from cosmos.segmentation.mlflow_logging import fold_run

        self.calls.append(("train", Path(out_dir).parts[-3], fold))
        out = Path(out_dir)
        with fold_run(parent_run_id, fold, tracking_uri=tracking_uri, fold_dir=out) as cb:
            out.mkdir(parents=True, exist_ok=True)
            cb(0, {"train_loss": 0.5, "pseudo_dice_VS": 0.4})
            (out / "checkpoint_final.pth").write_bytes(b"w")
            (out / "dataset_fingerprint.json").write_text("{}")
        return out

    def predict(self, fold_model_dirs, inputs, out_dir, cfg, mirroring=None, save_probabilities=None):
        round_index = int(Path(fold_model_dirs[0]).parts[-3].split("_")[1])
        self.calls.append(("predict", round_index, Path(out_dir).name))
        for f in inputs:
            case = parse_name(Path(f).name)[0]
            lab = _truth(shift=2 if round_index == 0 else 0)
            if self.drop_all or (round_index == 0 and case in self.lacking):
                lab[lab == 2] = 0
            save(Path(out_dir) / label_name(case), lab, like=load(f), label=True)
        return [Path(out_dir) / label_name(parse_name(Path(f).name)[0]) for f in inputs]

    def install(self, monkeypatch):
        import cosmos.segmentation.prepare as prep
        import cosmos.segmentation.training as training

        monkeypatch.setattr(prep, "prepare_round", self.prepare_round)
        monkeypatch.setattr(prep, "load_prepared", self.load_prepared)
        monkeypatch.setattr(training, "train_fold", self.train_fold)
        monkeypatch.setitem(sys.modules, "cosmos.segmentation.inference", types.SimpleNamespace(predict=self.predict))
        return self

    def count(self, kind):
        return sum(c[0] == kind for c in self.calls)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("st-data")
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        save(root / "pseudo" / f"crossmoda_{i}_hrT2pseudo.nii.gz", rng.random(SHAPE), affine=AFFINE)
        save(root / "pseudo" / f"crossmoda_{i}_Label.nii.gz", _truth(), affine=AFFINE, label=True)
    for j in (10, 11, 12):
        save(root / "target_training" / f"crossmoda_{j}_hrT2.nii.gz", rng.random(SHAPE), affine=AFFINE)
    for k in (20, 21):
        save(root / "target_validation" / f"crossmoda_{k}_hrT2.nii.gz", rng.random(SHAPE), affine=AFFINE)
        save(root / "target_validation_labels" / label_name(f"crossmoda_{k}"), _truth(), affine=AFFINE, label=True)
    return root


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('st-mlflow') / 'mlflow.db'}"


def _cfg(rounds, experiment):
    return load_config("tiny", overrides=[f"selftraining.rounds={rounds}", "segmentation.folds=[0,1]",
                                          f"tracking.experiment={experiment}"])


def _run(data, out, cfg, uri):
    return loop.run_selftraining(data / "pseudo", data / "target_training", out, cfg,
                                 val_dir=data / "target_validation", val_labels_dir=data / "target_validation_labels",
                                 tracking_uri=uri)


def test_teacher_and_student_rounds(data, uri, tmp_path, monkeypatch):
    fake = FakeSeg().install(monkeypatch)
    out = tmp_path / "st"
    res = _run(data, out, _cfg(1, "loop"), uri)

    # Algorithm 1: the teacher trains on pseudo only; the student gets the kept real cases
    assert [c for c in fake.calls if c[0] == "prepare"] == [
        ("prepare", 0, ()), ("prepare", 1, ("crossmoda_10_Label.nii.gz", "crossmoda_11_Label.nii.gz"))]
    assert [c for c in fake.calls if c[0] == "train"] == [("train", "round_0", 0), ("train", "round_0", 1),
                                                         ("train", "round_1", 0), ("train", "round_1", 1)]
    for k in (0, 1):
        r = out / f"round_{k}"
        for sub in ("prepared", "folds/fold_0", "folds/fold_1", "pseudo_labels", "pseudo_labels_kept",
                    "val_predictions", "metrics.json", "DONE"):
            assert (r / sub).exists(), r / sub

    t, s = res.rounds
    assert (t["index"], t["name"], s["name"]) == (0, "teacher", "student 1")
    assert t["kept"] == ["crossmoda_10", "crossmoda_11"] and t["dropped"] == ["crossmoda_12"]
    assert s["kept"] == ["crossmoda_10", "crossmoda_11", "crossmoda_12"] and s["dropped"] == []
    assert (t["model_version"], s["model_version"]) == ("1", "2") and res.champion_version == "2"
    assert t["predictions_dir"].endswith("round_0/val_predictions")
    assert t["pseudo_labels_dir"].endswith("round_0/pseudo_labels")
    # the student (truth) scores better than the shifted teacher
    assert s["metrics"]["summary"]["VS"]["dice_mean"] == pytest.approx(1.0)
    assert t["metrics"]["summary"]["VS"]["dice_mean"] < 0.8
    summary = json.loads((out / "summary.json").read_text())
    assert [r["model_version"] for r in summary["rounds"]] == ["1", "2"]
    assert summary["data_dir"] == str(data.resolve()) and summary["profile"] == "tiny"

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("loop")
    runs = client.search_runs([exp.experiment_id])
    rounds = {r.info.run_name: r for r in runs if r.data.tags.get("cosmos.run_kind") == "round"}
    folds = [r for r in runs if r.data.tags.get("cosmos.run_kind") == "fold"]
    assert set(rounds) == {"round_0-teacher", "round_1-student_1"}
    assert len(folds) == 4
    assert {f.data.tags["mlflow.parentRunId"] for f in folds} == {r.info.run_id for r in rounds.values()}
    teacher = rounds["round_0-teacher"]
    assert teacher.data.metrics["pseudo_labels_kept"] == 2 and teacher.data.metrics["pseudo_labels_dropped"] == 1
    assert teacher.data.metrics["val_dice_VS"] == pytest.approx(t["metrics"]["summary"]["VS"]["dice_mean"])
    assert "val_assd_cochlea" in teacher.data.metrics and teacher.info.status == "FINISHED"
    mv = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert str(mv.version) == "2" and mv.tags["round"] == "1" and mv.run_id == rounds["round_1-student_1"].info.run_id

    # resume: everything DONE -> no work at all
    n = len(fake.calls)
    again = _run(data, out, _cfg(1, "loop"), uri)
    assert len(fake.calls) == n and [r["model_version"] for r in again.rounds] == ["1", "2"]

    # a finished round is skipped; an unfinished one re-runs without retraining finished folds
    (out / "round_1" / "DONE").unlink()
    _run(data, out, _cfg(1, "loop"), uri)
    new = fake.calls[n:]
    assert ("prepare", 0, ()) not in new and fake.count("train") == 4
    assert [c[0] for c in new] == ["prepare"]  # predictions present, version recorded: nothing else to do
    assert (out / "round_1" / "DONE").exists()

    # one more student: only round 2 runs, and it becomes the champion
    more = _run(data, out, _cfg(2, "loop"), uri)
    assert fake.count("train") == 6 and more.champion_version == "3"
    assert str(client.get_model_version_by_alias("cosmos-segmenter", "champion").version) == "3"


def test_nothing_kept_is_alerted_and_recorded(data, uri, tmp_path, monkeypatch, caplog):
    fake = FakeSeg(drop_all=True).install(monkeypatch)
    cfg = _cfg(1, "alert").with_overrides(["tracking.segmenter_model_name=alert-segmenter"])
    res = loop.run_selftraining(data / "pseudo", data, tmp_path / "st", cfg, tracking_uri=uri)
    assert ("prepare", 1, ()) in fake.calls  # the student saw no real case
    assert res.rounds[0]["kept"] == [] and "degenerates to the teacher" in res.rounds[0]["filter_alert"]
    assert res.rounds[0]["metrics"] is None and res.rounds[0]["predictions_dir"] is None
    client = MlflowClient(uri)
    run = client.get_run(res.rounds[0]["run_id"])
    assert "degenerates to the teacher" in run.data.tags["cosmos.filter_alert"]
    assert any(r.levelname == "ERROR" and "kept NO case" in r.getMessage() for r in caplog.records)


def test_bad_inputs(tmp_path, data):
    from cosmos.errors import CosmosError

    cfg = _cfg(0, "bad")
    with pytest.raises(CosmosError, match="pseudo-hrT2 folder not found"):
        loop.run_selftraining(tmp_path / "nope", data / "target_training", tmp_path / "o", cfg)
    with pytest.raises(CosmosError, match="no crossmoda_\\*_hrT2.nii.gz images"):
        loop.run_selftraining(data / "pseudo", data / "pseudo", tmp_path / "o", cfg)
    with pytest.raises(CosmosError, match="without validation images"):
        loop.run_selftraining(data / "pseudo", data / "target_training", tmp_path / "o", cfg,
                              val_labels_dir=data / "target_validation_labels")


def test_rounds_table():
    def block(d, a):
        return {"dice_mean": d, "dice_std": 0.01, "assd_mean": a, "assd_std": 0.02}

    rounds = [{"name": "teacher", "kept": ["a"], "model_version": "1",
               "metrics": {"summary": {"VS": block(0.8, 1.0), "cochlea": block(0.2, 3.0), "mean": block(0.5, 2.0)}}},
              {"name": "student 1", "kept": [], "model_version": "2", "metrics": None}]
    header, _, teacher, student = loop.format_rounds_table(rounds).splitlines()
    assert header.split()[:3] == ["round", "kept", "Dice"]
    cells = [c.strip() for c in teacher.split("  ") if "±" in c]
    # Table-1 order: Dice mean, VS, cochlea, then ASSD mean, VS, cochlea
    assert cells == ["0.500 ± 0.010", "0.800 ± 0.010", "0.200 ± 0.010", "2.000 ± 0.020", "1.000 ± 0.020",
                     "3.000 ± 0.020"]
    assert teacher.split()[:2] == ["teacher", "1"] and teacher.endswith("1")
    assert student.count("n/a") == 6 and student.endswith("2")
