"""Tissue classes of the phantom anatomy and the crossMoDA label they carry.

Painted in this order; later classes overwrite earlier ones. VESTIBULE and SCC (semicircular canals)
are labyrinth fluid like the cochlea but carry label 0; VESSEL: arteries.
"""

from __future__ import annotations

import numpy as np

AIR, SCALP, SKULL, BRAIN, CSF, BRAINSTEM, PETROUS, CANAL, COCHLEA, VS, VESTIBULE, SCC, VESSEL = range(13)
N_TISSUES = 13
TISSUE_NAMES = (
    "AIR",
    "SCALP",
    "SKULL",
    "BRAIN",
    "CSF",
    "BRAINSTEM",
    "PETROUS",
    "CANAL",
    "COCHLEA",
    "VS",
    "VESTIBULE",
    "SCC",
    "VESSEL",
)

# Classes whose boundaries are supersampled (fluid, the VS, vessels): what is segmented or next to it.
_FLUID_LIKE = (CSF, CANAL, COCHLEA, VS, VESTIBULE, SCC, VESSEL)


def label_of(tissue: np.ndarray) -> np.ndarray:
    """crossMoDA label (0 background, 1 VS, 2 cochlea) of a tissue map."""
    return np.where(tissue == VS, 1, np.where(tissue == COCHLEA, 2, 0)).astype(np.uint8)
