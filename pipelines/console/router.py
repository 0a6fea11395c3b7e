"""Task output in, per-stage state and log files out: the model behind every view of a run.

kfp.local streams each task's subprocess output back through ``sys.stdout`` (and, for its own
lines, the logging handlers) *in the thread that runs the task*. :class:`StageRouter` therefore
attributes a line to the task its thread is running (kfp's ``Executing task`` line, recognised in
:mod:`pipelines.console.kfp_lines`, binds a thread to a task), writes it to ``OUT/logs/<stage>.log``,
and updates the stage's row from the structured :mod:`cosmos.events` the task writes: ``start`` /
``reused`` name the stage (and its log file), ``progress`` drives the bar, ``fail`` gives the problem,
``warning`` becomes a note above the view. No human log text is parsed.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, TextIO

from cosmos import events
from pipelines.console import kfp_lines
from pipelines.console.plan import PlannedTask

if TYPE_CHECKING:
    from pipelines.console.base import View

STATES = ("waiting", "running", "done", "reused", "failed", "skipped")


@dataclass
class StageProgress:
    desc: str
    n: int
    total: int
    unit: str = ""


@dataclass
class Row:
    """One stage of the run: what the view shows and where its log goes."""

    task: str
    label: str
    parents: tuple[str, ...] = ()
    state: str = "waiting"
    stage: str | None = None  # cosmos.resume's stage name, once the task's start/reused event said it
    started: float | None = None
    ended: float | None = None
    progress: StageProgress | None = None
    problem: str | None = None
    log_path: Path | None = None
    reused_work: bool = False
    pending: list[str] = field(default_factory=list)  # lines before the log file is named
    file: TextIO | None = None

    def seconds(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    @property
    def name(self) -> str:
        return self.stage or self.task


@dataclass(frozen=True)
class _Note:
    """What the view is told once the router's lock is released."""

    kind: str  # "started", "finished" or "note"
    row: Row | None = None
    text: str = ""
    warning: bool = False


