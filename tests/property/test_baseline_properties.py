"""[baseline] Properties of the fresh baseline's routing: any sequence of plans, from any earlier one, leaves each
router's backend list holding exactly the plan's weights (read back as the plan), the stable's and the user's
other entries untouched, the baseline's entry only while it has weight; and decide() never routes a baseline
heavier than the canary or the stable below zero."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.core import baseline
from functions.core.effects import RoutePlan
from functions.providers.routers import gateway_api, istio, traefik
from functions.providers.routers._common import apply_patch, live_plan
from functions.providers.routers.base import RouteTarget

NAME = "web-baseline"


@st.composite
def plans(draw: Any) -> RoutePlan:
    canary = draw(st.integers(0, 100))
    fresh = draw(st.integers(0, 100 - canary))
    return RoutePlan(stable=100 - canary - fresh, canary=canary, baseline=fresh)


@given(st.integers(0, 100))
def test_baseline_weight_is_never_above_the_canary_nor_the_stables_share(w: int) -> None:
    b = baseline.weight_for(w)
    assert 0 <= b <= w and w + b <= 100 and (b == w or w + b == 100)


def _traefik(entries: list[Any], plan: RoutePlan) -> list[Any]:
    s = traefik._setup(
        RouteTarget("prod", "web", "web", "web-canary", options={"ingressRoute": "r"}, baseline=NAME),
        "traefik.io",
    )
    ops, _ = traefik.weight_ops(entries, "/l", s, plan, None)
    out: list[Any] = apply_patch({"l": entries}, ops)["l"]
    stable, canary = traefik._weights(out, s)
    assert (
        live_plan(RoutePlan(), stable, canary, None, lambda p: None, "t", traefik._baseline_weight(out, s))
        == plan
    )
    return out


def _gateway(entries: list[Any], plan: RoutePlan) -> list[Any]:
    s = gateway_api._setup(
        RouteTarget("prod", "web", "web", "web-canary", options={"port": 80}, baseline=NAME)
    )
    ops, _ = gateway_api.weight_ops(entries, "/l", s, plan, None)
    out: list[Any] = apply_patch({"l": entries}, ops)["l"]
    stable, canary = gateway_api._weights([{"backendRefs": out}], s)
    fresh = sum(int(e.get("weight", 1)) for e in out if e.get("name") == NAME)
    assert live_plan(RoutePlan(), stable, canary, None, lambda p: None, "t", fresh) == plan
    return out


def _istio(entries: list[Any], plan: RoutePlan) -> list[Any]:
    s = istio._setup(RouteTarget("prod", "web", "web", "web-canary", options={}, baseline=NAME))
    ops, _ = istio.weight_ops(entries, "/l", s, plan, None)
    out: list[Any] = apply_patch({"l": entries}, ops)["l"]
    stable, canary = istio._weights(out, s)
    fresh = sum(int(d.get("weight", 0)) for d in out if istio._is_baseline(d, s))
    assert live_plan(RoutePlan(), stable, canary, None, lambda p: None, "t", fresh) == plan
    return out


USER = {"kind": "Service", "name": "admin", "port": 9000}  # another backend of the user's on the same list


@settings(max_examples=150, deadline=None)
@given(st.lists(plans(), min_size=1, max_size=6))
def test_baseline_entries_follow_any_sequence_of_plans(sequence: list[RoutePlan]) -> None:
    lists = {
        "traefik": (
            [{"kind": "Service", "name": "web", "port": 80, "passHostHeader": False}, USER],
            _traefik,
        ),
        "gateway": ([{"group": "", "kind": "Service", "name": "web", "port": 80, "weight": 100}], _gateway),
        "istio": ([{"destination": {"host": "web", "subset": "stable"}, "weight": 100}], _istio),
    }
    for name, (entries, step) in lists.items():
        for plan in sequence:
            entries = step(entries, plan)
            fresh = [e for e in entries if NAME in str(e)]
            assert len(fresh) == (1 if plan.baseline else 0), (name, plan, entries)
            if name == "traefik":
                assert USER in entries  # the user's other backend, byte for byte
                assert all(e.get("passHostHeader") is False for e in entries if e != USER), entries


@settings(max_examples=100, deadline=None)
@given(st.lists(plans(), min_size=1, max_size=6))
def test_baseline_traefik_lists_the_canary_only_while_it_has_weight(sequence: list[RoutePlan]) -> None:
    entries: list[Any] = [{"kind": "Service", "name": "web", "port": 80}]
    for plan in sequence:
        entries = _traefik(entries, plan)
        assert any(e["name"] == "web-canary" for e in entries) == (plan.canary > 0), (plan, entries)
