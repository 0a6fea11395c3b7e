"""Check a crossMoDA 2021 tree before any stage spends GPU hours on it.

Why up front and exhaustive: a corrupt file or a label on the wrong grid otherwise surfaces hours
later as a deep nnU-Net or PyTorch traceback. ``validate_dataset`` reads every file once and
returns *every* problem (not just the first), each naming the file, so a user fixes them in one go.

Checked: folder layout (missing or empty domain folders, unexpected entries), file naming
(unknown names, an hrT2 in the ceT1 folder and vice versa, labels in the unannotated target
folder), duplicate case ids (across domains, or ``.nii`` beside ``.nii.gz``), source images
without labels and labels without images, and per file: unreadable/corrupt gzip, truncated NIfTI,
non-3D data, NaN/inf intensities, label values outside {0, 1, 2}, and a label whose grid (shape,
or affine beyond a tolerance) differs from its image. Every file is read with the project's one
reader (``nifti.load``), so a corrupt gzip stream (bit flip, bad CRC/length trailer) or a header
that claims more voxels than the file can hold is caught here, exactly as in every later stage.
Images must also be *usable*: a NaN/inf or singular affine and an all-constant image are refused, and
so is geometry that SimpleITK/nnU-Net would read differently from nibabel (``nifti.geometry_problems``:
pixdim against the sform, a zero/negative pixdim, implausible voxel sizes, a sheared direction matrix).
A source label with no foreground at all is a warning (``check_dataset(...).warnings``): legal,
but that case teaches the segmenter nothing.

``.nii`` and ``.nii.gz`` are both accepted; ``ingest`` compresses ``.nii`` so later stages see one
ending, and ``layout.find_label`` pairs either, so ``validate`` and the pipeline never disagree.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosmos.data import layout, nifti
from cosmos.logs import progress

log = logging.getLogger(__name__)

ALLOWED_LABELS = frozenset(layout.LABELS)  # {0, 1, 2}
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file or folder."""

    path: str
    message: str
    warning: bool = False  # legal but suspicious: reported, never blocking

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Report:
    """What ``check_dataset`` found: ``errors`` block a run, ``warnings`` are only reported."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


# folder -> (modality images expected there, labels expected there?)
_FOLDERS = {
    layout.SOURCE_DIR: ("ceT1", True),
    layout.TARGET_DIR: ("hrT2", False),
    layout.VALIDATION_DIR: ("hrT2", True),  # labels may sit beside the images (layout.discover reads them)
}
_WRONG_MODALITY_HINT = {
    ("ceT1", "hrT2"): "an hrT2 image in the source (ceT1) folder",
    ("hrT2", "ceT1"): "a ceT1 image in a target (hrT2) folder",
    ("hrT2", "hrT2pseudo"): "a translated pseudo-hrT2 image in a real target folder",
    ("ceT1", "hrT2pseudo"): "a translated pseudo-hrT2 image in the source folder",
}


def _is_ignorable(p: Path) -> bool:
    """Hidden files (``.DS_Store``, our own temp files) and checksums are not data."""
    return p.name.startswith(".") or p.suffix in (".md5", ".sha256", ".json", ".txt", ".md")


def validate_dataset(
    root: str | Path,
    val_labels: str | Path | None = None,
    required: tuple[str, ...] = (layout.SOURCE_DIR, layout.TARGET_DIR),
) -> list[Problem]:
    """Every problem found in the crossMoDA tree at ``root`` (empty list = clean); warnings are logged.

    ``val_labels``: a folder of validation labels (default ``root/target_validation_labels`` when it
    exists). ``required``: the domain folders that must exist and be non-empty.
    """
    report = check_dataset(root, val_labels, required)
    for w in report.warnings:
        log.warning("%s", w)
    return report.errors


def path_problem(path: Path, want_dir: bool = True) -> str | None:
    """Why ``path`` cannot be used as a folder (or file): missing, dangling link, symlink loop, wrong kind."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"dangling symlink (points to {os.readlink(path)}, which does not exist)"
        return "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        return f"cannot be read ({exc.strerror or exc})"
    import stat as _stat

    if want_dir and not _stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if not want_dir and not _stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    return None


