"""Scanner models: the contrast curve, noise, bias field, PSF and storage of each acquisition "site".

Two hrT2 "scanner sites" differ in contrast curve, noise, bias and storage:

* ``CISS`` (int16, scl_slope 1, a few hundred to ~1500) and ``FIESTA`` (float32, other CSF/brain/VS
  ratios, a gamma, more noise, a stronger bias field), alternating by case number so target
  training and validation both hold both sites;
* ceT1 likewise from two sites, ``MPRAGE`` and ``SPGR`` (both int16, different ranges and curves).

The modalities differ the way the real scans do:

* ceT1: brain mid grey, fluid (CSF, canal, labyrinth) dark grey, bone black, the VS and the
  arteries bright (enhancing); grid ~0.6 x 0.6 x 1.4 mm at "small", ~0.4 x 0.4 x 1.4 mm 512^2 at "full".
* hrT2: CSF and labyrinth very bright, the VS intermediate grey outlined by CSF, arteries black
  (flow voids), bone black; grid ~0.5 x 0.5 x 1.0 mm (384 or 448 in-plane at "full").

(The grids themselves live in :mod:`cosmos.data.phantom.grids`; the randomised family of sites, tables
and grids behind ``style="random"`` in :mod:`cosmos.data.phantom.style`.)
"""

from __future__ import annotations

from dataclasses import dataclass

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


def site_of(case_number: int, modality: str) -> Site:
    """The scanner site of a case: alternating by case number, so any two consecutive cases (hence the
    target training and validation sets of the default layout) hold both sites."""
    return SITES[modality][int(case_number) % 2]
