"""The crossMoDA on-disk layout, the one format every COSMOS stage reads and writes.

2021 layout (the canonical one)::

    DATA/source_training/crossmoda_{i}_ceT1.nii.gz + crossmoda_{i}_Label.nii.gz
    DATA/target_training/crossmoda_{j}_hrT2.nii.gz
    DATA/target_validation/crossmoda_{k}_hrT2.nii.gz
    DATA/target_validation_labels/crossmoda_{k}_Label.nii.gz   (optional; phantom writes it)

Derived folders written by COSMOS stages are flat:

    pseudo/       crossmoda_{i}_hrT2pseudo.nii.gz + crossmoda_{i}_Label.nii.gz   (translator convert)
    predictions/  crossmoda_{k}_Label.nii.gz                                      (segmenter predict)

Later editions' ids (``crossmoda2022_etz_12``) parse too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_DIR = "source_training"
TARGET_DIR = "target_training"
VALIDATION_DIR = "target_validation"
VALIDATION_LABELS_DIR = "target_validation_labels"

MODALITIES = ("ceT1", "hrT2", "hrT2pseudo", "Label", "T2")
LABELS = {0: "background", 1: "VS", 2: "cochlea"}
STRUCTURES = {"VS": 1, "cochlea": 2}
IGNORE_LABEL = 3  # nnU-Net's ignore label must be the highest label value: background 0, VS 1, cochlea 2

_NAME = re.compile(
    r"^(?P<case>crossmoda(?:20\d\d)?_(?:[a-z]+_)?\d+)_(?P<kind>ceT1|hrT2pseudo|hrT2|T2|Label)\.nii(?:\.gz)?$"
)
_BARE = re.compile(r"^(?P<case>crossmoda(?:20\d\d)?_(?:[a-z]+_)?\d+)\.nii(?:\.gz)?$")


def parse_name(filename: str) -> tuple[str, str] | None:
    """``crossmoda_12_ceT1.nii.gz`` -> ("crossmoda_12", "ceT1"); None when the name follows no known form."""
    m = _NAME.match(Path(filename).name)
    if m:
        kind = m.group("kind")
        return m.group("case"), ("hrT2" if kind == "T2" else kind)
    return None


def parse_prediction_name(filename: str) -> str | None:
    """Case id of a prediction named ``crossmoda_{k}_Label.nii.gz`` or ``crossmoda_{k}.nii.gz``."""
    name = Path(filename).name
    parsed = parse_name(name)
    if parsed and parsed[1] == "Label":
        return parsed[0]
    m = _BARE.match(name)
    return m.group("case") if m else None


def case_sort_key(case_id: str):
    nums = re.findall(r"\d+", case_id)
    return (re.sub(r"\d+", "", case_id), int(nums[-1]) if nums else 0, case_id)


def image_name(case_id: str, modality: str) -> str:
    return f"{case_id}_{modality}.nii.gz"


def label_name(case_id: str) -> str:
    return f"{case_id}_Label.nii.gz"


NIFTI_SUFFIXES = (".nii.gz", ".nii")


def find_label(folder: Path, case_id: str) -> Path | None:
    """The case's label in ``folder``, as ``.nii.gz`` or ``.nii`` (both are valid crossMoDA files).

    Why both: ``validate`` accepts uncompressed files, so every stage that pairs images with labels
    must find them too, or a dataset that validates cleanly fails later with "no label".
    """
    for suffix in NIFTI_SUFFIXES:
        p = Path(folder) / f"{case_id}_Label{suffix}"
        if p.is_file():
            return p
    return None


@dataclass
class Case:
    case_id: str
    image: Path
    label: Path | None = None
    modality: str = ""


@dataclass
class CrossModaDataset:
    root: Path
    source: list[Case] = field(default_factory=list)  # ceT1 + Label
    target: list[Case] = field(default_factory=list)  # hrT2, unlabelled
    validation: list[Case] = field(default_factory=list)  # hrT2 (+ Label when given)
    no_foreground: list[str] = field(default_factory=list)  # source labels without VS or cochlea (ingest fills it)

    @property
    def has_validation_labels(self) -> bool:
        return bool(self.validation) and all(c.label is not None for c in self.validation)


def list_cases(folder: Path, modality: str, labels_folder: Path | None = None) -> list[Case]:
    """Cases of one modality in a flat folder, with labels looked up in ``labels_folder`` (or beside)."""
    folder = Path(folder)
    cases: list[Case] = []
    if not folder.is_dir():
        return cases
    lab_dir = Path(labels_folder) if labels_folder is not None else folder
    for p in sorted(folder.iterdir()):
        parsed = parse_name(p.name)
        if parsed is None or parsed[1] != modality:
            continue
        case_id = parsed[0]
        cases.append(Case(case_id, p, find_label(lab_dir, case_id), modality))
    cases.sort(key=lambda c: case_sort_key(c.case_id))
    return cases


def discover(root: str | Path, val_labels: str | Path | None = None) -> CrossModaDataset:
    """Index a crossMoDA 2021 tree without reading any image (see ``validate`` for checks)."""
    root = Path(root)
    vl = Path(val_labels) if val_labels is not None else root / VALIDATION_LABELS_DIR
    return CrossModaDataset(
        root=root,
        source=list_cases(root / SOURCE_DIR, "ceT1"),
        target=list_cases(root / TARGET_DIR, "hrT2"),
        validation=list_cases(root / VALIDATION_DIR, "hrT2", vl if vl.is_dir() else root / VALIDATION_DIR),
    )
