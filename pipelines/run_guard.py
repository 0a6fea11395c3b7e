"""What ``cosmos run`` wraps around ``pipeline(**args)``: one-line failures, a full log file, no orphans.

Why: a stage that failed on bad input used to end ``cosmos run`` with ~60 lines (the kfp executor's
traceback, 25 "Skipping task" lines, then "Inner task failed: 'ingest-validate'"), and the problem
named the work-dir copy. Now, while the pipeline runs:

* every line the tasks print goes to ``OUT/logs/tasks.log`` unchanged (the full log stays);
* the console shows a view (:mod:`pipelines.console`: a live table on a terminal, one line per stage
  start and end elsewhere), and every stage's lines also go to ``OUT/logs/<stage>.log``; ``--verbose``
  shows the full stream instead;
* the failing stage's ``fail`` event (:mod:`cosmos.events`, written by ``cosmos.resume``) is
  remembered, and a failed run raises its problem as the CosmosError, so the LAST lines printed are
  the problem, naming the user's own path or ``s3://`` key (work-dir copies are mapped back);
* :mod:`cosmos.process_guard` ends every task process when ``cosmos run`` dies, however it dies;
* kfp.local's task cache is cleared when the input data changed since the last run
  (:func:`forget_stale_cache`): that cache keys a task on its parameters, and a folder or ``s3://``
  prefix edited in place has the same parameters, so the edited data was never re-validated.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TextIO

from cosmos import events
from cosmos.logs import swap_stream

if TYPE_CHECKING:
    from pipelines.console.plan import PlannedTask
    from pipelines.console.router import StageRouter
    from pipelines.console.views import View

log = logging.getLogger(__name__)


class TaskOutput(io.TextIOBase):
    """A stdout replacement: every line to the log file, and to the router's view or the console.

    With a ``router`` (:class:`pipelines.console.router.StageRouter`) the console gets nothing from
    here: the router's view decides what a person sees; without one (``--verbose``) every line is
    shown. Either way the tasks' ``fail`` events are kept for :meth:`failure_message`. Lines are split
    per writing thread, because kfp.local prints parallel tasks' output from their own threads (one
    ``print`` is two writes).
    """

    def __init__(self, console: TextIO, log_file: Path, router: StageRouter | None = None):
        super().__init__()
        self._console = console
        self._router = router
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(log_file, "a", encoding="utf-8", errors="replace")
        self._file.write(f"===== cosmos run {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
        self._bufs: dict[int, str] = {}
        self._lock = threading.Lock()
        self.failures: list[events.Event] = []  # the tasks' fail events, in order
        self.log_file = log_file

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._file.closed:  # a late line from a thread after the run: straight to the console
            self._console.write(text)
            return len(text)
        tid = threading.get_ident()
        with self._lock:
            buf = self._bufs.get(tid, "") + text
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                self._line(line, tid)
            self._bufs[tid] = buf
        return len(text)

    def write_log_only(self, line: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(line.rstrip("\n") + "\n")

    def _line(self, raw: str, thread: int | None = None) -> None:
        self._file.write(raw + "\n")
        event = events.parse_line(raw)
        if event is not None and event.kind == "fail":
            self.failures.append(event)
        if self._router is not None:
            self._router.feed(raw, thread)
        else:
            self._console.write(raw + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._file.closed:
                return
            for tid, buf in list(self._bufs.items()):
                if buf:
                    self._line(buf, tid)
            self._bufs.clear()
            self._file.flush()
        if self._router is None:
            self._console.flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if not self._file.closed:
                self._file.close()
        super().close()

    def failure_message(
        self, work_root: Path | None = None, data_uri: str = "", val_labels_uri: str = ""
    ) -> str | None:
        """The first failed stage's problem (all its lines), in the user's paths; None if no stage said."""
        if not self.failures:
            return None
        return user_paths(self.failures[0].problem(), work_root, data_uri, val_labels_uri)


def user_paths(text: str, work_root: Path | None, data_uri: str, val_labels_uri: str = "") -> str:
    """Replace the ingest stage's work-dir copy (``WORK/ingest-<key>/data``) with the user's own path."""
    if work_root is None or not data_uri:
        return text
    copy = re.escape(str(work_root)) + r"/ingest-[0-9a-f]+/data"
    if val_labels_uri:
        text = re.sub(
            copy + r"/target_validation_labels(?=/|\b)", val_labels_uri.rstrip("/").replace("\\", "\\\\"), text
        )
    return re.sub(copy + r"(?=/|\b)", data_uri.rstrip("/").replace("\\", "\\\\"), text)


INPUTS_RECORD = ".cosmos_inputs.json"


def forget_stale_cache(out: Path, data_uri: str, val_labels_uri: str = "", cache_root: Path | None = None) -> bool:
    """Clear kfp.local's cache when the data's fingerprint changed since the last run; True if cleared.

    Fingerprints (``cosmos.data.storage.fingerprint``): names, sizes and mtimes locally; keys, sizes
    and ETags on ``s3://``. Clearing costs little: every stage still finds its finished work by key
    (``OUT/work/<stage>-<key>``), and only stages whose inputs really changed compute again.
    """
    from cosmos.data.storage import fingerprint

    out = Path(out)
    cache = Path(cache_root) if cache_root is not None else out / "kfp_cache"
    record = out / INPUTS_RECORD
    now = {"data": fingerprint(data_uri), "val_labels": fingerprint(val_labels_uri)}
    try:
        before = json.loads(record.read_text()) if record.is_file() else None
    except ValueError:
        before = None
    entries = sorted(cache.glob("*.json")) if cache.is_dir() else []
    cleared = bool(entries) and before != now
    if cleared:
        for entry in entries:
            entry.unlink(missing_ok=True)
        log.info(
            "input data changed since the last run in %s: cleared kfp.local's task cache (%d entries); "
            "finished stages whose inputs are unchanged are still reused",
            out,
            len(entries),
        )
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps(now))
    tmp.replace(record)
    return cleared


@contextmanager
def supervise(
    out: Path,
    work_root: Path | None = None,
    data_uri: str = "",
    val_labels_uri: str = "",
    verbose: bool = False,
    view: View | None = None,
    plan: list[PlannedTask] | None = None,
) -> Iterator[TaskOutput]:
    """Wrap ``pipeline(**args)``: see the module docstring. A failed stage becomes one CosmosError.

    ``view``: a :mod:`pipelines.console` view (live table or plain stage lines) that replaces the
    console stream; without one, a plain view on ``sys.stdout`` unless ``verbose`` (the full stream).
    ``plan``: the pipeline's tasks (:func:`pipelines.console.plan.plan_tasks`), its waiting rows.
    """
    from cosmos import process_guard
    from cosmos.errors import CosmosError

    out = Path(out)
    forget_stale_cache(out, data_uri, val_labels_uri)
    work = work_root or out / "work"
    router = None
    if view is None and not verbose:
        from pipelines.console.views import PlainView

        view = PlainView(sys.stdout)
    if view is not None:
        from pipelines.console.router import StageRouter

        router = StageRouter(
            out / "logs", view, plan or [], humanize=lambda text: user_paths(text, work, data_uri, val_labels_uri)
        )
    guard = process_guard.start()
    output = TaskOutput(sys.stdout, out / "logs" / "tasks.log", router=router)
    saved = sys.stdout
    sys.stdout = output  # type: ignore[assignment]
    streams: list[tuple[logging.StreamHandler, object]] = []
    if router is not None:
        # kfp.local logs cache hits and skipped tasks (and, when its handler swap races, any of its lines) on
        # the root logger: the console handlers' lines go through the router. Only those: a capture handler
        # (pytest's) would feed every line twice.
        consoles = (sys.__stderr__, sys.__stdout__, sys.stderr, saved)
        for handler in logging.getLogger().handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and (getattr(handler, "_cosmos", False) or handler.stream in consoles)
            ):
                stream = router.log_stream(handler.stream)
                stream.tasks_log = output.write_log_only
                streams.append((handler, swap_stream(handler, stream)))
    ok: bool | None = None
    try:
        yield output
        ok = True
    except RuntimeError:
        ok = False
        output.flush()
        if router is not None:
            router.close(ok=False)
        message = output.failure_message(work, data_uri, val_labels_uri)
        if message is None:
            raise
        failed = [r for r in router.failed() if r.log_path] if router is not None else []
        if failed:  # the view named the stage's log already
            log.info("fix the cause and re-run the same command: finished stages are reused")
        else:
            log.info(
                "full task log: %s. Fix the cause and re-run the same command: finished stages are reused.",
                output.log_file,
            )
        raise CosmosError(message) from None
    finally:
        sys.stdout = saved
        output.flush()
        if router is not None:
            router.close(ok=ok)
        for handler, original in streams:
            swap_stream(handler, original)
        output.close()
        guard.stop()
