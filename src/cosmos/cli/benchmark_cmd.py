"""``cosmos benchmark``: the paper's Table-1 ablation rows on one dataset (see cosmos.ablation)."""

from __future__ import annotations

import logging
from pathlib import Path

from cosmos.cli import add_config_args, config_from_args

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="Table-1 ablation: source-only, DA w/o Seg, DA w/ Seg, COSMOS ST1..K, oracle")
    p.add_argument("--data", default=None, help="crossMoDA root (default: the built-in phantom, written to OUT/data)")
    p.add_argument("--val-labels", default=None, help="validation labels (default: DATA/target_validation_labels)")
    p.add_argument("--target-labels", default=None,
                   help="labels of target_training for the oracle row (default: DATA/target_training_labels if present)")
    p.add_argument("--out", default="cosmos-benchmark", help="output folder (resumable)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under OUT)")
    add_config_args(p, default_profile="small")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from cosmos.ablation import run_benchmark, to_markdown

    cfg = config_from_args(args)
    out = Path(args.out)
    data = args.data
    if data is None:
        from cosmos.data.phantom import make_phantom

        ph = cfg.phantom
        data = make_phantom(out / "data", n_source=ph.n_source, n_target=ph.n_target, n_val=ph.n_val,
                            seed=ph.seed, scale=ph.scale, target_labels=True)
        log.info("no --data: using the built-in phantom in %s (with target-training labels for the oracle)", data)
    result = run_benchmark(data, args.val_labels, out, cfg, target_labels_dir=args.target_labels,
                           tracking_uri=args.tracking_uri)
    print(to_markdown(result))
    return 0