class StageRouter:
    """Attributes task output lines to stages: per-stage log files, states, progress; tells the view.

    Thread-safe: kfp.local runs ParallelFor iterations in threads and prints each task's output in
    the thread that runs it, so the calling thread identifies the task even when lines interleave.
    """

    def __init__(
        self,
        logs_dir: Path,
        view: View | None = None,
        plan: Iterable[PlannedTask] = (),
        humanize: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logs_dir = Path(logs_dir)
        self.view = view
        self.rows = [Row(p.task, p.label, p.parents) for p in plan]
        self._humanize = humanize or (lambda s: s)
        self._clock = clock
        self._lock = threading.RLock()
        self._by_thread: dict[int, Row] = {}
        self._used_names: set[str] = set()
        self.started_at = clock()
        self.closed = False
        if view is not None:
            view.attach(self)

    def now(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------ input
    def feed(self, raw: str, thread: int | None = None, passthrough: TextIO | None = None) -> None:
        """One line of output (no newline) from ``thread`` (default: the calling thread).

        ``passthrough``: where a line that belongs to no task (the main process's own log lines,
        arriving through a logging handler) would have gone; the view shows it as a note.
        """
        if self.closed:
            if passthrough is not None:
                passthrough.write(raw + "\n")
            return
        thread = threading.get_ident() if thread is None else thread
        line = kfp_lines.strip_ansi(raw).rstrip("\r")
        kfp = kfp_lines.parse(line)
        event = events.parse_line(line) if kfp is None else None
        notes: list[_Note] = []
        with self._lock:
            if kfp is not None and kfp.kind == "executing":
                row = self._claim(kfp.task)
                row.state, row.started, row.ended = "running", self._clock(), None
                self._by_thread[thread] = row
                notes.append(_Note("started", row))
            elif kfp is not None and kfp.kind == "cache_hit":
                row = self._claim(kfp.task)
                row.state, row.started = "reused", self._clock()
                row.ended = row.started
                notes.append(_Note("finished", row))
            elif kfp is not None and kfp.kind == "skipping":
                for row in self.rows:
                    if row.state == "waiting" and (row.task == kfp.task or kfp.task in row.parents):
                        row.state = "skipped"
            current = self._by_thread.get(thread)
            if current is not None:
                text = line if event is None else line[: line.find(events.PREFIX)].rstrip()
                if text.strip() or event is None:  # the event itself stays out of the stage log
                    self._write(current, text)
                if current.state == "running":
                    if kfp is not None and kfp.kind == "finished" and kfp.task == current.task:
                        self._end(current, kfp.succeeded)
                        notes.append(_Note("finished", current))
                    elif event is not None:
                        self._apply(current, event, notes)
            elif passthrough is not None and kfp is None and event is None and not kfp_lines.is_chrome(line):
                notes.append(_Note("note", text=raw))
        for note in notes:
            self._tell(note)

    def _claim(self, task: str) -> Row:
        for row in self.rows:
            if row.task == task and row.state == "waiting":
                return row
        row = Row(task, task)
        self.rows.append(row)
        return row

    def _apply(self, row: Row, event: events.Event, notes: list[_Note]) -> None:
        """Update a running ``row`` from one of its task's events.

        Notes for the view go to ``notes``: the view is told after the lock is released, because
        rich's refresh thread holds the console's lock while it asks for a snapshot (which takes ours).
        """
        if event.kind in ("start", "reused", "fail"):
            self._name(row, event.stage)
        if event.kind == "reused":
            row.reused_work = True
        elif event.kind == "progress" and event.total:
            row.progress = StageProgress(event.desc or "", event.done or 0, event.total, event.unit or "")
        elif event.kind == "end":
            row.progress = None
        elif event.kind == "fail" and row.problem is None:
            row.problem = self._humanize(event.problem()).splitlines()[0]
        elif event.kind == "warning" and event.message:
            notes.append(_Note("note", text=f"{row.name}: {event.message}", warning=True))

    def _end(self, row: Row, succeeded: bool) -> None:
        row.ended = self._clock()
        if succeeded:
            row.state = "reused" if row.reused_work else "done"
            row.progress = None
        else:
            row.state = "failed"
            row.problem = row.problem or "the task exited with an error"
        self._open(row)

    # ------------------------------------------------------------------ per-stage log files
    def _name(self, row: Row, stage: str) -> None:
        if row.stage is None:
            row.stage = stage
            self._open(row)

    def _open(self, row: Row) -> None:
        if row.file is not None:
            return
        base = re.sub(r"[^\w.-]+", "_", row.name) or "task"
        name, i = base, 2
        while name in self._used_names:
            name, i = f"{base}-{i}", i + 1
        self._used_names.add(name)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        row.log_path = self.logs_dir / f"{name}.log"
        row.file = open(row.log_path, "a", encoding="utf-8", errors="replace")
        row.file.write(f"===== cosmos run {time.strftime('%Y-%m-%d %H:%M:%S')}: task '{row.task}' =====\n")
        for line in row.pending:
            row.file.write(line + "\n")
        row.pending.clear()
        row.file.flush()

    def _write(self, row: Row, line: str) -> None:
        if row.file is None:
            row.pending.append(line)
        else:
            row.file.write(line + "\n")
            if row.state != "running":
                row.file.flush()

    # ------------------------------------------------------------------ output
    def _tell(self, note: _Note) -> None:
        if self.view is None:
            return
        if note.kind == "started" and note.row is not None:
            self.view.started(note.row)
        elif note.kind == "finished" and note.row is not None:
            self.view.finished(note.row)
        else:
            self.view.note(note.text, warning=note.warning)

    def log_stream(self, original: TextIO) -> RouterStream:
        """A stream for a logging handler: its lines go through :meth:`feed` (and ``tasks_log``)."""
        return RouterStream(self, original)

    def snapshot(self) -> tuple[list[Row], float]:
        with self._lock:
            return [Row(**{**r.__dict__, "pending": [], "file": None}) for r in self.rows], self._clock()

    def failed(self) -> list[Row]:
        with self._lock:
            return [r for r in self.rows if r.state == "failed"]

    def close(self, ok: bool | None = None) -> None:
        """End of the run: name every log file, close them, and let the view print its last frame.

        ``ok``: True after a successful pipeline (rows still waiting were skipped by a condition),
        False after a failure, None when unknown.
        """
        with self._lock:
            if self.closed:
                return
            for row in self.rows:
                if row.pending or (row.state in ("running", "failed") and row.file is None and row.started):
                    self._open(row)
                if row.state == "running":
                    row.state, row.ended = "failed", self._clock()
                    row.problem = row.problem or "interrupted"
                if row.state == "waiting" and ok is True:
                    row.state = "skipped"
                if row.file is not None:
                    row.file.close()
                    row.file = None
            self.closed = True
        if self.view is not None:
            self.view.stop()


class RouterStream:
    """What a logging handler writes to while the view is on: whole lines, per thread, into the router."""

    def __init__(self, router: StageRouter, original: TextIO, tasks_log: Callable[[str], None] | None = None):
        self._router = router
        self.original = original
        self.tasks_log = tasks_log
        self._bufs: dict[int, str] = {}

    def write(self, text: str) -> int:
        tid = threading.get_ident()
        buf = self._bufs.get(tid, "") + text
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            if self.tasks_log is not None:
                self.tasks_log(line)
            self._router.feed(line, tid, passthrough=self.original)
        self._bufs[tid] = buf
        return len(text)

    def flush(self) -> None:
        try:
            self.original.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return False
