"""The KServe model behind ``cosmos serve``: a registered (or local) COSMOS segmenter, kept warm.

Loading resolves the model with :func:`cosmos.segmentation.registry.resolve_model` (the same code
as ``cosmos predict``), reads every fold's weights once and builds nnU-Net's predictor
(:class:`cosmos.serving.warm.WarmSegmenter`); each request then only checks its scans and runs the
network. The per-scan code is ``cosmos predict``'s own
(:func:`cosmos.segmentation.inference.predict_case`), so the labels are the very numbers
``cosmos predict`` writes for the same files, and the measurements are its
``<case>_measurements.json`` (:func:`cosmos.segmentation.inference.case_measurements`).

What a request's scans must pass before the network sees them, each failure a 4xx with one line
naming the scan by its place in the request (never a server path): the body and every
decompressed scan under ``--max-mb`` (413; a gzip is inflated as a stream, :mod:`.limits`); a
readable 3D NIfTI (or a zip of one DICOM series, read by :mod:`cosmos.data.dicom`); the geometry
check ``cosmos predict`` and ``validate`` use (:func:`cosmos.data.nifti.geometry_problems`:
pixdim vs sform, zero or implausible voxels, shear); and the image checks of
:func:`cosmos.data.nifti.check_usable` (NaN, constant, a label map instead of a scan). A scan whose
intensity profile looks like ceT1 is segmented with a warning
(:func:`cosmos.data.modality.modality_warning`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cosmos.errors import CosmosError
from cosmos.serving._kserve import kserve
from cosmos.serving.codec import (
    RequestError,
    Scan,
    Segmented,
    scans_from_v1,
    scans_from_v2,
    v1_response,
    v2_response,
    write_scans,
)

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig
    from cosmos.data.nifti import Volume
    from cosmos.serving.warm import WarmSegmenter

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


class ClientError(RequestError):
    """A :class:`RequestError` with the metrics' error ``kind`` (``geometry``, ``bad_gzip``, ...)."""

    def __init__(self, reason: str, status: int = 400, kind: str | None = None):
        super().__init__(reason, status)
        self.kind = kind


@dataclass
class _Prepared:
    """One request scan, checked: the file the segmenter reads, its volume and its warnings."""

    path: Path
    volume: Volume
    warnings: list[str] = field(default_factory=list)


