"""Stage ``labelled_as_pseudo``: the component (component.py) and what its pod needs (spec.py)."""

from components.labelled_as_pseudo.component import labelled_as_pseudo
from components.labelled_as_pseudo.spec import SPEC

__all__ = ["SPEC", "labelled_as_pseudo"]
