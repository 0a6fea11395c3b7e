"""Built-in synthetic crossMoDA-like dataset: ceT1 (annotated source) and hrT2 (unannotated target).

Why a phantom: the demo, every test and the CPU benchmarks need data that can be made offline in
seconds, yet carries the domain gap COSMOS exists to bridge. So each subject is an analytic
anatomy in millimetres (head, skull, brain, brainstem, petrous bones, internal auditory canals,
a cerebellopontine-angle cistern on the tumour side, a lobulated vestibular schwannoma growing
from the canal into the cistern, and a coiled cochlea on each side, as in crossMoDA whose labels
hold both cochleas) and each volume is *rendered* on its own acquisition grid by evaluating that
anatomy at the world position of every voxel centre. Image and label are therefore consistent on
any grid, including flipped and oblique ones, and nothing is ever resampled.

The two modalities differ the way the real scans do:

* ceT1 (contrast-enhanced T1 MPRAGE): brain mid grey, fluid (CSF, canal, cochlea) dark grey, bone
  black, the VS bright (enhancing, heterogeneous), the cochlea a small dark-grey coil in the bone;
  grid ~0.6 x 0.6 x 1.5 mm.
* hrT2 (CISS/FIESTA): CSF very bright (cistern, internal auditory canal), the VS intermediate
  grey outlined by CSF, the cochlea bright; grid ~0.5 x 0.5 x 1.0 mm.

Source and target subjects are different random anatomies (unpaired). Every file has its slice
(axial) axis as the third array axis, but the affines carry axis flips (in-plane and through-plane)
and, for some cases, a small oblique rotation. Rician noise, a smooth multiplicative bias field,
a slight blur (partial volume) and per-case intensity scales make the intensities realistic enough.

Learnability on CPU matters more than realism (STACK-NOTES: a ~40-voxel cochlea was never learned
by a small CPU nnU-Net), so at ``scale="small"`` each cochlea has a few hundred voxels on the hrT2
grid and the VS a few thousand.

Deterministic: the same ``seed`` gives byte-identical arrays; each case draws from its own seeded
stream, so adding cases never changes existing ones. Re-running ``make_phantom`` on a finished
directory with the same parameters does no work.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from cosmos.data import layout, nifti
from cosmos.errors import CosmosError
from cosmos.logs import progress

log = logging.getLogger(__name__)

MANIFEST = "phantom.json"
PREVIEW = "preview.png"
SCALES = ("small", "full")
TARGET_LABELS_DIR = "target_training_labels"  # only with target_labels=True (for pseudo-label QA)

# Tissue classes (painted in this order; later classes overwrite earlier ones).
AIR, SCALP, SKULL, BRAIN, CSF, BRAINSTEM, PETROUS, CANAL, COCHLEA, VS = range(10)

# Mean intensity per tissue (fraction of the case's intensity scale), per modality.
# ceT1: fat-rich scalp bright, the enhancing VS brightest, fluid (CSF, canal, cochlea) dark grey, cortical
# bone black (no signal, as on MPRAGE).
# hrT2: CSF and labyrinth fluid very bright, VS intermediate, parenchyma darker, bone black.
# Why fluid and bone differ in ceT1: with fluid at bone level (0.10 vs 0.06 + noise, an earlier version)
# nothing in a ceT1 slice says where the cochlea is, and a CPU-budget translator (96-256 steps) kept
# the pseudo-hrT2 cochlea black, so every nnU-Net trained on it missed the real hrT2 cochlea.
_TISSUE = {
    "ceT1": {AIR: 0.0, SCALP: 0.80, SKULL: 0.04, BRAIN: 0.45, CSF: 0.22, BRAINSTEM: 0.50, PETROUS: 0.03,
             CANAL: 0.22, COCHLEA: 0.22, VS: 0.92},
    "hrT2": {AIR: 0.0, SCALP: 0.32, SKULL: 0.04, BRAIN: 0.30, CSF: 0.95, BRAINSTEM: 0.26, PETROUS: 0.04,
             CANAL: 0.90, COCHLEA: 0.70, VS: 0.45},
}
# hrT2 cochlea: bright against black bone but a notch below CSF (partial volume with the modiolus and
# spiral lamina, as on many CISS scans). The distinct grey is also what lets a small CPU nnU-Net
# learn it: at CSF brightness (0.85) a tiny-profile nnU-Net trained on labelled phantom hrT2
# learned the VS (Dice 0.88) but never predicted a single cochlea voxel within 60-160 iterations.

# Grids: (in-plane shape range, slice count range, spacing (x, y, z) mm).
_GRIDS = {
    ("small", "ceT1"): ((80, 85), (26, 30), (0.6, 0.6, 1.5)),
    ("small", "hrT2"): ((96, 102), (28, 34), (0.5, 0.5, 1.0)),
    ("full", "ceT1"): ((512, 512), (112, 128), (0.4, 0.4, 1.5)),
    ("full", "hrT2"): ((384, 384), (72, 88), (0.5, 0.5, 1.0)),
}

# Anatomy scale per dataset scale: (head/bone layout factor, VS factor, cochlea factor). At "small"
# the head is shrunk to fit a ~50 mm field of view; at "full" it is life-sized.
_ANATOMY_SCALE = {"small": (1.0, 1.0, 1.0), "full": (3.2, 1.6, 1.3)}

# Orientation presets (in-plane flips fi, fj; slice flip fk; oblique?). Cases cycle through them
# so even a 1-case domain has both in-plane axes flipped (the common radiological LPS storage).
_ORIENTATIONS = (
    (-1, -1, 1, False),
    (1, 1, 1, True),
    (-1, 1, 1, False),
    (1, -1, -1, True),
    (-1, -1, 1, True),
    (1, 1, -1, False),
)


@dataclass
class Subject:
    """One random anatomy (millimetres, RAS-like: x right, y anterior, z superior)."""

    side: int  # +1: tumour on the right, -1: on the left
    head_axes: tuple[float, float, float]
    head_centre: tuple[float, float, float]
    scalp: float
    skull: float
    brainstem_centre: tuple[float, float]
    brainstem_axes: tuple[float, float]
    petrous_angle: float  # radians; long axis points antero-medially
    petrous_axes: tuple[float, float, float]
    petrous_offset: tuple[float, float]  # (lateral x, anterior y) of its centre, before the side sign
    porus: tuple[float, float]  # medial opening of the canal (lateral x, y)
    fundus: tuple[float, float]  # lateral end of the canal
    canal_radius: float
    cochlea_centre: tuple[float, float, float]  # before the side sign on x
    cochlea_radius: float  # outer spiral radius
    cochlea_tube: float
    cochlea_turns: float
    cochlea_height: float
    cochlea_tilt: tuple[float, float]  # rotation of the modiolus axis (radians)
    vs_radius: float
    vs_direction: tuple[float, float, float]  # unit vector from the porus into the cistern
    vs_lobes: tuple[tuple[float, float, float, float], ...]  # (dx, dy, dz, r) relative to the VS body
    cistern_pad: float
    z0: float  # axial level of canal, cochlea and VS centre


def _sample_subject(rng: np.random.Generator, scale: str) -> Subject:
    s_head, s_vs, s_co = _ANATOMY_SCALE[scale]
    u = rng.uniform
    side = int(rng.choice([-1, 1]))
    hx, hy = u(21.5, 23.5), u(22.5, 24.5)
    vs_r = u(4.6, 6.5) * s_vs
    d = np.array([-0.55 * side, -u(0.55, 0.85), u(-0.15, 0.15)])
    d /= np.linalg.norm(d)
    lobes = []
    for _ in range(int(rng.integers(2, 5))):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        lobes.append((*(v * vs_r * u(0.45, 0.7)), vs_r * u(0.4, 0.65)))
    return Subject(
        side=side,
        head_axes=(hx * s_head, hy * s_head, 60.0 * s_head),
        head_centre=(u(-0.8, 0.8) * s_head, u(-0.8, 0.8) * s_head, 0.0),
        scalp=1.4 * s_head, skull=1.7 * s_head,
        brainstem_centre=(u(-0.4, 0.4) * s_head, u(3.0, 4.5) * s_head),
        brainstem_axes=(u(4.0, 4.8) * s_head, u(3.4, 4.2) * s_head),
        petrous_angle=u(0.45, 0.65),
        # Thickness grows less than the head at full scale: it only has to hold the cochlea.
        petrous_axes=(u(9.0, 10.0) * s_head, u(4.8, 5.4) * math.sqrt(s_head * s_co), 5.5 * s_head),
        petrous_offset=(u(15.0, 16.0) * s_head, u(5.0, 6.0) * s_head),
        porus=(u(9.5, 10.5) * s_head, u(2.5, 3.5) * s_head),
        fundus=(u(14.0, 15.0) * s_head, u(3.0, 4.0) * s_head),
        canal_radius=u(1.2, 1.5) * s_vs,
        cochlea_centre=(u(15.7, 16.2) * s_head, u(6.8, 7.4) * s_head, u(-0.3, 0.3)),
        cochlea_radius=u(2.4, 2.7) * s_co,
        cochlea_tube=u(1.15, 1.3) * s_co,
        cochlea_turns=u(2.3, 2.7),
        cochlea_height=u(1.8, 2.2) * s_co,
        cochlea_tilt=(u(-0.35, 0.35), u(-0.35, 0.35)),
        vs_radius=vs_r,
        vs_direction=tuple(d),
        vs_lobes=tuple(lobes),
        cistern_pad=u(1.5, 2.5) * s_vs,
        z0=u(-2.0, 2.0) * s_head,
    )


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _cochlea_curve(sub: Subject, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Points along the cochlear duct (a tapering spiral) and the tube radius at each point."""
    t = np.linspace(0.0, 1.0, 90)
    theta = 2 * np.pi * sub.cochlea_turns * t
    r = sub.cochlea_radius * (1.0 - 0.62 * t)
    pts = np.stack([r * np.cos(theta), r * np.sin(theta), sub.cochlea_height * (t - 0.5)], axis=1)
    # Modiolus axis roughly lateral-anterior, as in the petrous bone; mirrored for the left side.
    rot = _rotation(sub.cochlea_tilt[0], 1.2 + sub.cochlea_tilt[1], 0.5)
    pts = pts @ rot.T
    pts[:, 0] *= side
    cx, cy, cz = sub.cochlea_centre
    pts += np.array([side * cx, cy, sub.z0 + cz])
    radius = sub.cochlea_tube * (1.0 - 0.3 * t)
    return pts, radius


