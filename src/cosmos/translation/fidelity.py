"""Translation fidelity without target labels: does pseudo-hrT2 look like hrT2?

Why: the translator's losses say nothing about whether the contrast was learned. A GAN that never
converges still lowers the cycle and identity terms by passing ceT1 through blurred, and the
nnU-Net teacher trained on that learns "bright = VS", which on real hrT2 segments the bright CSF.
Two figures catch that, using only the source labels and unlabelled real hrT2:

* **Intensity distance** (``w1``): the Wasserstein-1 distance between the intensity distribution
  inside the head of each pseudo-hrT2 volume and the pooled distribution of the real hrT2 volumes,
  both normalised per volume exactly as the translator normalises (robust min-max to [-1, 1], see
  :mod:`cosmos.translation.slices`), so a global scale or offset costs nothing. Units: the [-1, 1]
  range (0 = same histogram, 2 = the maximum). ``w1_untranslated`` is the same figure for the ceT1
  inputs themselves: the distance translation has to close.
* **Contrast signs** (known anatomy of hrT2): on the slices through the structure, the VS mean must
  lie BELOW the ``fluid_percentile`` of the rest of the head (hrT2: grey tumour against bright CSF;
  ceT1: the enhancing tumour is the brightest thing), and the cochlea mean ABOVE the head's median
  (hrT2: bright labyrinth fluid; ceT1: dark grey in black bone). ``vs_darker_than_fluid`` and
  ``cochlea_bright`` are the fractions of source cases where the sign holds; ``vs_fluid_contrast``
  is the mean of ``(q - vs_mean) / (q - median)`` (positive = hrT2-like, negative = ceT1-like).
* **Cochlea in dark bone** (``cochlea_in_dark_bone``): the cochlea mean ABOVE the mean of a
  ``SHELL_MM`` ring around it (in-plane), which is mostly the otic capsule: dense bone, dark on every
  MR sequence. It holds on real hrT2 and on ceT1 alike, so it does not tell the domains apart; it
  catches a translator that paints the bone bright (measured on life-sized phantom heads: a
  translation with the petrous bone bright and the tumour black passed both sign tests above, with a
  fidelity score of 0.89, and its teacher scored Dice 0.00; it failed this test in 8 of 8 cases,
  while real hrT2, ceT1 and the built-in phantom's translations pass it in every case).
* **VS not dark** (``vs_above_median``): the VS mean ABOVE the head's median on its slices. The head
  is mostly dark on hrT2 (bone, grey matter) and a schwannoma is intermediate, so on real hrT2 the VS
  mean ranks above 79-96 % of the head's voxels (both phantoms), on ceT1 above 99 %. Like the bone
  test it does not tell the domains apart; it catches a translator that inverts the tumour (the
  life-sized translation above: 0-3 %).

Head mask: normalised intensity above ``head_threshold`` (fraction of the [-1, 1] range) with the
holes filled slice by slice, so dark bone inside the scalp counts as head but the air around it does
not (air would otherwise dominate both histograms and hide the difference).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from cosmos.translation.slices import normalisation_range, normalise

QUANTILES = 512  # W1 from quantile functions sampled at this many levels (exact enough, fixed cost)
# 95th, not 99th: at p99 the noisy top of the ceT1 scalp and the enhancing VS overlap (sign test passed
# by half the untranslated phantom ceT1 cases); at p95 every ceT1 case fails and every real hrT2 passes.
FLUID_PERCENTILE = 95.0
HEAD_THRESHOLD = 0.1
SHELL_MM = 1.5  # the ring around the cochlea that cochlea_in_dark_bone compares it with
VS, COCHLEA = 1, 2


@dataclass
class Fidelity:
    """The per-sample figures (JSON-ready via :meth:`to_dict`; NaN = not computable, e.g. no VS)."""

    w1: float
    w1_untranslated: float
    vs_darker_than_fluid: float
    vs_fluid_contrast: float
    cochlea_bright: float
    n_source: int
    n_target: int
    per_case: list[dict[str, float]] = field(default_factory=list)
    cochlea_in_dark_bone: float = math.nan
    vs_above_median: float = math.nan

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fidelity:
        """The inverse of :meth:`to_dict` (``fidelity.json``; extra keys such as ``epochs`` are ignored)."""
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in data.items() if k in names}
        return cls(**kwargs)

    def score(self) -> float:
        """One label-free figure to pick a translator epoch by (higher = more hrT2-like).

        The mean pass rate of the two contrast-sign tests (0..1) minus the intensity distance as a
        fraction of the untranslated one (0 = same histogram as real hrT2, 1 = no closer than ceT1).
        Why both: the histogram alone is matched by a GAN that maps the bright VS onto the bright CSF
        (w1 small, signs failed); the signs alone are passed by a garbled early epoch (w1 above the
        untranslated distance). A NaN part (no VS or cochlea in the sample) counts as failed.
        """
        signs = [v if not math.isnan(v) else 0.0 for v in (self.vs_darker_than_fluid, self.cochlea_bright)]
        ratio = self.w1 / self.w1_untranslated if self.w1_untranslated > 0 else math.inf
        if math.isnan(ratio):
            ratio = math.inf
        anatomy = sum(0.0 if math.isnan(v) else 1.0 - v for v in (self.cochlea_in_dark_bone, self.vs_above_median))
        return float(sum(signs) / len(signs) - ratio - anatomy)

    def metrics(self, prefix: str = "fidelity_") -> dict[str, float]:
        """Scalar figures for ``mlflow.log_metrics`` (NaNs left out: MLflow cannot plot them)."""
        keys = (
            "w1",
            "w1_untranslated",
            "vs_darker_than_fluid",
            "vs_fluid_contrast",
            "cochlea_bright",
            "cochlea_in_dark_bone",
            "vs_above_median",
        )
        out = {prefix + k: float(getattr(self, k)) for k in keys if not math.isnan(float(getattr(self, k)))}
        score = self.score()
        if math.isfinite(score):
            out[prefix + "score"] = score
        return out


# The label-free checks a translation must pass (name in fidelity.json -> what it says when it fails).
SIGN_CHECKS: dict[str, str] = {
    "vs_darker_than_fluid": "VS darker than the fluid",
    "cochlea_bright": "cochlea above the head's median",
    "cochlea_in_dark_bone": "cochlea brighter than the bone around it",
    "vs_above_median": "VS above the head's median",
}


# The checks that gate a translation by default (checks.fidelity_gate): the two anatomy checks and the
# histogram. The two contrast signs (VS darker than fluid, cochlea above the median) are reported but do not
# gate: on the built-in phantom a translation whose VS stays brighter than the fluid (0 % of cases) still trains
# a teacher of mean Dice 0.8 (the structure-intensity augmentation makes it shape-driven), while a
# contrast-inverted one (bone bright, tumour black: 0 % on both anatomy checks) trains nothing.
GATE_DEFAULT = ("cochlea_in_dark_bone", "vs_above_median", "intensity")


def failed_checks(
    figures: Fidelity | Mapping[str, Any] | None, min_pass: float, gate: Sequence[str] | None = None
) -> list[str]:
    """The label-free translation checks that fail, as readable phrases ([] = all pass).

    ``gate``: the checks that count (names of :data:`SIGN_CHECKS` and ``intensity``; None = every one). A
    sign check fails when it holds in fewer than ``min_pass`` of the sampled cases (a figure that could not
    be computed, e.g. no VS in the sample, fails too); ``intensity`` fails when the pseudo-hrT2 histogram is
    no closer to real hrT2 than the untranslated ceT1's. ``min_pass`` 0 passes everything. Why these: each
    holds on real hrT2 anatomy (fluid bright, bone dark, a schwannoma intermediate), and a contrast-inverted
    translation (bone bright, tumour black) fails both anatomy checks while its histogram can match.
    """
    if figures is None or min_pass <= 0:
        return []
    values = figures.to_dict() if isinstance(figures, Fidelity) else dict(figures)
    wanted = set(gate) if gate is not None else {*SIGN_CHECKS, "intensity"}
    failed = []
    for key, text in SIGN_CHECKS.items():
        if key not in wanted:
            continue
        value = values.get(key)
        if value is None or not math.isfinite(float(value)) or float(value) < min_pass:
            shown = "n/a" if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.0f}%"
            failed.append(f"{text} in {shown} of cases (needs {100 * min_pass:.0f}%)")
    w1, w0 = values.get("w1"), values.get("w1_untranslated")
    if (
        "intensity" in wanted
        and w1 is not None
        and w0 is not None
        and math.isfinite(float(w1))
        and float(w1) >= float(w0)
    ):
        failed.append(f"intensity distance to real hrT2 {float(w1):.3f} not below the untranslated {float(w0):.3f}")
    return failed


def tie_margin(n_source: int) -> float:
    """How far apart two :meth:`Fidelity.score` values must be to count as different.

    One source case flipping one of the two sign tests moves the score by ``1 / (2 n)`` (flipping an
    anatomy check moves it by ``1 / n``, the coarser step): a smaller difference is within what one
    case decides, not a better translator.
    """
    return 0.5 / max(int(n_source), 1)


@dataclass
class EpochChoice:
    """``select_epoch=fidelity``: the LATEST epoch whose score is within :func:`tie_margin` of the best.

    Why the latest and not the best: a stable run's scores sit within a case of each other for most
    epochs, so "the best" is a coin toss among near-ties, and it tends to be an early epoch whose
    generator has not yet felt the segmentation terms (measured on the ``small`` phantom: the
    seg-aware translator's best score came at epoch 6 of 24, while its segmentation loss on translated
    images was still 1.3 against 0.23 at epoch 24; an nnU-Net teacher trained on the epoch-24
    translation scored mean Dice 0.83 on real hrT2 against 0.66 for epoch 6; docs/method.md).
    The latest near-best epoch is the paper's choice (the last epoch) unless the run has collapsed at
    its end, which is what the selection is there to catch (a collapsed epoch fails a sign test for
    most cases).

    Invariant: ``epoch`` is the latest epoch seen with ``score >= top - margin``. A new epoch within
    the margin of the (possibly raised) top replaces it; one below it cannot have raised the top, so
    the kept epoch stays valid.
    """

    margin: float
    top: float = -math.inf  # best score so far
    epoch: int = 0  # the chosen epoch (0 = none yet)
    score: float = -math.inf  # its score

    def offer(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s score; True when it becomes the chosen epoch (save its generator)."""
        if not math.isfinite(score):
            return False
        self.top = max(self.top, score)
        if score >= self.top - self.margin:
            self.epoch, self.score = epoch, score
            return True
        return False


