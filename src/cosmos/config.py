"""One typed configuration object for every COSMOS stage.

Why one object: every stage (translator, nnU-Net rounds, pipeline) reads only its own section, but
the run as a whole must be reproducible from a single YAML file that MLflow logs as params.
Named profiles (YAML files in ``cosmos/profiles/``: a shared CPU base plus deltas) give sensible starting points:

* ``tiny``  - CPU tests and the demo (minutes on 2 cores),
* ``small`` - a meaningful CPU benchmark (the Table-1 ablation in ~75 min of compute on 2 cores),
* ``paper`` - the published settings (GPU; COSMOS paper section 4.2).

Overrides use dotted keys, e.g. ``translator.epochs=3`` or ``segmentation.folds=[0,1]``.

This module is the public entry: loading profiles and files (:func:`load_config`), the stage-key constants,
and every config name, re-exported from the modules that hold them (import them from here):

* :mod:`cosmos.config_schema` - the section dataclasses (each key documented), :class:`CosmosConfig`, :func:`from_dict`,
  the trainers ``segmentation.trainer`` may name and the keys that override a trainer's recipe (``RECIPE_KEYS``),
* :mod:`cosmos.config_validation` - :func:`validate`: the numeric ranges and the rules across fields,
* :mod:`cosmos.config_overrides` - :class:`ConfigError`, dotted overrides, :func:`deep_merge`, type coercion
  (by each field's annotation: a ``Literal[...]`` key takes only its listed values), the loss presets.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from cosmos.config_overrides import _LAMBDAS as _LAMBDAS
from cosmos.config_overrides import LOSS_PRESETS as LOSS_PRESETS
from cosmos.config_overrides import ConfigError as ConfigError
from cosmos.config_overrides import _build as _build
from cosmos.config_overrides import _coerce as _coerce
from cosmos.config_overrides import _flatten as _flatten
from cosmos.config_overrides import _resolve_loss_weights as _resolve_loss_weights
from cosmos.config_overrides import _set_dotted as _set_dotted
from cosmos.config_overrides import _split_override as _split_override
from cosmos.config_overrides import choices as choices
from cosmos.config_overrides import deep_merge as deep_merge
from cosmos.config_overrides import field_types as field_types
from cosmos.config_schema import _SECTIONS as _SECTIONS
from cosmos.config_schema import PROMOTE_POLICIES as PROMOTE_POLICIES
from cosmos.config_schema import RECIPE_KEYS as RECIPE_KEYS
from cosmos.config_schema import SEGMENTATION_TRAINERS as SEGMENTATION_TRAINERS
from cosmos.config_schema import ChecksConfig as ChecksConfig
from cosmos.config_schema import CosmosConfig as CosmosConfig
from cosmos.config_schema import PhantomConfig as PhantomConfig
from cosmos.config_schema import RoiConfig as RoiConfig
from cosmos.config_schema import SegmentationConfig as SegmentationConfig
from cosmos.config_schema import SelfTrainingConfig as SelfTrainingConfig
from cosmos.config_schema import TrackingConfig as TrackingConfig
from cosmos.config_schema import TranslatorConfig as TranslatorConfig
from cosmos.config_schema import from_dict as from_dict
from cosmos.config_validation import PROFILES as PROFILES
from cosmos.config_validation import _validate_checks as _validate_checks
from cosmos.config_validation import _validate_geometry as _validate_geometry
from cosmos.config_validation import _validate_promotion as _validate_promotion
from cosmos.config_validation import _validate_selftraining as _validate_selftraining
from cosmos.config_validation import validate as validate

# Fields that steer only how a trained model predicts (test-time flips, tiling, post-processing). The stages
# that prepare, open and train a round keep them out of their stage keys and the round's MLflow params, so
# changing one re-predicts and re-scores every round but re-trains none (cosmos.resume.stage_key).
PREDICTION_ONLY: tuple[str, ...] = (
    "segmentation.mirroring",
    "segmentation.mirror_axes",
    "segmentation.tile_step_size",
    "segmentation.vs_component",
    "segmentation.vs_min_component_mm3",
    "segmentation.cochlea_components",
    "segmentation.save_probabilities",
)
# How many rounds run. No round's own work depends on it (the last round is a task parameter), so it stays out
# of every per-round stage key: a finished K=1 run resumed with K=2 reuses the teacher and student 1.
ROUND_COUNT: tuple[str, ...] = ("selftraining.rounds",)


def checks_except(*keep: str) -> tuple[str, ...]:
    """The dotted ``checks`` fields other than ``keep``: a stage that reads only ``keep`` leaves the rest out of
    its stage key (``cosmos.resume.stage_key(..., exclude=...)``), so changing a threshold that only the round's
    verdict reads re-registers the rounds but re-trains nothing."""
    return tuple(f"checks.{f.name}" for f in dataclasses.fields(ChecksConfig) if f.name not in keep)


def _profile_dict(name: str) -> dict[str, Any]:
    """A named profile as a config mapping: ``cosmos/profiles/<name>.yaml`` over the profile it inherits."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {PROFILES}")
    return {"profile": name, **_profile_file(name, ())}


