"""Scans given as bytes: base64 of a NIfTI file, the file's raw bytes, or an ``s3://`` URI.

Why this lives in the data layer and not in :mod:`cosmos.serving`: two front ends decode the same
scan values -- the MLflow pyfunc of a registered segmenter (:mod:`cosmos.segmentation.registry`,
``nifti`` column) and the KServe server (:mod:`cosmos.serving.codec`, v1/v2 request bodies). Both
need the same checks (a NIfTI header or gzip magic, base64, s3:// only -- never a local path) and
the same files on disk, and neither may depend on the other's stack; the segmentation layer must
not import the serving layer. :mod:`cosmos.serving.codec` re-exports these names.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cosmos.errors import CosmosError

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER_SIZES = (348, 540)  # NIfTI-1 / NIfTI-2 sizeof_hdr, either byte order


class RequestError(CosmosError):
    """A request the server refuses: ``status`` (4xx) and a one-line ``reason`` for the client."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Scan:
    """One scan of a request: the NIfTI file's bytes, or an ``s3://`` URI to fetch them from."""

    data: bytes | None = None
    uri: str | None = None


def _looks_like_nifti(raw: bytes) -> bool:
    if raw[:2] == _GZIP_MAGIC:
        return True
    return len(raw) >= 4 and (
        int.from_bytes(raw[:4], "little") in _NIFTI_HEADER_SIZES
        or int.from_bytes(raw[:4], "big") in _NIFTI_HEADER_SIZES
    )


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}: neither base64 of a NIfTI file nor an s3:// URI") from None


def scan_from_value(value: Any, where: str) -> Scan:
    """A JSON element (or a binary-extension element) -> :class:`Scan`; one-line error otherwise."""
    if isinstance(value, dict):  # v1: {"b64": ...} (TF-Serving's binary convention) or {"uri": ...}
        if "b64" in value:
            value = value["b64"]
        elif "uri" in value:
            value = value["uri"]
            if not (isinstance(value, str) and value.startswith("s3://")):
                raise RequestError(f"{where}: uri must be an s3:// URI (the server reads no local paths)")
        else:
            raise RequestError(
                f'{where}: expected {{"b64": <base64 NIfTI>}} or {{"uri": "s3://..."}}, got keys {sorted(value)}'
            )
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if _looks_like_nifti(raw):  # the v2 binary extension delivers the file's bytes as they are
            return Scan(data=raw)
        try:
            value = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RequestError(f"{where}: not a NIfTI file (no gzip or NIfTI header)") from None
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a base64 string or an s3:// URI, got {type(value).__name__}")
    if value.startswith("s3://"):
        return Scan(uri=value)
    if not value.strip():
        raise RequestError(f"{where}: empty")
    return Scan(data=_b64(value, where))


def _fetch_s3(uri: str, target: Path, max_bytes: int) -> bytes:
    from cosmos.data.storage import StorageError, s3_client, split_s3

    try:
        bucket, key = split_s3(uri)
    except StorageError as exc:
        raise RequestError(str(exc)) from None
    if not key:
        raise RequestError(f"{uri}: names a bucket, not a NIfTI object")
    client = s3_client()
    try:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        if size > max_bytes:
            raise RequestError(
                f"{uri}: {size / 1e6:.1f} MB exceeds the server's cap of {max_bytes / 1e6:.1f} MB", status=413
            )
        client.download_file(bucket, key, str(target))
    except RequestError:
        raise
    except Exception as exc:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise RequestError(f"{uri}: no such object", status=404) from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise RequestError(f"{uri}: access denied to the server's credentials", status=403) from None
        raise CosmosError(f"{uri}: cannot fetch it ({type(exc).__name__}: {exc})") from None
    with open(target, "rb") as fh:
        return fh.read(4)


def write_scans(scans: Sequence[Scan], folder: Path, max_bytes: int) -> list[Path]:
    """Write each scan as ``scan_<i>.nii.gz`` (``.nii`` when not gzipped) under ``folder``.

    The name follows the content, not the client: SimpleITK (nnU-Net's reader) picks gzip by suffix.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, scan in enumerate(scans):
        tmp = folder / f".scan_{i}.part"
        if scan.uri is not None:
            head = _fetch_s3(scan.uri, tmp, max_bytes)
        else:
            tmp.write_bytes(scan.data or b"")
            head = (scan.data or b"")[:4]
        path = folder / (f"scan_{i}.nii.gz" if head[:2] == _GZIP_MAGIC else f"scan_{i}.nii")
        tmp.replace(path)
        paths.append(path)
    return paths
