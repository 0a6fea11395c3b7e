"""End to end on the phantom with the real nnU-Net: `cosmos selftrain` (the cosmos-pipeline DAG from an
existing pseudo-hrT2 folder through kfp.local: teacher + 1 student, two folds in parallel, tiny budget),
the registry (pyfunc @champion predicts), `cosmos predict`, and resume.

The pseudo-hrT2 folder is a perfect-translator stand-in: the phantom's source anatomies rendered
as hrT2 (``make_case(..., "hrT2")``), so this test does not depend on the translator.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("nnunetv2")
mlflow = pytest.importorskip("mlflow")

from conftest import CHECKS_OFF  # noqa: E402

from cosmos.cli import main  # noqa: E402
from cosmos.data import layout  # noqa: E402
from cosmos.data.nifti import load, same_grid, save  # noqa: E402

pytestmark = pytest.mark.slow


# Wiring, not accuracy: a tiny patch and budget so the two rounds fit a busy 2-core CI box.
BUDGET = [
    "segmentation.epochs=2",
    "segmentation.iterations_per_epoch=6",
    "segmentation.val_iterations_per_epoch=1",
    "segmentation.patch_size_max=[32,64,64]",
    "segmentation.torch_threads=1",
    "segmentation.mirroring=false",
    "segmentation.tile_step_size=0.9",
    "segmentation.num_folds=2",
    "tracking.experiment=e2e",
    *CHECKS_OFF,  # wiring, not accuracy: this budget learns nothing, and the registry tests need a champion
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cosmos.data.phantom import make_case, make_phantom

    root = tmp_path_factory.mktemp("e2e")
    data = make_phantom(root / "data", n_source=5, n_target=2, n_val=1, seed=0, scale="small", preview=False)
    pseudo = root / "pseudo"
    for i in range(1, 6):
        case = make_case(0, i, "hrT2", "small")
        save(pseudo / layout.image_name(f"crossmoda_{i}", "hrT2pseudo"), case.image, affine=case.affine)
        save(pseudo / layout.label_name(f"crossmoda_{i}"), case.label, affine=case.affine, label=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    argv = [
        "selftrain",
        "--pseudo",
        str(pseudo),
        "--target",
        str(data / layout.TARGET_DIR),
        "--val",
        str(data / layout.VALIDATION_DIR),
        "--val-labels",
        str(data / layout.VALIDATION_LABELS_DIR),
        "--out",
        str(root / "out"),
        "--rounds",
        "1",
        "--folds",
        "0,1",
        "--tracking-uri",
        uri,
    ]
    for o in BUDGET:
        argv += ["--set", o]
    t0 = time.perf_counter()
    rc = main(argv)
    seconds = time.perf_counter() - t0
    return {"rc": rc, "root": root, "data": data, "out": root / "out", "uri": uri, "argv": argv, "seconds": seconds}


def test_selftrain_cli_runs_teacher_and_student(run, capsys):
    assert run["rc"] == 0
    out = run["out"]
    summary = json.loads((out / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["name"] for r in rounds] == ["teacher", "student 1"]
    work = out / "work"
    for k, r in enumerate(rounds):
        folds = sorted(work.glob(f"train_fold{k}_*"))
        assert len(folds) == 2 and all((f / "DONE").is_file() for f in folds)  # folds 0 and 1, in parallel
        assert len(list(next(work.glob(f"predict_pseudo_labels{k}-*")).glob("pseudo_labels/*_Label.nii.gz"))) == 2
        assert len(r["kept"]) + len(r["dropped"]) == 2
        m = r["metrics"]["summary"]
        assert m["VS"]["dice_mean"] is not None and 0.0 <= m["VS"]["dice_mean"] <= 1.0
        print(
            f"round {k}: kept {len(r['kept'])}, Dice VS {m['VS']['dice_mean']:.3f} cochlea "
            f"{m['cochlea']['dice_mean']:.3f}, ASSD VS {m['VS']['assd_mean']:.2f}"
        )
    # the student trained on the pseudo data plus the teacher's accepted pseudo-labels
    prepared = json.loads(next(work.glob("prepare_round1-*")).joinpath("result.json").read_text())
    assert prepared["n_real"] == len(rounds[0]["kept"]) + len(rounds[0].get("carried") or [])
    client = mlflow.MlflowClient(run["uri"])
    champion = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert str(champion.version) == [r for r in rounds if r["champion"]][-1]["model_version"]
    fold_runs = client.search_runs(
        [client.get_experiment_by_name("e2e").experiment_id], filter_string="tags.`cosmos.run_kind` = 'fold'"
    )
    assert len(fold_runs) == 4
    for fr in fold_runs:  # per-epoch curves + progress.png from nnU-Net's real trainer
        assert len(client.get_metric_history(fr.info.run_id, "train_loss")) == 2
        assert {"val_loss", "lr", "pseudo_dice_VS", "pseudo_dice_cochlea"} <= set(fr.data.metrics)
        assert "progress.png" in [a.path for a in client.list_artifacts(fr.info.run_id)]
    print(f"selftrain wall time: {run['seconds']:.1f} s")


def test_champion_pyfunc_and_predict_cli(run, tmp_path, capsys):
    mlflow.set_tracking_uri(run["uri"])
    model = mlflow.pyfunc.load_model("models:/cosmos-segmenter@champion")
    img = sorted((run["data"] / layout.VALIDATION_DIR).glob("*_hrT2.nii.gz"))[0]
    res = model.predict({"path": [str(img)]}, params={"output_dir": str(tmp_path / "pyfunc")})
    pred = load(res["output"][0], label=True)
    assert same_grid(load(img), pred) is None and set(np.unique(pred.data)) <= {0, 1, 2}

    rc = main(
        [
            "predict",
            "--model",
            "models:/cosmos-segmenter/1",
            str(run["data"] / layout.VALIDATION_DIR),
            "-o",
            str(tmp_path / "cli"),
            "--tracking-uri",
            run["uri"],
            "--no-mirroring",
        ]
    )
    assert rc == 0
    assert {p.name for p in (tmp_path / "cli").glob("*.nii.gz")} == {
        layout.label_name(c.case_id) for c in layout.list_cases(run["data"] / layout.VALIDATION_DIR, "hrT2")
    }


def test_rerun_resumes_without_training(run, capsys):
    ckpt = next((run["out"] / "work").glob("train_fold1_0-*")) / "model" / "checkpoint_final.pth"
    before = ckpt.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert main(run["argv"]) == 0
    assert time.perf_counter() - t0 < run["seconds"] / 2
    assert ckpt.stat().st_mtime_ns == before
    client = mlflow.MlflowClient(run["uri"])
    assert len(client.search_model_versions("name='cosmos-segmenter'")) == 2  # no duplicate registration
