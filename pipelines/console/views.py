"""How a run is shown: which view (:func:`choose_mode`, :func:`make_view`) and the plain stage lines.

* :class:`PlainView` prints one log line per stage start and end, for a pod, CI
  (``COSMOS_NO_PROGRESS=1``) or any stdout that is not a terminal.
* :class:`pipelines.console.live.LiveView` (rich) is the terminal's live table.
* ``--verbose`` bypasses both (:func:`choose_mode` returns ``"verbose"``) and keeps the full stream.

The view interface (:class:`View`) and the formatters live in :mod:`pipelines.console.base`, below this
module and the live view, and are re-exported here.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Mapping, TextIO

# The view interface and the formatters, re-exported: callers import them from here.
from pipelines.console.base import View as View
from pipelines.console.base import fmt_seconds as fmt_seconds
from pipelines.console.base import where as where

if TYPE_CHECKING:
    from pipelines.console.router import Row

NO_PROGRESS_ENV = "COSMOS_NO_PROGRESS"


def choose_mode(stream: TextIO, verbose: bool, env: Mapping[str, str] | None = None) -> str:
    """``verbose`` (today's full stream), ``live`` (a terminal) or ``plain`` (a pod, CI, a pipe, a file).

    Why these rules: a live display only makes sense where someone watches a terminal that can move
    its cursor; CI sets COSMOS_NO_PROGRESS=1, pods have no TTY, and TERM=dumb cannot redraw.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if verbose:
        return "verbose"
    if environ.get(NO_PROGRESS_ENV) == "1" or environ.get("TERM") == "dumb":
        return "plain"
    try:
        return "live" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


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
        secs = row.seconds(self.router.now())
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


def make_view(mode: str, stream: TextIO, title: str = "COSMOS") -> View | None:
    """The view for ``mode`` (from :func:`choose_mode`); None for ``verbose``."""
    if mode == "live":
        from pipelines.console.live import LiveView

        return LiveView(stream, title=title)
    if mode == "plain":
        return PlainView(stream)
    return None
