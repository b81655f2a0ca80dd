"""`@value`: frozen, slotted dataclasses that are cheap to create (cold start).

`@dataclass(frozen=True, slots=True)` compiles six methods per class when its module is imported: about
0.5 ms a class, 25-30 ms for the ~50 classes of the model, a fifth of a function's cold start. `@value`
compiles one `__init__` and shares generic `__eq__`, `__hash__`, `__repr__` and a frozen `__setattr__`.
The class is still a dataclass: it carries the `dataclasses.Field`s that `dataclasses.fields`, `replace`,
`asdict` and `is_dataclass` read (tests/unit/test_values.py holds it to that).
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
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    fields = tuple(
        _field(cls, name, annotation, namespace)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items()
        if not _is_classvar(annotation)
    )
    names = tuple(f.name for f in fields)
    _check_order(cls, fields)
    key = _key(names)
    namespace.update(
        __slots__=names,
        __match_args__=names,
        __dataclass_fields__={f.name: f for f in fields},  # what dataclasses.fields/replace/asdict read
        __init__=_compiled_on_first_use(fields),
        __setattr__=_frozen_setattr,
        __delattr__=_frozen_delattr,
        __eq__=lambda self, other: (
            key(self) == key(other) if other.__class__ is self.__class__ else NotImplemented
        ),
        __hash__=lambda self: hash(key(self)),
        __repr__=lambda self: _repr(self, names),
        __reduce__=lambda self: (self.__class__, key(self)),  # copy and pickle without __setattr__
    )
    made: Any = type(cls)(cls.__name__, cls.__bases__, namespace)
    made.__qualname__ = cls.__qualname__
    return made  # type: ignore[no-any-return]


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _field(cls: type, name: str, annotation: Any, namespace: dict[str, Any]) -> dataclasses.Field[Any]:
    """The dataclasses.Field of one annotated name; its class-level default moves into the Field (a slot
    and a class attribute cannot share a name)."""
    if str(annotation).startswith(("InitVar", "dataclasses.InitVar")):
        raise TypeError(f"@value class {cls.__qualname__}: InitVar field {name} is not supported")
    default = namespace.pop(name, _MISSING)
    if isinstance(default, list | dict | set):  # shared by every instance: the dataclasses rule
        raise ValueError(f"@value class {cls.__qualname__}: mutable default for {name}; use default_factory")
    f: dataclasses.Field[Any] = (
        default if isinstance(default, dataclasses.Field) else dataclasses.field(default=default)
    )
    f.name, f.type = name, annotation
    f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]  # what dataclasses.fields() lists
    return f


def _key(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The field values as a tuple (what dataclasses compares and hashes)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        get = attrgetter(names[0])
        return lambda obj: (get(obj),)
    return lambda _: ()


def _check_order(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> None:
    defaulted = ""
    for f in fields:
        if f.default is not _MISSING or f.default_factory is not _MISSING:
            defaulted = defaulted or f.name
        elif defaulted:
            raise TypeError(
                f"@value class {cls.__qualname__}: field {f.name} without a default follows {defaulted}"
            )


def _compiled_on_first_use(fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """An `__init__` that compiles the real one when the class is first instantiated: a cold start only
    pays for the classes it uses."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        cls = self.__class__
        if cls.__init__ is __init__:  # (two threads may both compile: same result)
            cls.__init__ = _init(cls, fields)
        cls.__init__(self, *args, **kwargs)

    return __init__


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
    exec(source, scope)  # noqa: S102 (source built from field names only)
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _frozen_setattr(self: object, name: str, _: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _repr(obj: object, names: tuple[str, ...]) -> str:
    return f"{obj.__class__.__qualname__}({', '.join(f'{n}={getattr(obj, n)!r}' for n in names)})"
