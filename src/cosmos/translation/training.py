"""Training recipe of the target-aware domain translation network (COSMOS 3.1 / 4.2, Algorithm 1 step 2).

One step, with x^s a batch of ceT1 slices (labels y^s) and x^t an unpaired batch of hrT2 slices:

* generators (one Adam over G^{S->T} and G^{T->S}), eq. (1)::

      fake_t, seg_src   = G^{S->T}(x^s)          (one encoder pass, both decoders)
      rec_s,  seg_trans = G^{T->S}(fake_t)       (Seg^{T->S}(C^{S->T}(x^s)) comes with the cycle pass)
      fake_s = C^{T->S}(x^t);  rec_t = C^{S->T}(fake_s)
      total = l1 * cycle + l2 * adv_G + l3 * identity + l4 * (seg_src + [epoch > start] * seg_trans)

  Segmentation terms use only the slices whose label has foreground. ``segmentor=False`` builds
  no segmentation decoders: a pure CycleGAN.
* discriminators (one Adam over D^S and D^T): eq. (3) on real vs translated (detached) slices.

Adam (lr, beta1) with a multiplicative (exponential) decay per epoch (paper: 1e-4, "multiplicative
decay"). Losses logged per epoch, unweighted per term, plus the weighted generator ``total``, and the
label-free translation fidelity (``fidelity_*``, :mod:`cosmos.translation.fidelity`) of a fixed
sample of ``translator.fidelity_cases`` volumes: the losses alone cannot tell a translator from a
blurring identity map.

Resumable: ``OUT/checkpoint.pt`` after every epoch (atomic), with networks, optimisers, schedulers,
RNG states, history and the MLflow run id (also in ``OUT/run.json`` from the start), so a killed run
continues the SAME MLflow run from the last finished epoch; a finished run returns at once.
Output layout::

    OUT/model/          self-contained S->T generator (see model_io)   -> TranslatorResult.model_dir
    OUT/samples/        epoch_XXX.png + final.png (Fig.-3-style grids, also MLflow artifacts)
    OUT/fidelity.json   translation fidelity of the final generator (cosmos.translation.fidelity)
    OUT/checkpoint.pt   resume state;  OUT/run.json  run id;  OUT/result.json  finished marker
    OUT/mlflow/         the embedded MLflow store when no tracking URI is given
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos import tracking
from cosmos.config import CosmosConfig
from cosmos.cpu import apply_threads
from cosmos.data import nifti
from cosmos.data.layout import SOURCE_DIR, TARGET_DIR, discover
from cosmos.errors import CosmosError
from cosmos.logs import progress
from cosmos.secrets import redact_params
from cosmos.translation import fidelity, losses
from cosmos.translation.conversion import case_fidelity, convert_volume, pick_device, reference_of, spread_indices
from cosmos.translation.model_io import log_model, register_model, save_model_dir
from cosmos.translation.networks import Generator, GeneratorSpec, PatchDiscriminator, init_weights
from cosmos.translation.samples import save_sample_grid
from cosmos.translation.slices import (
    SliceGrid,
    canvas_size,
    centre_crop_or_pad,
    centre_crop_or_pad_labels,
    random_window,
    volume_to_training_slices,
    windows_per_slice,
)

log = logging.getLogger(__name__)

FIDELITY_JSON = "fidelity.json"
LOSS_TERMS = ("cycle", "kspace", "adv_G", "adv_D", "identity", "seg_src", "seg_translated", "total")
# Changing these between a checkpoint and a re-run would load weights into another architecture
# or silently change the experiment: refuse and ask for a new --out.
_RESUME_MUST_MATCH = (
    "base_channels",
    "levels",
    "disc_channels",
    "disc_layers",
    "image_size",
    "inplane_spacing",
    "segmentor",
    "gan_loss",
    "seg_loss",
    "norm_low_percentile",
    "norm_high_percentile",
)


@dataclass
class TranslatorResult:
    model_dir: Path
    run_id: str | None
    model_version: str | None
    epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    model_uri: str | None = None  # the logged (not necessarily registered) MLflow model


@dataclass
class SliceData:
    """All training slices in memory on the common grid (float16 images: half the RAM, ample precision)."""

    source: torch.Tensor  # (Ns, 1, S, S)
    labels: torch.Tensor  # (Ns, S, S) uint8
    target: torch.Tensor  # (Nt, 1, S, S)
    source_volume: np.ndarray  # (Ns,) volume index of each source slice
    target_volume: np.ndarray  # (Nt,) volume index of each target slice
    files: list[Path]

    @property
    def foreground(self) -> np.ndarray:
        return (self.labels.reshape(self.labels.shape[0], -1) > 0).any(dim=1).numpy()


def grid_from_config(cfg: CosmosConfig) -> SliceGrid:
    t = cfg.translator
    return SliceGrid(
        inplane_spacing=t.inplane_spacing,
        image_size=t.image_size,
        divisor=2**t.levels,
        low_percentile=t.norm_low_percentile,
        high_percentile=t.norm_high_percentile,
        windowed=t.random_crop,
    )


def load_slices(data_dir: str | Path, grid: SliceGrid, random_crop: bool = False) -> SliceData:
    """Read source (ceT1 + Label) and target (hrT2) volumes of a crossMoDA root onto the slice grid.

    ``random_crop``: keep each slice whole on a common canvas (:func:`slices.canvas_size`) for random
    ``image_size`` windows at training time; otherwise every slice is centre-cropped to ``image_size``.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise CosmosError(f"{root}: data directory not found")
    ds = discover(root)
    if not ds.source:
        raise CosmosError(f"{root / SOURCE_DIR}: no crossmoda_*_ceT1.nii.gz source images")
    if not ds.target:
        raise CosmosError(f"{root / TARGET_DIR}: no crossmoda_*_hrT2.nii.gz target images")
    missing = [c.image.name for c in ds.source if c.label is None]
    if missing:
        raise CosmosError(f"{root / SOURCE_DIR}: no label (crossmoda_*_Label.nii.gz) for {', '.join(missing)}")
    src, labs, vol_idx, tgt, tgt_idx, files = [], [], [], [], [], []
    empty_labels: list[str] = []  # legal, but worth saying: they teach the segmentor "nothing here"
    for i, case in enumerate(progress(ds.source, desc="load ceT1", unit="vol")):
        label_path = case.label
        assert label_path is not None  # every source case has its label (checked above)
        img = nifti.load(case.image)
        lab = nifti.load(label_path, label=True)
        problem = nifti.same_grid(img, lab)
        if problem:
            raise CosmosError(f"{label_path}: label is not on the grid of {case.image.name} ({problem})")
        if not np.any(lab.data):
            empty_labels.append(case.case_id)
        s, l_ = volume_to_training_slices(img.data, img.affine, grid, lab.data, crop=not random_crop)
        assert l_ is not None  # labels in, labels out
        src.append(s.half())
        labs.append(l_)
        vol_idx.append(np.full(len(s), i))
        files += [case.image, label_path]
    for j, case in enumerate(progress(ds.target, desc="load hrT2", unit="vol")):
        img = nifti.load(case.image)
        t, _ = volume_to_training_slices(img.data, img.affine, grid, crop=not random_crop)
        tgt.append(t.half())
        tgt_idx.append(np.full(len(t), j))
        files.append(case.image)
    if random_crop:  # whole slices of varying extent: onto one canvas
        side = canvas_size([(int(x.shape[-2]), int(x.shape[-1])) for x in src + tgt], grid)
        src = [centre_crop_or_pad(x, (side, side)) for x in src]
        labs = [centre_crop_or_pad_labels(x, side) for x in labs]
        tgt = [centre_crop_or_pad(x, (side, side)) for x in tgt]
    data = SliceData(
        torch.cat(src), torch.cat(labs), torch.cat(tgt), np.concatenate(vol_idx), np.concatenate(tgt_idx), files
    )
    if len(data.source) == 0 or len(data.target) == 0:
        raise CosmosError(f"{root}: every slice is empty (constant) in the source or target images")
    log.info(
        "training slices on a %dx%d grid at %.2f mm: %d ceT1 (%d with foreground), %d hrT2%s",
        data.source.shape[-1],
        data.source.shape[-1],
        grid.inplane_spacing,
        len(data.source),
        int(data.foreground.sum()),
        len(data.target),
        f"; {len(empty_labels)} source label(s) with no foreground at all: {', '.join(empty_labels)}"
        if empty_labels
        else "",
    )
    return data


