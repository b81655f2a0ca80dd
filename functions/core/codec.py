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
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
Encode = Callable[[Any], Any]  # a value of one class -> plain JSON data
Decode = Callable[[Any], Any]  # plain JSON data -> a value of one type
_MISSING = dataclasses.MISSING


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


# Encoders and decoders are built once per type and cached: a state document has hundreds of nodes, and
# working each one out from type hints and dataclass fields again made (de)serialisation the runner's
# hottest path (~4 ms per state).
_ENCODERS: dict[type, Encode] = {}
_PLAIN = (str, int, float, bool, type(None))


@typing.overload
def to_plain(value: DataclassInstance) -> dict[str, Any]: ...
@typing.overload
def to_plain(value: Any) -> Any: ...
def to_plain(value: Any) -> Any:
    """`value` as plain JSON data: a dataclass becomes an object of its fields that differ from their defaults
    (`kind` always), an enum its value, a tuple a list."""
    cls = value.__class__
    encode = _ENCODERS.get(cls)
    if encode is None:
        encode = _ENCODERS[cls] = _encoder(cls)
    return encode(value)


def _encoder(cls: type) -> Encode:
    if cls in _PLAIN:
        return _identity
    if dataclasses.is_dataclass(cls):
        spec = tuple((f.name, f.name == "kind", _default_of(f)) for f in dataclasses.fields(cls))

        def encode_dataclass(value: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, is_kind, default in spec:
                v = getattr(value, name)
                if not is_kind and v == default:
                    continue
                out[name] = to_plain(v)
            return out

        return encode_dataclass
    if issubclass(cls, enum.Enum):
        return lambda value: value.value
    if issubclass(cls, tuple | list):
        return lambda value: [to_plain(v) for v in value]
    if issubclass(cls, dict):
        return lambda value: {str(k): to_plain(v) for k, v in value.items()}
    return _identity


def _identity(value: Any) -> Any:
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


@typing.overload
def from_plain(tp: type[T], data: Any) -> T: ...
@typing.overload
def from_plain(tp: Any, data: Any) -> Any: ...
def from_plain(tp: Any, data: Any) -> Any:
    """Build a value of type `tp` from plain JSON data (the inverse of to_plain)."""
    return _decoder(tp)(data)


@cache
def _decoder(tp: Any) -> Decode:
    """A function plain data -> value of type `tp`; nested types are looked up when first needed."""
    if tp is Any:
        return _identity
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union_decoder(tp)
    if origin is typing.Literal:
        return _literal_decoder(typing.get_args(tp))
    if origin is tuple:
        return _tuple_decoder(typing.get_args(tp))
    if origin is dict:
        value = _Lazy(typing.get_args(tp)[1])
        return lambda data: {k: value.decode(v) for k, v in data.items()}
    if isinstance(tp, type):
        return _instance_decoder(tp)
    return _identity


def _literal_decoder(allowed: tuple[Any, ...]) -> Decode:
    def decode_literal(data: Any) -> Any:
        if data not in allowed:
            raise ValueError(f"{data!r} is not one of {allowed}")
        return data

    return decode_literal


def _tuple_decoder(args: tuple[Any, ...]) -> Decode:
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        item = _Lazy(args[0])
        return lambda data: tuple([item.decode(v) for v in data])
    return lambda data: tuple(_decoder(a)(v) for a, v in zip(args, data, strict=True))


def _instance_decoder(tp: type) -> Decode:
    """A dataclass from its fields, an enum from its value, a float from any number; else `data` itself, when it
    is a `tp`."""
    if dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if issubclass(tp, enum.Enum):
        return tp
    if tp is float:

        def decode_float(data: Any) -> Any:
            if isinstance(data, int | float) and not isinstance(data, bool):
                return float(data)
            raise TypeError(f"expected float, got {data!r}")

        return decode_float

    def decode_plain(data: Any) -> Any:
        if not isinstance(data, tp):
            raise TypeError(f"expected {tp.__name__}, got {data!r}")
        return data

    return decode_plain


class _Lazy:
    """The decoder of `tp`, resolved on first use (a type may refer to itself)."""

    __slots__ = ("tp", "_decode")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self._decode: Decode | None = None

    def decode(self, data: Any) -> Any:
        if self._decode is None:
            self._decode = _decoder(self.tp)
        return self._decode(data)


def _dataclass_decoder(tp: type) -> Decode:
    names = tuple(f.name for f in dataclasses.fields(tp))
    decoders: dict[str, Decode] = {}

    def decode_dataclass(data: Any) -> Any:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {data!r}")
        if not decoders:
            hints = _hints(tp)
            decoders.update({name: _decoder(hints[name]) for name in names})
        return tp(**{k: decoders[k](v) for k, v in data.items() if k in decoders})

    return decode_dataclass


def _union_decoder(tp: Any) -> Decode:
    args = typing.get_args(tp)
    optional = type(None) in args
    members = tuple(a for a in args if a is not type(None))
    tagged = [a for a in args if _kind_of(a) is not None]

    def decode_union(data: Any) -> Any:
        if data is None and optional:
            return None
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind is not None and len(tagged) > 1:  # a union of kinds (Release | None is not one)
            for arg in tagged:
                if _kind_of(arg) == kind:
                    return _decoder(arg)(data)
            raise ValueError(f"kind {kind!r} is not one of {[_kind_of(a) for a in tagged]}")
        errors = []
        for arg in members:
            try:
                return _decoder(arg)(data)
            except (TypeError, ValueError, KeyError) as err:
                errors.append(err)
        raise TypeError(f"{data!r} matches none of {tp}: {errors}")

    return decode_union
