"""Local paths and ``s3://bucket/prefix`` URIs behind one small interface (boto3).

Why boto3's own configuration: the same code runs on a laptop, in a KFP pod and against MinIO,
SeaweedFS or AWS. Credentials, region and endpoint come from the standard AWS environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``), which boto3 >= 1.34 honours natively, so a Kubernetes secret mounted as
env vars is all a cluster needs. When a custom endpoint is set we use path-style addressing,
which MinIO and SeaweedFS expect.

Safety: an object key is untrusted input. A key with ``..`` parts or an absolute path would write
outside the download folder, so ``download`` refuses it with a ``CosmosError`` naming the key.
Downloads and uploads are resumable: files whose size already matches are skipped, and each
download lands under a temporary name first, so a killed copy never leaves a half file behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from cosmos.errors import CosmosError
from cosmos.logs import progress

log = logging.getLogger(__name__)


class StorageError(CosmosError):
    """An object-store or copy problem; the message names the URI or key."""


def is_s3(uri: str | os.PathLike | None) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ("bucket", "a/b") (prefix without surrounding slashes)."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r}: missing bucket name (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def endpoint_url() -> str | None:
    """The S3 endpoint boto3 will use from the environment (None = AWS)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client():
    """A boto3 S3 client configured only from the standard AWS environment."""
    import boto3
    from botocore.config import Config

    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}) \
        if endpoint_url() else Config(retries={"max_attempts": 5, "mode": "standard"})
    # No endpoint_url argument on purpose: boto3 reads AWS_ENDPOINT_URL(_S3) itself. A fresh session
    # (not boto3's cached default one) so the current environment is what counts.
    return boto3.session.Session().client("s3", config=cfg)


def safe_relative_key(key: str, prefix: str) -> PurePosixPath:
    """The part of ``key`` below ``prefix`` as a relative path; refuses keys that escape the folder."""
    rel = key[len(prefix):] if prefix and key.startswith(prefix) else key
    rel = rel.lstrip("/") if prefix else rel
    path = PurePosixPath(rel)
    if not rel or rel.startswith("/") or path.is_absolute() or ".." in path.parts or "\\" in rel \
            or (len(rel) > 1 and rel[1] == ":"):
        raise StorageError(f"refusing S3 key {key!r}: it would be written outside the download folder")
    return path


def _wrap(exc: Exception, what: str) -> StorageError:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{what}: no AWS credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return StorageError(f"{what}: {err.get('Code', 'error')} {err.get('Message', '')}".rstrip())
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{what}: {exc} (endpoint {endpoint_url() or 'AWS default'})")
    return StorageError(f"{what}: {type(exc).__name__}: {exc}")


def list_objects(uri: str) -> list[tuple[str, int]]:
    """(key, size) of every object below ``s3://bucket/prefix`` (treated as a folder)."""
    bucket, prefix = split_s3(uri)
    client = s3_client()
    out: list[tuple[str, int]] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
        for page in pages:
            for obj in page.get("Contents", []):
                out.append((obj["Key"], int(obj["Size"])))
    except Exception as exc:
        raise _wrap(exc, f"listing {uri}") from None
    return out


def download(uri: str, dest_dir: str | Path) -> Path:
    """Copy every object below ``uri`` into ``dest_dir`` (keys relative to the prefix); returns it.

    A local path is copied instead (same contract, so callers need not branch). Every key is
    checked before anything is written, so a hostile listing writes nothing.
    """
    dest = Path(dest_dir)
    if not is_s3(uri):
        return copy_tree(Path(uri), dest)
    bucket, prefix = split_s3(uri)
    objects = [(k, s) for k, s in list_objects(uri) if not k.endswith("/")]  # skip folder markers
    if not objects:
        raise StorageError(f"{uri}: no objects found under this prefix")
    plan = [(key, size, dest.joinpath(*safe_relative_key(key, prefix).parts)) for key, size in objects]
    root = dest.resolve()
    for key, _, target in plan:  # belt and braces against odd keys on odd filesystems
        if root not in target.resolve().parents:
            raise StorageError(f"refusing S3 key {key!r}: it would be written outside {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    client = s3_client()
    todo = [(k, s, t) for k, s, t in plan if not (t.is_file() and t.stat().st_size == s)]
    log.info("download %s -> %s: %d object(s), %d already present", uri, dest, len(plan), len(plan) - len(todo))
    for key, _, target in progress(todo, desc="download", unit="file"):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            client.download_file(bucket, key, str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise _wrap(exc, f"downloading s3://{bucket}/{key}") from None
        tmp.replace(target)
    return dest


def upload(local_dir: str | Path, uri: str) -> None:
    """Copy every file below ``local_dir`` to ``s3://bucket/prefix/<relative path>`` (or a local dir).

    Hidden temporary files (``.name.part``) are skipped; objects already there with the same size
    are not sent again.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise StorageError(f"{src}: upload source is not a directory")
    if not is_s3(uri):
        copy_tree(src, Path(uri))
        return
    bucket, prefix = split_s3(uri)
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and not p.name.endswith(".part")]
    existing = dict(list_objects(uri))
    client = s3_client()
    todo = []
    for p in files:
        key = "/".join(filter(None, [prefix, p.relative_to(src).as_posix()]))
        if existing.get(key) != p.stat().st_size:
            todo.append((p, key))
    log.info("upload %s -> %s: %d file(s), %d already present", src, uri, len(files), len(files) - len(todo))
    for p, key in progress(todo, desc="upload", unit="file"):
        try:
            client.upload_file(str(p), bucket, key)
        except Exception as exc:
            raise _wrap(exc, f"uploading {p} to s3://{bucket}/{key}") from None


def copy_tree(src: Path, dest: Path) -> Path:
    """Copy a local folder (resumable: same-size files are skipped). Copying onto itself is a no-op."""
    src, dest = Path(src), Path(dest)
    if not src.exists():
        raise StorageError(f"{src}: does not exist")
    if not src.is_dir():
        raise StorageError(f"{src}: is not a directory")
    if src.resolve() == dest.resolve():
        return dest
    if dest.resolve() in src.resolve().parents or src.resolve() in dest.resolve().parents:
        raise StorageError(f"cannot copy {src} into {dest}: one folder contains the other")
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        target = dest / rel
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.is_file() and target.stat().st_size == p.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(p, tmp)
        tmp.replace(target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest
