"""Bytes moved per stage on a cluster: ARITHMETIC FROM THE COMPILED IR, not a measurement.

On Kubeflow every task's launcher downloads each of its input artifacts from the pipeline root
(S3) onto the node's local disk before the task starts, and uploads each output artifact after it
ends. Which artifacts a task consumes and produces, how many times a task runs (a ``ParallelFor``
over the folds runs its body once per fold; an artifact list gathered from a loop is downloaded
whole) and how many rounds there are, is read here from the compiled pipeline spec (the same
package ``cosmos compile`` writes). How large each artifact is, is a SIZE MODEL: a formula per
producer output in terms of the dataset (scan counts and sizes), printed with every assumption.
Nothing is run on a cluster and nothing is timed.

Two datasets by default:
  * crossMoDA scale: ``--scans 500`` scans of ``--mb-per-scan 100`` MB, split in the proportions of
    crossMoDA 2021 (105 source ceT1 with labels, 105 target hrT2, 32 validation hrT2 of 242);
  * the phantom of the profile (``cfg.phantom``: counts and scale); its per-scan sizes are
    MEASURED by generating one case of each kind with ``cosmos.data.phantom`` (a minute at full scale).

    python benchmarks/bytes_moved.py [--profile paper] [--scans 500] [--mb-per-scan 100]
        [--folds 5] [--rounds 3] [--no-phantom] [--package cosmos-pipeline.yaml]

Prints, per dataset, one row per task (fan-out, GB down, GB up, what it downloads), totals per
stage and for the run, and how many times the ingest dataset is downloaded.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from the repository
    sys.path.insert(0, str(REPO))

# crossMoDA 2021 training/validation split: 105 ceT1 (labelled), 105 hrT2 (unlabelled), 32 hrT2 (validation)
CROSSMODA_SPLIT = (105, 105, 32)
SMALL_MB = 0.1  # JSON/HTML artifacts: run ids, scores, summaries, metrics, reports


@dataclass(frozen=True)
class Dataset:
    """What the size model needs: counts and per-scan sizes (MB) of each kind of file."""

    name: str
    n_source: int
    n_target: int
    n_val: int
    source_mb: float  # one ceT1 image
    source_label_mb: float  # its label map
    target_mb: float  # one unlabelled hrT2 image
    val_mb: float  # one validation hrT2 image
    val_label_mb: float  # its label map (also the size of one predicted label map)
    measured: bool  # True: sizes measured on generated files; False: given

    @property
    def total_mb(self) -> float:
        return (
            self.n_source * (self.source_mb + self.source_label_mb)
            + self.n_target * self.target_mb
            + self.n_val * (self.val_mb + self.val_label_mb)
        )


@dataclass(frozen=True)
class SizeModel:
    """Assumptions about artifacts whose size the dataset alone does not fix."""

    roi_fraction: float  # crop_roi output / input (1.0 when the profile's ROI crop is off)
    translator_mb: float  # the CycleGAN generator checkpoint
    fold_model_mb: float  # one nnU-Net fold (checkpoint_final.pth + plans + dataset.json)
    prepared_factor: float  # nnU-Net raw + preprocessed copies of the round's training images
    label_fraction: float  # label map / image (crossMoDA-scale dataset only)


@dataclass
class TaskRow:
    task: str
    stage: str
    round_index: int | None
    fan_out: int
    down_mb: float
    up_mb: float
    inputs: list[str] = field(default_factory=list)


def crossmoda_dataset(scans: int, mb: float, label_fraction: float) -> Dataset:
    total = sum(CROSSMODA_SPLIT)
    n_source = round(scans * CROSSMODA_SPLIT[0] / total)
    n_val = round(scans * CROSSMODA_SPLIT[2] / total)
    return Dataset(
        name=f"crossMoDA scale: {scans} scans x {mb:g} MB (given, not measured)",
        n_source=n_source,
        n_target=scans - n_source - n_val,
        n_val=n_val,
        source_mb=mb,
        source_label_mb=mb * label_fraction,
        target_mb=mb,
        val_mb=mb,
        val_label_mb=mb * label_fraction,
        measured=False,
    )


def phantom_dataset(profile: str) -> Dataset:
    """The profile's phantom: counts from its config, sizes measured on one generated case per kind."""
    from cosmos.config import load_config
    from cosmos.data.phantom.writer import make_phantom

    ph = load_config(profile).phantom
    with tempfile.TemporaryDirectory(prefix="cosmos-bytes-") as tmp:
        root = make_phantom(Path(tmp) / "phantom", n_source=1, n_target=1, n_val=1, scale=ph.scale, preview=False)

        def mb(folder: str, suffix: str) -> float:
            (path,) = (root / folder).glob(f"*{suffix}.nii.gz")
            return path.stat().st_size / 1e6

        return Dataset(
            name=f"phantom of profile {profile}: {ph.n_source}+{ph.n_target}+{ph.n_val} cases, scale {ph.scale} "
            "(sizes measured on one generated case per kind)",
            n_source=ph.n_source,
            n_target=ph.n_target,
            n_val=ph.n_val,
            source_mb=mb("source_training", "_ceT1"),
            source_label_mb=mb("source_training", "_Label"),
            target_mb=mb("target_training", "_hrT2"),
            val_mb=mb("target_validation", "_hrT2"),
            val_label_mb=mb("target_validation_labels", "_Label"),
            measured=True,
        )


