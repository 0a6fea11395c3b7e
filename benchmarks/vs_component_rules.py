"""VS Dice of a trained segmenter under each VS post-processing rule (``segmentation.vs_component``).

Predicts the images once with the ensemble's probabilities (``cosmos.segmentation.inference.predict``,
the library's own path), then applies each rule to the same raw argmax and prints, per case, the
number of VS components, the ground-truth VS size and the VS Dice of ``largest`` (the paper) and
``confident`` (``tiny``/``small``). Not a test: the figures depend on the model and the data.

    python benchmarks/vs_component_rules.py FOLD_DIR [FOLD_DIR ...] --images DIR --labels DIR \
        [--out DIR] [--mirroring] [--json FILE]

``FOLD_DIR``: nnU-Net fold folders (e.g. ``OUT/work/register_round0-*/models/fold_0`` of a run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folds", nargs="+", help="fold model folders")
    ap.add_argument("--images", required=True, help="folder of *_hrT2.nii.gz")
    ap.add_argument("--labels", required=True, help="folder of the matching *_Label.nii.gz")
    ap.add_argument("--out", default="", help="prediction folder (default: a temporary one)")
    ap.add_argument("--mirroring", action="store_true", help="test-time flips as configured")
    ap.add_argument("--min-mm3", type=float, default=None, help="vs_min_component_mm3 (default: the config's)")
    ap.add_argument("--json", default="", help="also write the per-case figures here")
    args = ap.parse_args(argv)

    from cosmos.config import load_config
    from cosmos.data import nifti
    from cosmos.evaluation.metrics import dice
    from cosmos.segmentation.inference import (
        VS_LABEL,
        keep_confident_vs_component,
        keep_largest_vs_component,
        predict,
    )

    cfg = load_config("tiny")
    min_mm3 = cfg.segmentation.vs_min_component_mm3 if args.min_mm3 is None else args.min_mm3
    out = Path(args.out or tempfile.mkdtemp(prefix="vs-rules-"))
    written = predict(args.folds, args.images, out, cfg, mirroring=args.mirroring, save_probabilities=True)
    rows = []
    for label_file in written:
        npz = np.load(label_file.with_name(label_file.name[: -len(".nii.gz")] + ".npz"))
        probs = npz["probabilities"].astype(np.float32)
        raw = probs.argmax(0).astype(np.uint8)  # before any post-processing
        truth = nifti.load(Path(args.labels) / label_file.name, label=True)
        gt = np.asarray(truth.data) == VS_LABEL
        voxel_mm3 = float(np.prod(truth.spacing))
        _, n = ndimage.label(raw == VS_LABEL)
        largest = keep_largest_vs_component(raw) == VS_LABEL
        confident = keep_confident_vs_component(raw, probs[VS_LABEL], voxel_mm3, min_mm3) == VS_LABEL
        row = {
            "case": label_file.name.split("_Label")[0],
            "vs_components": int(n),
            "gt_vs_mm3": round(float(gt.sum()) * voxel_mm3, 1),
            "dice_largest": round(dice(largest, gt), 3),
            "dice_confident": round(dice(confident, gt), 3),
        }
        rows.append(row)
        print(
            f"{row['case']:>14}  {n:4d} VS components  truth {row['gt_vs_mm3']:8.1f} mm3  "
            f"VS Dice largest {row['dice_largest']:.3f}  confident {row['dice_confident']:.3f}",
            flush=True,
        )
    if rows:
        for rule in ("largest", "confident"):
            print(f"mean VS Dice, {rule:>9}: {np.mean([r[f'dice_{rule}'] for r in rows]):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"min_mm3": min_mm3, "cases": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
