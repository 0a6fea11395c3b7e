"""Stage ``train_translator``: the component (component.py) and what its pod needs (spec.py)."""

from components.train_translator.component import train_translator
from components.train_translator.spec import SPEC

__all__ = ["SPEC", "train_translator"]
