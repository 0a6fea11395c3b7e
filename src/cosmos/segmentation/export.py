"""Export COSMOS cases as an nnU-Net v2 raw dataset (dataset.json, imagesTr, labelsTr, cases.json).

Why case ids carry their kind: a student round mixes labelled pseudo-hrT2 (translated ceT1 with
the manual source labels) and real hrT2 with teacher pseudo-labels. Both come from files named
``crossmoda_{n}_*``; prefixing ``pseudo_`` / ``real_`` keeps them distinct inside nnU-Net and makes
every training case traceable back to its source file through ``cases.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cosmos.data import layout
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

CHANNEL_NAMES = {"0": "hrT2"}
NNUNET_LABELS = {"background": 0, "VS": 1, "cochlea": 2}
FILE_ENDING = ".nii.gz"
KIND_PSEUDO = "pseudo"  # translated ceT1 (pseudo-hrT2) + manual source label
KIND_REAL = "real"  # real hrT2 + teacher pseudo-label


@dataclass
class ExportCase:
    """One nnU-Net training case and where it came from."""

    nnunet_id: str
    kind: str
    case_id: str
    image: str
    label: str


def labels_with_ignore(ignore_label: int | None) -> dict[str, int]:
    """dataset.json ``labels``: ours, plus ``"ignore": ignore_label`` when given (must be the highest)."""
    labels = dict(NNUNET_LABELS)
    if ignore_label is not None:
        if int(ignore_label) <= max(labels.values()):
            raise CosmosError(f"ignore label {ignore_label} must be above every real label {sorted(labels.values())}")
        labels["ignore"] = int(ignore_label)
    return labels


def nnunet_case_id(kind: str, case_id: str) -> str:
    """``("pseudo", "crossmoda_1")`` -> ``"pseudo_crossmoda_1"``."""
    return f"{kind}_{case_id}"


def dataset_name(dataset_id: int, round_index: int) -> str:
    return f"Dataset{dataset_id:03d}_CosmosRound{round_index}"


def collect_pseudo_cases(pseudo_dir: str | Path) -> list[ExportCase]:
    """Labelled pseudo-hrT2 cases from the translator's flat output folder."""
    pseudo_dir = Path(pseudo_dir)
    if not pseudo_dir.is_dir():
        raise CosmosError(f"{pseudo_dir}: pseudo-hrT2 folder not found")
    cases = layout.list_cases(pseudo_dir, "hrT2pseudo")
    if not cases:
        raise CosmosError(
            f"{pseudo_dir}: no crossmoda_*_hrT2pseudo.nii.gz images (expected the output of `cosmos translator convert`)"
        )
    missing = [c.image.name for c in cases if c.label is None]
    if missing:
        raise CosmosError(
            f"{pseudo_dir}: pseudo-hrT2 image(s) without a crossmoda_*_Label.nii.gz: {', '.join(missing)}"
        )
    return [
        ExportCase(nnunet_case_id(KIND_PSEUDO, c.case_id), KIND_PSEUDO, c.case_id, str(c.image), str(c.label))
        for c in cases
    ]


def _target_folder(target_images_dir: Path) -> Path:
    """Accept a flat folder of *_hrT2 images or a crossMoDA root (uses its target_training/)."""
    nested = target_images_dir / layout.TARGET_DIR
    if not layout.list_cases(target_images_dir, "hrT2") and nested.is_dir():
        return nested
    return target_images_dir


def collect_real_cases(target_images_dir: str | Path, pseudo_labels_dir: str | Path) -> list[ExportCase]:
    """Real hrT2 images that have a kept teacher pseudo-label (label files decide which cases)."""
    target_images_dir, pseudo_labels_dir = Path(target_images_dir), Path(pseudo_labels_dir)
    if not target_images_dir.is_dir():
        raise CosmosError(f"{target_images_dir}: target hrT2 folder not found")
    if not pseudo_labels_dir.is_dir():
        raise CosmosError(f"{pseudo_labels_dir}: pseudo-label folder not found")
    folder = _target_folder(target_images_dir)
    images = {c.case_id: c.image for c in layout.list_cases(folder, "hrT2")}
    labels = {}
    for p in sorted(pseudo_labels_dir.iterdir()):
        case = layout.parse_prediction_name(p.name)
        if case is not None:
            labels[case] = p
    orphans = sorted(set(labels) - set(images), key=layout.case_sort_key)
    if orphans:
        raise CosmosError(
            f"{pseudo_labels_dir}: pseudo-label(s) without an hrT2 image in {folder}: {', '.join(orphans)}"
        )
    return [
        ExportCase(nnunet_case_id(KIND_REAL, cid), KIND_REAL, cid, str(images[cid]), str(labels[cid]))
        for cid in sorted(labels, key=layout.case_sort_key)
    ]


def _copy_nifti(src: Path, dst: Path) -> None:
    """Byte copy for .nii.gz (header kept exactly); re-save .nii as .nii.gz (nnU-Net wants one ending)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    if src.name.endswith(".nii.gz"):
        shutil.copyfile(src, tmp)
    else:
        import nibabel as nib

        nib.save(nib.load(str(src)), str(tmp.with_name(tmp.name + ".nii.gz")))
        tmp.with_name(tmp.name + ".nii.gz").replace(tmp)
    tmp.replace(dst)


def export_raw_dataset(
    cases: list[ExportCase], raw_root: str | Path, dataset_id: int, round_index: int, ignore_label: int | None = None
) -> Path:
    """Write ``raw_root/DatasetXXX_CosmosRoundK`` in nnU-Net v2 raw format; returns that folder.

    ``ignore_label`` (the pixel filter's value, 3): declared in dataset.json as ``"ignore"`` so that
    nnU-Net excludes those voxels of the real cases' pseudo-labels from Dice and CE (nnU-Net v2's
    ignore label must be the highest label value). Only pseudo-labels may carry it: the manual labels
    of the pseudo-hrT2 cases never do (``planning.precheck_raw_dataset`` checks).
    """
    if not cases:
        raise CosmosError("no training cases to export")
    ids = [c.nnunet_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CosmosError(f"duplicate nnU-Net case ids: {', '.join(dupes)}")
    folder = Path(raw_root) / dataset_name(dataset_id, round_index)
    if folder.exists():
        shutil.rmtree(folder)  # a half-written export from a killed run
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for c in cases:
        _copy_nifti(Path(c.image), folder / "imagesTr" / f"{c.nnunet_id}_0000{FILE_ENDING}")
        _copy_nifti(Path(c.label), folder / "labelsTr" / f"{c.nnunet_id}{FILE_ENDING}")
    n_pseudo = sum(c.kind == KIND_PSEUDO for c in cases)
    dataset_json = {
        "name": dataset_name(dataset_id, round_index),
        "description": f"COSMOS round {round_index}: {n_pseudo} pseudo-hrT2 (+source labels), "
        f"{len(cases) - n_pseudo} real hrT2 (+teacher pseudo-labels)",
        "channel_names": CHANNEL_NAMES,
        "labels": labels_with_ignore(ignore_label),
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    (folder / "cases.json").write_text(json.dumps({c.nnunet_id: asdict(c) for c in cases}, indent=2))
    log.info("exported %d cases (%d pseudo, %d real) to %s", len(cases), n_pseudo, len(cases) - n_pseudo, folder)
    return folder
