"""How raw values become config values: the machinery under :mod:`cosmos.config`.

* dotted overrides (``translator.epochs=3``) parsed and set into a config mapping,
* mappings merged (a profile over the one it inherits, a YAML file over a profile),
* each value coerced to its field's type (so a typo fails fast rather than deep inside a stage),
* the translator's loss weights resolved from a named preset (:data:`LOSS_PRESETS`).

:class:`ConfigError` lives here because everything below ``cosmos.config`` raises it; import it (like the
rest) from :mod:`cosmos.config`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from cosmos.errors import CosmosError

if TYPE_CHECKING:
    from cosmos.config_schema import TranslatorConfig

# Loss-weight presets for the translator (lambda_1..lambda_4 of paper eq. 1).
LOSS_PRESETS: dict[str, dict[str, float]] = {
    # The paper, section 4.2, as written: cycle, adversarial, identity, segmentation.
    # No k-space term: the paper has none.
    "paper": {"lambda_cycle": 0.01, "lambda_adv": 0.1, "lambda_identity": 0.5, "lambda_seg": 1.0, "lambda_kspace": 0.0},
    # The team's crossMoDA 2021 technical report: adv:cycle:identity:seg = 1:10:5:100, plus a k-space cycle
    # term. The report's k-space weight is not available to us: 0.1 (= its image-domain cycle weight) is OUR
    # choice (docs/configuration.md).
    "report": {
        "lambda_cycle": 0.1,
        "lambda_adv": 0.01,
        "lambda_identity": 0.05,
        "lambda_seg": 1.0,
        "lambda_kspace": 0.1,
    },
}


class ConfigError(CosmosError, ValueError):
    """A configuration value or override that cannot be applied."""


def _flatten(data: Mapping[str, Any], prefix: str = ""):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"unknown config section {'.'.join(parts[: i + 1])!r} in override {key!r}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {key!r}; known keys here: {sorted(node)}")
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls, values: Mapping[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {where!r}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        kwargs[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Type-check a value against the field's default so typos fail fast."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true/false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):  # "0,1,2" from a CLI
            try:
                return [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{where} must be a list, got {value!r}") from None
        if isinstance(value, int):
            return [value]
        raise ConfigError(f"{where} must be a list, got {value!r}")
    return value


_LAMBDAS = ("lambda_cycle", "lambda_adv", "lambda_identity", "lambda_seg", "lambda_kspace")


def _resolve_loss_weights(t: TranslatorConfig, given: set[str]) -> None:
    """A named preset sets lambda_1..4; weights given by hand make the preset ``custom``."""
    if t.loss_preset not in LOSS_PRESETS and t.loss_preset != "custom":
        raise ConfigError(
            f"translator.loss_preset must be one of {sorted(LOSS_PRESETS) + ['custom']}, got {t.loss_preset!r}"
        )
    hand = [k for k in _LAMBDAS if k in given]
    if "loss_preset" in given and t.loss_preset != "custom":
        preset = LOSS_PRESETS[t.loss_preset]
        clash = [k for k in hand if getattr(t, k) != preset[k]]
        if clash:
            raise ConfigError(
                f"translator.loss_preset={t.loss_preset} fixes {clash}; set translator.loss_preset=custom "
                "to give loss weights by hand"
            )
        for k, v in preset.items():
            setattr(t, k, v)
    elif hand:
        t.loss_preset = "custom"
    elif t.loss_preset != "custom":
        for k, v in LOSS_PRESETS[t.loss_preset].items():
            setattr(t, k, v)
