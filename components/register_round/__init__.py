"""Stage ``register_round``: the component (component.py) and what its pod needs (spec.py)."""

from components.register_round.component import register_round
from components.register_round.spec import SPEC

__all__ = ["SPEC", "register_round"]
