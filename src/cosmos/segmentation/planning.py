"""nnU-Net plan + preprocess with dataset-integrity verification, and our plan overrides.

nnU-Net plans the dataset itself (``nnUNetPlans.json``, untouched). Our budget choices live in a
second plans file, ``CosmosPlans.json``, holding nnU-Net's base configuration plus one added
configuration ``<base>_cosmos`` that ``inherits_from`` it. Inheritance reuses the base's
preprocessed data (same ``data_identifier``), so profiles can switch between the cheap 16..128
network on CPU and the paper's 32..320 on GPU without preprocessing again. nnU-Net's inheritance is
a shallow dict update, so the ``architecture`` block is written whole (STACK-NOTES).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from pathlib import Path

import numpy as np

from cosmos.config import SegmentationConfig
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

NNUNET_PLANS = "nnUNetPlans"
COSMOS_PLANS = "CosmosPlans"
CONFIGURATION_SUFFIX = "_cosmos"
SPLIT_SEED = 12345  # nnU-Net's own split seed, so our splits equal the ones nnU-Net would create


def cosmos_configuration_name(base: str) -> str:
    return f"{base}{CONFIGURATION_SUFFIX}"


def precheck_raw_dataset(raw_folder: Path, cases_meta: dict) -> None:
    """Our own readable checks before nnU-Net's (whose messages come from worker processes).

    Image and label on the same grid (shape + affine), labels only 0/1/2 -- plus the ignore label
    dataset.json declares, in pseudo-labels (kind ``real``) only. Raises CosmosError naming the
    source files.
    """
    from cosmos.data import nifti

    labels = {0: "background", 1: "VS", 2: "cochlea"}
    declared = json.loads((raw_folder / "dataset.json").read_text()).get("labels", {}) \
        if (raw_folder / "dataset.json").is_file() else {}
    ignore = declared.get("ignore")
    problems = []
    for nn_id, meta in cases_meta.items():
        img_p = raw_folder / "imagesTr" / f"{nn_id}_0000.nii.gz"
        lab_p = raw_folder / "labelsTr" / f"{nn_id}.nii.gz"
        try:
            img = nifti.load(img_p)
            lab = nifti.load(lab_p, label=True)
        except CosmosError as exc:
            problems.append(f"{meta['image']} / {meta['label']}: {exc}")
            continue
        diff = nifti.same_grid(img, lab)
        if diff:
            problems.append(f"{meta['label']}: not on the grid of {meta['image']} ({diff})")
        allowed = set(labels) | ({int(ignore)} if ignore is not None and meta.get("kind") == "real" else set())
        extra = sorted(set(np.unique(lab.data).tolist()) - allowed)
        if extra:
            problems.append(f"{meta['label']}: unexpected label values {extra} (allowed: "
                            + ", ".join(f"{v}={n}" if v else "0" for v, n in labels.items())
                            + (f", {ignore}=ignore" if int(ignore or 0) in allowed else "") + ")")
    if problems:
        raise CosmosError("dataset export has problems:\n  " + "\n  ".join(problems))


def verify_integrity(raw_folder: Path, num_processes: int) -> None:
    """nnU-Net's verify_dataset_integrity, with its asserts turned into a CosmosError."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(raw_folder), num_processes)
    except (AssertionError, RuntimeError, FileNotFoundError) as exc:
        raise CosmosError(f"{raw_folder}: nnU-Net dataset integrity check failed: {exc}") from None


