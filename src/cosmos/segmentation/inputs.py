"""What the segmenter is asked to segment: input collection and the fold-ensemble call on files.

Why a module of its own: ``cosmos predict``, the serving model and the registered pyfunc model all
take user-given files and folders, and must refuse the same mistakes with the same messages (a
ceT1 or a label map instead of an hrT2 image, a whole crossMoDA root, two inputs writing one output
name) and name outputs the same way. :func:`collect_nifti_inputs` does the checking,
:func:`segment_files` runs nnU-Net (``inference.predict``, imported when called) on the checked
files, with the ROI crop round-trip when the model was trained on crops, and :func:`output_name`
is the naming rule: ``crossmoda_{k}_Label.nii.gz`` for crossMoDA inputs, ``<stem>_seg.nii.gz``
otherwise.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from cosmos.data.layout import SOURCE_DIR, TARGET_DIR, VALIDATION_DIR, label_name, parse_name
from cosmos.errors import CosmosError

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig


def output_name(image: str | Path) -> str:
    """``crossmoda_{k}_Label.nii.gz`` for a crossMoDA image, ``<stem>_seg.nii.gz`` otherwise."""
    name = Path(image).name
    parsed = parse_name(name)
    if parsed is not None:
        return label_name(parsed[0])
    stem = re.sub(r"\.nii(\.gz)?$", "", name)
    return f"{stem}_seg.nii.gz"


def _is_nifti_name(name: str) -> bool:
    return name.endswith(".nii.gz") or name.endswith(".nii")


_WRONG_MODALITY = {
    "ceT1": "a contrast-enhanced T1 (source-domain) image; the segmenter segments real hrT2 images",
    "Label": "a label map, not an image",
    "hrT2pseudo": "a translated pseudo-hrT2 (training data); the segmenter segments real hrT2 images",
}


def _check_file(path: Path, warnings: list[str] | None = None) -> None:
    """Refuse a file that is not a usable hrT2 scan (one line); its modality warning goes to ``warnings``
    when given (the caller shows it once the command will run), else to the log."""
    import logging

    from cosmos.data.modality import load_scan

    if not _is_nifti_name(path.name):
        raise CosmosError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    parsed = parse_name(path.name)
    if parsed is not None and parsed[1] in _WRONG_MODALITY:
        raise CosmosError(f"{path}: wrong modality: {_WRONG_MODALITY[parsed[1]]}")
    # one line naming the file: corrupt, truncated, 2D/4D, NaN/Inf, constant, bad affine, or geometry
    # SimpleITK/nnU-Net would read differently (pixdim vs sform, zero pixdim, implausible or sheared voxels),
    # too much memory from the header, a label map; the modality by content is a warning (cosmos.data.modality)
    _, warning = load_scan(path)
    if warning and warnings is not None:
        warnings.append(f"{path}: {warning}")
    elif warning:
        logging.getLogger(__name__).warning("%s: %s", path, warning)


def collect_nifti_inputs(inputs: Iterable[str | Path], warnings: list[str] | None = None) -> list[Path]:
    """Expand files and folders to the list of hrT2 NIfTI images to segment, with clear errors.

    A folder contributes its ``*.nii``/``*.nii.gz`` images (label files beside them are ignored).
    Refused with a :class:`CosmosError`: missing paths, non-NIfTI files, 2D/4D or corrupt volumes,
    ceT1 / pseudo-hrT2 / label files, a ``source_training`` folder, a whole crossMoDA root, an
    empty folder, and two inputs that would write the same output name. ``warnings``: collects the
    modality-by-content warnings (``cosmos.data.modality``) instead of logging them.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise CosmosError(f"{p}: no such file or folder")
        if p.is_file():
            _check_file(p, warnings)
            files.append(p)
            continue
        subdirs = {d.name for d in p.iterdir() if d.is_dir()}
        if subdirs & {SOURCE_DIR, TARGET_DIR, VALIDATION_DIR}:
            raise CosmosError(
                f"{p}: is a crossMoDA dataset root; pass one of its hrT2 image folders, "
                f"e.g. {p / VALIDATION_DIR} or {p / TARGET_DIR}"
            )
        niftis = sorted(x for x in p.iterdir() if x.is_file() and _is_nifti_name(x.name))
        kinds = {x: (parse_name(x.name) or ("", ""))[1] for x in niftis}
        wrong = [x for x in niftis if kinds[x] in ("ceT1", "hrT2pseudo")]
        if wrong or p.name == SOURCE_DIR:
            what = _WRONG_MODALITY["ceT1" if (p.name == SOURCE_DIR or kinds.get(wrong[0]) == "ceT1") else "hrT2pseudo"]
            shown = ", ".join(x.name for x in wrong[:3]) + (" ..." if len(wrong) > 3 else "")
            raise CosmosError(f"{p}: wrong modality: holds {what}" + (f" ({shown})" if shown else ""))
        images = [x for x in niftis if kinds[x] != "Label"]
        if not images:
            extra = " (only label files)" if niftis else ""
            raise CosmosError(f"{p}: no NIfTI images (*.nii.gz / *.nii) to segment{extra}")
        for x in images:
            _check_file(x, warnings)
        files.extend(images)
    if not files:
        raise CosmosError("no input images given")
    seen: dict[str, Path] = {}
    for f in files:
        name = output_name(f)
        if name in seen:
            raise CosmosError(f"{f}: would write {name}, as {seen[name]} does; segment them into separate folders")
        seen[name] = f
    return files


