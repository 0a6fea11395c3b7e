"""The segmenter registry: each self-training round's nnU-Net ensemble as an ``mlflow.pyfunc`` model.

One registered model, ``cfg.tracking.segmenter_model_name`` (``cosmos-segmenter``), gets one new
version per round (teacher = round 0, student k = round k), tagged with round, folds, profile and
dataset digest; the alias ``champion`` points at the final round. The version holds ALL the
round's folds (nnU-Net ensembles them at prediction time) plus the COSMOS config they were
trained with, so a loaded model predicts exactly like the loop did.

Using a registered model::

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/cosmos-segmenter@champion")
    out = model.predict(pd.DataFrame({"path": ["/data/crossmoda_211_hrT2.nii.gz"]}),
                        params={"output_dir": "/tmp/seg", "mirroring": True})
    out["output"][0]  # '/tmp/seg/crossmoda_211_Label.nii.gz' (uint8, the input's exact grid)

pyfunc contract:

* input, by file path: a DataFrame with a string column ``path`` (one NIfTI file per row; a
  folder of images also works), or the dict ``{"path": [...]}``.
* input, by content (what a REST server such as ``mlflow models serve`` or MLServer can pass): a
  DataFrame with a string column ``nifti`` holding base64 of a .nii/.nii.gz file (or an ``s3://``
  URI), the dict ``{"nifti": [...]}``, or a tensor (numpy array / list) of such strings or raw
  file bytes. The signature declares both columns as optional; each row uses one.
* params: ``output_dir`` (string; "" = a new temporary folder), ``mirroring`` (bool; flip
  test-time augmentation, default = the training config's value).
* output: a DataFrame with ``input`` and ``output`` (path of the label NIfTI written) per case,
  and for content input also ``label``: base64 of that label file (uint8, the input's grid).
  Outputs are named ``crossmoda_{k}_Label.nii.gz`` for crossMoDA inputs, ``<stem>_seg.nii.gz``
  otherwise.

Environment: the model's ``pip_requirements`` are the project's own runtime dependencies, pinned
to the versions it was registered with (all from public indexes), and the ``cosmos`` package
itself travels inside the model as ``code_paths``. Why not a pin on ``cosmos-kubeflow``: no index
publishes it, so ``mlflow models serve`` could not build the environment; why not a wheel: it
would need a build step at registration time in every pipeline pod. The model class is pickled by
reference, so a loader finds it in that shipped code (or in an installed ``cosmos``).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from cosmos.data.layout import SOURCE_DIR, TARGET_DIR, VALIDATION_DIR, label_name, parse_name
from cosmos.errors import CosmosError
from cosmos.segmentation.environment import FINAL_CHECKPOINT

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig

try:  # the pyfunc base class; mlflow (and with it pandas) is a hard dependency of the package
    import pandas as pd
    from mlflow.pyfunc import PythonModel as _PythonModel
except ImportError:  # pragma: no cover
    _PythonModel = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "segmenter"  # name of the logged pyfunc model inside the round run
CONFIG_ARTIFACT = "cosmos_config"  # key of the config YAML among the pyfunc artifacts
# Not needed to predict; kept out of the registry to keep versions small.
_SKIP_IN_MODEL = {"checkpoint_latest.pth", "checkpoint_best.pth", "validation"}
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))?/?$")


# ------------------------------------------------------------------------------------ inputs
def output_name(image: str | Path) -> str:
    """``crossmoda_{k}_Label.nii.gz`` for a crossMoDA image, ``<stem>_seg.nii.gz`` otherwise."""
    name = Path(image).name
    parsed = parse_name(name)
    if parsed is not None:
        return label_name(parsed[0])
    stem = re.sub(r"\.nii(\.gz)?$", "", name)
    return f"{stem}_seg.nii.gz"


def _is_nifti_name(name: str) -> bool:
    return name.endswith(".nii.gz") or name.endswith(".nii")


_WRONG_MODALITY = {
    "ceT1": "a contrast-enhanced T1 (source-domain) image; the segmenter segments real hrT2 images",
    "Label": "a label map, not an image",
    "hrT2pseudo": "a translated pseudo-hrT2 (training data); the segmenter segments real hrT2 images",
}


def _check_file(path: Path) -> None:
    from cosmos.data.nifti import load_image

    if not _is_nifti_name(path.name):
        raise CosmosError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    parsed = parse_name(path.name)
    if parsed is not None and parsed[1] in _WRONG_MODALITY:
        raise CosmosError(f"{path}: wrong modality: {_WRONG_MODALITY[parsed[1]]}")
    load_image(path)  # one line naming the file: corrupt, truncated, 2D/4D, NaN/Inf, constant, bad affine


def collect_nifti_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders to the list of hrT2 NIfTI images to segment, with clear errors.

    A folder contributes its ``*.nii``/``*.nii.gz`` images (label files beside them are ignored).
    Refused with a :class:`CosmosError`: missing paths, non-NIfTI files, 2D/4D or corrupt volumes,
    ceT1 / pseudo-hrT2 / label files, a ``source_training`` folder, a whole crossMoDA root, an
    empty folder, and two inputs that would write the same output name.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise CosmosError(f"{p}: no such file or folder")
        if p.is_file():
            _check_file(p)
            files.append(p)
            continue
        subdirs = {d.name for d in p.iterdir() if d.is_dir()}
        if subdirs & {SOURCE_DIR, TARGET_DIR, VALIDATION_DIR}:
            raise CosmosError(
                f"{p}: is a crossMoDA dataset root; pass one of its hrT2 image folders, "
                f"e.g. {p / VALIDATION_DIR} or {p / TARGET_DIR}"
            )
        niftis = sorted(x for x in p.iterdir() if x.is_file() and _is_nifti_name(x.name))
        kinds = {x: (parse_name(x.name) or ("", ""))[1] for x in niftis}
        wrong = [x for x in niftis if kinds[x] in ("ceT1", "hrT2pseudo")]
        if wrong or p.name == SOURCE_DIR:
            what = _WRONG_MODALITY["ceT1" if (p.name == SOURCE_DIR or kinds.get(wrong[0]) == "ceT1") else "hrT2pseudo"]
            shown = ", ".join(x.name for x in wrong[:3]) + (" ..." if len(wrong) > 3 else "")
            raise CosmosError(f"{p}: wrong modality: holds {what}" + (f" ({shown})" if shown else ""))
        images = [x for x in niftis if kinds[x] != "Label"]
        if not images:
            extra = " (only label files)" if niftis else ""
            raise CosmosError(f"{p}: no NIfTI images (*.nii.gz / *.nii) to segment{extra}")
        for x in images:
            _check_file(x)
        files.extend(images)
    if not files:
        raise CosmosError("no input images given")
    seen: dict[str, Path] = {}
    for f in files:
        name = output_name(f)
        if name in seen:
            raise CosmosError(f"{f}: would write {name}, as {seen[name]} does; segment them into separate folders")
        seen[name] = f
    return files


def segment_files(
    fold_dirs: Sequence[str | Path],
    files: Sequence[str | Path],
    out_dir: str | Path,
    cfg: CosmosConfig,
    mirroring: bool | None = None,
) -> list[Path]:
    """Segment ``files`` with the ensemble of ``fold_dirs`` into ``out_dir``; returns the output
    paths in input order, named by :func:`output_name` (nnU-Net via ``inference.predict``)."""
    from cosmos.data import nifti, roi
    from cosmos.segmentation.inference import predict

    files = [Path(f) for f in files]
    model = roi.model_of(Path(fold_dirs[0])) if fold_dirs else None
    if model is not None and model.enabled:
        # trained on ROI crops: crop each scan the same way, predict, put the labels back on its grid
        with tempfile.TemporaryDirectory(prefix="cosmos-roi-") as tmp:
            crops = roi.crop_inputs(files, model, Path(tmp) / "in")
            inner = predict(
                [Path(d) for d in fold_dirs],
                [c for c, _ in crops.values()],
                Path(tmp) / "out",
                cfg,
                mirroring=mirroring,
            )
            by_crop = {Path(w).name: Path(w) for w in inner}
            written = []
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            for f, (crop, box) in crops.items():
                pred = by_crop.get(output_name(crop))
                if pred is None:
                    continue
                original = nifti.load(f)
                data = roi.uncrop(nifti.load(pred, label=True).data, box, original.shape)
                written.append(nifti.save(Path(out_dir) / output_name(f), data, like=original, label=True))
    else:
        written = predict([Path(d) for d in fold_dirs], files, out_dir, cfg, mirroring=mirroring)
    by_name = {Path(w).name: Path(w) for w in written}
    outputs = []
    for scan in files:
        produced = by_name.get(output_name(scan))
        if produced is None or not produced.is_file():
            raise CosmosError(f"{scan}: the segmenter wrote no prediction (expected {output_name(scan)} in {out_dir})")
        outputs.append(produced)
    return outputs


# ------------------------------------------------------------------------------------ pyfunc
def _flatten_paths(values: Any) -> list[str]:
    if isinstance(values, (str, Path)):
        return [str(values)]
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [p for v in values for p in _flatten_paths(v)]
    return [str(values)]


def _input_paths(model_input: Any) -> list[str]:
    """DataFrame[path] | {"path": [...]} | list[str] | str -> list of path strings (nested lists,
    as MLflow's schema enforcement sometimes produces from a dict, are flattened)."""
    try:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            col = "path" if "path" in model_input.columns else model_input.columns[0]
            return _flatten_paths(model_input[col].tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model_input, Mapping):
        return _flatten_paths(model_input.get("path", next(iter(model_input.values()), [])))
    return _flatten_paths(model_input)


def _content_values(model_input: Any) -> list | None:
    """The base64/bytes NIfTI values of a content input, or None for a path input."""
    if isinstance(model_input, pd.DataFrame):
        if "nifti" not in model_input.columns or model_input["nifti"].isna().all():
            return None
        if "path" in model_input.columns and model_input["path"].notna().any():
            raise CosmosError("give either path or nifti values in one call, not both")
        return _flatten_values(model_input["nifti"].dropna().tolist())
    if isinstance(model_input, Mapping):
        return _flatten_values(model_input["nifti"]) if "nifti" in model_input else None
    if isinstance(model_input, (str, Path)):
        return None
    values = _flatten_values(model_input)  # a tensor (numpy array or list)
    if all(isinstance(v, (str, Path)) and not str(v).startswith("s3://") and Path(v).exists() for v in values):
        return None  # existing local paths: the path contract
    return values


def _flatten_values(values: Any) -> list:
    if hasattr(values, "tolist") and not isinstance(values, (bytes, str)):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [x for v in values for x in _flatten_values(v)]
    return [values]


class CosmosSegmenter(_PythonModel):
    """pyfunc wrapper of the nnU-Net fold ensemble (see the module docstring for the contract)."""

    def load_context(self, context) -> None:
        arts = dict(context.artifacts)
        self.fold_dirs = [Path(arts[k]) for k in sorted(arts, key=_fold_key) if k.startswith("fold_")]
        self.cfg = _config_from_file(Path(arts[CONFIG_ARTIFACT])) if CONFIG_ARTIFACT in arts else None

    # The pandas hint is what MLflow expects of a DataFrame model (it validates nothing then); without
    # a hint, MLflow warns at every import of this module, i.e. on every `cosmos predict`.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from cosmos.config import load_config

        params = dict(params or {})
        if not getattr(self, "fold_dirs", None):
            self.load_context(context)
        cfg = self.cfg or load_config("tiny")
        out_dir = params.get("output_dir") or tempfile.mkdtemp(prefix="cosmos-segmenter-")
        mirroring = params.get("mirroring")
        mirroring = None if mirroring is None else bool(mirroring)
        contents = _content_values(model_input)
        if contents is None:
            files = collect_nifti_inputs(_input_paths(model_input))
            outputs = segment_files(self.fold_dirs, files, out_dir, cfg, mirroring=mirroring)
            return pd.DataFrame({"input": [str(f) for f in files], "output": [str(o) for o in outputs]})
        import base64

        from cosmos.data.scans import scan_from_value, write_scans

        if not contents:
            raise CosmosError("no nifti values to segment")
        scans = [scan_from_value(v, f"nifti[{i}]") for i, v in enumerate(contents)]
        with tempfile.TemporaryDirectory(prefix="cosmos-segmenter-in-") as tmp:
            files = write_scans(scans, Path(tmp), max_bytes=nifti_max_bytes())
            collect_nifti_inputs(files)
            outputs = segment_files(self.fold_dirs, files, out_dir, cfg, mirroring=mirroring)
        return pd.DataFrame(
            {
                "input": [f"nifti[{i}]" for i in range(len(files))],
                "output": [str(o) for o in outputs],
                "label": [base64.b64encode(o.read_bytes()).decode("ascii") for o in outputs],
            }
        )


def nifti_max_bytes() -> int:
    from cosmos.data.nifti import max_bytes

    return max_bytes()


def _fold_key(name: str):
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def _config_from_file(path: Path) -> CosmosConfig:
    """The config saved with a model. Keys this version of cosmos does not know (a model registered
    by another version) are dropped with a warning rather than making the model unloadable."""
    import dataclasses

    import yaml

    from cosmos import config as config_mod

    data = yaml.safe_load(path.read_text()) or {}
    try:
        return config_mod.from_dict(data)
    except config_mod.ConfigError as exc:
        cleaned = {k: v for k, v in data.items() if k in ("profile", "seed")}
        for section, cls in config_mod._SECTIONS.items():
            known = {f.name for f in dataclasses.fields(cls)}
            cleaned[section] = {k: v for k, v in (data.get(section) or {}).items() if k in known}
        log.warning("%s: %s; using the known keys only", path, exc)
        return config_mod.from_dict(cleaned)


def _signature(mirroring_default: bool):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "path", required=False), ColSpec("string", "nifti", required=False)]),
        outputs=Schema(
            [ColSpec("string", "input"), ColSpec("string", "output"), ColSpec("string", "label", required=False)]
        ),
        params=ParamSchema(
            [ParamSpec("output_dir", "string", ""), ParamSpec("mirroring", "boolean", bool(mirroring_default))]
        ),
    )


