"""predict: ensemble of nnU-Net folds -> crossMoDA label files on each input's exact grid.

How: nnUNetPredictor with ``manual_initialization`` (we build the network ourselves; nnU-Net's
``initialize_from_trained_model_folder`` looks the trainer up by name, which imports timm /
torchvision and crashes on the CPU torch here; docs/nnunet-cpu.md). Per case: nnU-Net's own preprocessing
(SimpleITK reader, crop, normalise, resample), sliding-window logits averaged over the folds
(nnU-Net's ensembling), mirroring TTA when enabled, nnU-Net's resampling back to the original
shape. The label array is then written with nibabel on the INPUT's header (sform/qform codes and
matrices kept exactly), never with SimpleITK, so the output's geometry is the input's.

Post-processing: one 3D connected component for VS (label 1) ONLY; the cochlea is untouched (nnU-Net's
``find_best_configuration`` may pick largest-component of the union of labels, which would delete a
separate cochlea). Which one (``segmentation.vs_component``): ``largest`` (the paper) or ``confident``,
the component with the highest mean VS probability among those of at least
``segmentation.vs_min_component_mm3``. Why: on whole-head crops a network trained at CPU budgets marks
dozens of VS-like blobs (grey tissue next to bright fluid), and a 4-7 mm tumour is smaller than many
of them: measured on life-sized phantom heads (nnU-Net on the true labels, 720 iterations), 77-205
VS components per scan, the largest one was the tumour in 1 of 4 scans (VS Dice 0.20), the most
confident one in 4 of 4 (VS Dice 0.81-0.84); where the network marks one component (the built-in
phantom) both rules keep the same voxels. The cochlea (``segmentation.cochlea_components``): ``all`` (the
paper: untouched) or ``per_side``, the largest cochlea component on each side of the head's midline (two
cochleae, one per inner ear; :func:`keep_one_cochlea_per_side` says why).

Outputs in ``out_dir``: ``crossmoda_{k}_Label.nii.gz`` (uint8) for crossMoDA-named inputs,
``<stem>_seg.nii.gz`` otherwise; with ``save_probabilities`` also ``<same stem>.npz`` holding
``probabilities`` (float16, C x I x J x K in the NIfTI's voxel order, C = background, VS, cochlea)
and ``labels``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cosmos.config import CosmosConfig
from cosmos.cpu import resolve_threads
from cosmos.data import layout, nifti
from cosmos.data.outputs import PREDICT_MANIFEST as PREDICT_MANIFEST  # spelled once; the output check reads it
from cosmos.data.outputs import our_outputs, read_manifest, write_manifest
from cosmos.errors import CosmosError
from cosmos.evaluation.measurements import Measurements, measure, measurements_path, removed_components, write_json
from cosmos.logs import progress
from cosmos.segmentation import environment
from cosmos.segmentation.environment import FINAL_CHECKPOINT

# The post-processing rules live in cosmos.segmentation.postprocessing (one named object each); their names stay
# importable from here.
from cosmos.segmentation.postprocessing import (
    COCHLEA_LABEL as COCHLEA_LABEL,
)
from cosmos.segmentation.postprocessing import (
    VS_LABEL as VS_LABEL,
)
from cosmos.segmentation.postprocessing import (
    AllCochleaComponents as AllCochleaComponents,
)
from cosmos.segmentation.postprocessing import (
    LargestVSComponent as LargestVSComponent,
)
from cosmos.segmentation.postprocessing import (
    MostConfidentVSComponent as MostConfidentVSComponent,
)
from cosmos.segmentation.postprocessing import (
    OneCochleaPerSide as OneCochleaPerSide,
)
from cosmos.segmentation.postprocessing import (
    head_midline_x as head_midline_x,
)
from cosmos.segmentation.postprocessing import (
    keep_confident_vs_component as keep_confident_vs_component,
)
from cosmos.segmentation.postprocessing import (
    keep_largest_vs_component as keep_largest_vs_component,
)
from cosmos.segmentation.postprocessing import (
    keep_one_cochlea_per_side as keep_one_cochlea_per_side,
)
from cosmos.segmentation.postprocessing import (
    one_vs_component as one_vs_component,
)
from cosmos.segmentation.postprocessing import (
    postprocess as postprocess,
)
from cosmos.segmentation.postprocessing import (
    rules_from_config as rules_from_config,
)

log = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


# ------------------------------------------------------------------------------ inputs / outputs
def _stem(path: Path) -> str:
    name = path.name
    for suf in _NIFTI_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def output_name(image: str | Path) -> str:
    """``crossmoda_7_hrT2.nii.gz`` -> ``crossmoda_7_Label.nii.gz``; ``scan.nii.gz`` -> ``scan_seg.nii.gz``."""
    parsed = layout.parse_name(Path(image).name)
    if parsed is not None:
        return layout.label_name(parsed[0])
    return f"{_stem(Path(image))}_seg.nii.gz"


def collect_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """A folder (its hrT2 images; any NIfTI when none is crossMoDA-named) or a list of files."""
    if isinstance(inputs, (str, Path)):
        folder = Path(inputs)
        if folder.is_file():
            return [folder]
        if not folder.is_dir():
            raise CosmosError(f"{folder}: input folder or file not found")
        niftis = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_NIFTI_SUFFIXES))
        hrt2 = [p for p in niftis if (layout.parse_name(p.name) or ("", ""))[1] in ("hrT2", "hrT2pseudo")]
        if hrt2:
            files = hrt2
        else:
            files = [p for p in niftis if layout.parse_name(p.name) is None]
        if not files:
            raise CosmosError(
                f"{folder}: no hrT2 NIfTI images to segment (expected crossmoda_*_hrT2.nii.gz or *.nii.gz)"
            )
        return sorted(files, key=lambda p: layout.case_sort_key(p.name))
    files = [Path(p) for p in inputs]
    if not files:
        raise CosmosError("no input images given")
    for p in files:
        if not p.is_file():
            raise CosmosError(f"{p}: input image not found")
    names = [output_name(p) for p in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CosmosError(f"inputs map to the same output name(s): {', '.join(dupes)}")
    return files


# ------------------------------------------------------------------------------ model
@dataclass
class FoldEnsemble:
    """What nnUNetPredictor.manual_initialization needs, loaded from fold model directories."""

    fold_dirs: list[Path]
    plans: dict
    dataset_json: dict
    configuration: str
    trainer_name: str
    parameters: list[dict]
    mirror_axes: tuple[int, ...] | None
    digest: str


def load_folds(fold_model_dirs: Iterable[str | Path], checkpoint: str = FINAL_CHECKPOINT) -> FoldEnsemble:
    """Load the folds' weights; all folds must come from the same plan (same prepared round)."""
    import torch

    dirs = [Path(d) for d in fold_model_dirs]
    if not dirs:
        raise CosmosError("no fold model directories given")
    plans: dict | None = None
    dataset_json: dict | None = None
    configuration: str | None = None
    trainer_name: str | None = None
    mirror = None
    params: list[dict] = []
    h = hashlib.sha256()
    for d in dirs:
        ckpt_path, plans_path, ds_path = d / checkpoint, d / "plans.json", d / "dataset.json"
        for p in (ckpt_path, plans_path, ds_path):
            if not p.is_file():
                raise CosmosError(f"{d}: not a trained fold model ({p.name} missing)")
        try:
            ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CosmosError(f"{ckpt_path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
        fold_plans = json.loads(plans_path.read_text())
        fold_cfg = ckpt.get("init_args", {}).get("configuration")
        if plans is None:
            plans, dataset_json = fold_plans, json.loads(ds_path.read_text())
            configuration, trainer_name = fold_cfg, ckpt.get("trainer_name", "nnUNetTrainer")
            mirror = ckpt.get("inference_allowed_mirroring_axes")
        elif fold_plans != plans or fold_cfg != configuration:
            raise CosmosError(
                f"{d}: trained with a different plan/configuration than {dirs[0]}; "
                "only folds of the same round can be ensembled"
            )
        if configuration not in plans.get("configurations", {}):
            raise CosmosError(f"{d}: configuration {configuration!r} not in its plans.json")
        params.append(ckpt["network_weights"])
        st = ckpt_path.stat()
        h.update(f"{ckpt_path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    # set by the first fold (dirs is non-empty); configuration is a key of plans["configurations"]
    assert plans is not None and dataset_json is not None and configuration is not None and trainer_name is not None
    return FoldEnsemble(
        dirs,
        plans,
        dataset_json,
        configuration,
        trainer_name,
        params,
        tuple(mirror) if mirror is not None else None,
        h.hexdigest()[:16],
    )


def build_predictor(
    ensemble: FoldEnsemble,
    device,
    mirroring: bool,
    tile_step_size: float = 0.5,
    mirror_axes: tuple[int, ...] | None = None,
):
    """nnUNetPredictor initialised by hand (no trainer name lookup). ``mirror_axes``: the flips of the
    test-time augmentation (None = the trained model's, every axis for nnU-Net's 3D: 8 passes)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(ensemble.plans)
    configuration_manager = plans_manager.get_configuration(ensemble.configuration)
    n_in = determine_num_input_channels(plans_manager, configuration_manager, ensemble.dataset_json)
    n_out = plans_manager.get_label_manager(ensemble.dataset_json).num_segmentation_heads
    # Our trainer subclass does not change the architecture, so nnUNetTrainer's builder is the one.
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, configuration_manager, n_in, n_out, enable_deep_supervision=False
    )
    network.load_state_dict(ensemble.parameters[0])
    predictor = nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network,
        plans_manager,
        configuration_manager,
        ensemble.parameters,
        ensemble.dataset_json,
        ensemble.trainer_name,
        mirror_axes if mirror_axes is not None else ensemble.mirror_axes,
    )
    return predictor


# ------------------------------------------------------------------------------ predict
def _predict_case(predictor, image: Path, want_probabilities: bool):
    """nnU-Net preprocessing + ensemble logits + resampling back. Returns (seg, probs) in SimpleITK
    array order (z, y, x), i.e. the transpose of the NIfTI voxel order."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    try:
        data, _, props = preprocessor.run_case(
            [str(image)], None, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
        )
    except Exception as exc:  # SimpleITK read errors, bad dimensionality, ...
        raise CosmosError(
            f"{image}: nnU-Net could not read/preprocess the image ({type(exc).__name__}: {exc})"
        ) from None
    logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(np.ascontiguousarray(data))).cpu()
    out = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits,
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.label_manager,
        props,
        return_probabilities=want_probabilities,
        num_threads_torch=max(1, torch.get_num_threads()),
    )
    return out if want_probabilities else (out, None)


