"""[mirror] The routers' mirror objects on the real apiserver with the upstream CRDs (tests/k8s/upstream-crds.txt).

A release's plans in order (stable only, the mirror, a canary step, the mirror at another share, stable only,
finalize) through each router that can mirror, on the user's objects as the user_fields tests write them:
after every step everything outside the module's OWNS paths is byte for byte what the user wrote, the mirror
objects are what the schema (and, for the HTTPRoute, its CEL rules) accepted and stored, and reading the
routes back gives the plan. Istio's objects also pass `istioctl validate`. Real traffic through Traefik's
mirroring service is tests/traefik/test_traefik_mirror.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.errors import ConfigError
from functions.providers.routers import make_router, traefik
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import api_fixture, co_fixture  # noqa: F401
from tests.contract.test_user_fields import (
    GATEWAY,
    ISTIO,
    _gateway_owned,
    _httproute,
    _istio_owned,
    _seed_000,
    _seed_003,
    _traefik_owned,
    _traefik_target,
    user_part,
)
from tests.traefik import seed

pytestmark = pytest.mark.k8s
PLANS = (STABLE_ONLY, RoutePlan.mirrored(50), RoutePlan.canary_at(20), RoutePlan.mirrored(10), STABLE_ONLY)
MIRROR = f"{seed.PRO_ROUTE}{traefik.MIRROR_SUFFIX}"


def _run(router: Any, t: RouteTarget, check: Callable[[RoutePlan], None]) -> None:
    for plan in PLANS:
        router.reconcile(t)
        router.set_routes(t, plan)
        assert router.get_routes(t) == plan
        router.set_routes(t, plan)  # idempotent: nothing more to write
        check(plan)
    router.finalize(t)
    check(STABLE_ONLY)


# --- Traefik: a mirroring TraefikService, in both API groups --------------------------------------------------


def _traefik_mirror_owned(obj: dict[str, Any]) -> None:
    _traefik_owned(obj)
    if obj["kind"] == "IngressRoute":
        for route in obj["spec"]["routes"]:
            route["services"] = [s for s in route["services"] if s.get("name") != MIRROR]


@pytest.mark.parametrize("group", ["traefik.io", "traefik.containo.us"])
def test_mirror_traefik_mirroring_service_on_the_apiserver(api: Any, co: Any, ns: str, group: str) -> None:
    objects = seed.apply(api, _seed_000(group, ns))
    before = {o["metadata"]["name"]: user_part(o, _traefik_mirror_owned) for o in objects}
    router, t = make_router("traefik", api), _traefik_target(ns)

    def mirror() -> dict[str, Any] | None:
        try:
            return dict(co.get_namespaced_custom_object(group, "v1alpha1", ns, "traefikservices", MIRROR))
        except client.ApiException as err:
            assert err.status == 404
            return None

    def check(plan: RoutePlan) -> None:
        for obj in objects:
            assert user_part(seed.read(api, obj), _traefik_mirror_owned) == before[obj["metadata"]["name"]], (
                plan
            )
        live = mirror()
        if not plan.mirror:
            assert live is None, plan
            return
        assert live is not None and live["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "graylane"}
        stable = {
            "name": seed.STABLE,
            "port": seed.PORT,
            "namespace": ns,
            "passHostHeader": True,
        }  # the user's entry
        assert live["spec"] == {
            "mirroring": {**stable, "mirrors": [{**stable, "name": seed.CANARY, "percent": plan.mirror}]}
        }
        route = next(r for r in seed.read(api, objects[2])["spec"]["routes"] if r.get("priority") == 10)
        assert [(s.get("kind", "Service"), s["name"], s.get("weight")) for s in route["services"]] == [
            ("Service", seed.STABLE, 0),
            ("TraefikService", MIRROR, 100),
        ]

    _run(router, t, check)


def test_mirror_traefik_refuses_a_users_traefikservice_of_that_name(api: Any, co: Any, ns: str) -> None:
    objects = seed.apply(api, _seed_000("traefik.io", ns))
    theirs = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": MIRROR, "namespace": ns},
        "spec": {"weighted": {"services": [{"name": "audit", "port": 80}]}},
    }
    co.create_namespaced_custom_object("traefik.io", "v1alpha1", ns, "traefikservices", theirs)
    router, t = make_router("traefik", api), _traefik_target(ns)
    with pytest.raises(ConfigError, match=rf"TraefikService {ns}/{MIRROR} exists and is not graylane's"):
        router.set_routes(t, RoutePlan.mirrored(50))
    stored = co.get_namespaced_custom_object("traefik.io", "v1alpha1", ns, "traefikservices", MIRROR)
    assert stored["spec"] == theirs["spec"]  # untouched
    route = next(r for r in seed.read(api, objects[2])["spec"]["routes"] if r.get("priority") == 10)
    assert all(s.get("kind", "Service") == "Service" for s in route["services"])  # the route never named it


# --- Istio: mirror + mirrorPercentage on the managed route -----------------------------------------------------


def _istio_mirror_owned(obj: dict[str, Any]) -> None:
    _istio_owned(obj)
    for route in obj["spec"].get("http") or [] if obj["kind"] == "VirtualService" else []:
        if route.get("mirror", {}).get("subset") == "v2":
            route.pop("mirror")
            route.pop("mirrorPercentage", None)


def _istio_target(ns: str) -> RouteTarget:
    return RouteTarget(
        ns,
        "reviews",
        "reviews-v1",
        "reviews-v2",
        options={
            "virtualService": "reviews",
            "destinationRule": "reviews",
            "host": "reviews",
            "stableSubset": "v1",
            "canarySubset": "v2",
        },
    )


def test_mirror_istio_virtual_service_on_the_apiserver_and_istioctl(api: Any, co: Any, ns: str) -> None:
    from tests.k8s.istio_validate import assert_istio_valid

    objects = _seed_003(ns)
    for obj in objects:
        co.create_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", obj)

    def read(obj: dict[str, Any]) -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", "reviews"))

    before = [user_part(read(o), _istio_mirror_owned) for o in objects]

    def check(plan: RoutePlan) -> None:
        live = [read(o) for o in objects]
        assert [user_part(o, _istio_mirror_owned) for o in live] == before, plan
        assert_istio_valid(live, f"after {plan}")
        everyone = live[0]["spec"]["http"][-1]
        if plan.mirror:
            assert everyone["mirror"] == {"host": "reviews", "subset": "v2"}
            assert everyone["mirrorPercentage"] == {"value": plan.mirror}
            assert [d["destination"] for d in everyone["route"]] == [
                {"host": "reviews", "subset": "v1"}
            ]  # all on v1
            assert everyone["route"][0].get("weight", 100) == 100
        else:
            assert "mirror" not in everyone and "mirrorPercentage" not in everyone

    _run(make_router("istio", api), _istio_target(ns), check)


def test_mirror_istio_a_users_own_mirror_is_refused_by_name(api: Any, co: Any, ns: str) -> None:
    objects = _seed_003(ns)
    objects[0]["spec"]["http"][-1]["mirror"] = {"host": "audit"}
    for obj in objects:
        co.create_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", obj)
    router, t = make_router("istio", api), _istio_target(ns)
    router.set_routes(t, RoutePlan.canary_at(20))  # without a mirror stage the user's mirror is simply left
    with pytest.raises(ConfigError, match=r"already mirrors to .*audit.*the user's mirror"):
        router.set_routes(t, RoutePlan.mirrored(50))
    stored = co.get_namespaced_custom_object(*ISTIO, ns, "virtualservices", "reviews")
    assert stored["spec"]["http"][-1]["mirror"] == {"host": "audit"}


# --- Gateway API: a RequestMirror filter (standard channel, CEL rules of the pinned CRD) --------------------------


def _gateway_mirror_owned(obj: dict[str, Any]) -> None:
    _gateway_owned(obj)
    for rule in obj["spec"]["rules"]:
        filters = [f for f in rule.get("filters") or [] if f.get("type") != "RequestMirror"]
        if "filters" in rule:
            rule["filters"] = filters


def test_mirror_gateway_request_mirror_filter_on_the_apiserver(api: Any, co: Any, ns: str) -> None:
    co.create_namespaced_custom_object(*GATEWAY, ns, "httproutes", _httproute(ns))

    def read() -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*GATEWAY, ns, "httproutes", "shop"))

    before = user_part(read(), _gateway_mirror_owned)
    user_filters = copy.deepcopy(read()["spec"]["rules"][1]["filters"])

    def check(plan: RoutePlan) -> None:
        live = read()
        assert user_part(live, _gateway_mirror_owned) == before, plan
        app = live["spec"]["rules"][1]
        if plan.mirror:
            assert app["filters"] == [
                *user_filters,
                {
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {"group": "", "kind": "Service", "name": "shop-green", "port": 8080},
                        "percent": plan.mirror,
                    },
                },
            ]
        else:
            assert app["filters"] == user_filters

    _run(
        make_router("gateway-api", api),
        RouteTarget(ns, "shop", "shop-blue", "shop-green", options={"httpRoute": "shop", "port": 8080}),
        check,
    )


@pytest.mark.parametrize(
    ("mirror", "refusal"),
    [
        ({"percent": 10, "fraction": {"numerator": 1}}, "Only one of percent or fraction"),
        ({"percent": 101}, "should be less than or equal to 100"),
    ],
)
def test_mirror_gateway_the_apiserver_enforces_the_filters_rules(
    co: Any, ns: str, mirror: dict[str, Any], refusal: str
) -> None:
    """The pinned CRD's schema and CEL rules are live on this apiserver: what graylane writes passes them."""
    route = _httproute(ns)
    ref = {"group": "", "kind": "Service", "name": "shop-green", "port": 8080}
    route["spec"]["rules"][1]["filters"].append(
        {"type": "RequestMirror", "requestMirror": {"backendRef": ref, **mirror}}
    )
    with pytest.raises(client.ApiException) as refused:
        co.create_namespaced_custom_object(*GATEWAY, ns, "httproutes", route)
    assert refused.value.status == 422 and refusal in str(refused.value.body), refused.value.body
