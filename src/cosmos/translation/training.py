"""Training recipe of the target-aware domain translation network (COSMOS 3.1 / 4.2, Algorithm 1 step 2).

The step (eq. (1) for the generators, eq. (3) for the discriminators; Adam with a multiplicative decay
per epoch) is :class:`cosmos.translation.trainer.TranslatorTrainer`; this module runs the epochs
around it. Losses logged per epoch, unweighted per term, plus the weighted generator ``total``, and the
label-free translation fidelity (``fidelity_*``, :mod:`cosmos.translation.fidelity`) of a fixed
sample of ``translator.fidelity_cases`` volumes (:mod:`cosmos.translation.fidelity_sample`): the
losses alone cannot tell a translator from a blurring identity map.

Resumable: ``OUT/checkpoint.pt`` after every epoch (atomic), with networks, optimisers, schedulers,
RNG states, history and the MLflow run id (also in ``OUT/run.json`` from the start), so a killed run
continues the SAME MLflow run from the last finished epoch; a finished run returns at once.
Output layout::

    OUT/model/          self-contained S->T generator (see model_io)   -> TranslatorResult.model_dir
    OUT/samples/        epoch_XXX.png + final.png (Fig.-3-style grids, also MLflow artifacts)
    OUT/fidelity.json   translation fidelity of the final generator (cosmos.translation.fidelity)
    OUT/checkpoint.pt   resume state;  OUT/run.json  run id;  OUT/result.json  finished marker
    OUT/mlflow/         the embedded MLflow store when no tracking URI is given

Split by job, each of these names still importable from here: :mod:`~cosmos.translation.slice_data`
(the training slices), :mod:`~cosmos.translation.trainer` (networks, optimisers, one step),
:mod:`~cosmos.translation.sampling` (which slices an epoch and the sample grid use),
:mod:`~cosmos.translation.fidelity_sample` (the per-epoch fidelity sample) and
:mod:`~cosmos.translation.checkpoint` (atomic writes, RNG states, the resume check).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos import tracking
from cosmos.config import CosmosConfig
from cosmos.cpu import apply_threads
from cosmos.errors import CosmosError
from cosmos.logs import progress
from cosmos.secrets import redact_params
from cosmos.translation import fidelity
from cosmos.translation.checkpoint import (  # noqa: F401 (re-exported)
    _RESUME_MUST_MATCH,
    _atomic_json,
    _atomic_torch_save,
    _check_resume_compatible,
    _rng_state,
    _seed_everything,
    _set_rng_state,
)
from cosmos.translation.conversion import pick_device
from cosmos.translation.fidelity_sample import FidelitySample, fidelity_sample  # noqa: F401 (re-exported)
from cosmos.translation.model_io import log_model, register_model, save_model_dir
from cosmos.translation.samples import save_sample_grid
from cosmos.translation.sampling import epoch_indices, pick_reference_targets, pick_sample_slices, random_flips
from cosmos.translation.slice_data import SliceData, grid_from_config, load_slices  # noqa: F401 (re-exported)
from cosmos.translation.slices import random_window, windows_per_slice
from cosmos.translation.trainer import TranslatorTrainer

log = logging.getLogger(__name__)

FIDELITY_JSON = "fidelity.json"
LOSS_TERMS = ("cycle", "kspace", "adv_G", "adv_D", "identity", "seg_src", "seg_translated", "total")


@dataclass
class TranslatorResult:
    model_dir: Path
    run_id: str | None
    model_version: str | None
    epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    model_uri: str | None = None  # the logged (not necessarily registered) MLflow model


# ---------------------------------------------------------------------------- MLflow
def _start_or_resume_run(run_json: Path, cfg: CosmosConfig, digest: str):
    """Re-open the run recorded in ``run.json`` (same MLflow run across restarts) or start one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    params = {**cfg.flat("translator"), "profile": cfg.profile, "seed": cfg.seed}
    run_id = json.loads(run_json.read_text()).get("run_id") if run_json.exists() else None
    if run_id:
        try:
            run = mlflow.start_run(run_id=run_id)
            logged = mlflow.get_run(run_id).data.params
            new = {k: v for k, v in params.items() if k not in logged}
            changed = {k: v for k, v in params.items() if k in logged and logged[k] != str(v)}
            if new:
                mlflow.log_params(redact_params(new))
            for k, v in changed.items():  # params are immutable in MLflow: record the resume value as a tag
                mlflow.set_tag(f"resumed.{k}", str(v))
            log.info("resuming MLflow run %s", run_id)
            return run
        except MlflowException as exc:
            log.warning("cannot re-open MLflow run %s (%s); starting a new run", run_id, exc.message)
    run = mlflow.start_run(run_name=f"translator-{cfg.profile}{'' if cfg.translator.segmentor else '-noseg'}")
    mlflow.log_params(redact_params(params))
    mlflow.set_tags(
        {
            "cosmos.stage": "translator",
            "dataset_digest": digest,
            "git_commit": tracking.git_commit(),
            "profile": cfg.profile,
            "segmentor": str(cfg.translator.segmentor),
        }
    )
    _atomic_json({"run_id": run.info.run_id}, run_json)
    return run


