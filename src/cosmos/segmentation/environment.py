"""Per-run nnU-Net environment: paths and process settings, set by our code, never by the user.

Why this module exists: nnU-Net v2 is configured through environment variables. Three of them are
paths (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``), read lazily on every use in
nnunetv2 >= 2.6, so we can point them at the directories of the current call and restore them
afterwards. Others are read ONCE at import (``nnUNet_def_n_proc`` -> ``default_num_processes``)
or per call (``nnUNet_n_proc_DA``); both matter a lot on small CPU machines:

* ``nnUNet_def_n_proc`` unset -> validation/export spawn 8 workers. We default it to 2 *before*
  nnunetv2 is imported, and patch the module-level copies if nnunetv2 was imported earlier.
* ``nnUNet_n_proc_DA=0`` -> augmentation in-process: bit-identical CPU runs once seeded. But the
  experiment planner crashes with it ("set_num_threads expects a positive integer"), so planning
  runs with it UNSET.
* ``nnUNet_compile`` -> off unless the config asks for it (compile warm-up dominates short runs).

And one setting that is no variable: ``segmentation.num_processes: 0`` runs nnU-Net's dataset
worker pools as threads of this process (:func:`dataset_pools_in_process`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import random
import sys
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

log = logging.getLogger(__name__)

_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")

# nnU-Net's name for a fold's finished weights: its presence means "this fold is trained".
FINAL_CHECKPOINT = "checkpoint_final.pth"


class _Unset(enum.Enum):
    """Type of the "argument omitted" default (None is a value there: it unsets the variable)."""

    TOKEN = 0


_UNSET = _Unset.TOKEN

DEFAULT_NUM_PROCESSES = 2


def set_process_defaults(num_processes: int = DEFAULT_NUM_PROCESSES) -> None:
    """Make nnU-Net's worker-pool sizes small (module import time and already-imported modules).

    Called when ``cosmos.segmentation`` is imported (before nnunetv2), and again per call with the
    configured value: nnunetv2 copies ``default_num_processes`` into many modules at import.
    """
    n = max(1, int(num_processes))
    os.environ["nnUNet_def_n_proc"] = str(n)
    os.environ.setdefault("nnUNet_compile", "0")
    for name, mod in list(sys.modules.items()):
        if name.startswith("nnunetv2") and mod is not None and hasattr(mod, "default_num_processes"):
            try:
                setattr(mod, "default_num_processes", n)  # noqa: B010 - module found at run time, unknown to mypy
            except Exception:  # pragma: no cover - exotic module objects
                pass


@contextlib.contextmanager
def nnunet_env(
    raw: str | Path | None = None,
    preprocessed: str | Path | None = None,
    results: str | Path | None = None,
    *,
    n_proc_da: int | None | _Unset = _UNSET,
    num_processes: int = DEFAULT_NUM_PROCESSES,
    compile: bool = False,
    torch_threads: int = 0,
) -> Iterator[None]:
    """Point nnU-Net at this call's directories; restore the previous environment on exit.

    ``n_proc_da``: an int sets ``nnUNet_n_proc_DA``; None UNSETS it (planning); omitted leaves it.
    ``torch_threads`` > 0 sets torch's intra-op threads for the block (restored after); callers
    resolve the config's ``0`` = auto with :func:`cosmos.cpu.resolve_threads` (why: cosmos.cpu).
    ``num_processes`` 0 (``segmentation.num_processes: 0``): nnU-Net's dataset pools run in this
    process for the block (:func:`dataset_pools_in_process`); its other pools get one worker.
    """
    wanted: dict[str, str | None] = {}
    for var, value in zip(_PATH_VARS, (raw, preprocessed, results)):
        if value is not None:
            wanted[var] = str(Path(value).resolve())
    if not isinstance(n_proc_da, _Unset):
        wanted["nnUNet_n_proc_DA"] = None if n_proc_da is None else str(int(n_proc_da))
    wanted["nnUNet_compile"] = "1" if compile else "0"
    saved = {k: os.environ.get(k) for k in list(wanted) + ["nnUNet_def_n_proc"]}
    saved_threads = None
    try:
        if torch_threads and torch_threads > 0:
            import torch

            saved_threads = torch.get_num_threads()
            torch.set_num_threads(int(torch_threads))
        for k, v in wanted.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        set_process_defaults(num_processes)
        with dataset_pools_in_process() if num_processes == 0 else contextlib.nullcontext():
            yield
    finally:
        if saved_threads is not None:
            import torch

            torch.set_num_threads(saved_threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_device(name: str):
    """``auto`` -> cuda when available, else cpu. Returns a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from cosmos.errors import CosmosError

        raise CosmosError(f"segmentation.device={name} but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def augmentation_workers(requested: int, device) -> int:
    """Data-augmentation worker processes: 0 (in-process, deterministic) on CPU; a few on GPU.

    ``requested`` >= 0 is used as given; -1 = automatic.
    """
    if requested >= 0:
        return int(requested)
    if getattr(device, "type", str(device)) == "cpu":
        return 0
    return max(1, min(12, (os.cpu_count() or 2) - 1))


def seed_everything(seed: int) -> None:
    """Seed random, numpy and torch: nnU-Net seeds nothing itself."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# nnU-Net modules that start a ``multiprocessing.get_context("spawn").Pool`` over the dataset's cases.
_DATASET_POOL_MODULES = (
    "nnunetv2.experiment_planning.verify_dataset_integrity",
    "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
    "nnunetv2.preprocessing.preprocessors.default_preprocessor",
)


@contextlib.contextmanager
def dataset_pools_in_process() -> Iterator[None]:
    """Within the block, nnU-Net's integrity check, fingerprint extraction and preprocessing run
    their worker pools as threads of this process (``multiprocessing.pool.ThreadPool``).

    Why: each of the three starts a ``spawn`` process pool, and every spawned worker imports torch
    and nnU-Net anew (~3 s on 2 cores). For a few small cases that costs more than the work itself:
    a demo student round's prepare spent 9 of its 25 s waiting for workers, and the same cases take
    0.4 s (fingerprint) and 3 s (preprocessing) in-process. nnU-Net's own code runs unchanged:
    ThreadPool has the pool interface it uses (``starmap``, ``starmap_async``, a ``_pool`` of
    workers with ``is_alive``). Only those three modules' ``multiprocessing`` name is replaced,
    and it is restored on exit. Large datasets want processes (``segmentation.num_processes`` > 0).
    """
    import importlib

    shim = SimpleNamespace(get_context=lambda method=None: SimpleNamespace(Pool=ThreadPool))
    modules = [importlib.import_module(name) for name in _DATASET_POOL_MODULES]
    saved = [m.multiprocessing for m in modules]  # type: ignore[attr-defined]
    try:
        for m in modules:
            m.multiprocessing = shim  # type: ignore[attr-defined]
        yield
    finally:
        for m, original in zip(modules, saved):
            m.multiprocessing = original  # type: ignore[attr-defined]