class CosmosSegmenterModel(kserve.Model):
    """nnU-Net fold ensemble as a ``kserve.Model`` (v1 and v2 over REST), loaded once.

    ``ready`` stays False until :meth:`load` has finished, so ``/v2/health/ready`` and the
    Kubernetes readiness probe hold traffic back while the registry download runs.
    ``max_concurrent``: requests segmented at once (one warm predictor each); the server answers
    503 above it (:mod:`cosmos.serving.server`).
    """

    def __init__(
        self,
        name: str,
        reference: str,
        tracking_uri: str | None = None,
        fallback_cfg: CosmosConfig | None = None,
        overrides: Sequence[str] = (),
        mirroring: bool | None = None,
        max_bytes: int = 256 * 2**20,
        max_concurrent: int = 2,
    ):
        super().__init__(name)
        self.reference = reference
        self.tracking_uri = tracking_uri
        self.fallback_cfg = fallback_cfg
        self.overrides = list(overrides)
        self.mirroring = mirroring
        self.max_bytes = max_bytes
        self.max_concurrent = max(1, int(max_concurrent))
        self.version: str | None = None
        self.fold_dirs: list[Path] = []
        self.cfg: CosmosConfig | None = None  # set by load(), with ready
        self.segmenter: WarmSegmenter | None = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._home = Path(tempfile.mkdtemp(prefix="cosmos-serve-"))
        # Predictions run here, off the event loop (health checks keep answering), one thread per
        # admitted request: the server admits at most max_concurrent, the pool has as many predictors.
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="cosmos-predict")

    # ------------------------------------------------------------------ loading
    def load(self) -> bool:
        from cosmos.config import load_config
        from cosmos.segmentation.registry import resolve_model
        from cosmos.serving.warm import WarmSegmenter

        t0 = time.perf_counter()
        resolved = resolve_model(self.reference, self.tracking_uri, dst_dir=self._home / "model")
        cfg = resolved.cfg if resolved.cfg is not None else (self.fallback_cfg or load_config("tiny"))
        if resolved.cfg is not None and self.overrides:
            cfg = cfg.with_overrides(self.overrides)
        self.segmenter = WarmSegmenter(
            resolved.fold_dirs,
            cfg,
            mirroring=self.mirroring,
            workers=self.max_concurrent,
            probabilities=_measurements_available(),
        )
        self.fold_dirs, self.cfg, self.version = resolved.fold_dirs, cfg, resolved.version
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "serving %s as %r%s (%d folds in memory, %d predictor(s), %.1f s to load)",
            self.reference,
            self.name,
            f" version {self.version}" if self.version else "",
            len(self.fold_dirs),
            self.max_concurrent,
            self.load_seconds,
        )
        self.ready = True
        return True

    def stop(self) -> None:
        """KServe's unload (server shutdown): the predictors, downloaded model and request folders go."""
        super().stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.segmenter is not None:
            self.segmenter.close()
        shutil.rmtree(self._home, ignore_errors=True)

    # ------------------------------------------------------------------ metadata
    def get_input_types(self) -> list[dict]:
        return [
            {
                "name": "scan",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {"content": "base64 of a 3D hrT2 .nii/.nii.gz file, or an s3:// URI"},
            },
            {
                "name": "dicom_zip",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {"content": "base64 of a zip holding the DICOM files of one MR series (optional)"},
            },
        ]

    def get_output_types(self) -> list[dict]:
        return [
            {
                "name": "label",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {
                    "content": "base64 of a uint8 .nii.gz label (0 background, 1 VS, 2 cochlea) on the scan's grid"
                },
            },
            {
                "name": "measurements",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {"content": "JSON: the label's measurements (cosmos predict's _measurements.json)"},
            },
        ]

    # ------------------------------------------------------------------ inference
    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ):
        is_v2 = isinstance(payload, kserve.InferRequest)
        scans = scans_from_v2(payload) if is_v2 else scans_from_v1(payload)
        wheres = _wheres(payload, is_v2)
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self.segment, scans, wheres)
        if is_v2:
            return v2_response(self.name, self.version, results, payload.id)
        return v1_response(results)

    def segment(self, scans: Sequence[Scan], wheres: Sequence[str] | None = None) -> list[Segmented]:
        """Each scan checked, segmented, measured; in order. ``wheres`` name the scans for the client."""
        if not self.ready or self.segmenter is None:
            raise CosmosError(f"model {self.name} is not loaded yet")
        names = list(wheres) if wheres is not None else [f"scan {i}" for i in range(len(scans))]
        with tempfile.TemporaryDirectory(prefix="request-", dir=self._home) as tmp:
            folder = Path(tmp)
            try:
                files = write_scans(scans, folder / "in", self.max_bytes)
                prepared = [self._prepare(f, i, where, folder) for i, (f, where) in enumerate(zip(files, names))]
            except RequestError as exc:
                raise _retold(exc, folder, names) from None
            results = []
            for i, scan in enumerate(prepared):
                try:
                    case = self.segmenter.segment(scan.path, scan.volume)
                except RequestError as exc:
                    raise _retold(exc, folder, names) from None
                except CosmosError as exc:
                    message = _scrub(str(exc), folder, names)
                    if str(exc).startswith(str(scan.path)):  # about this scan: nnU-Net could not read it
                        raise ClientError(message, 400, "unreadable_image") from None
                    # the model's fault, not the client's: 500, still one line
                    raise kserve.errors.InferenceError(message) from None
                results.append(self._answer(case, folder / "out" / f"scan_{i}_seg.nii.gz", scan.warnings))
            return results

    def _prepare(self, path: Path, i: int, where: str, folder: Path) -> _Prepared:
        """Decompress (capped), read and check one written scan; a DICOM zip becomes a NIfTI first."""
        from cosmos.data import nifti

        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == _ZIP_MAGIC:
            path = self._dicom_to_nifti(path, i, where, folder)
        elif head[:2] == _GZIP_MAGIC:
            from cosmos.serving.limits import inflate_capped

            try:
                inflated = inflate_capped(path, folder / "in" / f"scan_{i}.nii", self.max_bytes, where)
            except RequestError as exc:
                raise ClientError(exc.reason, exc.status, "too_large" if exc.status == 413 else "bad_gzip") from None
            path.unlink()
            path = inflated
        try:
            vol = nifti.load(path, cap=self.max_bytes)
        except nifti.NiftiError as exc:
            text = str(exc)
            if "refusing to read it" in text:  # the header claims more voxels than the cap: nothing was read
                text = text.replace(f"${nifti.MAX_BYTES_ENV}", "cosmos serve --max-mb")
                raise ClientError(text, 413, "too_large") from None
            raise ClientError(text, 400, "not_nifti") from None
        header = vol.file_header if vol.file_header is not None else vol.header
        geometry = nifti.geometry_problems(header, vol.affine)
        if geometry:
            raise ClientError(f"{path}: " + "; ".join(geometry), 400, "geometry")
        try:
            nifti.check_usable(path, vol)  # NaN/inf, constant, a label map (cosmos.data.modality)
        except nifti.NiftiError as exc:
            raise ClientError(str(exc), 400, "modality" if "label map" in str(exc) else "unusable_image") from None
        return _Prepared(path, vol, _modality_warnings(vol, where))

    def _dicom_to_nifti(self, path: Path, i: int, where: str, folder: Path) -> Path:
        """A zip of one DICOM series -> NIfTI on the series' grid (``cosmos.data.dicom``'s checks)."""
        try:
            from cosmos.data import dicom
        except ImportError:  # pragma: no cover - the module ships with cosmos
            raise ClientError(f"{where}: a zip (DICOM) is not supported by this server", 415, "dicom") from None
        try:
            image, _info = dicom.read_series_zip(path, self.max_bytes)
        except dicom.DicomError as exc:
            text = str(exc)
            status = 413 if "over the limit" in text or "more than" in text else 400
            raise ClientError(text.replace(str(path), where), status, "dicom") from None
        out = dicom.write_nifti(image, folder / "in" / f"scan_{i}_dicom.nii.gz")
        path.unlink()
        return out

    def _answer(self, case, target: Path, warnings: list[str]) -> Segmented:
        """The label file as ``cosmos predict`` writes it (same header), and its measurements."""
        from cosmos.data import nifti

        nifti.save(target, case.labels, like=case.volume, label=True)
        measurements = None
        if _measurements_available():
            from cosmos.segmentation.inference import case_measurements

            measurements = case_measurements(case).to_dict()
        return Segmented(target.read_bytes(), measurements, list(warnings))


