"""Warm start: a student fold starts from a trained fold's network weights.

All of them, segmentation heads included, with a fresh optimizer and LR schedule
(:func:`warm_start`); :func:`network_plan_differences` says first whether the two plans build the same
network. Works on any nnU-Net trainer instance, so it needs none of the COSMOS trainer classes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosmos.segmentation.environment import FINAL_CHECKPOINT

log = logging.getLogger("cosmos.segmentation.trainer")  # the trainer's logger, as before the split: same log lines


def network_plan_differences(
    trained_plans: dict,
    trained_configuration: str,
    plans: dict,
    configuration: str,
    trained_dataset_json: dict,
    dataset_json: dict,
) -> list[str]:
    """What makes a trained fold's network unusable as the start of a new fold ([] = compatible).

    Compared: network class and all its constructor arguments (stages, features, kernels, strides,
    deep-supervision layout), input channels and segmentation heads (an ``ignore`` label adds no
    head, so a pixel-filtered student still matches its teacher). Spacing and patch size may differ:
    the weights are a valid start at any patch size.
    """
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    diffs: list[str] = []
    pm_a, pm_b = PlansManager(trained_plans), PlansManager(plans)
    try:
        cm_a, cm_b = pm_a.get_configuration(trained_configuration), pm_b.get_configuration(configuration)
    except (KeyError, RuntimeError) as exc:
        return [f"configuration missing ({exc})"]
    if cm_a.network_arch_class_name != cm_b.network_arch_class_name:
        diffs.append(f"network class {cm_a.network_arch_class_name} vs {cm_b.network_arch_class_name}")
    ka, kb = cm_a.network_arch_init_kwargs, cm_b.network_arch_init_kwargs
    for key in sorted(set(ka) | set(kb)):
        if ka.get(key) != kb.get(key):
            diffs.append(f"{key} {ka.get(key)} vs {kb.get(key)}")
    ch_a = determine_num_input_channels(pm_a, cm_a, trained_dataset_json)
    ch_b = determine_num_input_channels(pm_b, cm_b, dataset_json)
    if ch_a != ch_b:
        diffs.append(f"input channels {ch_a} vs {ch_b}")
    heads_a = pm_a.get_label_manager(trained_dataset_json).num_segmentation_heads
    heads_b = pm_b.get_label_manager(dataset_json).num_segmentation_heads
    if heads_a != heads_b:
        diffs.append(f"segmentation heads {heads_a} vs {heads_b}")
    if cm_a.normalization_schemes != cm_b.normalization_schemes:
        diffs.append(f"normalization {cm_a.normalization_schemes} vs {cm_b.normalization_schemes}")
    return diffs


def warm_start(trainer: nnUNetTrainer, fold_dir: str | Path, checkpoint: str = FINAL_CHECKPOINT) -> dict:
    """Load a trained fold's network weights into ``trainer`` (initialising it first); returns a record.

    Network weights only: the optimizer, LR schedule, epoch counter and logs stay fresh, so the
    student runs its own full schedule from its own initial LR. Every weight is taken, the
    segmentation heads (``seg_layers``, one per deep-supervision output) included -- unlike nnU-Net's
    ``load_pretrained_weights``, which skips the heads because it fine-tunes onto other labels; here
    the labels are the same. The training network always has all heads (deep supervision only
    changes which outputs ``forward`` returns), so state dicts match key for key.

    Raises ``CosmosError`` naming both sides when the plans' networks differ.
    """
    import json

    from torch._dynamo import OptimizedModule

    from cosmos.errors import CosmosError

    fold_dir = Path(fold_dir)
    ckpt_path, plans_path, ds_path = fold_dir / checkpoint, fold_dir / "plans.json", fold_dir / "dataset.json"
    for p in (ckpt_path, plans_path, ds_path):
        if not p.is_file():
            raise CosmosError(f"{fold_dir}: cannot warm-start from it ({p.name} missing; not a trained fold)")
    try:
        ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CosmosError(f"{ckpt_path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    trained_cfg = ckpt.get("init_args", {}).get("configuration", trainer.configuration_name)
    diffs = network_plan_differences(
        json.loads(plans_path.read_text()),
        trained_cfg,
        trainer.plans_manager.plans,
        trainer.configuration_name,
        json.loads(ds_path.read_text()),
        trainer.dataset_json,
    )
    if diffs:
        raise CosmosError(
            f"{fold_dir}: its network plan differs from this round's ({'; '.join(diffs)}); a student "
            "can only warm-start from a teacher planned identically (use selftraining.student_init="
            "scratch, or prepare the student with prepare_round(..., plans_from=<teacher prepared dir>))"
        )
    if not trainer.was_initialized:
        trainer.initialize()
    net = trainer.network
    if isinstance(net, OptimizedModule):
        net = net._orig_mod
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["network_weights"].items()}
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    bad_shape = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or extra or bad_shape:
        raise CosmosError(
            f"{ckpt_path}: weights do not fit this round's network (missing {missing[:3]}, "
            f"unexpected {extra[:3]}, other shape {bad_shape[:3]})"
        )
    net.load_state_dict(weights)  # copies into the same Parameters the optimizer already holds
    log.info(
        "warm start: network weights from %s (epoch %s of its round); fresh optimizer, initial lr %g",
        ckpt_path,
        ckpt.get("current_epoch"),
        trainer.initial_lr,
    )
    return {
        "from": str(fold_dir.resolve()),
        "checkpoint": checkpoint,
        "source_epoch": ckpt.get("current_epoch"),
        "source_configuration": trained_cfg,
        "tensors": len(weights),
    }