def normalised(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """The translator's per-volume normalisation (robust min-max to [-1, 1])."""
    lo, hi = normalisation_range(volume, low, high)
    return normalise(volume, lo, hi)


def head_mask(norm: np.ndarray, threshold: float = HEAD_THRESHOLD, slice_axis: int = -1) -> np.ndarray:
    """Voxels inside the head of a [-1, 1] volume: above ``threshold`` of the range, holes filled per slice."""
    mask = np.asarray(norm) > (-1.0 + 2.0 * threshold)
    if mask.ndim == 2:
        return ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(mask, slice_axis, -1)
    filled = np.stack([ndimage.binary_fill_holes(moved[..., k]) for k in range(moved.shape[-1])], axis=-1)
    return np.moveaxis(filled, -1, slice_axis)


def quantile_function(values: np.ndarray, n: int = QUANTILES) -> np.ndarray:
    """Mid-point quantiles of ``values`` at ``n`` evenly spaced levels (NaN-filled when empty)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.full(n, np.nan)
    return np.quantile(values, (np.arange(n) + 0.5) / n)


def _structure_slices(label: np.ndarray, cls: int, slice_axis: int) -> np.ndarray:
    lab = np.moveaxis(label == cls, slice_axis, -1)
    return lab.reshape(-1, lab.shape[-1]).any(axis=0)


def contrast_figures(
    norm: np.ndarray,
    label: np.ndarray,
    slice_axis: int = -1,
    fluid_percentile: float = FLUID_PERCENTILE,
    threshold: float = HEAD_THRESHOLD,
    inplane_mm: float | None = None,
) -> dict[str, float]:
    """VS-to-fluid, cochlea-to-head and cochlea-to-bone contrast of one normalised volume with its
    source label.

    Only the slices holding the structure count (the fluid that surrounds it on hrT2 is there).
    NaN where the label lacks the structure or the head is empty. ``inplane_mm``: the in-plane voxel
    size, for the ``SHELL_MM`` ring (None: one voxel).
    """
    out = {
        "vs_darker_than_fluid": math.nan,
        "vs_fluid_contrast": math.nan,
        "cochlea_bright": math.nan,
        "cochlea_in_dark_bone": math.nan,
        "vs_above_median": math.nan,
    }
    head = head_mask(norm, threshold, slice_axis)
    img = np.moveaxis(norm, slice_axis, -1)
    hd = np.moveaxis(head, slice_axis, -1)
    lab = np.moveaxis(label, slice_axis, -1)
    for cls in (VS, COCHLEA):
        zs = _structure_slices(label, cls, slice_axis)
        if not zs.any():
            continue
        inside = lab[..., zs] == cls
        rest = hd[..., zs] & ~inside
        if not rest.any():
            continue
        s_mean = float(img[..., zs][inside].mean())
        values = img[..., zs][rest]
        median = float(np.median(values))
        if cls == VS:
            q = float(np.percentile(values, fluid_percentile))
            out["vs_darker_than_fluid"] = float(s_mean < q)
            out["vs_above_median"] = float(s_mean > median)
            out["vs_fluid_contrast"] = (q - s_mean) / max(q - median, 1e-6)
        else:
            out["cochlea_bright"] = float(s_mean > median)
            ring = _ring(lab == cls, inplane_mm) & (lab == 0)
            if ring.any():
                out["cochlea_in_dark_bone"] = float(s_mean > float(img[ring].mean()))
    return out


def _ring(mask: np.ndarray, inplane_mm: float | None) -> np.ndarray:
    """Voxels within ``SHELL_MM`` of ``mask`` in its slice (slices last), outside it."""
    r = 1 if not inplane_mm or inplane_mm <= 0 else max(1, int(round(SHELL_MM / inplane_mm)))
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    disk = (yy**2 + xx**2 <= r * r)[..., None]  # no reach across slices
    return ndimage.binary_dilation(mask, structure=disk) & ~mask


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


def reference_quantiles(
    real: Sequence[np.ndarray], slice_axis: int = -1, low: float = 0.5, high: float = 99.5
) -> np.ndarray:
    """Quantile function of the pooled in-head intensities of real hrT2 volumes (each normalised)."""
    if not real:
        raise ValueError("fidelity needs at least one real hrT2 volume")
    ref = []
    for vol in real:
        norm = normalised(vol, low, high)
        ref.append(norm[head_mask(norm, slice_axis=slice_axis)])
    return quantile_function(np.concatenate(ref))


def case_figures(
    pseudo: np.ndarray,
    label: np.ndarray,
    ref_q: np.ndarray,
    source: np.ndarray | None = None,
    slice_axis: int = -1,
    low: float = 0.5,
    high: float = 99.5,
    inplane_mm: float | None = None,
) -> dict[str, float]:
    """The figures of one pseudo-hrT2 volume (any scale) with its source label (+ its ceT1 input)."""

    def w1(vol: np.ndarray) -> tuple[np.ndarray, float]:
        norm = normalised(vol, low, high)
        q = quantile_function(norm[head_mask(norm, slice_axis=slice_axis)], len(ref_q))
        return norm, float(np.mean(np.abs(q - ref_q)))

    norm, row_w1 = w1(pseudo)
    row = {"w1": row_w1}
    if source is not None:
        row["w1_untranslated"] = w1(source)[1]
    row.update(contrast_figures(norm, np.asarray(label), slice_axis, inplane_mm=inplane_mm))
    return row


def summarise(per_case: list[dict[str, float]], n_target: int) -> Fidelity:
    """Mean of the per-case figures (fractions for the sign tests), ignoring NaNs."""

    def agg(key: str) -> float:
        return _nanmean(r.get(key, math.nan) for r in per_case)

    return Fidelity(
        w1=agg("w1"),
        w1_untranslated=agg("w1_untranslated"),
        vs_darker_than_fluid=agg("vs_darker_than_fluid"),
        vs_fluid_contrast=agg("vs_fluid_contrast"),
        cochlea_bright=agg("cochlea_bright"),
        cochlea_in_dark_bone=agg("cochlea_in_dark_bone"),
        vs_above_median=agg("vs_above_median"),
        n_source=len(per_case),
        n_target=n_target,
        per_case=per_case,
    )


def evaluate(
    pseudo: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    real: Sequence[np.ndarray],
    source: Sequence[np.ndarray] | None = None,
    slice_axis: int = -1,
    low: float = 0.5,
    high: float = 99.5,
    inplane_mm: float | None = None,
) -> Fidelity:
    """Fidelity of pseudo-hrT2 volumes (any intensity scale) against real hrT2 volumes.

    ``labels``: the source labels of ``pseudo`` (same shapes). ``source``: the ceT1 inputs, for the
    untranslated baseline. All volumes are re-normalised here with the translator's percentiles.
    """
    if len(pseudo) != len(labels) or (source is not None and len(source) != len(pseudo)):
        raise ValueError(
            f"{len(pseudo)} pseudo volumes but {len(labels)} labels"
            + ("" if source is None else f" and {len(source)} source volumes")
        )
    if not pseudo:
        raise ValueError("fidelity needs at least one pseudo-hrT2 volume")
    ref_q = reference_quantiles(real, slice_axis, low, high)
    rows = [
        case_figures(vol, lab, ref_q, None if source is None else source[i], slice_axis, low, high, inplane_mm)
        for i, (vol, lab) in enumerate(zip(pseudo, labels))
    ]
    return summarise(rows, len(real))
