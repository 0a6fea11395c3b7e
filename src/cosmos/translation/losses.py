"""The loss terms of COSMOS eq. (1)-(5), each a small function that can be checked by hand.

Weights (eq. 1): lambda_1 cycle, lambda_2 adversarial, lambda_3 identity, lambda_4 segmentation,
from ``cfg.translator`` (paper preset 0.01 / 0.1 / 0.5 / 1 by default; ``report`` preset in
``cosmos.config.LOSS_PRESETS``).

GAN loss (eq. 3). The paper writes the log-likelihood (minimax) form
``log D(x_real) + log(1 - D(G(x)))``. ``gan_loss="bce"`` (default) implements exactly that for the
discriminators as binary cross-entropy on logits; for the generators it uses the usual
non-saturating equivalent ``-log D(G(x))`` (Goodfellow et al. 2014; what CycleGAN's code does),
because ``log(1 - D(G(x)))`` has vanishing gradients when D wins early. ``gan_loss="lsgan"`` is the
least-squares variant of the CycleGAN paper (targets 1 for real, 0 for fake).

K-space cycle term (optional, ``translator.lambda_kspace``; the team's crossMoDA challenge report,
not the paper, so 0 in the ``paper`` preset): the same two cycles as eq. (2), compared in k-space,
as the L1 between the LOG-magnitudes ``log(1 + |FFT2(x)|)`` (orthonormal 2D FFT over each slice).
Why log-magnitude: |FFT| spans orders of magnitude between the DC term and the high frequencies,
so a plain-magnitude L1 would only see the low frequencies, which the image-domain L1 already
covers; the log puts fine detail (edges of a ~3 mm cochlea) on an equal footing. Why magnitude
only: the phase carries the position, which the image-domain cycle term already pins down.

L1 terms (eq. 2, 4) are means over pixels (the usual reading of ||.||_1 in CycleGAN code), so the
weights do not depend on the image size.

Segmentation (eq. 5) uses a soft Dice over the foreground classes (VS = 1, cochlea = 2), computed
only on the slices whose label has foreground (paper 4.2), pooled over those slices ("batch Dice":
far more stable than per-slice Dice on tiny structures), and averaged over the foreground classes
that are present in the selected slices (a class absent from every selected slice would give a
Dice of 0 whatever the prediction, i.e. a constant loss with a pathological gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOREGROUND_CLASSES = (1, 2)
DICE_EPS = 1e-5
KSPACE_EPS = 1e-8  # inside the square root: |F| has no gradient at exactly 0


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def cycle_loss(x_s: torch.Tensor, rec_s: torch.Tensor, x_t: torch.Tensor, rec_t: torch.Tensor) -> torch.Tensor:
    """Eq. (2): ||x^s - C^{T->S}(C^{S->T}(x^s))||_1 + ||x^t - C^{S->T}(C^{T->S}(x^t))||_1."""
    return l1(x_s, rec_s) + l1(x_t, rec_t)


def kspace_log_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + |FFT2(x)|)`` over the last two axes (orthonormal, so the scale does not grow with size)."""
    f = torch.fft.fft2(x.float(), norm="ortho")
    return torch.log1p(torch.sqrt(f.real.square() + f.imag.square() + KSPACE_EPS))


def kspace_cycle_loss(x_s: torch.Tensor, rec_s: torch.Tensor, x_t: torch.Tensor, rec_t: torch.Tensor) -> torch.Tensor:
    """Eq. (2) in k-space: L1 of the FFT log-magnitudes of each input and its cycle reconstruction."""
    return l1(kspace_log_magnitude(x_s), kspace_log_magnitude(rec_s)) + l1(
        kspace_log_magnitude(x_t), kspace_log_magnitude(rec_t)
    )


def identity_loss(x_t: torch.Tensor, idt_t: torch.Tensor, x_s: torch.Tensor, idt_s: torch.Tensor) -> torch.Tensor:
    """Eq. (4): ||x^t - C^{S->T}(x^t)||_1 + ||x^s - C^{T->S}(x^s)||_1."""
    return l1(x_t, idt_t) + l1(x_s, idt_s)


def gan_term(logits: torch.Tensor, real: bool, kind: str = "bce") -> torch.Tensor:
    """One discriminator output against the real (1) or fake (0) target.

    ``bce``: -log sigmoid(logit) for real, -log(1 - sigmoid(logit)) for fake (eq. 3's log-likelihood).
    ``lsgan``: (D - 1)^2 for real, D^2 for fake.
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    raise ValueError(f"unknown GAN loss {kind!r} (bce or lsgan)")


def generator_adversarial_loss(d_t_fake: torch.Tensor, d_s_fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Generators' side of eq. (3): both translated images should be judged real."""
    return gan_term(d_t_fake, True, kind) + gan_term(d_s_fake, True, kind)


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """One discriminator's side of eq. (3): real judged real, translated judged fake."""
    return gan_term(d_real, True, kind) + gan_term(d_fake, False, kind)


def foreground_slices(labels: torch.Tensor) -> torch.Tensor:
    """Bool mask over the batch: slices whose label has any foreground (paper 4.2)."""
    return (labels.reshape(labels.shape[0], -1) > 0).any(dim=1)


def soft_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, classes: tuple[int, ...] = FOREGROUND_CLASSES
) -> torch.Tensor:
    """1 - mean soft Dice over ``classes`` present in ``labels``, pooled over the batch.

    ``logits``: (N, C, H, W); ``labels``: (N, H, W) integer. Callers pass only foreground slices.
    Returns 0 (with a graph, so ``backward`` still works) when no class is present.
    """
    probs = torch.softmax(logits, dim=1)
    dices = []
    for c in classes:
        target = (labels == c).to(probs.dtype)
        if target.sum() == 0:
            continue
        p = probs[:, c]
        inter = (p * target).sum()
        dices.append((2 * inter + DICE_EPS) / (p.sum() + target.sum() + DICE_EPS))
    if not dices:
        return logits.sum() * 0.0
    return 1.0 - torch.stack(dices).mean()


def segmentation_loss_term(
    logits: torch.Tensor | None, labels: torch.Tensor, kind: str = "dice"
) -> torch.Tensor | None:
    """One line of eq. (5) on the foreground slices only; None when the batch has none.

    ``kind="dice"``: 1 - soft Dice, as eq. (5). ``kind="dice_ce"``: plus pixel-wise cross-entropy
    (nnU-Net's loss). Why offer it: from a uniform softmax, the Dice gradient per pixel is tiny for
    structures of a few dozen pixels (the cochlea), so short CPU trainings learn them far faster
    with the CE term; the ``paper`` profile keeps pure Dice.
    """
    if logits is None:
        return None
    keep = foreground_slices(labels)
    if not bool(keep.any()):
        return None
    loss = soft_dice_loss(logits[keep], labels[keep])
    if kind == "dice_ce":
        loss = loss + F.cross_entropy(logits[keep], labels[keep].long())
    elif kind != "dice":
        raise ValueError(f"unknown segmentation loss {kind!r} (dice or dice_ce)")
    return loss
