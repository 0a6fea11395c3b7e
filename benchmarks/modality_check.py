"""How often the ceT1-vs-hrT2 warning (``cosmos.data.modality``) is right, on two phantom families.

Tuning site: the built-in phantom style (``cosmos phantom``, default style; its fixed scanner sites
MPRAGE/SPGR for ceT1, CISS/FIESTA for hrT2). The script prints the bright-tail feature of every case,
the threshold that separates the built-in cases with the widest margin (the midpoint of the gap,
to compare with the module's ``MIN_BRIGHT_FRACTION``), and the confusion counts of the module's
rule on the built-in family.

Reporting site: the ``style: random`` family (contrast curves, storage, grids and anatomy drawn from
each seed), which the threshold never saw. Its confusion counts are the error rates
docs/bad-input.md quotes. Both are phantoms: real scans may differ, which is why the rule warns and
never refuses.

Usage: ``python benchmarks/modality_check.py [--builtin-seeds 0 1] [--random-seeds 1 2 3 4 5] [--cases 8]``
(about a minute on 2 CPU cores with the defaults).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cosmos.data import layout, nifti
from cosmos.data.modality import MIN_BRIGHT_FRACTION, intensity_features, looks_like_cet1
from cosmos.data.phantom import make_phantom


def family(style: str, seeds: list[int], cases: int, work: Path) -> list[tuple[str, float, bool]]:
    """(true modality, bright fraction, warned) for every image of the phantom ``style`` over ``seeds``."""
    rows = []
    for seed in seeds:
        root = make_phantom(
            work / f"{style}-{seed}", n_source=cases, n_target=cases, n_val=0, seed=seed, preview=False, style=style
        )
        for folder, modality in ((layout.SOURCE_DIR, "ceT1"), (layout.TARGET_DIR, "hrT2")):
            for case in layout.list_cases(root / folder, modality):
                feats = intensity_features(nifti.load(case.image).data)
                rows.append((modality, feats["bright_fraction"], looks_like_cet1(feats)))
    return rows


def confusion(rows: list[tuple[str, float, bool]]) -> dict[str, int]:
    """Counts: ceT1 warned (hit), ceT1 not warned (miss), hrT2 warned (false alarm), hrT2 quiet."""
    return {
        "ceT1 warned": sum(1 for m, _, w in rows if m == "ceT1" and w),
        "ceT1 missed": sum(1 for m, _, w in rows if m == "ceT1" and not w),
        "hrT2 false warning": sum(1 for m, _, w in rows if m == "hrT2" and w),
        "hrT2 quiet": sum(1 for m, _, w in rows if m == "hrT2" and not w),
    }


def widest_gap(rows: list[tuple[str, float, bool]]) -> float | None:
    """The midpoint between the brightest-tailed ceT1 and the thinnest-tailed hrT2 (None if they overlap)."""
    cet1 = max(f for m, f, _ in rows if m == "ceT1")
    hrt2 = min(f for m, f, _ in rows if m == "hrT2")
    return (cet1 + hrt2) / 2 if cet1 < hrt2 else None


def show(name: str, rows: list[tuple[str, float, bool]]) -> None:
    counts = confusion(rows)
    n_c = counts["ceT1 warned"] + counts["ceT1 missed"]
    n_h = counts["hrT2 false warning"] + counts["hrT2 quiet"]
    for modality in ("ceT1", "hrT2"):
        fr = np.array([f for m, f, _ in rows if m == modality])
        print(f"{name}: {modality} bright fraction min {fr.min():.4f} median {np.median(fr):.4f} max {fr.max():.4f}")
    print(
        f"{name}: ceT1 warned {counts['ceT1 warned']}/{n_c}, ceT1 missed {counts['ceT1 missed']}/{n_c}; "
        f"hrT2 false warning {counts['hrT2 false warning']}/{n_h}, hrT2 quiet {counts['hrT2 quiet']}/{n_h}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builtin-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--random-seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--cases", type=int, default=8, help="ceT1 and hrT2 cases per seed")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cosmos-modality-") as tmp:
        tuning = family("builtin", args.builtin_seeds, args.cases, Path(tmp))
        reporting = family("random", args.random_seeds, args.cases, Path(tmp))
    gap = widest_gap(tuning)
    print(
        f"tuning site (builtin style, seeds {args.builtin_seeds}): widest-margin threshold "
        + (f"{gap:.4f}" if gap is not None else "none (the families overlap)")
        + f"; the module uses MIN_BRIGHT_FRACTION = {MIN_BRIGHT_FRACTION}"
    )
    show("tuning site (builtin)", tuning)
    show(f"reporting site (random style, seeds {args.random_seeds})", reporting)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
