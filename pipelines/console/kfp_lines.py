"""The ONE place that recognises kfp.local's own console lines (the pipeline's tasks speak in events).

Why these still need matching text: kfp.local, not COSMOS, prints them, from the parent process,
and they carry facts nothing else tells us in time: which task a thread now runs (``Executing task``;
the console attributes the task's streamed output by that thread), how the task ended (``finished
with status``), a task kfp's cache answered without starting it (``cache hit``), and tasks it will
never run (``Skipping task``). kfp.local has no hook or structured output for any of them. Our own
stages never need a pattern: they write :mod:`cosmos.events` JSON lines.

Everything here matches kfp 2.x's wording (``kfp.local.logging_utils``, ``task_dispatcher``,
``pipeline_orchestrator``); if kfp changes it, this module is the one to update.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # kfp colours task names and statuses

_EXECUTING = re.compile(r"Executing task '(?P<task>[^']+)'")
_FINISHED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_CACHE_HIT = re.compile(r"Task (?P<task>\S+) cache hit \(key=")
_SKIPPING = re.compile(r"Skipping task (?P<task>\S+): upstream task")
_PIPELINE = re.compile(r"Running pipeline|Pipeline '[^']+' finished with status|Streamed logs:")
# kfp.local's echo around each task: its executor input (JSON), artifact reprs, separators
_ECHO = [
    re.compile(p)
    for p in (
        r"^\s*[{}\[\]],?\s*$",  # JSON structure
        r'^\s*"[^"]*"\s*:.*$',  # JSON members
        r'^\s*"[^"]*",?\s*$',  # JSON list items
        r"\[KFP Executor [^\]]*\]: (Looking for component|Loading KFP component|Got executor_input"
        r"|Wrote executor output|Did not write)",
        r"Streamed logs:",
        r"INFO root: Wrote executor output file",
        r"outputs:\s*$",  # kfp's "Task 'x' outputs:" header ...
        r"^\s*(\w+: )?\w+\( name=",  # ... and its artifact reprs
        r"^\s*(uri|metadata)=",
        r"^\s*-{20,}\s*$",
    )
]

Kind = Literal["executing", "finished", "cache_hit", "skipping"]


@dataclass(frozen=True)
class KfpLine:
    """A line kfp.local printed about a task: what happened (``kind``), to which task, and its status."""

    kind: Kind
    task: str
    status: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def parse(line: str) -> KfpLine | None:
    """The kfp.local task line in ``line`` (colours allowed), or None."""
    line = strip_ansi(line)
    if (m := _EXECUTING.search(line)) is not None:
        return KfpLine("executing", m.group("task"))
    if (m := _FINISHED.search(line)) is not None:
        return KfpLine("finished", m.group("task"), m.group("status"))
    if (m := _CACHE_HIT.search(line)) is not None:
        return KfpLine("cache_hit", m.group("task"))
    if (m := _SKIPPING.search(line)) is not None:
        return KfpLine("skipping", m.group("task"))
    return None


def is_chrome(line: str) -> bool:
    """kfp.local's framing that belongs to no stage: pipeline start/end, ``Streamed logs:``, separators, blanks."""
    line = strip_ansi(line)
    return not line.strip() or line.lstrip().startswith("-----") or bool(_PIPELINE.search(line))


def is_echo(line: str) -> bool:
    """A line of kfp.local's bulky per-task echo (executor input JSON, artifact dumps, separators)."""
    return any(p.search(line) for p in _ECHO)
