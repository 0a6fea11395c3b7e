"""Stage ``translate``: the component (component.py) and what its pod needs (spec.py)."""

from components.translate.component import translate
from components.translate.spec import SPEC

__all__ = ["SPEC", "translate"]
