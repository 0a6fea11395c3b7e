"""The terminal view of a run (rich): one live table, a line per stage, a bar for each running stage.

A stage's line shows its state (waiting / running / done / reused / failed / skipped) and time; a
failed stage's line names its log file, and its one-line problem is printed under the table.
"""

from __future__ import annotations

import threading
from typing import Any, TextIO

from pipelines.console.base import View, fmt_seconds, where
from pipelines.console.router import STATES, Row, StageRouter

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
