"""Tumour measurements of one label map: the numbers a clinician following a vestibular schwannoma reads.

Every prediction (``cosmos predict``, ``cosmos serve``, the pipeline's final predictions) gets a small JSON,
``<case>_measurements.json``, written beside its label by :func:`write_json`. Its keys name the structure and the
unit (``vs_volume_mm3``); :data:`SCHEMA_VERSION` changes only when a key changes meaning. docs/clinical.md lists
them; how each is computed:

* **Volumes** (``vs_volume_mm3``, ``vs_volume_ml``, ``cochlea_left_volume_mm3``, ``cochlea_right_volume_mm3``):
  voxel count x voxel volume, the voxel volume being ``|det|`` of the affine's 3x3 part (exact for anisotropic,
  oblique or sheared grids). Why volume: volumetry detects growth that linear measures miss (Harris et al. 2008;
  van de Langenberg et al. 2009: smallest detectable change 19.7 % by volume vs 40 % in 2D).
* **Sides**: the affine maps voxels to NIfTI world coordinates, which are RAS+: **patient-left = +x**. A cochlea
  voxel whose centre lies at world x greater than the midline is on the patient's left. The midline is the
  caller's (``cosmos predict`` passes the head's midline, :func:`cosmos.segmentation.postprocessing.head_midline_x`)
  or, by default, the world x of the centre of the field of view.
* **VS maximal axial diameter** (``vs_max_axial_diameter_mm``): the largest in-plane Feret (caliper) diameter over
  the axial slices. Axial slices are those of the voxel axis closest to world superior-inferior (z); in each slice
  that holds VS, the VS voxel centres' convex hull is taken in voxel indices (an affine map keeps hull vertices),
  its vertices are mapped to mm with the affine (so anisotropic and oblique spacing count), and the largest
  distance between two of them is the slice's diameter. From voxel centres, the figure is at most one in-plane
  voxel per end shorter than the true caliper (tests/test_measurements.py checks an analytic ellipsoid).
* **Components removed** (``components_removed``): per structure, how many connected components the
  post-processing removed (:func:`removed_components`, same connectivity as the rules: face-connected for VS,
  26-connected for the cochlea); None when unknown.
* **Confidence** (``vs_confidence_mean_max_prob``): the mean over VS voxels of the ensemble softmax's
  max-probability (the probability of the class the voxel was given); None without probabilities or without VS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmos.data import nifti
from cosmos.data.outputs import atomic_write
from cosmos.errors import CosmosError

SCHEMA_VERSION = 1
VS_LABEL = 1
COCHLEA_LABEL = 2
KNOWN_LABELS = (0, VS_LABEL, COCHLEA_LABEL)
DEFAULT_GROWTH_THRESHOLD_PCT = 20.0  # the volumetric growth threshold used in VS surveillance studies
MEASUREMENTS_SUFFIX = "_measurements.json"


@dataclass
class Measurements:
    """One label map's measurements; :meth:`to_dict` gives the JSON's keys (structure and unit in each name)."""

    spacing_mm: tuple[float, float, float]
    voxel_volume_mm3: float
    vs_voxels: int
    vs_volume_mm3: float
    vs_volume_ml: float
    vs_max_axial_diameter_mm: float
    cochlea_left_volume_mm3: float
    cochlea_right_volume_mm3: float
    vs_confidence_mean_max_prob: float | None = None
    components_removed: dict[str, int] | None = None
    comparison: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``comparison`` only when a prior was compared, ``extra`` merged in."""
        d = asdict(self)
        extra = d.pop("extra")
        d["spacing_mm"] = [float(v) for v in self.spacing_mm]
        if d["comparison"] is None:
            d.pop("comparison")
        d.update(extra)
        return d


def label_name_of(value: int) -> str:
    return {VS_LABEL: "vs", COCHLEA_LABEL: "cochlea"}.get(int(value), str(int(value)))


