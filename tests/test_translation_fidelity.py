"""Label-free translation fidelity (cosmos.translation.fidelity) on synthetic volumes.

A toy "head" (disc of brain, a ring of bright CSF around a VS, a small cochlea, bone) is drawn with
the ceT1 contrast and with the hrT2 contrast; a translated-like volume (hrT2 contrast on the source
anatomy) must score close to real hrT2 and pass the sign tests, the untranslated ceT1 must not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmos.translation import fidelity

# tissue -> (ceT1, hrT2) intensity: air, brain, csf, vs, cochlea, bone, scalp
CONTRAST = {"ceT1": [0.0, 0.45, 0.22, 0.92, 0.22, 0.04, 0.80], "hrT2": [0.0, 0.30, 0.95, 0.45, 0.70, 0.04, 0.32]}


def _anatomy(shift: int = 0, n: int = 48, z: int = 12) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:n, :n] - n / 2
    r = np.hypot(yy, xx)
    t = np.zeros((n, n), np.uint8)
    t[r < 21] = 6  # scalp
    t[r < 19] = 5  # bone
    t[r < 17] = 1  # brain
    vs_r = np.hypot(yy - 3 - shift, xx + 4)
    t[vs_r < 7] = 2  # cistern
    t[vs_r < 5] = 3  # VS
    t[np.hypot(yy + 8, xx - 9 + shift) < 2] = 4  # cochlea
    tissue = np.repeat(t[..., None], z, axis=2)
    tissue[..., : z // 4] = np.where(np.isin(tissue[..., : z // 4], (2, 3, 4)), 1, tissue[..., : z // 4])
    label = np.where(tissue == 3, 1, np.where(tissue == 4, 2, 0)).astype(np.uint8)
    return tissue, label


def _render(tissue: np.ndarray, modality: str, seed: int, scale: float = 1000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.asarray(CONTRAST[modality], np.float32)[tissue]
    return (img + rng.normal(0, 0.02, img.shape).astype(np.float32)).clip(0) * scale


def test_translated_like_scores_like_hrt2_and_ceT1_does_not():
    real = [_render(_anatomy(s)[0], "hrT2", 10 + s) for s in (0, 2, 4)]
    src_vols, labels = zip(*[_anatomy(s) for s in (1, 3)])
    ceT1 = [_render(t, "ceT1", 20 + i) for i, t in enumerate(src_vols)]
    translated = [_render(t, "hrT2", 30 + i, scale=3.0) for i, t in enumerate(src_vols)]  # any scale
    good = fidelity.evaluate(translated, labels, real, source=ceT1)
    bad = fidelity.evaluate(ceT1, labels, real)
    assert good.w1 < 0.5 * bad.w1, (good, bad)
    assert math.isclose(good.w1_untranslated, bad.w1, rel_tol=1e-6)
    assert good.vs_darker_than_fluid == 1.0 and bad.vs_darker_than_fluid == 0.0
    assert good.cochlea_bright == 1.0 and bad.cochlea_bright == 0.0
    assert good.vs_fluid_contrast > 0.3 > 0.0 > bad.vs_fluid_contrast
    assert good.n_source == 2 and good.n_target == 3 and len(good.per_case) == 2
    # a blurred, dimmed ceT1 (what an unconverged translator emits) still fails the sign test
    from scipy import ndimage

    blurred = [0.5 * ndimage.gaussian_filter(v, 1.0) + 100 for v in ceT1]
    assert fidelity.evaluate(blurred, labels, real).vs_darker_than_fluid == 0.0


def test_metrics_drop_missing_structures_and_json_has_no_nan():
    real = [_render(_anatomy()[0], "hrT2", 1)]
    tissue, label = _anatomy()
    label = np.where(label == 2, 0, label)  # no cochlea in this label
    fid = fidelity.evaluate([_render(tissue, "hrT2", 2)], [label], real)
    assert math.isnan(fid.cochlea_bright) and "fidelity_cochlea_bright" not in fid.metrics()
    assert fid.to_dict()["cochlea_bright"] is None and "fidelity_w1" in fid.metrics()


def test_head_mask_fills_bone_but_not_air():
    tissue, _ = _anatomy()
    norm = fidelity.normalised(_render(tissue, "hrT2", 3))
    mask = fidelity.head_mask(norm)
    assert mask[tissue == 5].mean() > 0.95  # dark bone inside the scalp counts as head
    assert mask[tissue == 0].mean() < 0.05


def test_bad_input_is_refused():
    tissue, label = _anatomy()
    with pytest.raises(ValueError, match="labels"):
        fidelity.evaluate([tissue.astype(float)], [], [tissue.astype(float)])
    with pytest.raises(ValueError, match="real hrT2"):
        fidelity.evaluate([tissue.astype(float)], [label], [])


def test_report_shows_the_fidelity_table(tmp_path):
    from cosmos.evaluation.report import write_report

    real = [_render(_anatomy()[0], "hrT2", 1)]
    tissue, label = _anatomy(2)
    fid = fidelity.evaluate([_render(tissue, "ceT1", 2)], [label], real, source=[_render(tissue, "ceT1", 3)])
    write_report(tmp_path, {"title": "t", "translator_fidelity": fid.to_dict()})
    md = (tmp_path / "report.md").read_text()
    assert "## Translation fidelity" in md and f"{fid.w1:.3f}" in md and "| cases with a bright cochlea | 0% |" in md
    write_report(tmp_path / "none", {"title": "t"})
    assert "Translation fidelity" not in (tmp_path / "none" / "report.md").read_text()


def test_score_rewards_signs_and_penalises_distance():
    from cosmos.translation.fidelity import Fidelity

    def fid(w1, vs, coch):
        return Fidelity(w1, 0.4, vs, 0.0, coch, 4, 4)

    assert fid(0.04, 1.0, 1.0).score() == pytest.approx(0.9)
    assert fid(0.04, 0.0, 0.0).score() < fid(0.2, 1.0, 1.0).score()  # histogram alone does not win
    assert fid(0.6, 1.0, 1.0).score() < fid(0.1, 0.5, 0.5).score()  # signs alone do not win
    assert fid(0.1, float("nan"), 1.0).score() == pytest.approx(0.25)  # a missing structure counts as failed
    assert "fidelity_score" in fid(0.1, 1.0, 1.0).metrics()
    bright_bone = Fidelity(0.04, 0.4, 1.0, 0.0, 1.0, 4, 4, cochlea_in_dark_bone=0.0)
    assert bright_bone.score() == pytest.approx(fid(0.04, 1.0, 1.0).score() - 1.0)  # bone painted bright: out


def _bony_cochlea(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The toy anatomy with the cochlea set in a ring of bone (the otic capsule), as in a real head."""
    tissue, label = _anatomy(shift)
    yy, xx = np.mgrid[: tissue.shape[0], : tissue.shape[1]] - tissue.shape[0] / 2
    capsule = (np.hypot(yy + 8, xx - 9 + shift) < 4)[..., None] & (tissue == 1)
    tissue[capsule] = 5
    return tissue, label


