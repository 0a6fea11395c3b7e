"""Built-in synthetic crossMoDA-like dataset: ceT1 (annotated source) and hrT2 (unannotated target).

Why a phantom: the demo, every test and the CPU benchmarks need data that can be made offline in
seconds, yet carries the domain gap COSMOS exists to bridge. So each subject is an analytic
anatomy in millimetres (head, skull, brain, brainstem with pre-pontine and cerebellopontine-angle
cisterns, petrous bones, internal auditory canals, a lobulated vestibular schwannoma growing from
the canal into the cistern, and on each side the membranous labyrinth: a coiled cochlea, the
vestibule and three semicircular canals, plus the basilar artery and an AICA loop per side) and
each volume is *rendered* on its own acquisition grid by evaluating that anatomy at sub-voxel
sample points. Image and label are therefore consistent on any grid, including flipped and oblique
ones, and nothing is ever resampled.

Why it must not flatter us: a method tuned on an easy phantom fails on real scans. So, as on real
hrT2, the cochlea is *not* the only bright blob in the petrous bone (the vestibule and the canals
next to it are as bright and never labelled: only its coil shape and anterior position tell the
cochlea apart), vessels cross the bright CSF as flow voids (black on hrT2, enhancing on ceT1),
labels are partial-volume (a voxel is VS or cochlea when at least half of it is, measured by
sub-voxel sampling, and intensities are the sub-voxel mean), grids vary in spacing, flips and
obliquity, and two hrT2 "scanner sites" differ in contrast curve, noise, bias and storage:

* ``CISS`` (int16, scl_slope 1, a few hundred to ~1500) and ``FIESTA`` (float32, other CSF/brain/VS
  ratios, a gamma, more noise, a stronger bias field), alternating by case number so target
  training and validation both hold both sites;
* ceT1 likewise from two sites, ``MPRAGE`` and ``SPGR`` (both int16, different ranges and curves).

The modalities differ the way the real scans do:

* ceT1: brain mid grey, fluid (CSF, canal, labyrinth) dark grey, bone black, the VS and the
  arteries bright (enhancing); grid ~0.6 x 0.6 x 1.4 mm at "small", ~0.4 x 0.4 x 1.4 mm 512^2 at "full".
* hrT2: CSF and labyrinth very bright, the VS intermediate grey outlined by CSF, arteries black
  (flow voids), bone black; grid ~0.5 x 0.5 x 1.0 mm (384 or 448 in-plane at "full").

Scales: at ``scale="small"`` a shrunken head fits a ~50 mm field of view (the CPU demo) while the
cochlea keeps a few hundred hrT2 voxels and the VS a few thousand (a ~40-voxel cochlea was never
learned by a small CPU nnU-Net); at ``scale="full"`` the head is life-sized, the VS 4-30 mm across,
the cochlea a few millimetres.

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
from typing import NamedTuple, TypedDict, overload

import numpy as np
from scipy import ndimage
from scipy.interpolate import make_interp_spline
from scipy.spatial import cKDTree

from cosmos.data import layout, nifti
from cosmos.errors import CosmosError
from cosmos.logs import progress

log = logging.getLogger(__name__)

MANIFEST = "phantom.json"
PREVIEW = "preview.png"
SCALES = ("small", "full")
TARGET_LABELS_DIR = "target_training_labels"  # only with target_labels=True (for pseudo-label QA)

# Tissue classes (painted in this order; later classes overwrite earlier ones). VESTIBULE and SCC
# (semicircular canals) are labyrinth fluid like the cochlea but carry label 0; VESSEL: arteries.
AIR, SCALP, SKULL, BRAIN, CSF, BRAINSTEM, PETROUS, CANAL, COCHLEA, VS, VESTIBULE, SCC, VESSEL = range(13)
N_TISSUES = 13


@dataclass(frozen=True)
class Site:
    """One scanner/protocol: contrast curve (mean per tissue, then a gamma), noise, bias, PSF, storage."""

    name: str
    table: dict[int, float]
    gamma: float
    noise: tuple[float, float]  # Rician sigma range (fraction of the intensity scale)
    bias: float  # amplitude of the smooth multiplicative bias field (log scale)
    blur: float  # PSF sigma in voxels (in-plane; 2/3 of it through-plane)
    scale: tuple[float, float]  # stored-intensity range of the case
    dtype: str  # on-disk dtype


# Why fluid and bone differ in ceT1: with fluid at bone level (0.10 vs 0.06 + noise, an earlier version)
# nothing in a ceT1 slice says where the cochlea is, and a CPU-budget translator kept the pseudo-hrT2
# cochlea black. Why the hrT2 cochlea is a notch below the vestibule: partial volume with the modiolus
# and spiral lamina, as on many CISS scans (a tiny-profile nnU-Net never predicted a cochlea voxel at CSF
# brightness). The vestibule and canals are the same fluid, as bright as the canal CSF.
_CET1_MPRAGE = {
    AIR: 0.0,
    SCALP: 0.80,
    SKULL: 0.04,
    BRAIN: 0.45,
    CSF: 0.22,
    BRAINSTEM: 0.50,
    PETROUS: 0.03,
    CANAL: 0.22,
    COCHLEA: 0.22,
    VS: 0.92,
    VESTIBULE: 0.22,
    SCC: 0.22,
    VESSEL: 0.85,
}
_CET1_SPGR = {
    AIR: 0.0,
    SCALP: 0.72,
    SKULL: 0.05,
    BRAIN: 0.52,
    CSF: 0.22,
    BRAINSTEM: 0.58,
    PETROUS: 0.04,
    CANAL: 0.22,
    COCHLEA: 0.22,
    VS: 0.88,
    VESTIBULE: 0.22,
    SCC: 0.22,
    VESSEL: 0.95,
}
_T2_CISS = {
    AIR: 0.0,
    SCALP: 0.32,
    SKULL: 0.04,
    BRAIN: 0.30,
    CSF: 0.95,
    BRAINSTEM: 0.26,
    PETROUS: 0.04,
    CANAL: 0.90,
    COCHLEA: 0.74,
    VS: 0.45,
    VESTIBULE: 0.88,
    SCC: 0.88,
    VESSEL: 0.05,
}
_T2_FIESTA = {
    AIR: 0.0,
    SCALP: 0.50,
    SKULL: 0.03,
    BRAIN: 0.20,
    CSF: 0.92,
    BRAINSTEM: 0.17,
    PETROUS: 0.03,
    CANAL: 0.88,
    COCHLEA: 0.76,
    VS: 0.35,
    VESTIBULE: 0.92,
    SCC: 0.92,
    VESSEL: 0.07,
}
SITES = {
    "ceT1": (
        Site("MPRAGE", _CET1_MPRAGE, 1.0, (0.02, 0.035), 0.09, 0.40, (600, 900), "int16"),
        Site("SPGR", _CET1_SPGR, 1.15, (0.02, 0.032), 0.14, 0.45, (1800, 3000), "int16"),
    ),
    "hrT2": (
        Site("CISS", _T2_CISS, 1.0, (0.02, 0.035), 0.09, 0.40, (900, 1400), "int16"),
        Site("FIESTA", _T2_FIESTA, 1.15, (0.035, 0.05), 0.16, 0.50, (180.0, 320.0), "float32"),
    ),
}


# Grids per (scale, modality): in-plane spacing range, slice spacing range, in-plane size (a range of
# field of view in mm at "small", fixed matrix sizes at "full"), slab thickness range (mm).
class _GridRanges(TypedDict, total=False):
    sp: tuple[float, float]
    dz: tuple[float, float]
    fov: tuple[float, float]  # either a field-of-view range (mm) ...
    n: tuple[int, ...]  # ... or the matrix sizes to choose from
    slab: tuple[float, float]


_GRIDS: dict[tuple[str, str], _GridRanges] = {
    ("small", "ceT1"): {"sp": (0.55, 0.65), "dz": (1.2, 1.6), "fov": (48.0, 51.0), "slab": (39.0, 45.0)},
    ("small", "hrT2"): {"sp": (0.45, 0.55), "dz": (0.8, 1.2), "fov": (48.0, 51.0), "slab": (28.0, 34.0)},
    ("full", "ceT1"): {"sp": (0.39, 0.46), "dz": (1.2, 1.5), "n": (512,), "slab": (160.0, 180.0)},
    ("full", "hrT2"): {"sp": (0.43, 0.55), "dz": (0.8, 1.5), "n": (384, 448), "slab": (56.0, 80.0)},
}

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
    """One random anatomy (millimetres, RAS-like: x right, y anterior, z superior).

    Ear positions are given for the right side (lateral x > 0) and mirrored for the left.
    """

    side: int  # +1: tumour on the right, -1: on the left
    head_axes: tuple[float, float, float]
    head_centre: tuple[float, float, float]
    scalp: float
    skull: float
    brainstem_centre: tuple[float, float]
    brainstem_axes: tuple[float, float]
    petrous_angle: float  # radians; long axis points antero-medially
    petrous_axes: tuple[float, float, float]
    petrous_offset: tuple[float, float]  # (lateral x, anterior y) of its centre
    porus: tuple[float, float]  # medial opening of the canal (lateral x, y)
    fundus: tuple[float, float]  # lateral end of the canal
    canal_radius: float
    cochlea_offset: tuple[float, float, float]  # cochlea centre relative to the fundus
    cochlea_radius: float  # outer spiral radius
    cochlea_tube: float
    cochlea_turns: float
    cochlea_height: float
    cochlea_tilt: tuple[float, float]  # rotation of the modiolus axis (radians)
    vestibule_offset: tuple[float, float, float]  # relative to the fundus (before the gap is enforced)
    vestibule_axes: tuple[float, float, float]
    scc_radii: tuple[float, float, float]  # lateral, superior, posterior canal arc radius
    scc_tube: float
    labyrinth_gap: float  # minimum bone between cochlea and vestibule/canals (mm)
    vs_radius: float
    vs_direction: tuple[float, float, float]  # unit vector from the porus into the cistern
    vs_lobes: tuple[tuple[float, float, float, float], ...]  # (dx, dy, dz, r) relative to the VS body
    vs_reach: float  # how far (fraction of the canal) the intracanalicular part reaches towards the fundus
    cistern_pad: float
    z0: float  # axial level of canal, cochlea and VS centre
    column_top: float  # the brainstem column and its CSF end this far above z0 (inf: the small field of view)
    basilar_radius: float
    basilar_bend: float
    aica_radius: float
    aica_loop: tuple[float, float]  # how deep each AICA loop dips into its porus (mm; right, left)


_Range = tuple[float, float]  # uniform (low, high)


class _AnatomyRanges(TypedDict):
    head: tuple[_Range, _Range, _Range]
    centre: float
    scalp: float | _Range
    skull: float | _Range
    z0: _Range
    bs: float
    ear: float
    canal_r: _Range
    porus: tuple[_Range, _Range]
    iac: tuple[_Range, _Range]
    co_r: _Range
    co_tube: _Range
    co_h: _Range
    co_off: tuple[_Range, _Range]
    vest: tuple[_Range, _Range, _Range]
    scc_r: tuple[_Range, _Range, _Range]
    scc_tube: _Range
    gap: _Range
    vs_d: _Range | None  # VS diameter range (log-uniform), or None and ...
    vs_r: _Range | None  # ... a VS radius range (uniform)
    vs_scale: float
    basilar: _Range
    aica: _Range
    petrous: tuple[float, float]
    column_top: _Range | None


# Per-scale anatomy ranges. "small": the head shrunk to a ~50 mm field of view, ear structures close
# to life size (learnable on a CPU); "full": life-sized (VS 4-30 mm, cochlea a few mm).
_ANATOMY: dict[str, _AnatomyRanges] = {
    "small": {
        "head": ((21.5, 23.5), (22.5, 24.5), (60.0, 60.0)),
        "centre": 0.8,
        "scalp": 1.4,
        "skull": 1.7,
        "z0": (-2.0, 2.0),
        "bs": 1.0,
        "ear": 1.0,
        "canal_r": (1.2, 1.5),
        "porus": ((7.6, 8.4), (2.5, 3.5)),
        "iac": ((3.0, 3.8), (0.2, 0.8)),
        "co_r": (2.4, 2.7),
        "co_tube": (1.15, 1.3),
        "co_h": (1.8, 2.2),
        "co_off": ((1.0, 1.4), (3.6, 4.0)),
        "vest": ((1.3, 1.5), (2.0, 2.3), (1.4, 1.6)),
        "scc_r": ((1.5, 1.8), (1.8, 2.1), (1.7, 2.0)),
        "scc_tube": (0.5, 0.6),
        "gap": (0.9, 1.4),
        "vs_d": None,
        "vs_r": (4.6, 6.5),
        "vs_scale": 1.0,
        "basilar": (0.6, 0.75),
        "aica": (0.45, 0.55),
        "petrous": (1.0, 1.0),
        "column_top": None,
    },
    "full": {
        "head": ((68.0, 76.0), (86.0, 96.0), (100.0, 112.0)),
        "centre": 2.0,
        "scalp": (4.0, 6.0),
        "skull": (5.0, 7.0),
        "z0": (-22.0, -12.0),
        "bs": 3.0,
        "ear": 2.0,
        "canal_r": (1.8, 2.4),
        "porus": ((19.0, 21.0), (5.0, 7.0)),
        "iac": ((8.0, 10.0), (0.5, 1.5)),
        "co_r": (2.6, 3.0),
        "co_tube": (0.8, 0.95),
        "co_h": (3.0, 3.6),
        "co_off": ((1.3, 1.8), (3.0, 3.6)),
        "vest": ((1.4, 1.7), (2.2, 2.6), (1.5, 1.8)),
        "scc_r": ((2.2, 2.6), (2.9, 3.3), (2.7, 3.1)),
        "scc_tube": (0.4, 0.5),
        "gap": (0.6, 1.2),
        "vs_d": (4.0, 30.0),
        "vs_r": None,
        "vs_scale": 1.6,
        "basilar": (1.3, 1.7),
        "aica": (0.5, 0.7),
        "petrous": (2.8, 1.8),
        "column_top": (28.0, 36.0),
    },
}


def _range(v, u):
    return u(*v) if isinstance(v, tuple) else float(v)


def _sample_subject(rng: np.random.Generator, scale: str) -> Subject:
    A = _ANATOMY[scale]
    u = rng.uniform
    side = int(rng.choice([-1, 1]))
    hx, hy, hz = (u(*r) for r in A["head"])
    vs_d, vs_r_range = A["vs_d"], A["vs_r"]
    if vs_d is None:
        assert vs_r_range is not None  # a scale gives vs_d or vs_r
        vs_r = u(*vs_r_range)
    else:
        # Max extent (body plus lobes) ~2.7 radii; log-uniform diameter: as many small tumours as large.
        vs_r = math.exp(u(math.log(vs_d[0]), math.log(vs_d[1]))) / 2.7
    d = np.array([-0.55 * side, -u(0.55, 0.85), u(-0.15, 0.15)])
    d /= np.linalg.norm(d)
    lobes = []
    for _ in range(int(rng.integers(2, 5))):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        lobes.append((*(v * vs_r * u(0.45, 0.7)), vs_r * u(0.4, 0.65)))
    bs, ear, c = A["bs"], A["ear"], A["centre"]
    px, py = u(*A["porus"][0]), u(*A["porus"][1])
    iac_len, iac_dy = u(*A["iac"][0]), u(*A["iac"][1])
    s_co = 1.0
    return Subject(
        side=side,
        head_axes=(hx, hy, hz),
        head_centre=(u(-c, c), u(-c, c), 0.0),
        scalp=_range(A["scalp"], u),
        skull=_range(A["skull"], u),
        brainstem_centre=(u(-0.4, 0.4) * bs, u(3.0, 4.5) * bs),
        brainstem_axes=(u(4.0, 4.8) * bs, u(3.4, 4.2) * bs),
        petrous_angle=u(0.45, 0.65),
        petrous_axes=(u(9.0, 10.0) * A["petrous"][0], u(5.0, 5.6) * A["petrous"][1], 5.5 * ear),
        petrous_offset=(px + iac_len + u(1.5, 2.5), py + u(1.5, 2.5) * math.sqrt(ear)),
        porus=(px, py),
        fundus=(px + iac_len, py + iac_dy),
        canal_radius=u(*A["canal_r"]),
        cochlea_offset=(u(*A["co_off"][0]), u(*A["co_off"][1]), u(-0.3, 0.3)),
        cochlea_radius=u(*A["co_r"]) * s_co,
        cochlea_tube=u(*A["co_tube"]),
        cochlea_turns=u(2.3, 2.7),
        cochlea_height=u(*A["co_h"]),
        cochlea_tilt=(u(-0.35, 0.35), u(-0.35, 0.35)),
        vestibule_offset=(u(2.2, 2.6), u(-1.2, -0.6), u(0.0, 0.6)),
        vestibule_axes=(u(*A["vest"][0]), u(*A["vest"][1]), u(*A["vest"][2])),
        scc_radii=(u(*A["scc_r"][0]), u(*A["scc_r"][1]), u(*A["scc_r"][2])),
        scc_tube=u(*A["scc_tube"]),
        labyrinth_gap=u(*A["gap"]),
        vs_radius=vs_r,
        vs_direction=tuple(d),
        vs_lobes=tuple(lobes),
        vs_reach=u(0.5, 0.9),
        cistern_pad=u(1.5, 2.5) * A["vs_scale"],
        z0=u(*A["z0"]),
        column_top=math.inf if A["column_top"] is None else u(*A["column_top"]),
        basilar_radius=u(*A["basilar"]),
        basilar_bend=u(-1.0, 1.0) * bs,
        aica_radius=u(*A["aica"]),
        aica_loop=(u(-0.5, 2.0), u(-0.5, 2.0)),
    )


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _smooth_curve(ctrl: np.ndarray, n: int) -> np.ndarray:
    """``n`` points on a cubic spline through the control points (chord-length parametrised)."""
    t = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))])
    return make_interp_spline(t, ctrl, k=min(3, len(ctrl) - 1))(np.linspace(0.0, t[-1], n))


def _cochlea_curve(sub: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Right-side points along the cochlear duct (a tapering spiral) relative to the fundus, and the tube radius."""
    t = np.linspace(0.0, 1.0, 90)
    theta = 2 * np.pi * sub.cochlea_turns * t
    r = sub.cochlea_radius * (1.0 - 0.62 * t)
    pts = np.stack([r * np.cos(theta), r * np.sin(theta), sub.cochlea_height * (t - 0.5)], axis=1)
    # Modiolus axis roughly lateral-anterior, as in the petrous bone.
    rot = _rotation(sub.cochlea_tilt[0], 1.2 + sub.cochlea_tilt[1], 0.5)
    pts = pts @ rot.T + np.array(sub.cochlea_offset)
    radius = sub.cochlea_tube * (1.0 - 0.3 * t)
    return pts, radius


