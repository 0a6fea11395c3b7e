"""Request and response bodies of ``cosmos serve``: NIfTI scans (or DICOM zips) in, labels and measurements out.

Open Inference Protocol (v2)::

    POST /v2/models/cosmos-segmenter/infer
    {"inputs": [{"name": "scan", "shape": [1], "datatype": "BYTES", "data": ["<base64 .nii.gz>"]}]}
    -> {"model_name": ..., "model_version": ..., "outputs": [{"name": "label", "shape": [1],
        "datatype": "BYTES", "data": ["<base64 label .nii.gz>"]}, {"name": "measurements", "shape": [1],
        "datatype": "BYTES", "data": ["{\"vs_volume_mm3\": ...}"]}]}

v1::

    POST /v1/models/cosmos-segmenter:predict
    {"instances": [{"b64": "<base64 .nii.gz>"}]}
    -> {"predictions": [{"b64": "<base64 label .nii.gz>", "measurements": {...}, "warnings": []}]}

Each element may instead be an ``s3://bucket/key.nii.gz`` URI (v1: ``{"uri": "s3://..."}`` or the
plain string), fetched with the server's AWS environment. Local paths are refused on purpose: a
client must not make the server read its own files. Several elements segment several scans, and
the labels come back in the same order, each on its scan's grid.

A DICOM series goes in as a zip of its files, base64 like a NIfTI: v1 ``{"dicom_zip": "<base64 zip>"}``,
v2 a BYTES input named ``dicom_zip`` (a zip sent as ``scan`` is recognised by its magic too). The
label comes back as NIfTI on the series' grid (what ``cosmos.data.dicom.write_nifti`` makes of it).

Beside each label the answer holds its measurements (:mod:`cosmos.evaluation.measurements`: VS and
cochlea volumes, VS diameter, components removed, confidence) and the scan's warnings (an intensity
profile that looks like ceT1): v1 ``"measurements"``/``"warnings"`` in each prediction object; v2
a second output ``measurements`` (BYTES, one JSON object per scan) and a response parameter
``warnings`` (a JSON list of lists, one per scan; absent when no scan has one).

Why base64 of the file and not a voxel tensor: the file carries the header (affine, sform/qform),
which the label must share exactly; a bare tensor would lose the geometry.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
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
    scans = []
    for i, v in enumerate(items):
        if isinstance(v, dict) and set(v) == {"dicom_zip"}:  # a zipped series: base64 (or s3://) like a NIfTI
            v = v["dicom_zip"]
        scans.append(scan_from_value(v, f"instances[{i}]"))
    return scans


# ------------------------------------------------------------------------------------ responses
@dataclass
class Segmented:
    """One scan's answer: the label file (``.nii.gz`` bytes), its measurements, its warnings."""

    label: bytes
    measurements: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def encode_label(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def v2_response(
    model_name: str, model_version: str | None, results: Sequence[Segmented], request_id: str | None = None
):
    """The v2 ``InferResponse``: BYTES outputs ``label`` (base64 label file) and ``measurements`` (JSON
    text), one element per scan; the scans' warnings as the response parameter ``warnings``."""
    from cosmos.serving._kserve import kserve

    n = len(results)
    outputs = [
        kserve.InferOutput(name="label", shape=[n], datatype="BYTES", data=[encode_label(r.label) for r in results]),
        kserve.InferOutput(
            name="measurements",
            shape=[n],
            datatype="BYTES",
            data=[json.dumps(r.measurements, sort_keys=True) for r in results],
            parameters={"content_type": "application/json"},
        ),
    ]
    warnings = [list(r.warnings) for r in results]
    return kserve.InferResponse(
        response_id=request_id or str(uuid.uuid4()),
        model_name=model_name,
        model_version=model_version,
        infer_outputs=outputs,
        parameters={"warnings": json.dumps(warnings)} if any(warnings) else None,
    )


def v1_response(results: Sequence[Segmented]) -> dict:
    return {
        "predictions": [
            {"b64": encode_label(r.label), "measurements": r.measurements, "warnings": list(r.warnings)}
            for r in results
        ]
    }
