"""Structured stage events: one JSON line where a stage starts, progresses, is reused, ends or fails.

Why: the console of ``cosmos run`` (``pipelines.console``) used to rebuild each stage's state by
matching regexes against the human log text (``stage X: start``, tqdm bars, nnU-Net's ``Epoch N``),
with the same patterns in three files; any change to a log line broke the view silently. Now the
places that know (``cosmos.resume.run_stage``, ``cosmos.logs.progress``, the nnU-Net trainer's
per-epoch hook) say it once, as data, and readers parse JSON.

Transport: one line ``@cosmos-event {json}`` written to the task's ``sys.stderr``, the stream its log
lines already use. Why that and not a file under the run's work root (``OUT/events.jsonl``):

* attribution. kfp.local reads each task's merged stdout+stderr and prints it through the parent's
  ``sys.stdout`` *in the thread that runs that task* (``kfp.local.subprocess_task_handler``); the
  console knows a thread's KFP task from kfp's ``Executing task`` line, so an event on that stream
  belongs to a known row of the view, even for ParallelFor iterations that share one task name. A
  shared file would carry only the stage name, which the view cannot map to its KFP task rows.
* order. The events sit between the stage's own log lines, so the per-stage log file is named at the
  stage's ``start`` and the ``fail`` event comes with the error it describes. (stderr, not stdout:
  Python block-buffers a piped stdout, which would reorder the events against the log lines.)
* one mechanism everywhere. On a cluster there is no shared work root, but the same lines land in the
  pod log, where Kubeflow shows them and any tool can ``grep '^@cosmos-event '`` them.

The prefix is fixed and cannot occur in a log line of ours (those start with a time stamp); a reader
looks for it anywhere in a line because a tqdm bar on the same stream ends its updates with ``\\r``,
not a newline, so an event may follow a bar's last update on one line. Writing costs one short line;
nothing is written for progress outside a stage (a ``cosmos predict`` in a terminal stays clean).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO, cast

PREFIX = "@cosmos-event "
VERSION = 1
KINDS = ("start", "progress", "end", "fail", "reused", "warning")
Kind = Literal["start", "progress", "end", "fail", "reused", "warning"]

# Seconds between two progress events of one loop. A pod log keeps tqdm's non-terminal cadence (10 s);
# a local run (pipelines.local_run) asks for 1 s, because its live view redraws twice a second.
INTERVAL_ENV = "COSMOS_EVENT_INTERVAL"
DEFAULT_INTERVAL_S = 10.0
MAX_MESSAGE = 8000  # characters of a message in one event (a dataset report can list thousands of files)


@dataclass(frozen=True)
class Event:
    """One thing a stage says about itself. Fields that do not apply to a kind stay None.

    ``done``/``total``/``unit``/``desc``: progress (``desc`` is the bar's label, e.g. ``phantom``);
    ``message``: a fail's problem (the exception's text) or a warning's line; ``user_error``: a fail
    caused by the input (a ``CosmosError``), as opposed to a crash; ``seconds``: an end's or fail's
    duration; ``work``: the stage's work directory (local runs).
    """

    stage: str
    kind: Kind
    ts: float
    done: int | None = None
    total: int | None = None
    unit: str | None = None
    desc: str | None = None
    message: str | None = None
    user_error: bool | None = None
    seconds: float | None = None
    work: str | None = None

    def to_line(self) -> str:
        """The event as it is written: the prefix and one JSON object, no newline."""
        data = {"v": VERSION, **{k: v for k, v in asdict(self).items() if v is not None}}
        return PREFIX + json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def problem(self) -> str:
        """A fail's problem in the words ``cosmos run`` ends with.

        ``stage X failed: <first line>`` plus the message's further lines, indented (a dataset report);
        for a crash (not a ``CosmosError``) ``a task failed: <Type>: <text>``, as Python's traceback ends.
        """
        lines = [x.strip() for x in (self.message or "").splitlines() if x.strip()] or ["(no message)"]
        head = f"stage {self.stage} failed: " if self.user_error is not False else "a task failed: "
        return head + "\n".join([lines[0], *(f"  {x}" for x in lines[1:])])


def parse_line(line: str) -> Event | None:
    """The event in one line of task output, or None (a line of ordinary text, or a damaged event).

    Why tolerant: the line comes from another process through a pipe; a torn or foreign line must
    never break the console, it just is not an event.
    """
    i = line.find(PREFIX)
    if i < 0:
        return None
    try:
        data = json.loads(line[i + len(PREFIX) :])
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") not in KINDS or not isinstance(data.get("stage"), str):
        return None
    try:
        return Event(
            stage=data["stage"],
            kind=cast(Kind, data["kind"]),
            ts=float(data.get("ts", 0.0)),
            done=_opt(int, data.get("done")),
            total=_opt(int, data.get("total")),
            unit=_opt(str, data.get("unit")),
            desc=_opt(str, data.get("desc")),
            message=_opt(str, data.get("message")),
            user_error=_opt(bool, data.get("user_error")),
            seconds=_opt(float, data.get("seconds")),
            work=_opt(str, data.get("work")),
        )
    except (TypeError, ValueError):
        return None


def _opt(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


# ------------------------------------------------------------------------------------ writing
_lock = threading.Lock()
_stage: str | None = None  # the stage this process is running (set by cosmos.resume.run_stage)


def emit(event: Event, stream: TextIO | None = None) -> None:
    """Write ``event`` as one line (default: the current ``sys.stderr``) and flush it.

    Never raises: a closed or broken stream must not fail the stage the event describes.
    """
    out = stream if stream is not None else sys.stderr
    line = event.to_line() + "\n"
    with _lock:
        try:
            out.write(line)
            out.flush()
        except (OSError, ValueError, AttributeError):
            pass


def stage_event(stage: str, kind: Kind, **fields: Any) -> Event:
    """Build and emit an event of ``stage`` (``message`` is capped at :data:`MAX_MESSAGE` characters)."""
    message = fields.get("message")
    if isinstance(message, str):
        from cosmos.secrets import redact  # an exception's text may hold a URI with its password

        message = redact(message)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + f"\n… ({len(message) - MAX_MESSAGE} more characters in the log)"
        fields["message"] = message
    event = Event(stage=stage, kind=kind, ts=time.time(), **fields)
    emit(event)
    return event


def current_stage() -> str | None:
    """The stage this process is running, if any (progress and warnings are only told inside one)."""
    return _stage


def enter_stage(stage: str | None) -> str | None:
    """Make ``stage`` the current one; returns the previous one (for :func:`enter_stage` on the way out)."""
    global _stage
    previous, _stage = _stage, stage
    return previous


def progress(desc: str, done: int, total: int, unit: str = "") -> None:
    """Tell the current stage's progress (``done`` of ``total`` ``unit``); nothing outside a stage."""
    stage = _stage
    if stage is None or total <= 0:
        return
    stage_event(stage, "progress", done=int(done), total=int(total), unit=unit, desc=desc)


def interval() -> float:
    """Seconds between two progress events of one loop (:data:`INTERVAL_ENV`, else 10)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL_S


class Throttle:
    """Lets a loop's progress through at most every :func:`interval` seconds, first and last always."""

    def __init__(self, clock: Any = time.monotonic):
        self._clock = clock
        self._every = interval()
        self._last: float | None = None

    def due(self, final: bool = False) -> bool:
        now = self._clock()
        if final or self._last is None or now - self._last >= self._every:
            self._last = now
            return True
        return False


class WarningRelay(logging.Handler):
    """A ``warning`` event for each WARNING record of the ``cosmos`` loggers during a stage.

    Why: the console shows a stage's warnings above its table (e.g. "validation Dice is 0"), and
    used to find them by matching ``WARNING cosmos...`` in the log text. Errors are not relayed: a
    failing stage says so with its ``fail`` event. Credentials are masked as on every other handler.
    """

    def __init__(self) -> None:
        from cosmos.secrets import RedactingFilter

        super().__init__(logging.WARNING)
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        stage = _stage
        if stage is None or record.levelno != logging.WARNING:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call: no event, no failure
            return
        stage_event(stage, "warning", message=message)
