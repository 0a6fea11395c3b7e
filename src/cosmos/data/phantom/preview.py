"""The preview: a PNG grid of a few phantom cases, for a human to see what the data look like."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from cosmos.data import layout
from cosmos.data.phantom.files import MANIFEST, TARGET_LABELS_DIR, _read_manifest
from cosmos.errors import CosmosError


def write_preview(root: str | Path, out_png: str | Path) -> Path:
    """A PNG grid: the first source case, the first target case of each scanner site (from phantom.json,
    when there is one) and the first validation case, each as an axial slice through the VS, an axial
    slice through the cochleas, a close-up of the labyrinth on that slice (cochlea, vestibule, canals)
    and a coronal reformat through the VS, with VS (red) and cochlea (yellow) contours where a label
    exists. Volumes are turned to the closest RAS orientation first, so every case looks the same way
    up whatever its affine (neurological view: patient right on the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    root = Path(root)
    ds = layout.discover(root)
    info = (_read_manifest(root / MANIFEST) or {}).get("cases") or {}
    sites = {c: v.get("site", "") for c, v in info.items()}
    rows = [(f"{ds.source[0].case_id} ceT1 {sites.get(ds.source[0].case_id, '')}", ds.source[0])] if ds.source else []
    seen: set[str] = set()
    for case in ds.target:
        site = sites.get(case.case_id, "")
        if site not in seen:
            seen.add(site)
            rows.append((f"{case.case_id} hrT2 {site} target", case))
    if ds.validation:
        rows.append(
            (f"{ds.validation[0].case_id} hrT2 {sites.get(ds.validation[0].case_id, '')} validation", ds.validation[0])
        )
    if not rows:
        raise CosmosError(f"{root}: no cases to preview")
    fig, axes = plt.subplots(len(rows), 4, figsize=(9.6, 2.5 * len(rows)), squeeze=False)
    for r, (title, case) in enumerate(rows):
        canon = nib.as_closest_canonical(nib.load(str(case.image)))
        img = np.asarray(canon.dataobj, dtype=np.float32)
        zooms = canon.header.get_zooms()[:3]
        lab_path = case.label or (root / TARGET_LABELS_DIR / layout.label_name(case.case_id))
        lab = None
        if lab_path is not None and Path(lab_path).exists():
            lab = np.asarray(nib.as_closest_canonical(nib.load(str(lab_path))).dataobj).astype(np.uint8)
        k_vs = k_co = img.shape[2] // 2
        j_vs = img.shape[1] // 2
        centre = (img.shape[0] // 2, img.shape[1] // 2)
        if lab is not None:
            if (lab == 1).any():
                k_vs = int(np.argmax((lab == 1).sum(axis=(0, 1))))
                j_vs = int(np.argmax((lab == 1).sum(axis=(0, 2))))
            if (lab == 2).any():
                k_co = int(np.argmax((lab == 2).sum(axis=(0, 1))))
                # Close-up on the cochlea of the non-tumour side (the other side's is behind the VS).
                comps, n = ndimage.label(lab[:, :, k_co] == 2)
                ci, cj = np.nonzero(lab[:, :, k_co] == 2)
                vs_i = np.nonzero(lab == 1)[0].mean() if (lab == 1).any() else img.shape[0] / 2
                pick = max(range(1, n + 1), key=lambda c: abs(ci[comps[ci, cj] == c].mean() - vs_i))
                centre = (int(ci[comps[ci, cj] == pick].mean()), int(cj[comps[ci, cj] == pick].mean()))
        k_lab = k_co
        vest = (info.get(case.case_id) or {}).get("vestibule_mm")
        if vest:  # phantom ground truth: centre the close-up on the non-tumour side's vestibule, at its level
            ijk = np.linalg.solve(canon.affine, np.append(vest[-1], 1.0))[:3]
            ijk = np.clip(np.rint(ijk).astype(int), 0, np.array(img.shape) - 1)
            centre, k_lab = (int(ijk[0]), int(ijk[1])), int(ijk[2])
        half = [max(4, round(9.0 / zooms[a])) for a in (0, 1)]
        crop = (
            slice(max(0, centre[0] - half[0]), centre[0] + half[0]),
            slice(max(0, centre[1] - half[1]), centre[1] + half[1]),
        )
        lo, hi = np.percentile(img, [0.5, 99.5])
        views = (
            ("axial (VS)", img[:, :, k_vs].T, None if lab is None else lab[:, :, k_vs].T, zooms[1] / zooms[0]),
            ("axial (cochlea)", img[:, :, k_co].T, None if lab is None else lab[:, :, k_co].T, zooms[1] / zooms[0]),
            (
                "labyrinth close-up",
                img[crop + (k_lab,)].T,
                None if lab is None else lab[crop + (k_lab,)].T,
                zooms[1] / zooms[0],
            ),
            ("coronal (VS)", img[:, j_vs, :].T, None if lab is None else lab[:, j_vs, :].T, zooms[2] / zooms[0]),
        )
        for c, (what, sl, lsl, aspect) in enumerate(views):
            ax = axes[r][c]
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
            if lsl is not None:
                for value, colour in ((1, "red"), (2, "yellow")):
                    if (lsl == value).any():
                        ax.contour((lsl == value).astype(np.float32), levels=[0.5], colors=colour, linewidths=0.7)
            ax.set_title(f"{title}\n{what}" if c == 0 else what, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.stem}.{os.getpid()}.tmp.png")
    try:  # temp file + rename: a killed or failed write leaves no half-written preview behind
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, out_png)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return out_png
