"""Registering a self-training round: its nnU-Net fold ensemble as a new version of the segmenter.

One registered model, ``cfg.tracking.segmenter_model_name`` (``cosmos-segmenter``), gets one new
version per round (teacher = round 0, student k = round k), tagged with round, folds, profile and
dataset digest; the alias ``champion`` points at the final round. The version holds ALL the
round's folds (nnU-Net ensembles them at prediction time) plus the COSMOS config they were
trained with, so a loaded model predicts exactly like the loop did.

Why a module of its own: this is the only code that writes to the registry, and it decides what a
version contains -- the staged folds (without what prediction does not need), the config, the
signature, the pip requirements and the shipped code -- which only the pipeline's register step
needs; predicting from a model needs none of it.

Environment: the model's ``pip_requirements`` are the project's own runtime dependencies, pinned
to the versions it was registered with (all from public indexes), and the ``cosmos`` package
itself travels inside the model as ``code_paths``. Why not a pin on ``cosmos-kubeflow``: no index
publishes it, so ``mlflow models serve`` could not build the environment; why not a wheel: it
would need a build step at registration time in every pipeline pod. The model is logged as a
pickled :class:`~cosmos.segmentation.pyfunc.CosmosSegmenter` instance, whose class is pickled by
reference, so a loader finds it in that shipped code (or in an installed ``cosmos``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cosmos.errors import CosmosError
from cosmos.segmentation.environment import FINAL_CHECKPOINT
from cosmos.segmentation.pyfunc import CONFIG_ARTIFACT, CosmosSegmenter
from cosmos.segmentation.resolution import _fold_number

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig

# The logger of cosmos.segmentation.registry, where this code lived: log lines keep their name.
log = logging.getLogger("cosmos.segmentation.registry")

MODEL_ARTIFACT = "segmenter"  # name of the logged pyfunc model inside the round run
# Not needed to predict; kept out of the registry to keep versions small.
_SKIP_IN_MODEL = {"checkpoint_latest.pth", "checkpoint_best.pth", "validation"}


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
