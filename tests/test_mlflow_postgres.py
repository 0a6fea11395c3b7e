"""A real ``mlflow server`` on a real PostgreSQL backend, as k8s/base deploys it (issue 27, item 5).

PostgreSQL comes from Debian's ``postgresql`` package (``apt-get install postgresql``: the binaries in
``/usr/lib/postgresql/<major>/bin``). The test makes its own throw-away cluster: ``initdb`` into a
temporary folder, ``pg_ctl start`` on a free port on 127.0.0.1 with its unix socket in that folder,
and stops and deletes it afterwards. PostgreSQL refuses to run as root, so under root (a CI container)
the server runs as the unprivileged ``postgres`` (or ``nobody``) account.

The round trip uses the project's own tracking helpers against the server: experiment, run, a logged
model artifact, ``register`` with the ``champion`` alias, the alias read back and the artifact
downloaded; then PostgreSQL's own tables are read to show the registry really lives there.

Skipped, with the reason, only when no PostgreSQL server binaries are installed; psycopg2 (the
driver MLflow's server needs for ``postgresql://``) is a test dependency and its absence fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import mlflow_server


def _pg_bin() -> Path | None:
    """The newest PostgreSQL server's bin folder (Debian layout first, then $PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("pg_ctl") else None


PG_BIN = _pg_bin()
pytestmark = pytest.mark.skipif(
    PG_BIN is None,
    reason="no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql to run this test",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """An unprivileged account for the server when this process is root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")


@pytest.fixture
def postgres():
    """A fresh PostgreSQL cluster on 127.0.0.1:PORT with database ``mlflow``; yields the URI."""
    import psycopg2

    assert PG_BIN is not None
    user = _run_as()
    # not under pytest's tmp_path: that is private to root (0700), which the postgres account cannot enter
    root = Path(tempfile.mkdtemp(prefix="cosmos-pg-"))
    if user:
        shutil.chown(root, user=user)
    port = _free_port()
    data, log = root / "data", root / "server.log"
    run = dict(user=user, capture_output=True, text=True, timeout=60, cwd=root)
    res = subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "cosmos", "-A", "trust", "-E", "UTF8", "--no-sync"], **run
    )
    assert res.returncode == 0, res.stderr
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    res = subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"], **run)
    assert res.returncode == 0, res.stderr + (log.read_text() if log.exists() else "")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="cosmos", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        # the driver is named, as in k8s/base/mlflow.yaml: SQLAlchemy 2.1 maps a bare postgresql:// to
        # psycopg 3, which neither the MLflow image nor this test extra installs
        yield f"postgresql+psycopg2://cosmos@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mlflow_on_postgres(postgres, tmp_path):
    """``mlflow server`` with the PostgreSQL backend store and proxied file artifacts; yields its URL."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    artifacts = (tmp_path / "artifacts").as_uri()
    with mlflow_server(postgres, artifacts, tmp_path / "mlflow-server.log", env, timeout_s=90) as url:
        yield url, postgres


def _identity_model():
    import mlflow.pyfunc

    class Identity(mlflow.pyfunc.PythonModel):
        """A stand-in model: what is tested is the registry, not a segmenter."""

        def predict(self, context, model_input, params=None):
            return model_input

    return Identity


def test_registration_round_trip_on_a_postgresql_backed_server(mlflow_on_postgres, tmp_path, monkeypatch):
    import mlflow
    import psycopg2
    from mlflow import MlflowClient

    from cosmos import tracking

    url, db_uri = mlflow_on_postgres
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # tracking.setup sets it; restored afterwards
    exp_id = tracking.setup(url, "cosmos-postgres-test")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "plans.json").write_text('{"fold": 0}\n')
    with mlflow.start_run(experiment_id=exp_id, run_name="round_0") as run:
        mlflow.log_param("round", 0)
        mlflow.log_metric("dice", 0.5)
        mlflow.pyfunc.log_model(
            name="segmenter",
            python_model=_identity_model()(),
            artifacts={"plans": str(model_dir / "plans.json")},
            pip_requirements=["mlflow"],  # given: no requirement inference
        )
    version = tracking.register(run.info.run_id, "segmenter", "cosmos-segmenter", tags={"round": "0"}, alias="champion")
    assert version == "1"

    client = MlflowClient(tracking_uri=url)
    champion = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert (champion.version, champion.run_id, champion.tags["round"]) == ("1", run.info.run_id, "0")
    got = Path(mlflow.artifacts.download_artifacts("models:/cosmos-segmenter@champion", dst_path=str(tmp_path / "dl")))
    (plans,) = got.rglob("plans.json")  # the model's artifacts/ folder, through the server's artifact proxy
    assert plans.read_text() == '{"fold": 0}\n'
    assert client.get_run(run.info.run_id).data.metrics["dice"] == 0.5

    # the registry and the run are rows of PostgreSQL, not of some local fallback store
    with psycopg2.connect(db_uri.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version, run_id FROM model_versions")
        assert cur.fetchall() == [("cosmos-segmenter", 1, run.info.run_id)]
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'cosmos-segmenter'")
        assert cur.fetchall() == [("champion", 1)]
        cur.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("round", "0")]
