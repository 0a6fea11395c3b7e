"""How raw values become config values: the machinery under :mod:`cosmos.config`.

* dotted overrides (``translator.epochs=3``) parsed and set into a config mapping,
* mappings merged (a profile over the one it inherits, a YAML file over a profile),
* each value coerced to its field's annotated type (so a typo fails fast rather than deep inside a stage):
  a ``Literal[...]`` key takes only its listed values, a float key only a finite number,
* the translator's loss weights resolved from a named preset (:data:`LOSS_PRESETS`).

:class:`ConfigError` lives here because everything below ``cosmos.config`` raises it; import it (like the
rest) from :mod:`cosmos.config`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
from typing import TYPE_CHECKING, Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints

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


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field's annotation, resolved: the schema module postpones annotations (``from __future__ import
    annotations``), so ``dataclasses.fields`` holds them as strings; ``get_type_hints`` evaluates them."""
    return get_type_hints(cls)


def choices(hint: Any) -> tuple[Any, ...] | None:
    """The values a ``Literal[...]`` annotation allows; None for any other annotation."""
    return get_args(hint) if get_origin(hint) is Literal else None


def _build(cls, values: Mapping[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {where!r}")
    hints = field_types(cls)
    kwargs = {}
    for name, value in values.items():
        # a value the key once took, refused with why (field metadata "refused": {value: message})
        refused = fields[name].metadata.get("refused", {})
        if isinstance(value, str) and value in refused:
            raise ConfigError(refused[value])
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    return cls(**kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and convert) a value against the field's annotation so typos fail fast: ``bool``, ``int``,
    ``float`` (finite), ``str``, ``Literal[...]`` (one of its values), ``list[...]`` (of numbers where the
    entries are numbers, each one of its values where the entries are a ``Literal``), ``X | None`` (null or an
    X); anything else passes as it is."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = [a for a in get_args(hint) if a is not type(None)]
        if value is None and len(arms) < len(get_args(hint)):
            return None
        hint = arms[0] if len(arms) == 1 else Any
        origin = get_origin(hint)
    allowed = choices(hint)
    if allowed is not None:
        if any(type(value) is type(a) and value == a for a in allowed):
            return value
        names = [str(a) for a in allowed]
        listed = " or ".join(names) if len(names) == 2 else "one of " + " | ".join(names)
        raise ConfigError(f"{where} must be {listed}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true/false, got {value!r}")
    if hint is int:
        if _is_number(value) and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        number: float | None = float(value) if _is_number(value) else None
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {number!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is list or hint is list:
        item = (get_args(hint) or (Any,))[0]
        numeric, allowed = item in (int, float), choices(item)
        if isinstance(value, (list, tuple)):
            items = list(value)
        elif isinstance(value, str):  # "0,1,2" from a CLI
            parse = float if item is float else str if item is str or allowed else int
            try:
                items = [parse(v.strip()) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{where} must be a list, got {value!r}") from None
        elif _is_number(value) and (numeric or isinstance(value, int)):
            items = [value]
        else:
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if numeric and not all(_is_number(v) for v in items):  # entries kept as given: validation normalises
            raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
        if allowed is not None:
            for v in items:
                _coerce(v, item, f"{where} entries")
        return items
    return value


_LAMBDAS = ("lambda_cycle", "lambda_adv", "lambda_identity", "lambda_seg", "lambda_kspace")


def _resolve_loss_weights(t: TranslatorConfig, given: set[str]) -> None:
    """A named preset sets lambda_1..4; weights given by hand make the preset ``custom``. The preset's name is
    already one of the field's ``Literal`` values (``_coerce``), which name the keys of :data:`LOSS_PRESETS`."""
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
