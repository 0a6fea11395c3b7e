"""MLflow runs for self-training rounds and their nnU-Net folds, robust enough for parallel folds.

Run tree (one MLflow experiment, ``cfg.tracking.experiment``)::

    round run  "round_0-teacher"   tags cosmos.round=0, params = the segmentation config
      fold run "round_0-fold_0"    tag mlflow.parentRunId = round run; per-epoch metrics + progress.png
      fold run "round_0-fold_1"
    round run  "round_1-student_1" ...

Why the ``mlflow.parentRunId`` tag rather than ``mlflow.start_run(nested=True)``: in Kubeflow every
fold is its own pod (its own process), so the parent run is not "active" where the fold trains.
The tag is exactly what MLflow's nested runs write, so the UI shows the same tree either way.

Why everything goes through :class:`mlflow.MlflowClient` with explicit run ids: no global
"active run" state, so two folds in one process (or a fold inside a round run) cannot clash.

Why retries: on the embedded SQLite store two fold processes writing at once can hit
"database is locked". Every call retries with exponential backoff; if it still fails the problem
is logged as a WARNING and training continues -- a metric that could not be logged must never
fail a fold that took hours. After one call has exhausted its retries, that logger stops talking
to MLflow (one warning), so a dead tracking server cannot stall every epoch.

Hook used by :func:`cosmos.segmentation.training.train_fold`::

    with fold_run(parent_run_id, fold, tracking_uri=tracking_uri, fold_dir=out_dir) as on_epoch_end:
        trainer.epoch_end_callbacks.append(on_epoch_end)   # called as on_epoch_end(epoch, metrics)
        trainer.run_training()
    # on exit: progress.png (found under fold_dir) is logged as an artifact; the run is FINISHED,
    # or FAILED / KILLED when the block raised.

``metrics`` may be nnU-Net's whole ``trainer.logger.my_fold_dict`` (lists per epoch: the entry
for ``epoch`` -- else the last one -- is used) or a dict of this epoch's scalars; see
:func:`epoch_metrics` for the names logged.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from cosmos.data.layout import LABELS

log = logging.getLogger(__name__)

T = TypeVar("T")

TAG_ROUND = "cosmos.round"
TAG_FOLD = "cosmos.fold"
TAG_KIND = "cosmos.run_kind"  # round | fold
TAG_PARENT = "mlflow.parentRunId"

RETRY_ATTEMPTS = int(os.environ.get("COSMOS_MLFLOW_RETRIES", "6"))
RETRY_BASE_DELAY_S = 0.2


class LoggingUnavailable(Exception):
    """Internal: an MLflow call failed after every retry."""


def with_retry(
    fn: Callable[..., T],
    *args: Any,
    what: str,
    attempts: int | None = None,
    base_delay: float | None = None,
    **kwargs: Any,
) -> T:
    """Call ``fn`` with exponential backoff (plus jitter) on any exception, e.g. SQLite's
    ``OperationalError: database is locked`` wrapped in an ``MlflowException``.

    Raises :class:`LoggingUnavailable` after the last attempt; callers decide whether that is fatal.
    """
    attempts = RETRY_ATTEMPTS if attempts is None else attempts
    base_delay = RETRY_BASE_DELAY_S if base_delay is None else base_delay
    last: BaseException | None = None
    for attempt in range(max(1, attempts)):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any backend error is retried, then reported
            last = exc
            if attempt + 1 < attempts:
                delay = base_delay * (2**attempt) * (1 + random.random())
                log.debug("MLflow %s failed (%s); retry %d in %.2f s", what, exc, attempt + 1, delay)
                time.sleep(delay)
    raise LoggingUnavailable(f"MLflow {what} failed after {attempts} attempts: {type(last).__name__}: {last}")


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def active_tracking_uri(tracking_uri: str | None = None) -> str | None:
    """The explicit URI, else ``$MLFLOW_TRACKING_URI``, else one set via ``mlflow.set_tracking_uri``;
    None means "no tracking configured" (we never silently create ./mlruns or ./mlflow.db)."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    try:
        from mlflow.tracking._tracking_service import utils

        if utils.is_tracking_uri_set():
            return utils.get_tracking_uri()
    except Exception:  # pragma: no cover - private API moved
        pass
    return None


def _experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(experiment)
    except Exception:  # created concurrently by a parallel fold
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


# ------------------------------------------------------------------------------------------ metrics
def _at_epoch(value: Any, epoch: int | None) -> Any:
    """A per-epoch list (nnU-Net's my_fold_dict) -> this epoch's entry; scalars pass through."""
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        if epoch is not None and 0 <= epoch < len(value):
            return value[epoch]
        return value[-1]
    return value


def _number(value: Any) -> float | None:
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalar
        try:
            value = value.item()
        except Exception:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


_NAMES = {
    "train_losses": "train_loss",
    "train_loss": "train_loss",
    "val_losses": "val_loss",
    "val_loss": "val_loss",
    "lrs": "lr",
    "lr": "lr",
    "learning_rate": "lr",
    "mean_fg_dice": "pseudo_dice",
    "ema_fg_dice": "ema_pseudo_dice",
}


