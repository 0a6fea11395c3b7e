"""``cosmos selftrain``: the teacher + K students of COSMOS (paper 3.3) from an existing pseudo-hrT2 folder.

It runs the very DAG of ``cosmos run`` (through kfp.local), compiled to start from ``--pseudo``
instead of training a translator, so its rounds are the same steps with the same bookkeeping.
"""

from __future__ import annotations

import argparse

from cosmos.cli.args import add_config_args, config_from_args
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
        "selftrain",
        help="teacher + K self-training students (nnU-Net) on pseudo-hrT2 and real hrT2",
        description="Round 0 (teacher) trains nnU-Net on labelled pseudo-hrT2; each later round (student) trains "
        "on pseudo-hrT2 plus the real hrT2 scans whose pseudo-label passed the filter. Every round is an "
        "MLflow run (folds nested) and a cosmos-segmenter version; the promotion gate moves @champion. "
        "Runs the cosmos-pipeline DAG through kfp.local; re-running with the same --out resumes.",
    )
    p.add_argument(
        "--pseudo",
        required=True,
        metavar="DIR",
        help="labelled pseudo-hrT2 (crossmoda_*_hrT2pseudo + _Label), as written by `cosmos translator convert`",
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="DIR",
        help="real unlabelled hrT2 images, e.g. DATA/target_training (or the crossMoDA root)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (report/, summary.json, mlflow/, work/)")
    p.add_argument("--val", default=None, metavar="DIR", help="validation hrT2 images, e.g. DATA/target_validation")
    p.add_argument("--val-labels", default=None, metavar="DIR", help="validation labels (scores every round)")
    p.add_argument("--rounds", type=int, default=None, metavar="K", help="student rounds after the teacher")
    p.add_argument("--folds", type=_folds, default=None, metavar="0,1,2,3,4", help="nnU-Net folds to train")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --out)",
    )
    p.add_argument("--verbose", action="store_true", help="show kfp.local's full task echo")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args) -> int:

    from cosmos.evaluation.metrics import format_table1
    from cosmos.tracking import honour_env_tracking_uri
    from pipelines.local_run import exit_code, run_selftrain_local, run_summary

    if args.rounds is not None:
        if args.rounds < 0:
            raise CosmosError("--rounds must be >= 0")
        args.overrides.append(f"selftraining.rounds={args.rounds}")
    if args.folds is not None:
        args.overrides.append(f"segmentation.folds=[{','.join(str(f) for f in args.folds)}]")
    if args.tracking_uri:
        args.overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    cfg = config_from_args(args)
    honour_env_tracking_uri(cfg.tracking)  # --tracking-uri / --set, else $MLFLOW_TRACKING_URI, else OUT/mlflow
    result = run_selftrain_local(
        cfg,
        args.out,
        pseudo=args.pseudo,
        target=args.target,
        val=args.val,
        val_labels=args.val_labels,
        profile=args.profile,
        verbose=args.verbose,
    )
    summary = run_summary(result)
    rounds = summary["rounds"]
    print(
        format_table1(
            [
                (
                    r["name"] + (" *" if r.get("champion") else ""),
                    (r.get("metrics") or {}).get("summary"),
                    [len(r.get("kept") or []), r.get("model_version") or "-"],
                )
                for r in rounds
            ],
            extra_header=["kept", "version"],
            style="text",
            first="round",
        )
    )
    for r in rounds:
        if r.get("filter_alert"):
            print(f"WARNING {r['name']}: {r['filter_alert']}")
    if summary.get("champion_round") is not None:
        print(f"champion (*): models:/{cfg.tracking.segmenter_model_name}@{cfg.tracking.champion_alias}")
    else:
        print("champion: none promoted")
    print(f"summary:  {result.summary_file}")
    print(f"report:   {result.report_dir / 'report.html'}")
    print(f"MLflow:   {result.tracking_uri}")
    print((summary.get("verdict") or {}).get("line", ""))
    return exit_code(result)