def output_sizes(ds: Dataset, sm: SizeModel, folds: int) -> dict[tuple[str, str], Callable[[int], float]]:
    """MB of each (stage, output key), as a function of the round index (0 = the teacher)."""
    r = sm.roi_fraction
    roi_images = r * ds.total_mb

    def prepared(k: int) -> float:  # the teacher trains on the pseudo-hrT2 only; students add kept targets
        images = ds.n_source * (ds.source_mb + ds.source_label_mb) + (ds.n_target * ds.target_mb if k else 0.0)
        return sm.prepared_factor * r * images

    target_labels = ds.n_target * r * ds.val_label_mb  # upper bound: every target case kept
    return {
        ("ingest_validate", "data"): lambda k: ds.total_mb,
        # the validation scans and labels alone (what every round's evaluate reads)
        ("ingest_validate", "validation"): lambda k: ds.n_val * (ds.val_mb + ds.val_label_mb),
        ("crop_roi", "roi_data"): lambda k: roi_images,
        ("crop_roi", "roi_records"): lambda k: SMALL_MB,  # roi.json: the crop windows
        ("train_translator", "translator"): lambda k: sm.translator_mb,
        ("translate", "pseudo"): lambda k: ds.n_source * r * (ds.source_mb + ds.source_label_mb),
        ("prepare_round", "prepared"): prepared,
        ("start_round_run", "run_info"): lambda k: SMALL_MB,
        ("train_fold", "model"): lambda k: sm.fold_model_mb,
        ("predict_pseudo_labels", "pseudo_labels"): lambda k: target_labels,
        ("predict_pseudo_labels", "kept_labels"): lambda k: target_labels,
        ("predict_validation", "predictions"): lambda k: ds.n_val * r * ds.val_label_mb,
        ("register_round", "models"): lambda k: folds * sm.fold_model_mb,
        # run ids, scores, summaries, metrics and the report: JSON, HTML, a few plots
        **{
            (stage, key): (lambda k: SMALL_MB)
            for stage, key in (
                ("prepare_round", "prepared_header"),  # the manifest and nnU-Net plan files, no images
                ("evaluate", "metrics"),
                ("evaluate", "scores"),
                ("register_round", "summary"),
                ("report", "bundle"),
                ("report", "report_html"),
                ("report", "report_md"),
            )
        },
    }


