"""nnU-Net plan + preprocess with dataset-integrity verification, and our plan overrides.

nnU-Net plans the dataset itself (``nnUNetPlans.json``, untouched). Our budget choices live in a
second plans file, ``CosmosPlans.json``, holding nnU-Net's base configuration plus one added
configuration ``<base>_cosmos`` that ``inherits_from`` it. Inheritance reuses the base's
preprocessed data (same ``data_identifier``), so profiles can switch between the cheap 16..128
network on CPU and the paper's 32..320 on GPU without preprocessing again. nnU-Net's inheritance is
a shallow dict update, so the ``architecture`` block is written whole.

Geometry (``segmentation.target_spacing``, ``patch_size``, ``num_stages``), all in the plan's axis
order (nnU-Net puts the coarsest axis first: z, y, x for crossMoDA):

* the target spacing is handed to nnU-Net's own planner (``overwrite_target_spacing``), so the
  base configuration is planned AND preprocessed at that spacing (nothing is resampled twice);
* a patch size (or a depth) re-derives the topology -- strides and kernel sizes per stage -- with
  nnU-Net's own ``get_pool_and_conv_props`` at the plan's spacing, exactly as its planner does for
  the patch it picks itself. Why not keep the planned topology: a patch other than the planned
  one would otherwise run a network planned for a different field of view (too deep or too shallow).
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
# nnU-Net's ExperimentPlanner.UNet_featuremap_min_edge_length (an instance attribute set in its __init__,
# which needs a dataset): the smallest bottleneck edge its rule pools down to. tests/test_paper_profile.py
# checks that derive_topology with it reproduces the planner's own topology, so a change upstream shows.
FEATUREMAP_MIN_EDGE = 4
SPACING_RTOL = 1e-4


def cosmos_configuration_name(base: str) -> str:
    return f"{base}{CONFIGURATION_SUFFIX}"


def precheck_raw_dataset(raw_folder: Path, cases_meta: dict) -> list[str]:
    """Our own readable checks before nnU-Net's (whose messages come from worker processes).

    Image and label on the same grid (shape + affine), labels only 0/1/2 -- plus the ignore label
    dataset.json declares, in pseudo-labels (kind ``real``) only. Raises CosmosError naming the
    source files. Returns the nnU-Net ids whose label holds no structure (legal, worth a mention).
    """
    from cosmos.data import nifti

    labels = {0: "background", 1: "VS", 2: "cochlea"}
    declared = (
        json.loads((raw_folder / "dataset.json").read_text()).get("labels", {})
        if (raw_folder / "dataset.json").is_file()
        else {}
    )
    ignore = declared.get("ignore")
    problems = []
    empty = []
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
        values = set(np.unique(lab.data).tolist())
        if not values & (set(labels) - {0}):
            empty.append(nn_id)
        extra = sorted(values - allowed)
        if extra:
            problems.append(
                f"{meta['label']}: unexpected label values {extra} (allowed: "
                + ", ".join(f"{v}={n}" if v else "0" for v, n in labels.items())
                + (f", {ignore}=ignore" if int(ignore or 0) in allowed else "")
                + ")"
            )
    if problems:
        raise CosmosError("dataset export has problems:\n  " + "\n  ".join(problems))
    return empty


def verify_integrity(raw_folder: Path, num_processes: int) -> None:
    """nnU-Net's verify_dataset_integrity, with its asserts turned into a CosmosError."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(raw_folder), num_processes)
    except (AssertionError, RuntimeError, FileNotFoundError) as exc:
        raise CosmosError(f"{raw_folder}: nnU-Net dataset integrity check failed: {exc}") from None


def plan_and_preprocess(dataset_id: int, raw_folder: Path, preprocessed_folder: Path, seg: SegmentationConfig) -> dict:
    """Fingerprint, plan (nnU-Net's ExperimentPlanner) and preprocess the base configuration.

    Must run inside ``environment.nnunet_env(raw=..., preprocessed=..., n_proc_da=None)``.
    Returns nnU-Net's plans dict.
    """
    plans = plan_dataset(dataset_id, raw_folder, preprocessed_folder, seg)
    preprocess(dataset_id, seg)
    return plans


