"""Shared fixtures: a mock S3 endpoint (moto's server mode) and the AWS environment pointing at it.

moto.server.ThreadedMotoServer on 127.0.0.1 and a free port is a MOCK S3 server speaking the S3 HTTP
API, started by the tests (no real S3 server installs on these machines). Our code reaches it only
through the standard AWS environment, exactly as it would reach MinIO/SeaweedFS in a cluster.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Standard AWS env pointing at the mock server; nothing from the host's AWS config leaks in."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no slow instance-metadata probe without keys
    return s3_server


@pytest.fixture(scope="module", autouse=True)
def _isolated_tracking_env():
    """cosmos.tracking.setup exports MLFLOW_TRACKING_URI for child processes; keep that inside each test module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield
