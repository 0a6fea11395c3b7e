"""Convert ceT1 volumes to pseudo-hrT2 on their own (source) grid (paper Algorithm 1, step 3).

Each output ``crossmoda_{i}_hrT2pseudo.nii.gz`` has the source shape and the source header/affine
(written with ``cosmos.data.nifti.save(..., like=source)``), and ``crossmoda_{i}_Label.nii.gz`` is a
byte copy of the source label, so image and label stay aligned voxel for voxel. The geometry
round trip (slice axis, pixel-space resampling, padding) is described in
:mod:`cosmos.translation.slices`.

Memory: slices go through the network in chunks of ``translator.convert_batch_size``; only the
float32 input volume, the output volume and one chunk's activations are alive at once
(crossMoDA-size 512x512x120 stays well under 2 GB peak RSS on CPU; see benchmarks/translator_speed.py).
Resumable: a case whose two output files exist is skipped (both are written atomically).

Fidelity: when the input is a crossMoDA root with ``target_training/`` hrT2, ``OUT/fidelity.json``
holds the label-free translation fidelity (:mod:`cosmos.translation.fidelity`) of every converted
case against up to ``translator.fidelity_cases`` real hrT2 volumes (at least 4), for the report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from cosmos.config import CosmosConfig, TranslatorConfig
from cosmos.cpu import apply_threads
from cosmos.data import nifti
from cosmos.data.layout import SOURCE_DIR, TARGET_DIR, Case, image_name, label_name, list_cases
from cosmos.data.outputs import CONVERT_MANIFEST, atomic_write, check_output_folder, record_outputs
from cosmos.errors import CosmosError
from cosmos.logs import progress
from cosmos.translation import fidelity
from cosmos.translation.model_io import ATTEMPTS_JSON, LoadedTranslator, resolve_model
from cosmos.translation.networks import Generator
from cosmos.translation.slices import (
    SliceGrid,
    from_slices_last,
    normalisation_range,
    normalise,
    pad_to_multiple,
    resample,
    resampled_shape,
    sliding_windows,
    to_output_intensity,
    to_slices_last,
    unpad,
    windows_per_slice,
)

log = logging.getLogger(__name__)

PSEUDO_MODALITY = "hrT2pseudo"
FIDELITY_JSON = "fidelity.json"


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CosmosError(f"translator.device={name} but no CUDA device is available")
    return torch.device(name)


@torch.no_grad()
def convert_volume(
    generator: Generator,
    data: np.ndarray,
    affine: np.ndarray,
    grid: SliceGrid,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Translate every axial slice of ``data`` and return a float32 array of the SAME shape in [0, 1].

    ``affine`` only decides which array axis is the slice axis and the in-plane spacings. A generator
    trained on windows (``grid.windowed``) translates slices that hold several of its windows window by
    window (:func:`cosmos.translation.slices.sliding_windows`); other slices go through whole.
    """
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    generator.eval()
    lo, hi = normalisation_range(data, grid.low_percentile, grid.high_percentile)
    norm = normalise(data, lo, hi)
    norm_last, spacing, axis = to_slices_last(norm, affine)
    out = np.empty(norm_last.shape, dtype=np.float32)
    src_size = tuple(norm_last.shape[:2])
    work_size = resampled_shape(src_size, spacing, grid.inplane_spacing)
    windowed = grid.windowed and windows_per_slice(max(work_size), grid.image_size) > 1
    n = norm_last.shape[-1]
    for z0 in range(0, n, max(1, batch_size)):
        z1 = min(n, z0 + max(1, batch_size))
        chunk = torch.from_numpy(np.ascontiguousarray(np.moveaxis(norm_last[..., z0:z1], -1, 0)))[:, None]
        x = resample(chunk.to(device), work_size)
        # windowed: padded (background) to at least one window, as training put slices on its canvas
        x, pads = pad_to_multiple(x, generator.divisor, minimum=grid.image_size if windowed else 0)
        y = unpad(sliding_windows(generator, x, grid.image_size) if windowed else generator(x), pads)
        y = resample(y, src_size)[:, 0].clamp_(-1.0, 1.0)
        out[..., z0:z1] = np.moveaxis(to_output_intensity(y).float().cpu().numpy(), 0, -1)
        del chunk, x, y
    del norm, norm_last
    return np.ascontiguousarray(from_slices_last(out, axis))