def _stage(component: str) -> str:
    """``comp-predict-validation-3`` -> ``predict_validation``."""
    name = re.sub(r"-\d+$", "", component.removeprefix("comp-"))
    return name.replace("-", "_")


def _round(task: str) -> int | None:
    """Round of a per-round task: ``train-fold`` 0, ``train-fold-3`` 2; None for a once-per-run task."""
    m = re.search(r"-(\d+)$", task)
    return int(m.group(1)) - 1 if m else 0


class IrWalk:
    """Every executor task of a compiled pipeline spec with its inputs resolved to producers."""

    def __init__(self, spec: dict[str, Any], folds: int | None):
        self.spec = spec
        self.folds_override = folds
        self.per_round = {
            _stage(c) for c in spec["components"] if re.search(r"-\d+$", c) and "executorLabel" in spec["components"][c]
        }

    def _fan_out(self, task: dict[str, Any]) -> int:
        it = task.get("parameterIterator")
        if not it:
            return 1
        items = it["items"]
        if "raw" in items:
            return len(json.loads(items["raw"]))
        if self.folds_override is not None:
            return self.folds_override
        name = items["inputParameter"].removeprefix("pipelinechannel--")
        default = self.spec["root"]["inputDefinitions"]["parameters"][name].get("defaultValue")
        return len(default or [])

    def rows(self, sizes: dict[tuple[str, str], Callable[[int], float]], unknown: set[str]) -> list[TaskRow]:
        out: list[TaskRow] = []
        self._walk(self.spec["root"]["dag"], [], 1, sizes, unknown, out)
        return out

    def _output_mb(self, dag, scope, task_name: str, key: str, sizes, unknown) -> tuple[float, str]:
        """MB of output ``key`` of ``task_name`` in ``dag`` (a loop DAG: the gathered list, all folds)."""
        task = dag["tasks"][task_name]
        comp = self.spec["components"][task["componentRef"]["name"]]
        if "dag" in comp:  # a ParallelFor: its output is the list of every iteration's artifact
            # (a dsl.OneOf of If/Else branches: the first branch's; they are the same task, one of them runs)
            sel = comp["dag"]["outputs"]["artifacts"][key]["artifactSelectors"][0]
            mb, label = self._output_mb(
                comp["dag"], scope + [task], sel["producerSubtask"], sel["outputArtifactKey"], sizes, unknown
            )
            if "parameterIterator" not in task:
                return mb, label
            n = self._fan_out(task)
            return n * mb, f"{n} x {label}"
        stage = _stage(task["componentRef"]["name"])
        fn = sizes.get((stage, key))
        if fn is None:
            unknown.add(f"{stage}.{key}")
            return SMALL_MB, f"{task_name}.{key}"
        return fn(_round(task_name) or 0), f"{task_name}.{key}"

    def _input_mb(self, dag, scope, spec_in: dict[str, Any], sizes, unknown) -> tuple[float, str]:
        if "taskOutputArtifact" in spec_in:
            src = spec_in["taskOutputArtifact"]
            return self._output_mb(dag, scope, src["producerTask"], src["outputArtifactKey"], sizes, unknown)
        name = spec_in["componentInputArtifact"]  # handed down from the enclosing loop task
        parent_task = scope[-1]  # the loop task, with the DAG it sits in
        return self._input_mb(
            parent_task["__dag__"], scope[:-1], parent_task["inputs"]["artifacts"][name], sizes, unknown
        )

    def _walk(self, dag, scope, multiplier, sizes, unknown, out: list[TaskRow]) -> None:
        for name, task in dag["tasks"].items():
            comp = self.spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                if name.startswith("condition-") and "triggerPolicy" in task and name != next(iter(dag["tasks"])):
                    continue  # an If/Else alternative to the branch walked (the same task, one of them runs)
                inner = dict(task, __dag__=dag)
                self._walk(comp["dag"], scope + [inner], multiplier * self._fan_out(task), sizes, unknown, out)
                continue
            down, labels = 0.0, []
            for key, spec_in in sorted(task.get("inputs", {}).get("artifacts", {}).items()):
                mb, label = self._input_mb(dag, scope, spec_in, sizes, unknown)
                down += mb
                labels.append(f"{key}<-{label}")
            up = 0.0
            stage = _stage(task["componentRef"]["name"])
            for key in comp.get("outputDefinitions", {}).get("artifacts", {}):
                fn = sizes.get((stage, key))
                if fn is None:
                    unknown.add(f"{stage}.{key}")
                up += fn(_round(name) or 0) if fn else SMALL_MB
            out.append(
                TaskRow(
                    task=name,
                    stage=stage,
                    round_index=_round(name) if stage in self.per_round else None,
                    fan_out=multiplier,
                    down_mb=down * multiplier,
                    up_mb=up * multiplier,
                    inputs=labels,
                )
            )


