"""Stage ``benchmark_table``: the component (component.py) and what its pod needs (spec.py)."""

from components.benchmark_table.component import benchmark_table
from components.benchmark_table.spec import SPEC

__all__ = ["SPEC", "benchmark_table"]
