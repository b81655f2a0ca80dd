"""NGINX Ingress router against the real apiserver (networking.k8s.io/v1 Ingress is built in)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.errors import ConfigError, ConflictError, Reject
from functions.providers.routers import make_router, nginx
from functions.providers.routers._common import DRIFTED
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import JSON_PATCH, api_fixture, co_fixture, race_on_read, raw  # noqa: F401

pytestmark = pytest.mark.k8s
A = "nginx.ingress.kubernetes.io/"
OPTIONS = {
    "stableIngress": "canary-demo",
    "stableService": "canary-demo",
    "canaryService": "canary-demo-canary",
    "host": "progressive.auto",
    "create": True,
}


def target(ns: str) -> RouteTarget:
    return RouteTarget(ns, "canary-demo", "canary-demo", "canary-demo-canary", options=dict(OPTIONS))


def ingress(co: Any, ns: str, name: str = "canary-demo-canary") -> dict[str, Any]:
    return raw(co, "networking.k8s.io", "v1", "ingresses", ns, name)


def notes(co: Any, ns: str, name: str = "canary-demo-canary") -> dict[str, str]:
    return {
        k.removeprefix(A): v
        for k, v in ingress(co, ns, name)["metadata"].get("annotations", {}).items()
        if k.startswith(A)
    }


def test_reconcile_creates_both_ingresses_and_never_moves_weights(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.reconcile(t)
    stable, canary = ingress(co, ns, "canary-demo"), ingress(co, ns)
    assert stable["spec"]["rules"][0]["host"] == "progressive.auto"
    assert stable["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "canary-demo"
    assert canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "canary-demo-canary",
        "port": {"number": 80},
    }
    assert notes(co, ns) == {"canary": "true", "canary-weight": "0"}
    router.set_routes(t, RoutePlan.canary_at(20))
    before = ingress(co, ns)["metadata"]["resourceVersion"]
    router.reconcile(t)
    assert ingress(co, ns)["metadata"]["resourceVersion"] == before
    assert notes(co, ns)["canary-weight"] == "20"


def test_weights_round_trip_and_reset_to_stable(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(20))
    assert router.get_routes(t) == RoutePlan.canary_at(20)
    router.set_routes(t, STABLE_ONLY)
    assert router.get_routes(t) == STABLE_ONLY
    assert notes(co, ns) == {"canary": "true", "canary-weight": "0"}


def test_ab_header_and_cookie_rules_round_trip(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    plan = RoutePlan.canary_at(
        0,
        (Match("header", name="location", value="shenzhen"), Match("cookie", name="canary", value="always")),
    )
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    assert notes(co, ns) == {
        "canary": "true",
        "canary-weight": "0",
        "canary-by-header": "location",
        "canary-by-header-value": "shenzhen",
        "canary-by-cookie": "canary",
    }
    digits = RoutePlan.canary_at(0, (Match("user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),))
    router.set_routes(t, digits)
    assert router.get_routes(t) == digits
    assert notes(co, ns) == {
        "canary": "true",
        "canary-weight": "0",
        "canary-by-header": "x-user-id",
        "canary-by-header-pattern": "^.*[13579]$",
    }
    router.set_routes(t, STABLE_ONLY)
    assert notes(co, ns) == {"canary": "true", "canary-weight": "0"}


def test_what_one_canary_ingress_cannot_carry_is_refused(api: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    two = (Match("header", name="a", value="1"), Match("header", name="b", value="2"))
    with pytest.raises(ConfigError, match="at most one header rule"):
        router.set_routes(t, RoutePlan.canary_at(0, two))
    with pytest.raises(ConfigError, match="cookie rules need value 'always'"):
        router.set_routes(t, RoutePlan.canary_at(0, (Match("cookie", name="beta", value="yes"),)))
    with pytest.raises(ConfigError, match="source-ip matching .* not supported by router nginx"):
        router.set_routes(t, RoutePlan.canary_at(0, (Match("source-ip", cidrs=("10.0.0.0/8",)),)))


def test_a_hand_edited_rule_reads_back_as_drift(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(0, (Match("header", name="location", value="shenzhen"),)))
    edit = [
        {
            "op": "replace",
            "path": "/metadata/annotations/" + (A + "canary-by-header-value").replace("/", "~1"),
            "value": "beijing",
        }
    ]
    co.patch_namespaced_custom_object(
        "networking.k8s.io", "v1", ns, "ingresses", "canary-demo-canary", edit, _content_type=JSON_PATCH
    )
    assert router.get_routes(t).match == (DRIFTED,)


def test_rate_limit_set_and_clear_circuit_breaker_refused(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.set_protection(t, Protection(RateLimit(500, 1000, 1.0), None))
    assert notes(co, ns, "canary-demo") == {"limit-rps": "500", "limit-burst-multiplier": "2"}
    router.set_protection(t, Protection(RateLimit(600, 600, 60.0), None))
    assert notes(co, ns, "canary-demo") == {"limit-rpm": "600", "limit-burst-multiplier": "1"}
    router.set_protection(t, Protection())
    assert notes(co, ns, "canary-demo") == {}
    with pytest.raises(ConfigError, match="circuit breaking is not supported by router nginx"):
        router.set_protection(t, Protection(None, CircuitBreaker("NetworkErrorRatio() > 0.5")))
    with pytest.raises(ConfigError, match="per second .* or per minute"):
        router.set_protection(t, Protection(RateLimit(5, 5, 10.0), None))


def test_finalize_returns_traffic_and_removes_the_canary_ingress(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(50))
    router.finalize(t)
    with pytest.raises(client.ApiException) as gone:
        ingress(co, ns)
    assert gone.value.status == 404
    assert ingress(co, ns, "canary-demo")["spec"]["rules"][0]["host"] == "progressive.auto"


def test_a_write_after_a_stale_read_loses_with_conflict(api: Any, co: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.reconcile(t)
    raced = race_on_read(monkeypatch, co, "ingresses", "canary-demo-canary")
    with pytest.raises(ConflictError, match="Ingress .*/canary-demo.* resourceVersion"):
        router.set_routes(t, RoutePlan.canary_at(20))
    assert raced == ["canary-demo-canary"] and notes(co, ns)["canary-weight"] == "0"


def test_a_wrong_field_path_is_refused(api: Any, co: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("nginx", api), target(ns)
    router.reconcile(t)
    before = ingress(co, ns)["metadata"]["resourceVersion"]

    def misspelt(obj: Any, wanted: Any) -> list[dict[str, Any]]:
        return [
            {"op": "add", "path": "/metadata/annotation/" + k.replace("/", "~1"), "value": v}
            for k, v in wanted.items()
            if v is not None
        ]

    monkeypatch.setattr(nginx, "annotation_ops", misspelt)
    with pytest.raises(Reject, match="Ingress .*/canary-demo-canary set routes: 422"):
        router.set_routes(t, RoutePlan.canary_at(20))
    assert ingress(co, ns)["metadata"]["resourceVersion"] == before
