"""MLflow helpers: the embedded SQLite default, run tags, the model registry and aliases.

The embedded default keeps everything under the run's output directory:
``OUT/mlflow/mlflow.db`` (tracking + registry) and ``OUT/mlflow/artifacts`` (artifacts).
On a cluster the tracking URI points at the MLflow server and artifacts go to S3.

Crash safety: MLflow builds a new SQLite store in place, migration by migration (~7 s). A run
killed half-way used to leave a store that every later run refused ("table guardrails already
exists"). :func:`ensure_sqlite_store` therefore builds or migrates the store in a temporary file
and renames it into place, under a file lock, so the store is always either absent or complete. A
half-built store left by an older version is moved aside (kept, never deleted) and rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from cosmos.errors import CosmosError

log = logging.getLogger(__name__)


def default_tracking_uri(out_dir: str | Path) -> str:
    """``sqlite:///OUT/mlflow/mlflow.db``, a complete store (built atomically when missing)."""
    db = Path(out_dir).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    ensure_sqlite_store(uri)
    return uri


def env_tracking_uri() -> str | None:
    """``$MLFLOW_TRACKING_URI`` (stripped), or None when it is unset or blank."""
    return (os.environ.get("MLFLOW_TRACKING_URI") or "").strip() or None


def honour_env_tracking_uri(tracking_cfg) -> str:
    """Fill ``tracking_cfg.tracking_uri`` from ``$MLFLOW_TRACKING_URI`` when the config names none.

    The order every MLflow tool uses: an explicit URI (``--set tracking.tracking_uri=`` or
    ``--tracking-uri``) first, then the environment, and only then the run's own ``OUT/mlflow``
    SQLite store. The local pipeline runner passes ``tracking.tracking_uri`` to every task as a
    parameter and falls back to ``OUT/mlflow`` when it is empty, so the environment has to be read
    here, before the run starts; the tasks' own environment would be overridden by the parameter.
    Returns the URI the run will use ("" = the ``OUT/mlflow`` default).
    """
    if not tracking_cfg.tracking_uri:
        uri = env_tracking_uri()
        if uri:
            log.info("tracking into $MLFLOW_TRACKING_URI %s", uri)
            tracking_cfg.tracking_uri = uri
    return str(tracking_cfg.tracking_uri or "")


def resolve_tracking_uri(tracking_uri: str | None, out_dir: str | Path) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else SQLite under ``out_dir``."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(out_dir)
    ensure_sqlite_store(uri)
    return uri


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for servers, in-memory or other stores)."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    rest = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


@contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """One builder at a time (parallel fold tasks start together)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _store_state(db: Path) -> tuple[str | None, int]:
    """(alembic revision or None, number of user rows: runs, models, non-default experiments)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rev = None
        if "alembic_version" in tables:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            rev = row[0] if row else None
        rows = 0
        for table, where in (("runs", ""), ("registered_models", ""), ("experiments", " WHERE experiment_id != 0")):
            if table in tables:
                rows += int(con.execute(f"SELECT COUNT(*) FROM {table}{where}").fetchone()[0])
        return rev, rows
    finally:
        con.close()


def _build(tmp: Path, upgrade_only: bool = False) -> None:
    """Create (or upgrade) the MLflow schema in ``tmp``, a file nobody else uses."""
    from mlflow.store.db.utils import _initialize_tables, _upgrade_db, create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
    try:
        if upgrade_only:
            _upgrade_db(engine)
        else:
            _initialize_tables(engine)
    finally:
        engine.dispose()


