"""``cosmos run`` and ``cosmos selftrain`` track where every MLflow tool does: an explicit URI first
(``--set tracking.tracking_uri=`` / ``--tracking-uri``), then ``$MLFLOW_TRACKING_URI``, and only
then the run's own ``OUT/mlflow`` SQLite store (issue 27, item 5).

The commands run for real up to the point where kfp.local would start the tasks: the test
replaces ``pipelines.local_run._execute`` (the kfp.local execution) and reads the pipeline
arguments every task would receive, ``tracking_uri`` among them. No task runs.
"""

from __future__ import annotations

import os

import pytest

from cosmos import events


class _Stopped(Exception):
    """Raised instead of running the DAG, once its arguments are known."""


@pytest.fixture
def task_args(monkeypatch, tmp_path):
    import pipelines.local_run as local_run
    from cosmos import tracking

    seen: dict = {}

    def execute(pipeline, args, out, verbose):
        seen.update(args)
        raise _Stopped("the DAG would start here")

    monkeypatch.setattr(local_run, "_execute", execute)
    # building the SQLite store is not what is tested here (tests/test_tracking_failures.py is)
    monkeypatch.setattr(tracking, "ensure_sqlite_store", lambda uri: None)
    # _prepare_out sets these for the tasks: restore them afterwards
    for key in ("TMPDIR", "COSMOS_NO_PROGRESS", events.INTERVAL_ENV):
        monkeypatch.setenv(key, os.environ.get(key, "x"))
        if key not in os.environ or os.environ[key] == "x":
            monkeypatch.delenv(key)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return seen


def _run(argv: list[str]) -> None:
    """Run the command until the DAG would start (``cosmos`` reports the stop as an unexpected error)."""
    from cosmos.cli import main

    assert main(argv) != 0


def _selftrain_argv(tmp_path) -> list[str]:
    (tmp_path / "pseudo").mkdir()
    (tmp_path / "target").mkdir()
    return ["selftrain", "--pseudo", str(tmp_path / "pseudo"), "--target", str(tmp_path / "target")]


def test_cosmos_run_tracks_into_mlflow_tracking_uri(task_args, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    _run(["run", "--out", str(tmp_path / "out")])
    assert task_args["tracking_uri"] == "http://mlflow.example:5000"
    assert not (tmp_path / "out" / "mlflow").exists()  # no embedded store was made


def test_cosmos_selftrain_tracks_into_mlflow_tracking_uri(task_args, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    _run([*_selftrain_argv(tmp_path), "--out", str(tmp_path / "out")])
    assert task_args["tracking_uri"] == "http://mlflow.example:5000"


def test_an_explicit_uri_wins_over_the_environment(task_args, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    _run(["run", "--out", str(tmp_path / "a"), "--set", "tracking.tracking_uri=http://explicit:5000"])
    assert task_args["tracking_uri"] == "http://explicit:5000"
    task_args.clear()
    _run([*_selftrain_argv(tmp_path), "--out", str(tmp_path / "b"), "--tracking-uri", "http://flag:5000"])
    assert task_args["tracking_uri"] == "http://flag:5000"


@pytest.mark.parametrize("env", [None, "", "   "])
def test_without_the_environment_the_run_tracks_under_out(task_args, tmp_path, monkeypatch, env):
    if env is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    out = tmp_path / "out"
    _run(["run", "--out", str(out)])
    assert task_args["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow' / 'mlflow.db'}"


def test_honour_env_tracking_uri_order(monkeypatch):
    from types import SimpleNamespace

    from cosmos.tracking import honour_env_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", " http://env:5000 ")
    section = SimpleNamespace(tracking_uri="")
    assert honour_env_tracking_uri(section) == "http://env:5000" == section.tracking_uri
    section = SimpleNamespace(tracking_uri="sqlite:///x.db")
    assert honour_env_tracking_uri(section) == "sqlite:///x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    section = SimpleNamespace(tracking_uri="")
    assert honour_env_tracking_uri(section) == "" == section.tracking_uri
