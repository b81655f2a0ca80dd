"""Istio router against the real apiserver with Istio's schema'd VirtualService and DestinationRule CRDs."""

from __future__ import annotations

from typing import Any

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.errors import ConfigError, ConflictError, Reject
from functions.providers.routers import istio, make_router
from functions.providers.routers._common import DRIFTED
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import JSON_PATCH, api_fixture, co_fixture, race_on_read, raw  # noqa: F401

pytestmark = pytest.mark.k8s
GROUP, VERSION = "networking.istio.io", "v1"
OPTIONS = {"virtualService": "reviews", "destinationRule": "reviews", "host": "reviews",
           "stableSubset": "v1", "canarySubset": "v2", "stableLabels": {"version": "v1"},
           "canaryLabels": {"version": "v2"}}


def target(ns: str, **extra: Any) -> RouteTarget:
    return RouteTarget(ns, "reviews", "reviews-v1", "reviews-v2", options={**OPTIONS, **extra})


def vs(co: Any, ns: str) -> dict[str, Any]:
    return raw(co, GROUP, VERSION, "virtualservices", ns, "reviews")


def dr(co: Any, ns: str) -> dict[str, Any]:
    return raw(co, GROUP, VERSION, "destinationrules", ns, "reviews")


def weights(http_route: dict[str, Any]) -> dict[str, int]:
    return {d["destination"]["subset"]: d["weight"] for d in http_route["route"]}


def test_reconcile_creates_subsets_and_routes_all_on_stable_and_never_moves_weights(api: Any, co: Any,
                                                                                     ns: str) -> None:
    router, t = make_router("istio", api), target(ns)
    router.reconcile(t)
    assert dr(co, ns)["spec"] == {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                                  {"name": "v2", "labels": {"version": "v2"}}]}
    created = vs(co, ns)
    assert created["spec"]["hosts"] == ["reviews"]
    assert weights(created["spec"]["http"][-1]) == {"v1": 100, "v2": 0}
    router.set_routes(t, RoutePlan.canary_at(20))
    before = vs(co, ns)["metadata"]["resourceVersion"]
    router.reconcile(t)
    after = vs(co, ns)
    assert after["metadata"]["resourceVersion"] == before
    assert weights(after["spec"]["http"][-1]) == {"v1": 80, "v2": 20}


def test_weights_round_trip_and_reset_to_stable(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("istio", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(20))
    assert router.get_routes(t) == RoutePlan.canary_at(20)
    assert weights(vs(co, ns)["spec"]["http"][0]) == {"v1": 80, "v2": 20}
    router.set_routes(t, STABLE_ONLY)
    assert router.get_routes(t) == STABLE_ONLY
    assert weights(vs(co, ns)["spec"]["http"][0]) == {"v1": 100, "v2": 0}


def test_ab_header_rules_exact_and_regex_round_trip(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("istio", api), target(ns)
    rules = (Match("header", name="end-user", value="jason"), Match("header", name="X-Region", regex="^cn-.*$"),
             Match("cookie", name="canary", value="always"),
             Match("user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
             Match("user-hash", name="x-user-id", percent=20))
    plan = RoutePlan.canary_at(0, rules, salt="reviews-3")
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    first = vs(co, ns)["spec"]["http"][0]
    assert first["match"][:2] == [{"headers": {"end-user": {"exact": "jason"}}},
                                  {"headers": {"x-region": {"regex": "^cn-.*$"}}}]
    assert first["match"][3:] == [{"headers": {"x-user-id": {"regex": "^.*[13579]$"}}},
                                  {"headers": {"x-graylane-bucket": {"regex": "^([0-9]|1[0-9])$"}}}]
    assert weights(first) == {"v2": 100}
    router.set_routes(t, STABLE_ONLY)
    assert [r["name"] for r in vs(co, ns)["spec"]["http"]] == ["graylane-primary"]


def test_source_ip_is_refused(api: Any, ns: str) -> None:
    with pytest.raises(ConfigError, match="source-ip matching .* not supported by router istio"):
        make_router("istio", api).set_routes(target(ns), RoutePlan.canary_at(0, (Match("source-ip", cidrs=("10.0.0.0/8",)),)))


def test_a_hand_edited_weight_reads_back_as_such(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("istio", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(0, (Match("header", name="end-user", value="jason"),)))
    edit = [{"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 50},
            {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 50}]
    co.patch_namespaced_custom_object(GROUP, VERSION, ns, "virtualservices", "reviews", edit, _content_type=JSON_PATCH)
    live = router.get_routes(t)
    assert (live.stable, live.canary) == (50, 50)
    edit = [{"op": "replace", "path": "/spec/http/0/match/0/headers/end-user/exact", "value": "bob"}]
    co.patch_namespaced_custom_object(GROUP, VERSION, ns, "virtualservices", "reviews", edit, _content_type=JSON_PATCH)
    assert router.get_routes(t).match == (DRIFTED,)


def test_circuit_breaker_set_and_clear_rate_limit_refused(api: Any, co: Any, ns: str) -> None:
    pool = {"http": {"http1MaxPendingRequests": 100}}
    router, t = make_router("istio", api), target(ns, connectionPool=pool)
    router.set_protection(t, Protection(None, CircuitBreaker("NetworkErrorRatio() > 0.30")))
    policy = dr(co, ns)["spec"]["trafficPolicy"]
    assert policy["outlierDetection"] == {"consecutiveGatewayErrors": 5, "interval": "10s",
                                          "baseEjectionTime": "30s", "maxEjectionPercent": 100}
    assert policy["connectionPool"] == pool
    router.set_protection(t, Protection(None, CircuitBreaker("ResponseCodeRatio(500, 600, 0, 600) > 0.25")))
    assert dr(co, ns)["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 5
    router.set_protection(t, Protection())
    assert "trafficPolicy" not in dr(co, ns)["spec"]
    with pytest.raises(ConfigError, match="rate limiting is not supported by router istio"):
        router.set_protection(t, Protection(RateLimit(100, 200), None))
    with pytest.raises(ConfigError, match="no Istio outlier-detection equivalent"):
        router.set_protection(t, Protection(None, CircuitBreaker("LatencyAtQuantileMS(50.0) > 100")))


def test_a_write_after_a_stale_read_loses_with_conflict(api: Any, co: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("istio", api), target(ns)
    router.reconcile(t)
    raced = race_on_read(monkeypatch, co, "virtualservices")
    with pytest.raises(ConflictError, match="VirtualService .*/reviews set routes: resourceVersion"):
        router.set_routes(t, RoutePlan.canary_at(20))
    live = vs(co, ns)
    assert raced == ["reviews"] and live["metadata"]["labels"]["rival"] == "wrote-first"
    assert weights(live["spec"]["http"][0]) == {"v1": 100, "v2": 0}


def test_a_wrong_field_path_is_detected(api: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("istio", api), target(ns)
    router.reconcile(t)

    def misspelt(s: Any, subset: str, weight: int) -> dict[str, Any]:
        return {"destination": {"host": s.host, "subset": subset}, "wieght": weight}

    monkeypatch.setattr(istio, "_destination", misspelt)
    with pytest.raises(Reject, match="/spec/http did not keep the value written"):
        router.set_routes(t, RoutePlan.canary_at(20))
