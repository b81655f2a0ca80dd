"""Frozen dataclasses <-> plain JSON values, driven by type hints. Pure.

Fields equal to their default are left out, which keeps the stored state small and lets old
documents load after a field is added. A field named `kind` is the discriminator of a union (the
policy's stages): it is always written, and from_plain picks the union member whose `kind` default
matches it.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.name != "kind" and v == _default_of(f):
                continue
            out[f.name] = to_plain(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _kind_of(tp: Any) -> Any:
    """The `kind` default of a dataclass union member, or None."""
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return None
    found = next((f for f in dataclasses.fields(tp) if f.name == "kind"), None)
    return None if found is None or found.default is _MISSING else found.default


def from_plain(tp: Any, data: Any) -> Any:
    """Build a value of type `tp` from plain JSON data (the inverse of to_plain)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        kind = data.get("kind") if isinstance(data, dict) else None
        tagged = [a for a in args if _kind_of(a) is not None]
        if kind is not None and len(tagged) > 1:  # a union of kinds (Release | None is not one)
            for arg in tagged:
                if _kind_of(arg) == kind:
                    return from_plain(arg, data)
            raise ValueError(f"kind {kind!r} is not one of {[_kind_of(a) for a in tagged]}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_plain(arg, data)
            except (TypeError, ValueError, KeyError) as err:
                errors.append(err)
        raise TypeError(f"{data!r} matches none of {tp}: {errors}")
    if origin is typing.Literal:
        if data not in typing.get_args(tp):
            raise ValueError(f"{data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in data)
        return tuple(from_plain(a, v) for a, v in zip(args, data, strict=True))
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {k: from_plain(vt, v) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {data!r}")
        hints = _hints(tp)
        kwargs = {f.name: from_plain(hints[f.name], data[f.name]) for f in dataclasses.fields(tp) if f.name in data}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if tp is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if isinstance(tp, type) and not isinstance(data, tp):
        raise TypeError(f"expected {tp.__name__}, got {data!r}")
    return data