def test_cochlea_in_dark_bone_passes_real_contrasts_and_fails_bright_bone():
    real = [_render(_bony_cochlea(s)[0], "hrT2", 10 + s) for s in (0, 2)]
    src_vols, labels = zip(*[_bony_cochlea(s) for s in (1, 3)])
    ceT1 = [_render(t, "ceT1", 20 + i) for i, t in enumerate(src_vols)]
    hrT2_like = [_render(t, "hrT2", 30 + i) for i, t in enumerate(src_vols)]
    # what a translator that inverts the dark tissue does: the bone as bright as fluid
    bright = [np.where(t == 5, 0.95 * 1000.0, v) for t, v in zip(src_vols, hrT2_like)]
    good = fidelity.evaluate(hrT2_like, labels, real, source=ceT1, inplane_mm=0.5)
    bad = fidelity.evaluate(bright, labels, real, source=ceT1, inplane_mm=0.5)
    assert good.cochlea_in_dark_bone == 1.0 and bad.cochlea_in_dark_bone == 0.0
    assert fidelity.evaluate(ceT1, labels, real).cochlea_in_dark_bone == 1.0  # not a domain test: ceT1 passes
    assert bad.score() < good.score() - 0.9
    assert "fidelity_cochlea_in_dark_bone" in good.metrics()


