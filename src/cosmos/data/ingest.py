"""Bring a dataset into a run's working folder and check it: the pipeline's first step.

Why copy even local data: every later stage reads from ``out_dir`` only, so no stage can ever
modify the user's data, and a KFP artifact is self-contained. Sources:

* ``""``               -> the built-in phantom, generated per ``cfg.phantom``;
* ``s3://bucket/pfx``  -> downloaded with boto3 (see ``cosmos.data.storage``);
* a local folder       -> its crossMoDA folders copied.

Then ``validate_dataset`` runs and *all* problems are raised together as one ``CosmosError``.
A ``manifest.json`` records each file's case id, modality, shape, spacing, affine and sha256, so a
run can say exactly which data it used. Re-running on a finished folder copies nothing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from cosmos.data import layout, storage
from cosmos.data.layout import CrossModaDataset
from cosmos.data.validate import validate_dataset
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SOURCE_MARKER = ".cosmos_ingest_source"
_LAYOUT_FOLDERS = (layout.SOURCE_DIR, layout.TARGET_DIR, layout.VALIDATION_DIR, layout.VALIDATION_LABELS_DIR)


class DatasetError(CosmosError):
    """The dataset has problems; the message lists every one, one per line."""

    def __init__(self, where: str, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s) in the dataset:\n{lines}")


def ingest(data_uri: str, out_dir: str | Path, val_labels_uri: str | None = None, cfg=None) -> CrossModaDataset:
    """Fetch (phantom / s3 / local), validate and index a crossMoDA dataset in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_uri = "" if data_uri is None else str(data_uri).strip()
    in_place = data_uri != "" and not storage.is_s3(data_uri) and Path(data_uri).resolve() == out.resolve()
    if not in_place:  # never clear or mark the user's own folder
        _forget_other_source(out, f"{data_uri}|{val_labels_uri or ''}")
    if data_uri == "":
        if cfg is None:
            from cosmos.config import CosmosConfig

            cfg = CosmosConfig()
        from cosmos.data.phantom import make_phantom

        p = cfg.phantom
        log.info("no data given: using the built-in phantom (%d source, %d target, %d validation, scale %s, seed %d)",
                 p.n_source, p.n_target, p.n_val, p.scale, p.seed)
        make_phantom(out, n_source=p.n_source, n_target=p.n_target, n_val=p.n_val, seed=p.seed, scale=p.scale)
    elif storage.is_s3(data_uri):
        storage.download(data_uri, out)
    else:
        src = Path(data_uri)
        if not src.is_dir():
            raise CosmosError(f"{src}: data folder does not exist" if not src.exists() else f"{src}: is not a folder")
        if not in_place:
            found = [f for f in _LAYOUT_FOLDERS if (src / f).is_dir()]
            if not found:
                present = sorted(p.name for p in src.iterdir())[:20]
                raise CosmosError(f"{src}: no crossMoDA folders ({', '.join(_LAYOUT_FOLDERS[:3])}); it holds {present}")
            for folder in found:
                storage.copy_tree(src / folder, out / folder)
            log.info("copied %s from %s to %s", found, src, out)
    val_dir = None
    if val_labels_uri:
        val_dir = out / layout.VALIDATION_LABELS_DIR
        if storage.is_s3(val_labels_uri):
            storage.download(val_labels_uri, val_dir)
        else:
            storage.copy_tree(Path(val_labels_uri), val_dir)
    problems = validate_dataset(out, val_labels=val_dir)
    if problems:
        raise DatasetError(data_uri or "phantom", problems)
    ds = layout.discover(out)
    if not in_place:
        write_manifest(ds, out / MANIFEST, source_uri=data_uri or "phantom")
    log.info("dataset ready in %s: %d source, %d target, %d validation case(s)%s", out, len(ds.source),
             len(ds.target), len(ds.validation), " (labelled)" if ds.has_validation_labels else "")
    return ds


def _forget_other_source(out: Path, source_key: str) -> None:
    """A folder re-used for a *different* source must not mix old and new cases."""
    marker = out / _SOURCE_MARKER
    previous = marker.read_text() if marker.exists() else None
    if previous is not None and previous != source_key:
        log.warning("%s held data from %r; clearing it for %r", out, previous, source_key)
        for folder in _LAYOUT_FOLDERS:
            shutil.rmtree(out / folder, ignore_errors=True)
        for name in (MANIFEST, "phantom.json", "preview.png"):
            (out / name).unlink(missing_ok=True)
    marker.write_text(source_key)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(ds: CrossModaDataset, path: str | Path, source_uri: str = "") -> Path:
    """One JSON record per file (header only, no voxel data read)."""
    entries = []
    for domain, cases in (("source", ds.source), ("target", ds.target), ("validation", ds.validation)):
        for c in cases:
            for p, kind in ((c.image, c.modality), (c.label, "Label")):
                if p is None:
                    continue
                img = nib.load(str(p))
                entries.append({
                    "case": c.case_id, "domain": domain, "kind": kind,
                    "path": str(Path(p).relative_to(ds.root)) if Path(p).is_relative_to(ds.root) else str(p),
                    "shape": [int(v) for v in img.shape[:3]],
                    "spacing": [round(float(v), 6) for v in np.linalg.norm(img.affine[:3, :3], axis=0)],
                    "affine": np.round(img.affine, 6).tolist(),
                    "sha256": _sha256(Path(p)),
                })
    path = Path(path)
    path.write_text(json.dumps({"source": source_uri, "files": entries}, indent=1))
    return path
