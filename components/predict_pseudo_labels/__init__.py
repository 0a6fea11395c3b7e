"""Stage ``predict_pseudo_labels``: the component (component.py) and what its pod needs (spec.py)."""

from components.predict_pseudo_labels.component import predict_pseudo_labels
from components.predict_pseudo_labels.spec import SPEC

__all__ = ["SPEC", "predict_pseudo_labels"]