def plan_and_preprocess(dataset_id: int, raw_folder: Path, preprocessed_folder: Path,
                        seg: SegmentationConfig) -> dict:
    """Fingerprint, plan (nnU-Net's ExperimentPlanner) and preprocess the base configuration.

    Must run inside ``environment.nnunet_env(raw=..., preprocessed=..., n_proc_da=None)``.
    Returns nnU-Net's plans dict.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, plan_experiment_dataset, preprocess_dataset)

    n = max(1, seg.num_processes)
    verify_integrity(raw_folder, n)
    with _stdout_to_debug_log():  # nnU-Net prints whole plans dicts; keep them out of the console
        extract_fingerprint_dataset(dataset_id, num_processes=n, check_dataset_integrity=False, clean=True,
                                    verbose=False, show_progress_bar=False)
        plan_experiment_dataset(dataset_id)
    plans_file = preprocessed_folder / f"{NNUNET_PLANS}.json"
    plans = json.loads(plans_file.read_text())
    if seg.configuration not in plans["configurations"]:
        raise CosmosError(f"segmentation.configuration={seg.configuration!r} was not planned by nnU-Net for "
                          f"this dataset; available: {sorted(plans['configurations'])}")
    with _stdout_to_debug_log():
        preprocess_dataset(dataset_id, NNUNET_PLANS, [seg.configuration], [n], verbose=False,
                           show_progress_bar=False)
    return plans


class _LogWriter(io.TextIOBase):
    def write(self, text: str) -> int:
        for line in text.rstrip().splitlines():
            if line.strip():
                log.debug("nnU-Net: %s", line)
        return len(text)


def _stdout_to_debug_log():
    return contextlib.redirect_stdout(_LogWriter())


def _features(n_stages: int, base: int, maximum: int) -> list[int]:
    return [int(min(base * 2 ** i, maximum)) for i in range(n_stages)]


def cosmos_plans(nnunet_plans: dict, seg: SegmentationConfig) -> tuple[dict, str]:
    """CosmosPlans: nnU-Net's base configuration + ``<base>_cosmos`` with our overrides.

    Overrides: ``features_per_stage`` (base, doubling, capped at max), ``batch_size``, and optionally
    ``patch_size`` (in the plan's axis order; must be divisible by the network's total stride per
    axis, because the topology is kept from nnU-Net's plan) or ``patch_size_max`` (a per-axis cap on
    nnU-Net's planned patch, rounded down to a multiple of the stride: works for any dataset, which
    is what the CPU profiles want -- smaller patches, more iterations per minute).
    """
    base_name = seg.configuration
    base = nnunet_plans["configurations"][base_name]
    if "inherits_from" in base:
        raise CosmosError(f"configuration {base_name!r} inherits from another; use a planned base configuration")
    arch = copy.deepcopy(base["architecture"])
    kwargs = arch["arch_kwargs"]
    kwargs["features_per_stage"] = _features(len(kwargs["features_per_stage"]), seg.features_base, seg.features_max)
    ours: dict = {"inherits_from": base_name, "batch_size": int(seg.batch_size), "architecture": arch}
    strides = np.prod(np.array(kwargs["strides"], dtype=int), axis=0).tolist()
    if seg.patch_size_max is not None and seg.patch_size is None:
        cap = [int(c) for c in seg.patch_size_max]
        if len(cap) != len(base["patch_size"]):
            raise CosmosError(f"segmentation.patch_size_max {cap} must have {len(base['patch_size'])} entries")
        capped = [p if p <= c else max(s, (c // s) * s) for p, c, s in zip(base["patch_size"], cap, strides)]
        if capped != list(base["patch_size"]):
            ours["patch_size"] = capped
    if seg.patch_size is not None:
        patch = [int(p) for p in seg.patch_size]
        if len(patch) != len(base["patch_size"]):
            raise CosmosError(f"segmentation.patch_size {patch} must have {len(base['patch_size'])} entries")
        bad = [(p, s) for p, s in zip(patch, strides) if p % s]
        if bad:
            raise CosmosError(f"segmentation.patch_size {patch} must be divisible by the network's total stride "
                              f"{strides} per axis (nnU-Net planned {base['patch_size']})")
        ours["patch_size"] = patch
    plans = copy.deepcopy(nnunet_plans)
    plans["plans_name"] = COSMOS_PLANS
    plans["configurations"] = {base_name: copy.deepcopy(base), cosmos_configuration_name(base_name): ours}
    return plans, cosmos_configuration_name(base_name)


def write_splits(preprocessed_folder: Path, case_ids: list[str], num_folds: int) -> Path:
    """Create nnU-Net's 5-fold (num_folds) split now, so fold training never writes into the dataset."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    keys = sorted(case_ids)
    if len(keys) < num_folds:
        raise CosmosError(f"{len(keys)} training cases cannot make {num_folds} cross-validation folds; "
                          f"lower segmentation.num_folds or add cases")
    splits = generate_crossval_split(keys, seed=SPLIT_SEED, n_splits=num_folds)
    path = preprocessed_folder / "splits_final.json"
    path.write_text(json.dumps(splits, indent=2))
    return path
