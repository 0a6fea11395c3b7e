"""Bring a dataset into a run's working folder and check it: the pipeline's first step.

Why copy even local data: every later stage reads from ``out_dir`` only, so no stage can ever
modify the user's data, and a KFP artifact is self-contained. Sources:

* ``""``               -> the built-in phantom, generated per ``cfg.phantom``;
* ``s3://bucket/pfx``  -> downloaded with boto3 (see ``cosmos.data.storage``);
* a local folder       -> its crossMoDA folders copied.

Uncompressed ``.nii`` files are gzipped into ``.nii.gz`` in the working copy, so every later stage
sees one ending (``validate`` accepts both; a ``.nii`` beside a ``.nii.gz`` of the same case is
still reported as a duplicate). Then ``validate_dataset`` runs and *all* problems are raised
together as one ``CosmosError``, each naming the user's own file or ``s3://`` key, not our copy.
A ``manifest.json`` records each file's case id, modality, shape, spacing, affine and sha256, so a
run can say exactly which data it used. Re-running on a finished folder copies nothing again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from cosmos.data import layout, storage
from cosmos.data.layout import CrossModaDataset
from cosmos.data.validate import Problem, check_dataset
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SOURCE_MARKER = ".cosmos_ingest_source"
_COMPRESSED = ".cosmos_compressed.json"  # .nii.gz files we made from the user's .nii
_LAYOUT_FOLDERS = (
    layout.SOURCE_DIR,
    layout.TARGET_DIR,
    layout.VALIDATION_DIR,
    layout.VALIDATION_LABELS_DIR,
    "target_training_labels",
)  # the last: only benchmarks read it (the oracle row)


class DatasetError(CosmosError):
    """The dataset has problems; the message lists every one, one per line."""

    def __init__(self, where: str, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s) in the dataset:\n{lines}")


def ingest(
    data_uri: str, out_dir: str | Path, val_labels_uri: str | None = None, cfg=None, require_source: bool = True
) -> CrossModaDataset:
    """Fetch (phantom / s3 / local), validate and index a crossMoDA dataset in ``out_dir``.

    ``require_source=False``: a run that starts from existing pseudo-hrT2 (``cosmos selftrain``)
    needs only the hrT2 folders."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s3_cfg = getattr(cfg, "storage", None)  # optional config section: connect/read timeouts, attempts
    if s3_cfg is not None:
        storage.configure(
            **{k: getattr(s3_cfg, k) for k in ("connect_timeout", "read_timeout", "max_attempts") if hasattr(s3_cfg, k)}
        )
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
        log.info(
            "no data given: using the built-in phantom (%d source, %d target, %d validation, scale %s, seed %d, "
            "style %s)",
            p.n_source,
            p.n_target,
            p.n_val,
            p.scale,
            p.seed,
            p.style,
        )
        make_phantom(
            out, n_source=p.n_source, n_target=p.n_target, n_val=p.n_val, seed=p.seed, scale=p.scale, style=p.style
        )
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
    renamed = {} if in_place else compress_nii(out)
    required = (layout.SOURCE_DIR, layout.TARGET_DIR) if require_source else (layout.TARGET_DIR,)
    report = check_dataset(out, val_labels=val_dir, required=required)
    to_user = _user_paths(out, data_uri, val_labels_uri, renamed, in_place)
    for w in report.warnings:
        log.warning("%s", to_user(w))
    if report.errors:
        raise DatasetError(data_uri or "phantom", [to_user(p) for p in report.errors])
    ds = layout.discover(out)
    ds.no_foreground = sorted(to_user(w).path for w in report.warnings if "no foreground" in w.message)
    if not in_place:
        write_manifest(ds, out / MANIFEST, source_uri=data_uri or "phantom")
    empty = f", {len(ds.no_foreground)} source label(s) with no foreground" if ds.no_foreground else ""
    log.info(
        "dataset ready in %s: %d source%s, %d target, %d validation case(s)%s",
        out,
        len(ds.source),
        empty,
        len(ds.target),
        len(ds.validation),
        " (labelled)" if ds.has_validation_labels else "",
    )
    return ds


