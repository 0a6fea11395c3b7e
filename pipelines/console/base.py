"""The view interface (:class:`View`) and the time and log-path formatting every view prints.

Why a module of its own: :mod:`.views` picks a view and so imports :mod:`.live` (inside
``make_view``, as rich is needed only for a terminal), and the live view needs this interface and these
formatters. Kept here, below both, the import graph has no circle; :mod:`.views` re-exports every name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.console.router import Row, StageRouter


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def where(path: Path | None) -> str:
    """A log file as a person would type it: relative to the working directory when inside it."""
    if path is None:
        return "OUT/logs/tasks.log"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


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
