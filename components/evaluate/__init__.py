"""Stage ``evaluate``: the component (component.py) and what its pod needs (spec.py)."""

from components.evaluate.component import evaluate
from components.evaluate.spec import SPEC

__all__ = ["SPEC", "evaluate"]
