"""Stage ``report``: the component (component.py) and what its pod needs (spec.py)."""

from components.report.component import report
from components.report.spec import SPEC

__all__ = ["SPEC", "report"]
