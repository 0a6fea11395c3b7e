"""The warm segmenter behind ``cosmos serve``: every fold's weights and nnU-Net's predictor in memory.

Why: the first server read the folds from disk and built nnU-Net's predictor on every request, the
way a ``cosmos predict`` process does once. Here :class:`WarmSegmenter` does that once at start-up
and each request only runs the network. The per-scan work is
:func:`cosmos.segmentation.inference.predict_case`, the very function ``cosmos predict`` calls, with
a predictor from :func:`~cosmos.segmentation.inference.predictor_for` (same tiling, mirroring and
post-processing), so the labels are ``cosmos predict``'s voxel for voxel (tests/test_serving.py).

Concurrency: nnU-Net's predictor swaps each fold's weights into one network
(``load_state_dict``) while it predicts, so one predictor must never serve two requests at once.
The segmenter keeps a pool of ``workers`` predictors (the fold weights themselves are shared, only
the network modules are copied) and each request borrows one; the server admits at most
``workers`` requests (``--max-concurrent``), so a request never waits for a predictor.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig
    from cosmos.data.nifti import Volume
    from cosmos.segmentation.inference import CasePrediction

log = logging.getLogger(__name__)


class WarmSegmenter:
    """A fold ensemble loaded once; :meth:`segment` runs ``cosmos predict``'s per-scan code on it."""

    def __init__(
        self,
        fold_dirs: Sequence[Path],
        cfg: CosmosConfig,
        *,
        mirroring: bool | None = None,
        workers: int = 1,
        probabilities: bool = False,
    ):
        from cosmos.cpu import resolve_threads
        from cosmos.data import roi
        from cosmos.segmentation import environment
        from cosmos.segmentation.inference import load_folds, needs_probabilities, predictor_for

        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        seg_cfg = cfg.segmentation
        self.cfg = cfg
        self.fold_dirs = [Path(d) for d in fold_dirs]
        self.mirroring = seg_cfg.mirroring if mirroring is None else bool(mirroring)
        # The softmax is resampled only when something reads it: the `confident` VS rule, or the
        # measurements' confidence figure (``probabilities``); the labels are the same either way.
        self.need_probabilities = bool(probabilities) or needs_probabilities(seg_cfg)
        self.roi = roi.model_of(self.fold_dirs[0]) if self.fold_dirs else None
        # nnU-Net's environment (thread count, compile flag, pool sizes) as `cosmos predict` sets it
        # around its loop, held for the server's life: it is process-wide and a server owns its process.
        self._env = contextlib.ExitStack()
        self._env.enter_context(
            environment.nnunet_env(
                num_processes=seg_cfg.num_processes,
                compile=seg_cfg.compile,
                torch_threads=resolve_threads(seg_cfg.torch_threads),
            )
        )
        try:
            self.ensemble = load_folds(self.fold_dirs)
            self.device = environment.resolve_device(seg_cfg.device)
            self._pool: queue.Queue = queue.Queue()
            for _ in range(workers):
                self._pool.put(predictor_for(self.ensemble, seg_cfg, self.device, self.mirroring))
        except BaseException:
            self._env.close()
            raise
        self.workers = workers

    def segment(self, image: Path, volume: Volume | None = None) -> CasePrediction:
        """``image`` segmented as ``cosmos predict`` would (ROI crop round-trip included).

        ``volume``: ``image`` already loaded with ``nifti.load_image`` (saves a second read). Returns
        labels, raw labels and probabilities on ``image``'s grid; for a model trained on ROI crops
        the labels are put back on ``image``'s grid and no probabilities are returned.
        """
        from cosmos.segmentation.inference import predict_case

        predictor = self._pool.get()
        try:
            if self.roi is None or not self.roi.enabled:
                return predict_case(predictor, image, self.cfg.segmentation, self.need_probabilities, volume)
            return self._segment_cropped(predictor, image, volume)
        finally:
            self._pool.put(predictor)

    def _segment_cropped(self, predictor, image: Path, volume: Volume | None) -> CasePrediction:
        """The ROI round-trip of ``segment_files``: crop as trained, predict the crop, uncrop."""
        from cosmos.data import nifti, roi
        from cosmos.evaluation.measurements import vs_confidence
        from cosmos.segmentation.inference import predict_case

        assert self.roi is not None
        with tempfile.TemporaryDirectory(prefix="roi-", dir=image.parent) as tmp:
            crops = roi.crop_inputs([image], self.roi, Path(tmp))
            crop, box = crops[Path(image)]
            case = predict_case(predictor, crop, self.cfg.segmentation, self.need_probabilities)
        if case.probabilities is not None:  # taken on the crop, where the softmax is
            case.confidence = vs_confidence(case.probabilities, case.labels)
        original = volume if volume is not None else nifti.load(image)
        case.labels = roi.uncrop(case.labels, box, original.shape)
        case.raw = roi.uncrop(case.raw, box, original.shape)
        # The softmax stays on the crop: put back on a whole head it would cost C x the scan in
        # float32; the confidence figure was taken from it above.
        case.probabilities = None
        case.volume = original
        return case

    def close(self) -> None:
        """Restore the environment taken at start (idempotent)."""
        self._env.close()
