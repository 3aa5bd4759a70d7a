"""Experiment settings: frozen dataclasses built from the plain mappings of ``params.yaml`` (``from_mapping``).

An unknown key, or a value of the wrong type, fails with one :class:`SettingsError` that names the experiment, the
key and the valid keys; a missing key takes the dataclass default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["SettingsError", "from_mapping", "to_plain"]

T = TypeVar("T")


class SettingsError(ValueError):
    """Experiment settings that cannot be used; the message names the key and what it accepts."""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except SettingsError as exc:
                errors.append(str(exc))
        raise SettingsError(errors[0])
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(hint, value, where=where)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, where: str | None = None) -> T:
    """``cls(**data)`` with every value checked against the field's type; a nested dataclass field is built from a
    mapping that updates its default key by key."""
    where = where or cls.__name__
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {unknown}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        default = _default(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            value = {**to_plain(default), **value}  # a nested mapping updates the default, key by key
        values[name] = _coerce(value, hints[name], f"{where}.{name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested containers of them) as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
