"""Stage ``train_fold``: the component (component.py) and what its pod needs (spec.py)."""

from components.train_fold.component import train_fold
from components.train_fold.spec import SPEC

__all__ = ["SPEC", "train_fold"]
