"""The writer: a crossMoDA 2021 tree of phantom cases, its manifest (phantom.json) and preview.png.

Re-running ``make_phantom`` on a finished directory with the same parameters does no work (not even a
manifest rewrite); other parameters regenerate it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cosmos.data import layout, nifti
from cosmos.data.outputs import atomic_write
from cosmos.data.phantom.anatomy import SCALES
from cosmos.data.phantom.files import MANIFEST, PREVIEW, TARGET_LABELS_DIR, _read_manifest, _read_text
from cosmos.data.phantom.preview import write_preview
from cosmos.data.phantom.render import make_case, vestibule_centres
from cosmos.data.phantom.style import STYLES, dataset_style
from cosmos.data.phantom.tissues import SCC, VESSEL, VESTIBULE
from cosmos.errors import CosmosError
from cosmos.logs import progress

log = logging.getLogger("cosmos.data.phantom")  # the package's name, as before it was split


def _plan(n_source: int, n_target: int, n_val: int) -> list[tuple[str, int, str, str]]:
    """(case_id, number, image path, label path) for every case, crossMoDA numbering."""
    plan = []
    for i in range(1, n_source + 1):
        cid = f"crossmoda_{i}"
        plan.append(
            (
                cid,
                i,
                f"{layout.SOURCE_DIR}/{layout.image_name(cid, 'ceT1')}",
                f"{layout.SOURCE_DIR}/{layout.label_name(cid)}",
            )
        )
    for j in range(n_source + 1, n_source + n_target + 1):
        cid = f"crossmoda_{j}"
        plan.append(
            (
                cid,
                j,
                f"{layout.TARGET_DIR}/{layout.image_name(cid, 'hrT2')}",
                f"{TARGET_LABELS_DIR}/{layout.label_name(cid)}",
            )
        )
    for k in range(n_source + n_target + 1, n_source + n_target + n_val + 1):
        cid = f"crossmoda_{k}"
        plan.append(
            (
                cid,
                k,
                f"{layout.VALIDATION_DIR}/{layout.image_name(cid, 'hrT2')}",
                f"{layout.VALIDATION_LABELS_DIR}/{layout.label_name(cid)}",
            )
        )
    return plan


def _refuse_foreign_files(root: Path, old: dict | None, plan: list[tuple[str, int, str, str]]) -> None:
    """One CosmosError line when a path the phantom would write holds a file it did not write.

    Ours: the files the folder's manifest lists, and the manifest and preview themselves when there is
    one. Why: ``cosmos phantom DIR`` into a folder of the user's scans replaced same-named files.
    """
    listed = old.get("files", []) if old is not None else []
    ours = {str(f) for f in listed} if isinstance(listed, list) else set()
    if old is not None:
        ours |= {MANIFEST, PREVIEW}
    candidates = [MANIFEST, PREVIEW] + [rel for _, _, img, lab in plan for rel in (img, lab)]
    for rel in candidates:
        target = root / rel
        if (target.exists() or target.is_symlink()) and rel not in ours:
            raise CosmosError(
                f"{target}: already exists and was not written by cosmos phantom: move it away, "
                "pass --overwrite to replace it, or give the phantom a new folder"
            )


def make_phantom(
    out_dir: str | Path,
    n_source: int = 8,
    n_target: int = 8,
    n_val: int = 4,
    seed: int = 0,
    scale: str = "small",
    preview: bool = True,
    target_labels: bool = False,
    style: str = "builtin",
    overwrite: bool = False,
) -> Path:
    """Write a crossMoDA 2021 tree (with validation labels) and ``preview.png``; return the root.

    ``target_labels=True`` also writes the (normally hidden) hrT2 training labels to
    ``target_training_labels/`` so benchmarks can score pseudo-labels; COSMOS never reads them.
    ``style="random"`` renders every case with the dataset style drawn from ``seed``
    (:func:`cosmos.data.phantom.style.dataset_style`), recorded under "style" in phantom.json.
    Resumable: cases already written with the same parameters are not generated again.
    Never replaces a file it did not write: an existing file at one of its paths that the folder's
    ``phantom.json`` does not list (a folder without one: any existing file) is refused with one line,
    unless ``overwrite``.
    """
    for name, n in (("n_source", n_source), ("n_target", n_target), ("n_val", n_val)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise CosmosError(f"phantom {name} must be a non-negative integer, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise CosmosError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if n_source < 1 or n_target < 1:
        raise CosmosError("phantom needs at least one source and one target case")
    if scale not in SCALES:
        raise CosmosError(f"phantom scale must be one of {SCALES}, got {scale!r}")
    if style not in STYLES:
        raise CosmosError(f"phantom style must be one of {STYLES}, got {style!r}")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise CosmosError(f"{root}: is a file, not a folder: give the phantom a new folder")
    root.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {
        "n_source": int(n_source),
        "n_target": int(n_target),
        "n_val": int(n_val),
        "seed": int(seed),
        "scale": scale,
        "target_labels": bool(target_labels),
        "version": 2,
    }
    if style != "builtin":  # builtin folders keep their manifest (and are not regenerated on resume)
        params["style"] = style
    manifest_path = root / MANIFEST
    old = _read_manifest(manifest_path)
    if not isinstance(old, dict):
        old = None
    plan = _plan(n_source, n_target, n_val)
    if not overwrite:
        _refuse_foreign_files(root, old, plan)
    if old is not None and old.get("params") != params:
        log.info("phantom parameters changed (%s -> %s): regenerating %s", old.get("params"), params, root)
        for rel in old.get("files", []):
            (root / rel).unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)
        old = None
    files: list[str] = []
    todo = []
    for cid, num, img_rel, lab_rel in plan:
        is_target = img_rel.startswith(layout.TARGET_DIR + "/")
        want_label = not is_target or target_labels
        files.append(img_rel)
        if want_label:
            files.append(lab_rel)
        done = (
            old is not None
            and cid in (old.get("cases") or {})
            and (root / img_rel).exists()
            and (not want_label or (root / lab_rel).exists())
        )
        if not done:
            todo.append((cid, num, img_rel, lab_rel if want_label else None))
    if todo:
        log.info(
            "phantom: generating %d of %d cases (scale=%s, seed=%d%s) in %s",
            len(todo),
            len(plan),
            scale,
            seed,
            "" if style == "builtin" else f", style={style}",
            root,
        )
    cases = dict((old or {}).get("cases", {}))
    if todo:  # the files are listed as ours before they are written: a killed run resumes, never refuses them
        pending = {cid for cid, *_ in todo}
        atomic_write(
            manifest_path,
            json.dumps(
                {"params": params, "files": files, "cases": {c: v for c, v in cases.items() if c not in pending}}
            ),
        )
    for cid, num, img_rel, label_rel in progress(todo, desc="phantom", unit="case"):
        modality = "ceT1" if img_rel.startswith(layout.SOURCE_DIR + "/") else "hrT2"
        case = make_case(seed, num, modality, scale, style=style)
        nifti.save(root / img_rel, case.image, affine=case.affine, dtype=np.dtype(case.dtype))
        if label_rel is not None:
            nifti.save(root / label_rel, case.label, affine=case.affine, label=True)
        # Site and ground-truth sizes, also for unlabelled target cases (QA: is the cochlea big enough?).
        lab, tissue = case.label, case.tissue
        vestibules = vestibule_centres(seed, num, modality, scale, style=style)
        cases[cid] = {
            "modality": modality,
            "site": case.site,
            "dtype": case.dtype,
            "shape": list(lab.shape),
            "spacing": [round(float(v), 4) for v in np.linalg.norm(case.affine[:3, :3], axis=0)],
            "vs_voxels": int((lab == 1).sum()),
            "cochlea_voxels": int((lab == 2).sum()),
            "labyrinth_voxels": int(np.isin(tissue, (VESTIBULE, SCC)).sum()),
            "vessel_voxels": int((tissue == VESSEL).sum()),
            "vestibule_mm": [[round(float(v), 2) for v in c] for c in vestibules],
        }
    manifest: dict[str, Any] = {"params": params, "files": files}
    if style != "builtin":
        manifest["style"] = dataset_style(seed, scale)
    manifest["cases"] = {c: cases[c] for c, *_ in plan if c in cases}
    text = json.dumps(manifest, indent=1)
    # Rewritten only when it changes: its mtime is part of the folder's fingerprint (cosmos.data.storage), and a
    # rewrite would make every keyed stage of a resumed `cosmos benchmark` on this folder run again.
    if old is None or todo or _read_text(manifest_path) != text:
        atomic_write(manifest_path, text)
    if preview and (todo or not (root / PREVIEW).exists()):
        write_preview(root, root / PREVIEW)
    return root
