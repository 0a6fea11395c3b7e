"""How many torch CPU threads a stage uses.

Why this exists: OpenMP threads spin-wait for each other, so a process that asks for more threads
than it has cores *to itself* slows down badly (measured on a 2-core box: 26 s per translator step
with two threads next to another busy process, 1.3 s with one), while a process that runs alone
should use every core (alone on the same box: 0.63 s vs 1.09 s per translator step, 0.97 s vs 1.76 s
per nnU-Net iteration with two threads vs one).

So the config's ``0`` means "auto" = every core this process may use (its CPU affinity). Launchers
that run CPU-heavy tasks side by side give each a share explicitly: the local runner, which trains
up to two folds at once, sets ``segmentation.torch_threads`` to cores // concurrent folds.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int) -> int:
    """``requested`` > 0 as given; 0 = every core available to this process."""
    if requested and requested > 0:
        return int(requested)
    return available_cores()


def share_of_cores(concurrent_tasks: int) -> int:
    """Threads per task when ``concurrent_tasks`` CPU-heavy tasks run at once (at least 1)."""
    return max(1, available_cores() // max(1, int(concurrent_tasks)))


def apply_threads(requested: int) -> int:
    """Set torch's intra-op threads per :func:`resolve_threads`; returns the number set."""
    import torch

    n = resolve_threads(requested)
    torch.set_num_threads(n)
    return n