def _affine(affine_or_spacing: Any) -> np.ndarray:
    a = np.asarray(affine_or_spacing, dtype=float)
    if a.shape == (3,):
        return np.diag([*a.tolist(), 1.0])
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"expected a 4x4 affine or 3 spacings, got shape {a.shape}")
    return a


def _axial_axis(affine: np.ndarray) -> int:
    """The voxel axis whose direction is closest to world superior-inferior (RAS z)."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def _max_pairwise_mm(points_ij: np.ndarray, columns: np.ndarray) -> float:
    """Largest distance (mm) between the voxel centres ``points_ij`` (N x 2 in-plane indices); ``columns``: the
    affine's two in-plane direction columns (3 x 2), so distances are in mm on any grid."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    pts = np.unique(points_ij, axis=0).astype(float)
    if len(pts) < 2:
        return 0.0
    if len(pts) > 3:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear: every point is on the segment's hull; keep its two ends
            d = pts - pts[0]
            axis = d[np.argmax(np.linalg.norm(d, axis=1))]
            t = d @ axis
            pts = pts[[int(np.argmin(t)), int(np.argmax(t))]]
    return float(pdist(pts @ columns.T).max())


def max_axial_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """Largest in-plane Feret diameter (mm) of ``mask`` over its axial slices (see the module docstring)."""
    return _diameter_of_indices(np.argwhere(mask), _affine(affine))


def _diameter_of_indices(idx: np.ndarray, affine: np.ndarray) -> float:
    """:func:`max_axial_diameter_mm` of the voxels at ``idx`` (N x 3 voxel indices)."""
    if len(idx) == 0:
        return 0.0
    ax = _axial_axis(affine)
    inplane = [a for a in range(3) if a != ax]
    columns = affine[:3, inplane]
    best = 0.0
    order = np.argsort(idx[:, ax], kind="stable")
    idx = idx[order]
    splits = np.flatnonzero(np.diff(idx[:, ax])) + 1
    for chunk in np.split(idx, splits):
        best = max(best, _max_pairwise_mm(chunk[:, inplane], columns))
    return best


def _count_components(mask: np.ndarray, full_connectivity: bool) -> int:
    from scipy import ndimage

    structure = np.ones((3, 3, 3), bool) if full_connectivity else None
    return int(ndimage.label(mask, structure=structure)[1])


def removed_components(before: np.ndarray, after: np.ndarray) -> dict[str, int]:
    """Per structure (``vs``, ``cochlea``), how many connected components post-processing removed: components in
    ``before`` (the ensemble's raw labels) minus those in ``after``. Connectivity as the rules use it: VS
    face-connected (cosmos.segmentation.postprocessing), cochlea 26-connected."""
    if before.shape != after.shape:
        raise ValueError(f"label arrays differ in shape: {before.shape} vs {after.shape}")
    out = {}
    boxes_before, boxes_after = _label_boxes(before), _label_boxes(after)
    for value, full in ((VS_LABEL, False), (COCHLEA_LABEL, True)):
        # labelled within the structure's bounding box in either array: a whole-head grid is ~30 M voxels, the
        # structures a few thousand (seconds -> milliseconds)
        box = _union_box(boxes_before.get(value), boxes_after.get(value))
        if box is None:
            out[label_name_of(value)] = 0
            continue
        n_before = _count_components(before[box] == value, full)
        n_after = _count_components(after[box] == value, full)
        out[label_name_of(value)] = max(0, n_before - n_after)
    return out