def _in_ellipsoid(x, y, z, centre, axes) -> np.ndarray:
    return ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2 <= 1.0


def _segment_distance2(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance of points ``p`` (N x 3) to the segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    q = p - (a + t[:, None] * ab)
    return np.einsum("ij,ij->i", q, q)


def _dist2(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    q = p - c
    return np.einsum("ij,ij->i", q, q)


def _box(x, y, z, lo, hi) -> np.ndarray:
    return (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])


def _paint(sub: Subject, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue class and label (0/1/2) at world points (any equal shapes)."""
    tissue = np.zeros(x.shape, np.uint8)
    label = np.zeros(x.shape, np.uint8)
    hc, ha = sub.head_centre, sub.head_axes
    tissue[_in_ellipsoid(x, y, z, hc, ha)] = SCALP
    inner1 = tuple(a - sub.scalp for a in ha)
    tissue[_in_ellipsoid(x, y, z, hc, inner1)] = SKULL
    inner2 = tuple(a - sub.scalp - sub.skull for a in ha)
    brain = _in_ellipsoid(x, y, z, hc, inner2)
    tissue[brain] = BRAIN
    # Brainstem (an elliptic column) with a CSF rim (prepontine cistern) and a small 4th ventricle.
    bx, by = sub.brainstem_centre
    ex, ey = sub.brainstem_axes
    col = ((x - bx) / ex) ** 2 + ((y - by) / ey) ** 2
    tissue[brain & (col <= 1.7)] = CSF
    tissue[brain & (col <= 1.0)] = BRAINSTEM
    tissue[brain & (((x - bx) / (0.35 * ex)) ** 2 + ((y - by + 0.95 * ey) / (0.3 * ey)) ** 2 <= 1.0)] = CSF
    side = sub.side
    z0 = sub.z0
    porus = np.array([side * sub.porus[0], sub.porus[1], z0])
    d = np.array(sub.vs_direction)
    vs_body = porus + d * sub.vs_radius * 0.85
    # Cerebellopontine-angle cistern on the tumour side: CSF around the VS body.
    cis_axes = (sub.vs_radius + sub.cistern_pad,) * 2 + (sub.vs_radius + 0.5 * sub.cistern_pad,)
    tissue[brain & _in_ellipsoid(x, y, z, vs_body, cis_axes)] = CSF
    pts = None
    for s in (-1, 1):
        # Petrous bone: a rotated ellipsoid running antero-medially.
        px, py = sub.petrous_offset
        ca, sa = math.cos(sub.petrous_angle), math.sin(sub.petrous_angle)
        dx, dy = x - s * px, y - py
        # Long axis (ca, -s*sa): the apex (medial end) points anteriorly, as the petrous ridge does.
        u_ = ca * dx - s * sa * dy
        v_ = s * sa * dx + ca * dy
        pax = sub.petrous_axes
        petrous = (u_ / pax[0]) ** 2 + (v_ / pax[1]) ** 2 + ((z - z0) / pax[2]) ** 2 <= 1.0
        tissue[petrous & (tissue != AIR)] = PETROUS
        # Internal auditory canal: CSF-filled tube from the porus to the fundus.
        a = np.array([s * sub.porus[0], sub.porus[1], z0])
        b = np.array([s * sub.fundus[0], sub.fundus[1], z0])
        a0 = a - np.array([s * 1.5, 0, 0])
        pad = sub.canal_radius + 0.5
        near = _box(x, y, z, np.minimum(a0, b) - pad, np.maximum(a0, b) + pad)
        if near.any():
            p = np.stack([x[near], y[near], z[near]], axis=1)
            canal = _segment_distance2(p, a0, b) <= sub.canal_radius ** 2
            tissue.flat[np.flatnonzero(near)[canal]] = CANAL
        # Cochlea: a tapering coiled tube (the snail) inside the petrous bone.
        curve, radius = _cochlea_curve(sub, s)
        lo, hi = curve.min(0) - radius.max() - 0.5, curve.max(0) + radius.max() + 0.5
        box = _box(x, y, z, lo, hi)
        if box.any():
            p = np.stack([x[box], y[box], z[box]], axis=1)
            inside = np.zeros(len(p), bool)
            for c, r in zip(curve, radius):
                inside |= _dist2(p, c) <= r * r
            idx = np.flatnonzero(box)[inside]
            tissue.flat[idx] = COCHLEA
            label.flat[idx] = 2
        if s == side:
            pts = (a, b)
    # Vestibular schwannoma: an intracanalicular part plus a lobulated cisternal body. It displaces
    # CSF, brain and brainstem but not the petrous bone outside the canal.
    a, b = pts
    vs = np.zeros(x.shape, bool)
    tip = b - (b - a) * 0.15
    reach = sub.vs_radius * 1.45 + 0.5
    near = _box(x, y, z, np.minimum(vs_body - reach, tip - 2), np.maximum(vs_body + reach, tip + 2))
    p = np.stack([x[near], y[near], z[near]], axis=1)
    m = _dist2(p, vs_body) <= sub.vs_radius ** 2
    for dx, dy, dz, r in sub.vs_lobes:
        m |= _dist2(p, vs_body + np.array([dx, dy, dz])) <= r * r
    m |= _segment_distance2(p, vs_body, tip) <= (sub.canal_radius * 0.95) ** 2
    vs.flat[np.flatnonzero(near)[m]] = True
    vs &= (tissue != PETROUS) & (tissue != SKULL) & (tissue != SCALP) & (tissue != AIR) & (tissue != COCHLEA)
    tissue[vs] = VS
    label[vs] = 1
    return tissue, label


@dataclass
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray


def _sample_grid(rng: np.random.Generator, scale: str, modality: str, sub: Subject, orientation_index: int) -> Grid:
    (lo, hi), (zlo, zhi), spacing = _GRIDS[(scale, modality)]
    n_inplane = int(rng.integers(lo, hi + 1))
    shape = (n_inplane, n_inplane if scale == "full" else int(rng.integers(lo, hi + 1)), int(rng.integers(zlo, zhi + 1)))
    fi, fj, fk, oblique = _ORIENTATIONS[orientation_index % len(_ORIENTATIONS)]
    rot = np.eye(3)
    if oblique:
        rot = _rotation(*np.deg2rad(rng.uniform(-8, 8, size=3)))
    direction = rot @ np.diag([fi, fj, fk]).astype(float)
    a3 = direction @ np.diag(spacing)
    centre_world = np.array([sub.head_centre[0], sub.head_centre[1], sub.z0]) + rng.uniform(-1.5, 1.5, 3)
    centre_vox = (np.array(shape) - 1) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = a3
    affine[:3, 3] = centre_world - a3 @ centre_vox
    # Rounded so a written-then-read affine is the same one we rendered with.
    return Grid(shape, np.round(affine, 6))


class PhantomCase(NamedTuple):
    image: np.ndarray  # float32, arbitrary MR units
    label: np.ndarray  # uint8: 0 background, 1 VS, 2 cochlea
    affine: np.ndarray  # 4x4 voxel -> world (mm)
    tissue: np.ndarray  # uint8 tissue class per voxel (AIR..VS); ground truth for tests and QA


def _render(sub: Subject, grid: Grid, modality: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (float32), label (uint8) and tissue map of ``sub`` on ``grid``, slab by slab to bound memory."""
    nx, ny, nz = grid.shape
    tissue = np.empty(grid.shape, np.uint8)
    label = np.empty(grid.shape, np.uint8)
    ii, jj = np.meshgrid(np.arange(nx, dtype=np.float32), np.arange(ny, dtype=np.float32), indexing="ij")
    a = grid.affine
    slab = max(1, int(2_000_000 // (nx * ny)))
    for k0 in range(0, nz, slab):
        ks = np.arange(k0, min(nz, k0 + slab), dtype=np.float32)
        i3 = np.broadcast_to(ii[..., None], (nx, ny, len(ks)))
        j3 = np.broadcast_to(jj[..., None], (nx, ny, len(ks)))
        k3 = np.broadcast_to(ks[None, None, :], (nx, ny, len(ks)))
        x = a[0, 0] * i3 + a[0, 1] * j3 + a[0, 2] * k3 + a[0, 3]
        y = a[1, 0] * i3 + a[1, 1] * j3 + a[1, 2] * k3 + a[1, 3]
        z = a[2, 0] * i3 + a[2, 1] * j3 + a[2, 2] * k3 + a[2, 3]
        t, lab = _paint(sub, x, y, z)
        tissue[..., k0:k0 + len(ks)] = t
        label[..., k0:k0 + len(ks)] = lab
    table = _TISSUE[modality]
    means = np.array([table[c] for c in range(10)], np.float32)
    means *= rng.uniform(0.94, 1.06, size=10).astype(np.float32)  # per-case contrast jitter
    img = means[tissue]
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    # Soft tissue texture: smooth random field (~2 mm), stronger inside the tumour (heterogeneous).
    tex = ndimage.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32), sigma=2.0 / spacing)
    tex *= 1.0 / (float(tex.std()) + 1e-6)
    amp = np.where(tissue == VS, 0.12, 0.05).astype(np.float32)
    img *= 1.0 + amp * tex
    # Partial volume: a blur of ~0.6 voxel in-plane, ~0.4 voxel through-plane.
    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0.4))
    # Smooth multiplicative bias field (coil sensitivity), about +-15 %.
    coef = rng.uniform(-1, 1, size=6).astype(np.float32)
    gi = np.linspace(-1, 1, nx, dtype=np.float32)[:, None, None]
    gj = np.linspace(-1, 1, ny, dtype=np.float32)[None, :, None]
    gk = np.linspace(-1, 1, nz, dtype=np.float32)[None, None, :]
    bias = np.exp(0.09 * (coef[0] * gi + coef[1] * gj + coef[2] * gk) + 0.05 * (coef[3] * gi * gj + coef[4] * gi ** 2 + coef[5] * gj ** 2))
    img = img * bias
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels.
    sigma = float(rng.uniform(0.02, 0.035))
    n1 = rng.standard_normal(grid.shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(grid.shape, dtype=np.float32) * sigma
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)
    img *= float(rng.uniform(600, 900) if modality == "ceT1" else rng.uniform(900, 1400))
    return img.astype(np.float32), label, tissue