def epoch_metrics(metrics: Mapping[str, Any], epoch: int | None = None) -> dict[str, float]:
    """nnU-Net's per-epoch values under stable MLflow names.

    train_loss, val_loss, lr, pseudo_dice (nnU-Net's mean foreground pseudo-Dice),
    ema_pseudo_dice (its moving average, the checkpoint criterion), pseudo_dice_VS and
    pseudo_dice_cochlea (per class, from ``dice_per_class_or_region``), epoch_time_s.
    These are the names ``nnUNetTrainerCosmosBudget.epoch_metrics`` already uses.
    Other numeric scalars pass through under their own name; non-numeric values are ignored.
    """
    out: dict[str, float] = {}
    for key, raw in metrics.items():
        if key in ("epoch_start_timestamps", "epoch_end_timestamps", "dice_per_class_or_region", "epoch"):
            continue
        val = _number(_at_epoch(raw, epoch))
        if val is not None:
            out[_NAMES.get(key, key)] = val
    per_class = metrics.get("dice_per_class_or_region")
    if per_class is not None:
        # my_fold_dict holds one list per epoch; a callback may also pass this epoch's list directly.
        if isinstance(per_class, (list, tuple)) and per_class and isinstance(per_class[0], (list, tuple)):
            per_class = _at_epoch(per_class, epoch)
        for i, v in enumerate(per_class or []):
            val = _number(v)
            if val is not None:
                out[f"pseudo_dice_{LABELS.get(i + 1, f'class_{i + 1}')}"] = val
    start = _number(_at_epoch(metrics.get("epoch_start_timestamps"), epoch))
    end = _number(_at_epoch(metrics.get("epoch_end_timestamps"), epoch))
    if start is not None and end is not None and end >= start:
        out["epoch_time_s"] = end - start
    return out


