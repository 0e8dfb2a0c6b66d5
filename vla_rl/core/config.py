"""Typed, frozen run configs loaded from YAML.

A config is a frozen dataclass whose fields are documented with ``option(default, "doc")``.
``load_config(Cls, "configs/x.yaml", overrides=["env.image_size=96"])`` builds it recursively and
fails loudly on anything unexpected: an unknown key (the message lists the valid ones with their
docs), a value of the wrong type, a value outside a ``Literal``. Nothing is silently replaced.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not match the config's schema."""


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A documented dataclass field: ``image_size: int = option(64, "pixels per side")``."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def field_docs(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def _field_default(field: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its factory), or ``dataclasses.MISSING``."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def describe(cls: type, indent: str = "", defaults: Any = None) -> str:
    """Human-readable schema: every field, its type, default and doc, nested configs indented. A nested
    config's defaults are those of the field's default instance (the quickstart's embedded ``train``,
    say), which may differ from its class's. ``defaults``: an instance whose values to show instead
    (a loaded config, as ``--show-config`` after ``--config`` and ``--set``)."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if dataclasses.is_dataclass(kind):
            lines.append(f"{indent}{f.name}:  # {f.metadata.get('doc', '')}")
            lines.append(describe(kind, indent + "  ", default if isinstance(default, kind) else None))
        else:
            lines.append(f"{indent}{f.name}: {_shown(default)}  # {_type_name(kind)}. {f.metadata.get('doc', '')}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    """A value as ``describe`` prints it: paths as the text a YAML file gives them (``""``: not set)."""
    if value is dataclasses.MISSING:
        return "<required>"
    if isinstance(value, Path):
        return str(value) if value != Path("") else '""'
    if isinstance(value, (tuple, list)) and any(isinstance(item, Path) for item in value):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return repr(value)


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _convert(kind: Any, value: Any, where: str) -> Any:
    origin = get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {kind.__name__}, got {value!r}")
        return from_dict(kind, value, f"{where}.")
    if origin is Literal:
        if value not in get_args(kind):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(kind))}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for candidate in options:
            if candidate is type(None):
                continue
            try:
                return _convert(candidate, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{where}: {value!r} matches none of {_type_name(kind)} ({'; '.join(errors)})")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(kind)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float, ...]: fixed length
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items ({_type_name(kind)}), got {len(value)}: {value!r}")
            return tuple(_convert(item, v, f"{where}[{i}]") for i, (item, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_kind, value_kind = get_args(kind) or (Any, Any)
        return {_convert(key_kind, k, f"{where} key {k!r}"): _convert(value_kind, v, f"{where}[{k!r}]")
                for k, v in value.items()}
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 (PyYAML) reads 1e-3, without a dot, as a string
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):  # never "nan" or "inf" from a string
                return number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if kind is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported field type {kind!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", base: T | None = None) -> T:
    """Build ``cls`` from a plain mapping, rejecting unknown keys and wrong types; keys the mapping
    leaves out keep ``base``'s values when given, else the class's defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = "\n".join(f"  {name}: {doc}" for name, doc in field_docs(cls).items())
        raise ConfigError(f"unknown key(s) {', '.join(repr(f'{where}{k}') for k in unknown)} in "
                          f"{cls.__name__}; valid keys{' under ' + where.rstrip('.') if where else ''}:\n{valid}")
    values = {}
    for name, value in data.items():
        # a mapping for a nested config overrides the field's default instance key by key, not its class's
        # defaults: ``--set train.temperature=1.0`` on the quickstart keeps the rest of its embedded ``train``
        nested_default = None
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]):
            nested_default = getattr(base, name) if base is not None else _field_default(fields[name])
        if nested_default is not None and isinstance(nested_default, hints[name]):
            values[name] = from_dict(hints[name], value, f"{where}{name}.", base=nested_default)
        else:
            values[name] = _convert(hints[name], value, f"{where}{name}")
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing and base is None:
        raise ConfigError(f"{cls.__name__} is missing required key(s): {', '.join(where + m for m in missing)}")
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {error}") from error


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested mapping in place."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.path=value")
    path, raw = override.split("=", 1)
    keys = path.strip().split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {key!r} is not a section")
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        reason = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigError(f"override {override!r}: {raw!r} is not a valid YAML value ({reason})") from None


def load_config(cls: type[T], source: str | Path | dict[str, Any] | None = None, overrides: list[str] = ()) -> T:
    """Load ``cls`` from a YAML file (or mapping, or nothing = defaults) plus dotted overrides."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            # JSON files are parsed as JSON: PyYAML reads exponents without a dot (1e-06) as strings.
            data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must contain a mapping at the top level")
    for override in overrides:
        apply_override(data, override)
    return from_dict(cls, data)


def refuse_repeats(names: Sequence[str], what: str) -> None:
    """A name listed twice (a task, say) would be counted twice: an error, never merged silently."""
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"{what} list {repeated} more than once: {list(names)}")


def require_finite(config: Any, positive: Sequence[str] = (), non_negative: Sequence[str] = ()) -> None:
    """Refuse a NaN, an infinity or a value out of range in the named float fields of ``config`` (YAML reads
    ``.nan`` and ``.inf`` as floats, and a NaN passes every ``<`` check)."""
    for names, low, holds in ((positive, "> 0", lambda v: v > 0), (non_negative, ">= 0", lambda v: v >= 0)):
        for name in names:
            value = getattr(config, name)
            if not (math.isfinite(value) and holds(value)):
                raise ValueError(f"{name} must be a finite number {low}, got {value}")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML-safe mapping of a config (tuples as lists, paths as strings)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {key: plain(v) for key, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)