def _source_cases(input_dir: Path) -> list[Case]:
    """crossMoDA root (uses source_training/) or a flat folder of *_ceT1 + *_Label."""
    folder = input_dir / SOURCE_DIR if (input_dir / SOURCE_DIR).is_dir() else input_dir
    if not input_dir.is_dir():
        raise CosmosError(f"{input_dir}: input directory not found")
    cases = list_cases(folder, "ceT1")
    if not cases:
        raise CosmosError(
            f"{folder}: no crossmoda_*_ceT1.nii.gz images found (expected a crossMoDA root with "
            f"{SOURCE_DIR}/ or a flat folder of *_ceT1 + *_Label files)"
        )
    missing = [c.image.name for c in cases if c.label is None]
    if missing:
        raise CosmosError(f"{folder}: no label (crossmoda_*_Label.nii.gz) for {', '.join(missing)}")
    return cases


def check_convert_output(input_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> list[Case]:
    """The source cases, after refusing an ``out_dir`` that would replace the user's files.

    ``cosmos translator convert --out`` into the flat ceT1 folder used to write each label copy over
    the user's label, and into any folder it replaced same-named files it had not written. Refused
    (one line naming both paths, before the model is loaded): ``out_dir`` is or holds an input; an
    output name exists there and is not in the folder's convert manifest (unless ``overwrite``).
    """
    cases = _source_cases(Path(input_dir))
    names = [n for c in cases for n in (image_name(c.case_id, PSEUDO_MODALITY), label_name(c.case_id))]
    inputs: list[Path] = [Path(input_dir), *(c.image for c in cases), *(c.label for c in cases if c.label)]
    if (Path(input_dir) / SOURCE_DIR).is_dir():
        inputs.append(Path(input_dir) / SOURCE_DIR)
    check_output_folder(
        out_dir,
        inputs=inputs,
        outputs=[*names, FIDELITY_JSON, ATTEMPTS_JSON],
        what="--out",
        manifest=CONVERT_MANIFEST,
        command="cosmos translator convert",
        overwrite=overwrite,
    )
    return cases


def convert_source(
    model: str | Path | LoadedTranslator,
    input_dir: str | Path,
    out_dir: str | Path,
    cfg: CosmosConfig | None = None,
    tracking_uri: str | None = None,
) -> list[Path]:
    """Convert every source ceT1 case; returns the pseudo-hrT2 paths (one per case, sorted by case).

    ``model``: a local model dir, ``models:/cosmos-translator/VERSION``, ``models:/cosmos-translator@ALIAS``
    (or an already loaded translator). Writes ``crossmoda_{i}_hrT2pseudo.nii.gz`` + a copy of
    ``crossmoda_{i}_Label.nii.gz`` into ``out_dir``.
    """
    tcfg = cfg.translator if cfg is not None else TranslatorConfig()
    device = pick_device(tcfg.device)
    if device.type == "cpu":
        apply_threads(tcfg.num_threads)
    cases = _source_cases(Path(input_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    translator = model if isinstance(model, LoadedTranslator) else resolve_model(model, tracking_uri, device)
    translator.generator.to(device)
    ref_q, n_ref = _reference(Path(input_dir), tcfg, translator.grid)
    rows: list[dict[str, float]] = []
    written: list[Path] = []
    skipped = 0
    for case in progress(cases, desc="translate ceT1->hrT2", unit="case"):
        img_out = out / image_name(case.case_id, PSEUDO_MODALITY)
        lab_out = out / label_name(case.case_id)
        src = nifti.load(case.image) if ref_q is not None or not (img_out.exists() and lab_out.exists()) else None
        if img_out.exists() and lab_out.exists():
            written.append(img_out)
            skipped += 1
            if src is not None and ref_q is not None:  # src is loaded here only for the fidelity figures
                rows.append(
                    case_fidelity(
                        nifti.load(img_out).data,
                        nifti.load(lab_out, label=True).data,
                        src.data,
                        src.affine,
                        ref_q,
                        translator.grid,
                    )
                )
            continue
        # an output is missing, so src was loaded above; _source_cases refuses a case without its label
        assert src is not None and case.label is not None
        lab = nifti.load(case.label, label=True)
        problem = nifti.same_grid(src, lab)
        if problem:
            raise CosmosError(f"{case.label}: label is not on the grid of {case.image.name} ({problem})")
        pseudo = convert_volume(
            translator.generator,
            src.data,
            src.affine,
            translator.grid,
            batch_size=tcfg.convert_batch_size,
            device=device,
        )
        if ref_q is not None:
            rows.append(case_fidelity(pseudo, lab.data, src.data, src.affine, ref_q, translator.grid))
        # listed as ours before they are written (a killed run's files stay ours; cosmos.data.outputs)
        record_outputs(out, {lab_out.name: case.label, img_out.name: case.image}, CONVERT_MANIFEST)
        atomic_write(lab_out, case.label.read_bytes())
        nifti.save(img_out, pseudo, like=src)  # written last: its presence marks the case done
        written.append(img_out)
    log.info("translated %d ceT1 case(s) to %s (%d already done)", len(cases) - skipped, out, skipped)
    attempts = Path(model) / ATTEMPTS_JSON if isinstance(model, (str, Path)) else None
    if attempts is not None and attempts.is_file():  # the translator stage's candidates travel to the report
        record_outputs(out, {ATTEMPTS_JSON: attempts}, CONVERT_MANIFEST)
        atomic_write(out / ATTEMPTS_JSON, attempts.read_bytes())
    if rows:
        fid = fidelity.summarise(rows, n_ref)
        record_outputs(out, {FIDELITY_JSON: "fidelity"}, CONVERT_MANIFEST)
        atomic_write(out / FIDELITY_JSON, json.dumps(fid.to_dict(), indent=2, sort_keys=True))
        log.info(
            "translation fidelity: W1 %.3f (untranslated %.3f), VS darker than fluid in %.0f%% of cases, "
            "cochlea bright in %.0f%%, cochlea brighter than the bone around it in %.0f%%, VS above the head's "
            "median in %.0f%%",
            fid.w1,
            fid.w1_untranslated,
            100 * fid.vs_darker_than_fluid,
            100 * fid.cochlea_bright,
            100 * fid.cochlea_in_dark_bone,
            100 * fid.vs_above_median,
        )
    return written


def _reference(input_dir: Path, tcfg: TranslatorConfig, grid: SliceGrid) -> tuple[np.ndarray | None, int]:
    """Quantile function of real hrT2 (``target_training/`` of a crossMoDA root), or (None, 0)."""
    if tcfg.fidelity_cases <= 0 or not (input_dir / TARGET_DIR).is_dir():
        return None, 0
    cases = list_cases(input_dir / TARGET_DIR, "hrT2")
    if not cases:
        return None, 0
    pick = spread_indices(len(cases), max(4, tcfg.fidelity_cases))
    return reference_of([cases[i].image for i in pick], grid), len(pick)


def spread_indices(n: int, count: int) -> list[int]:
    """Up to ``count`` indices evenly spread over ``range(n)`` (4 of 8 is not the first 4)."""
    return [int(i) for i in np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))] if n > 0 else []


def reference_of(images: list[Path], grid: SliceGrid) -> np.ndarray:
    """Quantile function of the in-head intensities of real hrT2 files (each normalised, native grid)."""
    vols = []
    for path in images:
        img = nifti.load(path)
        vols.append(to_slices_last(img.data, img.affine)[0])
    return fidelity.reference_quantiles(vols, -1, grid.low_percentile, grid.high_percentile)


def case_fidelity(
    pseudo: np.ndarray, label: np.ndarray, source: np.ndarray, affine: np.ndarray, ref_q: np.ndarray, grid: SliceGrid
) -> dict[str, float]:
    """The fidelity figures of one converted volume on its own grid (what the teacher will train on)."""
    slices, spacing, _ = to_slices_last(pseudo, affine)
    row = fidelity.case_figures(
        slices,
        to_slices_last(label, affine)[0],
        ref_q,
        source=to_slices_last(source, affine)[0],
        slice_axis=-1,
        low=grid.low_percentile,
        high=grid.high_percentile,
        inplane_mm=float(np.mean(spacing)),
    )
    return row
