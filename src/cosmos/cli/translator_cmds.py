"""``cosmos translator train`` / ``cosmos translator convert`` (COSMOS stage 1)."""

from __future__ import annotations

import argparse

from cosmos.cli.args import add_config_args, config_from_args


def register(sub) -> None:
    p = sub.add_parser("translator", help="target-aware ceT1->hrT2 translation (train / convert)")
    tsub = p.add_subparsers(dest="translator_command", metavar="ACTION")

    tr = tsub.add_parser("train", help="train the translator on a crossMoDA root; log + register in MLflow")
    tr.add_argument("--data", required=True, help="crossMoDA root with source_training/ and target_training/")
    tr.add_argument("--out", required=True, help="output dir (model/, samples/, checkpoint; re-run resumes)")
    tr.add_argument("--no-segmentor", action="store_true", help="pure CycleGAN ablation ('DA w/o Seg.')")
    tr.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or OUT/mlflow)")
    tr.add_argument("--no-register", action="store_true", help="log the model but create no registry version")
    add_config_args(tr)
    tr.set_defaults(func=_train)

    cv = tsub.add_parser("convert", help="convert source ceT1 to pseudo-hrT2 (+ copies of the labels)")
    cv.add_argument(
        "--model", required=True, help="model dir, models:/cosmos-translator/VERSION or models:/cosmos-translator@ALIAS"
    )
    cv.add_argument("--input", required=True, help="crossMoDA root (uses source_training/) or a flat *_ceT1 folder")
    cv.add_argument("--out", required=True, help="writes crossmoda_{i}_hrT2pseudo.nii.gz + crossmoda_{i}_Label.nii.gz")
    cv.add_argument("--tracking-uri", default=None, help="MLflow URI for models:/ (default: $MLFLOW_TRACKING_URI)")
    cv.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files an earlier convert did not write (never an input)",
    )
    add_config_args(cv)
    cv.set_defaults(func=_convert)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _train(args: argparse.Namespace) -> int:
    from cosmos.translation.attempts import train_checked

    overrides = list(args.overrides) + (["translator.segmentor=false"] if args.no_segmentor else [])
    args.overrides = overrides
    cfg = config_from_args(args)
    res = train_checked(
        args.data,
        args.out,
        cfg,
        tracking_uri=args.tracking_uri or cfg.tracking.tracking_uri or None,
        register=not args.no_register,
    )
    import json

    from cosmos.selftraining.verdict import EXIT_CHECKS_FAILED
    from cosmos.translation.model_io import ATTEMPTS_JSON

    print(f"model: {res.model_dir}")
    print(f"mlflow run: {res.run_id}")
    if res.model_version:
        print(f"registered: models:/{cfg.tracking.translator_model_name}/{res.model_version}")
    attempts = json.loads((res.model_dir / ATTEMPTS_JSON).read_text())
    kept = next(a for a in attempts["attempts"] if a.get("kept"))
    if not attempts["passed"]:
        print(
            f"translation FAILED its label-free checks in {len(attempts['attempts'])} attempt(s); kept attempt "
            f"{kept['attempt']}: {'; '.join(kept['failed_checks'])}"
        )
        return EXIT_CHECKS_FAILED
    print(f"translation passes its label-free checks (attempt {kept['attempt']} of {len(attempts['attempts'])})")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from cosmos.translation.conversion import check_convert_output, convert_source

    # before the model loads: never write into the input folder or over files an earlier convert did not write
    check_convert_output(args.input, args.out, overwrite=args.overwrite)
    cfg = config_from_args(args)
    paths = convert_source(
        args.model, args.input, args.out, cfg, tracking_uri=args.tracking_uri or cfg.tracking.tracking_uri or None
    )
    print(f"wrote {len(paths)} pseudo-hrT2 volume(s) to {args.out}")
    return 0
