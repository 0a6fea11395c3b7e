"""``cosmos compile``: write the ``cosmos-pipeline`` package for a Kubeflow cluster.

The package is KFP's multi-document YAML (pipeline spec, then the Kubernetes platform spec with
node selectors, tolerations and the credentials Secret); read it with ``yaml.safe_load_all``.
Upload it with ``cosmos submit`` or the plain kfp CLI::

    kfp --endpoint URL pipeline create -p cosmos-pipeline cosmos-pipeline.yaml
    kfp --endpoint URL run create -e EXPERIMENT -r RUN -n cosmos-pipeline data_uri=s3://bucket/crossmoda
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import yaml

from components import DEFAULT_IMAGE
from components.spec import MAX_UNROLLED_FOLDS
from pipelines.benchmark_pipeline import build_benchmark_pipeline
from pipelines.cosmos_pipeline import build_pipeline
from pipelines.resources import PROFILE_RESOURCES, ScratchVolume, quantity
from pipelines.task_settings import PipelineOptions, Toleration

DEFAULT_TOLERATION = "nvidia.com/gpu:Exists:NoSchedule"


def add_compile_args(p: argparse.ArgumentParser) -> None:
    """Compile options (also used by ``cosmos submit``, which compiles before uploading)."""
    g = p.add_argument_group("pipeline shape (compile time)")
    g.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="K self-training students after the teacher (default: the profile's selftraining.rounds)",
    )
    g.add_argument(
        "--folds", default=None, help="default of the 'folds' parameter, e.g. 0,1,2,3,4 (default: the profile's folds)"
    )
    g.add_argument(
        "--benchmark",
        action="store_true",
        help="compile cosmos-benchmark (the Table-1 ablation DAG) instead of cosmos-pipeline",
    )
    g.add_argument("--parallelism", type=int, default=5, help="fold tasks of a round running at once (default 5)")
    g.add_argument(
        "--unroll-folds",
        action="store_true",
        help="one train_fold task per fold (the --folds list, fixed at compile time) instead of a ParallelFor, "
        "so each fold keeps its retry policy: the KFP backend drops retryPolicy inside a loop "
        "(kubeflow/pipelines #12389); see also cosmos retry",
    )
    g.add_argument(
        "--from-pseudo",
        action="store_true",
        help="start from an existing labelled pseudo-hrT2 folder (the pseudo_uri parameter: s3:// prefix or a "
        "path in the image) instead of training the translator (the cosmos selftrain DAG)",
    )
    g.add_argument(
        "--image",
        default=os.environ.get("COSMOS_IMAGE", DEFAULT_IMAGE),
        help=f"component image (default $COSMOS_IMAGE or {DEFAULT_IMAGE})",
    )
    g.add_argument(
        "--secret",
        default="cosmos-credentials",
        help="Kubernetes Secret with S3/MLflow credentials, passed as env (default cosmos-credentials)",
    )
    g.add_argument("--no-secret", action="store_true", help="pass no Secret to the tasks")
    g.add_argument("--no-cache", action="store_true", help="disable KFP caching for every task")
    g.add_argument(
        "--experiment-default",
        dest="experiment_default",
        default=None,
        help="default of the 'experiment' parameter (default: tracking.experiment)",
    )
    g.add_argument(
        "--tracking-uri",
        default="",
        help="default of the 'tracking_uri' parameter ('' = MLFLOW_TRACKING_URI from the Secret)",
    )
    res = p.add_argument_group("cluster resources (compile time; per stage in components/<stage>/spec.py)")
    res.add_argument(
        "--resource-profile",
        default=None,
        choices=sorted(PROFILE_RESOURCES),
        help="whose CPU/memory/shm/timeout table the tasks get (default: --profile)",
    )
    res.add_argument(
        "--shm-size",
        default=None,
        metavar="SIZE",
        help="Memory-backed /dev/shm of train_fold and the predict tasks, e.g. 16Gi (default: the table's)",
    )
    res.add_argument(
        "--fold-retries",
        type=int,
        default=None,
        metavar="N",
        help="retries of a failed train_fold task (default: the table's; paper 3)",
    )
    res.add_argument("--no-timeouts", action="store_true", help="no activeDeadlineSeconds on the tasks")
    res.add_argument(
        "--dataset-gb",
        type=float,
        default=None,
        metavar="GB",
        help="size of the data in data_uri: every stage's timeout grows by its per-GB allowance and, with "
        "--scratch-volume ephemeral:SIZE, each stage's volume is sized from the data (SIZE a floor); "
        "compile prints the disk each stage needs",
    )
    res.add_argument(
        "--scratch-volume",
        default=None,
        metavar="SPEC",
        help="a bigger disk for the data-moving tasks: ephemeral:SIZE[:STORAGE_CLASS] (a generic "
        "ephemeral volume per pod) or pvc:CLAIM (an existing PersistentVolumeClaim)",
    )
    res.add_argument(
        "--scratch-mount",
        default="/s3",
        metavar="PATH",
        help="where the scratch volume goes: KFP stages artifacts under /s3 (s3:// root), "
        "/minio (minio://) or /gcs (gs://) (default /s3)",
    )
    gpu = p.add_argument_group("GPU scheduling (train_translator, translate, train_fold, predict tasks only)")
    gpu.add_argument("--gpu-type", default="nvidia.com/gpu", help="accelerator resource (default nvidia.com/gpu)")
    gpu.add_argument("--gpu-limit", type=int, default=1, help="GPUs per GPU task (default 1)")
    gpu.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="node label the GPU tasks require (repeatable), e.g. cloud.google.com/gke-accelerator=nvidia-l4",
    )
    gpu.add_argument(
        "--gpu-toleration",
        action="append",
        default=None,
        metavar="TOLERATION",
        help=f"key=value:Effect, key:Exists or key:Exists:Effect (repeatable; default {DEFAULT_TOLERATION})",
    )
    gpu.add_argument("--no-gpu", action="store_true", help="CPU-only cluster: no accelerator, selector or toleration")


def parse_scratch(spec: str | None, mount: str = "/s3") -> ScratchVolume | None:
    """``ephemeral:SIZE[:STORAGE_CLASS]`` or ``pvc:CLAIM`` -> a ScratchVolume (None for None/"")."""
    from cosmos.errors import CosmosError

    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    try:
        if kind == "ephemeral" and rest:
            size, _, storage_class = rest.partition(":")
            return ScratchVolume(kind="ephemeral", size=size, storage_class=storage_class or None, mount_path=mount)
        if kind == "pvc" and rest:
            return ScratchVolume(kind="pvc", pvc_name=rest, mount_path=mount)
    except ValueError as exc:
        raise CosmosError(f"--scratch-volume {spec!r}: {exc}") from None
    raise CosmosError(f"--scratch-volume {spec!r}: use ephemeral:SIZE[:STORAGE_CLASS] or pvc:CLAIM")


def _parse_pairs(items: Iterable[str], what: str) -> tuple[tuple[str, str], ...]:
    from cosmos.errors import CosmosError

    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CosmosError(f"{what} {item!r}: expected KEY=VALUE")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def config_parameter(config_path: str | None, overrides: Iterable[str]) -> str:
    """The ``config`` parameter text: the --config file merged with --set overrides, as YAML.

    Only what the user gave (not the whole profile), so a run submitted with another ``profile``
    still gets that profile's defaults for everything else.
    """
    from cosmos.config import ConfigError

    data: dict[str, Any] = {}
    if config_path:
        try:
            data = yaml.safe_load(Path(config_path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{config_path}: config file not found") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    # One line (flow style): KFP copies parameter defaults into the package's header comment, and a
    # multi-line default would break that comment and the YAML.
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=True, width=1 << 20).strip() if data else ""


def options_from_args(args: argparse.Namespace, cfg) -> PipelineOptions:
    """PipelineOptions from parsed CLI args and the resolved config (profile + file + --set)."""
    from cosmos.errors import CosmosError

    folds = cfg.segmentation.folds
    if args.folds:
        try:
            folds = [int(f) for f in str(args.folds).split(",") if f.strip()]
        except ValueError:
            raise CosmosError(f"--folds {args.folds!r}: expected a comma-separated list of integers") from None
        bad = [f for f in folds if not 0 <= f < cfg.segmentation.num_folds]
        if not folds or bad or len(set(folds)) != len(folds):
            raise CosmosError(f"--folds {args.folds!r}: need distinct folds within 0..{cfg.segmentation.num_folds - 1}")
    rounds = cfg.selftraining.rounds if args.rounds is None else args.rounds
    if rounds < 0:
        raise CosmosError("--rounds must be >= 0")
    if args.parallelism < 1:
        raise CosmosError("--parallelism must be >= 1")
    if args.gpu_limit < 1:
        raise CosmosError("--gpu-limit must be >= 1")
    tolerations = args.gpu_toleration if args.gpu_toleration is not None else [DEFAULT_TOLERATION]
    if args.fold_retries is not None and args.fold_retries < 0:
        raise CosmosError("--fold-retries must be >= 0")
    resource_profile = args.resource_profile or args.profile
    if resource_profile not in PROFILE_RESOURCES:
        raise CosmosError(
            f"no resource table for profile {resource_profile!r}: pass --resource-profile "
            f"({', '.join(sorted(PROFILE_RESOURCES))})"
        )
    dataset_gb = 0.0 if args.dataset_gb is None else float(args.dataset_gb)
    if args.dataset_gb is not None and not (0 < dataset_gb < 1e6):  # also refuses nan and inf
        raise CosmosError(f"--dataset-gb {args.dataset_gb}: give the data's size in GB (> 0)")
    if getattr(args, "from_pseudo", False) and getattr(args, "benchmark", False):
        raise CosmosError("--from-pseudo and --benchmark: the benchmark trains its own translators; give one of them")
    if args.unroll_folds and len(folds) > MAX_UNROLLED_FOLDS:
        raise CosmosError(f"--unroll-folds: at most {MAX_UNROLLED_FOLDS} folds, got {folds}")
    if args.shm_size is not None:
        try:
            quantity(args.shm_size)
        except ValueError as exc:
            raise CosmosError(f"--shm-size: {exc}") from None
    return PipelineOptions(
        rounds=rounds,
        folds=tuple(folds),
        parallelism=args.parallelism,
        image=args.image,
        secret=None if args.no_secret else args.secret,
        gpu_type=args.gpu_type,
        gpu_limit=args.gpu_limit,
        gpu_node_selector=_parse_pairs(args.gpu_node_selector, "--gpu-node-selector"),
        gpu_tolerations=tuple(Toleration.parse(t) for t in tolerations),
        use_gpu=not args.no_gpu,
        caching=not args.no_cache,
        profile=args.profile,
        config=config_parameter(args.config, args.overrides),
        experiment=args.experiment_default or cfg.tracking.experiment,
        tracking_uri=args.tracking_uri,
        resource_profile=resource_profile,
        shm_size=args.shm_size,
        retries=args.fold_retries,
        timeouts=not args.no_timeouts,
        scratch=parse_scratch(args.scratch_volume, args.scratch_mount),
        unroll_folds=bool(args.unroll_folds),
        dataset_gb=dataset_gb,
        start="pseudo" if args.from_pseudo else "data",
    )


def compile_pipeline(path: str, opts: PipelineOptions = PipelineOptions(), benchmark: bool = False) -> str:
    """Write the pipeline package (multi-document YAML: pipeline spec, then platform spec).

    It lives here, above both DAG modules, because it picks between them and the benchmark's module
    imports the pipeline's (reusing its rounds): in either DAG module the choice would close an import circle.
    """
    from kfp import compiler

    fn = build_benchmark_pipeline(opts) if benchmark else build_pipeline(opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        compiler.Compiler().compile(fn, package_path=str(path))
    return str(path)


def compile_to(path: str | Path, opts: PipelineOptions, benchmark: bool = False) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    compile_pipeline(str(path), opts, benchmark=benchmark)
    return path


def describe_plan(opts: PipelineOptions) -> str:
    """The per-stage disk and timeout plan of ``opts.dataset_gb`` (printed by ``cosmos compile --dataset-gb``)."""
    from pipelines.resources import dataset_plan

    profile = opts.resource_profile or opts.profile
    lines = [
        f"plan for {opts.dataset_gb:g} GB of data (profile {profile}; per-GB allowances in components/<stage>/spec.py):",
        f"  {'stage':24s} {'disk GB':>8s} {'scratch':>8s} {'timeout':>9s}  (+ for the data)",
    ]
    for p in dataset_plan(profile, opts.dataset_gb, dict(opts.resources)):
        timeout = f"{p.timeout_s / 3600:.1f} h" if p.timeout_s else "none"
        lines.append(
            f"  {p.stage:24s} {p.disk_gb:8.1f} {p.scratch_size:>8s} {timeout:>9s}  (+{p.extra_s / 3600:.1f} h)"
        )
    scratch = opts.scratch
    if scratch is None:
        lines.append(
            "  no --scratch-volume: the disk above comes from each node's ephemeral storage, which KFP cannot "
            "request (kubeflow/pipelines #11137); above a few GB add --scratch-volume ephemeral:SIZE[:CLASS]"
        )
    elif scratch.kind == "pvc":
        lines.append(f"  scratch: the PVC {scratch.pvc_name} at {scratch.mount_path} (size it for the largest stage)")
    else:
        lines.append(f"  scratch: a generic ephemeral volume per task at {scratch.mount_path}, sized as above")
    return "\n".join(lines)
