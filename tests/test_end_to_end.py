"""The one end-to-end run of the suite: ``cosmos run`` through kfp.local, on the cluster's topology.

One pipeline run carries every end-to-end assertion, because a run costs minutes on a 2-core box:

* the data are read from ``s3://`` on a real SeaweedFS server;
* tracking and the registry are a real ``mlflow server`` (SQLite backend) whose artifacts are proxied
  into a SeaweedFS bucket, so every stage talks to real servers, as on a cluster;
* the budget is cut to the bone (conftest.CUT_BUDGET): what is checked is the plumbing of every stage
  (ingest, translator, translate, nnU-Net rounds with a ParallelFor over folds, pseudo-labels and their
  filter, evaluation, registry, promotion gate, report), not accuracy.

The first run switches the label-free checks off (conftest.CHECKS_OFF) so that a champion is promoted and
the registry, the pyfunc and ``cosmos predict`` can be exercised on it. The tests after it re-run the same
output folder: with the checks that do not change any trained stage put back, the run must condemn itself
(exit 3, a FAIL verdict, no new champion) while reusing every trained stage; an unchanged re-run must redo
nothing; and a change of the round count or of the post-processing must retrain nothing.

That ``cosmos benchmark``'s COSMOS rows are these very rounds is checked on the compiled DAGs
(tests/test_pipeline_compile.py); the ``cosmos selftrain`` variant of the DAG is compiled there too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CHECKS_OFF, CUT_BUDGET, _aws_env, mlflow_server

pytest.importorskip("nnunetv2")
mlflow = pytest.importorskip("mlflow")

pytestmark = pytest.mark.slow

# The checks a re-run may put back without retraining anything: no trained stage's resume key holds them
# (components/*/component.py: train_translator keeps the fidelity keys, train_fold min_pseudo_dice).
CHECKS_THAT_RETRAIN_NOTHING = (
    "checks.min_plausible=0.5",
    "checks.min_kept_fraction=0.25",
    "checks.min_label_agreement=0.5",
)
CHECKS_KEPT_OFF = tuple(
    o for o in CHECKS_OFF if o.split("=")[0] not in {c.split("=")[0] for c in CHECKS_THAT_RETRAIN_NOTHING}
)


@pytest.fixture(scope="module")
def stack(seaweedfs, tmp_path_factory):
    """AWS env pointing at SeaweedFS, and a real MLflow server whose artifacts go into a SeaweedFS bucket."""
    import boto3

    root = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as mp:
        _aws_env(mp, root, seaweedfs)
        mp.setenv("MLFLOW_S3_ENDPOINT_URL", seaweedfs)
        mp.setenv("TMPDIR", str(root))
        boto3.client("s3", endpoint_url=seaweedfs).create_bucket(Bucket="cosmos-e2e-mlflow")
        env = dict(os.environ)
        with mlflow_server(
            f"sqlite:///{root / 'server.db'}", "s3://cosmos-e2e-mlflow/artifacts", root / "mlflow-server.log", env
        ) as url:
            yield {"s3": seaweedfs, "mlflow": url, "root": root}


@pytest.fixture(scope="module")
def data(stack):
    """The phantom, on local disk (to compare against) and uploaded to SeaweedFS (what the run reads)."""
    import boto3

    from cosmos.data import storage
    from cosmos.data.phantom import make_phantom

    local = make_phantom(stack["root"] / "crossmoda", n_source=4, n_target=4, n_val=2, seed=0, preview=False)
    boto3.client("s3", endpoint_url=stack["s3"]).create_bucket(Bucket="cosmos-e2e-data")
    storage.upload(local, "s3://cosmos-e2e-data/crossmoda")
    return {"local": local, "uri": "s3://cosmos-e2e-data/crossmoda"}


def _argv(stack, data, out, *extra: str) -> list[str]:
    args = ["run", "--out", str(out), "--profile", "tiny", "--data", data["uri"]]
    for o in (*CUT_BUDGET, f"tracking.tracking_uri={stack['mlflow']}", *extra):
        args += ["--set", o]
    return args


@pytest.fixture(scope="module")
def run(stack, data):
    from cosmos.cli import main

    out = stack["root"] / "out"
    argv = _argv(stack, data, out, *CHECKS_OFF)
    t0 = time.perf_counter()
    rc = main(argv)
    return {"rc": rc, "out": out, "seconds": time.perf_counter() - t0, "argv": argv}


def _new_timings(out: Path, n_before: int) -> dict[str, bool]:
    rows = (out / "work" / "timings.jsonl").read_text().splitlines()[n_before:]
    return {r["stage"]: r["reused"] for r in map(json.loads, rows)}


def _n_timings(out: Path) -> int:
    return len((out / "work" / "timings.jsonl").read_text().splitlines())


@pytest.mark.timeout(1500)
def test_run_end_to_end(run, data, stack):
    import boto3
    from mlflow import MlflowClient

    from cosmos.data.nifti import load, same_grid

    assert run["rc"] == 0
    out = run["out"]
    val_dir = data["local"] / "target_validation"
    val_cases = sorted(p.name.removesuffix("_hrT2.nii.gz") for p in val_dir.glob("*_hrT2.nii.gz"))
    preds = sorted(p.name for p in (out / "predictions").glob("*_Label.nii.gz"))
    assert preds == sorted(f"{c}_Label.nii.gz" for c in val_cases)  # every target-validation case
    for name in preds:  # predictions sit on each input's exact grid
        case = name.removesuffix("_Label.nii.gz")
        assert same_grid(load(out / "predictions" / name, label=True), load(val_dir / f"{case}_hrT2.nii.gz")) is None
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.html").is_file()
    assert list((out / "report").glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"cases", "summary", "errors"} and sorted(metrics["cases"]) == val_cases

    summary = json.loads((out / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["index"] for r in rounds] == [0, 1] and [r["name"] for r in rounds] == ["teacher", "student 1"]
    assert all(r["gate"]["policy"] == "label_free" for r in rounds)
    assert summary["verdict"]["passed"] is True and summary["verdict"]["line"].startswith("verdict: PASS")
    for r in rounds:
        assert [c["name"] for c in r["checks"]] == ["translation", "learning", "pseudo-labels", "predictions"]
        assert r["validation_plausibility"]["n_cases"] == 2
        m = r["metrics"]["summary"]
        assert m["VS"]["dice_mean"] is not None and 0.0 <= m["VS"]["dice_mean"] <= 1.0
    assert rounds[0]["pseudo_label_plausibility"]["n_cases"] == 4
    assert len(rounds[0]["kept"]) + len(rounds[0]["dropped"]) == 4
    # the student trained on the pseudo-hrT2 plus the teacher's accepted pseudo-labels
    work = out / "work"
    prepared = json.loads(next(work.glob("prepare_round1-*")).joinpath("result.json").read_text())
    assert prepared["n_real"] == len(rounds[0]["kept"]) + len(rounds[0].get("carried") or [])
    attempts = summary["translator_attempts"]["attempts"]
    assert attempts and attempts[-1]["attempt"] == len(attempts) and any(a["kept"] for a in attempts)

    # the registry on the real server: one translator, a segmenter version per round, the champion is a round's
    client = MlflowClient(stack["mlflow"])
    assert len(client.search_model_versions("name='cosmos-translator'")) == 1  # only the kept candidate
    assert sorted(int(v.version) for v in client.search_model_versions("name='cosmos-segmenter'")) == [1, 2]
    champion = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert str(champion.version) == [r for r in rounds if r["champion"]][-1]["model_version"]
    # fold runs nested under their round, with nnU-Net's per-epoch curves and progress plot
    experiment = client.get_experiment_by_name(summary.get("experiment") or "cosmos")
    fold_runs = client.search_runs([experiment.experiment_id], filter_string="tags.`cosmos.run_kind` = 'fold'")
    assert len(fold_runs) == 2  # 2 rounds x 1 fold
    for fr in fold_runs:
        assert fr.data.tags.get("mlflow.parentRunId")
        assert len(client.get_metric_history(fr.info.run_id, "train_loss")) == 1  # segmentation.epochs=1
        assert {"val_loss", "lr", "pseudo_dice_VS", "pseudo_dice_cochlea"} <= set(fr.data.metrics)
        assert "progress.png" in [a.path for a in client.list_artifacts(fr.info.run_id)]
    # the registered models' files went through the server into the SeaweedFS bucket
    s3 = boto3.client("s3", endpoint_url=stack["s3"])
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="cosmos-e2e-mlflow")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("checkpoint_final.pth") for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys)
    assert not (out / "mlflow" / "mlflow.db").exists()  # nothing fell back to a local SQLite store


def test_champion_pyfunc_and_predict_cli(run, data, stack, tmp_path):
    from cosmos.cli import main
    from cosmos.data import layout
    from cosmos.data.nifti import load, same_grid

    assert run["rc"] == 0
    mlflow.set_tracking_uri(stack["mlflow"])
    model = mlflow.pyfunc.load_model("models:/cosmos-segmenter@champion")
    img = sorted((data["local"] / layout.VALIDATION_DIR).glob("*_hrT2.nii.gz"))[0]
    res = model.predict({"path": [str(img)]}, params={"output_dir": str(tmp_path / "pyfunc")})
    pred = load(res["output"][0], label=True)
    assert same_grid(load(img), pred) is None and set(np.unique(pred.data)) <= {0, 1, 2}

    argv = ["predict", "--model", "models:/cosmos-segmenter@champion", str(data["local"] / layout.VALIDATION_DIR)]
    argv += ["-o", str(tmp_path / "cli"), "--tracking-uri", stack["mlflow"], "--no-mirroring"]
    assert main(argv) == 0
    expected = {layout.label_name(c.case_id) for c in layout.list_cases(data["local"] / layout.VALIDATION_DIR, "hrT2")}
    assert {p.name for p in (tmp_path / "cli").glob("*_Label.nii.gz")} == expected


def test_a_trained_model_crops_whole_scans_like_its_training_data(run, data, tmp_path):
    """The fold models carry their ROI; segmenting a whole (uncropped) scan crops it the same way and
    returns the labels on the scan's own grid (what cosmos predict / cosmos serve get)."""
    from cosmos.config import load_config
    from cosmos.data import roi
    from cosmos.data.nifti import load, same_grid
    from cosmos.segmentation.registry import segment_files

    fold = next((run["out"] / "work").glob("train_fold1_0-*/**/checkpoint_final.pth")).parent
    assert roi.model_of(fold) is not None
    scan = sorted((data["local"] / "target_validation").glob("*_hrT2.nii.gz"))[0]
    cfg = load_config("tiny", overrides=["segmentation.mirroring=false"])
    (out,) = segment_files([fold], [scan], tmp_path / "seg", cfg)
    assert same_grid(load(out, label=True), load(scan)) is None
    # the measurements describe the whole scan's labels, with the confidence and removed components of the crop
    from cosmos.evaluation.measurements import measure_file, measurements_path

    measured = json.loads(measurements_path(out).read_text())
    assert measured["vs_volume_mm3"] == pytest.approx(measure_file(out).vs_volume_mm3)
    assert measured["components_removed"] is not None
    if measured["vs_voxels"]:
        assert 0.0 < measured["vs_confidence_mean_max_prob"] <= 1.0


