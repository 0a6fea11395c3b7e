"""End to end through kfp.local on the phantom: ``cosmos run`` and its resume.

The integration test of every stage (ingest, translator, translate, nnU-Net rounds with a
ParallelFor over folds, pseudo-labels + filter, evaluation, registry + promotion gate, report). The
budget is cut to the bone; the scores mean nothing, the plumbing is what is checked. At that budget
nothing is learned, so the run must also say so: its label-free checks fail, no champion is promoted
(the versions are still registered) and the command exits with code 3 and a FAIL verdict. Then the same
command must reuse every finished stage. (That ``cosmos benchmark``'s COSMOS rows are these very rounds is
checked on the compiled DAGs: tests/test_pipeline_compile.py.)
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from conftest import CUT_BUDGET


def _argv(verb: str, out, data) -> list[str]:
    args = [verb, "--out", str(out), "--profile", "tiny", "--data", str(data)]
    for o in CUT_BUDGET:
        args += ["--set", o]
    return args


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from cosmos.data.phantom import make_phantom

    return make_phantom(
        tmp_path_factory.mktemp("data") / "crossmoda", n_source=4, n_target=4, n_val=2, seed=0, preview=False
    )


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    from cosmos.cli import main

    root = tmp_path_factory.mktemp("run")
    t0 = time.perf_counter()
    rc = main(_argv("run", root / "out", data))
    return {"rc": rc, "out": root / "out", "seconds": time.perf_counter() - t0}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_cosmos_run_end_to_end(run, data, capsys):
    from cosmos.selftraining.verdict import EXIT_CHECKS_FAILED

    assert run["rc"] == EXIT_CHECKS_FAILED
    out = run["out"]
    val_cases = sorted(p.name.removesuffix("_hrT2.nii.gz") for p in (data / "target_validation").glob("*_hrT2.nii.gz"))
    preds = sorted(p.name for p in (out / "predictions").glob("*.nii.gz"))
    assert preds == sorted(f"{c}_Label.nii.gz" for c in val_cases)  # every target-validation case
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.html").is_file()
    assert list((out / "report").glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"cases", "summary", "errors"} and sorted(metrics["cases"]) == val_cases
    summary = json.loads((out / "summary.json").read_text())
    assert [r["index"] for r in summary["rounds"]] == [0, 1]
    assert all(r["gate"]["policy"] == "label_free" for r in summary["rounds"])
    # the verdict: the cut budget learns nothing, and the run knows it without reading a label
    verdict = summary["verdict"]
    assert verdict["passed"] is False and verdict["line"].startswith("verdict: FAIL")
    assert "learning" in verdict["line"] and "no champion was promoted" in verdict["line"]
    assert summary["final_round"] == 1 and summary["champion_round"] is None
    for r in summary["rounds"]:
        assert [c["name"] for c in r["checks"]] == ["translation", "learning", "pseudo-labels", "predictions"]
        assert r["checks_passed"] is False and not r["champion"]
        assert r["validation_plausibility"]["n_cases"] == 2
    assert summary["rounds"][0]["pseudo_label_plausibility"]["n_cases"] == 4
    attempts = summary["translator_attempts"]["attempts"]
    assert attempts and attempts[-1]["attempt"] == len(attempts) and any(a["kept"] for a in attempts)
    report = (out / "report" / "report.md").read_text()
    assert "Verdict (label-free checks)" in report and "verdict: FAIL" in report

    # predictions sit on each input's exact grid
    from cosmos.data.nifti import load, same_grid

    for name in preds:
        case = name.removesuffix("_Label.nii.gz")
        assert (
            same_grid(
                load(out / "predictions" / name, label=True), load(data / "target_validation" / f"{case}_hrT2.nii.gz")
            )
            is None
        )

    # MLflow: translator + one segmenter version per round, kept for inspection; no champion; folds nested
    with sqlite3.connect(out / "mlflow" / "mlflow.db") as con:
        versions = con.execute("select name, version from model_versions order by name, version").fetchall()
        aliases = con.execute("select name, alias, version from registered_model_aliases").fetchall()
        parents = con.execute("select count(*) from tags where key='mlflow.parentRunId'").fetchone()[0]
        checks = con.execute("select value from model_version_tags where key='label_free_checks'").fetchall()
    assert ("cosmos-translator", 1) in versions  # only the kept translator candidate is registered
    assert [v for n, v in versions if n == "cosmos-segmenter"] == [1, 2]
    assert [a for a in aliases if a[0] == "cosmos-segmenter"] == []
    assert sorted(v for (v,) in checks) == ["failed", "failed"]
    assert parents >= 2  # 2 rounds x 1 fold nested under their round run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cosmos_run_resume_redoes_nothing(run, data, capsys):
    from cosmos.cli import main

    out = run["out"]
    timings = out / "work" / "timings.jsonl"
    n_before = len(timings.read_text().splitlines())
    t1 = time.perf_counter()
    assert main(_argv("run", out, data)) == 3  # the same verdict
    second = time.perf_counter() - t1
    new_rows = [json.loads(line) for line in timings.read_text().splitlines()[n_before:]]
    assert all(r["reused"] for r in new_rows), [r["stage"] for r in new_rows if not r["reused"]]
    assert second < run["seconds"] / 3, (run["seconds"], second)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_changing_the_round_count_or_the_post_processing_retrains_nothing(run, data):
    """A finished K=1 run asked for K=0 with another cochlea rule: the teacher's preparation, MLflow run and
    training are reused; only its prediction, scoring and registration run again. (Last in this module: it
    rewrites the run's summary.)"""
    from cosmos.cli import main

    out = run["out"]
    timings = out / "work" / "timings.jsonl"
    n_before = len(timings.read_text().splitlines())
    argv = _argv("run", out, data) + ["--set", "selftraining.rounds=0", "--set", "segmentation.cochlea_components=all"]
    assert main(argv) == 3
    rows = {r["stage"]: r["reused"] for r in map(json.loads, timings.read_text().splitlines()[n_before:])}
    for stage in ("prepare_round0", "start_round_run0", "train_fold0_0"):
        assert rows.get(stage) is True, (stage, rows)
    for stage in ("predict_validation0", "evaluate0"):
        assert rows.get(stage) is False, (stage, rows)
    assert not any(name.endswith("1") or "_fold1_" in name for name in rows), rows
    summary = json.loads((out / "summary.json").read_text())
    assert [r["index"] for r in summary["rounds"]] == [0]


@pytest.mark.slow
def test_a_trained_model_crops_whole_scans_like_its_training_data(run, data, tmp_path):
    """The fold models carry their ROI; segmenting a whole (uncropped) scan crops it the same way and
    returns the labels on the scan's own grid (what cosmos predict / cosmos serve get)."""
    from cosmos.config import load_config
    from cosmos.data import roi
    from cosmos.data.nifti import load, same_grid
    from cosmos.segmentation.registry import segment_files

    fold = next((run["out"] / "work").glob("train_fold1_0-*/**/checkpoint_final.pth")).parent
    assert roi.model_of(fold) is not None
    scan = sorted((data / "target_validation").glob("*_hrT2.nii.gz"))[0]
    cfg = load_config("tiny", overrides=["segmentation.mirroring=false"])
    (out,) = segment_files([fold], [scan], tmp_path / "seg", cfg)
    assert same_grid(load(out, label=True), load(scan)) is None