def predictor_for(ensemble: FoldEnsemble, seg_cfg, device, mirroring: bool):
    """:func:`build_predictor` with the config's tiling and flips: the one predictor ``cosmos predict``
    builds per call and ``cosmos serve`` builds once and keeps (its folds stay in memory)."""
    axes = tuple(int(a) for a in seg_cfg.mirror_axes) if seg_cfg.mirror_axes is not None else None
    return build_predictor(ensemble, device, mirroring, seg_cfg.tile_step_size, axes)


def needs_probabilities(seg_cfg) -> bool:
    """Whether the configured post-processing reads the softmax (the ``confident`` VS rule does)."""
    return any(r.needs_probabilities for r in rules_from_config(seg_cfg))


@dataclass
class CasePrediction:
    """One scan's prediction, in the NIfTI's voxel order (i, j, k) on the scan's grid.

    ``raw``: the ensemble's labels before post-processing (what the measurements count removed
    components against); ``labels``: after it (what is written); ``probabilities``: the ensemble's
    softmax, C x I x J x K float32, when asked for.
    """

    volume: nifti.Volume
    raw: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray | None
    # the VS confidence taken from the softmax before it was dropped (a model trained on ROI crops: the softmax
    # stays on the crop while the labels go back onto the whole scan)
    confidence: float | None = None


