"""Typed options: dataclass fields that carry a help line and the values they allow, and one validation for all.

Every field is declared with :func:`opt`, which records its help text and the values it allows. The same
validation serves the run's config (``seqjepa.config``: presets, ``--set section.key=value`` overrides, configs
read back from a run folder), the options of every world (``World.Options``) and of every baseline
(``Method.Options``), so a bad value always fails the same way: a :class:`ConfigError` that names the field, the
value and what is allowed. Standard library only: every layer uses it.

>>> from dataclasses import dataclass
>>> @dataclass
... class Probe:
...     epochs: int = opt(40, "passes over the probe data", ge=1)
>>> p = Probe()
>>> set_field(p, "epochs", "0", "eval.")
Traceback (most recent call last):
...
seqjepa.options.ConfigError: eval.epochs: got 0; allowed: int >= 1
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class DataError(ValueError):
    """A dataset, view-bank cache or data file on disk is missing, malformed or unreadable; the message names it."""


def opt(default: Any, help: str, *, ge: float | None = None, le: float | None = None,
        gt: float | None = None, choices: tuple | None = None, min_items: int | None = None) -> Any:
    """A dataclass field with a help line and the bounds its value must satisfy.

    Bounds apply to a number or to every item of a list; ``min_items`` to a list's length. A float field never
    takes NaN or ±inf, whatever its bounds (:func:`check_bounds`).
    """
    meta = {"help": help, "ge": ge, "le": le, "gt": gt, "choices": choices, "min_items": min_items}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


def describe_allowed(f: dataclasses.Field, hint: Any) -> str:
    m = f.metadata
    parts = [type_name(hint)]
    if typing.get_origin(hint) is Literal:
        parts = ["one of " + ", ".join(map(repr, typing.get_args(hint)))]
    if m.get("choices"):
        parts = ["one of " + ", ".join(map(repr, m["choices"]))]
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<=")):
        if m.get(key) is not None:
            parts.append(f"{sym} {m[key]}")
    if m.get("min_items"):
        parts.append(f"with at least {m['min_items']} item{'s' if m['min_items'] > 1 else ''}")
    return " ".join(parts)


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return f"list of {type_name(typing.get_args(hint)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if hint is float:
        return "finite float"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any, name: str, f: dataclasses.Field) -> Any:
    """Convert ``value`` (a parsed JSON value or a string) to ``hint`` or raise a ConfigError."""
    origin = typing.get_origin(hint)
    bad = ConfigError(f"{name}: got {value!r}; allowed: {describe_allowed(f, hint)}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return coerce(value, arg, name, f)
            except ConfigError:
                continue
        raise bad
    if hint is type(None):
        if value is None:
            return None
        raise bad
    if origin in (list, tuple):
        if isinstance(value, str):  # a,b or [a,b] without JSON quotes
            value = [v.strip() for v in value.strip().removeprefix("[").removesuffix("]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        (arg,) = typing.get_args(hint)[:1]
        return [coerce(v, arg, name, f) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if hint is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise bad


def check_bounds(value: Any, f: dataclasses.Field, hint: Any, name: str) -> None:
    m = f.metadata
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and m.get("min_items") and len(value) < m["min_items"]:
        raise ConfigError(f"{name}: got {value!r}; allowed: {describe_allowed(f, hint)}")
    for v in values:
        if v is None:
            continue
        ok = True
        if m.get("choices") and v not in m["choices"]:
            ok = False
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if m.get("ge") is not None and v < m["ge"]:
                ok = False
            if m.get("gt") is not None and v <= m["gt"]:
                ok = False
            if m.get("le") is not None and v > m["le"]:
                ok = False
            if isinstance(v, float) and not math.isfinite(v):  # every float field, bounded or not
                ok = False
        if not ok:
            raise ConfigError(f"{name}: got {value!r}; allowed: {describe_allowed(f, hint)}")


def set_field(obj: Any, key: str, value: Any, prefix: str = "") -> None:
    """Set ``obj.key`` to ``value`` after coercing and range-checking it."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = f"{prefix}{key}"
    if key not in fields:
        raise ConfigError(f"{name}: unknown key; allowed keys: {', '.join(sorted(fields))}")
    f = fields[key]
    hint = typing.get_type_hints(type(obj))[key]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{name}: is a section; set one of its keys, e.g. {name}.<key>=...")
    v = coerce(value, hint, name, f)
    check_bounds(v, f, hint, name)
    setattr(obj, key, v)


def validate(obj: Any, prefix: str = "") -> None:
    """Re-check every field of a (nested) config dataclass."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            validate(v, f"{prefix}{f.name}.")
        else:
            set_field(obj, f.name, v, prefix)


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build ``cls`` from a (possibly partial) nested dict, validating every value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    obj = cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key; allowed keys: {', '.join(sorted(names))}")
        if dataclasses.is_dataclass(hints[key]):
            setattr(obj, key, from_dict(hints[key], value, f"{prefix}{key}."))
        else:
            set_field(obj, key, value, prefix)
    return obj


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side: JSON when it parses, else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: Any, overrides: list[str]) -> None:
    """Apply ``section.key=value`` strings. ``world.options.NAME=V`` sets a world option."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        path, text = item.split("=", 1)
        parts = path.strip().split(".")
        target = cfg
        for i, part in enumerate(parts[:-1]):
            if isinstance(target, dict):
                target = target.setdefault(part, {})
                continue
            names = {f.name for f in dataclasses.fields(target)}
            if part not in names:
                where = ".".join(parts[:i + 1])
                raise ConfigError(f"{where}: unknown key; allowed keys: {', '.join(sorted(names))}")
            target = getattr(target, part)
        if isinstance(target, dict):  # free-form mapping (world options), validated by the world
            target[parts[-1]] = parse_value(text)
        else:
            set_field(target, parts[-1], parse_value(text), ".".join(parts[:-1]) + "." if len(parts) > 1 else "")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def help_lines(cls: type, prefix: str = "", values: Any = None, allowed: dict[str, str] | None = None) -> list[str]:
    """One line per field: ``section.key = value  [allowed]  help``. Used by ``--help``.

    ``values``: an instance whose values are shown (e.g. a preset's Config); default: the class defaults.
    ``allowed``: ``{"section.key": "what it takes"}`` for fields whose values a registry above this layer knows
    (``model.method``, ``world.env``, ...): the caller that knows it fills the brackets.

    >>> from seqjepa.config import WorldConfig
    >>> help_lines(WorldConfig, "world.", allowed={"world.agent": "one of random, sweep"})[-2].split("  ")[2]
    '[one of random, sweep]'
    """
    lines = []
    hints = typing.get_type_hints(cls)
    values = cls() if values is None else values
    allowed = allowed or {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            lines.extend(help_lines(hint, f"{prefix}{f.name}.", getattr(values, f.name), allowed))
            continue
        name = f"{prefix}{f.name}"
        lines.append(f"  {name} = {json.dumps(getattr(values, f.name))}  "
                     f"[{allowed.get(name) or describe_allowed(f, hint)}]  {f.metadata.get('help', '')}")
    return lines


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1}``, through every nested mapping (world options included)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
