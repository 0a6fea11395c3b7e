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
import uuid
from typing import Any, Sequence

# Decoding a scan value is shared with the registered model's pyfunc, hence in the data layer;
# these names stay importable from here.
from cosmos.data.scans import RequestError, Scan, scan_from_value
from cosmos.data.scans import write_scans as write_scans


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
