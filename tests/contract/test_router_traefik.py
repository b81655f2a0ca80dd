"""Traefik router against the real apiserver with Traefik's schema'd CRDs, for both API groups."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.errors import ConfigError, ConflictError, Reject
from functions.providers.routers import make_router, traefik
from functions.providers.routers._common import DRIFTED, PLAN_ANNOTATION
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import JSON_PATCH, api_fixture, co_fixture, race_on_read, raw  # noqa: F401

pytestmark = pytest.mark.k8s
VERSION = "v1alpha1"
SHENZHEN = Match("header", name="location", value="shenzhen")


@pytest.fixture(params=["traefik.io", "traefik.containo.us"])
def group(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def target(ns: str, group: str, **extra: Any) -> RouteTarget:
    options = {
        "ingressRoute": "k8s-flask-pro",
        "host": "pro.coding",
        "entryPoints": ["web"],
        "stableService": "k8s-flask",
        "canaryService": "k8s-flask-canary",
        "port": 8080,
        "group": group,
        "create": True,
    }  # these tests start with no IngressRoute: graylane makes it
    return RouteTarget(ns, "flask", "k8s-flask", "k8s-flask-canary", options={**options, **extra})


def ingress_route(co: client.CustomObjectsApi, ns: str, group: str) -> dict[str, Any]:
    return raw(co, group, VERSION, "ingressroutes", ns, "k8s-flask-pro")


def weights(route: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["weight"] for s in route["services"]}


def test_reconcile_creates_the_route_all_on_stable_and_never_moves_weights(
    api: Any, co: Any, ns: str, group: str
) -> None:
    router, t = make_router("traefik", api), target(ns, group)
    router.reconcile(t)
    created = ingress_route(co, ns, group)
    assert created["spec"]["entryPoints"] == ["web"]
    assert [r["match"] for r in created["spec"]["routes"]] == ["Host(`pro.coding`)"]
    assert weights(created["spec"]["routes"][0]) == {"k8s-flask": 100}
    assert created["spec"]["routes"][0]["services"][0]["port"] == 8080
    router.set_routes(t, RoutePlan.canary_at(20))
    moved = ingress_route(co, ns, group)
    router.reconcile(t)
    again = ingress_route(co, ns, group)
    assert again["metadata"]["resourceVersion"] == moved["metadata"]["resourceVersion"]
    assert weights(again["spec"]["routes"][0]) == {"k8s-flask": 80, "k8s-flask-canary": 20}


def test_a_missing_ingressroute_is_refused_not_created(api: Any, co: Any, ns: str, group: str) -> None:
    """Without `create: true` graylane drives the user's IngressRoute and never makes one of its own: a name
    that does not exist is a ConfigError naming it, for every call that writes routes or protection."""
    router, t = make_router("traefik", api), target(ns, group, create=False)
    for call in (
        lambda: router.set_routes(t, RoutePlan.canary_at(20)),
        lambda: router.reconcile(t),
        lambda: router.set_protection(t, Protection(RateLimit(500, 1000), None)),
    ):
        with pytest.raises(
            ConfigError,
            match=rf"IngressRoute {ns}/k8s-flask-pro \(group {group}\) does not exist"
            ".*unless router option create is true",
        ):
            call()
    listed = co.list_namespaced_custom_object(group, VERSION, ns, "ingressroutes")["items"]
    assert listed == []
    without_option = target(ns, group)
    del without_option.options["create"]  # the default
    with pytest.raises(ConfigError, match="does not exist"):
        router.set_routes(without_option, RoutePlan.canary_at(20))


def test_a_route_in_the_other_group_is_named_in_the_refusal(api: Any, co: Any, ns: str) -> None:
    """Seed 000's case: the user's IngressRoute is traefik.containo.us, the policy left the group at
    traefik.io: the error says which group holds it."""
    make_router("traefik", api).reconcile(target(ns, "traefik.containo.us"))  # the user's, say
    router, t = make_router("traefik", api), target(ns, "traefik.io", create=False)
    with pytest.raises(
        ConfigError,
        match=f"{ns}/k8s-flask-pro exists in group traefik.containo.us: set router "
        "option group: traefik.containo.us",
    ):
        router.set_routes(t, RoutePlan.canary_at(20))
    assert co.list_namespaced_custom_object("traefik.io", VERSION, ns, "ingressroutes")["items"] == []


def test_an_existing_ingressroute_is_driven_without_create(api: Any, co: Any, ns: str, group: str) -> None:
    make_router("traefik", api).reconcile(target(ns, group))  # the user's IngressRoute exists
    uid = ingress_route(co, ns, group)["metadata"]["uid"]
    router, t = make_router("traefik", api), target(ns, group, create=False)
    router.set_routes(t, RoutePlan.canary_at(20))
    assert router.get_routes(t) == RoutePlan.canary_at(20)
    assert ingress_route(co, ns, group)["metadata"]["uid"] == uid


def test_router_option_create_must_be_a_bool(api: Any, ns: str) -> None:
    with pytest.raises(ConfigError, match="router option create is 'yes'; expected a non-empty bool"):
        make_router("traefik", api).set_routes(
            target(ns, "traefik.io", create="yes"), RoutePlan.canary_at(20)
        )


def test_weights_round_trip_and_reset_to_stable(api: Any, co: Any, ns: str, group: str) -> None:
    router, t = make_router("traefik", api), target(ns, group)
    plan = RoutePlan.canary_at(20)
    router.set_routes(t, plan)  # creates what is missing first
    assert router.get_routes(t) == plan
    live = ingress_route(co, ns, group)
    assert weights(live["spec"]["routes"][0]) == {"k8s-flask": 80, "k8s-flask-canary": 20}
    router.set_routes(t, STABLE_ONLY)
    assert router.get_routes(t) == STABLE_ONLY
    assert weights(ingress_route(co, ns, group)["spec"]["routes"][0]) == {"k8s-flask": 100}


def test_ab_header_rule_round_trips_in_the_groups_rule_syntax(api: Any, co: Any, ns: str, group: str) -> None:
    router, t = make_router("traefik", api), target(ns, group)
    plan = RoutePlan.canary_at(0, (SHENZHEN,))
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    routes = ingress_route(co, ns, group)["spec"]["routes"]
    func = "Header" if group == "traefik.io" else "Headers"  # Traefik v3 renamed the v2 matcher
    assert routes[0]["match"] == f"Host(`pro.coding`) && ({func}(`location`, `shenzhen`))"
    assert [(s["name"], s["weight"]) for s in routes[0]["services"]] == [
        ("k8s-flask-canary", 100),
        ("k8s-flask", 0),
    ]
    assert weights(routes[1]) == {"k8s-flask": 100}
    router.set_routes(t, STABLE_ONLY)
    assert [r["match"] for r in ingress_route(co, ns, group)["spec"]["routes"]] == ["Host(`pro.coding`)"]


def test_targeting_rules_round_trip(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.io")
    rules = (
        Match("user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
        Match("user-hash", name="x-user-id", percent=20),
        Match("cookie", name="canary", value="always"),
        Match("source-ip", cidrs=("10.0.0.0/8", "192.168.0.0/16")),
    )
    plan = RoutePlan.canary_at(10, rules, salt="flask-7")
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    rule = ingress_route(co, ns, "traefik.io")["spec"]["routes"][0]["match"]
    assert "HeaderRegexp(`x-user-id`, `^.*[13579]$`)" in rule
    assert "HeaderRegexp(`x-graylane-bucket`, `^([0-9]|1[0-9])$`)" in rule
    assert "(ClientIP(`10.0.0.0/8`) || ClientIP(`192.168.0.0/16`))" in rule


def test_source_ip_is_refused_on_the_legacy_group(api: Any, ns: str) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.containo.us")
    with pytest.raises(ConfigError, match="source-ip matching .* not supported by router traefik with group"):
        router.set_routes(t, RoutePlan.canary_at(0, (Match("source-ip", cidrs=("10.0.0.0/8",)),)))


def test_weights_through_a_traefik_service(api: Any, co: Any, ns: str, group: str) -> None:
    router, t = make_router("traefik", api), target(ns, group, traefikService="flask-wrr")
    router.set_routes(t, RoutePlan.canary_at(30, (SHENZHEN,)))
    assert router.get_routes(t) == RoutePlan.canary_at(30, (SHENZHEN,))
    wrr = raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")
    assert {s["name"]: s["weight"] for s in wrr["spec"]["weighted"]["services"]} == {
        "k8s-flask": 70,
        "k8s-flask-canary": 30,
    }
    default = ingress_route(co, ns, group)["spec"]["routes"][-1]
    assert default["services"] == [{"kind": "TraefikService", "name": "flask-wrr"}]
    only_wrr = target(ns, group, traefikService="flask-wrr")
    del only_wrr.options["ingressRoute"]
    router.set_routes(only_wrr, RoutePlan.canary_at(50))
    assert router.get_routes(only_wrr) == RoutePlan.canary_at(50)


def test_a_hand_edited_rule_reads_back_as_drift(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.io")
    router.set_routes(t, RoutePlan.canary_at(0, (SHENZHEN,)))
    edit = [
        {"op": "replace", "path": "/spec/routes/0/match", "value": "Host(`pro.coding`) && Header(`a`, `b`)"}
    ]
    co.patch_namespaced_custom_object(
        "traefik.io", VERSION, ns, "ingressroutes", "k8s-flask-pro", edit, _content_type=JSON_PATCH
    )
    assert router.get_routes(t).match == (DRIFTED,)


def test_protection_set_and_clear(api: Any, co: Any, ns: str, group: str) -> None:
    router, t = make_router("traefik", api), target(ns, group)
    router.set_routes(t, RoutePlan.canary_at(0, (SHENZHEN,)))
    full = Protection(RateLimit(500, 1000, 1.0), CircuitBreaker("LatencyAtQuantileMS(50.0) > 100"))
    router.set_protection(t, full)
    limit = raw(co, group, VERSION, "middlewares", ns, "k8s-flask-pro-rate-limit")
    assert limit["spec"] == {"rateLimit": {"average": 500, "burst": 1000, "period": "1s"}}
    breaker = raw(co, group, VERSION, "middlewares", ns, "k8s-flask-pro-circuit-breaker")
    assert breaker["spec"] == {"circuitBreaker": {"expression": "LatencyAtQuantileMS(50.0) > 100"}}
    names = [[m["name"] for m in r["middlewares"]] for r in ingress_route(co, ns, group)["spec"]["routes"]]
    assert names == [["k8s-flask-pro-rate-limit", "k8s-flask-pro-circuit-breaker"]] * 2
    router.set_routes(t, RoutePlan.canary_at(20))  # moving traffic keeps the protection attached
    assert [m["name"] for m in ingress_route(co, ns, group)["spec"]["routes"][0]["middlewares"]] == names[0]
    router.set_protection(t, Protection(RateLimit(250, 500, 0.5), None))
    assert raw(co, group, VERSION, "middlewares", ns, "k8s-flask-pro-rate-limit")["spec"]["rateLimit"] == {
        "average": 250,
        "burst": 500,
        "period": "500ms",
    }
    with pytest.raises(client.ApiException) as gone:
        raw(co, group, VERSION, "middlewares", ns, "k8s-flask-pro-circuit-breaker")
    assert gone.value.status == 404
    router.set_protection(t, Protection())
    assert all("middlewares" not in r for r in ingress_route(co, ns, group)["spec"]["routes"])
    assert router.get_routes(t) == RoutePlan.canary_at(20)


def test_a_write_after_a_stale_read_loses_with_conflict(api: Any, co: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.io")
    router.reconcile(t)
    raced = race_on_read(monkeypatch, co, "ingressroutes")
    with pytest.raises(ConflictError, match="IngressRoute .*/k8s-flask-pro set routes: resourceVersion"):
        router.set_routes(t, RoutePlan.canary_at(20))
    live = ingress_route(co, ns, "traefik.io")
    assert raced == ["k8s-flask-pro"] and live["metadata"]["labels"]["rival"] == "wrote-first"
    assert weights(live["spec"]["routes"][0]) == {"k8s-flask": 100}


def test_a_wrong_field_path_is_detected(api: Any, co: Any, ns: str, monkeypatch: Any) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.io")
    router.reconcile(t)

    def misspelt(entries: Any, base: str, s: Any, plan: RoutePlan, kept: Any) -> tuple[list[Any], None]:
        return [{"op": "add", "path": f"{base}/0/wieght", "value": plan.stable}], None

    monkeypatch.setattr(traefik, "weight_ops", misspelt)
    with pytest.raises(Reject, match="the stored spec is not what was written"):
        router.set_routes(t, RoutePlan.canary_at(20))


def test_the_plan_annotation_is_what_was_asked(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.io")
    router.set_routes(t, RoutePlan.canary_at(40, (SHENZHEN,)))
    note = ingress_route(co, ns, "traefik.io")["metadata"]["annotations"][PLAN_ANNOTATION]
    assert '"canary":40' in note and '"value":"shenzhen"' in note


def test_v2_rule_syntax_on_the_traefik_io_group_is_declared_per_route(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("traefik", api), target(ns, "traefik.io", ruleSyntax="v2")
    plan = RoutePlan.canary_at(0, (SHENZHEN, Match("source-ip", cidrs=("10.0.0.0/8", "172.16.0.0/12"))))
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    first = ingress_route(co, ns, "traefik.io")["spec"]["routes"][0]
    assert first["syntax"] == "v2"
    assert first["match"] == (
        "Host(`pro.coding`) && (Headers(`location`, `shenzhen`) || ClientIP(`10.0.0.0/8`, `172.16.0.0/12`))"
    )
