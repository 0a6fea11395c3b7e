"""Acquisition grids: each volume gets its own spacing, matrix, slab, flips and obliquity.

Grids vary in spacing, flips and obliquity (never one grid per modality), and the slice axis stays
(nearly) the superior-inferior one: ceT1 ~0.6 x 0.6 x 1.4 mm at "small", ~0.4 x 0.4 x 1.4 mm 512^2 at
"full"; hrT2 ~0.5 x 0.5 x 1.0 mm (384 or 448 in-plane at "full"). A random-style dataset
(:mod:`cosmos.data.phantom.style`) passes its own ranges, and may aim an ear-centred field of view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

from cosmos.data.phantom.anatomy import Subject, _rotation, ear_centre


# Grids per (scale, modality): in-plane spacing range, slice spacing range, in-plane size (a range of
# field of view in mm at "small", fixed matrix sizes at "full"), slab thickness range (mm).
class _GridRanges(TypedDict, total=False):
    sp: tuple[float, float]
    dz: tuple[float, float]
    fov: tuple[float, float]  # either a field-of-view range (mm) ...
    n: tuple[int, ...]  # ... or the matrix sizes to choose from
    slab: tuple[float, float]
    centre: Literal["head", "ear"]  # where the field of view is aimed (default: the head, at the canals' level)


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
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray


def _sample_grid(
    rng: np.random.Generator,
    scale: str,
    modality: str,
    sub: Subject,
    orientation_index: int,
    ranges: _GridRanges | None = None,
) -> Grid:
    """A grid for ``sub`` from the ranges of (scale, modality), or from ``ranges`` (a random style's)."""
    g = _GRIDS[(scale, modality)] if ranges is None else ranges
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
    if g.get("centre", "head") == "ear":
        aim = ear_centre(sub)
    else:
        aim = np.array([sub.head_centre[0], sub.head_centre[1], sub.z0])
    centre_world = aim + rng.uniform(-1.5, 1.5, 3)
    centre_vox = (np.array(shape) - 1) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = a3
    affine[:3, 3] = centre_world - a3 @ centre_vox
    # Rounded so a written-then-read affine is the same one we rendered with.
    return Grid(shape, np.round(affine, 6))
