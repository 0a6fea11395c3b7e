"""``cosmos run`` / ``selftrain`` / ``benchmark``: the SAME DAGs as on a cluster, executed here by ``kfp.local``.

``cosmos run`` runs ``cosmos-pipeline``; ``cosmos selftrain`` runs it compiled to start from an
existing pseudo-hrT2 folder; ``cosmos benchmark`` runs ``cosmos-benchmark``. One executor
(:func:`_execute`) serves all three.

Layout of ``OUT`` (everything a run writes stays under it)::

    OUT/predictions/crossmoda_{k}_Label.nii.gz   final round, every target-validation case
    OUT/report/report.{md,html} + PNGs           the report
    OUT/metrics.json                             final round scores (``cosmos evaluate`` schema), if labelled
    OUT/summary.json                             every round (what the report shows)
    OUT/mlflow/mlflow.db + artifacts/            MLflow tracking + registry (SQLite), unless --set tracking.tracking_uri
    OUT/work/<stage>-<key>/                      each stage's deterministic work dir (resume), timings.jsonl
    OUT/pipeline_root/                           kfp.local artifacts (symlinks into work/)
    OUT/kfp_cache/                               kfp.local's task cache entries
    OUT/tmp/                                     TMPDIR for the tasks (kfp.local leaves mktemp dirs)

Resume, in two layers: kfp.local's own task cache (``enable_caching``) skips tasks whose inputs
are unchanged without even starting them, and every component works in ``OUT/work/<stage>-<key>``
(``key`` = hash of stage, parameters, config sections and input lineage; see
``cosmos.resume``), so a task killed half-way re-enters the same folder and the library
resumes from its checkpoints. Re-running the same command with the same ``--out`` therefore redoes
no finished work.

Local differences from a cluster, all from kfp.local: accelerator settings and the
credentials Secret are ignored (the warning is silenced here), at most 2 loop iterations run at
once, and the pipeline root must be a local directory.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

LOCAL_PARALLELISM = 2  # kfp.local's hard cap on concurrent loop iterations


@dataclass
class LocalRunResult:
    out_dir: Path
    predictions_dir: Path
    report_dir: Path
    metrics_file: Path | None
    summary_file: Path
    tracking_uri: str
    wall_seconds: float
    stage_seconds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def compute_seconds(self) -> float:
        """Compute time of the stages that ran in this invocation (reused stages excluded)."""
        return sum(s["seconds"] for s in self.stage_seconds if not s.get("reused"))


class _KfpLogFilter(io.TextIOBase):
    """Drops kfp.local's bulky echo (executor-input JSON, artifact dumps) from the console.

    Why: every task prints its whole executor input (~50 lines); the stage log lines, kfp's
    "Executing task"/"finished" lines and our timings are what a person wants to watch. Lines are
    judged one at a time because parallel fold tasks interleave their output; what counts as kfp's
    echo is decided in :mod:`pipelines.console.kfp_lines`, the one module that knows kfp's wording.
    """

    def __init__(self, stream):
        super().__init__()
        self._stream = stream
        self._buf = ""
        self._lock = threading.Lock()
        self._blank = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._buf += text
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        from pipelines.console import kfp_lines

        if kfp_lines.is_echo(line):
            return
        if not line.strip():
            if self._blank:
                return
            self._blank = True
        else:
            self._blank = False
        self._stream.write(line + "\n")
        self._stream.flush()

    def flush(self) -> None:
        with self._lock:
            if self._buf:
                self._emit(self._buf)
                self._buf = ""
        self._stream.flush()


def _read_timings(work_root: Path, since: float) -> list[dict[str, Any]]:
    path = work_root / "timings.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("end", 0) >= since]


def _publish(bundle: Path, out: Path) -> tuple[Path, Path, Path | None, Path]:
    """Copy the report bundle's final outputs to their documented places under ``out``."""
    bundle = bundle.resolve()
    preds, report = out / "predictions", out / "report"
    for name, dst in (("predictions", preds), ("report", report)):
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(bundle / name, dst, ignore=shutil.ignore_patterns(".cosmos_*"))
    metrics: Path | None = out / "metrics.json"
    if (bundle / "metrics.json").is_file():
        shutil.copyfile(bundle / "metrics.json", out / "metrics.json")
    else:
        (out / "metrics.json").unlink(missing_ok=True)
        metrics = None
    summary = out / "summary.json"
    shutil.copyfile(bundle / "summary.json", summary)
    return preds, report, metrics, summary