def compress_nii(out: Path) -> dict[str, str]:
    """Gzip every ``.nii`` in the working copy's layout folders into ``.nii.gz``; {new path: old name}.

    Why: ``validate`` accepts ``.nii``, so the pipeline must too; one ending downstream is the simplest
    way to guarantee it. A ``.nii.gz`` already there that we did not make is the user's own: then
    both stay, and ``validate`` reports the duplicate. Re-running is safe (our record says which
    ``.nii.gz`` files are ours to rewrite).
    """
    record_path = out / _COMPRESSED
    ours: dict[str, str] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for folder in _LAYOUT_FOLDERS:
        d = out / folder
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.nii")):
            if p.name.startswith(".") or not p.is_file():
                continue
            target = p.with_name(p.name + ".gz")
            rel = str(target.relative_to(out))
            if target.exists() and rel not in ours:
                continue  # the user has both endings: validate names the duplicate
            tmp = target.with_name(f".{target.name}.part")
            with open(p, "rb") as src, gzip.GzipFile(tmp, "wb", compresslevel=1, mtime=0) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.replace(target)
            ours[rel] = p.name
            record_path.write_text(json.dumps(ours))
            p.unlink()
    return {str(out / rel): name for rel, name in ours.items()}


def _user_paths(out: Path, data_uri: str, val_labels_uri: str | None, renamed: dict[str, str], in_place: bool):
    """Map a problem in our working copy back to the user's own path or ``s3://`` key."""
    out_s = str(out)
    val_dir = str(out / layout.VALIDATION_LABELS_DIR)

    def convert(problem: Problem) -> Problem:
        path = problem.path
        original = renamed.get(path)
        if original is not None:
            path = str(Path(path).with_name(original))
        if in_place or not data_uri and not val_labels_uri:
            return Problem(path, problem.message, problem.warning)
        if val_labels_uri and (path == val_dir or path.startswith(val_dir + "/")):
            path = val_labels_uri.rstrip("/") + path[len(val_dir) :]
        elif data_uri and (path == out_s or path.startswith(out_s + "/")):
            path = data_uri.rstrip("/") + path[len(out_s) :]
        message = problem.message.replace(out_s + "/", data_uri.rstrip("/") + "/") if data_uri else problem.message
        return Problem(path, message, problem.warning)

    return convert


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
                img = cast(nib.Nifti1Image, nib.load(str(p)))  # .nii(.gz): Nifti1Image or its subclass Nifti2Image
                entries.append(
                    {
                        "case": c.case_id,
                        "domain": domain,
                        "kind": kind,
                        "path": str(Path(p).relative_to(ds.root)) if Path(p).is_relative_to(ds.root) else str(p),
                        "shape": [int(v) for v in img.shape[:3]],
                        "spacing": [round(float(v), 6) for v in np.linalg.norm(img.affine[:3, :3], axis=0)],
                        "affine": np.round(img.affine, 6).tolist(),
                        "sha256": _sha256(Path(p)),
                    }
                )
    path = Path(path)
    path.write_text(json.dumps({"source": source_uri, "files": entries}, indent=1))
    return path


def validation_set(data_dir: str | Path, out_dir: str | Path) -> int:
    """The validation scans and their labels of an ingested ``data_dir``, placed in ``out_dir`` (same
    layout: ``target_validation/``, ``target_validation_labels/``). Returns the number of scans.

    Why a set of its own: on a cluster every task's launcher downloads each input artifact whole, and
    the round's scoring (``evaluate``) reads only these two folders; handed the whole ingest it
    would fetch every training scan too (at crossMoDA scale, 50 GB per round instead of ~7 GB).
    Files are hard-linked when both folders share a file system (a local run) and copied otherwise.
    """
    import os

    src, out = Path(data_dir), Path(out_dir)
    n = 0
    for folder in (layout.VALIDATION_DIR, layout.VALIDATION_LABELS_DIR):
        if not (src / folder).is_dir():
            continue
        (out / folder).mkdir(parents=True, exist_ok=True)
        for p in sorted((src / folder).iterdir()):
            if not p.is_file():
                continue
            target = out / folder / p.name
            if target.exists():
                target.unlink()
            try:
                os.link(p, target)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(p, target)
            if folder == layout.VALIDATION_DIR and p.name.endswith((".nii", ".nii.gz")):
                n += 1
    return n
