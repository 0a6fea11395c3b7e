"""What a person sees while ``cosmos run`` / ``selftrain`` / ``benchmark`` runs (see :mod:`pipelines.console`).

The implementation lives in the :mod:`pipelines.console` package (router, kfp.local's lines, plan,
plain and live views); this module keeps the names callers have always imported from here.
"""

from __future__ import annotations

from pipelines.console.live import LiveView
from pipelines.console.plan import PlannedTask, plan_tasks
from pipelines.console.router import STATES, RouterStream, Row, StageProgress, StageRouter
from pipelines.console.views import NO_PROGRESS_ENV, PlainView, View, choose_mode, fmt_seconds, make_view, where

__all__ = [
    "NO_PROGRESS_ENV",
    "STATES",
    "LiveView",
    "PlainView",
    "PlannedTask",
    "Row",
    "RouterStream",
    "StageProgress",
    "StageRouter",
    "View",
    "choose_mode",
    "fmt_seconds",
    "make_view",
    "plan_tasks",
    "where",
]