def _labyrinth(sub: Subject) -> dict:
    """Right-side cochlea, vestibule and semicircular canals relative to the fundus.

    The vestibule sits lateral to the fundus, posterior to the cochlea; the lateral canal loops
    laterally in a near-axial plane, the superior canal upwards across the petrous ridge, the
    posterior canal backwards along it. The vestibule group is pushed away from the cochlea until
    the thinnest bone between them is ``labyrinth_gap``: close (a model must learn the cochlea's
    shape, not "bright blob in bone"), yet separable.
    """
    co, co_r = _cochlea_curve(sub)
    ca, sa = math.cos(sub.petrous_angle), math.sin(sub.petrous_angle)
    long_axis = np.array([ca, -sa, 0.0])  # lateral-posterior along the petrous ridge
    across = np.array([sa, ca, 0.0])
    tilt = math.radians(25.0)
    canals = (  # (direction from the vestibule to the arc centre, normal of the arc plane)
        (np.array([0.55, -0.75, 0.2]), np.array([0.0, -math.sin(tilt), math.cos(tilt)])),
        (np.array([0.1, 0.2, 1.0]), long_axis),
        (np.array([0.3, -0.85, -0.3]), across),
    )
    theta = np.linspace(0.0, 2 * np.pi, 56, endpoint=False)
    ax = np.array(sub.vestibule_axes)
    shift = np.zeros(3)
    for _ in range(8):
        v = np.array(sub.vestibule_offset) + shift
        arcs = []
        for (direction, normal), big_r in zip(canals, sub.scc_radii):
            n = _unit(normal)
            e1 = _unit(direction - (direction @ n) * n)
            e2 = np.cross(n, e1)
            c = v + e1 * (big_r + 0.3 * ax.min())
            arcs.append(c - big_r * (np.cos(theta)[:, None] * e1) + big_r * (np.sin(theta)[:, None] * e2))
        scc = np.concatenate(arcs)
        # Thinnest bone: cochlea tube to the vestibule (radial ellipsoid distance) and to the canals.
        q = (co - v) / ax
        rho = np.linalg.norm(q, axis=1)
        d_vest = np.linalg.norm(co - v, axis=1) * (1.0 - 1.0 / np.maximum(rho, 1e-6)) - co_r
        d_scc = np.sqrt(((co[:, None, :] - scc[None]) ** 2).sum(-1)) - co_r[:, None] - sub.scc_tube
        gap = min(float(d_vest.min()), float(d_scc.min()))
        if gap >= sub.labyrinth_gap - 0.02:
            break
        shift = shift + _unit(v - co.mean(0)) * (sub.labyrinth_gap - gap + 0.05)
    return {"cochlea": (co, co_r), "vestibule": v, "scc": scc}


