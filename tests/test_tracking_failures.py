"""Issue 14 row 3: a run killed while MLflow builds its SQLite store never leaves it unusable.

The first test kills (SIGKILL) a process in the middle of building the store, exactly where
``cosmos run`` was killed in the report, then re-runs: it must recover. It builds the schema for
real once (slow on a loaded 2-core box, ~20 s); the other tests reuse that build through the
per-machine template, which lives in a module-scoped cache folder here.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from cosmos import tracking


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cosmos-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COSMOS_CACHE_DIR", str(path))
        yield path


_KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    import mlflow.store.db.utils as u
    real = u._upgrade_db
    def upgrade_then_die(engine):
        # the initial tables exist, the alembic migrations have not run: SIGKILL, as a user's kill -9
        os.kill(os.getpid(), signal.SIGKILL)
    u._upgrade_db = upgrade_then_die
    from cosmos import tracking
    tracking.setup(sys.argv[1], "cosmos")
""")

_USE_STORE = textwrap.dedent("""
    import sys
    import mlflow
    from cosmos import tracking
    tracking.setup(sys.argv[1], "cosmos")
    with mlflow.start_run() as run:
        mlflow.log_param("p", 1)
    print("RUN", run.info.run_id)
""")


def _use_store_here(uri: str) -> str:
    """What _USE_STORE does, in this process (mlflow is imported once per test module)."""
    import mlflow

    tracking.setup(uri, "cosmos")
    with mlflow.start_run() as run:
        mlflow.log_param("p", 1)
    return run.info.run_id


def _python(code: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def test_killed_first_build_then_rerun_recovers(tmp_path, cache_dir):
    db = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{db}"
    killed = _python(_KILLED_BUILD, uri)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # Old code: a half-built mlflow.db sits at the final path and every re-run fails
    # ("table ... already exists"). Now the final path is absent or complete.
    assert not db.exists() or tracking._store_state(db)[0] == tracking._head_revision()
    rerun = _python(_USE_STORE, uri)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "RUN " in rerun.stdout
    assert tracking._store_state(db)[0] == tracking._head_revision()
    assert not list(db.parent.glob(".mlflow.db.tmp-*"))


def _half_built_copy(template, db, revision_back: int = 3) -> str:
    """A copy of a complete store stamped with an older revision: a migration killed half-way."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    rev = tracking._head_revision()
    for _ in range(revision_back):
        rev = script.get_revision(rev).down_revision
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(template.read_bytes())
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = ?", (rev,))
    con.commit()
    con.close()
    return rev


def test_half_built_store_from_an_older_run_is_moved_aside_and_rebuilt(tmp_path, cache_dir):
    template = tracking._empty_store(tracking._head_revision())
    assert template is not None and template.parent == cache_dir / "cosmos"
    db = tmp_path / "mlflow" / "mlflow.db"
    old_rev = _half_built_copy(template, db)
    _use_store_here(f"sqlite:///{db}")  # old code: MlflowException (out-of-date schema / table exists)
    aside = list(db.parent.glob("mlflow.db.broken-*"))
    assert len(aside) == 1 and tracking._store_state(aside[0])[0] == old_rev  # kept, not deleted
    assert tracking._store_state(db) == (tracking._head_revision(), 2)  # the "cosmos" experiment and its run


def test_complete_store_with_runs_is_left_alone(tmp_path, cache_dir):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    _use_store_here(uri)
    before = db.stat().st_mtime_ns, tracking._store_state(db)
    tracking.ensure_sqlite_store(uri)
    assert (db.stat().st_mtime_ns, tracking._store_state(db)) == before
    assert not list(tmp_path.glob("mlflow.db.broken-*"))


def test_not_a_database_is_moved_aside(tmp_path, cache_dir):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not sqlite" * 100)
    tracking.ensure_sqlite_store(f"sqlite:///{db}")
    assert tracking._store_state(db)[0] == tracking._head_revision()
    aside = list(tmp_path.glob("mlflow.db.broken-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")


def test_non_sqlite_uris_are_untouched(tmp_path):
    for uri in ("http://mlflow:5000", "sqlite:///:memory:", "", "file:///x"):
        tracking.ensure_sqlite_store(uri)  # no error, nothing built
    assert tracking.sqlite_path("sqlite:////a/b.db?mode=rw").as_posix() == "/a/b.db"
