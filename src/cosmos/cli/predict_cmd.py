"""``cosmos predict``: segment hrT2 NIfTI files or DICOM series with a registered (or local) COSMOS segmenter.

Beside each label: ``<case>_measurements.json`` (:mod:`cosmos.evaluation.measurements`), with ``--prior`` the
VS volume change since an earlier scan. A folder holding one DICOM MR series (:mod:`cosmos.data.dicom`) gives
``<folder name>_Label.nii.gz`` and, with ``--dicom-seg``, ``<folder name>_SEG.dcm``.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosmos.cli.args import add_config_args, config_from_args
from cosmos.errors import CosmosError
from cosmos.evaluation.measurements import measurements_path


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment hrT2 NIfTI images with a registered segmenter (VS=1, cochlea=2)",
        description="NIfTI in, NIfTI out on the same grid: crossmoda_{k}_Label.nii.gz for crossMoDA inputs, "
        "<stem>_seg.nii.gz otherwise. --model takes models:/NAME@ALIAS, models:/NAME/VERSION or a "
        "local folder of trained folds.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="FILE_OR_DIR",
        help="hrT2 .nii/.nii.gz files, folders of them, or folders holding one DICOM MR series each "
        "(-> <folder name>_Label.nii.gz)",
    )
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files in -o that an earlier cosmos predict did not write (never an input)",
    )
    p.add_argument(
        "--prior",
        default=None,
        metavar="PRIOR_LABEL",
        help="label map of an earlier scan of the same patient (one input scan only): adds the VS volume change to "
        "the measurements JSON and prints it (cosmos compare)",
    )
    p.add_argument(
        "--growth-threshold",
        type=float,
        default=None,
        metavar="PCT",
        help="with --prior: flag growth above this VS volume increase in %% (default 20)",
    )
    p.add_argument(
        "--dicom-seg",
        action="store_true",
        help="for DICOM series inputs: also write <folder name>_SEG.dcm, a DICOM SEG referencing the source series",
    )
    add_config_args(p)  # used for a local model folder without a saved config, and for --set overrides
    p.set_defaults(func=_run)


def _run(args) -> int:
    from cosmos.data.outputs import check_output_folder
    from cosmos.segmentation.registry import collect_nifti_inputs, output_name, resolve_model, segment_files

    warnings: list[str] = []
    staging = tempfile.TemporaryDirectory(prefix="cosmos-dicom-")  # removed when _run ends (or fails)
    # DICOM series folders: read and checked (one line on a bad series) and staged as NIfTI before any model
    series = _stage_dicom(args.inputs, Path(staging.name))
    nifti_inputs = [i for i in args.inputs if str(i) not in {str(s.source) for s in series}]
    # fail on bad input before downloading a model
    files = collect_nifti_inputs(nifti_inputs, warnings) if nifti_inputs else []
    _check_clinical_args(args, files, series)
    # and on an output folder that would replace the inputs, their labels or any file that is not ours
    check_output_folder(
        args.out,
        inputs=[*args.inputs, *files],
        outputs=[
            *(n for f in files for n in (output_name(f), measurements_path(output_name(f)).name)),
            *_dicom_outputs(series, args.dicom_seg),
        ],
        what="-o",
        overwrite=args.overwrite,
    )
    for line in warnings:  # a ceT1-looking scan (cosmos.data.modality): a warning, not a refusal
        print(f"cosmos: warning: {line}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cosmos-model-") as tmp:
        model = resolve_model(args.model, args.tracking_uri, dst_dir=tmp)
        cfg = model.cfg if model.cfg is not None else config_from_args(args)
        if model.cfg is not None and args.overrides:
            cfg = cfg.with_overrides(args.overrides)
        mirroring = False if args.no_mirroring else None
        outputs = segment_files(model.fold_dirs, files, args.out, cfg, mirroring=mirroring) if files else []
        if series:
            staged = [s.nifti for s in series]
            inner = segment_files(model.fold_dirs, staged, Path(staging.name) / "out", cfg, mirroring=mirroring)
            outputs += _place_dicom_outputs(series, inner, args, model.version)
    staging.cleanup()
    for src, dst in zip([*files, *(s.source for s in series)], outputs):
        _ensure_measurements(dst, src)
        print(f"{src} -> {dst}")
    if args.prior:
        _add_comparison(args, outputs[0])
    version = f" version {model.version}" if model.version else ""
    print(
        f"segmented {len(outputs)} image(s) with {args.model}{version} ({len(model.fold_dirs)} folds) into {args.out}"
    )
    return 0


# ------------------------------------------------------------------------------ DICOM series and measurements
@dataclass
class _Series:
    """A DICOM series input: the folder given, its checked series, and the NIfTI it was staged as."""

    source: Path
    info: Any  # cosmos.data.dicom.SeriesInfo
    nifti: Path

    @property
    def label_name(self) -> str:
        return f"{self.source.resolve().name}_Label.nii.gz"

    @property
    def seg_name(self) -> str:
        return f"{self.source.resolve().name}_SEG.dcm"


def _stage_dicom(inputs: list[str], staging: Path) -> list[_Series]:
    """Each input folder that holds DICOM (:func:`cosmos.data.dicom.is_dicom_folder`) read as one checked series
    and written as NIfTI under ``staging`` (SimpleITK converts DICOM's LPS to NIfTI's RAS)."""
    from cosmos.data import dicom

    found: list[_Series] = []
    for i, item in enumerate(inputs):
        folder = Path(item)
        if not dicom.is_dicom_folder(folder):
            continue
        image, info = dicom.read_series(folder)
        staged = dicom.write_nifti(image, staging / "in" / f"dicom_{i}.nii.gz")
        found.append(_Series(folder, info, staged))
    names = [s.label_name for s in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CosmosError(f"DICOM folders would write the same output ({', '.join(dupes)}); rename one")
    return found


def _dicom_outputs(series: list[_Series], dicom_seg: bool) -> list[str]:
    out = []
    for s in series:
        out += [s.label_name, measurements_path(s.label_name).name] + ([s.seg_name] if dicom_seg else [])
    return out


def _check_clinical_args(args, files: list[Path], series: list[_Series]) -> None:
    """One line for flags that cannot apply: --dicom-seg without a DICOM input, --prior with several scans."""
    from cosmos.cli.compare_cmd import check_threshold
    from cosmos.evaluation.measurements import load_label
    from cosmos.segmentation.registry import output_name

    if args.dicom_seg and not series:
        raise CosmosError("--dicom-seg: needs a DICOM series input (a folder holding one series); got NIfTI only")
    clash = {s.label_name for s in series} & {output_name(f) for f in files}
    if clash:
        raise CosmosError(f"a DICOM folder and a NIfTI input would both write {sorted(clash)[0]}; rename one")
    if args.growth_threshold is not None and not args.prior:
        raise CosmosError("--growth-threshold: only with --prior")
    if args.prior:
        if len(files) + len(series) != 1:
            raise CosmosError(f"--prior: compares one scan; got {len(files) + len(series)} inputs")
        if args.growth_threshold is not None:
            check_threshold(args.growth_threshold)
        load_label(args.prior)  # missing, unreadable or not a label map: one line before any model


def _place_dicom_outputs(series: list[_Series], inner: list[Path], args, version: str | None) -> list[Path]:
    """Move each staged series' label (and measurements) into ``-o`` under the folder's name; with --dicom-seg
    write the DICOM SEG beside it. Each name is recorded as ours before it is written (cosmos.data.outputs)."""
    import os

    from cosmos.data import dicom, nifti
    from cosmos.data.outputs import record_outputs

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    placed = []
    for s, label in zip(series, inner):
        target = out / s.label_name
        record_outputs(out, {n: str(s.source.resolve()) for n in _dicom_outputs([s], args.dicom_seg)})
        staged_json = measurements_path(label)
        os.replace(label, target)  # same grid: the staged NIfTI is the series
        if staged_json.is_file():
            os.replace(staged_json, measurements_path(target))
        if args.dicom_seg:
            data = nifti.load(target, label=True).data
            # the staged NIfTI's voxel (i, j, k) is SimpleITK's (x, y, z) of the series: frames are k, rows j
            dicom.write_seg(data.transpose(2, 1, 0), s.info, out / s.seg_name, _software_version(version))
            print(f"{s.source} -> {out / s.seg_name}")
        placed.append(target)
    return placed


def _software_version(model_version: str | None) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("cosmos-kubeflow")
    except PackageNotFoundError:
        mine = "unknown"
    return f"cosmos {mine}" + (f", model version {model_version}" if model_version else "")


def _ensure_measurements(label: Path, source: Path) -> None:
    """Measurements from the label file where the prediction left none (models trained on ROI crops: the JSON
    was written on the crop) or an older one: volumes and diameter only, confidence and removed counts None."""
    from cosmos.data.outputs import record_outputs
    from cosmos.evaluation.measurements import measure_file, write_json

    path = measurements_path(label)
    if path.is_file() and path.stat().st_mtime_ns >= label.stat().st_mtime_ns:
        return
    record_outputs(label.parent, {path.name: str(Path(source).resolve())})
    write_json(path, measure_file(label))


def _add_comparison(args, label: Path) -> None:
    """--prior: the VS volume change from the prior label to this prediction, into its measurements JSON."""
    from cosmos.evaluation.measurements import (
        DEFAULT_GROWTH_THRESHOLD_PCT,
        compare,
        describe_comparison,
        measure_file,
        read_json,
        write_json,
    )

    threshold = DEFAULT_GROWTH_THRESHOLD_PCT if args.growth_threshold is None else args.growth_threshold
    path = measurements_path(label)
    current = read_json(path)
    result = compare(measure_file(args.prior), current, threshold)
    current["comparison"] = {"prior_label": str(args.prior), **result}
    write_json(path, current)
    print(describe_comparison(result, str(args.prior), str(label)))
    if result["note"]:
        print(f"note: {result['note']}")
