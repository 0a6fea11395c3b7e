"""The KServe model behind ``cosmos serve``: a registered (or local) COSMOS segmenter.

Loading resolves the model with :func:`cosmos.segmentation.registry.resolve_model` (the same
code as ``cosmos predict``) and reads every fold's checkpoint once, so a broken model fails at
start-up, not on the first request. Prediction writes the request's scans to a temporary folder
and calls :func:`cosmos.segmentation.registry.segment_files` with the model's saved config: the
labels are the very numbers ``cosmos predict`` writes for the same files.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cosmos.errors import CosmosError
from cosmos.serving._kserve import kserve
from cosmos.serving.codec import RequestError, Scan, scans_from_v1, scans_from_v2, v1_response, v2_response, write_scans

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig

log = logging.getLogger(__name__)


class CosmosSegmenterModel(kserve.Model):
    """nnU-Net fold ensemble as a ``kserve.Model`` (v1 and v2 over REST).

    ``ready`` stays False until :meth:`load` has finished, so ``/v2/health/ready`` and the
    Kubernetes readiness probe hold traffic back while the registry download runs.
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
    ):
        super().__init__(name)
        self.reference = reference
        self.tracking_uri = tracking_uri
        self.fallback_cfg = fallback_cfg
        self.overrides = list(overrides)
        self.mirroring = mirroring
        self.max_bytes = max_bytes
        self.version: str | None = None
        self.fold_dirs: list[Path] = []
        self.cfg: CosmosConfig | None = None  # set by load(), with ready
        self.load_error: str | None = None
        self._lock = threading.Lock()  # one prediction at a time: each already uses every core
        self._home = Path(tempfile.mkdtemp(prefix="cosmos-serve-"))

    # ------------------------------------------------------------------ loading
    def load(self) -> bool:
        from cosmos.config import load_config
        from cosmos.segmentation.inference import load_folds
        from cosmos.segmentation.registry import resolve_model

        resolved = resolve_model(self.reference, self.tracking_uri, dst_dir=self._home / "model")
        cfg = resolved.cfg if resolved.cfg is not None else (self.fallback_cfg or load_config("tiny"))
        if resolved.cfg is not None and self.overrides:
            cfg = cfg.with_overrides(self.overrides)
        load_folds(resolved.fold_dirs)  # every checkpoint readable, all folds from one plan
        import nnunetv2.inference.predict_from_raw_data  # noqa: F401  (imported now, not by the first request)

        self.fold_dirs, self.cfg, self.version = resolved.fold_dirs, cfg, resolved.version
        log.info(
            "serving %s as %r%s (%d folds)",
            self.reference,
            self.name,
            f" version {self.version}" if self.version else "",
            len(self.fold_dirs),
        )
        self.ready = True
        return True

    def stop(self) -> None:
        """KServe's unload (server shutdown): the downloaded model and request folders go too."""
        super().stop()
        shutil.rmtree(self._home, ignore_errors=True)

    # ------------------------------------------------------------------ metadata
    def get_input_types(self) -> list[dict]:
        return [
            {
                "name": "scan",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {"content": "base64 of a 3D hrT2 .nii/.nii.gz file, or an s3:// URI"},
            }
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
            }
        ]

    # ------------------------------------------------------------------ inference
    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ):
        is_v2 = isinstance(payload, kserve.InferRequest)
        scans = scans_from_v2(payload) if is_v2 else scans_from_v1(payload)
        # nnU-Net blocks for seconds: run it off the event loop so health checks keep answering
        labels = await asyncio.get_running_loop().run_in_executor(None, self.segment, scans)
        if is_v2:
            return v2_response(self.name, self.version, labels, payload.id)
        return v1_response(labels)

    def segment(self, scans: Sequence[Scan]) -> list[bytes]:
        """Label files (bytes of ``.nii.gz``) for ``scans``, in order."""
        from cosmos.segmentation.registry import collect_nifti_inputs, segment_files

        if not self.ready or self.cfg is None:
            raise CosmosError(f"model {self.name} is not loaded yet")
        with tempfile.TemporaryDirectory(prefix="request-", dir=self._home) as tmp:
            files = write_scans(scans, Path(tmp) / "in", self.max_bytes)
            try:
                collect_nifti_inputs(files)  # not NIfTI, 2D/4D, corrupt: the reader's one-line reasons
            except CosmosError as exc:
                raise RequestError(_client_message(str(exc), files)) from None
            with self._lock:
                try:
                    outputs = segment_files(
                        self.fold_dirs, files, Path(tmp) / "out", self.cfg, mirroring=self.mirroring
                    )
                except CosmosError as exc:
                    raise kserve.errors.InferenceError(_client_message(str(exc), files)) from None
            return [p.read_bytes() for p in outputs]


def _client_message(message: str, files: Sequence[Path]) -> str:
    """Server paths mean nothing to the client: name the scan by its position instead."""
    for i, f in enumerate(files):
        message = message.replace(str(f), f"scan {i}")
    return " ".join(message.split())