def _measure_uncropped(label_path: Path, labels, original, crop_prediction: Path, scan: Path) -> None:
    """``<case>_measurements.json`` beside a label put back on its whole scan: volumes, diameter and left/right
    from the whole scan's grid and head; the ensemble's confidence and the components the post-processing removed
    from the crop's own measurements (the softmax and the raw labels exist on the crop only; a crop is cut from the
    scan, not resampled, so they describe the same voxels). Nothing is written when the crop had no measurements."""
    import json

    from cosmos.data.outputs import record_outputs
    from cosmos.evaluation.measurements import measure, measurements_path, write_json
    from cosmos.segmentation.postprocessing import COCHLEA_LABEL, head_midline_x

    crop_json = measurements_path(crop_prediction)
    if not crop_json.is_file():
        return
    crop = json.loads(crop_json.read_text())
    midline = head_midline_x(original) if (labels == COCHLEA_LABEL).any() else None
    full = measure(
        labels,
        original.affine,
        removed_components=crop.get("components_removed"),
        midline_x=midline,
        confidence=crop.get("vs_confidence_mean_max_prob"),
    )
    target = measurements_path(label_path)
    record_outputs(label_path.parent, {target.name: scan.resolve()})
    write_json(target, full)


def segment_files(
    fold_dirs: Sequence[str | Path],
    files: Sequence[str | Path],
    out_dir: str | Path,
    cfg: CosmosConfig,
    mirroring: bool | None = None,
) -> list[Path]:
    """Segment ``files`` with the ensemble of ``fold_dirs`` into ``out_dir``; returns the output
    paths in input order, named by :func:`output_name` (nnU-Net via ``inference.predict``)."""
    from cosmos.data import nifti, roi
    from cosmos.data.outputs import record_outputs
    from cosmos.segmentation.inference import predict

    files = [Path(f) for f in files]
    model = roi.model_of(Path(fold_dirs[0])) if fold_dirs else None
    if model is not None and model.enabled:
        # trained on ROI crops: crop each scan the same way, predict, put the labels back on its grid
        with tempfile.TemporaryDirectory(prefix="cosmos-roi-") as tmp:
            crops = roi.crop_inputs(files, model, Path(tmp) / "in")
            inner = predict(
                [Path(d) for d in fold_dirs],
                [c for c, _ in crops.values()],
                Path(tmp) / "out",
                cfg,
                mirroring=mirroring,
            )
            by_crop = {Path(w).name: Path(w) for w in inner}
            written = []
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            for f, (crop, box) in crops.items():
                pred = by_crop.get(output_name(crop))
                if pred is None:
                    continue
                original = nifti.load(f)
                data = roi.uncrop(nifti.load(pred, label=True).data, box, original.shape)
                # listed as ours before it is written, so a later `cosmos predict` may replace it (data.outputs)
                record_outputs(out_dir, {output_name(f): Path(f).resolve()})
                written.append(nifti.save(Path(out_dir) / output_name(f), data, like=original, label=True))
                _measure_uncropped(written[-1], data, original, pred, Path(f))
    else:
        written = predict([Path(d) for d in fold_dirs], files, out_dir, cfg, mirroring=mirroring)
    by_name = {Path(w).name: Path(w) for w in written}
    outputs = []
    for scan in files:
        produced = by_name.get(output_name(scan))
        if produced is None or not produced.is_file():
            raise CosmosError(f"{scan}: the segmenter wrote no prediction (expected {output_name(scan)} in {out_dir})")
        outputs.append(produced)
    return outputs
