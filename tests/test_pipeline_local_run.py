"""End to end through kfp.local on the phantom: ``cosmos run``, its resume, and ``cosmos benchmark``.

The integration test of every stage (ingest, translator, translate, nnU-Net rounds with a
ParallelFor over folds, pseudo-labels + filter, evaluation, registry + promotion gate, report). The
budget is cut to the bone; the scores mean nothing, the plumbing is what is checked. Then the same
command must reuse every finished stage, and ``cosmos benchmark``'s COSMOS rows, which run the
same round steps from another entry point, must equal ``cosmos run``'s rounds to the last digit,
with the same MLflow params, tags and metric names.
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


def _round_runs(db) -> dict[str, dict]:
    """round run name -> {params, tags, metrics} (keys and values) from an MLflow SQLite store."""
    with sqlite3.connect(db) as con:
        runs = con.execute(
            "select r.run_uuid, r.name from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'cosmos.run_kind' and t.value = 'round'"
        ).fetchall()
        out = {}
        for run_id, name in runs:
            params = dict(con.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
            tags = dict(
                con.execute(
                    "select key, value from tags where run_uuid=? and key not like 'mlflow.%'", (run_id,)
                ).fetchall()
            )
            metrics = {k for (k,) in con.execute("select distinct key from metrics where run_uuid=?", (run_id,))}
            out[name] = {"params": params, "tags": tags, "metrics": metrics}
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_cosmos_run_end_to_end(run, data, capsys):
    assert run["rc"] == 0
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
    assert all(r["gate"]["policy"] == "better" for r in summary["rounds"])

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

    # MLflow: translator + one segmenter version per round; champion where the gate put it; folds nested
    with sqlite3.connect(out / "mlflow" / "mlflow.db") as con:
        versions = con.execute("select name, version from model_versions order by name, version").fetchall()
        aliases = con.execute("select name, alias, version from registered_model_aliases").fetchall()
        parents = con.execute("select count(*) from tags where key='mlflow.parentRunId'").fetchone()[0]
    assert ("cosmos-translator", 1) in versions
    assert [v for n, v in versions if n == "cosmos-segmenter"] == [1, 2]
    champion = [r for r in summary["rounds"] if r["champion"]][-1]
    assert ("cosmos-segmenter", "champion", int(champion["model_version"])) in aliases
    assert parents >= 2  # 2 rounds x 1 fold nested under their round run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cosmos_run_resume_redoes_nothing(run, data, capsys):
    from cosmos.cli import main

    out = run["out"]
    timings = out / "work" / "timings.jsonl"
    n_before = len(timings.read_text().splitlines())
    t1 = time.perf_counter()
    assert main(_argv("run", out, data)) == 0
    second = time.perf_counter() - t1
    new_rows = [json.loads(line) for line in timings.read_text().splitlines()[n_before:]]
    assert all(r["reused"] for r in new_rows), [r["stage"] for r in new_rows if not r["reused"]]
    assert second < run["seconds"] / 3, (run["seconds"], second)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_benchmark_cosmos_rows_equal_cosmos_run_rounds(run, data, tmp_path):
    """One round engine: the benchmark's COSMOS rows ARE cosmos run's rounds (same data, same profile)."""
    from cosmos.cli import main

    bench = tmp_path / "bench"
    assert main(_argv("benchmark", bench, data) + ["--rows", "cosmos"]) == 0
    result = json.loads((bench / "benchmark.json").read_text())
    rows = {r["name"]: r["summary"] for r in result["rows"]}
    summary = json.loads((run["out"] / "summary.json").read_text())
    by_round = {r["index"]: r["metrics"]["summary"] for r in summary["rounds"]}
    assert rows["DA w/ Seg., w/o ST"] == by_round[0]  # to the last digit
    assert rows["COSMOS (ST iter1)"] == by_round[1]

    # the same MLflow params, tags and metric names for a round, whichever command ran it
    ours = _round_runs(run["out"] / "mlflow" / "mlflow.db")
    theirs = _round_runs(bench / "mlflow" / "mlflow.db")
    assert set(ours) == set(theirs) == {"round_0-teacher", "round_1-student_1"}
    for name in ours:
        assert ours[name]["params"] == theirs[name]["params"], name
        assert set(ours[name]["tags"]) == set(theirs[name]["tags"]), name
        assert ours[name]["metrics"] == theirs[name]["metrics"], name


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
    assert main(argv) == 0
    rows = {r["stage"]: r["reused"] for r in map(json.loads, timings.read_text().splitlines()[n_before:])}
    for stage in ("prepare_round0", "start_round_run0", "train_fold0_0"):
        assert rows.get(stage) is True, (stage, rows)
    for stage in ("predict_validation0", "evaluate0"):
        assert rows.get(stage) is False, (stage, rows)
    assert not any(name.endswith("1") or "_fold1_" in name for name in rows), rows
    summary = json.loads((out / "summary.json").read_text())
    assert [r["index"] for r in summary["rounds"]] == [0]
