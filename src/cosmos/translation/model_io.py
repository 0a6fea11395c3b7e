"""Save / load the S->T generator, and log / register / fetch it through MLflow.

The local model directory (``OUT/model/``) is self-contained, so the pipeline can pass it as one
KFP Model artifact::

    generator_s2t.pt    state_dict of the S->T generator (encoder + translation decoder [+ segmentor])
    translator.json     architecture (GeneratorSpec), slice grid + normalisation (SliceGrid), provenance

MLflow flavor: ``mlflow.pyfunc`` with our own loader (:mod:`cosmos.translation.pyfunc_model`) whose
artifact is this directory. Why not ``mlflow.pytorch``: its default pt2 serialisation (torch.export)
locks the input shape, and the translator must run on every volume's own in-plane size. The pyfunc
rebuilds the module from the JSON + state_dict, so any shape works, and ``unwrap_python_model()``
hands the torch module back to :func:`cosmos.translation.conversion.convert_source`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cosmos.errors import CosmosError
from cosmos.translation.networks import Generator, GeneratorSpec
from cosmos.translation.slices import SliceGrid

log = logging.getLogger(__name__)

WEIGHTS_FILE = "generator_s2t.pt"
META_FILE = "translator.json"
FORMAT_VERSION = 1
MLFLOW_ARTIFACT_NAME = "translator"


# The translator stage's candidate list (cosmos.translation.attempts), kept beside the model it chose.
ATTEMPTS_JSON = "attempts.json"


@dataclass
class LoadedTranslator:
    """The S->T generator ready for conversion, with the grid it was trained on."""

    generator: Generator
    grid: SliceGrid
    meta: dict[str, Any] = field(default_factory=dict)


def save_model_dir(
    generator: Generator, grid: SliceGrid, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write weights + JSON (each atomically: temp file then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    torch.save(state, tmp)
    tmp.replace(out / WEIGHTS_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "direction": "ceT1->hrT2",
        "generator": generator.spec.to_dict(),
        "grid": grid.to_dict(),
        "intensity": {"input": "per-volume percentile clip + min-max to [-1, 1]", "output": "(tanh + 1) / 2 in [0, 1]"},
        **(extra or {}),
    }
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    tmp.replace(out / META_FILE)
    return out


TRAIN_MODEL_SUBDIR = "model"  # `cosmos translator train --out OUT` writes the model into OUT/model


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedTranslator:
    """Rebuild the generator from a model directory; CosmosError naming the file on any problem.

    The output folder of ``cosmos translator train --out OUT`` is accepted too: its model is in
    ``OUT/model`` (people pass the folder they chose, not the subfolder the trainer made)."""
    d = Path(model_dir)
    if not (d / META_FILE).is_file() and (d / TRAIN_MODEL_SUBDIR / META_FILE).is_file():
        d = d / TRAIN_MODEL_SUBDIR
    meta_path, weights_path = d / META_FILE, d / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise CosmosError(
                f"{p}: missing; {d} is not a translator model directory (expected {WEIGHTS_FILE} + {META_FILE})"
            )
    try:
        meta = json.loads(meta_path.read_text())
        spec = GeneratorSpec(**meta["generator"])
        grid = SliceGrid(**meta["grid"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CosmosError(f"{meta_path}: not a valid translator description ({exc})") from None
    gen = Generator(spec)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        gen.load_state_dict(state)
    except Exception as exc:  # corrupt file or architecture mismatch
        raise CosmosError(f"{weights_path}: cannot load the generator weights ({type(exc).__name__}: {exc})") from None
    gen.to(device).eval()
    return LoadedTranslator(gen, grid, meta)


def log_model(model_dir: str | Path, name: str = MLFLOW_ARTIFACT_NAME):
    """Log ``model_dir`` as a pyfunc model in the active MLflow run; returns mlflow's ModelInfo."""
    import mlflow

    reqs = [f"torch=={torch.__version__.split('+')[0]}", "numpy", "nibabel"]
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),  # models from code
        artifacts={"model_dir": str(Path(model_dir).resolve())},
        pip_requirements=reqs,  # given explicitly: inference would re-load the model in a subprocess
    )


def register_model(model_uri: str, model_name: str, tags: dict[str, str] | None = None) -> str:
    """Register a logged model as a new version of ``model_name``; returns the version."""
    import mlflow

    mv = mlflow.register_model(model_uri, model_name, tags=tags or None)
    log.info("registered %s version %s", model_name, mv.version)
    return str(mv.version)


def resolve_model(
    model: str | Path, tracking_uri: str | None = None, device: str | torch.device = "cpu"
) -> LoadedTranslator:
    """A local model dir, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/ID/translator``."""
    text = str(model)
    if not (text.startswith("models:/") or text.startswith("runs:/")):
        return load_model_dir(text, device)
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise CosmosError(
            f"{text}: a registry URI needs a tracking server; pass --tracking-uri or set MLFLOW_TRACKING_URI"
        )
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(text)
    except MlflowException as exc:
        raise CosmosError(f"{text}: cannot load from MLflow at {uri} ({exc.message})") from None
    wrapped = pyfunc.unwrap_python_model()
    loaded = getattr(wrapped, "translator", None)
    if not isinstance(loaded, LoadedTranslator):
        raise CosmosError(f"{text}: not a COSMOS translator model")
    loaded.generator.to(device).eval()
    return loaded