def plan_dataset(dataset_id: int, raw_folder: Path, preprocessed_folder: Path, seg: SegmentationConfig) -> dict:
    """Integrity check, fingerprint and nnU-Net's plan (``nnUNetPlans.json``); no preprocessing.

    ``segmentation.target_spacing`` goes to nnU-Net's planner as ``overwrite_target_spacing``.
    Same environment as :func:`plan_and_preprocess`. Returns nnU-Net's plans dict.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )

    n = max(1, seg.num_processes)
    verify_integrity(raw_folder, n)
    with _stdout_to_debug_log():  # nnU-Net prints whole plans dicts; keep them out of the console
        extract_fingerprint_dataset(
            dataset_id,
            num_processes=n,
            check_dataset_integrity=False,
            clean=True,
            verbose=False,
            show_progress_bar=False,
        )
    overwrite = None
    if seg.target_spacing is not None:
        fingerprint = json.loads((preprocessed_folder / "dataset_fingerprint.json").read_text())
        overwrite = planner_target_spacing(seg.target_spacing, fingerprint["spacings"])
    with _stdout_to_debug_log():
        plan_experiment_dataset(dataset_id, overwrite_target_spacing=overwrite)
    plans_file = preprocessed_folder / f"{NNUNET_PLANS}.json"
    plans = json.loads(plans_file.read_text())
    if seg.configuration not in plans["configurations"]:
        raise CosmosError(
            f"segmentation.configuration={seg.configuration!r} was not planned by nnU-Net for "
            f"this dataset; available: {sorted(plans['configurations'])}"
        )
    target = seg.target_spacing
    if target is None and seg.min_patch_mm is not None:
        planned = [float(v) for v in plans["configurations"][seg.configuration]["spacing"]]
        target = spacing_for_field_of_view(planned, seg.patch_size or seg.patch_size_max, seg.min_patch_mm)
        if target is not None:
            log.info(
                "nnU-Net target spacing %s mm coarsened to %s mm: a %s-voxel patch then covers the %s mm of "
                "segmentation.min_patch_mm",
                [round(v, 3) for v in planned],
                [round(v, 3) for v in target],
                seg.patch_size or seg.patch_size_max,
                seg.min_patch_mm,
            )
            fingerprint = json.loads((preprocessed_folder / "dataset_fingerprint.json").read_text())
            with _stdout_to_debug_log():
                plan_experiment_dataset(
                    dataset_id, overwrite_target_spacing=planner_target_spacing(target, fingerprint["spacings"])
                )
            plans = json.loads(plans_file.read_text())
    if target is not None:
        planned = [float(v) for v in plans["configurations"][seg.configuration]["spacing"]]
        if not np.allclose(planned, target, rtol=SPACING_RTOL, atol=0):
            raise CosmosError(
                f"segmentation.target_spacing {target} became {planned} in nnU-Net's "
                f"{seg.configuration} plan (transpose {plans.get('transpose_forward')}): give it in the plan's axis "
                "order with the coarsest axis first (z, y, x); nnU-Net applies it to 3d_fullres only"
            )
    return plans


def spacing_for_field_of_view(spacing: list[float], patch: list[int] | None, min_mm: list[float]) -> list[float] | None:
    """The planned ``spacing`` coarsened where ``patch`` voxels cover less than ``min_mm``; None = no change.

    Why: a patch capped in voxels is a different piece of anatomy on every scanner; what the network
    needs to tell a cochlea from the other bright fluid is a field of view in millimetres.
    """
    if patch is None:
        return None
    if len(patch) != len(spacing) or len(min_mm) != len(spacing):
        raise CosmosError(
            f"segmentation.min_patch_mm {list(min_mm)} and the patch {list(patch)} need {len(spacing)} entries"
        )
    need = [max(float(s), float(m) / int(p)) for s, p, m in zip(spacing, patch, min_mm)]
    if all(n <= s * (1 + SPACING_RTOL) for n, s in zip(need, spacing)):
        return None
    return [n if n > s * (1 + SPACING_RTOL) else float(s) for n, s in zip(need, spacing)]


def preprocess(dataset_id: int, seg: SegmentationConfig) -> None:
    """nnU-Net's preprocessing of the base configuration (resampling to the planned spacing, z-score)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    n = max(1, seg.num_processes)
    with _stdout_to_debug_log():
        preprocess_dataset(dataset_id, NNUNET_PLANS, [seg.configuration], [n], verbose=False, show_progress_bar=False)


