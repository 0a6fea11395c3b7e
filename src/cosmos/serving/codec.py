"""Request and response bodies of ``cosmos serve``: NIfTI scans in, label NIfTI files out.

Open Inference Protocol (v2)::

    POST /v2/models/cosmos-segmenter/infer
    {"inputs": [{"name": "scan", "shape": [1], "datatype": "BYTES", "data": ["<base64 .nii.gz>"]}]}
    -> {"model_name": ..., "model_version": ..., "outputs": [{"name": "label", "shape": [1],
        "datatype": "BYTES", "data": ["<base64 label .nii.gz>"]}]}

v1::

    POST /v1/models/cosmos-segmenter:predict
    {"instances": [{"b64": "<base64 .nii.gz>"}]}  ->  {"predictions": [{"b64": "<base64 label .nii.gz>"}]}

Each element may instead be an ``s3://bucket/key.nii.gz`` URI (v1: ``{"uri": "s3://..."}`` or the
plain string), fetched with the server's AWS environment. Local paths are refused on purpose: a
client must not make the server read its own files. Several elements segment several scans, and
the labels come back in the same order, each on its scan's grid.

Why base64 of the file and not a voxel tensor: the file carries the header (affine, sform/qform),
which the label must share exactly; a bare tensor would lose the geometry.
"""

from __future__ import annotations

import base64
import binascii
import uuid
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


def _flatten(values: Any) -> list[Any]:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flatten(item)]
    if hasattr(values, "tolist") and not isinstance(values, (bytes, str)):
        return _flatten(values.tolist())
    return [values]


def scans_from_v2(request: Any) -> list[Scan]:
    """Every element of every BYTES input of a v2 ``InferRequest``, in order."""
    scans: list[Scan] = []
    for tensor in request.inputs:
        if tensor.datatype != "BYTES":
            raise RequestError(
                f"input {tensor.name!r}: datatype {tensor.datatype}; send the NIfTI file as BYTES "
                "(base64) or an s3:// URI"
            )
        for i, value in enumerate(_flatten(tensor.data)):
            scans.append(scan_from_value(value, f"input {tensor.name!r}[{i}]"))
    if not scans:
        raise RequestError("no scan in the request (expected a BYTES input holding base64 NIfTI or s3:// URIs)")
    return scans


def scans_from_v1(body: Any) -> list[Scan]:
    """``{"instances": [...]}`` -> scans (``inputs`` is accepted as KServe's v1 alias)."""
    if not isinstance(body, dict):
        raise RequestError('expected a JSON object with "instances"')
    items = body.get("instances", body.get("inputs"))
    if not isinstance(items, list) or not items:
        raise RequestError('expected "instances": a non-empty list of {"b64": <base64 NIfTI>} or s3:// URIs')
    return [scan_from_value(v, f"instances[{i}]") for i, v in enumerate(items)]


# ------------------------------------------------------------------------------------ to files
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


# ------------------------------------------------------------------------------------ responses
def encode_label(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def v2_response(model_name: str, model_version: str | None, labels: Sequence[bytes], request_id: str | None = None):
    """The v2 ``InferResponse``: one BYTES output ``label`` with a base64 label file per scan."""
    from cosmos.serving._kserve import kserve

    out = kserve.InferOutput(
        name="label", shape=[len(labels)], datatype="BYTES", data=[encode_label(b) for b in labels]
    )
    return kserve.InferResponse(
        response_id=request_id or str(uuid.uuid4()),
        model_name=model_name,
        model_version=model_version,
        infer_outputs=[out],
    )


def v1_response(labels: Sequence[bytes]) -> dict:
    return {"predictions": [{"b64": encode_label(b)} for b in labels]}