def _vessels(sub: Subject) -> list[tuple[np.ndarray, float]]:
    """World-space centre lines and radii: the basilar artery in the pre-pontine cistern and one AICA
    per side, looping from it through the cerebellopontine cistern to (and sometimes into) the porus."""
    bx, by = sub.brainstem_centre
    ex, ey = sub.brainstem_axes
    z0, b = sub.z0, sub.basilar_bend
    length = 3.2 * ey
    yb = by + 1.22 * ey
    basilar = np.array([[bx - 0.3 * b, yb, z0 - length], [bx + b, yb + 0.05 * ey, z0], [bx - 0.5 * b, yb, z0 + length]])
    out = [(_smooth_curve(basilar, 60), sub.basilar_radius)]
    for s, loop in zip((1, -1), sub.aica_loop):
        px, py = sub.porus
        az = 0.45 * ey
        ctrl = np.array(
            [
                [bx + 0.3 * s * sub.basilar_radius, yb, z0 - az],
                [bx + s * 0.75 * ex, by + 1.05 * ey, z0 - 0.8 * az],
                [bx + s * 1.12 * ex, by + 0.35 * ey, z0 - 0.5 * az],
                [s * (px - 1.2), py - 0.2, z0 - 0.5],
                [s * (px + loop), py + 0.1, z0 + 0.1],
                [s * (px - 1.4), py - 1.4, z0 + 0.7],
                [s * (px - 2.6), py - 3.5, z0 + 0.6],
            ]
        )
        out.append((_smooth_curve(ctrl, 70), sub.aica_radius))
    return out


