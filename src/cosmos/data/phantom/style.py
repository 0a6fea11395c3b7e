"""Phantom styles: ``"builtin"`` (the fixed sites, grids and anatomy ranges) or ``"random"``.

A recipe tuned on one rendering can overfit to it (its contrast curves, its spacing, its field of
view, its anatomy proportions). ``style="random"`` draws a *dataset style* from the dataset seed, on
its own stream (``default_rng([seed, 7919])``, so the per-case streams are untouched), and renders
every case of that dataset with it:

* contrast per site (two per modality, alternating by case number as in the builtin style): each
  tissue mean of the builtin table times a factor in [0.75, 1.3], clipped to [0, 1], redrawn until the
  physics holds (:func:`contrast_ok`): fluid compartments within 1.3x of each other; on hrT2 CSF and
  labyrinth fluid the brightest, bone and vessels dark, the VS between brain and CSF, the cochlea no
  brighter than CSF nor clearly brighter than any other fluid; on ceT1 the enhancing VS the brightest
  structure near the ear, fluid darker than brain, bone the darkest; then a gamma in [0.8, 1.4], Rician
  noise, bias field, PSF and the stored intensity range and dtype (int16, float32 or uint16);
* the field of view per modality: whole-head or ear-centred;
* in-plane spacing from 0.4 to 1.0 mm, slice spacing (ceT1 0.8-2.0 mm, hrT2 0.5-1.5 mm) and slab;
* anatomy proportions: head, cochlea, VS and internal auditory canal size factors.

Compute stays bounded: a grid is redrawn while its largest case would exceed the in-plane matrix cap
(320 at "small", 512 at "full") or a voxel budget about that of the builtin style's largest grids; and
the cochlea stays learnable: redrawn while the smallest cochlea would cover fewer than 150 hrT2 voxels
(60 ceT1) per side at "small" (100 and 30 at "full"). :func:`dataset_style` returns every drawn value;
``make_phantom`` records it in ``phantom.json``.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos.data.phantom.anatomy import SCALES
from cosmos.data.phantom.grids import _GridRanges
from cosmos.data.phantom.sites import SITES, Site
from cosmos.data.phantom.tissues import (
    AIR,
    BRAIN,
    BRAINSTEM,
    CANAL,
    COCHLEA,
    CSF,
    N_TISSUES,
    PETROUS,
    SCALP,
    SCC,
    SKULL,
    TISSUE_NAMES,
    VESSEL,
    VESTIBULE,
    VS,
)
from cosmos.errors import CosmosError

STYLES = ("builtin", "random")
STYLE_VERSION = 1
_STREAM = 7919  # the style's own stream: default_rng([seed, 7919])
_MODALITIES = ("ceT1", "hrT2")

# Site ranges.
_TABLE_FACTOR = (0.75, 1.3)  # per tissue mean
_GAMMA = (0.8, 1.4)
_NOISE_LOW = (0.012, 0.04)  # Rician sigma range of a site: (low, low + width)
_NOISE_WIDTH = (0.004, 0.015)
_BIAS = (0.04, 0.2)
_BLUR = (0.3, 0.55)
_DTYPES = ("int16", "float32", "uint16")
_STORED_LOW = {True: (150.0, 3000.0), False: (1.0, 2000.0)}  # integer dtype? -> low end (log-uniform)
_STORED_RATIO = (1.2, 1.8)  # high end / low end

# Anatomy factors per scale ("small": the head at least as large as the builtin one, whose labyrinths
# already reach its skull).
_ANATOMY_FACTORS = {
    "small": {"head": (1.0, 1.12), "cochlea": (0.85, 1.15), "vs": (0.8, 1.15), "canal": (0.85, 1.2)},
    "full": {"head": (0.9, 1.1), "cochlea": (0.85, 1.15), "vs": (0.75, 1.1), "canal": (0.85, 1.2)},
}

# Grid ranges. Whole-head fields of view scale with the head factor; ear-centred ones hold both
# labyrinths (|x| <= ~20 mm at "small", ~40 mm at "full") and the VS.
_SP = (0.4, 1.0)
_SP_JITTER = 0.04  # per-case in-plane spacing: (sp, sp + 0.04)
_DZ = {"ceT1": (0.8, 2.0), "hrT2": (0.5, 1.5)}
_DZ_JITTER = 1.1  # per-case slice spacing: (dz, dz * 1.1)
_FOV_MODES = ("whole_head", "ear")
_FOV = {
    ("small", "whole_head"): (48.0, 51.0),
    ("small", "ear"): (44.0, 47.0),
    ("full", "whole_head"): (200.0, 230.0),
    ("full", "ear"): (92.0, 120.0),
}
_FOV_JITTER = 1.04
_SLAB = {
    ("small", "ceT1", "whole_head"): (36.0, 46.0),
    ("small", "ceT1", "ear"): (28.0, 36.0),
    ("small", "hrT2", "whole_head"): (28.0, 36.0),
    ("small", "hrT2", "ear"): (26.0, 32.0),
    ("full", "ceT1", "whole_head"): (150.0, 180.0),
    ("full", "ceT1", "ear"): (50.0, 80.0),
    ("full", "hrT2", "whole_head"): (56.0, 80.0),
    ("full", "hrT2", "ear"): (40.0, 60.0),
}
_SLAB_JITTER = 1.08
_MAX_MATRIX = {"small": 320, "full": 512}
# Voxel budget of a case (builtin: "small" ceT1 <= ~320k and hrT2 <= ~540k; "full" ceT1 ~39M, hrT2 <= 20M).
_MAX_VOXELS = {
    ("small", "ceT1"): 350_000,
    ("small", "hrT2"): 500_000,
    ("full", "ceT1"): 40_000_000,
    ("full", "hrT2"): 21_000_000,
}
# Smallest cochlea (one side, mm^3) at cochlea factor 1: the builtin anatomy's, sampled at 0.1 mm over
# 40 subjects (69 at "small", 49 at "full"), less a margin. It scales with the cube of the factor.
_COCHLEA_MM3 = {"small": 64.0, "full": 45.0}
_COCHLEA_FLOOR = {("small", "hrT2"): 150, ("small", "ceT1"): 60, ("full", "hrT2"): 100, ("full", "ceT1"): 30}
_MAX_TRIES = 10_000

_FLUID = (CSF, CANAL, VESTIBULE, SCC)


def contrast_ok(modality: str, table: Mapping[int, float]) -> bool:
    """Whether a tissue table keeps the physics of its modality (with margins for the per-case jitter).

    Both: fluid (CSF, canal, vestibule, semicircular canals) is one fluid, within a factor 1.3 of itself.
    hrT2: fluid brighter than everything else (1.3x brain, brainstem, VS and scalp); the cochlea no
    brighter than CSF and every fluid at least 0.9x the cochlea (intensity cannot single it out), the
    cochlea 1.3x the VS; the VS 1.2x brain and brainstem, CSF 1.5x the VS; bone and vessels (flow voids) at
    most 0.12 and half of brain. ceT1: the enhancing VS 1.4x brain and brainstem and brighter than fluid
    and bone; vessels 1.4x brain; fluid and cochlea (within 1.3x of each other) at most brain / 1.5; bone
    (skull, petrous) at most 0.1 and half of the fluid.
    """
    t = {k: float(v) for k, v in table.items()}
    if any(not 0.0 <= t[k] <= 1.0 for k in range(N_TISSUES)) or t[AIR] != 0.0:
        return False
    parenchyma = max(t[BRAIN], t[BRAINSTEM])
    fluid = [t[k] for k in _FLUID]
    if modality == "hrT2":
        dark = max(t[SKULL], t[PETROUS], t[VESSEL])
        return (
            max(fluid) <= 1.3 * min(fluid)
            and min(fluid) >= 1.3 * max(parenchyma, t[VS], t[SCALP])
            and t[COCHLEA] <= t[CSF]
            and min(fluid) >= 0.9 * t[COCHLEA]
            and t[COCHLEA] >= 1.3 * t[VS]
            and t[VS] >= 1.2 * parenchyma
            and t[CSF] >= 1.5 * t[VS]
            and dark <= min(0.12, 0.5 * min(t[BRAIN], t[BRAINSTEM]))
        )
    if modality == "ceT1":
        fluid.append(t[COCHLEA])
        bone = max(t[SKULL], t[PETROUS])
        return (
            max(fluid) <= 1.3 * min(fluid)
            and t[VS] >= 1.4 * parenchyma
            and t[VS] > max(fluid)
            and t[VESSEL] >= 1.4 * t[BRAIN]
            and max(fluid) * 1.5 <= min(t[BRAIN], t[BRAINSTEM])
            and bone <= min(0.1, 0.5 * min(fluid))
        )
    raise CosmosError(f"phantom modality must be ceT1 or hrT2, got {modality!r}")


def _r(v: float, nd: int = 4) -> float:
    return round(float(v), nd)


def _draw_site(rng: np.random.Generator, base: Site, modality: str) -> dict[str, Any]:
    u = rng.uniform
    for _ in range(_MAX_TRIES):
        f = u(*_TABLE_FACTOR, size=N_TISSUES)
        table = {k: _r(min(1.0, base.table[k] * f[k])) for k in range(N_TISSUES)}
        if contrast_ok(modality, table):
            break
    else:  # pragma: no cover - the acceptance rate is far above 1 / _MAX_TRIES
        raise AssertionError(f"no valid {modality} table drawn around {base.name}")
    noise_lo = _r(u(*_NOISE_LOW))
    dtype = _DTYPES[int(rng.integers(len(_DTYPES)))]
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    low, high = _STORED_LOW[integer]
    lo = math.exp(u(math.log(low), math.log(high)))
    hi = lo * u(*_STORED_RATIO)
    stored = [float(round(lo)), float(round(hi))] if integer else [_r(lo, 3), _r(hi, 3)]
    return {
        "name": f"{base.name}-r",
        "table": {TISSUE_NAMES[k]: v for k, v in table.items()},
        "gamma": _r(u(*_GAMMA), 3),
        "noise": [noise_lo, _r(noise_lo + u(*_NOISE_WIDTH))],
        "bias": _r(u(*_BIAS)),
        "blur": _r(u(*_BLUR)),
        "scale": stored,
        "dtype": dtype,
    }


def _draw_grid(rng: np.random.Generator, scale: str, modality: str, anatomy: Mapping[str, float]) -> dict[str, Any]:
    u = rng.uniform
    mode = _FOV_MODES[int(rng.integers(len(_FOV_MODES)))]
    fov_range = _FOV[(scale, mode)]
    fov_factor = anatomy["head"] if mode == "whole_head" else 1.0
    slab_range = _SLAB[(scale, modality, mode)]
    dz_range = _DZ[modality]
    cochlea_mm3 = _COCHLEA_MM3[scale] * anatomy["cochlea"] ** 3
    floor = _COCHLEA_FLOOR[(scale, modality)]
    for _ in range(_MAX_TRIES):
        fov = _r(u(*fov_range) * fov_factor, 2)
        sp = _r(u(_SP[0], _SP[1] - _SP_JITTER), 3)
        dz = _r(u(dz_range[0], dz_range[1] / _DZ_JITTER), 3)
        slab = _r(u(*slab_range), 2)
        fov_hi, sp_hi, dz_hi, slab_hi = (
            _r(fov * _FOV_JITTER, 2),
            _r(sp + _SP_JITTER, 3),
            _r(dz * _DZ_JITTER, 3),
            _r(slab * _SLAB_JITTER, 2),
        )
        n = int(fov_hi // sp)
        voxels = n * n * round(slab_hi / dz)
        cochlea = cochlea_mm3 / (sp_hi * sp_hi * dz_hi)
        if n <= _MAX_MATRIX[scale] and voxels <= _MAX_VOXELS[(scale, modality)] and cochlea >= 1.1 * floor:
            break
    else:  # pragma: no cover
        raise AssertionError(f"no {scale} {modality} grid within budget")
    return {
        "fov_mode": mode,
        "fov": [fov, fov_hi],
        "sp": [sp, sp_hi],
        "dz": [dz, dz_hi],
        "slab": [slab, slab_hi],
        "max_matrix": n,
        "max_voxels": voxels,
        "min_cochlea_voxels": int(cochlea),
    }


@functools.lru_cache(maxsize=64)
def _dataset_style(seed: int, scale: str) -> dict[str, Any]:
    rng = np.random.default_rng([int(seed), _STREAM])
    anatomy = {k: _r(rng.uniform(*v)) for k, v in _ANATOMY_FACTORS[scale].items()}
    grids = {m: _draw_grid(rng, scale, m, anatomy) for m in _MODALITIES}
    sites = {m: [_draw_site(rng, base, m) for base in SITES[m]] for m in _MODALITIES}
    return {
        "name": "random",
        "version": STYLE_VERSION,
        "seed": int(seed),
        "scale": scale,
        "anatomy": anatomy,
        "grids": grids,
        "sites": sites,
    }


def dataset_style(seed: int, scale: str = "small") -> dict[str, Any]:
    """Every value the random style draws for the dataset ``seed`` at ``scale`` (JSON-ready; what
    ``make_phantom(style="random")`` records under "style" in phantom.json): anatomy factors, per modality
    the grid ranges (field-of-view mode and range, spacing, slice spacing, slab; the worst-case matrix,
    voxel count and cochlea voxels they allow) and the two sites (tissue table, gamma, noise, bias, blur,
    stored range, dtype)."""
    if scale not in SCALES:
        raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
    return copy.deepcopy(_dataset_style(int(seed), scale))


@dataclass(frozen=True)
class _Style:
    anatomy: dict[str, float]
    grids: dict[str, _GridRanges]
    sites: dict[str, tuple[Site, ...]]


def _parse(style: Mapping[str, Any]) -> _Style:
    try:
        grids: dict[str, _GridRanges] = {}
        for m in _MODALITIES:
            g = style["grids"][m]
            grids[m] = {
                "sp": (float(g["sp"][0]), float(g["sp"][1])),
                "dz": (float(g["dz"][0]), float(g["dz"][1])),
                "fov": (float(g["fov"][0]), float(g["fov"][1])),
                "slab": (float(g["slab"][0]), float(g["slab"][1])),
                "centre": "ear" if g["fov_mode"] == "ear" else "head",
            }
        sites = {
            m: tuple(
                Site(
                    str(s["name"]),
                    {k: float(s["table"][name]) for k, name in enumerate(TISSUE_NAMES)},
                    float(s["gamma"]),
                    (float(s["noise"][0]), float(s["noise"][1])),
                    float(s["bias"]),
                    float(s["blur"]),
                    (float(s["scale"][0]), float(s["scale"][1])),
                    str(s["dtype"]),
                )
                for s in style["sites"][m]
            )
            for m in _MODALITIES
        }
        anatomy = {k: float(style["anatomy"][k]) for k in ("head", "cochlea", "vs", "canal")}
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CosmosError(f"not a phantom style: {exc!r}") from exc
    return _Style(anatomy, grids, sites)


@functools.lru_cache(maxsize=64)
def _random_style(seed: int, scale: str) -> _Style:
    return _parse(_dataset_style(seed, scale))


def resolve_style(seed: int, scale: str, style: str | Mapping[str, Any]) -> _Style | None:
    """None for the builtin style; the parsed style for "random" (drawn from ``seed``) or a style dict."""
    if isinstance(style, Mapping):
        return _parse(style)
    if style == "builtin":
        return None
    if style == "random":
        if scale not in SCALES:
            raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
        return _random_style(int(seed), scale)
    raise CosmosError(f"phantom style must be one of {STYLES}, got {style!r}")
