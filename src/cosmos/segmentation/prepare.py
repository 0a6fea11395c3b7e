"""prepare_round: export + plan + preprocess into ONE self-contained directory (one KFP artifact).

Layout of the prepared directory::

    prepared/
      cosmos_prepared.json                       what this is (round, dataset, plans, configuration, inputs digest)
      nnUNet_raw/DatasetXXX_CosmosRoundK/        dataset.json, imagesTr/, labelsTr/, cases.json
      nnUNet_preprocessed/DatasetXXX_CosmosRoundK/
          nnUNetPlans.json                       nnU-Net's own plan (untouched)
          CosmosPlans.json                       + <base>_cosmos configuration (our budget overrides)
          splits_final.json                      created here, so fold training never writes into this dir
          dataset.json, dataset_fingerprint.json, nnUNetPlans_3d_fullres/, gt_segmentations/

Every fold task gets the same prepared directory read-only; ``train_fold`` points
``nnUNet_preprocessed`` at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np

from cosmos.config import CosmosConfig
from cosmos.data.layout import IGNORE_LABEL
from cosmos.errors import CosmosError
from cosmos.segmentation import environment, export, planning

log = logging.getLogger(__name__)

MANIFEST = "cosmos_prepared.json"
TRAINING_SET_FILE = "training_set.json"  # per-case content digests (compare rounds' training sets)
RAW_DIR = "nnUNet_raw"
PREPROCESSED_DIR = "nnUNet_preprocessed"
DATASET_ID_BASE = 700  # DatasetXXX ids 700..799: round k -> 700 + k (each prepared dir is its own nnU-Net world)


@dataclass
class PreparedRound:
    """The manifest of a prepared directory (``cosmos_prepared.json``)."""

    root: Path
    round_index: int
    dataset_id: int
    dataset_name: str
    plans_identifier: str
    configuration: str  # the configuration to train (<base>_cosmos in CosmosPlans)
    base_configuration: str
    num_cases: int
    num_pseudo: int
    num_real: int
    inputs_digest: str
    plan_digest: str
    ignore_label: int | None = None  # declared in dataset.json (pixel-filtered pseudo-labels)
    training_digest: str = ""  # content digest of the training set (see training_set_digests)

    @property
    def raw_root(self) -> Path:
        return self.root / RAW_DIR

    @property
    def preprocessed_root(self) -> Path:
        return self.root / PREPROCESSED_DIR

    @property
    def preprocessed_dataset(self) -> Path:
        return self.preprocessed_root / self.dataset_name

    @property
    def plans_file(self) -> Path:
        return self.preprocessed_dataset / f"{self.plans_identifier}.json"

    def plans(self) -> dict:
        return json.loads(self.plans_file.read_text())

    def dataset_json(self) -> dict:
        return json.loads((self.preprocessed_dataset / "dataset.json").read_text())

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("root")
        return json.dumps(d, indent=2)


def load_prepared(prepared_dir: str | Path) -> PreparedRound:
    """Read a prepared directory's manifest; CosmosError when it is not one."""
    root = Path(prepared_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise CosmosError(f"{root}: not a prepared nnU-Net round ({MANIFEST} missing; run prepare_round first)")
    try:
        data = json.loads(path.read_text())
        prepared = PreparedRound(root=root, **data)
    except (ValueError, TypeError) as exc:
        raise CosmosError(f"{path}: unreadable manifest ({exc})") from None
    if not prepared.plans_file.is_file():
        raise CosmosError(f"{root}: plans file {prepared.plans_file} missing (incomplete prepare?)")
    return prepared


def write_header(prepared_dir: str | Path, header_dir: str | Path) -> Path:
    """The prepared round without its images: its top-level files (manifest, training-set digests, alerts) and the
    nnU-Net plan files (``nnUNet_preprocessed/<dataset>/*.json``), at the same relative paths.

    Why: on a cluster every task downloads its input artifacts whole. The round's MLflow run and the next round's
    plan and replay check read only these files, so they take the header (kilobytes) instead of the dataset (tens
    of GB at crossMoDA scale). :func:`load_prepared` reads a header like the full directory."""
    src, dst = Path(prepared_dir), Path(header_dir)
    prepared = load_prepared(src)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != MANIFEST:
            shutil.copy2(f, dst / f.name)
    plans_dst = dst / PREPROCESSED_DIR / prepared.dataset_name
    plans_dst.mkdir(parents=True, exist_ok=True)
    for f in prepared.preprocessed_dataset.glob("*.json"):
        shutil.copy2(f, plans_dst / f.name)
    shutil.copy2(src / MANIFEST, dst / MANIFEST)  # last, as in prepare_round: its presence means "complete"
    return dst


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _label_digest(path: Path) -> str:
    """Digest of a label's voxels and grid, not of its gzip bytes (a re-written identical label keeps it)."""
    import nibabel as nib

    img = cast(nib.Nifti1Image, nib.load(str(path)))  # .nii(.gz): Nifti1Image or its subclass Nifti2Image
    arr = np.ascontiguousarray(np.asanyarray(img.dataobj).astype(np.uint8))
    h = hashlib.sha256(arr.tobytes())
    h.update(repr((arr.shape, np.round(img.affine, 5).tolist())).encode())
    return h.hexdigest()[:16]


def training_set_digests(prepared_dir: str | Path) -> dict:
    """Per training case ``{nnunet_id: {"image": digest, "label": digest}}`` plus ``"labels"``
    (dataset.json's label dict) -- what decides what a fold learns. Read from
    ``training_set.json`` (written by prepare_round), else computed from the raw export."""
    root = Path(prepared_dir)
    path = root / TRAINING_SET_FILE
    if path.is_file():
        return json.loads(path.read_text())
    raws = sorted((root / RAW_DIR).glob("Dataset*"))
    if not raws:
        raise CosmosError(f"{root}: no nnU-Net raw dataset (not a prepared round)")
    return _compute_training_set(raws[0])


def _compute_training_set(raw_folder: Path) -> dict:
    cases = {}
    for lab in sorted((raw_folder / "labelsTr").glob(f"*{export.FILE_ENDING}")):
        nn_id = lab.name[: -len(export.FILE_ENDING)]
        img = raw_folder / "imagesTr" / f"{nn_id}_0000{export.FILE_ENDING}"
        cases[nn_id] = {"image": _file_digest(img), "label": _label_digest(lab)}
    labels = json.loads((raw_folder / "dataset.json").read_text()).get("labels", {})
    return {"cases": cases, "labels": labels}


def _summary_digest(training_set: dict) -> str:
    return hashlib.sha256(json.dumps(training_set, sort_keys=True).encode()).hexdigest()[:16]


def _inputs_digest(
    cases: list[export.ExportCase], cfg: CosmosConfig, ignore_label: int | None = None, plans_from: str | None = None
) -> str:
    """Changes when any input file, the case list or a planning-relevant setting changes."""
    h = hashlib.sha256()
    if ignore_label is not None:
        h.update(f"ignore={ignore_label}\n".encode())
    if plans_from is not None:
        h.update(f"plans_from={plans_from}\n".encode())
    for c in cases:
        for p in (Path(c.image), Path(c.label)):
            st = p.stat()
            h.update(f"{c.nnunet_id}|{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    s = cfg.segmentation
    h.update(
        json.dumps(
            [
                s.configuration,
                s.num_folds,
                s.features_base,
                s.features_max,
                s.batch_size,
                s.patch_size,
                s.patch_size_max,
                s.target_spacing,
                s.num_stages,
            ]
            + ([s.min_patch_mm] if s.min_patch_mm is not None else [])
        ).encode()
    )
    return h.hexdigest()[:16]


def _preprocess_with_plans(
    dataset_id: int, raw_folder: Path, pre_folder: Path, name: str, source: PreparedRound, num_processes: int
) -> tuple[dict, str]:
    """Fingerprint + preprocess this dataset with ``source``'s nnU-Net plans (no planning); returns
    (CosmosPlans, configuration) -- the source's, retargeted to this dataset.

    What ``nnUNetv2_move_plans_between_datasets`` does (plans' ``dataset_name`` replaced; both
    datasets use the same SimpleITK reader), then nnU-Net's own preprocessing. Must run inside
    ``environment.nnunet_env(raw=..., preprocessed=..., n_proc_da=None)``.
    """
    import contextlib
    import io

    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset

    n = max(1, int(num_processes))
    planning.verify_integrity(raw_folder, n)
    nn_plans = json.loads((source.preprocessed_dataset / f"{planning.NNUNET_PLANS}.json").read_text())
    nn_plans["dataset_name"] = name
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints whole plans dicts
        extract_fingerprint_dataset(
            dataset_id,
            num_processes=n,
            check_dataset_integrity=False,
            clean=True,
            verbose=False,
            show_progress_bar=False,
        )
        (pre_folder / f"{planning.NNUNET_PLANS}.json").write_text(json.dumps(nn_plans, indent=2))
        shutil.copyfile(raw_folder / "dataset.json", pre_folder / "dataset.json")  # as nnU-Net's planner does
        preprocess_dataset(
            dataset_id, planning.NNUNET_PLANS, [source.base_configuration], [n], verbose=False, show_progress_bar=False
        )
    plans = source.plans()
    plans["dataset_name"] = name
    return plans, source.configuration


def prepare_round(
    pseudo_dir: str | Path,
    out_dir: str | Path,
    cfg: CosmosConfig,
    round_index: int = 0,
    target_images_dir: str | Path | None = None,
    pseudo_labels_dir: str | Path | None = None,
    plans_from: str | Path | None = None,
) -> Path:
    """nnU-Net raw export + plan + preprocess for one COSMOS round; returns ``out_dir``.

    Round 0 (teacher): labelled pseudo-hrT2 only. Round k > 0 (student): pseudo-hrT2 plus the real
    hrT2 images from ``target_images_dir`` whose kept pseudo-labels are in ``pseudo_labels_dir``.
    With ``selftraining.filter=pixel`` a student's dataset.json declares nnU-Net's ignore label
    (the pixel filter marks unsure voxels with it). Resumable: an existing prepared dir built from
    the same inputs is returned at once.

    ``plans_from``: another prepared round (normally the teacher's) whose nnU-Net plans -- target
    spacing, patch, network -- are reused instead of planning this dataset anew. Why: adding real
    hrT2 (another voxel grid) changes nnU-Net's plan, and a student warm-started from its teacher
    (``selftraining.student_init=teacher``) needs the teacher's network exactly.
    """
    if not 0 <= round_index < 100:
        raise CosmosError(f"round_index must be within 0..99, got {round_index}")
    out = Path(out_dir)
    cases = export.collect_pseudo_cases(pseudo_dir)
    if round_index > 0 or pseudo_labels_dir is not None:
        if (target_images_dir is None) != (pseudo_labels_dir is None):
            raise CosmosError("a student round needs both target_images_dir and pseudo_labels_dir")
        if target_images_dir is not None:
            assert pseudo_labels_dir is not None  # both or neither, checked just above
            real = export.collect_real_cases(target_images_dir, pseudo_labels_dir)
            if not real:
                log.warning(
                    "round %d: no pseudo-labelled real hrT2 cases in %s; the student trains on pseudo-hrT2 "
                    "alone (same data as the teacher)",
                    round_index,
                    pseudo_labels_dir,
                )
            cases += real
    has_real = any(c.kind == export.KIND_REAL for c in cases)
    ignore_label = IGNORE_LABEL if cfg.selftraining.filter == "pixel" and has_real else None
    source = load_prepared(plans_from) if plans_from is not None else None
    if source is not None and source.base_configuration != cfg.segmentation.configuration:
        raise CosmosError(
            f"{plans_from}: planned for {source.base_configuration}, not segmentation.configuration="
            f"{cfg.segmentation.configuration}"
        )
    digest = _inputs_digest(cases, cfg, ignore_label, f"{source.plan_digest}" if source is not None else None)
    if (out / MANIFEST).is_file():
        try:
            existing = load_prepared(out)
            if existing.inputs_digest == digest and existing.round_index == round_index:
                log.info("round %d already prepared in %s (inputs unchanged); skipping", round_index, out)
                return out
        except CosmosError:
            pass
        log.info("re-preparing %s: inputs or settings changed", out)
    for sub in (MANIFEST, TRAINING_SET_FILE, RAW_DIR, PREPROCESSED_DIR):
        p = out / sub
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)

    dataset_id = DATASET_ID_BASE + round_index
    seg = cfg.segmentation
    raw_folder = export.export_raw_dataset(cases, out / RAW_DIR, dataset_id, round_index, ignore_label=ignore_label)
    cases_meta = json.loads((raw_folder / "cases.json").read_text())
    empty = [cases_meta[nn_id]["case_id"] for nn_id in planning.precheck_raw_dataset(raw_folder, cases_meta)]
    training_set = _compute_training_set(raw_folder)
    (out / TRAINING_SET_FILE).write_text(json.dumps(training_set, indent=2))
    name = export.dataset_name(dataset_id, round_index)
    pre_folder = out / PREPROCESSED_DIR / name
    pre_folder.mkdir(parents=True, exist_ok=True)
    with environment.nnunet_env(
        raw=out / RAW_DIR, preprocessed=out / PREPROCESSED_DIR, n_proc_da=None, num_processes=seg.num_processes
    ):
        if source is None:
            nn_plans = planning.plan_and_preprocess(dataset_id, raw_folder, pre_folder, seg)
        else:
            plans, configuration = _preprocess_with_plans(
                dataset_id, raw_folder, pre_folder, name, source, seg.num_processes
            )
    if source is None:
        plans, configuration = planning.cosmos_plans(nn_plans, seg)
    else:
        log.info("round %d uses the plans of %s (round %d)", round_index, source.root, source.round_index)
    plans_text = json.dumps(plans, indent=2)
    (pre_folder / f"{planning.COSMOS_PLANS}.json").write_text(plans_text)
    planning.write_splits(pre_folder, list(cases_meta), seg.num_folds)
    n_pseudo = sum(c.kind == export.KIND_PSEUDO for c in cases)
    prepared = PreparedRound(
        root=out,
        round_index=round_index,
        dataset_id=dataset_id,
        dataset_name=name,
        plans_identifier=planning.COSMOS_PLANS,
        configuration=configuration,
        base_configuration=seg.configuration,
        num_cases=len(cases),
        num_pseudo=n_pseudo,
        num_real=len(cases) - n_pseudo,
        inputs_digest=digest,
        plan_digest=hashlib.sha256(plans_text.encode()).hexdigest()[:16],
        ignore_label=ignore_label,
        training_digest=_summary_digest(training_set),
    )
    (out / MANIFEST).write_text(prepared.to_json())  # written last: its presence means "complete"
    cfgm = plans["configurations"][configuration]
    base = plans["configurations"][seg.configuration]
    log.info(
        "round %d prepared in %s: %d cases (%d pseudo, %d real%s); %s patch %s, batch %d, features %s",
        round_index,
        out,
        len(cases),
        n_pseudo,
        len(cases) - n_pseudo,
        f"; {len(empty)} with an empty label: {', '.join(empty)}" if empty else "",
        configuration,
        cfgm.get("patch_size", base["patch_size"]),
        cfgm["batch_size"],
        cfgm["architecture"]["arch_kwargs"]["features_per_stage"],
    )
    return out