_FALLBACK_REQUIREMENTS = (
    "mlflow",
    "nnunetv2",
    "torch",
    "boto3",
    "nibabel",
    "SimpleITK",
    "numpy",
    "scipy",
    "pyyaml",
    "tqdm",
)


def _pip_requirements() -> list[str]:
    """The project's runtime dependencies (not its extras) plus pandas, pinned to the installed
    versions without local tags (``2.13.0+cpu`` -> ``2.13.0``). Never the project itself: no index
    has it; its code travels in the model (``code_paths``)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    try:
        declared = [Requirement(r) for r in requires("cosmos-kubeflow") or []]
        names = [r.name for r in declared if r.marker is None or "extra" not in str(r.marker)]
    except PackageNotFoundError:  # running from a source tree or from a model's shipped code
        names = list(_FALLBACK_REQUIREMENTS)
    reqs = []
    for dist in dict.fromkeys(names + ["pandas"]):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _code_paths() -> list[str]:
    import cosmos

    return [str(Path(cosmos.__file__).resolve().parent)]


# ------------------------------------------------------------------------------------ registering
def _fingerprint_digest(fold_dirs: Sequence[Path]) -> str:
    from cosmos.tracking import dataset_digest

    for d in fold_dirs:
        for name in ("dataset_fingerprint.json", "dataset.json"):
            if (d / name).is_file():
                return dataset_digest([d / name])
    return "unknown"


def _stage_fold(src: Path, dst: Path) -> Path:
    """Copy what prediction needs: not the latest/best checkpoints or validation outputs, and the
    final checkpoint without its optimizer state (about half its size; prediction reads only
    ``network_weights``, ``init_args``, ``trainer_name`` and the mirroring axes)."""
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in _SKIP_IN_MODEL])
    ckpt = dst / FINAL_CHECKPOINT
    try:
        import torch

        state = torch.load(str(ckpt), map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "network_weights" in state:
            for key in ("optimizer_state", "grad_scaler_state"):
                state.pop(key, None)
            torch.save(state, str(ckpt))
    except Exception as exc:  # not a torch checkpoint we understand: ship it as it is
        log.debug("%s: kept the checkpoint unchanged (%s)", ckpt, exc)
    return dst


def register_round(
    fold_model_dirs: Sequence[str | Path],
    round_index: int,
    cfg: CosmosConfig,
    tags: Mapping[str, Any] | None = None,
    alias: str | None = None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> str:
    """Log the round's fold ensemble as a pyfunc model and register it as a new version of
    ``cfg.tracking.segmenter_model_name``; returns the version (a string).

    ``run_id``: log into that run (the round's parent run); otherwise a new run is created.
    Version tags: ``round``, ``folds``, ``profile``, ``dataset_digest`` (from ``tags`` if given,
    else a digest of nnU-Net's dataset fingerprint), plus anything in ``tags``.
    ``alias`` (e.g. ``champion``) is moved to the new version.
    """
    import mlflow
    from mlflow import MlflowClient

    from cosmos.segmentation.mlflow_logging import active_tracking_uri, with_retry

    fold_dirs = [Path(d) for d in fold_model_dirs]
    if not fold_dirs:
        raise CosmosError(f"round {round_index}: no fold models to register")
    for d in fold_dirs:
        if not (d / FINAL_CHECKPOINT).is_file():
            raise CosmosError(f"{d}: not a trained fold model ({FINAL_CHECKPOINT} missing)")
    uri = active_tracking_uri(tracking_uri or cfg.tracking.tracking_uri or None)
    if uri is None:
        raise CosmosError("register_round: no MLflow tracking URI (pass tracking_uri or set MLFLOW_TRACKING_URI)")
    from cosmos.tracking import setup

    setup(uri, cfg.tracking.experiment)
    folds = [_fold_number(d, i) for i, d in enumerate(fold_dirs)]
    all_tags = {
        "round": str(round_index),
        "folds": ",".join(str(f) for f in folds),
        "profile": cfg.profile,
        "dataset_digest": _fingerprint_digest(fold_dirs),
        "configuration": cfg.segmentation.configuration,
    }
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    name = cfg.tracking.segmenter_model_name

    with tempfile.TemporaryDirectory(prefix="cosmos-register-") as tmp:
        artifacts: dict[str, str] = {}
        for f, d in zip(folds, fold_dirs):
            artifacts[f"fold_{f}"] = str(_stage_fold(d, Path(tmp) / f"fold_{f}"))
        cfg_file = Path(tmp) / "cosmos_config.yaml"
        cfg_file.write_text(cfg.to_yaml())
        artifacts[CONFIG_ARTIFACT] = str(cfg_file)

        def _log():
            return mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=CosmosSegmenter(),
                artifacts=artifacts,
                signature=_signature(cfg.segmentation.mirroring),
                pip_requirements=_pip_requirements(),
                code_paths=_code_paths(),
                tags={"round": str(round_index)},
            )

        active = mlflow.active_run()
        if run_id and active is not None and active.info.run_id == run_id:
            info = with_retry(_log, what="log segmenter model")
        elif run_id:
            with mlflow.start_run(run_id=run_id, nested=active is not None):
                info = with_retry(_log, what="log segmenter model")
        else:
            with mlflow.start_run(
                run_name=f"round_{round_index}-register",
                nested=active is not None,
                tags={"cosmos.round": str(round_index)},
            ):
                info = with_retry(_log, what="log segmenter model")

    mv = with_retry(mlflow.register_model, info.model_uri, name, tags=all_tags, what="register model")
    client = MlflowClient()
    with_retry(
        client.update_model_version,
        name,
        mv.version,
        description=f"COSMOS round {round_index} ({'teacher' if round_index == 0 else f'student {round_index}'}), "
        f"folds {all_tags['folds']}, profile {cfg.profile}",
        what="describe model version",
    )
    if alias:
        with_retry(client.set_registered_model_alias, name, alias, mv.version, what="set alias")
    log.info(
        "registered %s version %s (round %d, folds %s)%s",
        name,
        mv.version,
        round_index,
        all_tags["folds"],
        f" @{alias}" if alias else "",
    )
    return str(mv.version)


def _fold_number(d: Path, default: int) -> int:
    m = re.search(r"fold_(\d+)", d.name) or re.search(r"fold_(\d+)", str(d))
    return int(m.group(1)) if m else default


# ------------------------------------------------------------------------------------ resolving
@dataclass
class ResolvedModel:
    """Fold dirs of a segmenter plus the config it was trained with (None for a bare local dir)."""

    fold_dirs: list[Path]
    cfg: CosmosConfig | None
    reference: str
    version: str | None = None


def _find_fold_dirs(root: Path) -> list[Path]:
    hits = sorted({p.parent for p in root.rglob(FINAL_CHECKPOINT)}, key=lambda p: (_fold_number(p, 1 << 30), str(p)))
    return hits


def _find_config(root: Path) -> CosmosConfig | None:
    for cand in (root / "cosmos_config.yaml", root / "artifacts" / "cosmos_config.yaml"):
        if cand.is_file():
            return _config_from_file(cand)
    return None


def resolve_model(
    reference: str | Path, tracking_uri: str | None = None, dst_dir: str | Path | None = None
) -> ResolvedModel:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME`` (latest version) or a
    local folder (a fold dir, a folder of fold dirs, a round dir, a downloaded model) -> fold dirs.

    Registry models are downloaded into ``dst_dir`` (default: a new temporary folder, left for the
    caller). Unknown names, versions and aliases raise :class:`CosmosError` listing what exists.
    """
    ref = str(reference)
    if not ref.startswith("models:/"):
        root = Path(ref)
        if not root.exists():
            raise CosmosError(
                f"{ref}: model not found (expected models:/NAME@ALIAS, models:/NAME/VERSION "
                "or a folder of trained folds)"
            )
        folds = _find_fold_dirs(root)
        if not folds:
            raise CosmosError(f"{ref}: no trained fold ({FINAL_CHECKPOINT}) under this folder")
        return ResolvedModel(folds, _find_config(root), ref)

    m = _MODEL_URI.match(ref)
    if not m:
        raise CosmosError(f"{ref}: not a model URI (use models:/NAME@ALIAS or models:/NAME/VERSION)")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from cosmos.segmentation.mlflow_logging import active_tracking_uri

    uri = active_tracking_uri(tracking_uri)
    if uri is None:
        raise CosmosError(
            f"{ref}: no MLflow tracking URI to resolve it (pass --tracking-uri or set MLFLOW_TRACKING_URI)"
        )
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    name, version, alias = m.group("name"), m.group("version"), m.group("alias")
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            known = sorted(rm.name for rm in client.search_registered_models())
        except MlflowException:
            known = []
        raise CosmosError(
            f"{ref}: no registered model {name!r} in {uri}"
            + (f"; registered: {', '.join(known)}" if known else "; the registry is empty")
        ) from None
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version:
            mv = client.get_model_version(name, version)
        else:
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise CosmosError(f"{ref}: model {name!r} has no versions")
            mv = max(versions, key=lambda v: int(v.version))
            ref = f"models:/{name}/{mv.version}"
    except MlflowException:
        rm = client.get_registered_model(name)
        numbers = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        aliases = sorted(getattr(rm, "aliases", {}) or {})
        what = f"alias @{alias}" if alias else f"version {version}"
        raise CosmosError(
            f"{ref}: model {name!r} has no {what}; versions: {numbers or 'none'}; "
            f"aliases: {', '.join('@' + a for a in aliases) or 'none'}"
        ) from None
    dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="cosmos-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dst)))
    folds = _find_fold_dirs(local)
    if not folds:
        raise CosmosError(f"{ref}: version {mv.version} holds no fold models (not a COSMOS segmenter?)")
    log.info("resolved %s -> %s version %s (%d folds)", reference, name, mv.version, len(folds))
    return ResolvedModel(folds, _find_config(local), str(reference), str(mv.version))


def resolve_fold_dirs(
    reference: str | Path, tracking_uri: str | None = None, dst_dir: str | Path | None = None
) -> list[Path]:
    """Shortcut: the fold dirs of :func:`resolve_model`."""
    return resolve_model(reference, tracking_uri, dst_dir).fold_dirs
