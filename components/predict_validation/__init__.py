"""Stage ``predict_validation``: the component (component.py) and what its pod needs (spec.py)."""

from components.predict_validation.component import predict_validation
from components.predict_validation.spec import SPEC

__all__ = ["SPEC", "predict_validation"]
