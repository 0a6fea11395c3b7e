"""``cosmos benchmark``: the paper's Table-1 ablation rows, as the ``cosmos-benchmark`` DAG (kfp.local)."""

from __future__ import annotations

import logging
from pathlib import Path

from cosmos.cli import add_config_args, config_from_args

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="Table-1 ablation: source-only, DA w/o Seg, DA w/ Seg, COSMOS ST1..K, oracle")
    p.add_argument("--data", default=None, help="crossMoDA root (default: the built-in phantom, written to OUT/data)")
    p.add_argument("--val-labels", default=None, help="validation labels (default: DATA/target_validation_labels)")
    p.add_argument(
        "--rows",
        default=None,
        help="comma-separated subset of source_only,da_noseg,cosmos,oracle (default: all the data allows; "
        "the oracle needs DATA/target_training_labels)",
    )
    p.add_argument("--out", default="cosmos-benchmark", help="output folder (resumable)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under OUT)")
    p.add_argument("--verbose", action="store_true", help="show kfp.local's full task echo")
    add_config_args(p, default_profile="small")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from cosmos.ablation import to_markdown
    from pipelines.local_run import run_benchmark_local

    if args.tracking_uri:
        args.overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    cfg = config_from_args(args)
    out = Path(args.out)
    data = args.data
    if data is None:
        from cosmos.data.phantom import make_phantom

        ph = cfg.phantom
        data = str(
            make_phantom(
                out / "data",
                n_source=ph.n_source,
                n_target=ph.n_target,
                n_val=ph.n_val,
                seed=ph.seed,
                scale=ph.scale,
                target_labels=True,
            )
        )
        log.info("no --data: using the built-in phantom in %s (with target-training labels for the oracle)", data)
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip()) if args.rows else None
    result = run_benchmark_local(
        cfg, out, data=data, val_labels=args.val_labels, rows=rows, profile=args.profile, verbose=args.verbose
    )
    print(to_markdown(result))
    return 0
