"""Painting: the tissue class of a subject at any world points (so image and label agree on any grid).

Each volume is *rendered* on its own acquisition grid by evaluating the anatomy at sub-voxel sample
points (:mod:`cosmos.data.phantom.render`); these are the point tests it uses. Image and label are
therefore consistent on any grid, including flipped and oblique ones, and nothing is ever resampled.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
from scipy.spatial import cKDTree

from cosmos.data.phantom.anatomy import Subject, _geometry, _unit
from cosmos.data.phantom.tissues import (
    AIR,
    BRAIN,
    BRAINSTEM,
    CANAL,
    COCHLEA,
    CSF,
    PETROUS,
    SCALP,
    SCC,
    SKULL,
    VESSEL,
    VESTIBULE,
    VS,
)


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