@pytest.mark.timeout(900)
def test_a_run_its_checks_condemn_exits_3_and_promotes_nothing_new(run, data, stack):
    """The same run with the checks that no trained stage depends on put back: at the cut budget nothing is
    learned, so the predictions are implausible and the pseudo-labels are dropped. The run says FAIL, exits 3,
    registers its rounds tagged as failed and leaves the champion alias where it was; nothing is retrained."""
    from mlflow import MlflowClient

    from cosmos.cli import main
    from cosmos.selftraining.verdict import EXIT_CHECKS_FAILED

    out = run["out"]
    client = MlflowClient(stack["mlflow"])
    champion_before = client.get_model_version_by_alias("cosmos-segmenter", "champion").version
    n_before = _n_timings(out)
    rc = main(_argv(stack, data, out, *CHECKS_KEPT_OFF, *CHECKS_THAT_RETRAIN_NOTHING))
    assert rc == EXIT_CHECKS_FAILED
    rows = _new_timings(out, n_before)
    for stage in ("train_translator", "translate", "train_fold0_0", "train_fold1_0"):
        assert rows.get(stage) is True, (stage, rows)
    summary = json.loads((out / "summary.json").read_text())
    verdict = summary["verdict"]
    assert verdict["passed"] is False and verdict["line"].startswith("verdict: FAIL")
    assert "no champion was promoted" in verdict["line"]
    assert summary["champion_round"] is None and not any(r["champion"] for r in summary["rounds"])
    assert all(r["checks_passed"] is False for r in summary["rounds"])
    assert "verdict: FAIL" in (out / "report" / "report.md").read_text()
    failed = [
        v
        for v in client.search_model_versions("name='cosmos-segmenter'")
        if v.tags.get("label_free_checks") == "failed"
    ]
    assert {str(r["model_version"]) for r in summary["rounds"]} <= {v.version for v in failed}
    assert client.get_model_version_by_alias("cosmos-segmenter", "champion").version == champion_before


