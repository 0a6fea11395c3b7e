"""Stage ``start_round_run``: the component (component.py) and what its pod needs (spec.py)."""

from components.start_round_run.component import start_round_run
from components.start_round_run.spec import SPEC

__all__ = ["SPEC", "start_round_run"]