def test_vs_above_median_passes_real_contrasts_and_fails_a_black_tumour():
    real = [_render(_anatomy(s)[0], "hrT2", 10 + s) for s in (0, 2)]
    src_vols, labels = zip(*[_anatomy(s) for s in (1, 3)])
    ceT1 = [_render(t, "ceT1", 20 + i) for i, t in enumerate(src_vols)]
    hrT2_like = [_render(t, "hrT2", 30 + i) for i, t in enumerate(src_vols)]
    black = [np.where(t == 3, 0.02 * 1000.0, v) for t, v in zip(src_vols, hrT2_like)]  # the VS inverted
    good = fidelity.evaluate(hrT2_like, labels, real, source=ceT1)
    bad = fidelity.evaluate(black, labels, real, source=ceT1)
    assert good.vs_above_median == 1.0 and bad.vs_above_median == 0.0
    assert bad.vs_darker_than_fluid == 1.0  # the sign test alone is passed by a black tumour
    assert fidelity.evaluate(ceT1, labels, real).vs_above_median == 1.0
    assert bad.score() < good.score() - 0.9 and "fidelity_vs_above_median" in good.metrics()


def _choose(scores: list[float], n_source: int) -> int:
    choice = fidelity.EpochChoice(fidelity.tie_margin(n_source))
    for epoch, score in enumerate(scores, start=1):
        choice.offer(epoch, score)
    return choice.epoch


def test_epoch_choice_takes_the_latest_near_best_epoch():
    """Ties (within one case's sign flip) go to the latest epoch; a collapsed epoch never wins."""
    assert fidelity.tie_margin(8) == pytest.approx(0.0625)
    # an early best, then a plateau within the margin: the plateau's last epoch
    assert _choose([0.1, 0.85, 0.82, 0.80, 0.81], 8) == 5
    # the run collapses at its end (a sign test fails for most cases): the last epoch before it
    assert _choose([0.1, 0.80, 0.83, 0.82, 0.24], 8) == 4
    # a later, clearly better epoch raises the bar: the earlier plateau no longer counts
    assert _choose([0.70, 0.72, 0.95, 0.71], 8) == 3
    # a wider margin for fewer cases
    assert _choose([0.9, 0.8], 4) == 2 and _choose([0.9, 0.8], 8) == 1
    # non-finite scores are never chosen
    assert _choose([float("-inf"), 0.5, float("nan")], 8) == 2
    assert _choose([float("nan")], 8) == 0


def test_epoch_choice_on_the_small_profiles_measured_scores():
    """The two translators of a `small` benchmark (per-epoch scores as logged): late epochs, not 6 and 9."""
    seg = [0.134, 0.236, 0.829, 0.832, 0.774, 0.853, 0.821, 0.847, 0.838, 0.824, 0.747, 0.844]
    seg += [0.802, 0.778, 0.811, 0.239, 0.819, 0.690, 0.779, 0.743, 0.810, 0.817, 0.806, 0.808]
    plain = [0.089, 0.108, 0.176, 0.740, 0.814, 0.788, 0.573, 0.837, 0.837, 0.561, 0.832, 0.675]
    plain += [0.797, 0.824, 0.800, 0.782, 0.827, 0.772, 0.837, 0.775, 0.823, 0.817, 0.820, 0.742]
    assert _choose(seg, 8) == 24
    assert _choose(plain, 8) == 23
