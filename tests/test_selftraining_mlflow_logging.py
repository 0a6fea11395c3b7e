"""MLflow fold runs: nesting across processes (parentRunId tag), per-epoch metrics, progress.png,
retries on a locked store, and never failing a training because of logging."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from cosmos.segmentation import mlflow_logging as ml  # noqa: E402


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    from cosmos.tracking import setup

    d = tmp_path_factory.mktemp("mlflow")
    u = f"sqlite:///{d / 'mlflow.db'}"
    setup(u, "cosmos-test")
    return u


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(ml, "RETRY_BASE_DELAY_S", 0.001)


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_epoch_metrics_from_fold_dict_and_scalars():
    fold_dict = {
        "train_losses": [0.5, 0.3],
        "val_losses": [0.6, 0.4],
        "lrs": [0.01, 0.009],
        "mean_fg_dice": [0.2, 0.5],
        "ema_fg_dice": [0.1, 0.3],
        "dice_per_class_or_region": [[0.3, 0.1], [0.7, 0.3]],
        "epoch_start_timestamps": [10.0, 20.0],
        "epoch_end_timestamps": [15.0, 27.5],
    }
    m = ml.epoch_metrics(fold_dict, epoch=0)
    assert m == {
        "train_loss": 0.5,
        "val_loss": 0.6,
        "lr": 0.01,
        "pseudo_dice": 0.2,
        "ema_pseudo_dice": 0.1,
        "pseudo_dice_VS": 0.3,
        "pseudo_dice_cochlea": 0.1,
        "epoch_time_s": 5.0,
    }
    assert ml.epoch_metrics(fold_dict)["pseudo_dice_cochlea"] == 0.3  # no epoch -> last
    # the trainer hook's own form (one epoch's scalars) passes through; junk is ignored
    assert ml.epoch_metrics({"train_loss": 1.0, "pseudo_dice_VS": 0.4, "note": "x"}) == {
        "train_loss": 1.0,
        "pseudo_dice_VS": 0.4,
    }


def test_fold_run_nested_under_round_run(uri, tmp_path):
    client = MlflowClient(uri)
    round_run = ml.start_round_run(2, "cosmos-test", uri, params={"segmentation.epochs": 2})
    (tmp_path / "progress.png").write_bytes(b"\x89PNG fake")
    with ml.fold_run(round_run.run_id, 1, tracking_uri=uri, fold_dir=tmp_path) as on_epoch_end:
        for epoch in range(3):
            on_epoch_end(
                epoch, {"train_loss": 1.0 - 0.1 * epoch, "val_loss": 1.1, "lr": 0.01, "pseudo_dice_VS": 0.1 * epoch}
            )
        fold_id = on_epoch_end.run_id
    run = client.get_run(fold_id)
    assert run.data.tags["mlflow.parentRunId"] == round_run.run_id
    assert run.data.tags["cosmos.round"] == "2"  # read from the parent's tag
    assert run.data.tags["cosmos.fold"] == "1"
    assert run.info.run_name == "round_2-fold_1"
    assert run.info.status == "FINISHED"
    assert _history(client, fold_id, "train_loss") == [(0, 1.0), (1, 0.9), (2, 0.8)]
    assert [a.path for a in client.list_artifacts(fold_id)] == ["progress.png"]
    # a re-run of the same fold (a killed pod that resumes) continues the same run
    with ml.fold_run(round_run.run_id, 1, tracking_uri=uri) as again:
        again(3, {"train_loss": 0.7})
    assert again.run_id == fold_id
    assert len(_history(client, fold_id, "train_loss")) == 4
    round_run.end()
    assert client.get_run(round_run.run_id).data.params["segmentation.epochs"] == "2"


def test_fold_run_failure_marks_run_failed(uri):
    client = MlflowClient(uri)
    parent = ml.start_round_run(0, "cosmos-test", uri)
    with pytest.raises(RuntimeError, match="boom"):
        with ml.fold_run(parent.run_id, 0, tracking_uri=uri) as cb:
            raise RuntimeError("boom")
    assert client.get_run(cb.run_id).info.status == "FAILED"


def test_retries_a_locked_store_then_gives_up_without_raising(uri, caplog):
    parent = ml.start_round_run(0, "cosmos-test", uri)
    with ml.fold_run(parent.run_id, 3, tracking_uri=uri) as cb:
        real = cb.client.log_batch
        calls = {"n": 0}

        def flaky(*a, **k):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise MlflowException("(sqlite3.OperationalError) database is locked")
            return real(*a, **k)

        cb.client.log_batch = flaky
        cb(0, {"train_loss": 0.25})
        assert calls["n"] == 3
        assert _history(MlflowClient(uri), cb.run_id, "train_loss") == [(0, 0.25)]

        def dead(*a, **k):
            raise MlflowException("database is locked")

        cb.client.log_batch = dead
        cb(1, {"train_loss": 0.2})  # must not raise
        assert cb.disabled
        cb(2, {"train_loss": 0.1})  # silently skipped, no more retries
        cb.client.log_batch = real
    assert "MLflow logging for fold 3" in caplog.text and "training continues" in caplog.text


def test_no_tracking_configured_is_a_noop(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "is_tracking_uri_set", lambda: False)
    monkeypatch.chdir(tmp_path)
    with ml.fold_run(None, 0) as cb:
        cb(0, {"train_loss": 1.0})
    assert cb.run_id is None and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two fresh Python processes importing MLflow: ~15 s on 2 busy cores
def test_two_fold_processes_share_a_sqlite_store(uri):
    """Two concurrent writer processes (folds of one round on the local runner) lose no metric."""
    parent = ml.start_round_run(5, "cosmos-test", uri)
    script = textwrap.dedent(f"""
        import sys
        from cosmos.segmentation.mlflow_logging import fold_run
        fold = int(sys.argv[1])
        with fold_run({parent.run_id!r}, fold, tracking_uri={uri!r}) as cb:
            for e in range(25):
                cb(e, {{"train_loss": float(e), "lr": 0.01, "val_loss": 2.0, "pseudo_dice_VS": 0.5}})
            print(cb.run_id, cb.failures)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(f)], stdout=subprocess.PIPE, text=True) for f in (0, 1)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    client = MlflowClient(uri)
    for run_id, failures in outs:
        assert failures == "0"
        assert len(client.get_metric_history(run_id, "train_loss")) == 25
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent.run_id
