"""`@value`: frozen, slotted dataclasses that are cheap to create (cold start).

`@dataclass(frozen=True, slots=True)` compiles six methods per class when its module is imported: about
0.5 ms a class, 25-30 ms for the ~50 classes of the model, a fifth of a function's cold start. `@value`
lets dataclasses do the bookkeeping only (fields, defaults, slots; no code generated), compiles one
`__init__`, and shares generic `__eq__`, `__hash__`, `__repr__` and a frozen `__setattr__`. The class is
still a dataclass: `dataclasses.fields`, `replace`, `asdict` and `is_dataclass` work on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

C = TypeVar("C", bound=type)
_MISSING = dataclasses.MISSING


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def value(cls: C) -> C:
    """The class as `@dataclass(frozen=True, slots=True)` would make it (eq, hash, repr, match args)."""
    if cls.__bases__ != (object,):
        raise TypeError(f"@value class {cls.__qualname__} must not inherit (its fields would not be slots)")
    documented = cls.__doc__ is not None
    if not documented:
        cls.__doc__ = cls.__name__  # else dataclasses derives one from inspect.signature (tokenizes: slow)
    made: Any = dataclasses.dataclass(init=False, repr=False, eq=False, slots=True)(cls)
    fields = dataclasses.fields(made)
    names = tuple(f.name for f in fields)
    key = _key(names)
    made.__init__ = _init(made, fields)
    if not documented:
        made.__doc__ = f"{cls.__name__}({', '.join(names)})"
    made.__setattr__ = _frozen_setattr
    made.__delattr__ = _frozen_delattr
    made.__eq__ = lambda self, other: (
        key(self) == key(other) if other.__class__ is self.__class__ else NotImplemented
    )
    made.__hash__ = lambda self: hash(key(self))
    made.__repr__ = lambda self: _repr(self, names)
    made.__reduce__ = lambda self: (self.__class__, key(self))  # copy and pickle without __setattr__
    return made  # type: ignore[no-any-return]


def _key(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The field values as a tuple (what dataclasses compares and hashes)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        get = attrgetter(names[0])
        return lambda obj: (get(obj),)
    return lambda _: ()


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """One compiled `__init__` setting every field (default factories called per instance)."""
    scope: dict[str, Any] = {"__set": object.__setattr__, "__missing": _MISSING}
    params, body = ["self"], []
    for f in fields:
        if not f.init or f.kw_only is True:
            raise TypeError(f"@value class {cls.__qualname__}: field {f.name} must be a plain init field")
        given = f.name
        if f.default is not _MISSING:
            scope[f"__default_{f.name}"] = f.default
            params.append(f"{f.name}=__default_{f.name}")
        elif f.default_factory is not _MISSING:
            scope[f"__factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=__missing")
            given = f"__factory_{f.name}() if {f.name} is __missing else {f.name}"
        else:
            params.append(f.name)
        body.append(f"__set(self, {f.name!r}, {given})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = f"def __init__({', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    try:
        exec(source, scope)  # noqa: S102 (source built from field names only)
    except SyntaxError as err:  # a field without default after one with a default
        raise TypeError(f"@value class {cls.__qualname__}: {err.msg}") from None
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _frozen_setattr(self: object, name: str, _: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _repr(obj: object, names: tuple[str, ...]) -> str:
    return f"{obj.__class__.__qualname__}({', '.join(f'{n}={getattr(obj, n)!r}' for n in names)})"