def _gb(mb: float) -> str:
    return f"{mb / 1000:9.1f}"


def report(spec: dict[str, Any], ds: Dataset, sm: SizeModel, folds: int | None) -> str:
    walk = IrWalk(spec, folds)
    n_folds = folds if folds is not None else _default_folds(spec)
    unknown: set[str] = set()
    rows = walk.rows(output_sizes(ds, sm, n_folds), unknown)
    lines = [
        f"== {ds.name}",
        f"   source {ds.n_source} x ({ds.source_mb:.2f} + label {ds.source_label_mb:.3f}) MB, "
        f"target {ds.n_target} x {ds.target_mb:.2f} MB, validation {ds.n_val} x ({ds.val_mb:.2f} + label "
        f"{ds.val_label_mb:.3f}) MB = {ds.total_mb / 1000:.1f} GB in data_uri",
        "",
        f"{'task':26s} {'x':>3s} {'GB down':>9s} {'GB up':>9s}  downloads (input <- producer output)",
    ]
    order = sorted(rows, key=lambda r: (r.round_index if r.round_index is not None else -1, r.task))
    for r in order:
        lines.append(f"{r.task:26s} {r.fan_out:3d} {_gb(r.down_mb)} {_gb(r.up_mb)}  {', '.join(r.inputs) or '-'}")
    per_stage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        per_stage[r.stage][0] += r.down_mb
        per_stage[r.stage][1] += r.up_mb
        per_stage[r.stage][2] += r.fan_out
    lines += ["", f"{'stage (all rounds)':26s} {'pods':>4s} {'GB down':>9s} {'GB up':>9s}"]
    for stage, (down, up, pods) in sorted(per_stage.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        lines.append(f"{stage:26s} {int(pods):4d} {_gb(down)} {_gb(up)}")
    total_down = sum(r.down_mb for r in rows)
    total_up = sum(r.up_mb for r in rows)
    ingest_reads = sum(r.fan_out for r in rows for i in r.inputs if i.endswith("<-ingest-validate.data"))
    lines += [
        f"{'TOTAL':26s} {sum(r.fan_out for r in rows):4d} {_gb(total_down)} {_gb(total_up)}"
        f"   (+ ingest_validate reads data_uri: {ds.total_mb / 1000:.1f} GB)",
        f"the ingest dataset ({ds.total_mb / 1000:.1f} GB) is downloaded by {ingest_reads} task pod(s): "
        f"{ingest_reads * ds.total_mb / 1000:.1f} GB",
    ]
    if unknown:
        lines.append(f"no size model for {sorted(unknown)}: counted as {SMALL_MB} MB each")
    return "\n".join(lines)


def _default_folds(spec: dict[str, Any]) -> int:
    return len(spec["root"]["inputDefinitions"]["parameters"].get("folds", {}).get("defaultValue") or [])


def compiled_spec(package: str | None, profile: str, rounds: int | None) -> tuple[dict[str, Any], str]:
    """The pipeline spec (first YAML document) of ``package``, or of a fresh ``cosmos compile``."""
    if package:
        return next(yaml.safe_load_all(Path(package).read_text())), package
    from pipelines.compile import compile_pipeline
    from pipelines.task_settings import PipelineOptions

    opts = PipelineOptions(profile=profile) if rounds is None else PipelineOptions(profile=profile, rounds=rounds)
    with tempfile.TemporaryDirectory(prefix="cosmos-bytes-") as tmp:
        path = Path(tmp) / "cosmos-pipeline.yaml"
        compile_pipeline(str(path), opts)
        return next(yaml.safe_load_all(path.read_text())), f"cosmos compile (profile {profile}, {opts.rounds} rounds)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", default="paper", help="compile-time profile and phantom (default paper)")
    p.add_argument("--package", default=None, help="read this compiled package instead of compiling")
    p.add_argument("--rounds", type=int, default=None, help="student rounds to compile (default: PipelineOptions')")
    p.add_argument("--folds", type=int, default=None, help="fold fan-out (default: the package's folds default)")
    p.add_argument("--scans", type=int, default=500, help="crossMoDA-scale dataset: number of scans (default 500)")
    p.add_argument("--mb-per-scan", type=float, default=100.0, help="MB per scan (default 100)")
    p.add_argument("--label-fraction", type=float, default=0.02, help="label map / image size (default 0.02)")
    p.add_argument(
        "--roi-fraction",
        type=float,
        default=None,
        help="crop_roi output / input (default: 1.0 when the profile's ROI crop is off, else 0.1)",
    )
    p.add_argument("--translator-mb", type=float, default=50.0, help="translator checkpoint MB (default 50)")
    p.add_argument("--fold-model-mb", type=float, default=250.0, help="one nnU-Net fold MB (default 250)")
    p.add_argument("--prepared-factor", type=float, default=2.0, help="nnU-Net raw + preprocessed copies (default 2)")
    p.add_argument("--no-phantom", action="store_true", help="only the crossMoDA-scale dataset")
    args = p.parse_args(argv)

    from cosmos.config import load_config

    roi_on = load_config(args.profile).roi.enabled
    roi = args.roi_fraction if args.roi_fraction is not None else (0.1 if roi_on else 1.0)
    sm = SizeModel(
        roi_fraction=roi,
        translator_mb=args.translator_mb,
        fold_model_mb=args.fold_model_mb,
        prepared_factor=args.prepared_factor,
        label_fraction=args.label_fraction,
    )
    spec, source = compiled_spec(args.package, args.profile, args.rounds)
    print("BYTES MOVED PER STAGE -- ARITHMETIC FROM THE COMPILED IR, NOT A MEASUREMENT")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"IR: {source}, {when}; {spec.get('sdkVersion', '?')}; folds fan-out {args.folds or _default_folds(spec)}")
    print(
        "Rule: each task pod downloads every input artifact whole and uploads every output artifact "
        "(the KFP launcher; no caching, no retries counted)."
    )
    print(
        f"Size model (assumptions): crop_roi keeps {roi:.0%} of the bytes"
        f"{' (ROI crop off in this profile)' if not roi_on and args.roi_fraction is None else ' (assumed)'}; "
        f"translator {sm.translator_mb:g} MB; fold model {sm.fold_model_mb:g} MB; prepared = "
        f"{sm.prepared_factor:g} x the round's training images (teacher: pseudo-hrT2; students: + every target "
        f"case, an upper bound); predicted label map = one validation label; JSON/HTML outputs {SMALL_MB} MB."
    )
    datasets = [crossmoda_dataset(args.scans, args.mb_per_scan, args.label_fraction)]
    if not args.no_phantom:
        datasets.append(phantom_dataset(args.profile))
    for ds in datasets:
        print()
        print(report(spec, ds, sm, args.folds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
