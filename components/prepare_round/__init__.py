"""Stage ``prepare_round``: the component (component.py) and what its pod needs (spec.py)."""

from components.prepare_round.component import prepare_round
from components.prepare_round.spec import SPEC

__all__ = ["SPEC", "prepare_round"]
