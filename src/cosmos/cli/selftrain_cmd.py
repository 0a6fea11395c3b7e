"""``cosmos selftrain``: the teacher + K students of COSMOS (paper 3.3) on local folders."""

from __future__ import annotations

import argparse

from cosmos.cli import add_config_args, config_from_args
from cosmos.errors import CosmosError


def _folds(text: str) -> list[int]:
    try:
        folds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--folds must be comma-separated integers, got {text!r}") from None
    if not folds:
        raise argparse.ArgumentTypeError("--folds is empty")
    return folds


def register(sub) -> None:
    p = sub.add_parser(
        "selftrain", help="teacher + K self-training students (nnU-Net) on pseudo-hrT2 and real hrT2",
        description="Round 0 (teacher) trains nnU-Net on labelled pseudo-hrT2; each later round (student) trains "
                    "from scratch on pseudo-hrT2 plus the real hrT2 scans whose previous-round prediction contains "
                    "both VS and cochlea. Every round is an MLflow run (folds nested) and a cosmos-segmenter "
                    "version; the last one gets @champion. Re-running with the same --out resumes.")
    p.add_argument("--pseudo", required=True, metavar="DIR",
                   help="labelled pseudo-hrT2 (crossmoda_*_hrT2pseudo + _Label), as written by `cosmos translator convert`")
    p.add_argument("--target", required=True, metavar="DIR",
                   help="real unlabelled hrT2 images, e.g. DATA/target_training")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (round_k/, summary.json, mlflow/)")
    p.add_argument("--val", default=None, metavar="DIR", help="validation hrT2 images, e.g. DATA/target_validation")
    p.add_argument("--val-labels", default=None, metavar="DIR", help="validation labels (scores every round)")
    p.add_argument("--rounds", type=int, default=None, metavar="K", help="student rounds after the teacher")
    p.add_argument("--folds", type=_folds, default=None, metavar="0,1,2,3,4", help="nnU-Net folds to train")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under --out)")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from cosmos.selftraining.loop import format_rounds_table, run_selftraining

    if args.val_labels and not args.val:
        raise CosmosError("--val-labels needs --val (the validation images)")
    if args.rounds is not None:
        if args.rounds < 0:
            raise CosmosError("--rounds must be >= 0")
        args.overrides.append(f"selftraining.rounds={args.rounds}")
    if args.folds is not None:
        args.overrides.append(f"segmentation.folds=[{','.join(str(f) for f in args.folds)}]")
    cfg = config_from_args(args)
    result = run_selftraining(args.pseudo, args.target, args.out, cfg, val_dir=args.val,
                              val_labels_dir=args.val_labels, tracking_uri=args.tracking_uri)
    print(format_rounds_table(result.rounds))
    for entry in result.rounds:
        if entry.get("filter_alert"):
            print(f"WARNING {entry['name']}: {entry['filter_alert']}")
    print(f"champion: models:/{cfg.tracking.segmenter_model_name}@{cfg.tracking.champion_alias} "
          f"= version {result.champion_version}")
    print(f"summary:  {result.summary_path}")
    print(f"MLflow:   {result.tracking_uri}")
    if result.tracking_uri and result.tracking_uri.startswith("sqlite:"):
        print(f"          mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0