def _measurements_available() -> bool:
    """Whether this cosmos computes per-case measurements (``inference.case_measurements``)."""
    from cosmos.segmentation import inference

    return hasattr(inference, "case_measurements")


def _modality_warnings(vol: Volume, where: str) -> list[str]:
    """The content-based modality check (:func:`cosmos.data.modality.modality_warning`): a warning,
    never a refusal (a heuristic; see that module)."""
    try:
        from cosmos.data.modality import modality_warning
    except ImportError:  # pragma: no cover - an older cosmos.data without the check
        return []
    warning = modality_warning(vol.data, vol.spacing)
    if warning:
        log.warning("%s: %s", where, warning)
    return [warning] if warning else []


def _wheres(payload: Any, is_v2: bool) -> list[str]:
    """How the client calls each scan: ``input 'scan'[0]`` (v2) or ``instances[0]`` (v1)."""
    from cosmos.serving.codec import _flatten

    if is_v2:
        return [f"input {t.name!r}[{i}]" for t in payload.inputs for i, _ in enumerate(_flatten(t.data))]
    items = payload.get("instances", payload.get("inputs")) if isinstance(payload, dict) else None
    return [f"instances[{i}]" for i in range(len(items or []))]


def _scrub(message: str, folder: Path, names: Sequence[str]) -> str:
    """Server paths mean nothing to the client (and are not its business): each request file is
    named by its place in the request, anything else under the server's folders by a placeholder."""
    for i, where in enumerate(names):
        for stem in (f"scan_{i}_dicom.nii.gz", f"scan_{i}.nii.gz", f"scan_{i}.nii", f".scan_{i}.part"):
            message = message.replace(str(folder / "in" / stem), where)
    message = message.replace(str(folder), "<request>").replace(str(folder.parent), "<server>")
    message = message.replace(tempfile.gettempdir(), "<tmp>")
    return " ".join(message.split())


def _retold(exc: RequestError, folder: Path, names: Sequence[str]) -> ClientError:
    """``exc`` with its message scrubbed of server paths, keeping its status and kind."""
    return ClientError(_scrub(exc.reason, folder, names), exc.status, getattr(exc, "kind", None))
