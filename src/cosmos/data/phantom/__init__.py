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
obliquity, and two hrT2 "scanner sites" differ in contrast curve, noise, bias and storage (CISS and
FIESTA; ceT1: MPRAGE and SPGR; see :mod:`~cosmos.data.phantom.sites` for them and for how the
modalities differ). And so a recipe cannot overfit to one rendering either, ``style="random"`` draws
a dataset style from the seed (contrast curves, storage, fields of view, spacing, anatomy
proportions; :mod:`~cosmos.data.phantom.style`).

Deterministic: the same ``seed`` gives byte-identical arrays; each case draws from its own seeded
stream, so adding cases never changes existing ones. Re-running ``make_phantom`` on a finished
directory with the same parameters does no work.

Modules: ``tissues`` (tissue classes, labels), ``sites`` (scanner models and contrast tables),
``anatomy`` (the random subject, its scales and derived shapes), ``paint`` (tissue at world points),
``grids`` (acquisition grids), ``render`` (a case: partial volume, contrast, noise, storage), ``style``
(builtin and random styles), ``files`` (the folder's extra files), ``writer`` (``make_phantom``) and
``preview`` (``write_preview``).
"""

from __future__ import annotations

from cosmos.data.phantom.anatomy import SCALES, Subject, _geometry, _sample_subject, scaled_subject
from cosmos.data.phantom.files import MANIFEST, PREVIEW, TARGET_LABELS_DIR
from cosmos.data.phantom.grids import Grid, _sample_grid
from cosmos.data.phantom.paint import _paint
from cosmos.data.phantom.preview import write_preview
from cosmos.data.phantom.render import PhantomCase, _render, case_subject, make_case, vestibule_centres
from cosmos.data.phantom.sites import SITES, Site, site_of
from cosmos.data.phantom.style import STYLES, contrast_ok, dataset_style
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
    label_of,
)
from cosmos.data.phantom.writer import make_phantom

__all__ = [
    "AIR",
    "BRAIN",
    "BRAINSTEM",
    "CANAL",
    "COCHLEA",
    "CSF",
    "MANIFEST",
    "N_TISSUES",
    "PETROUS",
    "PREVIEW",
    "SCALES",
    "SCALP",
    "SCC",
    "SITES",
    "SKULL",
    "STYLES",
    "TARGET_LABELS_DIR",
    "TISSUE_NAMES",
    "VESSEL",
    "VESTIBULE",
    "VS",
    "Grid",
    "PhantomCase",
    "Site",
    "Subject",
    "_geometry",
    "_paint",
    "_render",
    "_sample_grid",
    "_sample_subject",
    "case_subject",
    "contrast_ok",
    "dataset_style",
    "label_of",
    "make_case",
    "make_phantom",
    "scaled_subject",
    "site_of",
    "vestibule_centres",
    "write_preview",
]