def _label_boxes(label: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box of each label value present (SciPy's ``find_objects``: one pass over the array)."""
    from scipy import ndimage

    arr = np.asarray(label)
    if not np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int64)
    objects = ndimage.find_objects(arr)
    return {value: box for value, box in enumerate(objects, start=1) if box is not None}


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def measure(
    label: np.ndarray,
    affine: Any,
    *,
    probabilities: np.ndarray | None = None,
    removed_components: dict[str, int] | None = None,
    midline_x: float | None = None,
    confidence: float | None = None,
) -> Measurements:
    """Measure one label map (VS = 1, cochlea = 2).

    ``affine``: the NIfTI's 4x4 voxel-to-RAS affine (3 spacings in mm are accepted for an axis-aligned grid whose
    first axis runs to patient-left). ``probabilities``: the ensemble's softmax, C x I x J x K on ``label``'s grid
    (C = background, VS, cochlea), as ``cosmos.segmentation.inference`` holds it. ``removed_components``: from
    :func:`removed_components`. ``midline_x``: world x (mm) that splits left from right cochlea (default: the
    centre of the field of view). ``confidence``: :func:`vs_confidence`, already taken where the softmax was (a
    model trained on ROI crops has its softmax on the crop only), used when ``probabilities`` is None.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"expected a 3D label array, got {label.ndim}D")
    a = _affine(affine)
    spacing = tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))
    voxel_mm3 = float(abs(np.linalg.det(a[:3, :3])))
    # work inside each structure's bounding box: a whole-head grid is ~30 M voxels, the structures a few thousand
    boxes = _label_boxes(label)
    vs_box = boxes.get(VS_LABEL)
    vs_idx = np.zeros((0, 3), dtype=np.intp)
    if vs_box is not None:
        vs_idx = np.argwhere(label[vs_box] == VS_LABEL) + [s.start for s in vs_box]
    n_vs = len(vs_idx)
    vs_mm3 = n_vs * voxel_mm3

    cochlea = np.zeros((0, 3), dtype=np.intp)
    if (c_box := boxes.get(COCHLEA_LABEL)) is not None:
        cochlea = np.argwhere(label[c_box] == COCHLEA_LABEL) + [s.start for s in c_box]
    if midline_x is None:
        centre = (np.asarray(label.shape, float) - 1.0) / 2.0
        midline_x = float(a[0, :3] @ centre + a[0, 3])
    world_x = cochlea @ a[0, :3] + a[0, 3] if len(cochlea) else np.zeros(0)
    n_left = int(np.count_nonzero(world_x > midline_x))  # RAS: +x is the patient's left
    n_right = len(cochlea) - n_left

    if probabilities is not None:
        confidence = _confidence_at(probabilities, label.shape, vs_idx)
    elif not n_vs:
        confidence = None

    return Measurements(
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        voxel_volume_mm3=voxel_mm3,
        vs_voxels=n_vs,
        vs_volume_mm3=vs_mm3,
        vs_volume_ml=vs_mm3 / 1000.0,
        vs_max_axial_diameter_mm=_diameter_of_indices(vs_idx, a),
        cochlea_left_volume_mm3=n_left * voxel_mm3,
        cochlea_right_volume_mm3=n_right * voxel_mm3,
        vs_confidence_mean_max_prob=confidence,
        components_removed=None if removed_components is None else {k: int(v) for k, v in removed_components.items()},
    )


def _confidence_at(probabilities: np.ndarray, shape: tuple[int, ...], vs_idx: np.ndarray) -> float | None:
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[1:] != tuple(shape):
        raise ValueError(f"probabilities {p.shape} do not match the label {tuple(shape)} (need C x I x J x K)")
    if not len(vs_idx):
        return None
    at_vs = p[:, vs_idx[:, 0], vs_idx[:, 1], vs_idx[:, 2]]  # C x N, the VS voxels only
    return float(np.mean(at_vs.max(axis=0), dtype=np.float64))


def vs_confidence(probabilities: np.ndarray, label: np.ndarray) -> float | None:
    """The mean of the ensemble's max-probability over the VS voxels of ``label`` (None without VS): the
    ``vs_confidence_mean_max_prob`` figure, for a caller that must drop the softmax before measuring."""
    label = np.asarray(label)
    return _confidence_at(probabilities, label.shape, np.argwhere(label == VS_LABEL))


def load_label(path: str | Path) -> nifti.Volume:
    """A COSMOS label map (values 0, 1, 2) from ``path``; one clear line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CosmosError(f"{path}: label file not found")
    vol = nifti.load(path, label=True)  # NiftiError (a CosmosError): unreadable, non-integer, not 3D
    extra = sorted(set(np.unique(vol.data).tolist()) - set(KNOWN_LABELS))
    if extra:
        raise CosmosError(f"{path}: not a VS/cochlea label map (values {extra} besides 0, 1, 2)")
    return vol


def measure_file(path: str | Path) -> Measurements:
    """Measurements of a label NIfTI on disk (no probabilities, no post-processing counts)."""
    vol = load_label(path)
    return measure(vol.data, vol.affine)


def compare(
    prior: Measurements | dict[str, Any],
    current: Measurements | dict[str, Any],
    growth_threshold_pct: float = DEFAULT_GROWTH_THRESHOLD_PCT,
) -> dict[str, Any]:
    """VS volume change from ``prior`` to ``current`` (physical units, so the grids may differ).

    ``vs_volume_change_pct`` is None when the prior has no VS (a change from zero is undefined); ``growth``
    is then True when the current scan has VS (new tumour), and ``note`` says so.
    """
    p = prior.to_dict() if isinstance(prior, Measurements) else prior
    c = current.to_dict() if isinstance(current, Measurements) else current
    v0, v1 = float(p["vs_volume_mm3"]), float(c["vs_volume_mm3"])
    change_mm3 = v1 - v0
    pct: float | None = 100.0 * change_mm3 / v0 if v0 > 0 else None
    note = None
    if pct is None:
        note = "no VS in the prior scan: % change undefined" + ("; VS present now" if v1 > 0 else "")
        growth = v1 > 0
    else:
        growth = pct > float(growth_threshold_pct)
    return {
        "prior_vs_volume_ml": v0 / 1000.0,
        "current_vs_volume_ml": v1 / 1000.0,
        "vs_volume_change_ml": change_mm3 / 1000.0,
        "vs_volume_change_pct": pct,
        "growth_threshold_pct": float(growth_threshold_pct),
        "growth": bool(growth),
        "note": note,
    }


def describe_comparison(cmp: dict[str, Any], prior: str = "prior", current: str = "current") -> str:
    """One human line for :func:`compare`'s result."""
    pct = cmp["vs_volume_change_pct"]
    change = f"{cmp['vs_volume_change_ml']:+.3f} ml"
    change += f" ({pct:+.1f} %)" if pct is not None else " (% undefined: no VS in the prior)"
    flag = (
        f"GROWTH above {cmp['growth_threshold_pct']:g} %"
        if cmp["growth"] and pct is not None
        else ("new VS" if cmp["growth"] else f"no growth above {cmp['growth_threshold_pct']:g} %")
    )
    return (
        f"VS volume {cmp['prior_vs_volume_ml']:.3f} ml ({prior}) -> {cmp['current_vs_volume_ml']:.3f} ml ({current}): "
        f"{change}; {flag}"
    )


def measurements_path(label_path: str | Path) -> Path:
    """Where a label's measurements go: beside it, named after its case: ``crossmoda_7_Label.nii.gz`` -> ``crossmoda_7_measurements.json``,
    ``scan_seg.nii.gz`` -> ``scan_measurements.json``, ``folder_Label.nii.gz`` -> ``folder_measurements.json``.
    """
    p = Path(label_path)
    name = p.name
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    for tail in ("_Label", "_seg"):
        if name.endswith(tail):
            name = name[: -len(tail)]
            break
    return p.with_name(f"{name}{MEASUREMENTS_SUFFIX}")


def write_json(path: str | Path, payload: Measurements | dict[str, Any]) -> Path:
    """Write ``payload`` atomically (:func:`cosmos.data.outputs.atomic_write`: a temp file beside ``path``, then
    ``os.replace``), so a killed writer never leaves a half-written JSON under the final name."""
    data = payload.to_dict() if isinstance(payload, Measurements) else payload
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """A measurements JSON written by :func:`write_json`; one clear line when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CosmosError(f"{path}: not a readable measurements JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "vs_volume_mm3" not in data:
        raise CosmosError(f"{path}: not a measurements JSON (no vs_volume_mm3)")
    return data
