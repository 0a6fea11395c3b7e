"""What every COSMOS component does around its one library call: config, timing, local resume.

Why this module exists: a KFP lightweight component ships only its function's source to the
container, so anything shared must come from the installed package (``components`` is packaged
next to ``cosmos``). This module holds no algorithm; it only decides *where* a stage writes and
*whether* it has to run at all.

Two modes, chosen by the ``work_root`` pipeline parameter:

* ``work_root == ""`` (a cluster): each stage writes straight into its KFP output artifact
  directories; KFP's own cache decides what re-runs.
* ``work_root = OUT/work`` (``cosmos run``): kfp.local gives every run fresh artifact paths, so
  a killed run would redo everything. Instead each stage works in a *deterministic* directory
  ``work_root/<stage>-<key>`` where ``key`` hashes the stage name, its parameters, the config
  sections it reads and the keys of its input artifacts (lineage, written to ``.cosmos_key`` in
  every output). A stage whose directory holds ``DONE`` is reused at once; a stage that was
  killed re-enters the same directory, so the library's own resume (translator checkpoints,
  nnU-Net ``checkpoint_latest.pth``) continues where it stopped. The KFP output artifact path is
  then a symlink to that directory. Every stage appends its compute seconds to
  ``work_root/timings.jsonl`` (read by ``benchmarks/local_overhead.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger("cosmos.component")

KEY_FILE = ".cosmos_key"
DONE_FILE = "DONE"
RESULT_FILE = "result.json"
TIMINGS_FILE = "timings.jsonl"


def setup() -> None:
    """Logging for a component process (stderr; KFP shows it in the pod log)."""
    import logging as _logging

    from cosmos.logs import setup_logging

    root = _logging.getLogger()
    for handler in list(root.handlers):  # KFP's executor basicConfig would print every line twice
        if not getattr(handler, "_cosmos", False):
            root.removeHandler(handler)
    setup_logging()
    # Pods are not terminals: tqdm bars degrade to periodic lines (cosmos.logs.progress).


def load_cfg(profile: str, config: str = "", experiment: str = ""):
    """The run's config: the named profile, then ``config`` (a YAML mapping) merged over it.

    Every component resolves the same two pipeline parameters the same way, so all stages see one
    configuration. ``experiment`` (pipeline parameter) overrides ``tracking.experiment`` when set.
    """
    from cosmos.config import load_config
    from cosmos.errors import CosmosError

    text = (config or "").strip()
    if text:
        import yaml

        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CosmosError(f"pipeline parameter 'config' is not valid YAML: {exc}") from None
        if parsed is not None and not isinstance(parsed, dict):
            raise CosmosError("pipeline parameter 'config' must be a YAML mapping (sections -> keys)")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            fh.write(text)
            path = fh.name
        try:
            cfg = load_config(profile or "tiny", path)
        finally:
            os.unlink(path)
    else:
        cfg = load_config(profile or "tiny")
    if experiment:
        cfg.tracking.experiment = experiment
    return cfg


def input_key(path: str | os.PathLike | None) -> str:
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


def stage_key(stage: str, params: Mapping[str, Any], inputs: Iterable[str | os.PathLike | None],
              cfg=None, sections: Iterable[str] = ()) -> str:
    """sha256 over the stage name, its parameters, the config sections it reads and input keys."""
    payload: dict[str, Any] = {"stage": stage, "params": dict(params), "inputs": [input_key(i) for i in inputs]}
    if cfg is not None:
        data = cfg.to_dict()
        payload["config"] = {"seed": data.get("seed"), **{s: data[s] for s in sections}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _link(target: Path, artifact_path: str) -> None:
    """Make the KFP artifact path point at ``target`` (local mode)."""
    ap = Path(artifact_path)
    if ap.is_symlink() or ap.is_file():
        ap.unlink()
    elif ap.is_dir():
        shutil.rmtree(ap)
    ap.parent.mkdir(parents=True, exist_ok=True)
    ap.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def _record_timing(work_root: str, stage: str, key: str, seconds: float, reused: bool) -> None:
    if not work_root:
        return
    line = json.dumps({"stage": stage, "key": key, "seconds": round(seconds, 3), "reused": reused,
                       "end": time.time()})
    with open(Path(work_root) / TIMINGS_FILE, "a") as fh:
        fh.write(line + "\n")


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


def _arm_fast_exit() -> None:
    """Local mode only (``work_root`` set), and only in a KFP executor process (never, say, in
    pytest, whose exit code must survive); COSMOS_FAST_EXIT=0 turns it off."""
    import atexit
    import sys

    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    in_executor = getattr(main_spec, "name", "") == "kfp.dsl.executor_main"
    if in_executor and os.environ.get("COSMOS_FAST_EXIT", "1") != "0":
        atexit.register(_fast_exit)


def _call(stage: str, body: Callable[[dict[str, Path]], Any], dirs: dict[str, Path]) -> Any:
    """Run the body; a user-facing CosmosError is logged as one clear line before it propagates."""
    from cosmos.errors import CosmosError

    try:
        return body(dirs)
    except CosmosError as exc:
        log.error("stage %s failed: %s", stage, exc)
        raise


def run_stage(
    stage: str,
    outputs: Mapping[str, str],
    body: Callable[[dict[str, Path]], Any],
    *,
    key: str,
    work_root: str = "",
) -> Any:
    """Run ``body(output_dirs)`` once per key; return its JSON-serialisable result.

    ``outputs`` maps output names to KFP artifact paths (each used as a directory). See the module
    docstring for the two modes. The result of a finished stage is stored in ``result.json`` so a
    reused stage returns the same output parameters (e.g. an MLflow run id) as the first time.
    """
    t0 = time.perf_counter()
    if not work_root:
        dirs = {name: Path(p) for name, p in outputs.items()}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        log.info("stage %s: start", stage)
        result = _call(stage, body, dirs)
        for d in dirs.values():
            (d / KEY_FILE).write_text(key)
        seconds = time.perf_counter() - t0
        log.info("stage %s: done in %.1f s", stage, seconds)
        return result

    work = Path(work_root) / f"{stage}-{key}"
    work.mkdir(parents=True, exist_ok=True)
    dirs = {name: work / name for name in outputs}
    done, result_file = work / DONE_FILE, work / RESULT_FILE
    if done.exists():
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        reused = True
        log.info("stage %s: reusing finished work in %s", stage, work)
    else:
        reused = False
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        log.info("stage %s: start (work dir %s)", stage, work)
        result = _call(stage, body, dirs)
        for d in dirs.values():
            (d / KEY_FILE).write_text(key)
        result_file.write_text(json.dumps(result, default=str))
        done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    for name, artifact_path in outputs.items():
        _link(dirs[name], artifact_path)
    seconds = time.perf_counter() - t0
    _record_timing(work_root, stage, key, seconds, reused)
    _arm_fast_exit()
    if not reused:
        log.info("stage %s: done in %.1f s", stage, seconds)
    return result


POINTER_FILE = ".cosmos_model_dir"


def write_pointer(artifact_dir: str | os.PathLike, model_dir: str | os.PathLike) -> None:
    """Record where, inside an output artifact, the library put the usable model directory."""
    artifact_dir, model_dir = Path(artifact_dir), Path(model_dir)
    try:
        rel = model_dir.resolve().relative_to(artifact_dir.resolve())
    except ValueError:
        from cosmos.errors import CosmosError

        raise CosmosError(f"{model_dir}: model directory is outside the output artifact {artifact_dir}") from None
    (artifact_dir / POINTER_FILE).write_text(str(rel))


def read_pointer(artifact_dir: str | os.PathLike) -> Path:
    """The model directory recorded by :func:`write_pointer` (the artifact itself if none)."""
    artifact_dir = Path(artifact_dir)
    pointer = artifact_dir / POINTER_FILE
    if pointer.is_file():
        return (artifact_dir / pointer.read_text().strip()).resolve()
    return artifact_dir


RUN_INFO_FILE = "run.json"


def write_run_info(artifact_dir: str | os.PathLike, run_id: str, round_index: int) -> None:
    (Path(artifact_dir) / RUN_INFO_FILE).write_text(json.dumps({"run_id": run_id, "round": round_index}))


def read_run_id(artifact_dir: str | os.PathLike | None) -> str | None:
    """The round's MLflow run id from start_round_run's artifact (None when there is none)."""
    if artifact_dir is None:
        return None
    path = Path(artifact_dir) / RUN_INFO_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id") or None


def mlflow_tracking(tracking_uri: str, scratch_dir: str | os.PathLike) -> str:
    """The tracking URI a stage uses: the parameter, else $MLFLOW_TRACKING_URI (cluster Secret),
    else SQLite beside the stage's output (only useful for a throw-away local test)."""
    from cosmos.tracking import resolve_tracking_uri

    return resolve_tracking_uri(tracking_uri or None, scratch_dir)


