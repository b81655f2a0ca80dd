"""@value behaves as @dataclass(frozen=True, slots=True) does, for everything the model relies on."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import field
from typing import ClassVar

import pytest

from functions.core.values import value


@value
class Step:
    """A sample value with a default factory and a validating __post_init__."""

    weight: int
    pause: float = 60.0
    tags: tuple[str, ...] = ()
    params: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"weight {self.weight}")


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    weight: int
    pause: float = 60.0
    tags: tuple[str, ...] = ()
    params: dict[str, int] = field(default_factory=dict)


@value
class Empty:
    pass


@value
class Point:
    x: int
    y: int = 0


def test_init_takes_positional_and_keyword_arguments_with_defaults() -> None:
    step = Step(20, tags=("a",))
    assert (step.weight, step.pause, step.tags, step.params) == (20, 60.0, ("a",), {})
    assert Step(weight=5, pause=1.0).pause == 1.0


def test_each_instance_gets_its_own_default_factory_value() -> None:
    assert Step(1).params is not Step(2).params


def test_post_init_runs_on_construction_and_replace() -> None:
    with pytest.raises(ValueError, match="weight 101"):
        Step(101)
    with pytest.raises(ValueError, match="weight -1"):
        dataclasses.replace(Step(1), weight=-1)


def test_missing_and_unknown_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError):
        Step()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Step(1, colour="red")  # type: ignore[call-arg]


def test_frozen_and_slotted() -> None:
    step = Step(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.weight = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del step.weight  # type: ignore[misc]
    assert not hasattr(step, "__dict__")
    assert Step.__slots__ == ("weight", "pause", "tags", "params")


def test_eq_and_hash_follow_the_fields_like_a_dataclass() -> None:
    assert Step(1, tags=("x",)) == Step(1, tags=("x",))
    assert Step(1) != Step(2)
    assert Step(1) != Reference(1)  # other classes never compare equal
    assert hash(Point(3, 1)) == hash(Point(3, 1))
    assert len({Point(1), Point(1), Point(1, 2), Empty(), Empty()}) == 3
    with pytest.raises(TypeError):
        hash(Step(1))  # an unhashable field (dict) makes the value unhashable, as in dataclasses


def test_repr_matches_the_dataclass_repr() -> None:
    assert repr(Step(1, tags=("x",))) == repr(Reference(1, tags=("x",))).replace("Reference", "Step")
    assert repr(Empty()) == "Empty()"


def test_dataclasses_functions_work() -> None:
    step = Step(1, params={"a": 1})
    assert dataclasses.is_dataclass(step)
    assert [f.name for f in dataclasses.fields(Step)] == ["weight", "pause", "tags", "params"]
    assert dataclasses.asdict(step) == {"weight": 1, "pause": 60.0, "tags": (), "params": {"a": 1}}
    assert dataclasses.replace(step, pause=5.0) == Step(1, 5.0, (), {"a": 1})
    assert Step.__match_args__ == ("weight", "pause", "tags", "params")
    match step:
        case Step(weight, pause):
            assert (weight, pause) == (1, 60.0)
        case _:
            pytest.fail("positional pattern did not match")


def test_copy_and_pickle_round_trip() -> None:
    step = Step(7, tags=("a",), params={"b": 2})
    assert copy.copy(step) == step
    assert copy.deepcopy(step) == step
    assert pickle.loads(pickle.dumps(step)) == step


def test_inheritance_and_field_order_mistakes_are_refused() -> None:
    with pytest.raises(TypeError, match="must not inherit"):
        value(type("Child", (Reference,), {}))
    with pytest.raises(TypeError, match="Broken"):

        @value
        class Broken:
            a: int = 1
            b: int


def test_class_variables_stay_on_the_class_and_mutable_defaults_are_refused() -> None:
    @value
    class Kind:
        label: ClassVar[str] = "push"
        name: str = "x"

    assert [f.name for f in dataclasses.fields(Kind)] == ["name"]
    assert Kind.label == "push" and Kind().label == "push" and Kind.__slots__ == ("name",)
    with pytest.raises(ValueError, match="mutable default for tags"):

        @value
        class Shared:
            tags: list[str] = []  # noqa: RUF012


def test_init_is_compiled_on_first_use_with_the_field_signature() -> None:
    import inspect

    @value
    class Lazy:
        a: int
        b: str = "x"

    assert list(inspect.signature(Lazy.__init__).parameters) == ["self", "args", "kwargs"]  # not compiled yet
    assert Lazy(1).b == "x"
    assert list(inspect.signature(Lazy.__init__).parameters) == ["self", "a", "b"]
    assert Lazy(2, b="y") == Lazy(a=2, b="y")