def _profile_file(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """One profile file (package data, so an installed package finds it) with its ``inherits`` chain resolved:
    the file's mappings deep-merged over its parent's, lists replaced (``deep_merge``)."""
    if name in seen:
        raise ConfigError(f"profile {name!r} inherits from itself: {' -> '.join((*seen, name))}")
    resource = resources.files("cosmos") / "profiles" / f"{name}.yaml"
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"profile file {name}.yaml not found in cosmos/profiles") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile file {name}.yaml: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {name}.yaml: top level must be a mapping")
    parent = data.pop("inherits", None)
    if parent is None:
        return data
    return deep_merge(_profile_file(str(parent), (*seen, name)), data)


#: Largest ``--config`` file read (bytes); a real config is a few KiB.
MAX_CONFIG_BYTES = 1024**2


def _read_config_text(p: Path) -> str:
    """The text of a ``--config`` file, refusing anything but a regular file of at most 1 MiB.

    Checked on the open descriptor (opened non-blocking) before reading, so ``/dev/zero``, a FIFO
    or a huge file is one ConfigError line instead of a hang or a MemoryError.
    """
    import os
    import stat

    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # FileNotFoundError: the caller's line
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                kind = "a directory"
            elif stat.S_ISFIFO(st.st_mode):
                kind = "a FIFO"
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "a device"
            else:
                kind = "a special file"
            raise ConfigError(f"{p}: not a regular file but {kind}: give a YAML config file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: config file too large ({st.st_size} bytes, at most {MAX_CONFIG_BYTES}): not a cosmos config"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: config file too large (more than {MAX_CONFIG_BYTES} bytes): not a cosmos config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_config(
    profile: str = "tiny",
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> CosmosConfig:
    """Profile defaults, then a YAML file (if given), then dotted overrides."""
    data = _profile_dict(profile)
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(_read_config_text(p)) or {}
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = deep_merge(data, loaded)
    cfg = from_dict(data)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    check_no_credentials(cfg)
    return cfg


def apply_loss_preset(cfg: CosmosConfig, preset: str) -> CosmosConfig:
    """Return a copy whose translator loss weights follow a named preset."""
    return cfg.with_overrides({"translator.loss_preset": preset})


def check_no_credentials(cfg: CosmosConfig) -> None:
    """Refuse a password or token inside any URI of the config (``--set`` or ``--config``).

    Why here: every command (run, compile, submit, each KFP task) loads its config through
    ``load_config``, and a credential accepted here lands in the compiled YAML, the logs and MLflow.
    The message masks the value and points to the Kubernetes Secret (see ``cosmos.secrets``).
    """
    from cosmos.secrets import credential_problems

    problems = credential_problems(cfg.to_dict())
    if problems:
        raise ConfigError(problems[0])