def _local_path(value: str | None) -> str:
    """Absolute local paths (tasks may run elsewhere); s3:// and "" unchanged."""
    if not value:
        return ""
    if "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def _execute(pipeline, args: dict[str, Any], out: Path, verbose: bool) -> Path:
    """Run a pipeline function through kfp.local under ``out``; returns its output artifact's path.

    The one local executor behind ``cosmos run``, ``cosmos selftrain`` and ``cosmos benchmark``.
    """
    from kfp import local

    from cosmos.errors import CosmosError
    from cosmos.logs import swap_stream

    work_root = out / "work"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(out / "pipeline_root"),
        workspace_root=str(out / "workspace"),
        enable_caching=True,
        cache_root=str(out / "kfp_cache"),
    )
    stdout = sys.stdout
    redirected: list[tuple[logging.StreamHandler, Any]] = []
    if not verbose:
        sys.stdout = _KfpLogFilter(stdout)  # type: ignore[assignment]
        # kfp.local's parallel tasks swap logging handlers without a lock, so some of its lines end
        # up on our own handlers: filter those too.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.__stderr__,
                sys.__stdout__,
                stdout,
                sys.stderr,
            ):
                redirected.append((handler, swap_stream(handler, _KfpLogFilter(handler.stream))))
    try:
        with warnings.catch_warnings():
            # kfp.local ignores accelerator/resource settings and says so per task; we know.
            warnings.filterwarnings("ignore", message=r"Task .* settings .* have no effect in the current local runner")
            # ... and warns that our image name does not contain "python" (the tasks run in this venv).
            warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"kfp\..*")
            from pipelines.console.plan import plan_tasks
            from pipelines.console.views import choose_mode, make_view
            from pipelines.run_guard import supervise  # one-line stage failures, full log file, no orphans

            # One line per stage on a terminal (plain stage lines in a pod or CI); --verbose: the full stream.
            view = make_view(choose_mode(stdout, verbose), stdout, title=f"COSMOS {getattr(pipeline, 'name', '')}")
            plan = plan_tasks(pipeline, args) if view is not None else None
            with supervise(
                out, work_root, args.get("data_uri", ""), args.get("val_labels_uri", ""), verbose, view=view, plan=plan
            ):
                task = pipeline(**args)
    except RuntimeError as exc:
        from pipelines.console.kfp_lines import strip_ansi

        message = strip_ansi(str(exc)).rstrip(". ")
        raise CosmosError(
            f"local pipeline run failed: {message}. The failed task's log is in {out / 'logs'} "
            f"(look for 'failed:'); fix the cause and re-run the same command: finished stages are "
            f"reused from {work_root}."
        ) from None
    finally:
        if not verbose:
            sys.stdout.flush()
        sys.stdout = stdout
        for handler, original in redirected:
            try:
                handler.flush()
            except ValueError:  # its stream was closed under it (an earlier command's capture)
                pass
            swap_stream(handler, original)
    return Path(task.output.path if hasattr(task, "output") else task.outputs["Output"].path)


def _prepare_out(out_dir: str | Path) -> Path:
    from cosmos import events
    from cosmos.errors import CosmosError

    if str(out_dir).startswith("s3:"):
        raise CosmosError("--out must be a local directory (kfp.local cannot use an s3:// pipeline root)")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CosmosError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for d in ("tmp", "work", "pipeline_root"):
        (out / d).mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(out / "tmp")  # tasks inherit it; kfp.local leaves its mktemp dirs there
    os.environ.setdefault("COSMOS_NO_PROGRESS", "0")
    # the tasks' progress events every second (a pod log gets one per 10 s): the live view redraws twice a second
    os.environ.setdefault(events.INTERVAL_ENV, "1")
    return out