def check_dataset(
    root: str | Path,
    val_labels: str | Path | None = None,
    required: tuple[str, ...] = (layout.SOURCE_DIR, layout.TARGET_DIR),
) -> Report:
    """Errors and warnings for the crossMoDA tree at ``root`` (see ``validate_dataset``)."""
    if isinstance(root, str) and root.startswith("s3://"):
        return Report([Problem(root, "is an s3:// URI; download it first (cosmos validate does this for you)")])
    root = Path(root)
    why = path_problem(root)
    if why:
        return Report([Problem(str(root), why)])
    problems: list[Problem] = []
    # case id -> list of (path, kind) over all folders, to find duplicates.
    seen: dict[str, list[Path]] = defaultdict(list)
    images: dict[str, dict[str, Path]] = {}  # folder -> case -> image path
    labels: dict[str, dict[str, Path]] = {}  # folder -> case -> label path

    present = sorted(p.name for p in root.iterdir() if not _is_ignorable(p))
    for required_folder in required:
        if not (root / required_folder).is_dir():
            problems.append(
                Problem(str(root / required_folder), f"missing folder (crossMoDA 2021 layout); {root} holds {present}")
            )

    vl_dir = Path(val_labels) if val_labels is not None else root / layout.VALIDATION_LABELS_DIR
    if val_labels is not None and not vl_dir.is_dir():
        why = path_problem(vl_dir)
        problems.append(
            Problem(
                str(vl_dir),
                "validation-label folder does not exist"
                if why == "does not exist"
                else f"validation-label folder: {why}",
            )
        )
    for name in _FOLDERS:  # a domain folder that is a broken link must not look merely "missing"
        folder = root / name
        if folder.is_symlink() and not folder.is_dir():
            problems.append(Problem(str(folder), path_problem(folder) or "unusable symlink"))

    folders = [(name, root / name) for name in _FOLDERS if (root / name).is_dir()]
    for name, folder in folders:
        expected, labelled = _FOLDERS[name]
        images[name], labels[name] = {}, {}
        entries = [p for p in sorted(folder.iterdir()) if not _is_ignorable(p)]
        if not entries:
            problems.append(Problem(str(folder), "empty folder (no cases in this domain)"))
            continue
        for p in entries:
            if p.is_dir():
                problems.append(Problem(str(p), "unexpected sub-folder (the crossMoDA layout is flat)"))
                continue
            parsed = layout.parse_name(p.name)
            if parsed is None:
                problems.append(
                    Problem(
                        str(p),
                        "file name follows no crossMoDA naming (expected crossmoda_<N>_{ceT1,hrT2,Label}.nii.gz)",
                    )
                )
                continue
            case, kind = parsed
            if kind == "Label":
                if not labelled:
                    problems.append(
                        Problem(
                            str(p),
                            f"label in {name}: this domain is unannotated "
                            f"(validation labels go in {layout.VALIDATION_LABELS_DIR}/)",
                        )
                    )
                    continue
                _add(labels[name], case, p, problems)
                continue
            if kind != expected:
                hint = _WRONG_MODALITY_HINT.get((expected, kind), f"a {kind} image where {expected} is expected")
                problems.append(Problem(str(p), f"{hint}"))
                continue
            if _add(images[name], case, p, problems):
                seen[case].append(p)

    if vl_dir.is_dir():
        name = layout.VALIDATION_LABELS_DIR
        labels[name] = {}
        entries = [p for p in sorted(vl_dir.iterdir()) if not _is_ignorable(p)]
        if not entries:
            problems.append(Problem(str(vl_dir), "empty folder (no validation labels)"))
        for p in entries:
            parsed = layout.parse_name(p.name) if p.is_file() else None
            if parsed is None or parsed[1] != "Label":
                problems.append(Problem(str(p), "not a label file (expected crossmoda_<N>_Label.nii.gz)"))
                continue
            _add(labels[name], parsed[0], p, problems)

    # The same case id in two domains: unpaired domains must not share subjects/ids.
    for case, paths in seen.items():
        if len(paths) > 1:
            others = ", ".join(str(p) for p in paths[1:])
            problems.append(Problem(str(paths[0]), f"duplicate case id {case!r} (also {others})"))

    # Pairing: source images <-> labels, validation labels -> validation images.
    pairs: list[tuple[Path, Path | None]] = []
    src_img, src_lab = images.get(layout.SOURCE_DIR, {}), labels.get(layout.SOURCE_DIR, {})
    for case, img in src_img.items():
        lab = src_lab.get(case)
        if lab is None:
            problems.append(Problem(str(img), f"source image without its label ({layout.label_name(case)})"))
        pairs.append((img, lab))
    for case, lab in src_lab.items():
        if case not in src_img:
            problems.append(Problem(str(lab), f"label without its image ({layout.image_name(case, 'ceT1')})"))
            pairs.append((lab, None))  # still check its content
    for name in (layout.TARGET_DIR,):
        pairs.extend((img, None) for img in images.get(name, {}).values())
    val_img = images.get(layout.VALIDATION_DIR, {})
    beside, separate = labels.get(layout.VALIDATION_DIR, {}), labels.get(layout.VALIDATION_LABELS_DIR, {})
    if beside and vl_dir.is_dir():
        for lab in beside.values():
            problems.append(
                Problem(
                    str(lab),
                    f"validation label beside the images while {vl_dir} also exists; "
                    "keep validation labels in one place",
                )
            )
    val_lab = separate if vl_dir.is_dir() else beside
    for case, img in val_img.items():
        pairs.append((img, val_lab.get(case)))
    for case, lab in val_lab.items():
        if case not in val_img:
            problems.append(
                Problem(
                    str(lab),
                    f"validation label without its image ({layout.VALIDATION_DIR}/{layout.image_name(case, 'hrT2')})",
                )
            )
            pairs.append((lab, None))
    if val_lab and val_img and len(val_lab) < len(val_img):
        missing = sorted(set(val_img) - set(val_lab), key=layout.case_sort_key)
        log.info("%d validation case(s) have no label and will not be scored: %s", len(missing), missing)

    warnings: list[Problem] = []
    for first, second in progress(pairs, desc="validate", unit="case"):
        first_case = _case_of(first)
        is_source = first_case is not None and src_lab.get(first_case) is second is not None
        for problem in check_pair(first, second, source=is_source):
            (warnings if problem.warning else problems).append(problem)
    return Report(problems, warnings)


