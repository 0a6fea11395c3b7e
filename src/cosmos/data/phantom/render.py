"""Rendering: a case's image, label and tissue map on its own grid, as its scanner site acquires it.

Labels are partial-volume (a voxel is VS or cochlea when at least half of it is, measured by sub-voxel
sampling, and intensities are the sub-voxel mean); then per-case contrast jitter, tissue texture, the
site's gamma, PSF, bias field, Rician noise and stored range and dtype.

Deterministic: the same ``seed`` gives byte-identical arrays; each case draws from its own seeded
stream, so adding cases never changes existing ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from cosmos.data.phantom.anatomy import SCALES, Subject, _geometry, _sample_subject, scaled_subject
from cosmos.data.phantom.grids import Grid, _sample_grid
from cosmos.data.phantom.paint import _paint
from cosmos.data.phantom.sites import Site, site_of
from cosmos.data.phantom.style import resolve_style
from cosmos.data.phantom.tissues import _FLUID_LIKE, COCHLEA, N_TISSUES, VS, label_of
from cosmos.errors import CosmosError


class PhantomCase(NamedTuple):
    image: np.ndarray  # float32, arbitrary MR units (integer-valued for integer-stored sites)
    label: np.ndarray  # uint8: 0 background, 1 VS, 2 cochlea (>= half of the voxel covered)
    affine: np.ndarray  # 4x4 voxel -> world (mm)
    tissue: np.ndarray  # uint8 majority tissue class per voxel (AIR..VESSEL); ground truth for tests and QA
    site: str = ""  # scanner site (hrT2: CISS | FIESTA; ceT1: MPRAGE | SPGR; random style: the same, "-r")
    dtype: str = "float32"  # on-disk dtype of this site


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
    if np.issubdtype(np.dtype(site.dtype), np.integer):
        img = np.clip(np.rint(img), 0, np.iinfo(np.dtype(site.dtype)).max).astype(np.float32)  # as stored
    return img, label, tissue


def _setup(
    seed: int,
    case_number: int,
    modality: str,
    scale: str,
    orientation_index: int | None,
    style: str | Mapping[str, Any],
) -> tuple[np.random.Generator, Subject, Grid, Site]:
    """The case's stream, anatomy, grid and site (in the builtin style, or in a dataset style)."""
    if scale not in SCALES:
        raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
    if modality not in ("ceT1", "hrT2"):
        raise CosmosError(f"phantom modality must be ceT1 or hrT2, got {modality!r}")
    st = resolve_style(seed, scale, style)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(case_number), 1 if modality == "ceT1" else 2]))
    sub = _sample_subject(rng, scale)
    if st is not None:
        sub = scaled_subject(sub, **st.anatomy)
    oi = case_number - 1 if orientation_index is None else orientation_index
    if st is None:
        return rng, sub, _sample_grid(rng, scale, modality, sub, oi), site_of(case_number, modality)
    grid = _sample_grid(rng, scale, modality, sub, oi, st.grids[modality])
    return rng, sub, grid, st.sites[modality][int(case_number) % 2]


def make_case(
    seed: int,
    case_number: int,
    modality: str,
    scale: str = "small",
    orientation_index: int | None = None,
    style: str | Mapping[str, Any] = "builtin",
) -> PhantomCase:
    """One phantom case (image, label, affine, tissue, site, dtype); the same arguments give byte-identical arrays.

    ``style``: "builtin", "random" (the dataset style drawn from ``seed``, see
    :func:`cosmos.data.phantom.style.dataset_style`) or such a style dict (e.g. read back from phantom.json).
    """
    rng, sub, grid, site = _setup(seed, case_number, modality, scale, orientation_index, style)
    img, lab, tissue = _render(sub, grid, site, rng)
    return PhantomCase(img, lab, grid.affine, tissue, site.name, site.dtype)


def vestibule_centres(
    seed: int, case_number: int, modality: str, scale: str = "small", style: str | Mapping[str, Any] = "builtin"
) -> list[np.ndarray]:
    """World positions (mm) of the two vestibules of a case, tumour side first (for previews and QA)."""
    sub, _ = case_subject(seed, case_number, modality, scale, style=style)
    v = _geometry(sub)["labyrinth"]["vestibule"]
    return [np.array([s * (sub.fundus[0] + v[0]), sub.fundus[1] + v[1], sub.z0 + v[2]]) for s in (sub.side, -sub.side)]


def case_subject(
    seed: int,
    case_number: int,
    modality: str,
    scale: str = "small",
    orientation_index: int | None = None,
    style: str | Mapping[str, Any] = "builtin",
) -> tuple[Subject, Grid]:
    """The anatomy and grid ``make_case`` renders (for tests and QA: e.g. exact sub-voxel coverage)."""
    _, sub, grid, _ = _setup(seed, case_number, modality, scale, orientation_index, style)
    return sub, grid