def _geometry(sub: Subject) -> dict:
    """Derived shapes (computed once per subject, cached on it) and the box that holds all the detail."""
    geo = sub.__dict__.get("_geo")
    if geo is not None:
        return geo
    lab = _labyrinth(sub)
    vessels = _vessels(sub)
    bx = sub.brainstem_centre[0]
    ex, ey = sub.brainstem_axes
    z0, side = sub.z0, sub.side
    porus = np.array([side * sub.porus[0], sub.porus[1], z0])
    fundus = np.array([side * sub.fundus[0], sub.fundus[1], z0])
    vs_body = porus + np.array(sub.vs_direction) * sub.vs_radius * 0.85
    co, co_r = lab["cochlea"]
    vax = np.array(sub.vestibule_axes)
    # Every third sample is enough for a >= 2 mm thick bone envelope (and three times cheaper).
    capsule = (
        np.concatenate([co[::3], lab["scc"][::3], lab["vestibule"][None]]),
        np.concatenate([co_r[::3], np.full(len(lab["scc"][::3]), sub.scc_tube), [vax.max()]]) + 1.6,
    )
    cistern = {}
    boxes = []
    for s in (-1, 1):
        gx = 0.5 * (sub.porus[0] - bx * s - ex)
        centre = (s * (sub.porus[0] - gx), sub.porus[1] - 0.5, z0)
        axes = (gx + 0.8, 0.55 * ey + 0.4, 0.5 * ey + 0.4)
        cistern[s] = (centre, axes)
        boxes.append((np.array(centre) - axes, np.array(centre) + axes))
        pc = np.array([s * sub.petrous_offset[0], sub.petrous_offset[1], z0])
        pr = max(sub.petrous_axes[:2])
        boxes.append((pc - [pr, pr, sub.petrous_axes[2]], pc + [pr, pr, sub.petrous_axes[2]]))
        cap = capsule[0] * [s, 1, 1] + [s * sub.fundus[0], sub.fundus[1], z0]
        boxes.append((cap.min(0) - capsule[1].max(), cap.max(0) + capsule[1].max()))
    for curve, r in vessels:
        boxes.append((curve.min(0) - r, curve.max(0) + r))
    big = sub.vs_radius * 1.45 + sub.cistern_pad + 0.5
    boxes.append((vs_body - big, vs_body + big))
    boxes.append((np.minimum(porus, fundus) - 4 * sub.canal_radius, np.maximum(porus, fundus) + 4 * sub.canal_radius))
    lo = np.min([b[0] for b in boxes], axis=0) - 0.5
    hi = np.max([b[1] for b in boxes], axis=0) + 0.5
    geo = {
        "labyrinth": lab,
        "vessels": vessels,
        "capsule": capsule,
        "cistern": cistern,
        "vs_body": vs_body,
        "vs_tip": porus + (fundus - porus) * sub.vs_reach,
        "detail_box": (lo, hi),
    }
    sub.__dict__["_geo"] = geo
    return geo


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


