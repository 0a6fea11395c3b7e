"""``cosmos serve``: a KServe model server (v1 + Open Inference Protocol v2) for a COSMOS segmenter."""

from __future__ import annotations

from cosmos.cli.args import add_config_args, config_from_args, port_number, positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a registered segmenter over HTTP (KServe; v1 and v2 inference protocols)",
        description="POST a base64 NIfTI scan (or an s3:// URI) to /v2/models/NAME/infer or "
        "/v1/models/NAME:predict; the answer holds the label NIfTI (base64) on the scan's grid, "
        "the same numbers as `cosmos predict`, and its measurements. The model is loaded once and kept "
        "in memory. /v2/health/ready answers 503 until the model is loaded; /metrics is Prometheus. "
        "Stop with Ctrl-C or SIGTERM.",
    )
    p.add_argument(
        "--model",
        default="models:/cosmos-segmenter@champion",
        help="models:/cosmos-segmenter@champion (default), models:/cosmos-segmenter/3, or a folder",
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI holding the registry (default: $MLFLOW_TRACKING_URI)"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 in a pod)")
    p.add_argument("--port", type=port_number, default=8080, help="HTTP port (default 8080, KServe's)")
    p.add_argument(
        "--name",
        default=None,
        help="model name in the URLs (default: the registered model's name, else cosmos-segmenter)",
    )
    p.add_argument(
        "--max-mb",
        type=positive_float,
        default=256.0,
        help="largest request body, s3:// object or decompressed scan in MB (default 256); larger ones get HTTP 413",
    )
    p.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=2,
        metavar="N",
        help="requests segmented at once, each on its own warm predictor (default 2); one more gets HTTP 503 "
        "with Retry-After",
    )
    p.add_argument("--no-mirroring", action="store_true", help="skip flip test-time augmentation (8x faster in 3D)")
    add_config_args(p)  # for a local model folder without a saved config, and for --set overrides
    p.set_defaults(func=_run)


def _default_name(reference: str) -> str:
    if reference.startswith("models:/"):
        return reference[len("models:/") :].split("/")[0].split("@")[0] or "cosmos-segmenter"
    return "cosmos-segmenter"


def _run(args) -> int:
    from cosmos.serving import serve

    serve(
        args.model,
        name=args.name or _default_name(args.model),
        tracking_uri=args.tracking_uri,
        host=args.host,
        port=args.port,
        max_mb=args.max_mb,
        max_concurrent=args.max_concurrent,
        mirroring=False if args.no_mirroring else None,
        fallback_cfg=config_from_args(args),
        overrides=args.overrides,
    )
    return 0
