"""Label-free plausibility of predictions on real hrT2: does each scan look like a head we know?

No target label exists in domain adaptation, but the anatomy does: a scan of a vestibular schwannoma
patient shows one tumour, at most one cochlea on each side of the head, and structures whose sizes are
in the range the annotated source scans show. A model that learned nothing (an empty map), or one that
marks the bright CSF as tumour (a huge VS), fails these tests on most scans, whatever the data.

Per case: ``vs_components`` (26-connected), ``cochlea_per_side`` (components left and right of the head's
midline, :func:`cosmos.segmentation.inference.head_midline_x`), ``vs_mm3`` and ``cochlea_mm3``, and
``problems`` (empty = plausible). Volumes count as plausible within ``[min / f, max * f]`` of the source
labels' volumes (``checks.volume_range_factor``). Written as ``plausibility.json`` next to the
predictions it judges, and read by the round's checks (:mod:`cosmos.selftraining.verdict`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from cosmos.data import layout, nifti

log = logging.getLogger(__name__)

PLAUSIBILITY_FILE = "plausibility.json"
VS, COCHLEA = 1, 2
_CONNECTIVITY = np.ones((3, 3, 3), bool)


def voxel_mm3(vol: nifti.Volume) -> float:
    return float(np.prod(vol.spacing))


def source_volume_range(data_dir: str | Path) -> dict[str, list[float]] | None:
    """``{"VS": [min, max], "cochlea": [min, max]}`` in mm³ over the labelled source scans of a crossMoDA root
    (None without any). A structure absent from every source label gets no range."""
    folder = Path(data_dir) / layout.SOURCE_DIR
    if not folder.is_dir():
        return None
    volumes: dict[str, list[float]] = {"VS": [], "cochlea": []}
    for case in layout.list_cases(folder, "ceT1"):
        if case.label is None:
            continue
        lab = nifti.load(case.label, label=True)
        mm3 = voxel_mm3(lab)
        for name, value in (("VS", VS), ("cochlea", COCHLEA)):
            count = int((lab.data == value).sum())
            if count:
                volumes[name].append(count * mm3)
    if not any(volumes.values()):
        return None
    return {k: [round(min(v), 2), round(max(v), 2)] for k, v in volumes.items() if v}


def case_plausibility(
    label: nifti.Volume,
    midline_x: float,
    ranges: Mapping[str, list[float]] | None,
    factor: float,
) -> dict[str, Any]:
    """The figures and problems of one predicted label map (see the module docstring)."""
    seg = np.asarray(label.data)
    mm3 = voxel_mm3(label)
    _, n_vs = ndimage.label(seg == VS, structure=_CONNECTIVITY)
    comps, n_co = ndimage.label(seg == COCHLEA, structure=_CONNECTIVITY)
    per_side = [0, 0]
    if n_co:
        centres = np.asarray(ndimage.center_of_mass(np.ones(seg.shape, bool), comps, np.arange(1, n_co + 1)), float)
        world_x = centres @ np.asarray(label.affine, float)[0, :3] + float(label.affine[0, 3])
        per_side = [int((world_x >= midline_x).sum()), int((world_x < midline_x).sum())]
    row: dict[str, Any] = {
        "vs_components": int(n_vs),
        "cochlea_per_side": per_side,
        "vs_mm3": round(float((seg == VS).sum()) * mm3, 2),
        "cochlea_mm3": round(float((seg == COCHLEA).sum()) * mm3, 2),
    }
    problems = []
    if n_vs != 1:
        problems.append("no VS" if n_vs == 0 else f"{n_vs} VS components")
    if n_co == 0:
        problems.append("no cochlea")
    elif max(per_side) > 1:
        problems.append(f"{max(per_side)} cochlea components on one side")
    for name, key in (("VS", "vs_mm3"), ("cochlea", "cochlea_mm3")):
        lo_hi = (ranges or {}).get(name)
        if lo_hi and row[key] > 0 and not (lo_hi[0] / factor <= row[key] <= lo_hi[1] * factor):
            problems.append(f"{name} {row[key]:.0f} mm3 outside {lo_hi[0] / factor:.0f}-{lo_hi[1] * factor:.0f}")
    row["problems"] = problems
    return row


def assess_folder(
    predictions_dir: str | Path, images_dir: str | Path, data_dir: str | Path, volume_range_factor: float
) -> dict[str, Any]:
    """Judge every ``<case>_Label`` prediction in ``predictions_dir`` (images in ``images_dir`` give the head's
    midline); write and return ``plausibility.json``'s content."""
    from cosmos.segmentation.inference import head_midline_x

    pred, images = Path(predictions_dir), Path(images_dir)
    ranges = source_volume_range(data_dir)
    cases: dict[str, Any] = {}
    for path in sorted(pred.glob("*_Label.nii*")):
        case_id = layout.parse_prediction_name(path.name) or path.name.split("_Label")[0]
        label = nifti.load(path, label=True)
        image_path = next(iter(sorted(images.glob(f"{case_id}_*.nii*"))), None)
        midline = head_midline_x(nifti.load(image_path)) if image_path is not None else _centre_x(label)
        cases[case_id] = case_plausibility(label, midline, ranges, volume_range_factor)
    n_ok = sum(1 for c in cases.values() if not c["problems"])
    result = {
        "n_cases": len(cases),
        "n_plausible": n_ok,
        "fraction": (n_ok / len(cases)) if cases else None,
        "source_volume_mm3": ranges,
        "volume_range_factor": volume_range_factor,
        "cases": cases,
    }
    (pred / PLAUSIBILITY_FILE).write_text(json.dumps(result, indent=2))
    if cases:
        log.info("plausibility of %s: %d of %d scans plausible", pred.name, n_ok, len(cases))
    return result


def _centre_x(vol: nifti.Volume) -> float:
    centre = (np.asarray(vol.shape, float) - 1) / 2.0
    return float(vol.affine[0, :3] @ centre + vol.affine[0, 3])


def read(folder: str | Path | None) -> dict[str, Any] | None:
    """``plausibility.json`` of a predictions folder (None when absent)."""
    if folder is None:
        return None
    path = Path(folder) / PLAUSIBILITY_FILE
    return json.loads(path.read_text()) if path.is_file() else None