def ensure_sqlite_store(tracking_uri: str) -> None:
    """Make the SQLite store behind ``tracking_uri`` complete and current, atomically; no-op otherwise.

    * missing: built in ``.<name>.tmp-<pid>`` and renamed into place;
    * complete and current: nothing to do (one small read);
    * an older schema with data: migrated on a copy, which then replaces it;
    * half-built (a killed first run, no runs in it) or not a database: moved aside to
      ``<name>.broken-<time>`` (kept) and rebuilt;
    * anything else that cannot be migrated: one CosmosError line; the file is left as it is.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    with _store_lock(db):
        for stale in db.parent.glob(f".{db.name}.tmp-*"):  # a builder killed before its rename
            stale.unlink(missing_ok=True)
        head = _head_revision()
        if db.exists():
            try:
                rev, rows = _store_state(db)
            except sqlite3.DatabaseError as exc:
                rev, rows = None, 0
                log.warning("%s is not a usable SQLite database (%s)", db, exc)
            if rev == head:
                return
            tmp = db.with_name(f".{db.name}.tmp-{os.getpid()}")
            if rev is not None and rows:
                import shutil

                shutil.copyfile(db, tmp)
                try:
                    _build(tmp, upgrade_only=True)
                except Exception as exc:
                    tmp.unlink(missing_ok=True)
                    raise CosmosError(
                        f"{db}: MLflow store at schema {rev} with {rows} record(s) could not be "
                        f"migrated to {head} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                        f"it is left unchanged: back it up and run 'mlflow db upgrade "
                        f"sqlite:///{db}'"
                    ) from None
                os.replace(tmp, db)
                log.info("migrated the MLflow store %s from schema %s to %s", db, rev, head)
                return
            aside = db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            os.replace(db, aside)
            log.warning(
                "%s was a half-built MLflow store (schema %s, no runs; a killed first run?): "
                "moved it to %s and building a fresh one",
                db,
                rev or "none",
                aside.name,
            )
        tmp = db.with_name(f".{db.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            template = _empty_store(head)
            if template is not None:
                import shutil

                shutil.copyfile(template, tmp)
            else:
                _build(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, db)
        log.info("created the MLflow store %s", db)


def _cache_dir() -> Path:
    base = os.environ.get("COSMOS_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cosmos"


def _empty_store(head: str) -> Path | None:
    """An empty store at schema ``head``, built once per machine (same tmp + rename), else None.

    Why: building a store runs every MLflow migration (7-18 s here); copying a finished empty one
    takes milliseconds, so a fresh ``cosmos run`` does not pay it again. The schema holds no path,
    so one template serves every store. An unwritable cache just means building in place.
    """
    template = _cache_dir() / f"mlflow-empty-{head}.db"
    try:
        if template.is_file():
            return template
        with _store_lock(template):
            if template.is_file():
                return template
            tmp = template.with_name(f".{template.name}.tmp-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            try:
                _build(tmp)
                if _store_state(tmp)[0] != head:
                    raise RuntimeError(f"built schema is not {head}")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, template)
        return template
    except OSError as exc:
        log.debug("no MLflow store template in %s (%s); building in place", template.parent, exc)
        return None


def setup(tracking_uri: str, experiment: str, artifact_root: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` and make sure ``experiment`` exists; returns its id.

    For a SQLite store the artifact root defaults to ``<db dir>/artifacts`` so nothing lands in
    the current working directory.
    """
    import mlflow

    ensure_sqlite_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if artifact_root is None and tracking_uri.startswith("sqlite:///"):
        artifact_root = (Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = mlflow.create_experiment(experiment, artifact_location=artifact_root)
        except Exception:  # created concurrently by a parallel fold task
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit(default: str = "unknown") -> str:
    """The source commit, from $COSMOS_GIT_COMMIT (set in the image) or git."""
    env = os.environ.get("COSMOS_GIT_COMMIT")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or default
    except Exception:
        return default


def dataset_digest(paths: Iterable[str | Path]) -> str:
    """A short sha256 over file names and contents: the same data gives the same digest."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def register(
    run_id: str, artifact_name: str, model_name: str, tags: dict[str, str] | None = None, alias: str | None = None
) -> str:
    """Register ``runs:/run_id/artifact_name`` as a new version of ``model_name``; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(f"runs:/{run_id}/{artifact_name}", model_name, tags=tags or None)
    if alias:
        MlflowClient().set_registered_model_alias(model_name, alias, mv.version)
    log.info("registered %s version %s%s", model_name, mv.version, f" (@{alias})" if alias else "")
    return str(mv.version)