def log_round_metrics(run_id: str, round_index: int, result: Mapping[str, Any], tracking_uri: str) -> None:
    """Log an ``evaluate_folder`` summary to the round's MLflow run.

    Names follow ``cosmos selftrain`` (cosmos.selftraining.loop): ``val_dice_VS``,
    ``val_assd_cochlea_std``, ... plus ``val_dice_mean`` / ``val_assd_mean`` for the structure mean.
    """
    from cosmos.segmentation.mlflow_logging import start_round_run

    values: dict[str, float] = {}
    for structure, entry in (result.get("summary") or {}).items():
        for key, v in (entry or {}).items():
            if isinstance(v, (int, float)) and "_" in key:
                metric, stat = key.split("_", 1)
                values[f"val_{metric}_{structure}" + ("" if stat == "mean" else "_std")] = float(v)
    if "n_cases" in result:
        values["val_cases_scored"] = float(result["n_cases"])
    run = start_round_run(round_index, tracking_uri=tracking_uri, resume_run_id=run_id)
    run.log_metrics(values)
    run.log_dict(dict(result), "metrics.json")


def end_round_run(run_id: str, round_index: int, tracking_uri: str) -> None:
    """Mark the round's MLflow run FINISHED once its model is registered."""
    from cosmos.segmentation.mlflow_logging import start_round_run

    start_round_run(round_index, tracking_uri=tracking_uri, resume_run_id=run_id).end("FINISHED")


