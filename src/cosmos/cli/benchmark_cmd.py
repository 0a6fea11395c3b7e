"""``cosmos benchmark``: the paper's Table-1 ablation rows, as the ``cosmos-benchmark`` DAG (kfp.local)."""

from __future__ import annotations

import logging
from pathlib import Path

from cosmos.cli.args import add_config_args, config_from_args, data_location

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="Table-1 ablation: source-only, DA w/o Seg, DA w/ Seg, COSMOS ST1..K, oracle")
    p.add_argument(
        "--data",
        default=None,
        type=data_location,
        help="crossMoDA root (default: the built-in phantom, written to OUT/data)",
    )
    p.add_argument("--val-labels", default=None, help="validation labels (default: DATA/target_validation_labels)")
    p.add_argument(
        "--rows",
        default=None,
        help="comma-separated subset of source_only,da_noseg,cosmos,oracle (default: all the data allows; "
        "the oracle needs DATA/target_training_labels)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated dataset seeds of the built-in phantom (e.g. 1,2,3): one dataset per seed, each "
        "benchmarked in OUT/seed_<s>/, and OUT/benchmark.{json,md} give mean ± std per row and paired per-case "
        "differences (default: phantom.seed alone). Use --set phantom.style=random for the randomised family",
    )
    p.add_argument("--out", default="cosmos-benchmark", help="output folder (resumable)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under OUT)")
    p.add_argument("--verbose", action="store_true", help="show kfp.local's full task echo")
    add_config_args(p, default_profile="small")
    p.set_defaults(func=_run)


def _seeds(text: str | None) -> list[int] | None:
    from cosmos.errors import CosmosError

    if text is None:
        return None
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CosmosError(f"--seeds {text!r}: give comma-separated integers, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CosmosError(f"--seeds {text!r}: give distinct integers, e.g. 1,2,3")
    return seeds


def _phantom(out: Path, cfg, seed: int) -> str:
    from cosmos.data.phantom import make_phantom

    ph = cfg.phantom
    return str(
        make_phantom(
            out / "data",
            n_source=ph.n_source,
            n_target=ph.n_target,
            n_val=ph.n_val,
            seed=seed,
            scale=ph.scale,
            style=ph.style,
            target_labels=True,
        )
    )


def _run(args) -> int:
    import json

    from cosmos.ablation import to_markdown
    from cosmos.errors import CosmosError
    from cosmos.tracking import honour_env_tracking_uri
    from pipelines.local_run import run_benchmark_local

    if args.tracking_uri:
        args.overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    cfg = config_from_args(args)
    honour_env_tracking_uri(cfg.tracking)  # --tracking-uri / --set, else $MLFLOW_TRACKING_URI, else OUT/mlflow
    out = Path(args.out)
    seeds = _seeds(args.seeds)
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip()) if args.rows else None
    if args.data is not None:
        if seeds is not None:
            raise CosmosError("--seeds draws phantom datasets; it cannot be combined with --data")
        result = run_benchmark_local(
            cfg, out, data=args.data, val_labels=args.val_labels, rows=rows, profile=args.profile, verbose=args.verbose
        )
        result["dataset_seeds"] = []  # the user's own data
        (out / "benchmark.json").write_text(json.dumps(result, indent=2))
        print(to_markdown(result))
        return 0
    if seeds is None:
        data = _phantom(out, cfg, cfg.phantom.seed)
        log.info("no --data: using the built-in phantom in %s (with target-training labels for the oracle)", data)
        result = run_benchmark_local(cfg, out, data=data, rows=rows, profile=args.profile, verbose=args.verbose)
        result["dataset_seeds"] = [cfg.phantom.seed]
        (out / "benchmark.json").write_text(json.dumps(result, indent=2))
        print(to_markdown(result))
        return 0
    from cosmos.ablation_seeds import aggregate
    from cosmos.ablation_seeds import to_markdown as multi_markdown

    per_seed = {}
    for i, seed in enumerate(seeds):
        seed_out = out / f"seed_{seed}"
        log.info("benchmark: dataset seed %d (%d of %d) in %s", seed, i + 1, len(seeds), seed_out)
        data = _phantom(seed_out, cfg, seed)
        result = run_benchmark_local(cfg, seed_out, data=data, rows=rows, profile=args.profile, verbose=args.verbose)
        result["dataset_seeds"] = [seed]
        (seed_out / "benchmark.json").write_text(json.dumps(result, indent=2))
        per_seed[seed] = result
    combined = aggregate(per_seed)
    combined["phantom_style"] = cfg.phantom.style
    combined["seconds"] = {"wall": round(sum((r.get("seconds") or {}).get("wall", 0.0) for r in per_seed.values()), 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(combined, indent=2))
    text = multi_markdown(combined)
    (out / "benchmark.md").write_text(text)
    print(text)
    return 0
