"""``cosmos evaluate PRED_DIR LABEL_DIR [--json FILE]``: crossMoDA Dice/ASSD with a Table-1 summary.

Exit codes: 0 = every labelled case scored; 1 = some case could not be scored (missing or
off-grid prediction, unreadable file; the JSON is still written); 2 = nothing to evaluate
(a directory missing or without ground truth), or a ``--json`` path that could replace the user's data
(inside the prediction or label folder, a NIfTI name, an existing file that is not an earlier result;
``cosmos.data.outputs.check_json_output``), refused before anything is scored or written.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Dice and ASSD (mm) of VS and cochlea predictions against ground-truth labels",
        description="Score crossmoda_{k}_Label.nii.gz (or crossmoda_{k}.nii.gz) predictions against "
        "crossmoda_{k}_Label.nii.gz ground truth, with the crossMoDA conventions "
        "(empty prediction: ASSD 350 mm).",
    )
    p.add_argument("pred_dir", help="folder of predictions")
    p.add_argument(
        "label_dir", help="folder of ground-truth labels (or a crossMoDA root with target_validation_labels/)"
    )
    p.add_argument(
        "--json",
        dest="json_path",
        default=None,
        metavar="FILE",
        help="write the full result as JSON (a new file outside PRED_DIR and LABEL_DIR, or an earlier result)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json file even when it is not an earlier result (never an input)",
    )
    p.add_argument("--per-case", action="store_true", help="also print one row per case")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import json
    import sys

    from cosmos.data.outputs import atomic_write, check_json_output
    from cosmos.evaluation.metrics import evaluate_folder, format_summary

    if args.json_path is not None:  # before scoring: never replace a prediction, a label or a non-result file
        check_json_output(
            args.json_path,
            inputs={"prediction folder": args.pred_dir, "label folder": args.label_dir},
            what="--json",
            keys=("cases", "summary", "errors"),
            overwrite=args.overwrite,
        )
    result = evaluate_folder(args.pred_dir, args.label_dir)
    if args.json_path is not None:
        atomic_write(args.json_path, json.dumps(result, indent=2) + "\n")  # temp file + rename: never half a JSON
    print(format_summary(result, per_case=args.per_case))
    if result["errors"]:
        print(f"cosmos evaluate: {len(result['errors'])} case(s) could not be scored", file=sys.stderr)
        return 1
    return 0