ROUNDS_FILE = "rounds.json"


def round_name(index: int) -> str:
    return "teacher" if index == 0 else f"student {index}"


def append_round_summary(out_dir: str | os.PathLike, previous_dir: str | os.PathLike | None, *, round_index: int,
                         model_version: str, scores_dir: str | os.PathLike, predictions_dir: str | os.PathLike,
                         pseudo_labels_dir: str | os.PathLike | None = None,
                         kept_dir: str | os.PathLike | None = None, run_id: str | None = None) -> Path:
    """The cumulative summary artifact: the previous rounds plus this one (see report_register).

    Layout: ``rounds.json`` (the report's ``rounds`` entries, paths relative to the artifact) and
    ``round_<k>/{metrics.json, predictions/, pseudo_labels/}``.
    """
    out = Path(out_dir)
    rounds: list[dict[str, Any]] = []
    if previous_dir is not None:
        shutil.copytree(previous_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(KEY_FILE))
        rounds = json.loads((out / ROUNDS_FILE).read_text())
    rounds = [r for r in rounds if r["index"] != round_index]
    rdir = out / f"round_{round_index}"
    rdir.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"index": round_index, "name": round_name(round_index), "metrics": None,
                             "kept": [], "dropped": [], "pseudo_labels_dir": None, "predictions_dir": None,
                             "model_version": model_version or None, "run_id": run_id or None}
    scores = Path(scores_dir) / "metrics.json"
    if scores.is_file():
        shutil.copyfile(scores, rdir / "metrics.json")
        entry["metrics"] = f"round_{round_index}/metrics.json"
    copy_tree(predictions_dir, rdir / "predictions")
    entry["predictions_dir"] = f"round_{round_index}/predictions"
    if pseudo_labels_dir is not None:
        copy_tree(pseudo_labels_dir, rdir / "pseudo_labels")
        entry["pseudo_labels_dir"] = f"round_{round_index}/pseudo_labels"
    if kept_dir is not None:
        from cosmos.selftraining.filtering import read_filter_summary

        filtered = read_filter_summary(kept_dir)
        if filtered is not None:
            entry["kept"], entry["dropped"] = list(filtered.kept), list(filtered.dropped)
    rounds.append(entry)
    rounds.sort(key=lambda r: r["index"])
    (out / ROUNDS_FILE).write_text(json.dumps(rounds, indent=2))
    return out