def _local_options(cfg, profile: str | None, **extra: Any):
    """PipelineOptions for a local run: K and folds from the resolved config, cores split per fold."""
    from cosmos.cpu import share_of_cores
    from pipelines.task_settings import PipelineOptions

    concurrent_folds = min(len(cfg.segmentation.folds), LOCAL_PARALLELISM)
    if cfg.segmentation.torch_threads == 0 and concurrent_folds > 1:
        # Folds train side by side here: give each its share of the cores (why: cosmos.cpu).
        cfg = cfg.with_overrides({"segmentation.torch_threads": share_of_cores(concurrent_folds)})
    opts = PipelineOptions(
        rounds=cfg.selftraining.rounds,
        folds=tuple(cfg.segmentation.folds),
        parallelism=LOCAL_PARALLELISM,
        profile=profile or cfg.profile,
        experiment=cfg.tracking.experiment,
        local=True,  # one ingest task: kfp.local cannot run the cluster DAG's data_fingerprint branch
        **extra,
    )
    return cfg, opts


def _common_args(cfg, opts, out: Path, tracking_uri: str) -> dict[str, Any]:
    return dict(
        profile=opts.profile,
        config=cfg.to_yaml(),
        folds=[int(f) for f in cfg.segmentation.folds],
        tracking_uri=tracking_uri,
        experiment=cfg.tracking.experiment,
        work_root=str(out / "work"),
    )


def _check_dir(what: str, value: str | None) -> None:
    from cosmos.errors import CosmosError

    if value and "://" not in value and not Path(value).expanduser().is_dir():
        raise CosmosError(f"{what} {value}: no such directory")


def _finish(bundle: Path, out: Path, tracking_uri: str, wall: float, started_wall: float) -> LocalRunResult:
    preds, report, metrics, summary = _publish(bundle, out)
    return LocalRunResult(
        out_dir=out,
        predictions_dir=preds,
        report_dir=report,
        metrics_file=metrics,
        summary_file=summary,
        tracking_uri=tracking_uri,
        wall_seconds=wall,
        stage_seconds=_read_timings(out / "work", started_wall),
    )


def _run_dag(
    cfg, out: Path, *, build: Callable, args: dict[str, Any], command: str, what: str, profile, verbose, **opt_extra
) -> tuple[Path, str, float, float]:
    """The one local sequence of every entry point: options from the resolved config, the common
    pipeline arguments, one kfp.local execution. Returns (bundle, tracking URI, wall s, start time)."""
    from cosmos.tracking import default_tracking_uri

    tracking_uri = cfg.tracking.tracking_uri or default_tracking_uri(out)
    cfg, opts = _local_options(cfg, profile, **opt_extra)
    full = dict(args, **_common_args(cfg, opts, out, tracking_uri))
    log.info(
        "%s: profile %s, teacher + %d student round(s), folds %s, %s -> %s",
        command,
        opts.profile,
        opts.rounds,
        list(cfg.segmentation.folds),
        what,
        out,
    )
    started_wall, t0 = time.time(), time.perf_counter()
    bundle = _execute(build(opts), full, out, verbose)
    return bundle, tracking_uri, time.perf_counter() - t0, started_wall


