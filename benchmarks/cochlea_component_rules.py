"""Cochlea Dice of saved predictions under each cochlea post-processing rule (``segmentation.cochlea_components``).

Reads label maps a run already wrote (made with ``cochlea_components: all``, i.e. the cochlea untouched), applies
``per_side`` (:func:`cosmos.segmentation.inference.keep_one_cochlea_per_side`, the midline from each image) and
prints, per case, the cochlea components marked, and the cochlea Dice and ASSD of ``all`` (the paper) and
``per_side`` (``tiny``/``small``), scored by ``cosmos.evaluation.metrics``. Not a test: the figures depend on the
model and the data.

    python benchmarks/cochlea_component_rules.py PRED_DIR [PRED_DIR ...] --images DIR --labels DIR [--json FILE]

``PRED_DIR``: folders of ``crossmoda_<k>_Label.nii.gz`` on the images' grids (a run's ``OUT/predictions``, or a
round's ``predict_validation*/predictions`` on the ROI crops with ``--images``/``--labels`` the crops' folders).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", nargs="+", help="folders of *_Label.nii.gz predictions")
    ap.add_argument("--images", required=True, help="folder of the matching *_hrT2.nii.gz")
    ap.add_argument("--labels", required=True, help="folder of the matching ground-truth *_Label.nii.gz")
    ap.add_argument("--json", default="", help="also write the per-case figures here")
    args = ap.parse_args(argv)

    from cosmos.data import nifti
    from cosmos.evaluation.metrics import assd, dice
    from cosmos.segmentation.inference import COCHLEA_LABEL, head_midline_x, keep_one_cochlea_per_side

    report = {}
    for folder in args.predictions:
        rows = []
        files = sorted(Path(folder).glob("*_Label.nii.gz"))
        if not files:
            print(f"{folder}: no *_Label.nii.gz predictions", file=sys.stderr)
            return 2
        for pred_file in files:
            case = pred_file.name.split("_Label")[0]
            pred = nifti.load(pred_file, label=True)
            truth = nifti.load(Path(args.labels) / pred_file.name, label=True)
            image = nifti.load_image(Path(args.images) / f"{case}_hrT2.nii.gz")
            raw = np.asarray(pred.data).astype(np.uint8)
            per_side = keep_one_cochlea_per_side(raw, pred.affine, head_midline_x(image))
            gt = np.asarray(truth.data) == COCHLEA_LABEL
            _, n = ndimage.label(raw == COCHLEA_LABEL, structure=np.ones((3, 3, 3), bool))
            row = {"case": case, "cochlea_components": int(n)}
            for rule, seg in (("all", raw), ("per_side", per_side)):
                row[f"dice_{rule}"] = round(dice(seg == COCHLEA_LABEL, gt), 3)
                row[f"assd_{rule}"] = round(assd(seg == COCHLEA_LABEL, gt, truth.spacing), 2)
            rows.append(row)
            print(
                f"{case:>14}  {n:3d} cochlea components  Dice all {row['dice_all']:.3f}  per_side "
                f"{row['dice_per_side']:.3f}  ASSD all {row['assd_all']:6.2f}  per_side {row['assd_per_side']:6.2f} mm",
                flush=True,
            )
        means = {rule: float(np.mean([r[f"dice_{rule}"] for r in rows])) for rule in ("all", "per_side")}
        print(f"{folder}: mean cochlea Dice, all {means['all']:.3f} -> per_side {means['per_side']:.3f}")
        report[str(folder)] = {"mean_dice": means, "cases": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
