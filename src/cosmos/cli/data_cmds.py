"""``cosmos phantom`` (write the built-in synthetic dataset) and ``cosmos validate`` (check a dataset).

``validate`` prints one line per problem, each naming the file, and exits 0 only when the dataset
is clean (1 when it has problems), so it can gate a CI job or a pipeline submission.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from cosmos.cli.args import add_config_args, config_from_args
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "phantom",
        help="write the built-in synthetic crossMoDA dataset (ceT1 source, hrT2 target)",
        description="Write a crossMoDA 2021 tree with validation labels and preview.png. "
        "Counts default to the profile's phantom section.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--n-source", type=int, default=None, help="annotated ceT1 cases")
    p.add_argument("--n-target", type=int, default=None, help="unannotated hrT2 training cases")
    p.add_argument("--n-val", type=int, default=None, help="hrT2 validation cases (labels written too)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--scale",
        choices=("small", "full"),
        default=None,
        help="small: ~50 mm field of view, ~80-110 voxels in-plane x 25-42 slices (CPU); full: life-sized whole heads, crossMoDA-sized grids",
    )
    p.add_argument(
        "--style",
        choices=("builtin", "random"),
        default=None,
        help="builtin: the fixed scanner sites, grids and anatomy; random: contrast curves, storage, fields of view, "
        "spacing and anatomy proportions drawn from the seed (recorded under 'style' in phantom.json)",
    )
    p.add_argument(
        "--target-labels",
        action="store_true",
        help="also write hrT2 training labels to target_training_labels/ (for pseudo-label QA only)",
    )
    p.add_argument("--no-preview", action="store_true", help="skip preview.png")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files at the phantom's paths that an earlier cosmos phantom did not write",
    )
    add_config_args(p)
    p.set_defaults(func=_phantom)

    v = sub.add_parser(
        "validate",
        help="check a crossMoDA dataset (local folder or s3://bucket/prefix)",
        description="Print one line per problem (naming the file); exit 0 when clean, 1 otherwise.",
    )
    v.add_argument("data", help="dataset root (crossMoDA 2021 layout) or s3://bucket/prefix")
    v.add_argument("--val-labels", default=None, help="folder (or s3:// URI) of validation labels")
    v.set_defaults(func=_validate)


def _phantom(args) -> int:
    from cosmos.data.phantom import make_phantom

    cfg = config_from_args(args).phantom
    root = make_phantom(
        args.out,
        n_source=cfg.n_source if args.n_source is None else args.n_source,
        n_target=cfg.n_target if args.n_target is None else args.n_target,
        n_val=cfg.n_val if args.n_val is None else args.n_val,
        seed=cfg.seed if args.seed is None else args.seed,
        scale=cfg.scale if args.scale is None else args.scale,
        preview=not args.no_preview,
        target_labels=args.target_labels,
        style=cfg.style if args.style is None else args.style,
        overwrite=args.overwrite,
    )
    print(root)
    return 0


def _validate(args) -> int:
    from cosmos.data import storage
    from cosmos.data.validate import check_dataset

    with tempfile.TemporaryDirectory(prefix="cosmos-validate-") as tmp:
        try:
            root = storage.download(args.data, Path(tmp) / "data") if storage.is_s3(args.data) else Path(args.data)
            labels = args.val_labels
            if labels is not None and storage.is_s3(labels):
                labels = storage.download(labels, Path(tmp) / "val_labels")
        except CosmosError as exc:
            print(str(exc))
            return 1
        report = check_dataset(root, val_labels=labels)
        problems = report.errors

        def named(problem) -> str:
            line = str(problem)
            if storage.is_s3(args.data):  # name the object, not our temporary copy
                line = line.replace(str(root), args.data.rstrip("/"))
            if storage.is_s3(args.val_labels) and labels is not None:
                line = line.replace(str(labels), args.val_labels.rstrip("/"))
            return line

        for problem in problems:
            print(named(problem))
        for warning in report.warnings:
            print(f"warning: {named(warning)}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.data}", file=sys.stderr)
        return 1
    print(f"{args.data}: OK", file=sys.stderr)
    return 0
