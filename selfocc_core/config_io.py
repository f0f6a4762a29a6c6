"""Strict YAML -> nested dataclass loading (no registries, no inheritance magic).

`load_dataclass(cls, "file.yaml")` builds `cls` from the YAML mapping; an unknown key, a
missing required field or a value of the wrong type is a ValueError naming the key path and
the file. Configs are frozen after load: make a changed copy with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or mapping that does not match its dataclass."""


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_dataclass(cls: type[T], path: str | Path) -> T:
    """Load `cls` from a YAML file."""
    return from_dict(cls, load_yaml(path), where=str(path))


def from_dict(cls: type[T], data: Any, where: str = "<dict>", key_path: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{key_path or cls.__name__}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{key_path}." if key_path else ""
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)} in {cls.__name__}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        sub = f"{key_path}.{f.name}" if key_path else f.name
        kwargs[f.name] = _convert(hints[f.name], data[f.name], where, sub)
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required fields
        raise ConfigError(f"{where}: {cls.__name__}: {e}") from e
    except ValueError as e:
        raise ConfigError(f"{where}: {key_path or cls.__name__}: {e}") from e


def _convert(tp, value, where: str, key_path: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key_path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where, key_path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: '{key_path}': {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: '{key_path}' must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key_path}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: '{key_path}' must have {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, where, f"{key_path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, where, f"{key_path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key_path}' must be a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_convert(kt, k, where, key_path): _convert(vt, v, where, f"{key_path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key_path}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key_path}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key_path}' must be true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key_path}' must be a string, got {value!r}")
        return value
    return value


def to_dict(obj) -> dict:
    """Dataclass -> plain dict (tuples become lists) for YAML/JSON dumps and checkpoints."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(obj)
