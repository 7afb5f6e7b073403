"""Typed run configs: dataclasses loaded from TOML, overridden from the CLI, saved resolved with every run.

Each stage defines its own dataclass (e.g. pretrain.train.PretrainConfig). This module only knows how to
load, override, validate and save them.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        (inner, *_) = typing.get_args(tp) or (Any,)
        seq = [_coerce(inner, v, where) if inner is not Ellipsis else v for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise TypeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys (a typo must not be silently ignored)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise KeyError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """The TOML file as a dict ({} for None); a missing file is an error naming it."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    with p.open("rb") as f:
        return tomllib.load(f)


def load(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults ← TOML file (optional) ← overrides (None values are ignored, so unset CLI flags keep the file's)."""
    data = read_toml(path)
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    return from_dict(cls, data, where=str(path) if path else cls.__name__)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def save(cfg: Any, out_dir: str | Path, name: str = "config.json") -> Path:
    """Write the resolved config next to a run's outputs (JSON: round-trips through `load` after json→dict)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"type": type(cfg).__name__, **to_dict(cfg)}, indent=2, sort_keys=True))
    tmp.replace(path)
    return path
