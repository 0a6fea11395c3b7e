"""Stage ``ingest_validate``: the component (component.py) and what its pod needs (spec.py)."""

from components.ingest_validate.component import ingest_validate
from components.ingest_validate.spec import SPEC

__all__ = ["SPEC", "ingest_validate"]
