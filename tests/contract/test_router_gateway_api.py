"""Gateway API router against the real apiserver with the schema'd HTTPRoute CRD (defaults included)."""

from __future__ import annotations

from typing import Any

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.errors import ConfigError, ConflictError, Reject
from functions.providers.routers import gateway_api, make_router
from functions.providers.routers._common import DRIFTED
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import JSON_PATCH, api_fixture, co_fixture, race_on_read, raw  # noqa: F401

pytestmark = pytest.mark.k8s
GROUP, VERSION = "gateway.networking.k8s.io", "v1"
OPTIONS = {
    "httpRoute": "shop",
    "stableService": "shop-blue",
    "canaryService": "shop-green",
    "port": 8080,
    "parentRef": "public",
    "host": "shop.example.com",
    "create": True,
}


def target(ns: str) -> RouteTarget:
    return RouteTarget(ns, "shop", "shop-blue", "shop-green", options=dict(OPTIONS))


def route(co: Any, ns: str) -> dict[str, Any]:
    return raw(co, GROUP, VERSION, "httproutes", ns, "shop")


def weights(rule: dict[str, Any]) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in rule["backendRefs"]}


def test_reconcile_creates_the_route_all_on_stable_and_never_moves_weights(
    api: Any, co: Any, ns: str
) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    router.reconcile(t)
    created = route(co, ns)
    assert created["spec"]["parentRefs"][0]["name"] == "public"
    assert created["spec"]["parentRefs"][0]["kind"] == "Gateway"  # the CRD's default was applied
    assert created["spec"]["hostnames"] == ["shop.example.com"]
    assert weights(created["spec"]["rules"][0]) == {"shop-blue": 100, "shop-green": 0}
    router.set_routes(t, RoutePlan.canary_at(20))
    before = route(co, ns)["metadata"]["resourceVersion"]
    router.reconcile(t)
    after = route(co, ns)
    assert after["metadata"]["resourceVersion"] == before
    assert weights(after["spec"]["rules"][0]) == {"shop-blue": 80, "shop-green": 20}


def test_weights_round_trip_and_reset_to_stable(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(20))
    assert router.get_routes(t) == RoutePlan.canary_at(20)
    assert route(co, ns)["spec"]["rules"][0]["backendRefs"][1] == {
        "group": "",
        "kind": "Service",
        "name": "shop-green",
        "port": 8080,
        "weight": 20,
    }
    router.set_routes(t, STABLE_ONLY)
    assert router.get_routes(t) == STABLE_ONLY
    assert weights(route(co, ns)["spec"]["rules"][0]) == {"shop-blue": 100, "shop-green": 0}


def test_ab_header_rules_round_trip(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    rules = (
        Match("header", name="location", value="shenzhen"),
        Match("header", name="x-region", regex="^cn-"),
        Match("user-hash", name="x-user-id", percent=20),
        Match("cookie", name="beta", value="1"),
    )
    plan = RoutePlan.canary_at(10, rules, salt="shop-4")
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    first = route(co, ns)["spec"]["rules"][0]
    assert [m["headers"] for m in first["matches"][:3]] == [
        [{"type": "Exact", "name": "location", "value": "shenzhen"}],
        [{"type": "RegularExpression", "name": "x-region", "value": "^cn-"}],
        [{"type": "RegularExpression", "name": "x-graylane-bucket", "value": "^([0-9]|1[0-9])$"}],
    ]
    assert weights(first) == {"shop-green": 100}
    router.set_routes(t, STABLE_ONLY)
    assert len(route(co, ns)["spec"]["rules"]) == 1


def test_a_hand_edited_header_reads_back_as_drift(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(0, (Match("header", name="location", value="shenzhen"),)))
    edit = [{"op": "replace", "path": "/spec/rules/0/matches/0/headers/0/value", "value": "beijing"}]
    co.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "shop", edit, _content_type=JSON_PATCH
    )
    assert router.get_routes(t).match == (DRIFTED,)


def test_unsupported_targeting_and_protection_are_refused(api: Any, ns: str) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    with pytest.raises(ConfigError, match="source-ip matching .* not supported by router gateway-api"):
        router.set_routes(t, RoutePlan.canary_at(0, (Match("source-ip", cidrs=("10.0.0.0/8",)),)))
    with pytest.raises(ConfigError, match="not supported by router gateway-api"):
        router.set_protection(t, Protection(RateLimit(10, 20), CircuitBreaker("NetworkErrorRatio() > 0.5")))
    router.set_protection(t, Protection())  # clearing what cannot be set is a no-op


def test_a_write_after_a_stale_read_loses_with_conflict(api: Any, co: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    router.reconcile(t)
    raced = race_on_read(monkeypatch, co, "httproutes")
    with pytest.raises(ConflictError, match="HTTPRoute .*/shop set routes: resourceVersion"):
        router.set_routes(t, RoutePlan.canary_at(20))
    live = route(co, ns)
    assert raced == ["shop"] and live["metadata"]["labels"]["rival"] == "wrote-first"
    assert weights(live["spec"]["rules"][0]) == {"shop-blue": 100, "shop-green": 0}


def test_a_wrong_field_path_is_detected(api: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("gateway-api", api), target(ns)
    router.reconcile(t)

    def misspelt(
        entries: Any, base: str, s: Any, plan: RoutePlan, kept: Any, drop: bool
    ) -> tuple[list[Any], None]:
        return [{"op": "add", "path": f"{base}/0/wieght", "value": plan.stable}], None

    monkeypatch.setattr(gateway_api, "weight_ops", misspelt)
    with pytest.raises(Reject, match="the stored spec is not what was written"):
        router.set_routes(t, RoutePlan.canary_at(20))
