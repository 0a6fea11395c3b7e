"""Stage ``crop_roi``: the component (component.py) and what its pod needs (spec.py)."""

from components.crop_roi.component import crop_roi
from components.crop_roi.spec import SPEC

__all__ = ["SPEC", "crop_roi"]