def build_report_summary(summary_dir: str | os.PathLike, bundle_dir: str | os.PathLike, *, data_dir: str,
                         pseudo_dir: str | None, profile: str) -> tuple[dict[str, Any], str, str | None]:
    """The ``write_report`` summary dict from the cumulative summary artifact, and the bundle.

    Fills ``bundle_dir`` with the run's final outputs: ``predictions/`` (last round),
    ``metrics.json`` (last round, when scored) and ``summary.json``. Returns the summary, the
    final mean Dice as text and the final round's MLflow run id (None without tracking).
    """
    src, bundle = Path(summary_dir).resolve(), Path(bundle_dir)
    rounds = json.loads((src / ROUNDS_FILE).read_text())
    entries = []
    for r in rounds:
        e = dict(r)
        e.pop("run_id", None)
        e["metrics"] = json.loads((src / r["metrics"]).read_text()) if r.get("metrics") else None
        for k in ("pseudo_labels_dir", "predictions_dir"):
            e[k] = str(src / r[k]) if r.get(k) else None
        entries.append(e)
    final = entries[-1]
    copy_tree(final["predictions_dir"], bundle / "predictions")
    dice = "n/a"
    if final["metrics"] is not None:
        (bundle / "metrics.json").write_text(json.dumps(final["metrics"], indent=2))
        value = ((final["metrics"].get("summary") or {}).get("mean") or {}).get("dice_mean")
        dice = f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
    summary = {"title": f"COSMOS run ({profile} profile)", "profile": profile, "data_dir": str(data_dir),
               "pseudo_dir": str(pseudo_dir) if pseudo_dir else None, "rounds": entries}
    (bundle / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary, dice, rounds[-1].get("run_id")


def log_report(run_id: str, round_index: int, report_dir: str | os.PathLike, tracking_uri: str) -> None:
    """Attach the report (Markdown, HTML, PNGs) to the final round's MLflow run under ``report/``."""
    from cosmos.segmentation.mlflow_logging import start_round_run

    run = start_round_run(round_index, tracking_uri=tracking_uri, resume_run_id=run_id)
    for path in sorted(Path(report_dir).iterdir()):
        if path.is_file():
            run.log_artifact(path, "report")
    run.end("FINISHED")


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a directory's files (following symlinks) into ``dst``; returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=False, ignore=shutil.ignore_patterns(KEY_FILE))
    return dst


def self_contained_html(html_path: str | os.PathLike) -> str:
    """The report's HTML with every local ``<img src="x.png">`` inlined as base64.

    Why: the Kubeflow UI renders an HTML artifact as one file, so linked PNGs would not show.
    """
    import base64
    import re

    html_path = Path(html_path)
    text = html_path.read_text()

    def inline(match: "re.Match[str]") -> str:
        src = match.group(2)
        p = (html_path.parent / src)
        if "://" in src or src.startswith("data:") or not p.is_file():
            return match.group(0)
        data = base64.b64encode(p.read_bytes()).decode()
        mime = "image/png" if p.suffix.lower() == ".png" else "image/" + p.suffix.lower().lstrip(".")
        return f'{match.group(1)}data:{mime};base64,{data}{match.group(3)}'

    return re.sub(r'(<img[^>]*?src=")([^"]+)(")', inline, text)
