"""What every COSMOS component does around its one library step: logging, config, process exit.

A KFP lightweight component ships only its function's source to the container, so anything
shared must come from the installed package (``components`` is packaged next to ``cosmos``).
:func:`run_component` is the one call a component makes: logging, the run's config (resolved
once, then passed to the key and the step), the stage's resume key, the keyed run.
This module holds no domain code: the steps are ``cosmos.selftraining.rounds`` (and the
translation/data/ablation functions), the keyed resume layer is ``cosmos.resume``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig

log = logging.getLogger("cosmos.component")


def setup() -> None:
    """Logging for a component process (stderr; KFP shows it in the pod log)."""
    from cosmos.logs import setup_logging

    root = logging.getLogger()
    for handler in list(root.handlers):  # KFP's executor basicConfig would print every line twice
        if not getattr(handler, "_cosmos", False):
            root.removeHandler(handler)
    setup_logging()


def load_cfg(profile: str, config: str = "", experiment: str = "", overrides: str = "") -> CosmosConfig:
    """The run's config: the named profile, then ``config`` (YAML) merged over it, then ``overrides``.

    Every component resolves the same pipeline parameters the same way, so all stages see one
    configuration. Layers, later ones winning: profile, ``config``, ``experiment`` (as
    ``tracking.experiment``), ``overrides`` (a compile-time constant of one task: a benchmark row's
    registry names, a translator without segmentor).
    """
    import yaml

    from cosmos.config import deep_merge, load_config
    from cosmos.errors import CosmosError

    merged: dict = {}
    for name, text in (("config", config), ("experiment", experiment), ("overrides", overrides)):
        text = (text or "").strip()
        if not text:
            continue
        if name == "experiment":
            merged = deep_merge(merged, {"tracking": {"experiment": text}})
            continue
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CosmosError(f"pipeline parameter '{name}' is not valid YAML: {exc}") from None
        if parsed is not None and not isinstance(parsed, dict):
            raise CosmosError(f"pipeline parameter '{name}' must be a YAML mapping (sections -> keys)")
        merged = deep_merge(merged, parsed or {})
    if merged:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(merged, fh)
            path = fh.name
        try:
            cfg = load_config(profile or "tiny", path)
        finally:
            os.unlink(path)
    else:
        cfg = load_config(profile or "tiny")
    return cfg


# True while :func:`run` runs a stage in cluster mode (work_root == ""); read by :func:`tracking`.
_CLUSTER_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("cosmos_cluster_mode", default=False)

TRACKING_SECRET_KEY = "MLFLOW_TRACKING_URI"


def tracking(tracking_uri: str, scratch_dir: str | Path, *, cluster: bool | None = None) -> str:
    """The tracking URI a stage uses: the parameter, else $MLFLOW_TRACKING_URI (cluster Secret),
    else SQLite beside the stage's output (only useful for a throw-away local test).

    On a cluster (``cluster``; default: inside :func:`run` with ``work_root == ""``) there is no
    SQLite fallback: a file inside the task's own artifact would let the run "succeed" while its
    MLflow runs and registered models are thrown away with the pod. The stage stops instead, with
    one line naming the Secret key to set. An explicit ``tracking_uri`` is always honoured.
    """
    from cosmos.errors import CosmosError
    from cosmos.tracking import resolve_tracking_uri

    if cluster is None:
        cluster = _CLUSTER_MODE.get()
    if cluster and not tracking_uri and not os.environ.get(TRACKING_SECRET_KEY):
        raise CosmosError(
            f"no MLflow tracking URI: set the key {TRACKING_SECRET_KEY} in the credentials Secret "
            "(cosmos-credentials by default) or pass the tracking_uri pipeline parameter"
        )
    return resolve_tracking_uri(tracking_uri or None, scratch_dir)


def _fast_exit() -> None:
    """atexit hook (local runs): run the other exit handlers, then leave without module teardown.

    Why: with torch, nnU-Net and MLflow loaded, CPython's interpreter finalisation takes seconds
    per task process (measured 5 s for torch alone on a loaded 2-core box, 0.1 s with os._exit),
    which is pure orchestration overhead when ~20 tasks run locally. The exit code is kept: 1 when
    an uncaught exception is being reported (sys.last_value), else 0.
    """
    import atexit
    import sys

    atexit.unregister(_fast_exit)
    code = 1 if getattr(sys, "last_value", None) is not None else 0
    try:
        atexit._run_exitfuncs()  # MLflow flushes, temp-dir cleanup, ... still run
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def run(
    stage: str,
    outputs: Mapping[str, str],
    body: Callable[[dict[str, Path]], Any],
    *,
    key: str,
    work_root: str,
    output_keys: Mapping[str, str] | None = None,
) -> Any:
    """:func:`cosmos.resume.run_stage`, plus the fast exit in a local KFP executor process."""
    import atexit
    import sys

    from cosmos.resume import run_stage

    token = _CLUSTER_MODE.set(not work_root)  # tracking(): no silent SQLite fallback on a cluster
    try:
        result = run_stage(stage, outputs, body, key=key, work_root=work_root, output_keys=output_keys)
    finally:
        _CLUSTER_MODE.reset(token)
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if (
        work_root
        and getattr(main_spec, "name", "") == "kfp.dsl.executor_main"
        and os.environ.get("COSMOS_FAST_EXIT", "1") != "0"
    ):
        atexit.register(_fast_exit)
    return result


def fold_model_paths(collected: Iterable[Any] | None, singles: Iterable[Any | None]) -> list[str]:
    """The paths of a round's fold models, sorted: ``collected`` (``dsl.Collected`` of the ParallelFor's
    ``train_fold`` outputs) and/or ``singles`` (``fold_model_0..4``, one per unrolled fold task).

    Why two forms: KFP can gather a list of artifacts only from a loop (a Python list of task outputs
    is refused), and the backend drops the retry policy of a task inside a loop; an unrolled package
    (``cosmos compile --unroll-folds``) therefore wires each fold task's model to its own input.
    """
    from cosmos.errors import CosmosError

    paths = [m.path for m in (collected or [])] + [m.path for m in singles if m is not None]
    if not paths:
        raise CosmosError("no fold models reached this task (neither fold_models nor fold_model_0..4 is set)")
    return sorted(paths)


def check_unrolled_folds(compiled_folds: str, folds: Iterable[Any]) -> None:
    """Refuse a ``folds`` parameter other than the folds an unrolled package trains (``compiled_folds``
    "0,1,2": one ``train_fold`` task per fold, fixed at compile time; "" = the ParallelFor package,
    whose loop follows the parameter)."""
    from cosmos.errors import CosmosError

    if not compiled_folds:
        return
    compiled = sorted(int(f) for f in compiled_folds.split(","))
    given = sorted(int(float(f)) for f in folds)  # kfp.local hands list items over as floats
    if given != compiled:
        raise CosmosError(
            f"this package was compiled with --unroll-folds for folds {compiled}, but the 'folds' parameter is "
            f"{given}: pass folds={compiled}, or recompile with --folds {','.join(map(str, given))}"
        )


def data_fingerprint(data_uri: str, val_labels_uri: str = "", known: Mapping[str, str] | None = None) -> str:
    """One value that changes when the run's input data does: ``sha256:`` of the keys, sizes and ETags
    under the ``s3://`` URIs (``cosmos.data.storage.fingerprint``; one listing each, no content read).

    ``cosmos submit`` computes it with the submitter's credentials and passes it as the
    ``data_fingerprint`` parameter, so it lands in KFP's cache key of ``ingest_validate``; the task
    computes it again with the Secret's credentials (:func:`check_data_fingerprint`). Local paths
    are not fingerprinted here: their mtimes differ between the submitting machine and the image.
    ``known``: URI -> its ``storage.fingerprint`` where the caller has it already (one listing, not two).
    """
    import hashlib

    from cosmos.data.storage import fingerprint

    known = known or {}
    parts = [(known.get(uri) or fingerprint(uri)) if _is_s3(uri) else (uri or "") for uri in (data_uri, val_labels_uri)]
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _is_s3(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("s3://")


# A data_fingerprint of this form is one-off (cosmos submit could not list the data): never checked, and
# never equal to another run's, so the ingest runs and is never served from KFP's cache.
UNIQUE_FINGERPRINT = "unique:"


# A package compiled without --dataset-gb plans its timeouts and disks for the phantom's few GB; above this, say so.
UNDECLARED_DATASET_GB = 5.0
# How much larger than the compiled --dataset-gb the data may be before the plan (timeouts, disks) no longer holds.
DATASET_GB_SLACK = 1.25


def data_size_gb(uri: str) -> float | None:
    """Bytes under ``uri`` (an ``s3://`` prefix or a local folder) in GB, from the listing alone; None for the phantom."""
    from pathlib import Path

    from cosmos.data import storage

    if not uri:
        return None
    if storage.is_s3(uri):
        return sum(size for _, size in storage.list_objects(uri)) / 1e9
    root = Path(uri)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e9 if root.is_dir() else None


def check_dataset_size(measured_gb: float | None, compiled_gb: float, *, cluster: bool) -> None:
    """Timeouts and disks are fixed at compile time (``cosmos compile --dataset-gb``): ingest measures the data and
    stops, before copying anything, when it is larger than the package was planned for, so a stage is not killed
    hours later by a timeout or a full disk sized for less. Without a declared size a large dataset gets a warning."""
    from cosmos.errors import CosmosError

    if measured_gb is None:
        return
    if compiled_gb > 0 and measured_gb > compiled_gb * DATASET_GB_SLACK:
        raise CosmosError(
            f"data_uri holds {measured_gb:.1f} GB but the package was compiled for {compiled_gb:g} GB "
            f"(cosmos compile --dataset-gb): its timeouts and disks are too small; recompile with "
            f"--dataset-gb {measured_gb:.0f}"
        )
    if compiled_gb <= 0 and cluster and measured_gb > UNDECLARED_DATASET_GB:
        log.warning(
            "data_uri holds %.1f GB and the package was compiled without --dataset-gb: timeouts and disks are planned "
            "for a few GB; recompile with --dataset-gb %.0f",
            measured_gb,
            measured_gb,
        )


def check_data_fingerprint(
    data_uri: str, val_labels_uri: str, given: str, *, cluster: bool, known: Mapping[str, str] | None = None
) -> None:
    """Fail before ingesting when ``given`` (the ``data_fingerprint`` parameter) is set and is not the data's.

    Why: KFP serves ``ingest_validate`` from its cache when its inputs are unchanged, and a cache
    entry exists only for a task that succeeded. Checking the value here means every cached ingest
    had exactly that fingerprint, so a hit always means unchanged data.

    An empty ``given`` (a run started from the Kubeflow UI or ``kfp run submit``) is accepted: the
    cluster DAG then runs the ingest task whose caching is off (``pipelines/cosmos_pipeline.py``
    ``_add_ingest``), so stale data cannot be reused; on a cluster one line says so and names the value
    that would make it cacheable. Local runs (``cosmos run``) resume by their own key and say nothing.
    ``known``: as in :func:`data_fingerprint`.
    """
    from cosmos.errors import CosmosError

    if given.startswith(UNIQUE_FINGERPRINT):
        return
    if not given:
        if cluster:
            log.info(
                "data_fingerprint is empty: this ingest is not cached by KFP (it runs on every run); to make it "
                "cacheable pass data_fingerprint=%s ('cosmos submit' computes and passes it)",
                data_fingerprint(data_uri, val_labels_uri, known),
            )
        return
    actual = data_fingerprint(data_uri, val_labels_uri, known)
    if given != actual:
        raise CosmosError(
            f"pipeline parameter data_fingerprint={given} is not the data's ({actual}): the data under "
            f"{data_uri or '(phantom)'} changed since the run was submitted; submit it again"
        )


def check_profile(profile: str, compiled_profile: str) -> None:
    """Refuse a run whose ``profile`` parameter is not the profile the package was compiled for.

    Why: requests, limits, GPUs, /dev/shm, timeouts and retries are fixed at compile time from the
    compiled profile's table (``pipelines/resources.py``), while ``profile`` is only read when a task
    runs, so ``profile=paper`` on a package compiled for ``tiny`` would train the paper recipe in a
    2 GiB pod with a one-hour deadline. Every task checks it (the compile-time profile is a constant
    in each task call), so whichever task starts first stops the run, before any work, in one line.
    ``compiled_profile`` "" (a call without it: unit tests, old packages) checks nothing.
    """
    from cosmos.errors import CosmosError

    run_profile = profile or "tiny"  # load_cfg's default
    if compiled_profile and run_profile != compiled_profile:
        raise CosmosError(
            f"pipeline parameter profile={run_profile!r}, but this package was compiled for profile "
            f"{compiled_profile!r} (its CPU, memory, GPU, /dev/shm and timeouts): recompile with "
            f"'cosmos compile --profile {run_profile}', or run it with profile={compiled_profile}"
        )


# What a component's step gets: the resolved config and its output directories (name -> dir).
Body = Callable[["CosmosConfig", dict[str, Path]], dict[str, Any]]


def run_component(
    stage: str,
    body: Body,
    outputs: Mapping[str, str],
    *,
    profile: str,
    config: str,
    work_root: str,
    experiment: str = "",
    overrides: str = "",
    run_name: str = "",
    compiled_profile: str = "",
    params: Mapping[str, Any] | Callable[[CosmosConfig], Mapping[str, Any]] | None = None,
    inputs: Iterable[str | None] = (),
    sections: Iterable[str] = (),
    exclude: Iterable[str] = (),
    lineage: Mapping[str, Iterable[str | None]] | None = None,
) -> dict[str, Any]:
    """The shared part of every component: logging, config, resume key, keyed run. Returns the
    step's result (on a local re-run, the stored result of the finished stage).

    The config is resolved once here (:func:`load_cfg`: ``profile``, ``config``, ``experiment``,
    ``overrides``) and handed to ``params`` (when it is a function), the key and ``body(cfg, out)``.

    * ``stage``: the resume key's stage name (:func:`cosmos.resume.stage_key`); ``run_name`` the
      work dir's name (default ``stage``; e.g. ``train_fold{k}_{fold}``, one per task).
    * ``params``, ``inputs``, ``sections``, ``exclude``: what the key covers (see ``stage_key``).
      ``params`` may be a function of the config: it runs before the key and the step, so a check
      that must fail before any work (the compiled DAG's shape) belongs there.
    * ``outputs``: output name -> artifact path; ``body`` gets them as directories.
    * ``lineage``: output name -> the inputs it is a pure function of (a copy of them); that output's key
      follows those inputs only (:func:`cosmos.resume.lineage_key`), not the stage's other settings.
    * ``compiled_profile``: the profile the package was compiled for (a constant in every task call);
      a run whose ``profile`` parameter differs stops here (:func:`check_profile`).
    """
    from cosmos.resume import lineage_key, stage_key

    setup()
    check_profile(profile, compiled_profile)
    cfg = load_cfg(profile, config, experiment, overrides)
    key_params = params(cfg) if callable(params) else (params or {})
    key = stage_key(stage, dict(key_params), list(inputs), cfg, list(sections), exclude=tuple(exclude))
    output_keys = {name: lineage_key(f"{stage}.{name}", list(ins)) for name, ins in (lineage or {}).items()}
    return run(
        run_name or stage, outputs, lambda out: body(cfg, out), key=key, work_root=work_root, output_keys=output_keys
    )