# ---------------------------------------------------------------------------- entry point
def train_translator(
    data_dir: str | Path, out_dir: str | Path, cfg: CosmosConfig, tracking_uri: str | None = None, register: bool = True
) -> TranslatorResult:
    """Train the target-aware CycleGAN on a crossMoDA root; log to MLflow; register the S->T generator.

    Resumable (see module docstring). ``register=False`` still logs the model to the run but creates
    no registry version.
    """
    import mlflow

    t = cfg.translator
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir, samples_dir = out / "model", out / "samples"
    ckpt_path, run_json, result_json = out / "checkpoint.pt", out / "run.json", out / "result.json"

    if result_json.exists():
        done = json.loads(result_json.read_text())
        if done.get("epochs", -1) >= t.epochs and (model_dir / "translator.json").exists():
            log.info(
                "translator already trained in %s (%d epochs, run %s); nothing to do",
                out,
                done["epochs"],
                done.get("run_id"),
            )
            return TranslatorResult(
                model_dir,
                done.get("run_id"),
                done.get("model_version"),
                done["epochs"],
                done.get("history", []),
                done.get("model_uri"),
            )

    device = pick_device(t.device)
    if device.type == "cpu":  # 0 = auto: this process's share of the cores (cosmos.cpu)
        log.info("translator: %d CPU thread(s)", apply_threads(t.num_threads))
    _seed_everything(cfg.seed)
    grid = grid_from_config(cfg)
    trainer = TranslatorTrainer(cfg, device)
    start_epoch, history = 0, []
    # select_epoch=fidelity: {"epoch", "score", "top", "g_st", "fidelity"} of the chosen epoch (fidelity.EpochChoice)
    best: dict[str, Any] | None = None
    kept_fid: fidelity.Fidelity | None = None  # figures of the generator to save, as scored during training
    if ckpt_path.exists():
        try:
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        except Exception as exc:
            raise CosmosError(
                f"{ckpt_path}: unreadable checkpoint ({type(exc).__name__}); delete it to start over"
            ) from None
        _check_resume_compatible(ckpt["config"], cfg, out)
        trainer.load_state_dict(ckpt["state"])
        _set_rng_state(ckpt["rng"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        best = ckpt.get("best")
        for sched in (trainer.sched_g, trainer.sched_d):  # keep the decay going, at the configured rate
            sched.gamma = t.lr_decay
        log.info("resuming translator training from %s after epoch %d", ckpt_path, start_epoch)

    data = load_slices(data_dir, grid, random_crop=t.random_crop)
    digest = tracking.dataset_digest(data.files)
    tracking.setup(tracking.resolve_tracking_uri(tracking_uri, out), cfg.tracking.experiment)
    run = _start_or_resume_run(run_json, cfg, digest)
    run_id = run.info.run_id
    try:
        fg_idx = np.nonzero(data.foreground)[0]
        sample_idx = pick_sample_slices(data)
        sample_src = data.source[sample_idx].float()
        sample_lab = data.labels[sample_idx].numpy()
        sample_tgt = data.target[pick_reference_targets(data, len(sample_idx))].float()
        fid_sample = fidelity_sample(data_dir, t.fidelity_cases, grid, t.convert_batch_size)
        choice = fidelity.EpochChoice(fidelity.tie_margin(len(fid_sample.source) if fid_sample else 1))
        if best is not None:  # resumed: the chosen epoch so far and the top score it was measured against
            choice.epoch, choice.score = int(best["epoch"]), float(best["score"])
            choice.top = float(best.get("top", best["score"]))
        per_epoch = t.slices_per_epoch or max(len(data.source), len(data.target))
        windows = windows_per_slice(data.source.shape[-1], t.image_size) if t.random_crop else 1
        per_epoch *= windows
        steps = max(1, int(math.ceil(per_epoch / t.batch_size)))
        if windows > 1:
            log.info(
                "a %d px canvas holds %d windows of %d px: %d steps per epoch (translator.slices_per_epoch x %d)",
                data.source.shape[-1],
                windows,
                t.image_size,
                steps,
                windows,
            )

        def write_samples(name: str, epoch: int) -> None:
            fake, seg = trainer.preview(sample_src)
            png = save_sample_grid(
                samples_dir / f"{name}.png",
                sample_src[:, 0].numpy(),
                fake,
                seg,
                sample_lab,
                sample_tgt[:, 0].numpy(),
                title=f"{cfg.profile} translator, epoch {epoch}",
            )
            mlflow.log_artifact(str(png), artifact_path="samples")

        for epoch in range(start_epoch, t.epochs):
            t0 = time.time()
            rng = np.random.default_rng([cfg.seed, epoch])
            src_idx = epoch_indices(rng, len(data.source), steps * t.batch_size, fg_idx, t.fg_oversample)
            tgt_idx = epoch_indices(rng, len(data.target), steps * t.batch_size)
            seg_trans_on = t.segmentor and epoch >= t.seg_translated_start_epoch
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            for b in progress(range(steps), desc=f"translator epoch {epoch + 1}/{t.epochs}", unit="batch"):
                sl = slice(b * t.batch_size, (b + 1) * t.batch_size)
                x_s = data.source[src_idx[sl]].float()
                y_s = data.labels[src_idx[sl]].long()
                x_t = data.target[tgt_idx[sl]].float()
                side = data.source.shape[-1]
                if side > t.image_size:  # random_crop: a random window of each batch's canvas
                    win = random_window(rng, side, t.image_size)
                    x_s, y_s = x_s[win], y_s[win]
                    x_t = x_t[random_window(rng, side, t.image_size)]
                if t.flip_augment:
                    x_s, y_s = random_flips(rng, x_s, y_s)
                    (x_t,) = random_flips(rng, x_t)
                terms = trainer.step(x_s.to(device), y_s.to(device), x_t.to(device), seg_trans_on)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
            trainer.sched_g.step()
            trainer.sched_d.step()
            means = {k: sums[k] / counts[k] for k in LOSS_TERMS if k in sums}
            secs = time.time() - t0
            scored = fid_sample.score(trainer) if fid_sample is not None else None
            fid = scored.metrics() if scored is not None else {}
            kept_fid = scored  # the figures of the generator that will be saved (last epoch so far)
            if t.select_epoch == "fidelity" and scored is not None:
                if choice.offer(epoch + 1, scored.score()):
                    state = {k: v.detach().cpu().clone() for k, v in trainer.g_st.state_dict().items()}
                    best = {"epoch": epoch + 1, "score": choice.score, "g_st": state, "fidelity": scored}
                if best is not None:
                    best["top"] = choice.top
                    kept_fid = best.get("fidelity")
            history.append({"epoch": epoch + 1, **means, **fid, "seconds": secs})
            mlflow.log_metrics(
                {
                    **means,
                    **fid,
                    "lr": trainer.opt_g.param_groups[0]["lr"],
                    "slices_per_s": steps * t.batch_size / max(secs, 1e-9),
                },
                step=epoch + 1,
            )
            log.info(
                "translator epoch %d/%d (%.1fs): %s%s%s",
                epoch + 1,
                t.epochs,
                secs,
                " ".join(f"{k}={v:.4f}" for k, v in means.items()),
                "" if seg_trans_on or not t.segmentor else " (seg_translated not yet in the loss)",
                "".join(f" {k}={v:.3f}" for k, v in fid.items()),
            )
            if t.sample_every > 0 and (epoch + 1) % t.sample_every == 0:
                write_samples(f"epoch_{epoch + 1:03d}", epoch + 1)
            _atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "state": trainer.state_dict(),
                    "rng": _rng_state(),
                    "history": history,
                    "run_id": run_id,
                    "config": cfg.flat("translator"),
                    "best": best,
                },
                ckpt_path,
            )

        final_epoch = max(start_epoch, t.epochs)
        selected_epoch = final_epoch
        if best is not None:  # select_epoch=fidelity: the latest near-best generator, not a collapsed last one
            trainer.g_st.load_state_dict(best["g_st"])
            selected_epoch = int(best["epoch"])
            log.info(
                "translator: keeping epoch %d (fidelity score %.3f; best %.3f, ties within %.3f)",
                selected_epoch,
                best["score"],
                choice.top,
                choice.margin,
            )
            mlflow.set_tag("selected_epoch", str(selected_epoch))
        write_samples("final", selected_epoch)
        save_model_dir(
            trainer.g_st,
            grid,
            model_dir,
            extra={
                "trained_epochs": final_epoch,
                "selected_epoch": selected_epoch,
                "profile": cfg.profile,
                "seed": cfg.seed,
                "mlflow_run_id": run_id,
                "dataset_digest": digest,
                "segmentor": t.segmentor,
                "gan_loss": t.gan_loss,
                "loss_weights": {
                    k: getattr(t, k)
                    for k in ("lambda_cycle", "lambda_adv", "lambda_identity", "lambda_seg", "lambda_kspace")
                },
            },
        )
        if fid_sample is not None:  # the final figures next to the model (and in the run)
            # the kept generator was scored in its epoch; score again only after a resume that trained nothing
            final_fid = kept_fid if kept_fid is not None else fid_sample.score(trainer)
            _atomic_json(
                {"epochs": final_epoch, "selected_epoch": selected_epoch, **final_fid.to_dict()}, out / FIDELITY_JSON
            )
            mlflow.log_artifact(str(out / FIDELITY_JSON))
        info = log_model(model_dir)
        version = None
        if register:
            version = register_model(
                info.model_uri,
                cfg.tracking.translator_model_name,
                tags={"run_id": run_id, "dataset_digest": digest, "profile": cfg.profile, "epochs": str(final_epoch)},
            )
            mlflow.set_tag("registered_version", version)
        mlflow.set_tag("model_uri", info.model_uri)
        _atomic_json(
            {
                "epochs": final_epoch,
                "run_id": run_id,
                "model_version": version,
                "model_dir": str(model_dir),
                "model_uri": info.model_uri,
                "history": history,
            },
            result_json,
        )
    except BaseException:
        mlflow.end_run(status="KILLED")
        raise
    mlflow.end_run()
    return TranslatorResult(model_dir, run_id, version, final_epoch, history, info.model_uri)
