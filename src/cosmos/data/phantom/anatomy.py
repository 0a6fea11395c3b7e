"""Anatomy: one random subject in millimetres, and the shapes derived from it.

Each subject is an analytic anatomy (head, skull, brain, brainstem with pre-pontine and
cerebellopontine-angle cisterns, petrous bones, internal auditory canals, a lobulated vestibular
schwannoma growing from the canal into the cistern, and on each side the membranous labyrinth: a
coiled cochlea, the vestibule and three semicircular canals, plus the basilar artery and an AICA loop
per side). :mod:`cosmos.data.phantom.paint` evaluates it at any world point.

Scales: at ``scale="small"`` a shrunken head fits a ~50 mm field of view (the CPU demo) while the
cochlea keeps a few hundred hrT2 voxels and the VS a few thousand (a ~40-voxel cochlea was never
learned by a small CPU nnU-Net); at ``scale="full"`` the head is life-sized, the VS 4-30 mm across,
the cochlea a few millimetres.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from scipy.interpolate import make_interp_spline

SCALES = ("small", "full")


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


def scaled_subject(sub: Subject, head: float, cochlea: float, vs: float, canal: float) -> Subject:
    """``sub`` with its head, cochlea (size and offset from the fundus), VS (body and lobes) and internal
    auditory canal scaled by these factors (the anatomy proportions of a random-style dataset)."""
    return dataclasses.replace(
        sub,
        head_axes=(sub.head_axes[0] * head, sub.head_axes[1] * head, sub.head_axes[2] * head),
        canal_radius=sub.canal_radius * canal,
        cochlea_offset=(
            sub.cochlea_offset[0] * cochlea,
            sub.cochlea_offset[1] * cochlea,
            sub.cochlea_offset[2] * cochlea,
        ),
        cochlea_radius=sub.cochlea_radius * cochlea,
        cochlea_tube=sub.cochlea_tube * cochlea,
        cochlea_height=sub.cochlea_height * cochlea,
        vs_radius=sub.vs_radius * vs,
        vs_lobes=tuple((dx * vs, dy * vs, dz * vs, r * vs) for dx, dy, dz, r in sub.vs_lobes),
    )


def ear_centre(sub: Subject) -> np.ndarray:
    """World centre (mm) of the box holding both labyrinths and the VS at the level of the canals: where
    an ear-centred field of view is aimed."""
    geo = _geometry(sub)
    lab = geo["labyrinth"]
    co, co_r = lab["cochlea"]
    right = np.concatenate(
        [co + co_r[:, None], co - co_r[:, None], lab["scc"] + sub.scc_tube, lab["scc"] - sub.scc_tube]
    )
    right = right + [sub.fundus[0], sub.fundus[1], sub.z0]
    pts = np.concatenate([right, right * [-1.0, 1.0, 1.0]])
    lo, hi = pts.min(0), pts.max(0)
    vs_lo, vs_hi = geo["vs_body"] - 1.45 * sub.vs_radius, geo["vs_body"] + 1.45 * sub.vs_radius
    centre = 0.5 * (np.minimum(lo, vs_lo) + np.maximum(hi, vs_hi))
    return np.array([centre[0], centre[1], sub.z0])
