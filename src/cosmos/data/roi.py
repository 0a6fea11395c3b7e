"""Crop every scan to the region of interest (both inner ears), learnt from the source labels alone.

Why: real scans are whole heads (a 4-30 mm tumour and a cochlea of a few mm in ~200 mm), and at CPU
budgets nnU-Net's patches then rarely see either structure while sliding-window prediction over the
whole head costs thousands of patches per scan. Cropping to the inner-ear region makes both
training and prediction an order of magnitude cheaper and the foreground far less rare.

How, without a single target label: the annotated source scans say where VS and cochleae lie
*relative to the head*. For each source case the head's world bounding box (the largest bright
connected component) and the label's world bounding box are measured; the label box is stored in
head-normalised coordinates (0 = the head's low edge, 1 = its high edge per world axis) and the
union over cases, widened by a margin in millimetres, is the ROI model. Any scan of either modality
is then cropped by finding its own head box and mapping the normalised box back to world
coordinates. Where the head touches both ends of the field of view along an axis (a limited-FOV
acquisition, or a small phantom), its extent there is unknown and that axis is not cropped: the
crop errs on the side of keeping everything.

The crop is a pure index window: voxels are never resampled and the cropped file's affine is the
original's shifted to the window's first voxel, so :func:`uncrop` puts a prediction back on the
original grid exactly.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from cosmos.data import layout, nifti
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

ROI_FILE = "roi.json"
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (start, stop) per voxel axis


@dataclass
class RoiModel:
    """The ROI in head-normalised world coordinates (x, y, z = RAS world axes)."""

    low: list[float]
    high: list[float]
    margin_mm: float
    min_size_mm: float
    n_cases: int
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CropRecord:
    """Where one cropped file came from (voxel window of the original) and its original shape."""

    box: list[list[int]]
    shape: list[int]
    cropped: bool = field(default=True)


# ------------------------------------------------------------------------------------ geometry
def _world_corners(
    affine: np.ndarray, lo: Sequence[float] | np.ndarray, hi: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The 8 world-space corners of a voxel-index box (voxel centres at lo and hi)."""
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    return (affine @ corners.T).T[:, :3]


def head_mask(data: np.ndarray) -> np.ndarray:
    """The head: voxels above a low fraction of the robust maximum, largest component, holes filled."""
    finite = np.nan_to_num(data.astype(np.float32, copy=False))
    hi = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    if hi <= 0:
        return np.zeros(finite.shape, dtype=bool)
    mask = finite > 0.08 * hi
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def head_box(vol: nifti.Volume, coarse_mm: float = 2.0) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray]:
    """The head's voxel bounding box and the world axes along which it fills the field of view.

    The mask is computed on a strided copy with voxels of about ``coarse_mm`` (a whole head at
    0.4 mm is 30 M voxels; the box needs no sub-millimetre precision), then mapped back.
    """
    spacing = np.asarray(vol.spacing, float)
    stride = np.maximum(1, np.floor(coarse_mm / np.maximum(spacing, 1e-6))).astype(int)
    small = vol.data[:: stride[0], :: stride[1], :: stride[2]]
    mask = head_mask(small)
    box = _voxel_box(mask)
    truncated = _truncated_world_axes(vol.affine, mask)
    if box is None:
        return None, truncated
    lo, hi = box
    shape = np.array(vol.shape)
    return (lo * stride, np.minimum(hi * stride + stride - 1, shape - 1)), truncated


def _voxel_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    return idx.min(axis=0), idx.max(axis=0)