def run_local(
    cfg,
    out_dir: str | Path,
    data: str | None = None,
    val_labels: str | None = None,
    profile: str | None = None,
    verbose: bool = False,
) -> LocalRunResult:
    """Run the whole COSMOS pipeline locally; see the module docstring for ``out_dir``'s layout.

    ``cfg`` is the resolved config (profile + file + overrides); it reaches every task as the
    ``config`` pipeline parameter. ``data``: a crossMoDA folder or ``s3://`` URI; None = phantom.
    """
    from pipelines.cosmos_pipeline import build_pipeline

    for what, value in (("--data", data), ("--val-labels", val_labels)):
        _check_dir(what, value)
    out = _prepare_out(out_dir)
    args = dict(data_uri=_local_path(data), val_labels_uri=_local_path(val_labels))
    done = _run_dag(
        cfg,
        out,
        build=build_pipeline,
        args=args,
        command="cosmos run",
        what=f"data {data or 'built-in phantom'}",
        profile=profile,
        verbose=verbose,
    )
    return _finish(done[0], out, *done[1:])


def run_selftrain_local(
    cfg,
    out_dir: str | Path,
    *,
    pseudo: str,
    target: str,
    val: str | None = None,
    val_labels: str | None = None,
    profile: str | None = None,
    verbose: bool = False,
) -> LocalRunResult:
    """``cosmos selftrain``: the same DAG from an existing pseudo-hrT2 folder (no translator stages).

    The hrT2 folders are presented to the ingest stage as a crossMoDA tree of links under
    ``OUT/inputs/data`` (``--target`` may be a crossMoDA root or its ``target_training``).
    """
    from cosmos.data import layout
    from cosmos.errors import CosmosError
    from pipelines.cosmos_pipeline import build_pipeline

    for what, value in (("--pseudo", pseudo), ("--target", target), ("--val", val), ("--val-labels", val_labels)):
        _check_dir(what, value)
    if val_labels and not val:
        raise CosmosError("--val-labels needs --val (the validation images)")
    out = _prepare_out(out_dir)
    data = out / "inputs" / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    target_dir = Path(target).expanduser().resolve()
    if (target_dir / layout.TARGET_DIR).is_dir():
        target_dir = target_dir / layout.TARGET_DIR
    links = {layout.TARGET_DIR: target_dir}
    if val:
        val_dir = Path(val).expanduser().resolve()
        links[layout.VALIDATION_DIR] = (
            val_dir / layout.VALIDATION_DIR if (val_dir / layout.VALIDATION_DIR).is_dir() else val_dir
        )
    if val_labels:
        links[layout.VALIDATION_LABELS_DIR] = Path(val_labels).expanduser().resolve()
    for name, src in links.items():
        (data / name).symlink_to(src, target_is_directory=True)
    args = dict(data_uri=str(data), val_labels_uri="", pseudo_uri=_local_path(pseudo))
    done = _run_dag(
        cfg,
        out,
        build=build_pipeline,
        args=args,
        command="cosmos selftrain",
        what=f"pseudo {pseudo}",
        profile=profile,
        verbose=verbose,
        start="pseudo",
    )
    return _finish(done[0], out, *done[1:])