def _case_of(path: Path) -> str | None:
    parsed = layout.parse_name(path.name)
    return parsed[0] if parsed else None


def _add(table: dict[str, Path], case: str, p: Path, problems: list[Problem]) -> bool:
    """Register ``p`` for ``case``; a second file for the same case and kind is a duplicate."""
    if case in table:
        problems.append(
            Problem(
                str(p),
                f"duplicate case id {case!r} in this folder (also {table[case].name}); keep one of .nii / .nii.gz",
            )
        )
        return False
    table[case] = p
    return True


def check_pair(image_path: Path, label_path: Path | None = None, source: bool = False) -> list[Problem]:
    """Content checks of one image (or lone label) and, if given, its label against its grid.

    ``source``: the label is a source (training) label, whose empty foreground is worth a warning.
    """
    problems: list[Problem] = []
    parsed = layout.parse_name(image_path.name)
    is_label = parsed is not None and parsed[1] == "Label"
    image = _load(image_path, is_label, problems)
    if image is not None and not is_label:
        for why in nifti.image_problems(image):  # the same checks as predict: geometry included
            problems.append(Problem(str(image_path), why))
    if image is not None and is_label:
        problems.extend(_label_values(image_path, image))
    if label_path is None:
        return problems
    label = _load(label_path, True, problems)
    if label is None:
        return problems
    values = _label_values(label_path, label)
    problems.extend(values)
    if not np.all(np.isfinite(label.affine)):
        problems.append(Problem(str(label_path), "affine holds NaN or inf (no usable voxel-to-world geometry)"))
    elif source and not values and not np.any(label.data):
        problems.append(
            Problem(
                str(label_path),
                "source label has no foreground at all (no VS, no cochlea): this case teaches the segmenter nothing",
                warning=True,
            )
        )
    if image is not None:
        diff = nifti.same_grid(label, image, atol=AFFINE_TOLERANCE_MM)
        if diff:
            problems.append(Problem(str(label_path), f"label grid differs from its image {image_path.name}: {diff}"))
    return problems


def _load(path: Path, label: bool, problems: list[Problem]) -> nifti.Volume | None:
    try:
        # Labels are read raw (not as uint8) so out-of-range values are reported, not wrapped.
        return nifti.load(path, dtype=np.float32)
    except nifti.NiftiError as exc:
        msg = str(exc)
        prefix = f"{path}: "
        problems.append(Problem(str(path), msg[len(prefix) :] if msg.startswith(prefix) else msg))
    except Exception as exc:  # any other reader failure is still one line about this file
        problems.append(Problem(str(path), f"unreadable ({type(exc).__name__}: {exc})"))
    return None


def _label_values(path: Path, vol: nifti.Volume) -> list[Problem]:
    data = vol.data
    if not np.all(np.isfinite(data)):
        return [Problem(str(path), "label contains NaN or inf")]
    values = np.unique(data)
    bad = [v for v in values.tolist() if v not in ALLOWED_LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        return [Problem(str(path), f"label values outside {{0, 1, 2}}: {shown}")]
    return []