def planner_target_spacing(target: list[float], spacings: list[list[float]]) -> list[float]:
    """``target`` (plan axis order) in the image-array order that nnU-Net's planner takes.

    nnU-Net transposes so that the axis with the largest target spacing comes first
    (``ExperimentPlanner.determine_transpose``; without an override, that is the largest median
    spacing of the fingerprint). We take the transpose from the fingerprint's median spacing and
    undo it, so ``target`` means the same axes as ``patch_size`` whatever the file orientation.
    """
    median = np.median(np.asarray(spacings, dtype=float), axis=0)
    if len(target) != len(median):
        raise CosmosError(f"segmentation.target_spacing {list(target)} must have {len(median)} entries")
    first = int(np.argmax(median))
    forward = [first] + [i for i in range(len(median)) if i != first]
    backward = np.argsort(forward)
    return [float(target[int(b)]) for b in backward]


class _LogWriter(io.TextIOBase):
    def write(self, text: str) -> int:
        for line in text.rstrip().splitlines():
            if line.strip():
                log.debug("nnU-Net: %s", line)
        return len(text)


def _stdout_to_debug_log():
    return contextlib.redirect_stdout(_LogWriter())


def _features(n_stages: int, base: int, maximum: int) -> list[int]:
    return [int(min(base * 2**i, maximum)) for i in range(n_stages)]


