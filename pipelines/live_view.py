"""What a person sees while ``cosmos run`` / ``selftrain`` / ``benchmark`` runs: one line per stage, not 600.

Why: kfp.local echoes every task's executor input, and nnU-Net prints its citation banner and plan
dumps, so ``make run`` used to print ~660 lines with no single view of where the run stands. Here:

* :class:`StageRouter` reads the lines the tasks print (kfp.local streams each task's subprocess
  output back through ``sys.stdout`` and the logging handlers, in the thread that runs the task),
  attributes each line to its task by that thread, writes it to ``OUT/logs/<stage>.log`` (the
  ``stage <name>: start`` line that :mod:`cosmos.resume` logs names the file; a task that never says
  it falls back to its KFP task name), and keeps each stage's state, time, progress and problem.
  Progress is parsed from what the tasks already print (tqdm bars from ``cosmos.logs.progress``,
  nnU-Net's ``Epoch N`` lines), so no IPC is needed.
* :class:`LiveView` (rich) shows one live table: a line per stage with its state (waiting / running
  / done / reused / failed / skipped) and time, and a bar for the running stage(s). A failed stage's
  line names its log file and shows the one-line problem.
* :class:`PlainView` prints one log line per stage start and end, for a pod, CI
  (``COSMOS_NO_PROGRESS=1``) or any stdout that is not a terminal.
* ``--verbose`` bypasses all of this (:func:`choose_mode` returns ``"verbose"``) and keeps the full stream.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TextIO

NO_PROGRESS_ENV = "COSMOS_NO_PROGRESS"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# kfp.local's own lines (through its logging handler on sys.stdout, or ours when its handler swap races)
_EXECUTING = re.compile(r"Executing task '(?P<task>[^']+)'")
_FINISHED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_CACHE_HIT = re.compile(r"Task (?P<task>\S+) cache hit \(key=")
_SKIPPING = re.compile(r"Skipping task (?P<task>\S+): upstream task")
_PIPELINE_LINE = re.compile(r"Running pipeline|Pipeline '[^']+' finished with status|Streamed logs:")
# cosmos.resume's stage lines (inside the task's output)
_STAGE_START = re.compile(r"\bcosmos\.stage: stage (?P<stage>\S+): start\b")
_STAGE_REUSED = re.compile(r"\bcosmos\.stage: stage (?P<stage>\S+): reusing finished work")
_STAGE_FAILED = re.compile(r"\bstage (?P<stage>\S+) failed: (?P<msg>.*)$")
_WARNING = re.compile(r"\b(?P<level>WARNING) (?P<logger>cosmos[\w.]*): (?P<msg>.*)$")
_EXCEPTION = re.compile(r"^\s*(?P<exc>(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b.*)$")
# progress: a tqdm line ("desc:  50%|█████     | 5/10 [00:11<00:11,  2.35s/case]") ...
_TQDM = re.compile(r"^\s*(?P<desc>.*?):\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<rest>[^\]]*)\]")
_TQDM_UNIT = re.compile(r"(?:\d[\d.]*\s*(?P<a>[A-Za-z]+)/s|s/(?P<b>[A-Za-z]+))\s*$")
# ... nnU-Net's epochs: the total from cosmos.segmentation.training's line, then "<timestamp>: Epoch N"
_NNUNET_TOTAL = re.compile(r"\btraining fold \S+ of round \S+ on \S+ \([^,]*, (?P<total>\d+) epochs")
_NNUNET_EPOCH = re.compile(r":\s+Epoch (?P<k>\d+)\s*$")
_NNUNET_EPOCH_END = re.compile(r":\s+Epoch time: ")

STATES = ("waiting", "running", "done", "reused", "failed", "skipped")


def choose_mode(stream: TextIO, verbose: bool, env: Mapping[str, str] | None = None) -> str:
    """``verbose`` (today's full stream), ``live`` (a terminal) or ``plain`` (a pod, CI, a pipe, a file).

    Why these rules: a live display only makes sense where someone watches a terminal that can move
    its cursor; CI sets COSMOS_NO_PROGRESS=1, pods have no TTY, and TERM=dumb cannot redraw.
    """
    import os

    environ: Mapping[str, str] = os.environ if env is None else env
    if verbose:
        return "verbose"
    if environ.get(NO_PROGRESS_ENV) == "1" or environ.get("TERM") == "dumb":
        return "plain"
    try:
        return "live" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


# ----------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class PlannedTask:
    """One task the pipeline will run: its KFP task name, a label for people, the DAG tasks it sits in."""

    task: str
    label: str
    parents: tuple[str, ...] = ()


def plan_tasks(pipeline: Any, args: dict[str, Any]) -> list[PlannedTask]:
    """The tasks of a compiled pipeline function, roughly in the order they run (waiting rows of the view).

    A ParallelFor's inner tasks appear once per item when the items are a pipeline argument or a
    literal list (the folds); conditions are expanded (their tasks may end up skipped). Any spec this
    does not understand gives an empty plan: the view then adds rows as tasks start.
    """
    try:
        spec = pipeline.pipeline_spec
        return _plan_dag(spec, spec.root.dag, args, ())
    except Exception:  # a plan is a nicety; never fail a run over it
        return []


def _loop_count(task_spec: Any, args: dict[str, Any]) -> int:
    if task_spec.WhichOneof("iterator") != "parameter_iterator":
        return 1
    items = task_spec.parameter_iterator.items
    if items.WhichOneof("kind") == "raw":
        value = json.loads(items.raw)
    else:
        value = args.get(items.input_parameter.removeprefix("pipelinechannel--"))
    return len(value) if isinstance(value, (list, tuple)) and value else 1


def _depth_order(tasks: dict[str, Any]) -> list[str]:
    """Task names close to the order they run: by round, then dependency depth, then name.

    Why the round: depth alone interleaves round 1's first task with round 0's last ones; people
    read the table round by round. A task's round is the ``round N`` of its label, else the latest
    round it depends on (-1 before the first round).
    """
    depth: dict[str, int] = {}
    rnd: dict[str, int] = {}

    def deps(name: str) -> list[str]:
        return [x for x in tasks[name].dependent_tasks if x in tasks and x != name]

    def d(name: str, seen: frozenset[str] = frozenset()) -> tuple[int, int]:
        if name not in depth:
            below = [d(x, seen | {name}) for x in deps(name) if x not in seen]
            depth[name] = 1 + max((b[0] for b in below), default=-1)
            m = re.search(r"\bround (\d+)\b", tasks[name].task_info.name or "")
            rnd[name] = int(m.group(1)) if m else max((b[1] for b in below), default=-1)
        return depth[name], rnd[name]

    return sorted(tasks, key=lambda n: (d(n)[1], d(n)[0], n))


def _plan_dag(spec: Any, dag: Any, args: dict[str, Any], parents: tuple[str, ...]) -> list[PlannedTask]:
    plan: list[PlannedTask] = []
    for name in _depth_order(dict(dag.tasks)):
        task = dag.tasks[name]
        component = spec.components[task.component_ref.name]
        if component.WhichOneof("implementation") == "dag":
            inner = _plan_dag(spec, component.dag, args, (*parents, name))
            n = _loop_count(task, args)
            for i in range(n):
                plan += [
                    PlannedTask(p.task, f"{p.label} [{i + 1}/{n}]" if n > 1 else p.label, p.parents) for p in inner
                ]
        else:
            plan.append(PlannedTask(name, task.task_info.name or name, parents))
    return plan


# ----------------------------------------------------------------------------------- stage rows
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
    stage: str | None = None  # cosmos.resume's stage name, once the task said it
    started: float | None = None
    ended: float | None = None
    progress: StageProgress | None = None
    problem: str | None = None
    log_path: Path | None = None
    reused_work: bool = False
    epochs_total: int | None = None
    last_exception: str | None = None
    pending: list[str] = field(default_factory=list)  # lines before the log file is named
    file: TextIO | None = None

    def seconds(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    @property
    def name(self) -> str:
        return self.stage or self.task


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


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
        line = _ANSI.sub("", raw).rstrip("\r")
        with self._lock:
            events: list[tuple[str, Row]] = []
            kfp_line = True
            if (m := _EXECUTING.search(line)) is not None:
                row = self._claim(m.group("task"))
                row.state, row.started, row.ended = "running", self._clock(), None
                self._by_thread[thread] = row
                events.append(("started", row))
            elif (m := _CACHE_HIT.search(line)) is not None:
                row = self._claim(m.group("task"))
                row.state, row.started = "reused", self._clock()
                row.ended = row.started
                events.append(("finished", row))
            elif (m := _SKIPPING.search(line)) is not None:
                for row in self.rows:
                    if row.state == "waiting" and (row.task == m.group("task") or m.group("task") in row.parents):
                        row.state = "skipped"
            else:
                kfp_line = bool(_PIPELINE_LINE.search(line)) or not line.strip() or line.lstrip().startswith("-----")
            current = self._by_thread.get(thread)
            if current is not None:
                self._write(current, line)
                if current.state == "running" and self._parse(current, line, events):
                    events.append(("finished", current))
            elif passthrough is not None and not kfp_line:
                events.append(("note", Row("", raw)))
        for kind, row in events:
            self._tell(kind, row)

    def _claim(self, task: str) -> Row:
        for row in self.rows:
            if row.task == task and row.state == "waiting":
                return row
        row = Row(task, task)
        self.rows.append(row)
        return row

    def _parse(self, row: Row, line: str, events: list[tuple[str, Row]]) -> bool:
        """Update ``row`` from one of its lines; True when the line ends the task.

        Notes for the view go to ``events``: the view is told after the lock is released, because
        rich's refresh thread holds the console's lock while it asks for a snapshot (which takes ours).
        """
        m = _FINISHED.search(line)
        if m and m.group("task") == row.task:
            row.ended = self._clock()
            if m.group("status") == "SUCCESS":
                row.state = "reused" if row.reused_work else "done"
                row.progress = None
            else:
                row.state = "failed"
                if row.problem is None:
                    row.problem = row.last_exception or "the task exited with an error"
            self._open(row)
            return True
        if (m := _STAGE_START.search(line)) is not None:
            self._name(row, m.group("stage"))
        elif (m := _STAGE_REUSED.search(line)) is not None:
            self._name(row, m.group("stage"))
            row.reused_work = True
        elif (m := _STAGE_FAILED.search(line)) is not None:
            if row.problem is None:
                row.problem = self._humanize(f"stage {m.group('stage')} failed: {m.group('msg').strip()}")
        elif (m := _TQDM.search(line)) is not None:
            u = _TQDM_UNIT.search(m.group("rest"))
            unit = (u.group("a") or u.group("b")) if u else ""
            row.progress = StageProgress(m.group("desc").strip(), int(m.group("n")), int(m.group("total")), unit)
        elif (m := _NNUNET_TOTAL.search(line)) is not None:
            row.epochs_total = int(m.group("total"))
            row.progress = StageProgress("nnU-Net", 0, row.epochs_total, "epoch")
        elif (m := _NNUNET_EPOCH.search(line)) is not None and row.epochs_total:
            row.progress = StageProgress("nnU-Net", int(m.group("k")), row.epochs_total, "epoch")
        elif _NNUNET_EPOCH_END.search(line) and row.progress is not None and row.progress.unit == "epoch":
            row.progress.n = min(row.progress.n + 1, row.progress.total)
        elif (m := _WARNING.search(line)) is not None:
            events.append(("note", Row("", f"{row.name}: {m.group('msg')}", state="warning")))
        elif (m := _EXCEPTION.search(line)) is not None and not line.lstrip().startswith("File "):
            row.last_exception = m.group("exc").strip()
        return False

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
    def _tell(self, kind: str, row: Row) -> None:
        if self.view is None:
            return
        if kind == "started":
            self.view.started(row)
        elif kind == "finished":
            self.view.finished(row)
        else:
            self.view.note(row.label, warning=row.state == "warning")

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


# ----------------------------------------------------------------------------------- views
class View:
    """What the router tells: a stage started or finished, or a note (a line that belongs to no stage)."""

    router: StageRouter

    def attach(self, router: StageRouter) -> None:
        self.router = router

    def started(self, row: Row) -> None:
        pass

    def finished(self, row: Row) -> None:
        pass

    def note(self, text: str, warning: bool = False) -> None:
        pass

    def stop(self) -> None:
        pass

    def _index(self, row: Row) -> str:
        rows = self.router.rows
        try:
            return f"[{next(i for i, r in enumerate(rows) if r is row) + 1}/{len(rows)}] "
        except StopIteration:
            return ""


def where(path: Path | None) -> str:
    """A log file as a person would type it: relative to the working directory when inside it."""
    if path is None:
        return "OUT/logs/tasks.log"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


class PlainView(View):
    """One log line per stage start and end: for pods, CI and pipes (no cursor movement, no bars)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.stream.flush()

    def started(self, row: Row) -> None:
        self._print(f"{self._index(row)}{row.label}: running")

    def finished(self, row: Row) -> None:
        secs = row.seconds(self.router._clock())
        if row.state == "failed":
            self._print(
                f"{self._index(row)}{row.label}: FAILED after {fmt_seconds(secs)}: {row.problem} "
                f"(full log: {where(row.log_path)})"
            )
        elif row.state == "reused":
            self._print(f"{self._index(row)}{row.label}: reused" + (f" ({fmt_seconds(secs)})" if secs else ""))
        else:
            self._print(f"{self._index(row)}{row.label}: done in {fmt_seconds(secs)}")

    def note(self, text: str, warning: bool = False) -> None:
        with self._lock:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()


_BAR = 24  # characters of a progress bar
_ICON = {
    "waiting": ("·", "dim"),
    "running": ("", "yellow"),
    "done": ("✓", "green"),
    "reused": ("↺", "cyan"),
    "failed": ("✗", "bold red"),
    "skipped": ("-", "dim"),
}


class LiveView(View):
    """The terminal view (rich): one table, a line per stage, a bar for each running stage.

    Rows that do not fit the terminal are summarised while the run is live; the last frame, which
    stays on screen, lists every stage.
    """

    def __init__(self, stream: TextIO, title: str = "COSMOS", console: Any = None):
        from rich.console import Console

        self.console = console or Console(file=stream, highlight=False)
        self.title = title
        self._live: Any = None
        self._final = False
        self._lock = threading.Lock()

    def attach(self, router: StageRouter) -> None:
        from rich.live import Live

        super().attach(router)
        self._live = Live(
            self,
            console=self.console,
            refresh_per_second=2,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=True,
            vertical_overflow="crop",
        )
        self._live.start()

    def note(self, text: str, warning: bool = False) -> None:
        from rich.text import Text

        self.console.print(Text(("⚠ " if warning else "") + text.rstrip("\n"), style="yellow" if warning else ""))

    def stop(self) -> None:
        if self._live is not None:
            self._final = True
            self._live.stop()
            self._live = None

    # rich calls this on every refresh
    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.console import Group
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        rows, now = self.router.snapshot()
        counts = {s: sum(r.state == s for r in rows) for s in STATES}
        elapsed = now - self.router.started_at
        head = Text.assemble(
            (self.title, "bold"),
            f"  {counts['done'] + counts['reused']}/{len(rows)} stages",
            ("  " + ", ".join(f"{counts[s]} {s}" for s in ("reused", "failed") if counts[s]), "dim"),
            f"  {fmt_seconds(elapsed)}",
        )
        failed = [r for r in rows if r.state == "failed"]
        height = options.height or console.height
        shown = self._fold_unrun(rows) if self._final else self._fit(rows, max(6, height - 2 - 2 * len(failed)))
        bar = max(6, min(_BAR, options.max_width - 80))  # an 80-column terminal still sees the counts
        # fixed widths, and the detail column takes what is left: rich would otherwise squeeze the icons away
        label_width = min(44, max((len(r.label) for r in rows), default=10), max(10, options.max_width - 40))
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(width=1, no_wrap=True)
        table.add_column(width=label_width, no_wrap=True, overflow="ellipsis")
        table.add_column(width=7, no_wrap=True)
        table.add_column(width=7, justify="right", no_wrap=True)
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        for row in shown:
            if isinstance(row, str):
                table.add_row("", Text(row, style="dim"), "", "", "")
                continue
            icon, style = _ICON.get(row.state, ("?", ""))
            mark: Any = Spinner("dots", style="yellow") if row.state == "running" else Text(icon, style=style)
            secs = "" if row.state in ("waiting", "skipped") else fmt_seconds(row.seconds(now))
            if row.state == "reused" and (row.seconds(now) or 0) < 0.05:
                secs = ""
            table.add_row(
                mark,
                Text(row.label, style="dim" if row.state in ("waiting", "skipped") else ""),
                Text(row.state, style=style),
                secs,
                self._detail(row, bar),
            )
        # the problem of a failed stage, in full, under the table (the row names the log file)
        problems = [
            Text.assemble(
                (f"✗ {r.label}: {r.problem or 'failed'}", "red"), "\n  full log: ", (where(r.log_path), "bold")
            )
            for r in failed
        ]
        yield Group(head, table, *problems)

    def _detail(self, row: Row, bar: int = _BAR) -> Any:
        from rich.text import Text

        if row.state == "failed":
            return Text.assemble("see ", (row.log_path.name if row.log_path else "tasks.log", "bold"), " below")
        if row.state == "running" and row.progress is not None and row.progress.total > 0:
            p = row.progress
            filled = round(bar * min(p.n, p.total) / p.total)
            return Text.assemble(
                ("━" * filled, "green"),
                ("━" * (bar - filled), "grey23"),
                f" {p.n}/{p.total} {p.unit}".rstrip(),
                (f"  {p.desc}", "dim"),
            )
        if row.state in ("done", "reused") and row.stage:
            return Text(row.stage, style="dim")
        return Text("")

    @staticmethod
    def _fold_unrun(rows: list[Row]) -> list[Row | str]:
        """The last frame: every stage that ran; a run of 3+ stages that never ran (after a failure) is one line."""
        out: list[Row | str] = []
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and rows[j].state in ("skipped", "waiting"):
                j += 1
            if j - i >= 3:
                out.append(f"… {j - i} stage(s) not run")
                i = j
            else:
                out.append(rows[i])
                i += 1
        return out

    @staticmethod
    def _fit(rows: list[Row], budget: int) -> list[Row | str]:
        """At most ``budget`` lines: running/failed rows always, then the latest finished and the next waiting."""
        if len(rows) <= budget:
            return list(rows)
        keep = {i for i, r in enumerate(rows) if r.state in ("running", "failed")}
        finished = [i for i, r in enumerate(rows) if r.state in ("done", "reused", "skipped") and i not in keep]
        waiting = [i for i, r in enumerate(rows) if r.state == "waiting"]
        room = max(0, budget - len(keep) - 2)
        keep |= set(finished[-max(1, room // 3) :] if room else [])
        room = max(0, budget - len(keep) - 2)
        keep |= set(waiting[:room])
        out: list[Row | str] = []
        hidden_before = sum(1 for i in finished if i not in keep)
        if hidden_before:
            out.append(f"… {hidden_before} earlier stage(s) finished")
        out += [rows[i] for i in sorted(keep)]
        hidden_after = sum(1 for i in waiting if i not in keep)
        if hidden_after:
            out.append(f"… {hidden_after} more stage(s) waiting")
        return out


def make_view(mode: str, stream: TextIO, title: str = "COSMOS") -> View | None:
    """The view for ``mode`` (from :func:`choose_mode`); None for ``verbose``."""
    if mode == "live":
        return LiveView(stream, title=title)
    if mode == "plain":
        return PlainView(stream)
    return None
