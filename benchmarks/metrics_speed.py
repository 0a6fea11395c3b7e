"""Time COSMOS's cropped Dice/ASSD against medpy on one crossMoDA-sized case.

A 512 x 512 x 120 label map at 0.41 x 0.41 x 1.5 mm (ceT1-like) holds a VS (an ellipsoid about
18 x 14 x 12 mm with a bumpy surface) and a cochlea (a few-mm curled tube); the "prediction" is the
ground truth shifted by a voxel with a bit of boundary noise. Both scorers compute Dice and ASSD of
both structures from the label maps (mask extraction included). The numbers must agree to 1e-6.

    python benchmarks/metrics_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

SHAPE = (512, 512, 120)
SPACING = (0.41, 0.41, 1.5)


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.zeros(SHAPE, dtype=np.uint8)
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    mm = [g * s for g, s in zip(grid, SPACING)]
    # VS: an ellipsoid of semi-axes 9 x 7 x 6 mm centred in the right cerebellopontine angle
    c = (140.0, 110.0, 60.0)
    r = (9.0, 7.0, 6.0)
    vs = sum(((m - cc) / rr) ** 2 for m, cc, rr in zip(mm, c, r)) <= 1.0
    gt[vs] = 1
    # cochlea: a 2.5-turn spiral tube of radius 0.8 mm, about 4 mm across, lateral to the VS
    centre = np.array([155.0, 100.0, 58.0])
    tube = np.zeros(SHAPE, dtype=bool)
    for t in np.linspace(0, 5 * np.pi, 400):
        radius = 2.0 * (1 - t / (6 * np.pi))
        p = centre + np.array([radius * np.cos(t), radius * np.sin(t), 0.25 * t])
        lo = [int((p[d] - 1) / SPACING[d]) for d in range(3)]
        hi = [int((p[d] + 1) / SPACING[d]) + 2 for d in range(3)]
        sub = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = np.ogrid[sub]
        d2 = sum((local[d] * SPACING[d] - p[d]) ** 2 for d in range(3))
        tube[sub] |= d2 <= 0.8**2
    gt[tube & (gt == 0)] = 2
    pred = np.roll(gt, shift=(1, -1, 0), axis=(0, 1, 2))
    # boundary noise: flip ~15 % of the VS surface voxels
    vs_pred = pred == 1
    border = vs_pred ^ ndimage.binary_erosion(vs_pred)
    flip = border & (rng.random(SHAPE) < 0.15)
    pred[flip] = 0
    return pred, gt


def ours(pred, gt):
    from cosmos.evaluation.metrics import score_structures

    s = score_structures(pred, gt, SPACING)
    return [s["VS"]["dice"], s["VS"]["assd"], s["cochlea"]["dice"], s["cochlea"]["assd"]]


def medpy_scores(pred, gt):
    from medpy.metric.binary import assd, dc

    out = []
    for label in (1, 2):
        p, g = pred == label, gt == label
        out += [dc(p, g), assd(p, g, voxelspacing=SPACING, connectivity=1)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pred, gt = make_case()
    print(f"volume {SHAPE} at {SPACING} mm; VS {int((gt == 1).sum())} voxels, cochlea {int((gt == 2).sum())} voxels")
    t0 = time.perf_counter()
    ref = medpy_scores(pred, gt)
    t_medpy = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        got = ours(pred, gt)
        times.append(time.perf_counter() - t0)
    t_ours = float(np.median(times))
    diff = max(abs(a - b) for a, b in zip(got, ref))
    print("                 VS dice   VS assd   cochlea dice   cochlea assd")
    print(f"medpy            {ref[0]:.6f}  {ref[1]:.6f}  {ref[2]:.6f}       {ref[3]:.6f}")
    print(f"cosmos           {got[0]:.6f}  {got[1]:.6f}  {got[2]:.6f}       {got[3]:.6f}")
    print(f"max |difference| {diff:.2e}")
    print(f"medpy  {t_medpy:8.3f} s (one run)")
    print(f"cosmos {t_ours:8.3f} s (median of {args.repeats})")
    print(f"speed-up {t_medpy / t_ours:.1f}x")
    if diff > 1e-6:
        raise SystemExit("results differ from medpy")


if __name__ == "__main__":
    main()
