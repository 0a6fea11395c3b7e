"""cosmos.logs: one handler, rebound to the current stderr when a second command runs in the same process."""

from __future__ import annotations

import io
import logging
import sys

from cosmos import events
from cosmos.logs import progress, setup_logging


def test_second_setup_rebinds_a_closed_stderr(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO")
    logging.getLogger("cosmos.test").info("one")
    first.close()  # e.g. pytest's capture of an earlier phase, a notebook cell's stream
    monkeypatch.setattr(sys, "stderr", second)
    setup_logging("INFO")  # must not touch (flush) the closed stream
    logging.getLogger("cosmos.test").info("two")
    assert "two" in second.getvalue()
    assert len([h for h in root.handlers if getattr(h, "_cosmos", False)]) == 1


# ------------------------------------------------------------------------------ progress events
def _events(text: str) -> list[events.Event]:
    return [e for e in map(events.parse_line, text.splitlines()) if e is not None]


def test_progress_inside_a_stage_tells_the_console_first_throttled_and_last(monkeypatch, capsys):
    monkeypatch.setenv("COSMOS_NO_PROGRESS", "0")
    monkeypatch.setenv(events.INTERVAL_ENV, "3600")  # nothing between the first and the last
    previous = events.enter_stage("ingest")
    try:
        assert list(progress(range(7), desc="validate", unit="case")) == list(range(7))
        list(progress(iter(range(3)), desc="no length"))  # no total: no bar to draw, no event
    finally:
        events.enter_stage(previous)
    told = _events(capsys.readouterr().err)
    assert [(e.stage, e.kind, e.desc, e.done, e.total, e.unit) for e in told] == [
        ("ingest", "progress", "validate", 0, 7, "case"),
        ("ingest", "progress", "validate", 7, 7, "case"),
    ]
    monkeypatch.setenv(events.INTERVAL_ENV, "0")  # every item
    events.enter_stage("ingest")
    try:
        list(progress(range(4), desc="every"))
    finally:
        events.enter_stage(previous)
    assert [e.done for e in _events(capsys.readouterr().err)] == [0, 1, 2, 3, 4]


def test_progress_outside_a_stage_or_switched_off_tells_nothing(monkeypatch, capsys):
    monkeypatch.setenv("COSMOS_NO_PROGRESS", "0")
    list(progress(range(5), desc="predict"))  # e.g. cosmos predict in a terminal: no JSON lines
    assert _events(capsys.readouterr().err) == []
    monkeypatch.setenv("COSMOS_NO_PROGRESS", "1")
    previous = events.enter_stage("ingest")
    try:
        list(progress(range(5), desc="validate"))
    finally:
        events.enter_stage(previous)
    assert _events(capsys.readouterr().err) == []


def test_a_stages_cosmos_warnings_become_warning_events(tmp_path, capsys):
    from cosmos import resume

    def body(out):
        logging.getLogger("cosmos.segmentation.training").warning("fold %d: validation Dice is 0", 0)
        logging.getLogger("cosmos.x").error("an error is not a warning")  # a failure has its own event
        logging.getLogger("somebody.else").warning("not ours")
        return None

    resume.run_stage("train_fold0_0", {"m": str(tmp_path / "m")}, body, key="k", work_root="")
    logging.getLogger("cosmos.x").warning("after the stage")
    told = _events(capsys.readouterr().err)
    assert [(e.kind, e.message) for e in told] == [
        ("start", None),
        ("warning", "fold 0: validation Dice is 0"),
        ("end", None),
    ]
    assert told[-1].seconds is not None and told[-1].stage == "train_fold0_0"