def predict_case(
    predictor, image: Path, seg_cfg, need_probabilities: bool, volume: nifti.Volume | None = None
) -> CasePrediction:
    """Segment one file with a built predictor: nnU-Net's preprocessing, fold ensemble (with the
    predictor's mirroring), resampling back, then the configured post-processing. Why one function:
    ``cosmos predict`` and the warm ``cosmos serve`` call it, so their labels cannot drift apart.
    ``volume``: the file already loaded with :func:`nifti.load_image` (skips a second read)."""
    # refuses corrupt, NaN/Inf, bad-affine or constant input (one line)
    vol = nifti.load_image(image) if volume is None else volume
    # the memory cap once resampled to the model's voxel size, from the header alone (cosmos.data.nifti)
    target = getattr(getattr(predictor, "configuration_manager", None), "spacing", None)
    too_big = nifti.memory_problems(vol.shape, vol.spacing, target) if target is not None else []
    if too_big:
        raise nifti.NiftiError(f"{image}: " + "; ".join(too_big))
    seg, probs = _predict_case(predictor, image, need_probabilities)
    seg = np.asarray(seg).transpose(2, 1, 0)  # SimpleITK (z,y,x) -> NIfTI voxel order (i,j,k)
    if seg.shape != vol.shape:
        raise CosmosError(
            f"{image}: prediction shape {seg.shape} differs from the image {vol.shape} "
            "(the image's header may be inconsistent)"
        )
    p = None if probs is None else np.asarray(probs, dtype=np.float32).transpose(0, 3, 2, 1)
    raw = seg.astype(np.uint8)
    return CasePrediction(vol, raw, postprocess(raw.copy(), p, vol, seg_cfg), p)


def case_measurements(case: CasePrediction) -> Measurements:
    """The measurements of one prediction (:mod:`cosmos.evaluation.measurements`): the labels on the scan's
    grid, the softmax's confidence when the case holds it, the components the post-processing removed (raw vs
    kept labels), left/right split at the head's midline (the one the per-side cochlea rule uses)."""
    seg = case.labels
    midline = head_midline_x(case.volume) if np.any(seg == COCHLEA_LABEL) else None
    return measure(
        seg,
        case.volume.affine,
        probabilities=case.probabilities,
        removed_components=removed_components(case.raw, seg),
        midline_x=midline,
        confidence=case.confidence,
    )


