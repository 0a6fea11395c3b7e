"""Where a command may write: an output never replaces a file the user gave, or a file that is not ours.

Why a module of its own: ``cosmos predict DIR -o DIR`` used to replace the ground truth beside the
scans with the predictions (``crossmoda_{k}_Label.nii.gz`` is both names), ``cosmos predict`` into a
folder holding the user's own ``scan_seg.nii.gz`` replaced it, and ``cosmos evaluate --json`` over a
prediction turned the prediction into JSON. Each command now asks this module before it writes
anything (and before a model is resolved), and every refusal is one :class:`CosmosError` line naming
the user's path and what to do instead:

* :func:`check_output_folder` (``cosmos predict -o``): the folder must not be (or resolve to, symlinks
  included) an input folder or the folder of an input scan, and every output name that already exists
  in it must be listed in the folder's predict manifest (:data:`PREDICT_MANIFEST`), i.e. have been
  written there by an earlier ``cosmos predict``.
* :func:`check_json_output` (``cosmos evaluate --json``): not inside an input folder, no NIfTI suffix,
  and an existing file is replaced only when it is a JSON result of the same command (or with
  ``--overwrite``).
* ``cosmos translator convert --out`` uses :func:`check_output_folder` with its own manifest
  (:data:`CONVERT_MANIFEST`); ``cosmos phantom`` keeps its own (``phantom.json``, checked by the writer).
  ``--overwrite`` lets a command replace existing files it did not write, never an input.

Every write goes through :func:`atomic_write` (or ``cosmos.data.nifti.save``, which does the same): a
temporary file beside the target, then ``os.replace``. A failed write (a full disk, say) removes the
temporary file and ends in one line naming the *target* path, so nothing half-written is left behind.

The predict manifest (written by ``cosmos.segmentation.inference.predict`` and, for models trained on
ROI crops, by ``cosmos.segmentation.inputs.segment_files``) is a JSON object:
``{"run": {...}, "done": {name: source}, "outputs": {name: source}}``. ``run``/``done`` drive resuming
(the outputs of the last run's model and options); ``outputs`` lists every file ``cosmos predict``
ever wrote into the folder, recorded before the file is written, so a killed run's output is still
known as ours. Manifests written before ``outputs`` existed have ``done`` only; both count.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from cosmos.errors import CosmosError

# The folder manifest cosmos predict keeps (cosmos.segmentation.inference imports this name: spelled once).
PREDICT_MANIFEST = ".cosmos_predict.json"
# The folder manifest cosmos translator convert keeps (same format, "outputs" only).
CONVERT_MANIFEST = ".cosmos_convert.json"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# A cosmos evaluate JSON is a few KB per case; a bigger file is not one of ours (and is not read whole).
_MAX_JSON_BYTES = 64 * 1024 * 1024


# ------------------------------------------------------------------------------ atomic writes
def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``.

    Why: a plain ``write_text`` killed halfway (or on a full disk) leaves a truncated file under the
    final name, and the next run reads garbage. On any failure the temporary file is removed and an
    OSError becomes one :class:`CosmosError` line naming ``path`` (not the temporary name).
    """
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else bytes(data)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise CosmosError(f"{target}: cannot write it ({write_reason(exc)}); nothing was left behind") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return target


def write_reason(exc: OSError) -> str:
    """Why a write failed, in words (the path is named by the caller: the target, not a temp file)."""
    from cosmos.errors import describe_os_error

    exc = OSError(exc.errno, exc.strerror) if exc.errno is not None else exc
    return describe_os_error(exc)


