"""Keyed, resumable stage work: where a stage writes and whether it has to run at all.

Every pipeline step (``cosmos.selftraining.rounds``, translation, ingest) runs through
:func:`run_stage`, whichever entry point started it (``cosmos run``, ``cosmos selftrain``,
``cosmos benchmark``, a Kubeflow pod). Two modes, chosen by ``work_root``:

* ``work_root == ""`` (a cluster): the stage writes straight into its output artifact directories;
  KFP's own cache decides what re-runs.
* ``work_root = OUT/work`` (local runs): kfp.local gives every run fresh artifact paths, so a
  killed run would redo everything. Instead each stage works in a *deterministic* directory
  ``work_root/<stage>-<key>`` where ``key`` hashes the stage name, its parameters, the config
  sections it reads and the keys of its input artifacts (lineage, written to ``.cosmos_key`` in
  every output). A stage whose directory holds ``DONE`` is reused at once; a stage that was killed
  re-enters the same directory, so the library's own resume (translator checkpoints, nnU-Net's
  ``checkpoint_latest.pth``) continues where it stopped. The output artifact path then becomes a
  symlink to that directory. Every stage appends its compute seconds to
  ``work_root/timings.jsonl`` (read by ``benchmarks/local_overhead.py``).

Every stage also tells the console what it does, as structured events (:mod:`cosmos.events`):
``start`` (or ``reused``), then ``end`` with its seconds, or ``fail`` with the one-line problem.
While the stage runs it is the process's current stage, so progress bars, the nnU-Net epoch hook and
``cosmos`` warnings inside it report as that stage.

Nothing here imports kfp: the components pass plain paths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from cosmos import events
from cosmos.errors import CosmosError

log = logging.getLogger("cosmos.stage")

KEY_FILE = ".cosmos_key"
DONE_FILE = "DONE"
RESULT_FILE = "result.json"
TIMINGS_FILE = "timings.jsonl"
POINTER_FILE = ".cosmos_model_dir"

PathLike = str | os.PathLike


def input_key(path: PathLike | None) -> str:
    """The lineage key of an input artifact (its ``.cosmos_key``), else its path."""
    if path is None:
        return "none"
    p = Path(path)
    keyfile = p / KEY_FILE if p.is_dir() else p.parent / (p.name + KEY_FILE)
    try:
        return keyfile.read_text().strip()
    except OSError:
        return f"path:{p}"


def local_fingerprint(uri: str) -> str:
    """Names, sizes and mtimes under a local data folder, so edited input data is not reused.

    Cheap (no file contents are read). ``s3://`` and ``""`` (phantom) return the URI itself.
    """
    if not uri or "://" in uri:
        return uri
    root = Path(uri)
    if not root.exists():
        return uri
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return f"{uri}#{h.hexdigest()[:16]}"


def stage_key(
    stage: str,
    params: Mapping[str, Any],
    inputs: Iterable[PathLike | None],
    cfg: Any = None,
    sections: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> str:
    """sha256 over the stage name, its parameters, the config sections it reads and input keys.

    ``exclude``: dotted fields of those sections that the stage's work does not depend on
    (``cosmos.config.PREDICTION_ONLY``, ``ROUND_COUNT``), so that changing one does not redo it."""
    payload: dict[str, Any] = {"stage": stage, "params": dict(params), "inputs": [input_key(i) for i in inputs]}
    if cfg is not None:
        data = cfg.to_dict()
        config = {"seed": data.get("seed"), **{s: dict(data[s]) for s in sections}}
        for dotted in exclude:
            section, _, name = dotted.partition(".")
            if isinstance(config.get(section), dict):
                config[section].pop(name, None)
        payload["config"] = config
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _link(target: Path, artifact_path: str) -> None:
    """Make the output artifact path point at ``target`` (local mode)."""
    ap = Path(artifact_path)
    if ap.is_symlink() or ap.is_file():
        ap.unlink()
    elif ap.is_dir():
        shutil.rmtree(ap)
    ap.parent.mkdir(parents=True, exist_ok=True)
    ap.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def _record_timing(work_root: str, stage: str, key: str, seconds: float, reused: bool) -> None:
    line = json.dumps({"stage": stage, "key": key, "seconds": round(seconds, 3), "reused": reused, "end": time.time()})
    with open(Path(work_root) / TIMINGS_FILE, "a") as fh:
        fh.write(line + "\n")


def lineage_key(name: str, inputs: Iterable[PathLike | None]) -> str:
    """The key of an output that is a pure function of ``inputs`` (e.g. a copy of them), whatever else the
    stage that writes it depends on: downstream stages then follow the inputs, not that stage's settings."""
    text = json.dumps({"output": name, "inputs": [input_key(i) for i in inputs]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_stage(
    stage: str,
    outputs: Mapping[str, str],
    body: Callable[[dict[str, Path]], Any],
    *,
    key: str,
    work_root: str = "",
    output_keys: Mapping[str, str] | None = None,
) -> Any:
    """Run ``body(output_dirs)`` once per key; return its JSON-serialisable result.

    ``outputs`` maps output names to artifact paths (each used as a directory). See the module
    docstring for the two modes. The result of a finished stage is stored in ``result.json`` so a
    reused stage returns the same outputs (e.g. an MLflow run id) as the first time.

    ``output_keys``: the lineage key (:func:`lineage_key`) of an output that depends on less than the
    stage does. Why: register_round's fold models are a copy of its inputs, but the stage also reads the
    checks' thresholds; without its own key, changing a threshold would retrain every later student.
    """
    t0 = time.perf_counter()
    previous = events.enter_stage(stage)
    relay = events.WarningRelay()
    logging.getLogger("cosmos").addHandler(relay)
    try:
        return _run_stage(stage, outputs, body, key=key, work_root=work_root, t0=t0, output_keys=output_keys or {})
    except CosmosError as exc:  # the user's problem: one clear line, and the console's fail event
        log.error("stage %s failed: %s", stage, exc)
        events.stage_event(stage, "fail", message=str(exc), user_error=True, seconds=round(time.perf_counter() - t0, 3))
        raise
    except BaseException as exc:  # a crash: the last line of its traceback (the traceback follows in the log)
        crash = traceback.format_exception_only(type(exc), exc)[-1].strip()
        events.stage_event(stage, "fail", message=crash, user_error=False, seconds=round(time.perf_counter() - t0, 3))
        raise
    finally:
        logging.getLogger("cosmos").removeHandler(relay)
        events.enter_stage(previous)


def _run_stage(
    stage: str,
    outputs: Mapping[str, str],
    body: Callable[[dict[str, Path]], Any],
    *,
    key: str,
    work_root: str,
    t0: float,
    output_keys: Mapping[str, str],
) -> Any:
    """:func:`run_stage`'s work in its two modes (module docstring); ``t0``: when the stage began."""
    if not work_root:
        dirs = {name: Path(p) for name, p in outputs.items()}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        log.info("stage %s: start", stage)
        events.stage_event(stage, "start")
        result = body(dirs)
        for name, d in dirs.items():
            (d / KEY_FILE).write_text(output_keys.get(name, key))
        seconds = time.perf_counter() - t0
        log.info("stage %s: done in %.1f s", stage, seconds)
        events.stage_event(stage, "end", seconds=round(seconds, 3))
        return result

    work = Path(work_root) / f"{stage}-{key}"
    work.mkdir(parents=True, exist_ok=True)
    dirs = {name: work / name for name in outputs}
    done, result_file = work / DONE_FILE, work / RESULT_FILE
    if done.exists():
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        reused = True
        log.info("stage %s: reusing finished work in %s", stage, work)
        events.stage_event(stage, "reused", work=str(work))
    else:
        reused = False
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        log.info("stage %s: start (work dir %s)", stage, work)
        events.stage_event(stage, "start", work=str(work))
        result = body(dirs)
        for name, d in dirs.items():
            (d / KEY_FILE).write_text(output_keys.get(name, key))
        result_file.write_text(json.dumps(result, default=str))
        done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    for name, artifact_path in outputs.items():
        _link(dirs[name], artifact_path)
    seconds = time.perf_counter() - t0
    _record_timing(work_root, stage, key, seconds, reused)
    if not reused:
        log.info("stage %s: done in %.1f s", stage, seconds)
    events.stage_event(stage, "end", seconds=round(seconds, 3))
    return result


def write_pointer(artifact_dir: PathLike, model_dir: PathLike) -> None:
    """Record where, inside an output artifact, the library put the usable model directory."""
    artifact_dir, model_dir = Path(artifact_dir), Path(model_dir)
    try:
        rel = model_dir.resolve().relative_to(artifact_dir.resolve())
    except ValueError:
        raise CosmosError(f"{model_dir}: model directory is outside the output artifact {artifact_dir}") from None
    (artifact_dir / POINTER_FILE).write_text(str(rel))


def read_pointer(artifact_dir: PathLike) -> Path:
    """The model directory recorded by :func:`write_pointer` (the artifact itself if none)."""
    artifact_dir = Path(artifact_dir)
    pointer = artifact_dir / POINTER_FILE
    if pointer.is_file():
        return (artifact_dir / pointer.read_text().strip()).resolve()
    return artifact_dir


def copy_tree(src: PathLike, dst: PathLike) -> Path:
    """Copy a directory's files (following symlinks) into ``dst``; returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=False, ignore=shutil.ignore_patterns(KEY_FILE))
    return dst


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temp file + rename): a kill never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