def _world_box(affine: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = _world_corners(affine, lo, hi)
    return pts.min(axis=0), pts.max(axis=0)


def _truncated_world_axes(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """World axes along which the head touches both ends of the field of view (extent unknown)."""
    touched = np.zeros(3, dtype=bool)
    lo_hi = _voxel_box(mask)
    if lo_hi is None:
        return np.ones(3, dtype=bool)
    lo, hi = lo_hi
    both = (lo <= 0) & (hi >= np.array(mask.shape) - 1)
    # the world axis each voxel axis mostly runs along
    for vox_axis in np.flatnonzero(both):
        world_axis = int(np.argmax(np.abs(affine[:3, vox_axis])))
        touched[world_axis] = True
    return touched


# ------------------------------------------------------------------------------------ fitting
def fit(source_cases: Iterable[layout.Case], margin_mm: float = 12.0, min_size_mm: float = 40.0) -> RoiModel:
    """The ROI model from annotated source scans (image + label each)."""
    lows, highs = [], []
    for case in source_cases:
        if case.label is None:
            continue
        img = nifti.load(case.image)
        lab = nifti.load(case.label, label=True)
        fg = _voxel_box(lab.data > 0)
        hb, _ = head_box(img)
        if fg is None or hb is None:
            continue
        h_lo, h_hi = _world_box(img.affine, *hb)
        f_lo, f_hi = _world_box(lab.affine, *fg)
        extent = np.maximum(h_hi - h_lo, 1e-3)
        lows.append((f_lo - h_lo) / extent)
        highs.append((f_hi - h_lo) / extent)
    if not lows:
        raise CosmosError("ROI: no source case with both a head and a labelled structure to learn the region from")
    model = RoiModel(
        low=[float(v) for v in np.min(lows, axis=0)],
        high=[float(v) for v in np.max(highs, axis=0)],
        margin_mm=float(margin_mm),
        min_size_mm=float(min_size_mm),
        n_cases=len(lows),
    )
    log.info(
        "ROI from %d source case(s): head-normalised x %.2f-%.2f, y %.2f-%.2f, z %.2f-%.2f, margin %.0f mm",
        model.n_cases,
        model.low[0],
        model.high[0],
        model.low[1],
        model.high[1],
        model.low[2],
        model.high[2],
        margin_mm,
    )
    return model


def box_for(vol: nifti.Volume, model: RoiModel) -> Box:
    """The voxel window of ``vol`` that holds the ROI (the whole grid along axes it cannot place)."""
    return placed_box(vol, model)[0]


def placed_box(vol: nifti.Volume, model: RoiModel) -> tuple[Box, np.ndarray]:
    """:func:`box_for` plus, per voxel axis, whether the ROI could not place it (the whole axis kept
    because the head fills the field of view there)."""
    shape = np.array(vol.shape)
    full: Box = tuple((0, int(n)) for n in shape)  # type: ignore[assignment]
    unplaced = np.ones(3, dtype=bool)
    if not model.enabled:
        return full, unplaced
    hb, unknown = head_box(vol)
    if hb is None:
        return full, unplaced
    h_lo, h_hi = _world_box(vol.affine, *hb)
    extent = h_hi - h_lo
    w_lo = h_lo + np.array(model.low) * extent - model.margin_mm
    w_hi = h_lo + np.array(model.high) * extent + model.margin_mm
    centre, half = (w_lo + w_hi) / 2, np.maximum((w_hi - w_lo) / 2, model.min_size_mm / 2)
    w_lo, w_hi = centre - half, centre + half
    # world box -> voxel window: the voxel-index hull of the world box's corners
    inv = np.linalg.inv(vol.affine)
    corners = np.array(
        [[a, b, c, 1.0] for a in (w_lo[0], w_hi[0]) for b in (w_lo[1], w_hi[1]) for c in (w_lo[2], w_hi[2])]
    )
    vox = (inv @ corners.T).T[:, :3]
    v_lo = np.floor(vox.min(axis=0)).astype(int)
    v_hi = np.ceil(vox.max(axis=0)).astype(int) + 1
    box = []
    for axis in range(3):
        world_axis = _world_axis(vol.affine, axis)
        if unknown[world_axis]:
            box.append((0, int(shape[axis])))
        else:
            lo, hi = max(0, int(v_lo[axis])), min(int(shape[axis]), int(v_hi[axis]))
            box.append((lo, hi) if hi - lo >= 2 else (0, int(shape[axis])))
            unplaced[axis] = hi - lo < 2
    return tuple(box), unplaced  # type: ignore[return-value]


def _world_axis(affine: np.ndarray, vox_axis: int) -> int:
    """The world axis (0 = x, 1 = y, 2 = z) a voxel axis mostly runs along."""
    return int(np.argmax(np.abs(affine[:3, vox_axis])))


def window_extent_mm(vol: nifti.Volume, box: Box) -> np.ndarray:
    """The physical length of a voxel window per WORLD axis (mm)."""
    out = np.zeros(3)
    for axis, (lo, hi) in enumerate(box):
        out[_world_axis(vol.affine, axis)] = (hi - lo) * float(vol.spacing[axis])
    return out


def match_source_extent(
    box: Box,
    vol: nifti.Volume,
    unplaced: np.ndarray,
    label: np.ndarray,
    target_extent_mm: np.ndarray,
    ratio: float,
    margin_mm: float,
) -> Box:
    """A source window cut, along the axes the ROI could not place, to the target scans' extent.

    Why: where the head fills the field of view the ROI keeps the whole axis, and the two domains
    are often acquired differently there: a whole-head ceT1 (~170 mm head to neck) against an hrT2
    slab of ~65 mm around the inner ears. The translator then learns to map ceT1 slices of brain
    and neck, which real hrT2 never shows, onto hrT2 slices of the ear region, and invents contrast
    (measured on life-sized phantom heads: bone painted bright, the tumour black). A source scan is
    labelled, so its window can be centred on its own structures and cut to the length a target
    scan has; along an axis the source covers less than ``ratio`` times that length, nothing changes.
    """
    out = list(box)
    fg = _voxel_box(label > 0)
    if ratio <= 0 or fg is None:
        return box
    for axis in np.flatnonzero(unplaced):
        n = int(vol.shape[axis])
        spacing = float(vol.spacing[axis])
        want_mm = float(target_extent_mm[_world_axis(vol.affine, int(axis))])
        if not np.isfinite(want_mm) or want_mm <= 0 or n * spacing <= ratio * want_mm:
            continue
        lo_f, hi_f = int(fg[0][axis]), int(fg[1][axis])
        pad = int(math.ceil(margin_mm / spacing))
        length = min(n, max(int(round(want_mm / spacing)), hi_f - lo_f + 1 + 2 * pad))
        start = int(round((lo_f + hi_f + 1) / 2 - length / 2))
        start = min(max(start, 0), n - length)
        out[axis] = (start, start + length)
    return tuple(out)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ crop / uncrop
def crop_volume(vol: nifti.Volume, box: Box) -> nifti.Volume:
    """The window ``box`` of ``vol`` with its header and an affine shifted to the window's origin."""
    img = nib.Nifti1Image(vol.data, vol.affine, header=vol.header)
    sub = img.slicer[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]]
    header = sub.header.copy()
    return nifti.Volume(data=np.asarray(sub.dataobj), affine=sub.affine, header=header)


def uncrop(data: np.ndarray, box: Sequence[Sequence[int]], shape: Sequence[int]) -> np.ndarray:
    """A cropped label array put back into a zero array of the original ``shape``."""
    out = np.zeros(tuple(int(s) for s in shape), dtype=data.dtype)
    sl = tuple(slice(int(a), int(b)) for a, b in box)
    if out[sl].shape != data.shape:
        raise CosmosError(f"ROI: a {data.shape} prediction does not fit its crop window {list(box)}")
    out[sl] = data
    return out


def _scans(root: Path) -> list[tuple[Path, bool]]:
    """(file, is_label) for every crossMoDA-named scan in the folders of ``root``; images first."""
    found: list[tuple[Path, bool]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            parsed = layout.parse_name(f.name) if f.is_file() else None
            if parsed is not None:
                found.append((f, parsed[1] == "Label"))
    return sorted(found, key=lambda t: t[1])


def crop_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    enabled: bool = True,
    margin_mm: float = 12.0,
    min_size_mm: float = 40.0,
    source_extent_ratio: float = 1.5,
    model: RoiModel | None = None,
) -> dict[str, Any]:
    """Crop every scan of a crossMoDA tree into ``out_dir`` (same layout) and write ``roi.json``.

    ``model``: a region learnt elsewhere, used when the tree has no labelled source scans (``cosmos
    selftrain``: the region is learnt from the labelled pseudo-hrT2 folder, :func:`crop_labelled_folder`).

    A label is cropped with the window of its image (same case id: the source image, a
    validation image, or a target image for ``target_training_labels``). Target scans are cropped
    first: their median window length per world axis is what a source scan is cut to along the
    axes the ROI cannot place (:func:`match_source_extent`; ``source_extent_ratio`` 0 = never).
    Returns the roi.json content: the model and, per relative path, the window and the original shape.
    """
    src, out = Path(data_dir), Path(out_dir)
    ds = layout.discover(src)
    if enabled and ds.source:
        model = fit(ds.source, margin_mm, min_size_mm)
    elif enabled and model is not None and model.enabled:
        log.info(
            "ROI: no source scans in %s; the region learnt from %d labelled pseudo-hrT2 case(s)", src, model.n_cases
        )
    else:
        if enabled:
            log.warning("ROI crop off: %s has no labelled source scans to learn the region from", src)
        enabled = False
        model = RoiModel(low=[0.0] * 3, high=[1.0] * 3, margin_mm=0.0, min_size_mm=0.0, n_cases=0, enabled=False)
    records: dict[str, Any] = {}
    boxes_by_case: dict[tuple[str, str], Box] = {}
    domain_of = {layout.VALIDATION_LABELS_DIR: layout.VALIDATION_DIR, "target_training_labels": layout.TARGET_DIR}
    label_of = {c.image.resolve(): c.label for c in ds.source if c.label is not None}
    target_extents: list[np.ndarray] = []
    target_extent = np.full(3, np.nan)
    n_matched = 0
    # images before labels, and target images before source images (the source needs their extent)
    order = sorted(_scans(src), key=lambda t: (t[1], t[0].resolve() in label_of))
    for f, is_label in order:
        rel = f.relative_to(src)
        vol = nifti.load(f, label=is_label)
        case_id = layout.parse_name(f.name)[0]  # type: ignore[index]
        key = (domain_of.get(rel.parts[0], rel.parts[0]), case_id)
        if key not in boxes_by_case:  # an image first; its label reuses the image's window
            box, unplaced = placed_box(vol, model)
            source_label = label_of.get(f.resolve())
            if source_label is None:
                target_extents.append(window_extent_mm(vol, box))
            elif enabled:
                if target_extents and np.isnan(target_extent).all():
                    target_extent = np.median(np.array(target_extents), axis=0)
                matched = match_source_extent(
                    box,
                    vol,
                    unplaced,
                    nifti.load(source_label, label=True).data,
                    target_extent,
                    source_extent_ratio,
                    model.margin_mm,
                )
                n_matched += matched != box
                box = matched
            boxes_by_case[key] = box
        box = boxes_by_case[key]
        cropped = crop_volume(vol, box)
        disk_dtype = np.dtype(vol.header.get_data_dtype())
        nifti.save(out / rel, cropped.data, like=cropped, label=is_label, dtype=None if is_label else disk_dtype)
        if is_label:
            lost = int(np.count_nonzero(vol.data)) - int(np.count_nonzero(cropped.data))
            if lost:
                log.warning(
                    "ROI crop of %s leaves out %d labelled voxel(s): the region may be too small (roi.margin_mm)",
                    f,
                    lost,
                )
        records[str(rel)] = asdict(
            CropRecord(
                box=[list(b) for b in box],
                shape=list(vol.shape),
                cropped=any(tuple(b) != (0, n) for b, n in zip(box, vol.shape)),
            )
        )
    if n_matched:
        log.info(
            "ROI crop: %d source scan(s) cut to the target scans' extent along the axes the region cannot place "
            "(median target window %s mm per world axis)",
            n_matched,
            " x ".join(f"{v:.0f}" for v in target_extent),
        )
    for extra in sorted(src.glob("*.json")):  # manifests travel along
        (out / extra.name).write_bytes(extra.read_bytes())
    result = {
        "model": model.to_dict(),
        "files": records,
        "target_extent_mm": [None if np.isnan(v) else float(v) for v in target_extent],
        "n_source_matched": int(n_matched),
    }
    (out / ROI_FILE).write_text(json.dumps(result, indent=2))
    n_cropped = sum(1 for r in records.values() if r["cropped"])
    voxels_before = sum(int(np.prod(r["shape"])) for r in records.values())
    voxels_after = sum(int(np.prod([b - a for a, b in r["box"]])) for r in records.values())
    log.info(
        "ROI crop: %d of %d file(s) cropped; %.1f%% of the voxels kept",
        n_cropped,
        len(records),
        100.0 * voxels_after / max(voxels_before, 1),
    )
    return result


def crop_labelled_folder(
    src_dir: str | Path, out_dir: str | Path, modality: str, *, margin_mm: float = 12.0, min_size_mm: float = 40.0
) -> RoiModel:
    """Learn the region from a flat folder of labelled scans (``<case>_<modality>`` + ``<case>_Label``) and
    write each image and label cropped to it into ``out_dir`` (new files: ``src_dir`` is never written).

    Why: ``cosmos selftrain`` starts from a labelled pseudo-hrT2 folder and has no source scans; its labels
    hold the region just as well, and a teacher trained on whole heads at a CPU budget learns nothing where
    the same recipe on inner-ear crops learns. Writes ``roi.json`` (the model and each file's window) into
    ``out_dir``, so the target scans can be cut with the same model (:func:`crop_dataset`'s ``model``).
    """
    src, out = Path(src_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = [c for c in layout.list_cases(src, modality) if c.label is not None]
    model = fit(cases, margin_mm, min_size_mm)
    records: dict[str, Any] = {}
    for case in cases:
        img = nifti.load(case.image)
        box = box_for(img, model)
        for path, is_label in ((Path(case.image), False), (Path(case.label), True)):  # type: ignore[arg-type]
            vol = img if not is_label else nifti.load(path, label=True)
            cropped = crop_volume(vol, box)
            dtype = None if is_label else np.dtype(vol.header.get_data_dtype())
            nifti.save(out / path.name, cropped.data, like=cropped, label=is_label, dtype=dtype)
            records[path.name] = asdict(
                CropRecord(
                    box=[list(b) for b in box],
                    shape=list(vol.shape),
                    cropped=any(tuple(b) != (0, n) for b, n in zip(box, vol.shape)),
                )
            )
    (out / ROI_FILE).write_text(json.dumps({"model": model.to_dict(), "files": records}, indent=2))
    return model


def read_records(data_dir: str | Path) -> dict[str, Any] | None:
    path = Path(data_dir) / ROI_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def uncrop_predictions(
    pred_dir: str | Path,
    out_dir: str | Path,
    roi_data_dir: str | Path,
    original_data_dir: str | Path,
    folder: str = layout.VALIDATION_DIR,
) -> list[Path]:
    """Predictions made on the cropped scans of ``folder``, written back on the original grids."""
    records = (read_records(roi_data_dir) or {}).get("files", {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pred in sorted(Path(pred_dir).glob("*_Label.nii.gz")):
        case_id = layout.parse_prediction_name(pred.name)
        image = next((Path(original_data_dir) / folder).glob(f"{case_id}_*.nii*"), None)
        if image is None:
            raise CosmosError(f"{pred}: no original image of case {case_id} in {Path(original_data_dir) / folder}")
        rec = records.get(str(image.relative_to(original_data_dir)))
        original = nifti.load(image)
        lab = nifti.load(pred, label=True)
        data = lab.data if rec is None else uncrop(lab.data, rec["box"], rec["shape"])
        nifti.save(out / pred.name, data, like=original, label=True)
        written.append(out / pred.name)
    return written


MODEL_FILE = "roi_model.json"  # beside a trained fold: the crop its inputs were made with


def model_of(folder: str | Path) -> RoiModel | None:
    """The ROI model stored in a cropped dataset (``roi.json``) or a fold / model dir (``roi_model.json``)."""
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file():
        data = json.loads((folder / MODEL_FILE).read_text())
    elif (folder / ROI_FILE).is_file():
        data = json.loads((folder / ROI_FILE).read_text())["model"]
    else:
        return None
    return RoiModel(**data)


def write_model(model: RoiModel | None, folder: str | Path) -> None:
    if model is not None:
        (Path(folder) / MODEL_FILE).write_text(json.dumps(model.to_dict(), indent=2))


def crop_inputs(files: Sequence[str | Path], model: RoiModel, work_dir: str | Path) -> dict[Path, tuple[Path, Box]]:
    """Each scan cropped with ``model`` into ``work_dir`` (same file names): original -> (crop, window).

    What a model trained on cropped scans needs when it is given whole scans (``cosmos predict``,
    ``cosmos serve``); :func:`uncrop` puts its predictions back.
    """
    out = {}
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    for f in files:
        f = Path(f)
        vol = nifti.load_image(f)
        box = box_for(vol, model)
        crop = crop_volume(vol, box)
        target = work / f.name
        nifti.save(target, crop.data, like=crop, dtype=np.dtype(vol.header.get_data_dtype()))
        out[f] = (target, box)
    return out