def run_benchmark_local(
    cfg,
    out_dir: str | Path,
    *,
    data: str,
    val_labels: str | None = None,
    rows: tuple[str, ...] | None = None,
    profile: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """``cosmos benchmark``: the ``cosmos-benchmark`` DAG locally; writes ``OUT/benchmark.{json,md,png}``.

    ``rows`` default: every row the data allows (the oracle only with ``target_training_labels/``).
    """
    from pipelines.benchmark_pipeline import BENCHMARK_ROWS, build_benchmark_pipeline

    _check_dir("--data", data)
    _check_dir("--val-labels", val_labels)
    out = _prepare_out(out_dir)
    if rows is None:
        has_oracle = "://" in data or (Path(data) / "target_training_labels").is_dir()
        rows = tuple(r for r in BENCHMARK_ROWS if r != "oracle" or has_oracle)
    chosen = tuple(rows)
    bundle, tracking_uri, wall, started_wall = _run_dag(
        cfg,
        out,
        build=lambda opts: build_benchmark_pipeline(opts, rows=chosen),
        args=dict(data_uri=_local_path(data), val_labels_uri=_local_path(val_labels)),
        command="cosmos benchmark",
        what=f"rows {', '.join(chosen)}",
        profile=profile,
        verbose=verbose,
    )
    table = bundle.resolve()
    for name in ("benchmark.json", "benchmark.md", "benchmark.png"):
        shutil.copyfile(table / name, out / name)
    result = json.loads((out / "benchmark.json").read_text())
    timings = _read_timings(out / "work", started_wall)
    result["seconds"] = {
        "wall": round(wall, 1),
        "compute": round(sum(t["seconds"] for t in timings if not t.get("reused")), 1),
    }
    result["tracking_uri"] = tracking_uri
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    return result


def describe(result: LocalRunResult) -> str:
    """The closing message: where everything is, and how to open the MLflow UI."""
    lines = ["", f"COSMOS run finished in {result.wall_seconds:.0f} s ({result.out_dir})"]
    ran = sorted((s for s in result.stage_seconds if not s.get("reused")), key=lambda s: -s["seconds"])
    reused = [s for s in result.stage_seconds if s.get("reused")]
    # One line, not one per stage: the live view above (or the plain stage lines) already listed each stage.
    if ran:
        slowest = ", ".join(f"{s['stage']} {s['seconds']:.0f} s" for s in ran[:3])
        lines.append(
            f"  stages      : {len(ran)} ran ({result.compute_seconds:.0f} s of compute; slowest {slowest})"
            + (f", {len(reused)} reused" if reused else "")
        )
    elif reused:
        lines.append(f"  stages      : all {len(reused)} reused from an earlier run")
    lines.append(f"  stage logs  : {result.out_dir / 'logs'}/<stage>.log  (every task: tasks.log)")
    n_pred = len(list(result.predictions_dir.glob("*.nii.gz")))
    lines += [
        f"  predictions : {result.predictions_dir}  ({n_pred} target-validation case(s))",
        f"  report      : {result.report_dir / 'report.html'}  (and report.md)",
    ]
    summary = run_summary(result)
    final = summary.get("final_round")
    if result.metrics_file is not None:
        try:
            mean = json.loads(result.metrics_file.read_text())["summary"]["mean"]
            score = f"  (final round {final}: mean Dice {mean['dice_mean']:.3f}, mean ASSD {mean['assd_mean']:.2f} mm)"
        except (KeyError, TypeError, ValueError):
            score = ""
        lines.append(f"  metrics     : {result.metrics_file}{score}")
    else:
        lines.append("  metrics     : none (no validation labels)")
    champion = summary.get("champion_round")
    if champion is None:
        lines.append("  champion    : none promoted")
    elif champion != final:
        dice = summary.get("champion_mean_dice")
        lines.append(
            f"  champion    : round {champion}"
            + (f" (mean Dice {dice:.3f})" if isinstance(dice, (int, float)) else "")
            + " -- NOT the reported round: chosen by the promotion gate, its score is not a held-out figure"
        )
    else:
        lines.append(f"  champion    : round {champion} (the reported round)")
    lines.append(f"  MLflow      : {result.tracking_uri}")
    if result.tracking_uri.startswith("sqlite:///"):
        lines.append(f"  open the MLflow UI: mlflow ui --backend-store-uri {result.tracking_uri}")
    outcome = summary.get("verdict") or {}
    if outcome.get("line"):
        lines.append(outcome["line"])
    return "\n".join(lines)


def run_summary(result: LocalRunResult) -> dict[str, Any]:
    """The run's ``summary.json`` (empty when unreadable)."""
    try:
        return dict(json.loads(result.summary_file.read_text()))
    except (OSError, ValueError):
        return {}


def exit_code(result: LocalRunResult) -> int:
    """0 when the run's label-free verdict passed, ``verdict.EXIT_CHECKS_FAILED`` (3) when it failed."""
    from cosmos.selftraining.verdict import EXIT_CHECKS_FAILED

    outcome = run_summary(result).get("verdict") or {}
    return 0 if outcome.get("passed", True) else EXIT_CHECKS_FAILED
