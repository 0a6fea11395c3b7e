"""End to end: ``cosmos run`` executes the real cosmos-pipeline through kfp.local on the phantom.

The integration test of every stage (ingest, translator, translate, nnU-Net rounds with a
ParallelFor over folds, prediction + pseudo-label filter, evaluation, registry, report). The
budget is cut to the bone so it takes about two minutes on 2 CPU cores; the scores mean nothing,
the plumbing is what is checked. A second invocation must reuse every finished stage.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

FAST = [
    "phantom.n_source=4", "phantom.n_target=4", "phantom.n_val=2",
    "translator.epochs=1", "translator.slices_per_epoch=16",
    "segmentation.epochs=1", "segmentation.iterations_per_epoch=2", "segmentation.val_iterations_per_epoch=1",
    "segmentation.mirroring=false", "segmentation.num_folds=2", "segmentation.folds=[0,1]", "selftraining.rounds=1",
]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_cosmos_run_end_to_end_then_resume(tmp_path, capsys, monkeypatch):
    from cosmos.cli import main

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    out = tmp_path / "out"
    args = ["run", "--out", str(out), "--profile", "tiny"]
    for o in FAST:
        args += ["--set", o]
    t0 = time.perf_counter()
    assert main(args) == 0
    first = time.perf_counter() - t0
    printed = capsys.readouterr().out

    # the documented outputs
    data_dir = next((out / "work").glob("ingest-*")) / "data"
    val_cases = sorted(p.name.removesuffix("_hrT2.nii.gz")
                       for p in (data_dir / "target_validation").glob("*_hrT2.nii.gz"))
    assert len(val_cases) == 2
    preds = sorted(p.name for p in (out / "predictions").glob("*.nii.gz"))
    assert preds == sorted(f"{c}_Label.nii.gz" for c in val_cases)  # every target-validation case
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.html").is_file()
    assert list((out / "report").glob("*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"cases", "summary", "errors"} and sorted(metrics["cases"]) == val_cases
    summary = json.loads((out / "summary.json").read_text())
    assert [r["index"] for r in summary["rounds"]] == [0, 1]
    assert summary["rounds"][0]["kept"] is not None
    assert "mlflow ui --backend-store-uri sqlite:///" in printed and str(out / "predictions") in printed

    # predictions sit on each input's exact grid
    from cosmos.data.nifti import load, same_grid

    for name in preds:
        case = name.removesuffix("_Label.nii.gz")
        assert same_grid(load(out / "predictions" / name, label=True),
                         load(data_dir / "target_validation" / f"{case}_hrT2.nii.gz")) is None

    # MLflow: translator + one segmenter version per round, champion on the last; fold runs nested
    db = out / "mlflow" / "mlflow.db"
    with sqlite3.connect(db) as con:
        versions = con.execute("select name, version from model_versions order by name, version").fetchall()
        aliases = con.execute("select name, alias, version from registered_model_aliases").fetchall()
        parents = con.execute("select count(*) from tags where key='mlflow.parentRunId'").fetchone()[0]
    assert ("cosmos-translator", 1) in versions
    assert [v for n, v in versions if n == "cosmos-segmenter"] == [1, 2]
    assert ("cosmos-segmenter", "champion", 2) in aliases
    assert parents >= 4  # 2 rounds x 2 folds nested under their round run

    # resume: the same command redoes nothing
    timings = out / "work" / "timings.jsonl"
    n_before = len(timings.read_text().splitlines())
    t1 = time.perf_counter()
    assert main(args) == 0
    second = time.perf_counter() - t1
    new_rows = [json.loads(line) for line in timings.read_text().splitlines()[n_before:]]
    assert all(r["reused"] for r in new_rows), [r["stage"] for r in new_rows if not r["reused"]]
    assert second < first / 3, (first, second)
    assert "reused" in capsys.readouterr().out or not new_rows
