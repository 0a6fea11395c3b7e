"""Model references -> fold dirs: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/NAME``
or a local folder of trained folds, resolved to the fold dirs and the COSMOS config they were
trained with.

Why a module of its own: everything that predicts from a segmenter (``cosmos predict``, the serving
model, the registered pyfunc model) needs the same two answers about a model on disk -- which
folders are its folds, in fold order (:func:`_find_fold_dirs`, :func:`_fold_number`), and which
config came with it (:func:`_config_from_file`, tolerant of keys another cosmos version wrote) --
and registry references must fail with the same messages listing what does exist. Nothing here is
imported from the other segmenter modules, so they can all build on it; MLflow is imported only
when a ``models:/`` reference is resolved.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cosmos.errors import CosmosError
from cosmos.segmentation.environment import FINAL_CHECKPOINT

if TYPE_CHECKING:
    from cosmos.config import CosmosConfig

# The logger of cosmos.segmentation.registry, where this code lived: log lines keep their name.
log = logging.getLogger("cosmos.segmentation.registry")

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))?/?$")


@dataclass
class ResolvedModel:
    """Fold dirs of a segmenter plus the config it was trained with (None for a bare local dir)."""

    fold_dirs: list[Path]
    cfg: CosmosConfig | None
    reference: str
    version: str | None = None


def _fold_number(d: Path, default: int) -> int:
    m = re.search(r"fold_(\d+)", d.name) or re.search(r"fold_(\d+)", str(d))
    return int(m.group(1)) if m else default


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
