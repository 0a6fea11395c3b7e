"""The target-aware domain translation network's networks, optimisers and training step (COSMOS 3.1 / 4.2,
Algorithm 1 step 2); the loop around it is :func:`cosmos.translation.training.train_translator`.

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
decay"). No I/O: the caller reads the data, writes checkpoints and logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cosmos.config import CosmosConfig
from cosmos.translation import losses
from cosmos.translation.networks import Generator, GeneratorSpec, PatchDiscriminator, init_weights


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