def make_case(seed: int, case_number: int, modality: str, scale: str = "small",
              orientation_index: int | None = None) -> PhantomCase:
    """One phantom case (image, label, affine, tissue); the same arguments give byte-identical arrays."""
    if scale not in SCALES:
        raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
    if modality not in ("ceT1", "hrT2"):
        raise CosmosError(f"phantom modality must be ceT1 or hrT2, got {modality!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(case_number), 1 if modality == "ceT1" else 2]))
    sub = _sample_subject(rng, scale)
    grid = _sample_grid(rng, scale, modality, sub, case_number - 1 if orientation_index is None else orientation_index)
    img, lab, tissue = _render(sub, grid, modality, rng)
    return PhantomCase(img, lab, grid.affine, tissue)


def _plan(n_source: int, n_target: int, n_val: int) -> list[tuple[str, int, str, str | None]]:
    """(case_id, number, image path, label path) for every case, crossMoDA numbering."""
    plan = []
    for i in range(1, n_source + 1):
        cid = f"crossmoda_{i}"
        plan.append((cid, i, f"{layout.SOURCE_DIR}/{layout.image_name(cid, 'ceT1')}",
                     f"{layout.SOURCE_DIR}/{layout.label_name(cid)}"))
    for j in range(n_source + 1, n_source + n_target + 1):
        cid = f"crossmoda_{j}"
        plan.append((cid, j, f"{layout.TARGET_DIR}/{layout.image_name(cid, 'hrT2')}",
                     f"{TARGET_LABELS_DIR}/{layout.label_name(cid)}"))
    for k in range(n_source + n_target + 1, n_source + n_target + n_val + 1):
        cid = f"crossmoda_{k}"
        plan.append((cid, k, f"{layout.VALIDATION_DIR}/{layout.image_name(cid, 'hrT2')}",
                     f"{layout.VALIDATION_LABELS_DIR}/{layout.label_name(cid)}"))
    return plan


def make_phantom(out_dir: str | Path, n_source: int = 8, n_target: int = 8, n_val: int = 4, seed: int = 0,
                 scale: str = "small", preview: bool = True, target_labels: bool = False) -> Path:
    """Write a crossMoDA 2021 tree (with validation labels) and ``preview.png``; return the root.

    ``target_labels=True`` also writes the (normally hidden) hrT2 training labels to
    ``target_training_labels/`` so benchmarks can score pseudo-labels; COSMOS never reads them.
    Resumable: cases already written with the same parameters are not generated again.
    """
    for name, n in (("n_source", n_source), ("n_target", n_target), ("n_val", n_val)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise CosmosError(f"phantom {name} must be a non-negative integer, got {n!r}")
    if n_source < 1 or n_target < 1:
        raise CosmosError("phantom needs at least one source and one target case")
    if scale not in SCALES:
        raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    params = {"n_source": int(n_source), "n_target": int(n_target), "n_val": int(n_val), "seed": int(seed),
              "scale": scale, "target_labels": bool(target_labels), "version": 1}
    manifest_path = root / MANIFEST
    old = _read_manifest(manifest_path)
    if old is not None and old.get("params") != params:
        log.info("phantom parameters changed (%s -> %s): regenerating %s", old.get("params"), params, root)
        for rel in old.get("files", []):
            (root / rel).unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)
        old = None
    plan = _plan(n_source, n_target, n_val)
    files: list[str] = []
    todo = []
    for cid, num, img_rel, lab_rel in plan:
        is_target = img_rel.startswith(layout.TARGET_DIR + "/")
        want_label = not is_target or target_labels
        files.append(img_rel)
        if want_label:
            files.append(lab_rel)
        done = old is not None and (root / img_rel).exists() and (not want_label or (root / lab_rel).exists())
        if not done:
            todo.append((cid, num, img_rel, lab_rel if want_label else None))
    if todo:
        log.info("phantom: generating %d of %d cases (scale=%s, seed=%d) in %s", len(todo), len(plan), scale, seed, root)
    cases = dict((old or {}).get("cases", {}))
    for cid, num, img_rel, lab_rel in progress(todo, desc="phantom", unit="case"):
        modality = "ceT1" if img_rel.startswith(layout.SOURCE_DIR + "/") else "hrT2"
        img, lab, affine, _ = make_case(seed, num, modality, scale)
        nifti.save(root / img_rel, img, affine=affine, dtype=np.int16)
        if lab_rel is not None:
            nifti.save(root / lab_rel, lab, affine=affine, label=True)
        # Ground-truth sizes, also for unlabelled target cases (QA: is the cochlea big enough?).
        cases[cid] = {"modality": modality, "shape": list(img.shape),
                      "vs_voxels": int((lab == 1).sum()), "cochlea_voxels": int((lab == 2).sum())}
    manifest = {"params": params, "files": files, "cases": {c: cases[c] for c, *_ in plan if c in cases}}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    if preview and (todo or not (root / PREVIEW).exists()):
        write_preview(root, root / PREVIEW)
    return root


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_preview(root: str | Path, out_png: str | Path) -> Path:
    """A PNG grid: the first source, target and validation case, each as an axial slice through the
    VS, an axial slice through the cochleas and a coronal reformat, with VS (red) and cochlea (yellow)
    contours where a label exists. Volumes are turned to the closest RAS orientation first, so every
    case looks the same way up whatever its affine (neurological view: patient right on the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    root = Path(root)
    ds = layout.discover(root)
    rows = [(f"{cases[0].case_id} {title}", cases[0])
            for title, cases in (("ceT1 source", ds.source), ("hrT2 target", ds.target),
                                 ("hrT2 validation", ds.validation)) if cases]
    if not rows:
        raise CosmosError(f"{root}: no cases to preview")
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.2, 2.5 * len(rows)), squeeze=False)
    for r, (title, case) in enumerate(rows):
        canon = nib.as_closest_canonical(nib.load(str(case.image)))
        img = np.asarray(canon.dataobj, dtype=np.float32)
        zooms = canon.header.get_zooms()[:3]
        lab_path = case.label or (root / TARGET_LABELS_DIR / layout.label_name(case.case_id))
        lab = None
        if lab_path is not None and Path(lab_path).exists():
            lab = np.asarray(nib.as_closest_canonical(nib.load(str(lab_path))).dataobj).astype(np.uint8)
        k_vs = k_co = img.shape[2] // 2
        j_vs = img.shape[1] // 2
        if lab is not None:
            if (lab == 1).any():
                k_vs = int(np.argmax((lab == 1).sum(axis=(0, 1))))
                j_vs = int(np.argmax((lab == 1).sum(axis=(0, 2))))
            if (lab == 2).any():
                k_co = int(np.argmax((lab == 2).sum(axis=(0, 1))))
        lo, hi = np.percentile(img, [0.5, 99.5])
        views = (
            ("axial (VS)", img[:, :, k_vs].T, None if lab is None else lab[:, :, k_vs].T, zooms[1] / zooms[0]),
            ("axial (cochlea)", img[:, :, k_co].T, None if lab is None else lab[:, :, k_co].T, zooms[1] / zooms[0]),
            ("coronal (VS)", img[:, j_vs, :].T, None if lab is None else lab[:, j_vs, :].T, zooms[2] / zooms[0]),
        )
        for c, (what, sl, lsl, aspect) in enumerate(views):
            ax = axes[r][c]
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
            if lsl is not None:
                for value, colour in ((1, "red"), (2, "yellow")):
                    if (lsl == value).any():
                        ax.contour((lsl == value).astype(np.float32), levels=[0.5], colors=colour, linewidths=0.7)
            ax.set_title(f"{title}\n{what}" if c == 0 else what, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