def write_case_measurements(label_path: Path, case: CasePrediction) -> Path:
    """Write :func:`case_measurements` beside ``label_path`` as ``<case>_measurements.json`` (atomic)."""
    return write_json(measurements_path(label_path), case_measurements(case))


def predict(
    fold_model_dirs: list,
    inputs,
    out_dir,
    cfg: CosmosConfig,
    mirroring: bool | None = None,
    save_probabilities: bool | None = None,
    measurements: bool = True,
) -> list[Path]:
    """Segment ``inputs`` with the ensemble of ``fold_model_dirs``; returns the label files written.

    ``measurements``: also write ``<case>_measurements.json`` beside each label
    (:mod:`cosmos.evaluation.measurements`: volumes, VS diameter, components the post-processing removed,
    the ensemble's confidence inside the VS).

    ``inputs``: a folder of ``*_hrT2`` images (or any ``*.nii.gz`` when none is crossMoDA-named), a
    single file, or a list of files. ``mirroring`` / ``save_probabilities`` default to the config.
    Resumable: a case whose output exists from the same model and options is not predicted again.
    """
    seg_cfg = cfg.segmentation
    mirroring = seg_cfg.mirroring if mirroring is None else bool(mirroring)
    save_probabilities = seg_cfg.save_probabilities if save_probabilities is None else bool(save_probabilities)
    files = collect_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensemble = load_folds(fold_model_dirs)
    run_key = {
        "model": ensemble.digest,
        "mirroring": mirroring,
        "probabilities": save_probabilities,
        "tile_step_size": seg_cfg.tile_step_size,
        "mirror_axes": seg_cfg.mirror_axes,
        "vs_component": [seg_cfg.vs_component, seg_cfg.vs_min_component_mm3],
        "cochlea_components": seg_cfg.cochlea_components,
        "measurements": bool(measurements),
    }

    # The manifest (cosmos.data.outputs): "run"/"done" resume the same model and options; "outputs" lists
    # every file predict ever wrote here, so `cosmos predict` may replace them and nothing else.
    old = read_manifest(out)
    done: dict[str, str] = {}
    if old.get("run") == run_key and isinstance(old.get("done"), dict):
        done = dict(old["done"])
    ours = our_outputs(out)
    device = environment.resolve_device(seg_cfg.device)
    written: list[Path] = []
    todo = []
    for f in files:
        target = out / output_name(f)
        if target.is_file() and done.get(target.name) == str(f.resolve()):
            written.append(target)
        else:
            todo.append(f)
    if len(todo) < len(files):
        log.info(
            "%d of %d predictions already in %s; predicting the other %d",
            len(files) - len(todo),
            len(files),
            out,
            len(todo),
        )
    if not todo:
        return [out / output_name(f) for f in files]
    log.info(
        "predicting %d case(s) with %d fold(s) on %s (mirroring %s)",
        len(todo),
        len(ensemble.fold_dirs),
        device,
        "on" if mirroring else "off",
    )
    with environment.nnunet_env(
        num_processes=seg_cfg.num_processes,
        compile=seg_cfg.compile,
        torch_threads=resolve_threads(seg_cfg.torch_threads),
    ):
        predictor = predictor_for(ensemble, seg_cfg, device, mirroring)
        # the measurements' confidence reads the softmax: nnU-Net resamples it anyway to take the argmax
        need_probabilities = save_probabilities or needs_probabilities(seg_cfg) or measurements
        for f in progress(todo, desc="predict", unit="case"):
            case = predict_case(predictor, f, seg_cfg, need_probabilities)
            vol, seg, p = case.volume, case.labels, case.probabilities
            target = out / output_name(f)
            ours[target.name] = str(f.resolve())  # claimed before it is written: a killed run's file stays ours
            if measurements:
                ours[measurements_path(target).name] = str(f.resolve())
            write_manifest(out, {"run": run_key, "done": done, "outputs": ours})
            nifti.save(target, seg, like=vol, label=True)
            if measurements:
                write_case_measurements(target, case)
            if save_probabilities and p is not None:
                p = p.astype(np.float16)
                np.savez_compressed(
                    out / f"{target.name[: -len('.nii.gz')]}.npz", probabilities=p, labels=np.arange(p.shape[0])
                )
            done[target.name] = str(f.resolve())
            write_manifest(out, {"run": run_key, "done": done, "outputs": ours})
            written.append(target)
    order = {output_name(f): i for i, f in enumerate(files)}
    return sorted(written, key=lambda p: order.get(p.name, 0))