# ------------------------------------------------------------------------------ the predict manifest
def read_manifest(folder: str | Path, name: str = PREDICT_MANIFEST) -> dict[str, Any]:
    """The manifest ``name`` of ``folder`` as a dict; {} when there is none or it is unreadable."""
    try:
        data = json.loads((Path(folder) / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def our_outputs(folder: str | Path, name: str = PREDICT_MANIFEST) -> dict[str, str]:
    """File names in ``folder`` that the command keeping manifest ``name`` wrote there (name -> source)."""
    manifest = read_manifest(folder, name)
    names: dict[str, str] = {}
    for key in ("outputs", "done"):
        listed = manifest.get(key)
        if isinstance(listed, dict):
            names.update({str(name): str(src) for name, src in listed.items()})
    return names


def write_manifest(folder: str | Path, manifest: Mapping[str, Any], name: str = PREDICT_MANIFEST) -> Path:
    """Write a manifest atomically (temp file + rename): a killed writer never leaves half a
    manifest, which would make every earlier output look like someone else's file."""
    return atomic_write(Path(folder) / name, json.dumps(dict(manifest), indent=2))


def record_outputs(folder: str | Path, outputs: Mapping[str, str | Path], name: str = PREDICT_MANIFEST) -> None:
    """Add ``outputs`` (file name -> source) to ``folder``'s manifest ``name``, keeping everything else."""
    manifest = read_manifest(folder, name)
    listed = manifest.get("outputs")
    ours = dict(listed) if isinstance(listed, dict) else {}
    ours.update({str(k): str(src) for k, src in outputs.items()})
    manifest["outputs"] = ours
    write_manifest(folder, manifest, name)


# ------------------------------------------------------------------------------ checks
def _input_folders(out: Path, inputs: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Each input folder, and the folder of each input file (as given and with symlinks resolved)."""
    found: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.append((p, "is the input folder" + ("" if str(p) == str(out) else f" {p}")))
        elif p.exists():
            found.append((p.parent, f"holds the input scan {p}"))
            found.append((p.resolve().parent, f"holds the input scan {p} (through a symlink)"))
    return found


def _same_folder(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_folder(
    folder: str | Path,
    *,
    inputs: Iterable[str | Path],
    outputs: Iterable[str],
    what: str = "-o",
    manifest: str = PREDICT_MANIFEST,
    command: str = "cosmos predict",
    overwrite: bool = False,
) -> Path:
    """Refuse an output ``folder`` that would replace a file that is not ours; returns it as a Path.

    ``inputs``: the user's input files and folders; ``outputs``: the file names the command will write
    into ``folder``. Refused (one :class:`CosmosError` line, nothing written): a folder that is a file;
    a folder that is, or resolves to, an input folder or the folder of an input file; an output name that is (or links to) an input file; and, unless ``overwrite``, an
    output name that exists in the folder (a file, a folder or a symlink) and is not listed in the
    folder's ``manifest`` as written there by ``command``.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise CosmosError(f"{out}: is a file, not a folder: give {what} a new folder")
    given = [Path(p) for p in inputs]
    if not out.is_dir():
        return out  # a new folder: nothing in it can be replaced
    for candidate, why in _input_folders(out, given):
        if _same_folder(out, candidate):
            raise CosmosError(f"{out}: {why}: give {what} a new folder (outputs are never written beside the inputs)")
    input_files = [p for p in given if p.is_file()]
    ours = our_outputs(out, manifest)
    clashes = []
    for name in outputs:
        target = out / name
        if not (target.exists() or target.is_symlink()):
            continue
        for p in input_files:
            if target.exists() and _same_file(target, p):
                raise CosmosError(f"{target}: is the input {p}: give {what} a new folder")
        if not overwrite and (target.is_symlink() or not target.is_file() or name not in ours):
            clashes.append(target)
        elif overwrite and target.is_dir():
            clashes.append(target)
    if clashes:
        more = f" (and {len(clashes) - 1} other output name(s))" if len(clashes) > 1 else ""
        hint = "" if overwrite else ", pass --overwrite to replace it,"
        raise CosmosError(
            f"{clashes[0]}: already exists and was not written by {command}{more}: "
            f"move it away{hint} or give {what} a new folder"
        )
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_json_output(
    path: str | Path,
    *,
    inputs: Mapping[str, str | Path],
    what: str = "--json",
    keys: Iterable[str] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse a JSON output ``path`` that could replace the user's data; returns it as a Path.

    ``inputs``: {"prediction folder": path, ...}, folders the command reads. Refused (one
    :class:`CosmosError` line, nothing written): a path with a NIfTI suffix; a path inside (or
    resolving into) one of ``inputs``; a folder; a dangling symlink; an existing file that is not a
    JSON object holding every one of ``keys`` (i.e. not an earlier result of the same command),
    unless ``overwrite``.
    """
    p = Path(path)
    folders = list(dict.fromkeys(str(Path(f)) for f in inputs.values()))
    hint = f"give {what} a new .json file outside " + " and ".join(folders)
    if p.name.lower().endswith(NIFTI_SUFFIXES):
        raise CosmosError(f"{p}: has a NIfTI suffix ({what} writes JSON): {hint}")
    resolved = p.resolve()
    for role, folder in inputs.items():
        base = Path(folder)
        if resolved.is_relative_to(base.resolve()):
            raise CosmosError(f"{p}: is inside the {role} {base}: {hint}")
    if p.is_symlink() and not p.exists():
        raise CosmosError(f"{p}: dangling symlink (points to {os.readlink(p)}): {hint}")
    if p.is_dir():
        raise CosmosError(f"{p}: is a folder, not a file: {hint}")
    if p.exists() and not p.is_file():
        raise CosmosError(f"{p}: is not a regular file: {hint}")
    if p.exists() and not overwrite:
        hint += " (or pass --overwrite)"
        if p.stat().st_size > _MAX_JSON_BYTES:
            raise CosmosError(f"{p}: exists and is not JSON: {hint}")
        try:
            data = json.loads(p.read_bytes())
        except ValueError:
            raise CosmosError(f"{p}: exists and is not JSON: {hint}") from None
        wanted = list(keys)
        if wanted and not (isinstance(data, dict) and all(k in data for k in wanted)):
            raise CosmosError(f"{p}: exists and is not an earlier result of this command: {hint}")
    return p