@pytest.mark.timeout(900)
def test_an_unchanged_rerun_redoes_nothing(run, data, stack):
    from cosmos.cli import main

    out = run["out"]
    argv = _argv(stack, data, out, *CHECKS_KEPT_OFF, *CHECKS_THAT_RETRAIN_NOTHING)  # the previous test's run
    n_before = _n_timings(out)
    t0 = time.perf_counter()
    assert main(argv) == 3  # the same verdict
    seconds = time.perf_counter() - t0
    rows = _new_timings(out, n_before)
    assert rows and all(rows.values()), [s for s, reused in rows.items() if not reused]
    assert seconds < run["seconds"] / 3, (run["seconds"], seconds)


@pytest.mark.timeout(900)
def test_changing_the_round_count_or_the_post_processing_retrains_nothing(run, data, stack):
    """A finished K=1 run asked for K=0 with another cochlea rule: the teacher's preparation, MLflow run and
    training are reused; only its prediction, scoring and registration run again. (Last in this module: it
    rewrites the run's summary.)"""
    from cosmos.cli import main

    out = run["out"]
    n_before = _n_timings(out)
    extra = (*CHECKS_OFF, "selftraining.rounds=0", "segmentation.cochlea_components=all")
    assert main(_argv(stack, data, out, *extra)) == 0
    rows = _new_timings(out, n_before)
    for stage in ("prepare_round0", "start_round_run0", "train_fold0_0"):
        assert rows.get(stage) is True, (stage, rows)
    for stage in ("predict_validation0", "evaluate0"):
        assert rows.get(stage) is False, (stage, rows)
    assert not any(name.endswith("1") or "_fold1_" in name for name in rows), rows
    summary = json.loads((out / "summary.json").read_text())
    assert [r["index"] for r in summary["rounds"]] == [0]
