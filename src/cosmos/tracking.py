"""MLflow helpers: the embedded SQLite default, run tags, the model registry and aliases.

The embedded default keeps everything under the run's output directory:
``OUT/mlflow/mlflow.db`` (tracking + registry) and ``OUT/mlflow/artifacts`` (artifacts).
On a cluster the tracking URI points at the MLflow server and artifacts go to S3.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)


def default_tracking_uri(out_dir: str | Path) -> str:
    db = Path(out_dir).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def resolve_tracking_uri(tracking_uri: str | None, out_dir: str | Path) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else SQLite under ``out_dir``."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(out_dir)


def setup(tracking_uri: str, experiment: str, artifact_root: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` and make sure ``experiment`` exists; returns its id.

    For a SQLite store the artifact root defaults to ``<db dir>/artifacts`` so nothing lands in
    the current working directory.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if artifact_root is None and tracking_uri.startswith("sqlite:///"):
        artifact_root = (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
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


def register(run_id: str, artifact_name: str, model_name: str, tags: dict[str, str] | None = None,
             alias: str | None = None) -> str:
    """Register ``runs:/run_id/artifact_name`` as a new version of ``model_name``; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(f"runs:/{run_id}/{artifact_name}", model_name, tags=tags or None)
    if alias:
        MlflowClient().set_registered_model_alias(model_name, alias, mv.version)
    log.info("registered %s version %s%s", model_name, mv.version, f" (@{alias})" if alias else "")
    return str(mv.version)


def set_alias(model_name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(model_name, alias, version)
