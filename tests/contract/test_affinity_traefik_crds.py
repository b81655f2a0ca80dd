"""Session affinity's writes on the real apiserver with Traefik's schema'd CRDs, both API groups (`-k affinity`):
graylane's sticky on the weighted TraefikService is stored as written, renamed with the weight, removed at 0,
a user's own sticky and other fields stay byte for byte, and a maxAge the legacy group's schema prunes fails
loudly rather than silently dropping the cookie's lifetime."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import SessionAffinity
from functions.errors import ConfigError, Reject
from functions.providers.routers import make_router, traefik
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import api_fixture, co_fixture, raw  # noqa: F401

pytestmark = pytest.mark.k8s
VERSION = "v1alpha1"


@pytest.fixture(params=["traefik.io", "traefik.containo.us"])
def group(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def target(ns: str, group: str, affinity: SessionAffinity | None) -> RouteTarget:
    options = {
        "traefikService": "flask-wrr",
        "stableService": "k8s-flask",
        "canaryService": "k8s-flask-canary",
        "port": 8080,
        "group": group,
    }
    return RouteTarget(ns, "flask", "k8s-flask", "k8s-flask-canary", options=options, affinity=affinity)


def users_wrr(co: Any, ns: str, group: str, sticky: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "weighted": {
            "services": [{"name": "k8s-flask", "port": 8080, "weight": 100, "passHostHeader": False}]
        }
    }
    if sticky is not None:
        spec["weighted"]["sticky"] = sticky
    body = {
        "apiVersion": f"{group}/{VERSION}",
        "kind": "TraefikService",
        "metadata": {
            "name": "flask-wrr",
            "namespace": ns,
            "labels": {"team": "shop"},
            "annotations": {"note": "the user's"},
        },
        "spec": spec,
    }
    co.create_namespaced_custom_object(group, VERSION, ns, "traefikservices", body)
    return raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")


def test_affinity_sticky_on_the_users_traefikservice_per_weight_and_gone_at_zero(
    api: Any, co: Any, ns: str, group: str
) -> None:
    before = users_wrr(co, ns, group)
    router = make_router("traefik", api)
    t = target(ns, group, SessionAffinity("shop-sticky", None))
    router.set_routes(t, RoutePlan.canary_at(20))
    at20 = raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")
    assert at20["spec"]["weighted"]["sticky"] == {"cookie": {"name": "shop-sticky-20", "httpOnly": True}}
    assert at20["spec"]["weighted"]["services"][0]["passHostHeader"] is False
    router.set_routes(t, RoutePlan.canary_at(20))  # idempotent: nothing written
    assert (
        raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")["metadata"]["resourceVersion"]
        == (at20["metadata"]["resourceVersion"])
    )
    router.set_routes(t, RoutePlan.canary_at(40))
    cookie = raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")["spec"]["weighted"]["sticky"][
        "cookie"
    ]
    assert cookie["name"] == "shop-sticky-40"
    router.set_routes(t, STABLE_ONLY)
    after = raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")
    assert after["spec"] == before["spec"]  # the user's TraefikService as it was (weight 100 on the stable)
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert {
        k: v for k, v in after["metadata"]["annotations"].items() if not k.startswith("graylane.dev/")
    } == (before["metadata"]["annotations"])
    assert traefik.STICKY not in after["metadata"]["annotations"]


def test_affinity_max_age_is_stored_on_traefik_io_and_a_pruned_one_fails_loudly(
    api: Any, co: Any, ns: str, group: str
) -> None:
    users_wrr(co, ns, group)
    router = make_router("traefik", api)
    t = target(ns, group, SessionAffinity("shop-sticky", 3600))
    if group == "traefik.io":
        router.set_routes(t, RoutePlan.canary_at(20))
        stored = raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")["spec"]["weighted"]["sticky"]
        assert stored["cookie"]["maxAge"] == 3600
        return
    # Traefik v2.11's CRD has no maxAge (graylane validate refuses it there): the apiserver prunes it
    with pytest.raises(Reject, match="the stored spec is not what was written .*pruned"):
        router.set_routes(t, RoutePlan.canary_at(20))


def test_affinity_a_users_own_sticky_is_kept_when_off_and_refused_when_on(
    api: Any, co: Any, ns: str, group: str
) -> None:
    theirs = {"cookie": {"name": "their-cookie", "secure": True}}
    before = users_wrr(co, ns, group, copy.deepcopy(theirs))
    router = make_router("traefik", api)
    router.set_routes(target(ns, group, None), RoutePlan.canary_at(20))
    assert raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")["spec"]["weighted"]["sticky"] == theirs
    router.set_routes(target(ns, group, None), STABLE_ONLY)
    with pytest.raises(ConfigError, match="spec.weighted.sticky .* is the user's"):
        router.set_routes(target(ns, group, SessionAffinity()), RoutePlan.canary_at(20))
    after = raw(co, group, VERSION, "traefikservices", ns, "flask-wrr")
    assert after["spec"] == before["spec"]