class TranslatorTrainer:
    """Networks, optimisers and the per-step recipe; no I/O besides what the caller asks for."""

    def __init__(self, cfg: CosmosConfig, device: torch.device):
        t = cfg.translator
        self.cfg, self.t, self.device = cfg, t, device
        spec = GeneratorSpec(base_channels=t.base_channels, levels=t.levels, with_seg=t.segmentor)
        self.g_st, self.g_ts = Generator(spec), Generator(spec)
        self.d_s = PatchDiscriminator(1, t.disc_channels, t.disc_layers)
        self.d_t = PatchDiscriminator(1, t.disc_channels, t.disc_layers)
        for net in (self.g_st, self.g_ts, self.d_s, self.d_t):
            init_weights(net)
            net.to(device)
        g_params = list(self.g_st.parameters()) + list(self.g_ts.parameters())
        d_params = list(self.d_s.parameters()) + list(self.d_t.parameters())
        self.opt_g = torch.optim.Adam(g_params, lr=t.lr, betas=(t.beta1, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=t.lr, betas=(t.beta1, 0.999))
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma=t.lr_decay)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma=t.lr_decay)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "g_st": self.g_st.state_dict(),
            "g_ts": self.g_ts.state_dict(),
            "d_s": self.d_s.state_dict(),
            "d_t": self.d_t.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("g_st", "g_ts", "d_s", "d_t", "opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])

    # ------------------------------------------------------------------ one step
    def step(
        self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, seg_translated_on: bool
    ) -> dict[str, float]:
        t, kind = self.t, self.t.gan_loss
        for d in (self.d_s, self.d_t):
            d.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        fake_t, seg_src_logits = self.g_st.translate_and_segment(x_s)
        rec_s, seg_trans_logits = self.g_ts.translate_and_segment(fake_t)
        fake_s = self.g_ts(x_t)
        rec_t = self.g_st(fake_s)
        cycle = losses.cycle_loss(x_s, rec_s, x_t, rec_t)
        identity = (
            losses.identity_loss(x_t, self.g_st(x_t), x_s, self.g_ts(x_s))
            if t.lambda_identity > 0
            else x_s.new_zeros(())
        )
        adv_g = losses.generator_adversarial_loss(self.d_t(fake_t), self.d_s(fake_s), kind)
        total = t.lambda_cycle * cycle + t.lambda_adv * adv_g + t.lambda_identity * identity
        kspace = losses.kspace_cycle_loss(x_s, rec_s, x_t, rec_t) if t.lambda_kspace > 0 else None
        if kspace is not None:  # the challenge report's k-space cycle term (off in the paper preset)
            total = total + t.lambda_kspace * kspace
        seg_src = losses.segmentation_loss_term(seg_src_logits, y_s, t.seg_loss)
        seg_trans = losses.segmentation_loss_term(seg_trans_logits, y_s, t.seg_loss)
        if seg_src is not None:
            total = total + t.lambda_seg * seg_src
        if seg_trans is not None and seg_translated_on:
            total = total + t.lambda_seg * seg_trans
        total.backward()
        self.opt_g.step()

        for d in (self.d_s, self.d_t):
            d.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        adv_d = losses.discriminator_loss(self.d_t(x_t), self.d_t(fake_t.detach()), kind) + losses.discriminator_loss(
            self.d_s(x_s), self.d_s(fake_s.detach()), kind
        )
        adv_d.backward()
        self.opt_d.step()
        out = {
            "cycle": cycle.item(),
            "adv_G": adv_g.item(),
            "adv_D": adv_d.item(),
            "identity": identity.item(),
            "total": total.item(),
        }
        if kspace is not None:
            out["kspace"] = kspace.item()
        if seg_src is not None:
            out["seg_src"] = seg_src.item()
        if seg_trans is not None:
            out["seg_translated"] = seg_trans.item()
        return out

    @torch.no_grad()
    def preview(self, x_s: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(pseudo-hrT2, segmentor argmax) for the sample grid."""
        self.g_st.eval()
        fake, seg = self.g_st.translate_and_segment(x_s.to(self.device))
        self.g_st.train()
        return fake[:, 0].cpu().numpy(), (seg.argmax(1).cpu().numpy() if seg is not None else None)


# ---------------------------------------------------------------------------- sampling
def epoch_indices(
    rng: np.random.Generator, n: int, count: int, preferred: np.ndarray | None = None, preferred_fraction: float = 0.0
) -> np.ndarray:
    """``count`` slice indices: shuffled passes over all ``n`` slices, with ``preferred_fraction`` of
    them drawn from ``preferred`` (foreground slices) instead."""
    reps = int(math.ceil(count / n))
    idx = np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]
    if preferred is not None and len(preferred) and preferred_fraction > 0:
        swap = rng.random(count) < preferred_fraction
        idx[swap] = rng.choice(preferred, size=int(swap.sum()))
    return idx


def random_flips(rng: np.random.Generator, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """The same random in-plane flips (each axis p=0.5, per sample) applied to aligned tensors."""
    n = tensors[0].shape[0]
    fh, fv = rng.random(n) < 0.5, rng.random(n) < 0.5
    out = []
    for x in tensors:
        x = x.clone()
        if fh.any():
            x[torch.from_numpy(fh)] = x[torch.from_numpy(fh)].flip(-1)
        if fv.any():
            x[torch.from_numpy(fv)] = x[torch.from_numpy(fv)].flip(-2)
        out.append(x)
    return out


def pick_sample_slices(data: SliceData, count: int = 4) -> np.ndarray:
    """Largest-foreground slice of the first ``count`` volumes that have foreground."""
    area = (data.labels.reshape(len(data.labels), -1) > 0).sum(1).numpy()
    chosen = []
    for v in np.unique(data.source_volume):
        idx = np.nonzero(data.source_volume == v)[0]
        best = idx[np.argmax(area[idx])]
        if area[best] > 0:
            chosen.append(best)
        if len(chosen) == count:
            break
    if not chosen:
        chosen = list(range(min(count, len(data.source))))
    return np.asarray(chosen)


def pick_reference_targets(data: SliceData, count: int = 4) -> np.ndarray:
    """Real hrT2 slices for the reference column: per volume, the slice with the most bright (fluid)
    pixels, i.e. through the cistern / canals where VS and cochlea are."""
    bright = (data.target.float() > 0.3).reshape(len(data.target), -1).sum(1).numpy()
    chosen = []
    for v in np.unique(data.target_volume)[:count]:
        idx = np.nonzero(data.target_volume == v)[0]
        chosen.append(idx[np.argmax(bright[idx])])
    return np.asarray(chosen)


# ---------------------------------------------------------------------------- fidelity
@dataclass
class FidelitySample:
    """A fixed set of source volumes (native grids, with their labels) scored after every epoch.

    Scored exactly as conversion scores them (:func:`conversion.convert_volume` on the whole native
    volume, then :func:`conversion.case_fidelity`; the reference from the native hrT2 files), because
    what the teacher trains on is the conversion. Why not the training canvas: the generator's
    InstanceNorm sees a slice's statistics, and a slice padded onto the training canvas is not the
    slice conversion translates (measured on life-sized heads: the canvas said the cochlea was bright
    in 6 of 6 cases, the conversion of the same generator made it dark in 8 of 8).
    """

    source: list[np.ndarray]  # per source volume, native grid
    affines: list[np.ndarray]
    labels: list[np.ndarray]
    ref_q: np.ndarray  # quantile function of the real hrT2 sample (native grids)
    n_target: int
    grid: SliceGrid
    batch_size: int = 16

    def score(self, trainer: TranslatorTrainer) -> fidelity.Fidelity:
        rows = []
        try:
            for vol, affine, lab in zip(self.source, self.affines, self.labels):
                pseudo = convert_volume(trainer.g_st, vol, affine, self.grid, self.batch_size, trainer.device)
                rows.append(case_fidelity(pseudo, lab, vol, affine, self.ref_q, self.grid))
        finally:
            trainer.g_st.train()  # convert_volume leaves the generator in eval mode
        return fidelity.summarise(rows, self.n_target)


def fidelity_sample(data_dir: str | Path, count: int, grid: SliceGrid, batch_size: int = 16) -> FidelitySample | None:
    """``count`` source volumes (with their labels) and ``count`` target volumes, read from ``data_dir``.

    Why training volumes: conversion translates exactly these ceT1 volumes, and the GAN is judged
    against exactly this hrT2 distribution (CycleGAN is transductive); the figure needs no label of
    the target domain. Volumes are evenly spread over the case list, so 4 of 8 is not the first 4.
    """
    if count <= 0:
        return None
    ds = discover(Path(data_dir))
    sources = [ds.source[i] for i in spread_indices(len(ds.source), count) if ds.source[i].label is not None]
    if not sources or not ds.target:
        return None
    vols, affines, labels = [], [], []
    for case in sources:
        img = nifti.load(case.image)
        assert case.label is not None
        vols.append(img.data)
        affines.append(img.affine)
        labels.append(nifti.load(case.label, label=True).data)
    targets = [ds.target[i].image for i in spread_indices(len(ds.target), count)]
    return FidelitySample(vols, affines, labels, reference_of(targets, grid), len(targets), grid, batch_size)


# ---------------------------------------------------------------------------- resume
def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resume_compatible(saved: dict[str, Any], cfg: CosmosConfig, out: Path) -> None:
    now = cfg.flat("translator")
    diff = [k for k in _RESUME_MUST_MATCH if saved.get(f"translator.{k}") != now.get(f"translator.{k}")]
    if diff:
        pairs = ", ".join(f"{k}: {saved.get('translator.' + k)!r} -> {now.get('translator.' + k)!r}" for k in diff)
        raise CosmosError(
            f"{out}: holds a translator training with a different setup ({pairs}); "
            "use a new --out to train this configuration"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