def derive_topology(
    spacing: list[float], patch_size: list[int], num_stages: int | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """(strides, kernel_sizes) per stage for ``patch_size`` at ``spacing``, by nnU-Net's planner rule.

    nnU-Net's ``get_pool_and_conv_props`` with its bottleneck floor (4 voxels): pool the axes within
    a factor 2 of the finest spacing while they stay >= 8 voxels; 3-wide kernels once an axis is within
    a factor 2 of the finest. ``num_stages`` below what the patch allows drops the deepest poolings (the
    last stage gets nnU-Net's 3x3x3 bottleneck kernel); above it is an error naming the smallest patch
    that allows it, because nnU-Net's rule pads the patch rather than shrink the bottleneck.
    A patch that is not divisible by the derived total stride is an error too (nnU-Net would pad it).
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props, pad_shape

    patch = [int(p) for p in patch_size]
    if len(patch) != len(spacing):
        raise CosmosError(f"segmentation.patch_size {patch} must have {len(spacing)} entries")
    _, strides, kernels, padded, divisible = get_pool_and_conv_props(
        [float(s) for s in spacing], patch, FEATUREMAP_MIN_EDGE, 999999
    )
    strides = [list(map(int, s)) for s in strides]
    kernels = [list(map(int, k)) for k in kernels]
    if [int(p) for p in padded] != patch:
        raise CosmosError(
            f"segmentation.patch_size {patch} must be divisible by the network's total stride "
            f"{[int(d) for d in divisible]} per axis (nnU-Net's rule at spacing {list(spacing)}); "
            f"the nearest larger patch is {[int(p) for p in padded]}"
        )
    if num_stages is None or num_stages == len(strides):
        return strides, kernels
    if num_stages < len(strides):
        return strides[:num_stages], kernels[: num_stages - 1] + [[3] * len(patch)]
    need = None
    for edge in range(FEATUREMAP_MIN_EDGE - 1, 0, -1):  # what a smaller bottleneck would need
        _, deeper, _, _, _ = get_pool_and_conv_props([float(s) for s in spacing], patch, edge, 999999)
        if len(deeper) >= num_stages:
            total = np.prod(np.array(deeper[:num_stages], dtype=int), axis=0)
            need = [int(p) for p in pad_shape(patch, total)]
            break
    raise CosmosError(
        f"segmentation.num_stages={num_stages}: nnU-Net's rule allows {len(strides)} stages "
        f"({len(strides) - 1} downsamplings) on patch {patch} at spacing {list(spacing)} (bottleneck edge >= "
        f"{FEATUREMAP_MIN_EDGE} voxels)" + (f"; {num_stages} stages need a patch of at least {need}" if need else "")
    )


def cosmos_plans(nnunet_plans: dict, seg: SegmentationConfig) -> tuple[dict, str]:
    """CosmosPlans: nnU-Net's base configuration + ``<base>_cosmos`` with our overrides.

    Overrides: ``features_per_stage`` (base, doubling, capped at max), ``batch_size``, and optionally
    ``patch_size`` and/or ``num_stages`` (in the plan's axis order: the topology -- stages, strides,
    kernel sizes -- is re-derived from the patch and the plan's spacing by nnU-Net's rule, see
    :func:`derive_topology`) or ``patch_size_max`` (a per-axis cap on nnU-Net's planned patch, rounded
    down to a multiple of the stride, topology kept: works for any dataset, which is what the CPU
    profiles want -- smaller patches, more iterations per minute).
    """
    base_name = seg.configuration
    base = nnunet_plans["configurations"][base_name]
    if "inherits_from" in base:
        raise CosmosError(f"configuration {base_name!r} inherits from another; use a planned base configuration")
    arch = copy.deepcopy(base["architecture"])
    kwargs = arch["arch_kwargs"]
    ours: dict = {"inherits_from": base_name, "batch_size": int(seg.batch_size), "architecture": arch}
    planned_patch = [int(p) for p in base["patch_size"]]
    patch = planned_patch
    rederive = False  # a capped patch that the planned topology does not fit gets nnU-Net's topology for it
    if seg.patch_size is not None:
        patch = [int(p) for p in seg.patch_size]
        if len(patch) != len(planned_patch):
            raise CosmosError(f"segmentation.patch_size {patch} must have {len(planned_patch)} entries")
    elif seg.patch_size_max is not None:
        cap = [int(c) for c in seg.patch_size_max]
        if len(cap) != len(planned_patch):
            raise CosmosError(f"segmentation.patch_size_max {cap} must have {len(planned_patch)} entries")
        stride = np.prod(np.array(kwargs["strides"], dtype=int), axis=0).tolist()
        capped = [min(p, c) for p, c in zip(planned_patch, cap)]
        if any(c % s for c, s in zip(capped, stride)):
            # the planned network pools more than the cap allows (a fine spacing plans a deep net): rounding
            # the patch down to its stride would shrink it well below the cap (48 -> 32 at stride 32), so the
            # topology is re-derived for the capped patch instead, as nnU-Net plans it for that patch
            try:
                derive_topology(base["spacing"], capped, seg.num_stages)
                patch, rederive = capped, True
            except CosmosError:
                patch = [p if p <= c else max(s, (c // s) * s) for p, c, s in zip(planned_patch, cap, stride)]
        else:
            patch = capped
    if seg.patch_size is not None or seg.num_stages is not None or rederive:
        stage_strides, kernel_sizes = derive_topology(base["spacing"], patch, seg.num_stages)
        n = len(stage_strides)
        enc, dec = list(kwargs["n_conv_per_stage"]), list(kwargs["n_conv_per_stage_decoder"])
        kwargs.update(
            {
                "n_stages": n,
                "strides": stage_strides,
                "kernel_sizes": kernel_sizes,
                "n_conv_per_stage": [enc[min(i, len(enc) - 1)] for i in range(n)],
                "n_conv_per_stage_decoder": [dec[min(i, len(dec) - 1)] for i in range(n - 1)],
            }
        )
    kwargs["features_per_stage"] = _features(len(kwargs["strides"]), seg.features_base, seg.features_max)
    if patch != planned_patch or seg.patch_size is not None:
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
        raise CosmosError(
            f"{len(keys)} training cases cannot make {num_folds} cross-validation folds; "
            f"lower segmentation.num_folds or add cases"
        )
    splits = generate_crossval_split(keys, seed=SPLIT_SEED, n_splits=num_folds)
    path = preprocessed_folder / "splits_final.json"
    path.write_text(json.dumps(splits, indent=2))
    return path
