"""cosmos.logs: one handler, rebound to the current stderr when a second command runs in the same process."""

from __future__ import annotations

import io
import logging
import sys

from cosmos.logs import setup_logging


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
