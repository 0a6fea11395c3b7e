"""train_fold: one nnU-Net fold, the unit of work of a round (a KFP ParallelFor task).

A fold depends on no other fold and never writes into the prepared directory (the split file is
made at prepare time; nnU-Net's blosc2 dataset needs no unpacking). The fold model directory is
flat and holds everything prediction needs::

    fold_dir/checkpoint_final.pth  plans.json  dataset.json  dataset_fingerprint.json  progress.png
             training_log_*.txt  debug.json  cosmos_fold.json  [validation/ when run_validation]

Resume: ``checkpoint_final.pth`` present -> return at once; ``checkpoint_latest.pth`` present (a
killed fold) -> continue from it. A resumed run continues from the saved weights, optimizer and
logged curves; the random streams restart from the seed, so it is not bit-identical to an
uninterrupted run. On a cluster a retried pod gets a fresh directory, so with ``checkpoint_uri``
the checkpoints are mirrored to an object store and fetched back first
(:mod:`cosmos.segmentation.checkpoint_sync`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from cosmos.config import CosmosConfig
from cosmos.cpu import resolve_threads
from cosmos.errors import CosmosError
from cosmos.segmentation import environment
from cosmos.segmentation.checkpoint_sync import CheckpointSync
from cosmos.segmentation.environment import FINAL_CHECKPOINT
from cosmos.segmentation.prepare import PreparedRound, load_prepared

log = logging.getLogger(__name__)

LATEST_CHECKPOINT = "checkpoint_latest.pth"
FOLD_MANIFEST = "cosmos_fold.json"
INIT_RECORD = ".cosmos_init.json"  # how the fold was initialised, written before training (for resume)


def is_fold_done(fold_dir: str | Path) -> bool:
    return (Path(fold_dir) / FINAL_CHECKPOINT).is_file()


@contextlib.contextmanager
def _mlflow_fold_hook(
    fold: int,
    prepared: PreparedRound,
    out_dir: Path,
    cfg: CosmosConfig,
    parent_run_id: str | None,
    tracking_uri: str | None,
) -> Iterator[Callable | None]:
    """The fold's nested MLflow run (:func:`cosmos.segmentation.mlflow_logging.fold_run`).

    Yields the epoch callback, or None when the run cannot be opened: tracking must never block
    training, so that is a warning, not an error.
    """
    from cosmos.segmentation.mlflow_logging import fold_run

    try:
        cm = fold_run(
            parent_run_id, fold, round_index=prepared.round_index, tracking_uri=tracking_uri, fold_dir=out_dir, cfg=cfg
        )
        callback = cm.__enter__()
    except Exception as exc:
        log.warning("could not open the MLflow fold run (%s); training without MLflow", exc)
        yield None
        return
    exc_info: tuple[Any, Any, Any] = (None, None, None)
    try:
        yield callback
    except BaseException as exc:
        exc_info = (type(exc), exc, exc.__traceback__)
        raise
    finally:
        try:
            cm.__exit__(*exc_info)
        except Exception as exc:
            log.warning("closing the MLflow fold run failed: %s", exc)


def fold_seed(base_seed: int, round_index: int, fold: int) -> int:
    """The seed of one fold of one round: ``base_seed + 1000 * round_index + fold``.

    Why the round is in it: with ``base_seed + fold`` alone, a student round whose data equal its
    teacher's (nothing kept by the filter) replays the teacher bit for bit, and every round draws
    the same augmentation stream. Folds of one round still differ, runs stay reproducible.
    """
    return int(base_seed) + 1000 * int(round_index) + int(fold)


def trainer_class(cfg: CosmosConfig, prepared: PreparedRound):
    """The trainer this round uses: the recipe ``segmentation.trainer`` names
    (:data:`cosmos.segmentation.trainer.TRAINERS`), in its domain-balanced variant for a student with
    real cases when ``selftraining.balance_domains`` is on."""
    from cosmos.segmentation.trainer import balanced_domains_variant, trainer_named

    cls = trainer_named(cfg.segmentation.trainer)
    if cfg.selftraining.balance_domains and prepared.num_real > 0 and prepared.num_pseudo > 0:
        return balanced_domains_variant(cls)
    return cls


def build_trainer(
    prepared: PreparedRound,
    fold: int,
    out_dir: Path,
    cfg: CosmosConfig,
    device,
    continue_training: bool,
    lr_scale: float = 1.0,
):
    """Construct the COSMOS trainer exactly as nnunetv2.run.run_training would (the class from :func:`trainer_class`;
    no nnU-Net name lookup), with the budget and recipe of ``cfg`` applied.

    Must run inside ``environment.nnunet_env(preprocessed=prepared.preprocessed_root, results=...)``.
    """
    from cosmos.segmentation.trainer import TrainerBudget

    plans = prepared.plans()
    plans["continue_training"] = continue_training
    cls = trainer_class(cfg, prepared)
    trainer = cls(
        plans=plans,
        configuration=prepared.configuration,
        fold=fold,
        dataset_json=prepared.dataset_json(),
        device=device,
    )
    trainer.use_output_folder(out_dir)
    budget = TrainerBudget.from_config(
        cfg.segmentation, prepared, lr_scale=lr_scale, min_pseudo_dice=cfg.checks.min_pseudo_dice, trainer=cls
    )
    trainer.apply_budget(budget)
    return trainer


def inherited_iterations(init_record: dict[str, Any] | None) -> int:
    """Training iterations behind a warm start: the cumulative count of the fold it started from (0 from scratch)."""
    source = (init_record or {}).get("from")
    if not source:
        return 0
    manifest = Path(source) / FOLD_MANIFEST
    if not manifest.is_file():
        return 0
    data = json.loads(manifest.read_text())
    return int(data.get("cumulative_iterations", data.get("epochs", 0) * data.get("iterations_per_epoch", 0)))


def _previous_init(out: Path) -> dict[str, Any] | None:
    """A resumed fold keeps the init record it started with (written at its first start)."""
    path = out / INIT_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def train_fold(
    prepared_dir: str | Path,
    fold: int,
    out_dir: str | Path,
    cfg: CosmosConfig,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    init_from: str | Path | None = None,
    checkpoint_uri: str | None = None,
) -> Path:
    """Train one nnU-Net fold on a prepared round; returns the fold model directory (``out_dir``).

    Seeds random/numpy/torch with :func:`fold_seed` (``cfg.seed + 1000 * round + fold``). On CPU,
    data augmentation runs in-process (``nnUNet_n_proc_DA=0``), which makes runs bit-identical.
    ``parent_run_id``/``tracking_uri`` go to the MLflow fold-run hook
    (``cosmos.segmentation.mlflow_logging.fold_run``).

    ``init_from``: a trained fold directory (``checkpoint_final.pth`` + ``plans.json``), normally
    the previous round's same fold (``selftraining.student_init=teacher``): the network starts from
    its weights (:func:`cosmos.segmentation.trainer.warm_start`; fresh optimizer and LR schedule,
    initial LR times ``selftraining.student_lr_scale``). A resumed fold continues from its own
    ``checkpoint_latest.pth`` instead (with the LR scale it started with). Everything used is
    recorded in ``cosmos_fold.json``.

    ``checkpoint_uri``: this fold's prefix in an object store
    (:func:`cosmos.segmentation.checkpoint_sync.fold_checkpoint_uri`). A directory without a
    checkpoint first downloads the last one stored there; every checkpoint written is uploaded;
    the prefix is emptied once the fold is done.
    """
    import dataclasses

    import torch

    from cosmos.segmentation.trainer import effective_recipe, warm_start

    prepared = load_prepared(prepared_dir)
    seg = cfg.segmentation
    if not 0 <= fold < seg.num_folds:
        raise CosmosError(f"fold {fold} is outside 0..{seg.num_folds - 1} (segmentation.num_folds)")
    out = Path(out_dir).resolve()
    if is_fold_done(out):
        log.info("fold %d already trained (%s present in %s); skipping", fold, FINAL_CHECKPOINT, out)
        return out
    if init_from is not None and not is_fold_done(init_from):
        raise CosmosError(f"{init_from}: cannot warm-start fold {fold} from it ({FINAL_CHECKPOINT} missing)")
    out.mkdir(parents=True, exist_ok=True)
    sync = CheckpointSync(checkpoint_uri, out) if checkpoint_uri else None
    restored: dict[str, Any] | None = None
    if sync is not None and not (out / LATEST_CHECKPOINT).is_file():
        restored = sync.restore()  # a retried pod: the fresh directory gets the last uploaded checkpoint
    resume = (out / LATEST_CHECKPOINT).is_file()
    device = environment.resolve_device(seg.device)
    n_da = environment.augmentation_workers(seg.da_workers, device)
    seed = fold_seed(cfg.seed, prepared.round_index, fold)
    lr_scale = float(cfg.selftraining.student_lr_scale) if init_from is not None else 1.0
    started = _previous_init(out) if resume else None
    if started is not None:  # a killed warm-started fold resumes with the LR it started with
        lr_scale = float(started.get("lr_scale", lr_scale))
    log.info(
        "training fold %d of round %d on %s (%s, %d epochs, DA workers %d, seed %d)%s%s",
        fold,
        prepared.round_index,
        device,
        prepared.configuration,
        seg.epochs,
        n_da,
        seed,
        " - resuming from checkpoint_latest.pth" if resume else "",
        f" - warm start from {init_from}" if init_from is not None and not resume else "",
    )
    init_record: dict[str, Any] | None = None
    scratch = Path(tempfile.mkdtemp(prefix=".nnunet_results_", dir=out))  # nnU-Net's __init__ writes here
    t0 = time.perf_counter()
    try:
        with environment.nnunet_env(
            preprocessed=prepared.preprocessed_root,
            results=scratch,
            n_proc_da=n_da,
            num_processes=seg.num_processes,
            compile=seg.compile,
            torch_threads=1 if device.type == "cuda" and not seg.torch_threads else resolve_threads(seg.torch_threads),
        ):
            environment.seed_everything(seed)
            if device.type == "cuda":  # as nnunetv2.run.run_training does
                torch.backends.cudnn.deterministic = False
                torch.backends.cudnn.benchmark = True
            trainer = build_trainer(prepared, fold, out, cfg, device, continue_training=resume, lr_scale=lr_scale)
            shutil.rmtree(scratch, ignore_errors=True)
            if resume:
                trainer.load_checkpoint(str(out / LATEST_CHECKPOINT))
                init_record = started
            elif init_from is not None:
                init_record = {**warm_start(trainer, init_from), "lr_scale": lr_scale}
                (out / INIT_RECORD).write_text(json.dumps(init_record, indent=2))
            if sync is not None:
                trainer.epoch_end_callbacks.append(sync)
            with _mlflow_fold_hook(fold, prepared, out, cfg, parent_run_id, tracking_uri) as callback:
                if callback is not None:
                    trainer.epoch_end_callbacks.append(callback)
                trainer.run_training()
                if seg.run_validation:
                    trainer.perform_actual_validation(save_probabilities=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - t0
    final = trainer.epoch_metrics() if trainer.current_epoch > 0 else {}
    manifest = {
        "fold": fold,
        "round_index": prepared.round_index,
        "dataset_name": prepared.dataset_name,
        "plans_identifier": prepared.plans_identifier,
        "configuration": prepared.configuration,
        "plan_digest": prepared.plan_digest,
        "inputs_digest": prepared.inputs_digest,
        "trainer": type(trainer).__name__,
        "device": str(device),
        "seed": seed,
        "epochs": trainer.num_epochs,
        "planned_epochs": trainer.planned_epochs,
        "iterations_per_epoch": trainer.num_iterations_per_epoch,
        # what the learning check reads (cosmos.selftraining.verdict) and what the benchmark's budgets compare
        "pseudo_dice_best": trainer.best_pseudo_dice(),
        "labels_not_learned": trainer.labels_not_learned(),
        "train_iterations": int(trainer.num_epochs * trainer.num_iterations_per_epoch),
        "cumulative_iterations": int(trainer.num_epochs * trainer.num_iterations_per_epoch)
        + inherited_iterations(init_record),
        "initial_lr": trainer.initial_lr,
        "oversample_foreground": trainer.oversample_foreground_percent,
        "probabilistic_oversampling": bool(trainer.probabilistic_oversampling),
        # the trainer's recipe with the config's overrides: what segmentation.trainer and its keys resolved to
        "recipe": dataclasses.asdict(effective_recipe(seg, type(trainer))),
        "num_cases": prepared.num_cases,
        "num_pseudo": prepared.num_pseudo,
        "num_real": prepared.num_real,
        "init": init_record or {"from": None},
        "train_seconds": round(seconds, 2),
        "resumed": resume,
        "final_metrics": final,
        "checkpoint_uri": checkpoint_uri or None,
        "restored_from_store": None if restored is None else {"epoch": restored["epoch"], "host": restored.get("host")},
    }
    (out / FOLD_MANIFEST).write_text(json.dumps(manifest, indent=2))
    if sync is not None:
        try:
            sync.clear()
        except CosmosError as exc:  # the fold is trained; stale objects cost storage, not correctness
            log.warning("could not delete the fold's checkpoints under %s: %s", checkpoint_uri, exc)
    log.info(
        "fold %d done in %.1f s: %s",
        fold,
        seconds,
        ", ".join(f"{k}={v:.3f}" for k, v in final.items() if k.startswith(("pseudo_dice", "val_loss"))),
    )
    return out
