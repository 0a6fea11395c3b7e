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

Bounded waits: every S3 call has a connect and a read timeout and is retried a bounded number of
times with exponential backoff, each retry logged as it happens ("retrying s3://b/k (2/3): read
timeout"). botocore's own retries are off, so the bound is ours: with the defaults an endpoint that
accepts connections and never answers fails in under 60 s (:func:`S3Settings.worst_case_seconds`).
Settings come from ``COSMOS_S3_CONNECT_TIMEOUT``, ``COSMOS_S3_READ_TIMEOUT`` and
``COSMOS_S3_MAX_ATTEMPTS`` (seconds / count), or from :func:`configure` (the config's values).

Fingerprints (:func:`fingerprint`): names, sizes and mtimes of a local folder, or keys, sizes and
ETags under an ``s3://`` prefix, so a stage cache keyed on them sees data edited in place.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, TypeVar

from cosmos.errors import CosmosError
from cosmos.logs import progress

log = logging.getLogger(__name__)


class StorageError(CosmosError):
    """An object-store or copy problem; the message names the URI or key."""


T = TypeVar("T")


@dataclass(frozen=True)
class S3Settings:
    """Timeouts (seconds) and the retry bound for every S3 call."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_attempts: int = 3  # tries per call, the first included
    backoff: float = 1.0  # sleep before retry k: backoff * 2**(k-1), capped at 8 s

    def delay(self, attempt: int) -> float:
        return min(self.backoff * 2 ** (attempt - 1), 8.0)

    def worst_case_seconds(self) -> float:
        """Longest one call can take against an endpoint that accepts and never answers (or never accepts)."""
        waits = sum(self.delay(k) for k in range(1, self.max_attempts))
        return self.max_attempts * (self.connect_timeout + self.read_timeout) + waits


_ENV = {
    "connect_timeout": "COSMOS_S3_CONNECT_TIMEOUT",
    "read_timeout": "COSMOS_S3_READ_TIMEOUT",
    "max_attempts": "COSMOS_S3_MAX_ATTEMPTS",
}
_configured: dict[str, Any] = {}


def configure(**values: Any) -> None:
    """Set S3 timeouts/attempts for this process (e.g. from the run's config); None leaves one as is."""
    for key, value in values.items():
        if key not in _ENV and key != "backoff":
            raise StorageError(f"unknown S3 setting {key!r} (known: {sorted(_ENV)} and backoff)")
        if value is not None:
            _configured[key] = value


def s3_settings() -> S3Settings:
    """Defaults, then the environment, then :func:`configure`; each value checked."""
    settings = S3Settings()
    for key, env in _ENV.items():
        text = os.environ.get(env, "").strip()
        raw: Any = _configured.get(key, text or None)
        if raw is None:
            continue
        try:
            value = int(raw) if key == "max_attempts" else float(raw)
        except (TypeError, ValueError):
            raise StorageError(f"{env}={raw!r}: expected a number") from None
        if value <= 0:
            raise StorageError(f"{env}={raw!r}: must be positive")
        change: dict[str, Any] = {key: value}  # key names an S3Settings field; value parsed for it just above
        settings = replace(settings, **change)
    if "backoff" in _configured:
        settings = replace(settings, backoff=float(_configured["backoff"]))
    return settings


def is_s3(uri: str | os.PathLike | None) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ("bucket", "a/b") (prefix without surrounding slashes)."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r}: missing bucket name (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def endpoint_url() -> str | None:
    """The S3 endpoint boto3 will use from the environment (None = AWS)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client(settings: S3Settings | None = None):
    """A boto3 S3 client from the standard AWS environment, with our timeouts and no hidden retries."""
    import boto3
    from botocore.config import Config

    st = settings or s3_settings()
    kwargs: dict[str, Any] = dict(
        connect_timeout=st.connect_timeout, read_timeout=st.read_timeout, retries={"total_max_attempts": 1}
    )  # retries are ours (logged, bounded)
    if endpoint_url():
        kwargs["s3"] = {"addressing_style": "path"}
    # No endpoint_url argument on purpose: boto3 reads AWS_ENDPOINT_URL(_S3) itself. A fresh session
    # (not boto3's cached default one) so the current environment is what counts.
    return boto3.session.Session().client("s3", config=Config(**kwargs))


_RETRY_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}


def _transient(exc: BaseException) -> str | None:
    """A short reason when ``exc`` is worth retrying (timeouts, dropped connections, 5xx), else None."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, ReadTimeoutError):
        return "read timeout"
    if isinstance(exc, ConnectTimeoutError):
        return "connect timeout"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot connect to {endpoint_url() or 'the S3 endpoint'}"
    if isinstance(exc, (ConnectionClosedError, ResponseStreamingError)):
        return "connection dropped"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _RETRY_CODES or status in _RETRY_CODES:
            return f"{code or status} {err.get('Message', '')}".strip()
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return type(exc).__name__
    return None


def with_retry(what: str, fn: Callable[[], T], settings: S3Settings | None = None) -> T:
    """``fn()`` with a bounded, logged retry on transient errors; anything else at once as StorageError.

    ``what`` names the object (``s3://bucket/key``) in the retry log and in the final error.
    """
    st = settings or s3_settings()
    for attempt in range(1, st.max_attempts + 1):
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            reason = _transient(exc)
            if reason is None:
                raise _wrap(exc, what) from None
            if attempt >= st.max_attempts:
                raise StorageError(
                    f"{what}: gave up after {st.max_attempts} attempt(s): {reason} "
                    f"(endpoint {endpoint_url() or 'AWS default'}; timeouts: connect "
                    f"{st.connect_timeout:g} s, read {st.read_timeout:g} s)"
                ) from None
            delay = st.delay(attempt)
            log.warning("retrying %s (%d/%d): %s", what, attempt + 1, st.max_attempts, reason)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def safe_relative_key(key: str, prefix: str) -> PurePosixPath:
    """The part of ``key`` below ``prefix`` as a relative path; refuses keys that escape the folder."""
    rel = key[len(prefix) :] if prefix and key.startswith(prefix) else key
    rel = rel.lstrip("/") if prefix else rel
    path = PurePosixPath(rel)
    if (
        not rel
        or rel.startswith("/")
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in rel
        or (len(rel) > 1 and rel[1] == ":")
    ):
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


def list_entries(uri: str) -> list[dict[str, Any]]:
    """``{"key", "size", "etag"}`` of every object below ``s3://bucket/prefix`` (treated as a folder)."""
    bucket, prefix = split_s3(uri)
    client = s3_client()
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:  # one retried call per page, so a hang mid-listing is bounded too
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
        if token:
            kwargs["ContinuationToken"] = token
        page = with_retry(f"listing {uri}", functools.partial(client.list_objects_v2, **kwargs))
        for obj in page.get("Contents", []):
            out.append({"key": obj["Key"], "size": int(obj["Size"]), "etag": str(obj.get("ETag", "")).strip('"')})
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if not token:
            return out


def list_objects(uri: str) -> list[tuple[str, int]]:
    """(key, size) of every object below ``s3://bucket/prefix`` (treated as a folder)."""
    return [(e["key"], e["size"]) for e in list_entries(uri)]


def _get_object(client, bucket: str, key: str, target: Path) -> None:
    """One GET streamed to ``target``; the read timeout applies to every chunk."""
    resp = client.get_object(Bucket=bucket, Key=key)
    body = resp["Body"]
    try:
        with open(target, "wb") as fh:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                fh.write(chunk)
    finally:
        body.close()


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
            with_retry(f"s3://{bucket}/{key}", functools.partial(_get_object, client, bucket, key, tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
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
        with_retry(f"s3://{bucket}/{key}", functools.partial(_put_file, client, p, bucket, key))


def _put_file(client, path: Path, bucket: str, key: str) -> None:
    """PUT one file: a single request below 64 MB, else boto3's multipart transfer (no threads)."""
    if path.stat().st_size < 64 * 1024**2:
        with open(path, "rb") as fh:
            client.put_object(Bucket=bucket, Key=key, Body=fh)
        return
    from boto3.s3.transfer import TransferConfig

    client.upload_file(str(path), bucket, key, Config=TransferConfig(use_threads=False))


def _link_problem(p: Path) -> str | None:
    """Why ``p`` cannot be followed: a dangling link or a symlink loop (None when it can)."""
    try:
        p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            return f"dangling symlink (points to {os.readlink(p)}, which does not exist)"
        return "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _walk(src: Path) -> list[Path]:
    """Every entry below ``src`` (links followed once; loops and dangling links are StorageErrors)."""
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            raise StorageError(f"{folder}: symlink loop (this folder contains itself)")
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            raise StorageError(f"{folder}: cannot list ({exc.strerror or exc})") from None
        for p in entries:
            why = _link_problem(p)
            if why:
                raise StorageError(f"{p}: {why}")
            out.append(p)
            if p.is_dir():
                visit(p)

    visit(src)
    return out


def copy_tree(src: Path, dest: Path) -> Path:
    """Copy a local folder (resumable: same-size files are skipped). Copying onto itself is a no-op.

    Symlinks are followed; a symlink loop or a dangling link is one StorageError naming it.
    """
    src, dest = Path(src), Path(dest)
    why = _link_problem(src)
    if why:
        raise StorageError(f"{src}: {why}")
    if not src.is_dir():
        raise StorageError(f"{src}: is not a directory")
    if dest.exists() and not dest.is_dir():
        raise StorageError(f"{dest}: exists and is not a directory")
    if src.resolve() == dest.resolve():
        return dest
    if dest.resolve() in src.resolve().parents or src.resolve() in dest.resolve().parents:
        raise StorageError(f"cannot copy {src} into {dest}: one folder contains the other")
    for p in _walk(src):
        rel = p.relative_to(src)
        target = dest / rel
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if not stat.S_ISREG(p.stat().st_mode):
            raise StorageError(f"{p}: not a regular file (a device, socket or pipe)")
        if target.is_file() and target.stat().st_size == p.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            shutil.copyfile(p, tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"{p}: cannot copy to {target} ({exc.strerror or exc})") from None
        tmp.replace(target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def fingerprint(uri: str | os.PathLike | None) -> str:
    """``uri#<16 hex>`` that changes when the data does, without reading file contents.

    Local: relative names, sizes and mtimes (ns) of every file below the folder (links followed).
    ``s3://``: keys, sizes and ETags under the prefix (one listing). ``""``/None: "" (the phantom,
    whose parameters are keyed separately). Why not contents: hashing a full crossMoDA set on every
    run would cost minutes; an in-place edit changes the mtime (local) or the ETag (S3).
    """
    if uri is None or str(uri).strip() == "":
        return ""
    text = str(uri)
    h = hashlib.sha256()
    if is_s3(text):
        _, prefix = split_s3(text)
        for e in sorted(list_entries(text), key=lambda e: e["key"]):
            rel = e["key"][len(prefix) :].lstrip("/") if prefix else e["key"]
            h.update(f"{rel}\0{e['size']}\0{e['etag']}\n".encode())
        return f"{text}#{h.hexdigest()[:16]}"
    root = Path(text)
    why = _link_problem(root)
    if why == "does not exist":  # the stage that reads it says so, naming the path
        return f"{text}#missing"
    if why:
        raise StorageError(f"{root}: {why}")
    if root.is_file():
        st = root.stat()
        h.update(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"{text}#{h.hexdigest()[:16]}"
    for p in _walk(root):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"{text}#{h.hexdigest()[:16]}"
