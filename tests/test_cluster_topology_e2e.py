"""The cluster's topology on one machine: a real ``mlflow server`` (SQLite backend, artifacts proxied to
SeaweedFS), the data read from ``s3://`` on SeaweedFS, ``cosmos run`` through kfp.local with
``--set tracking.tracking_uri=http://127.0.0.1:PORT``, and the champion read back from the server.

Both servers run on 127.0.0.1 only and are stopped by the test. The budget is cut to the bone: what
is checked is that every stage talks to the real servers (registry, artifacts, data), not accuracy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CHECKS_OFF

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(real_s3_env, tmp_path):
    """A real MLflow tracking + registry server whose artifact store is a SeaweedFS bucket."""
    import boto3

    boto3.client("s3", endpoint_url=real_s3_env).create_bucket(Bucket="cosmos-topology-mlflow")
    port = _free_port()
    env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=real_s3_env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen(
        [
            mlflow_bin,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            "s3://cosmos-topology-mlflow/artifacts",
            "--workers",
            "1",
        ],
        env=env,
        stdout=open(tmp_path / "mlflow-server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
        time.sleep(1)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.timeout(1800)
def test_cosmos_run_against_mlflow_server_and_s3_data(real_s3_env, mlflow_server, tmp_path, monkeypatch, cut_budget):
    import boto3
    from mlflow import MlflowClient

    from cosmos.cli import main
    from cosmos.data import storage
    from cosmos.data.phantom import make_phantom

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", real_s3_env)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    s3 = boto3.client("s3", endpoint_url=real_s3_env)
    s3.create_bucket(Bucket="cosmos-topology-data")
    data = make_phantom(tmp_path / "phantom", n_source=4, n_target=4, n_val=2, seed=0, preview=False)
    storage.upload(data, "s3://cosmos-topology-data/crossmoda")

    args = [
        "run",
        "--out",
        str(tmp_path / "out"),
        "--profile",
        "tiny",
        "--data",
        "s3://cosmos-topology-data/crossmoda",
        "--set",
        f"tracking.tracking_uri={mlflow_server}",
    ]
    for o in (*cut_budget, *CHECKS_OFF):  # a promoted champion is what this test reads back
        args += ["--set", o]
    assert main(args) == 0

    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert int(champion.version) in (1, 2)
    translator = client.search_model_versions("name='cosmos-translator'")
    assert len(translator) == 1
    # the registered models' files went through the server into the SeaweedFS bucket
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cosmos-topology-mlflow").get("Contents", [])]
    assert any(k.endswith("checkpoint_final.pth") for k in keys), keys[:20]
    assert any("MLmodel" in k for k in keys)
    # nothing fell back to a local SQLite store
    assert not (tmp_path / "out" / "mlflow" / "mlflow.db").exists()
