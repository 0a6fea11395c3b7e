"""``cosmos predict``: segment hrT2 NIfTI files with a registered (or local) COSMOS segmenter."""

from __future__ import annotations

import tempfile

from cosmos.cli import add_config_args, config_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment hrT2 NIfTI images with a registered segmenter (VS=1, cochlea=2)",
        description="NIfTI in, NIfTI out on the same grid: crossmoda_{k}_Label.nii.gz for crossMoDA inputs, "
        "<stem>_seg.nii.gz otherwise. --model takes models:/NAME@ALIAS, models:/NAME/VERSION or a "
        "local folder of trained folds.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="hrT2 .nii/.nii.gz files or folders of them")
    p.add_argument(
        "--model",
        default="models:/cosmos-segmenter@champion",
        help="models:/cosmos-segmenter@champion (default), models:/cosmos-segmenter/3, or a folder",
    )
    p.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: not an input folder; files already in it are replaced only when an earlier "
        "cosmos predict wrote them there",
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI holding the registry (default: $MLFLOW_TRACKING_URI)"
    )
    p.add_argument("--no-mirroring", action="store_true", help="skip flip test-time augmentation (8x faster in 3D)")
    add_config_args(p)  # used for a local model folder without a saved config, and for --set overrides
    p.set_defaults(func=_run)


def _run(args) -> int:
    from cosmos.data.outputs import check_output_folder
    from cosmos.segmentation.registry import collect_nifti_inputs, output_name, resolve_model, segment_files

    files = collect_nifti_inputs(args.inputs)  # fail on bad input before downloading a model
    # and on an output folder that would replace the inputs, their labels or any file that is not ours
    check_output_folder(args.out, inputs=[*args.inputs, *files], outputs=[output_name(f) for f in files], what="-o")
    with tempfile.TemporaryDirectory(prefix="cosmos-model-") as tmp:
        model = resolve_model(args.model, args.tracking_uri, dst_dir=tmp)
        cfg = model.cfg if model.cfg is not None else config_from_args(args)
        if model.cfg is not None and args.overrides:
            cfg = cfg.with_overrides(args.overrides)
        outputs = segment_files(model.fold_dirs, files, args.out, cfg, mirroring=False if args.no_mirroring else None)
    for src, dst in zip(files, outputs):
        print(f"{src} -> {dst}")
    version = f" version {model.version}" if model.version else ""
    print(
        f"segmented {len(outputs)} image(s) with {args.model}{version} ({len(model.fold_dirs)} folds) into {args.out}"
    )
    return 0
