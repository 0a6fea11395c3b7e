"""``cosmos run`` / ``cosmos compile`` / ``cosmos submit`` / ``cosmos retry``: the Kubeflow pipeline, locally or on a cluster.

``cosmos run`` executes the very ``cosmos-pipeline`` function that ``cosmos compile`` writes for a
cluster, through ``kfp.local`` (see ``pipelines/local_run.py``). The pipeline code lives in the
top-level ``pipelines``/``components`` packages (they import kfp); the library never does, so the
imports happen inside the command functions.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cosmos.cli.args import add_config_args, config_from_args, data_location


def register(sub) -> None:
    # ------------------------------------------------------------------ run
    p = sub.add_parser(
        "run",
        help="run the whole COSMOS pipeline locally (kfp.local; phantom data when --data is omitted)",
        description="Runs the cosmos-pipeline (translator, teacher + K students, evaluation, report) on this "
        "machine through kfp.local. Re-running with the same --out resumes and redoes no finished work. "
        "MLflow: --set tracking.tracking_uri=URI, else $MLFLOW_TRACKING_URI, else OUT/mlflow (SQLite).",
    )
    p.add_argument(
        "--data",
        default=None,
        type=data_location,
        help="crossMoDA folder or s3://bucket/prefix (default: built-in phantom)",
    )
    p.add_argument(
        "--val-labels",
        default=None,
        help="validation labels (folder or s3://); default: DATA/target_validation_labels if present",
    )
    p.add_argument("--out", default="cosmos-out", help="output folder (default ./cosmos-out)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="stream every task's full output (nnU-Net, kfp.local's executor echo) instead of the "
        "one-line-per-stage view; each stage's full log is in OUT/logs/<stage>.log either way",
    )
    add_config_args(p)
    p.set_defaults(func=_run)

    # ------------------------------------------------------------------ compile
    p = sub.add_parser(
        "compile",
        help="compile cosmos-pipeline to a KFP package (YAML) for a Kubeflow cluster",
        description="Writes the KFP v2 package: K rounds unrolled, a ParallelFor over the folds per round, GPU "
        "scheduling on the GPU tasks and credentials from a Kubernetes Secret.",
    )
    p.add_argument("-o", "--output", default="cosmos-pipeline.yaml", help="package path (default cosmos-pipeline.yaml)")
    _add_compile_args(p)
    p.set_defaults(func=_compile)

    # ------------------------------------------------------------------ submit
    p = sub.add_parser(
        "submit",
        help="upload cosmos-pipeline to Kubeflow Pipelines (new version if it exists) and start a run",
    )
    p.add_argument(
        "--host",
        required=True,
        help="KFP API endpoint, e.g. http://localhost:8080 (port-forward) or https://DASHBOARD/pipeline "
        "(behind the Kubeflow central dashboard)",
    )
    p.add_argument("--experiment", default="cosmos", help="KFP experiment (default cosmos)")
    p.add_argument("--run-name", default=None, help="run name (default cosmos-pipeline-<timestamp>)")
    p.add_argument("--package", default=None, help="an already compiled package (default: compile now)")
    p.add_argument(
        "--namespace",
        default=None,
        help="Kubeflow profile namespace: the pipeline is uploaded into it and the run created there "
        "(required by a multi-user server; default inside a profile's pod: the pod's namespace)",
    )
    p.add_argument("--token", default=None, help="bearer token (default $KFP_TOKEN)")
    p.add_argument("--cookies", default=None, help="cookie header for an auth proxy")
    p.add_argument(
        "--pipeline-root",
        default=None,
        help="this run's artifact root, e.g. s3://cosmos-artifacts/v2/artifacts (default: the server's)",
    )
    p.add_argument(
        "--ui-host", default=None, help="KFP UI address for the printed run link (default: derived from --host)"
    )
    p.add_argument(
        "params",
        nargs="*",
        metavar="key=value",
        help="pipeline parameters, e.g. data_uri=s3://bucket/crossmoda profile=paper folds=[0,1,2,3,4]",
    )
    _add_compile_args(p)
    p.set_defaults(func=_submit)

    # ------------------------------------------------------------------ retry
    p = sub.add_parser(
        "retry",
        help="retry a failed Kubeflow run in place (same run id: failed folds resume from their S3 checkpoints)",
        description="POST /apis/v2beta1/runs/RUN_ID:retry. The KFP backend re-runs the failed and unfinished tasks "
        "of the same run and keeps the finished ones; the run id, which keys every fold's object-store "
        "checkpoints, stays the same. This is how a fold that lost its node resumes when the package has "
        "the default ParallelFor (whose retryPolicy the backend drops; see k8s/README.md).",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the KFP run id (cosmos submit prints it)")
    p.add_argument("--host", required=True, help="KFP API endpoint (as for cosmos submit)")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace of the run (for the printed link)")
    p.add_argument("--token", default=None, help="bearer token (default $KFP_TOKEN)")
    p.add_argument("--cookies", default=None, help="cookie header for an auth proxy")
    p.add_argument(
        "--ui-host", default=None, help="KFP UI address for the printed run link (default: derived from --host)"
    )
    p.set_defaults(func=_retry)


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    from pipelines.compile import add_compile_args

    add_config_args(p, default_profile="paper")
    add_compile_args(p)


def _run(args) -> int:
    from cosmos.tracking import honour_env_tracking_uri
    from pipelines.local_run import describe, exit_code, run_local

    cfg = config_from_args(args)
    honour_env_tracking_uri(cfg.tracking)  # --set tracking.tracking_uri, else $MLFLOW_TRACKING_URI, else OUT/mlflow
    result = run_local(
        cfg, args.out, data=args.data, val_labels=args.val_labels, profile=args.profile, verbose=args.verbose
    )
    print(describe(result))
    return exit_code(result)


def _check_image(image: str | None) -> None:
    """Refuse an empty or blank component image (``--image ""`` or ``COSMOS_IMAGE=""``): the package
    would have no ``image:`` fields, which KFP accepts and the cluster fails on only at run time."""
    from cosmos.errors import CosmosError

    if not image or any(c.isspace() for c in image):
        raise CosmosError(
            f"--image {image!r}: not a container image (empty or with blanks; also check $COSMOS_IMAGE): "
            "give an image reference, e.g. --image ghcr.io/OWNER/cosmos:TAG"
        )


def _compile(args) -> int:
    from pipelines.compile import compile_to, describe_plan, options_from_args

    _check_image(args.image)  # before anything is written
    cfg = config_from_args(args)
    opts = options_from_args(args, cfg)
    output = args.output
    if args.benchmark and output == "cosmos-pipeline.yaml":
        output = "cosmos-benchmark.yaml"
    path = compile_to(output, opts, benchmark=args.benchmark)
    print(
        f"wrote {path}: {opts.rounds + 1} round(s) (teacher + {opts.rounds} students), folds {list(opts.folds)} "
        f"(parallelism {opts.parallelism}), image {opts.image}, "
        f"secret {opts.secret or '-'}, caching {'on' if opts.caching else 'off'}"
    )
    if opts.unroll_folds:
        print(f"folds unrolled: one train_fold task per fold {list(opts.folds)}, each with its retry policy")
    if opts.dataset_gb > 0:
        print(describe_plan(opts))
    name = "cosmos-benchmark" if args.benchmark else "cosmos-pipeline"
    print(
        f"upload: cosmos submit --host URL [key=value ...]   or   kfp --endpoint URL pipeline create -p {name} {path}"
    )
    return 0


def _submit(args) -> int:
    import os

    from pipelines.compile import compile_to, options_from_args
    from pipelines.submit import parse_params, submit

    params = parse_params(args.params)
    if args.package is None:
        _check_image(args.image)  # an image-less package would be compiled and uploaded
    package = args.package
    tmp = None
    if package is None:
        cfg = config_from_args(args)
        tmp = tempfile.TemporaryDirectory(prefix="cosmos-submit-")
        package = str(
            compile_to(Path(tmp.name) / "cosmos-pipeline.yaml", options_from_args(args, cfg), benchmark=args.benchmark)
        )
    try:
        res = submit(
            package,
            args.host,
            params,
            experiment=args.experiment,
            run_name=args.run_name,
            pipeline_name="cosmos-benchmark" if args.benchmark else "cosmos-pipeline",
            namespace=args.namespace,
            token=args.token or os.environ.get("KFP_TOKEN"),
            cookies=args.cookies,
            pipeline_root=args.pipeline_root,
            ui_host=args.ui_host,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"pipeline cosmos-pipeline {res.pipeline_id} version {res.version_id}")
    where = f" (namespace {args.namespace})" if args.namespace else ""
    print(f"run {res.run_id} in experiment {args.experiment}{where}: {res.run_url}")
    return 0


def _retry(args) -> int:
    import os

    from pipelines.submit import retry

    res = retry(
        args.run_id,
        args.host,
        namespace=args.namespace,
        token=args.token or os.environ.get("KFP_TOKEN"),
        cookies=args.cookies,
        ui_host=args.ui_host,
    )
    print(f"run {res.run_id} ({res.previous_state}) retried: its failed tasks run again: {res.run_url}")
    return 0