# ------------------------------------------------------------------------------------------ logger
class RunLogger:
    """Logs to one MLflow run by id; every call is retried and never raises (warns instead).

    Calling the logger as ``logger(epoch, metrics)`` logs one epoch (the trainer hook form).
    A logger with ``run_id=None`` is a no-op (tracking not configured).
    """

    def __init__(self, client, run_id: str | None, label: str = "run"):
        self.client = client
        self.run_id = run_id
        self.label = label
        self.disabled = run_id is None
        self.failures = 0

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, fatal: bool = True, **kwargs: Any) -> Any:
        """``fatal``: a failure turns this logger off (the store is unreachable or locked for good);
        non-fatal calls (params, whose values may legitimately clash on a resume) only warn."""
        if self.disabled:
            return None
        try:
            return with_retry(fn, *args, what=f"{what} ({self.label})", attempts=None if fatal else 2, **kwargs)
        except LoggingUnavailable as exc:
            self.failures += 1
            if fatal:
                self.disabled = True
                log.warning("%s; MLflow logging for %s is now off, training continues", exc, self.label)
            else:
                log.warning("%s", exc)
            return None

    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        self.log_epoch(epoch, metrics)

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        try:
            values = epoch_metrics(metrics, epoch)
        except Exception as exc:  # a malformed dict must not stop training either
            log.warning("could not read epoch %s metrics for %s: %s", epoch, self.label, exc)
            return
        self.log_metrics(values, step=int(epoch))

    def log_metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        if self.disabled or not values:
            return
        ts = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), ts, int(step or 0))
            for k, v in values.items()
            if v is not None and not (isinstance(v, float) and math.isinf(v))
        ]
        self._call("log_batch", self.client.log_batch, self.run_id, metrics=batch, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if self.disabled or not params:
            return
        from cosmos.secrets import redact_params

        items = [Param(str(k), str(v)[:6000]) for k, v in redact_params(params).items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch param limit
            self._call(
                "log params",
                self.client.log_batch,
                self.run_id,
                params=items[i : i + 100],
                synchronous=True,
                fatal=False,
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.disabled:
            return
        for k, v in tags.items():
            self._call(f"set tag {k}", self.client.set_tag, self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.disabled and Path(path).exists():
            self._call(
                f"log artifact {Path(path).name}", self.client.log_artifact, self.run_id, str(path), artifact_path
            )

    def log_dict(self, data: Any, artifact_file: str) -> None:
        if self.disabled:
            return
        self._call(f"log {artifact_file}", self.client.log_dict, self.run_id, data, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        if self.disabled:
            return
        self._call(f"end run ({status})", self.client.set_terminated, self.run_id, status)


def _noop_logger(label: str) -> RunLogger:
    return RunLogger(None, None, label)


# ------------------------------------------------------------------------------------------ runs
def start_round_run(
    round_index: int,
    experiment: str = "cosmos",
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
) -> RunLogger:
    """Open (or, with ``resume_run_id``, re-open) the parent run of one self-training round.

    Returns a :class:`RunLogger` whose ``run_id`` is what fold tasks get as ``parent_run_id``
    (None when tracking is not configured or unreachable: folds then train without MLflow).
    ``parent_run_id`` nests the round under a pipeline-level run, if there is one.
    """
    uri = active_tracking_uri(tracking_uri)
    label = f"round {round_index}"
    if uri is None:
        log.info("MLflow tracking not configured; %s is not tracked", label)
        return _noop_logger(label)
    client = _client(uri)
    name = run_name or (
        f"round_{round_index}-teacher" if round_index == 0 else f"round_{round_index}-student_{round_index}"
    )
    all_tags = {TAG_ROUND: str(round_index), TAG_KIND: "round", **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    try:
        if resume_run_id:
            run = with_retry(client.get_run, resume_run_id, what="get round run")
            with_retry(client.update_run, resume_run_id, status="RUNNING", what="reopen round run")
            logger = RunLogger(client, run.info.run_id, label)
            logger.set_tags(all_tags)
            return logger
        exp_id = with_retry(_experiment_id, client, experiment, what="get experiment")
        run = with_retry(client.create_run, exp_id, tags=all_tags, run_name=name, what="create round run")
    except LoggingUnavailable as exc:
        log.warning("%s; %s is not tracked", exc, label)
        return _noop_logger(label)
    logger = RunLogger(client, run.info.run_id, label)
    if params:
        logger.log_params(params)
    return logger


def _find_fold_run(client, experiment_id: str, parent_run_id: str, fold: int):
    """An earlier run of the same fold under the same parent (a killed fold that resumes)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_FOLD}` = '{fold}'",
        max_results=1,
    )
    return runs[0] if runs else None


def _open_fold_run(
    client, parent_run_id: str | None, fold: int, round_index: int | None, experiment: str | None
) -> tuple[str, int | None, bool]:
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        exp_id = parent.info.experiment_id
        if round_index is None and TAG_ROUND in parent.data.tags:
            round_index = int(parent.data.tags[TAG_ROUND])
        previous = _find_fold_run(client, exp_id, parent_run_id, fold)
        if previous is not None:
            client.update_run(previous.info.run_id, status="RUNNING")
            return previous.info.run_id, round_index, True
    else:
        exp_id = _experiment_id(client, experiment or "cosmos")
    tags = {TAG_FOLD: str(fold), TAG_KIND: "fold"}
    if round_index is not None:
        tags[TAG_ROUND] = str(round_index)
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
    prefix = f"round_{round_index}-" if round_index is not None else ""
    run = client.create_run(exp_id, tags=tags, run_name=f"{prefix}fold_{fold}")
    return run.info.run_id, round_index, False


@contextmanager
def fold_run(
    parent_run_id: str | None,
    fold: int,
    round_index: int | None = None,
    tracking_uri: str | None = None,
    *,
    experiment: str | None = None,
    fold_dir: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    cfg: Any = None,
) -> Iterator[RunLogger]:
    """A fold's MLflow run, nested under ``parent_run_id`` via the ``mlflow.parentRunId`` tag.

    Yields a :class:`RunLogger`; use it as the trainer's epoch-end callback ``(epoch, metrics)``.
    ``round_index`` defaults to the parent run's ``cosmos.round`` tag. A re-run of a killed fold
    re-opens its earlier run under the same parent, so the curves continue (steps = epochs).
    On exit, ``progress.png`` under ``fold_dir`` is logged as an artifact and the run ends
    FINISHED (FAILED or KILLED if the block raised; the exception propagates).
    Without a tracking URI (argument, $MLFLOW_TRACKING_URI or mlflow.set_tracking_uri) or when
    MLflow is unreachable, the logger is a no-op and training proceeds. ``cfg`` (a CosmosConfig)
    names the experiment when there is no parent run, and its segmentation section is logged as
    the fold run's params.
    """
    if cfg is not None:
        experiment = experiment or cfg.tracking.experiment
        params = {**cfg.flat("segmentation"), "seed": cfg.seed, "profile": cfg.profile, "fold": fold, **(params or {})}
    label = f"fold {fold}" + (f" of round {round_index}" if round_index is not None else "")
    uri = active_tracking_uri(tracking_uri)
    if uri is None:
        log.info("MLflow tracking not configured; %s is not tracked", label)
        logger = _noop_logger(label)
    else:
        client = _client(uri)
        try:
            run_id, round_index, resumed = with_retry(
                _open_fold_run, client, parent_run_id, fold, round_index, experiment, what="open fold run"
            )
            if resumed:  # params were logged by the first attempt (re-logging a changed value fails)
                params = None
            label = f"fold {fold}" + (f" of round {round_index}" if round_index is not None else "")
            logger = RunLogger(client, run_id, label)
            log.info("MLflow run %s for %s (parent %s)", run_id, label, parent_run_id or "-")
        except LoggingUnavailable as exc:
            log.warning("%s; %s trains without MLflow", exc, label)
            logger = _noop_logger(label)
    if params:
        logger.log_params(params)
    status = "FINISHED"
    try:
        yield logger
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if fold_dir is not None and not logger.disabled:
            for png in sorted(Path(fold_dir).rglob("progress.png"))[:1]:
                logger.log_artifact(png)
        logger.end(status)
