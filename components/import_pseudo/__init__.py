"""Stage ``import_pseudo``: the component (component.py) and what its pod needs (spec.py)."""

from components.import_pseudo.component import import_pseudo
from components.import_pseudo.spec import SPEC

__all__ = ["SPEC", "import_pseudo"]