def _tube(x, y, z, curve: np.ndarray, radius, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of points within ``reach`` mm of a tube (a swept sphere along the densely sampled
    ``curve``) and their signed distance to its surface (negative inside).

    The minimum of |p - c_i| - r_i is taken over the 4 nearest curve samples (a k-d tree): with samples
    closer than their radius and slowly varying radii, the minimiser is among them."""
    r = np.broadcast_to(np.asarray(radius, np.float64), (len(curve),))
    lo, hi = curve.min(0) - r.max() - reach, curve.max(0) + r.max() + reach
    idx = np.flatnonzero(_box(x, y, z, lo, hi))
    if not len(idx):
        return idx, np.zeros(0, np.float32)
    p = np.stack([x.flat[idx], y.flat[idx], z.flat[idx]], axis=1)
    k = min(4, len(curve))
    dist, nn = cKDTree(curve).query(p, k=k, distance_upper_bound=float(r.max()) + reach)
    rr = np.concatenate([r, [0.0]])[nn]  # missing neighbours: index len(curve), distance inf
    sd = (dist - rr).min(axis=1).astype(np.float32)
    keep = sd <= reach
    return idx[keep], sd[keep]


@overload
def _paint(sub: Subject, x: np.ndarray, y: np.ndarray, z: np.ndarray, margin: None = None) -> np.ndarray: ...


@overload
def _paint(
    sub: Subject, x: np.ndarray, y: np.ndarray, z: np.ndarray, margin: float
) -> tuple[np.ndarray, np.ndarray]: ...


def _paint(
    sub: Subject, x: np.ndarray, y: np.ndarray, z: np.ndarray, margin: float | None = None
) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """Tissue class at world points (any equal shapes); with ``margin`` also a mask of points within
    ``margin`` mm of a thin structure (vessels, canals, cochlea), which a voxel-centre sample can miss."""
    geo = _geometry(sub)
    tissue = np.zeros(x.shape, np.uint8)
    near = np.zeros(x.shape, bool) if margin is not None else None
    hc, ha = sub.head_centre, sub.head_axes
    tissue[_in_ellipsoid(x, y, z, hc, ha)] = SCALP
    inner1 = tuple(a - sub.scalp for a in ha)
    tissue[_in_ellipsoid(x, y, z, hc, inner1)] = SKULL
    inner2 = tuple(a - sub.scalp - sub.skull for a in ha)
    brain = _in_ellipsoid(x, y, z, hc, inner2)
    tissue[brain] = BRAIN
    # Brainstem (an elliptic column) with a CSF rim, a pre-pontine cistern (basilar artery) and a 4th ventricle.
    bx, by = sub.brainstem_centre
    ex, ey = sub.brainstem_axes
    col = ((x - bx) / ex) ** 2 + ((y - by) / ey) ** 2
    if math.isfinite(sub.column_top):
        # Whole head: the brainstem ends at the midbrain; above it lateral ventricles (CSF) in the cerebrum.
        col = np.where(z > sub.z0 + sub.column_top, np.inf, col)
        for s in (-1, 1):
            vc = (hc[0] + s * 0.16 * ha[0], hc[1] + 0.05 * ha[1], sub.z0 + sub.column_top + 0.3 * ha[2])
            tissue[brain & _in_ellipsoid(x, y, z, vc, (0.09 * ha[0], 0.3 * ha[1], 0.12 * ha[2]))] = CSF
    tissue[brain & (col <= 1.7)] = CSF
    tissue[brain & (((x - bx) / (0.75 * ex)) ** 2 + ((y - by - 1.2 * ey) / (0.42 * ey)) ** 2 <= 1.0)] = CSF
    tissue[brain & (col <= 1.0)] = BRAINSTEM
    tissue[brain & (((x - bx) / (0.35 * ex)) ** 2 + ((y - by + 0.95 * ey) / (0.3 * ey)) ** 2 <= 1.0)] = CSF
    # Everything else lives in one box around the ears, cisterns and vessels: paint only the points in it.
    sel = np.flatnonzero(_box(x, y, z, *geo["detail_box"]))
    if len(sel):
        t = tissue.flat[sel]
        nr = None if near is None else np.zeros(len(sel), bool)
        _paint_detail(
            sub, geo, x.flat[sel], y.flat[sel], z.flat[sel], t, brain.flat[sel], nr, 0.0 if margin is None else margin
        )
        tissue.flat[sel] = t
        if near is not None:
            near.flat[sel] = nr
    return tissue if near is None else (tissue, near)


def _paint_detail(
    sub: Subject,
    geo: dict,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    tissue: np.ndarray,
    brain: np.ndarray,
    near: np.ndarray | None,
    reach: float,
) -> None:
    """Cisterns, petrous bones, canals, labyrinths, vessels and the VS, painted in place on 1D point arrays."""
    z0 = sub.z0
    vs_body = geo["vs_body"]
    # Cerebellopontine-angle cisterns: a small one on each side, a large one around the VS body.
    for s in (-1, 1):
        tissue[brain & _in_ellipsoid(x, y, z, *geo["cistern"][s])] = CSF
    cis_axes = (sub.vs_radius + sub.cistern_pad,) * 2 + (sub.vs_radius + 0.5 * sub.cistern_pad,)
    tissue[brain & _in_ellipsoid(x, y, z, vs_body, cis_axes)] = CSF
    lab = geo["labyrinth"]
    for s in (-1, 1):
        mirror = np.array([s, 1.0, 1.0])
        fundus = np.array([s * sub.fundus[0], sub.fundus[1], z0])
        # Petrous bone: a rotated ellipsoid running antero-medially, plus the otic capsule (>= 1.6 mm
        # of dense bone around the whole labyrinth, wherever the ellipsoid would leave it in brain).
        px, py = sub.petrous_offset
        ca, sa = math.cos(sub.petrous_angle), math.sin(sub.petrous_angle)
        dx, dy = x - s * px, y - py
        u_ = ca * dx - s * sa * dy
        v_ = s * sa * dx + ca * dy
        pax = sub.petrous_axes
        petrous = (u_ / pax[0]) ** 2 + (v_ / pax[1]) ** 2 + ((z - z0) / pax[2]) ** 2 <= 1.0
        tissue[petrous & (tissue != AIR)] = PETROUS
        co, co_r = lab["cochlea"]
        co = co * mirror + fundus
        scc = lab["scc"] * mirror + fundus
        vest = lab["vestibule"] * mirror + fundus
        vax = np.array(sub.vestibule_axes)
        capsule, cap_r = geo["capsule"]
        idx, _ = _tube(x, y, z, capsule * mirror + fundus, cap_r, 0.0)
        idx = idx[tissue[idx] != AIR]
        tissue[idx] = PETROUS
        # Internal auditory canal: CSF-filled tube from the porus to the fundus (its rounded end stops
        # at the fundus: a plate of bone separates it from the vestibule).
        a = np.array([s * sub.porus[0], sub.porus[1], z0])
        a0 = a - np.array([s * 1.5, 0, 0])
        b = fundus - _unit(fundus - a0) * sub.canal_radius
        pad = sub.canal_radius + 0.5
        bi = np.flatnonzero(_box(x, y, z, np.minimum(a0, b) - pad, np.maximum(a0, b) + pad))
        if len(bi):
            p = np.stack([x[bi], y[bi], z[bi]], axis=1)
            tissue[bi[_segment_distance2(p, a0, b) <= sub.canal_radius**2]] = CANAL
        # Vestibule (ellipsoid) and semicircular canals (tubes): bright labyrinth fluid, never labelled.
        bi = np.flatnonzero(_box(x, y, z, vest - vax - 0.1, vest + vax + 0.1))
        if len(bi):
            tissue[bi[_in_ellipsoid(x[bi], y[bi], z[bi], vest, vax)]] = VESTIBULE
        idx, sd = _tube(x, y, z, scc, sub.scc_tube, reach)
        tissue[idx[sd <= 0]] = SCC
        if near is not None:
            near[idx] = True
        # Cochlea: a tapering coiled tube (the snail), label 2.
        idx, sd = _tube(x, y, z, co, co_r, reach)
        tissue[idx[sd <= 0]] = COCHLEA
        if near is not None:
            near[idx] = True
    # Arteries: thin tubes through CSF (and brain), never through bone or the labyrinth.
    for curve, r in geo["vessels"]:
        idx, sd = _tube(x, y, z, curve, r, reach)
        t = tissue[idx]
        ok = (sd <= 0) & ((t == CSF) | (t == CANAL) | (t == BRAIN))
        tissue[idx[ok]] = VESSEL
        if near is not None:
            near[idx] = True
    # Vestibular schwannoma: an intracanalicular part plus a lobulated cisternal body. It displaces
    # CSF, vessels, brain and brainstem but not the petrous bone outside the canal nor the labyrinth.
    tip = geo["vs_tip"]
    reach_vs = sub.vs_radius * 1.45 + 0.5
    bi = np.flatnonzero(
        _box(
            x,
            y,
            z,
            np.minimum(vs_body - reach_vs, tip - sub.canal_radius),
            np.maximum(vs_body + reach_vs, tip + sub.canal_radius),
        )
    )
    if len(bi):
        p = np.stack([x[bi], y[bi], z[bi]], axis=1)
        m = _dist2(p, vs_body) <= sub.vs_radius**2
        for lx, ly, lz, r in sub.vs_lobes:  # a lobe's offset from the body (dx, dy above are arrays)
            m |= _dist2(p, vs_body + np.array([lx, ly, lz])) <= r * r
        m |= _segment_distance2(p, vs_body, tip) <= (sub.canal_radius * 0.95) ** 2
        idx = bi[m]
        t = tissue[idx]
        ok = (t == BRAIN) | (t == CSF) | (t == BRAINSTEM) | (t == CANAL) | (t == VESSEL)
        tissue[idx[ok]] = VS


def label_of(tissue: np.ndarray) -> np.ndarray:
    """crossMoDA label (0 background, 1 VS, 2 cochlea) of a tissue map."""
    return np.where(tissue == VS, 1, np.where(tissue == COCHLEA, 2, 0)).astype(np.uint8)


@dataclass
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray


def _sample_grid(rng: np.random.Generator, scale: str, modality: str, sub: Subject, orientation_index: int) -> Grid:
    g = _GRIDS[(scale, modality)]
    sp = round(float(rng.uniform(*g["sp"])), 3)
    dz = round(float(rng.uniform(*g["dz"])), 3)
    if "n" in g:
        n = int(g["n"][int(rng.integers(len(g["n"])))])
        ni, nj = n, n
    else:
        ni, nj = (int(rng.uniform(*g["fov"]) // sp) for _ in range(2))
    shape = (ni, nj, round(rng.uniform(*g["slab"]) / dz))
    spacing = (sp, sp, dz)
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
    image: np.ndarray  # float32, arbitrary MR units (integer-valued for int16 sites)
    label: np.ndarray  # uint8: 0 background, 1 VS, 2 cochlea (>= half of the voxel covered)
    affine: np.ndarray  # 4x4 voxel -> world (mm)
    tissue: np.ndarray  # uint8 majority tissue class per voxel (AIR..VESSEL); ground truth for tests and QA
    site: str = ""  # scanner site (hrT2: CISS | FIESTA; ceT1: MPRAGE | SPGR)
    dtype: str = "float32"  # on-disk dtype of this site


def site_of(case_number: int, modality: str) -> Site:
    """The scanner site of a case: alternating by case number, so any two consecutive cases (hence the
    target training and validation sets of the default layout) hold both sites."""
    return SITES[modality][int(case_number) % 2]


_FLUID_LIKE = (CSF, CANAL, COCHLEA, VS, VESTIBULE, SCC, VESSEL)


def _subsamples(spacing: np.ndarray) -> np.ndarray:
    """Sub-voxel sample offsets (voxel units): 2-4 per axis, about one per 0.5 mm (8-12 per voxel here)."""
    axes = [(np.arange(n) + 0.5) / n - 0.5 for n in np.clip(np.ceil(spacing / 0.5), 2, 4).astype(int)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)


def _world(a: np.ndarray, i, j, k):
    return tuple(a[r, 0] * i + a[r, 1] * j + a[r, 2] * k + a[r, 3] for r in range(3))


def _tissue_and_coverage(sub: Subject, grid: Grid, means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority tissue, partial-volume mean intensity and label (coverage >= 0.5) per voxel.

    Voxel centres first (slab by slab to bound memory); then every voxel whose 3x3x3 neighbourhood mixes
    tissues and holds fluid, the VS or a vessel, or which lies near a thin structure, is sampled at 8-16
    sub-voxel points.
    """
    nx, ny, nz = grid.shape
    a = grid.affine.astype(np.float32)
    spacing = np.linalg.norm(grid.affine[:3, :3], axis=0)
    margin = 0.5 * float(np.linalg.norm(spacing))
    tissue = np.empty(grid.shape, np.uint8)
    near = np.empty(grid.shape, bool)
    ii, jj = np.meshgrid(np.arange(nx, dtype=np.float32), np.arange(ny, dtype=np.float32), indexing="ij")
    slab = max(1, int(2_000_000 // (nx * ny)))
    for k0 in range(0, nz, slab):
        ks = np.arange(k0, min(nz, k0 + slab), dtype=np.float32)
        x, y, z = _world(a, ii[..., None], jj[..., None], ks[None, None, :])
        shape = (nx, ny, len(ks))
        bx, by, bz = (np.broadcast_to(c, shape) for c in (x, y, z))
        t, nr = _paint(sub, bx, by, bz, margin=margin)
        tissue[..., k0 : k0 + len(ks)] = t
        near[..., k0 : k0 + len(ks)] = nr
    # Only boundaries that touch fluid, the VS or a vessel: the shells (air, scalp, skull) and bone-brain
    # edges are left to the PSF blur (supersampling them would triple the cost for nothing segmented).
    edge = ndimage.maximum_filter(tissue, size=3) != ndimage.minimum_filter(tissue, size=3)
    edge &= ndimage.maximum_filter(np.isin(tissue, _FLUID_LIKE), size=3)
    flagged = np.flatnonzero(edge | near)
    image = means[tissue]
    label = label_of(tissue)
    off = _subsamples(spacing)
    ns = len(off)
    chunk = max(1, 1_500_000 // ns)
    for c0 in range(0, len(flagged), chunk):
        fl = flagged[c0 : c0 + chunk]
        ijk = np.stack(np.unravel_index(fl, grid.shape), 1).astype(np.float32)
        pts = ijk[:, None, :] + off[None]
        t = _paint(sub, *_world(a, pts[..., 0], pts[..., 1], pts[..., 2]))
        image.flat[fl] = means[t].mean(axis=1)
        cov_vs = (t == VS).sum(axis=1)
        cov_co = (t == COCHLEA).sum(axis=1)
        label.flat[fl] = np.where(2 * cov_vs >= ns, 1, np.where(2 * cov_co >= ns, 2, 0))
        counts = np.stack([(t == k).sum(axis=1) for k in range(N_TISSUES)], 1)
        tissue.flat[fl] = counts.argmax(axis=1)
    return tissue, image, label


def _render(
    sub: Subject, grid: Grid, site: Site, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (float32), label (uint8) and tissue map of ``sub`` on ``grid`` as ``site`` would acquire it."""
    nx, ny, nz = grid.shape
    means = np.array([site.table[c] for c in range(N_TISSUES)], np.float32)
    means *= rng.uniform(0.94, 1.06, size=N_TISSUES).astype(np.float32)  # per-case contrast jitter
    tissue, img, label = _tissue_and_coverage(sub, grid, means)
    spacing = np.linalg.norm(grid.affine[:3, :3], axis=0)
    # Soft tissue texture: smooth random field (~2 mm), stronger inside the tumour (heterogeneous).
    tex = ndimage.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32), sigma=2.0 / spacing)
    tex *= 1.0 / (float(tex.std()) + 1e-6)
    amp = np.where(tissue == VS, 0.12, 0.05).astype(np.float32)
    img *= 1.0 + amp * tex
    if site.gamma != 1.0:
        img = np.maximum(img, 0.0) ** np.float32(site.gamma)
    # Point-spread function (k-space truncation) on top of the sub-voxel partial volume.
    img = ndimage.gaussian_filter(img, sigma=(site.blur, site.blur, site.blur * 2 / 3))
    # Smooth multiplicative bias field (coil sensitivity).
    coef = rng.uniform(-1, 1, size=6).astype(np.float32)
    gi = np.linspace(-1, 1, nx, dtype=np.float32)[:, None, None]
    gj = np.linspace(-1, 1, ny, dtype=np.float32)[None, :, None]
    gk = np.linspace(-1, 1, nz, dtype=np.float32)[None, None, :]
    bias = np.exp(
        site.bias * (coef[0] * gi + coef[1] * gj + coef[2] * gk)
        + 0.55 * site.bias * (coef[3] * gi * gj + coef[4] * gi**2 + coef[5] * gj**2)
    )
    img = img * bias
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels.
    sigma = float(rng.uniform(*site.noise))
    n1 = rng.standard_normal(grid.shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(grid.shape, dtype=np.float32) * sigma
    img = np.sqrt((img + n1) ** 2 + n2**2)
    img *= float(rng.uniform(*site.scale))
    img = img.astype(np.float32)
    if site.dtype == "int16":
        img = np.clip(np.rint(img), 0, np.iinfo(np.int16).max).astype(np.float32)  # as stored
    return img, label, tissue


def make_case(
    seed: int, case_number: int, modality: str, scale: str = "small", orientation_index: int | None = None
) -> PhantomCase:
    """One phantom case (image, label, affine, tissue, site, dtype); the same arguments give byte-identical arrays."""
    if scale not in SCALES:
        raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
    if modality not in ("ceT1", "hrT2"):
        raise CosmosError(f"phantom modality must be ceT1 or hrT2, got {modality!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(case_number), 1 if modality == "ceT1" else 2]))
    sub = _sample_subject(rng, scale)
    grid = _sample_grid(rng, scale, modality, sub, case_number - 1 if orientation_index is None else orientation_index)
    site = site_of(case_number, modality)
    img, lab, tissue = _render(sub, grid, site, rng)
    return PhantomCase(img, lab, grid.affine, tissue, site.name, site.dtype)


def vestibule_centres(seed: int, case_number: int, modality: str, scale: str = "small") -> list[np.ndarray]:
    """World positions (mm) of the two vestibules of a case, tumour side first (for previews and QA)."""
    sub, _ = case_subject(seed, case_number, modality, scale)
    v = _geometry(sub)["labyrinth"]["vestibule"]
    return [np.array([s * (sub.fundus[0] + v[0]), sub.fundus[1] + v[1], sub.z0 + v[2]]) for s in (sub.side, -sub.side)]


def case_subject(
    seed: int, case_number: int, modality: str, scale: str = "small", orientation_index: int | None = None
) -> tuple[Subject, Grid]:
    """The anatomy and grid ``make_case`` renders (for tests and QA: e.g. exact sub-voxel coverage)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(case_number), 1 if modality == "ceT1" else 2]))
    sub = _sample_subject(rng, scale)
    return sub, _sample_grid(
        rng, scale, modality, sub, case_number - 1 if orientation_index is None else orientation_index
    )


def _plan(n_source: int, n_target: int, n_val: int) -> list[tuple[str, int, str, str]]:
    """(case_id, number, image path, label path) for every case, crossMoDA numbering."""
    plan = []
    for i in range(1, n_source + 1):
        cid = f"crossmoda_{i}"
        plan.append(
            (
                cid,
                i,
                f"{layout.SOURCE_DIR}/{layout.image_name(cid, 'ceT1')}",
                f"{layout.SOURCE_DIR}/{layout.label_name(cid)}",
            )
        )
    for j in range(n_source + 1, n_source + n_target + 1):
        cid = f"crossmoda_{j}"
        plan.append(
            (
                cid,
                j,
                f"{layout.TARGET_DIR}/{layout.image_name(cid, 'hrT2')}",
                f"{TARGET_LABELS_DIR}/{layout.label_name(cid)}",
            )
        )
    for k in range(n_source + n_target + 1, n_source + n_target + n_val + 1):
        cid = f"crossmoda_{k}"
        plan.append(
            (
                cid,
                k,
                f"{layout.VALIDATION_DIR}/{layout.image_name(cid, 'hrT2')}",
                f"{layout.VALIDATION_LABELS_DIR}/{layout.label_name(cid)}",
            )
        )
    return plan


def make_phantom(
    out_dir: str | Path,
    n_source: int = 8,
    n_target: int = 8,
    n_val: int = 4,
    seed: int = 0,
    scale: str = "small",
    preview: bool = True,
    target_labels: bool = False,
) -> Path:
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
    params = {
        "n_source": int(n_source),
        "n_target": int(n_target),
        "n_val": int(n_val),
        "seed": int(seed),
        "scale": scale,
        "target_labels": bool(target_labels),
        "version": 2,
    }
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
        log.info(
            "phantom: generating %d of %d cases (scale=%s, seed=%d) in %s", len(todo), len(plan), scale, seed, root
        )
    cases = dict((old or {}).get("cases", {}))
    for cid, num, img_rel, label_rel in progress(todo, desc="phantom", unit="case"):
        modality = "ceT1" if img_rel.startswith(layout.SOURCE_DIR + "/") else "hrT2"
        case = make_case(seed, num, modality, scale)
        nifti.save(root / img_rel, case.image, affine=case.affine, dtype=np.dtype(case.dtype))
        if label_rel is not None:
            nifti.save(root / label_rel, case.label, affine=case.affine, label=True)
        # Site and ground-truth sizes, also for unlabelled target cases (QA: is the cochlea big enough?).
        lab, tissue = case.label, case.tissue
        cases[cid] = {
            "modality": modality,
            "site": case.site,
            "dtype": case.dtype,
            "shape": list(lab.shape),
            "spacing": [round(float(v), 4) for v in np.linalg.norm(case.affine[:3, :3], axis=0)],
            "vs_voxels": int((lab == 1).sum()),
            "cochlea_voxels": int((lab == 2).sum()),
            "labyrinth_voxels": int(np.isin(tissue, (VESTIBULE, SCC)).sum()),
            "vessel_voxels": int((tissue == VESSEL).sum()),
            "vestibule_mm": [[round(float(v), 2) for v in c] for c in vestibule_centres(seed, num, modality, scale)],
        }
    manifest = {"params": params, "files": files, "cases": {c: cases[c] for c, *_ in plan if c in cases}}
    text = json.dumps(manifest, indent=1)
    # Rewritten only when it changes: its mtime is part of the folder's fingerprint (cosmos.data.storage), and a
    # rewrite would make every keyed stage of a resumed `cosmos benchmark` on this folder run again.
    if old is None or todo or _read_text(manifest_path) != text:
        manifest_path.write_text(text)
    if preview and (todo or not (root / PREVIEW).exists()):
        write_preview(root, root / PREVIEW)
    return root


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_manifest(path: Path) -> dict | None:
    text = _read_text(path)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def write_preview(root: str | Path, out_png: str | Path) -> Path:
    """A PNG grid: the first source case, the first target case of each scanner site (from phantom.json,
    when there is one) and the first validation case, each as an axial slice through the VS, an axial
    slice through the cochleas, a close-up of the labyrinth on that slice (cochlea, vestibule, canals)
    and a coronal reformat through the VS, with VS (red) and cochlea (yellow) contours where a label
    exists. Volumes are turned to the closest RAS orientation first, so every case looks the same way
    up whatever its affine (neurological view: patient right on the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    root = Path(root)
    ds = layout.discover(root)
    info = (_read_manifest(root / MANIFEST) or {}).get("cases") or {}
    sites = {c: v.get("site", "") for c, v in info.items()}
    rows = [(f"{ds.source[0].case_id} ceT1 {sites.get(ds.source[0].case_id, '')}", ds.source[0])] if ds.source else []
    seen: set[str] = set()
    for case in ds.target:
        site = sites.get(case.case_id, "")
        if site not in seen:
            seen.add(site)
            rows.append((f"{case.case_id} hrT2 {site} target", case))
    if ds.validation:
        rows.append(
            (f"{ds.validation[0].case_id} hrT2 {sites.get(ds.validation[0].case_id, '')} validation", ds.validation[0])
        )
    if not rows:
        raise CosmosError(f"{root}: no cases to preview")
    fig, axes = plt.subplots(len(rows), 4, figsize=(9.6, 2.5 * len(rows)), squeeze=False)
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
        centre = (img.shape[0] // 2, img.shape[1] // 2)
        if lab is not None:
            if (lab == 1).any():
                k_vs = int(np.argmax((lab == 1).sum(axis=(0, 1))))
                j_vs = int(np.argmax((lab == 1).sum(axis=(0, 2))))
            if (lab == 2).any():
                k_co = int(np.argmax((lab == 2).sum(axis=(0, 1))))
                # Close-up on the cochlea of the non-tumour side (the other side's is behind the VS).
                comps, n = ndimage.label(lab[:, :, k_co] == 2)
                ci, cj = np.nonzero(lab[:, :, k_co] == 2)
                vs_i = np.nonzero(lab == 1)[0].mean() if (lab == 1).any() else img.shape[0] / 2
                pick = max(range(1, n + 1), key=lambda c: abs(ci[comps[ci, cj] == c].mean() - vs_i))
                centre = (int(ci[comps[ci, cj] == pick].mean()), int(cj[comps[ci, cj] == pick].mean()))
        k_lab = k_co
        vest = (info.get(case.case_id) or {}).get("vestibule_mm")
        if vest:  # phantom ground truth: centre the close-up on the non-tumour side's vestibule, at its level
            ijk = np.linalg.solve(canon.affine, np.append(vest[-1], 1.0))[:3]
            ijk = np.clip(np.rint(ijk).astype(int), 0, np.array(img.shape) - 1)
            centre, k_lab = (int(ijk[0]), int(ijk[1])), int(ijk[2])
        half = [max(4, round(9.0 / zooms[a])) for a in (0, 1)]
        crop = (
            slice(max(0, centre[0] - half[0]), centre[0] + half[0]),
            slice(max(0, centre[1] - half[1]), centre[1] + half[1]),
        )
        lo, hi = np.percentile(img, [0.5, 99.5])
        views = (
            ("axial (VS)", img[:, :, k_vs].T, None if lab is None else lab[:, :, k_vs].T, zooms[1] / zooms[0]),
            ("axial (cochlea)", img[:, :, k_co].T, None if lab is None else lab[:, :, k_co].T, zooms[1] / zooms[0]),
            (
                "labyrinth close-up",
                img[crop + (k_lab,)].T,
                None if lab is None else lab[crop + (k_lab,)].T,
                zooms[1] / zooms[0],
            ),
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
