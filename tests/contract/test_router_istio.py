"""Istio router against the real apiserver with Istio's schema'd VirtualService and DestinationRule CRDs.

No Envoy runs here: every VirtualService and DestinationRule the router writes is read back from the
apiserver right after the write and passed through Istio's own validation (`istioctl validate`,
tests/k8s/istio_validate.py) by the autouse fixture `istio_checked`, and so is what is left at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.errors import ConfigError, ConflictError, Reject
from functions.providers.routers import istio, make_router
from functions.providers.routers._common import DRIFTED, Objects
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import JSON_PATCH, api_fixture, co_fixture, race_on_read, raw  # noqa: F401
from tests.k8s.istio_validate import assert_istio_valid, istio_validate

pytestmark = pytest.mark.k8s
GROUP, VERSION = "networking.istio.io", "v1"
OPTIONS = {
    "virtualService": "reviews",
    "destinationRule": "reviews",
    "host": "reviews",
    "stableSubset": "v1",
    "canarySubset": "v2",
    "stableLabels": {"version": "v1"},
    "canaryLabels": {"version": "v2"},
    "create": True,
}


def target(ns: str, **extra: Any) -> RouteTarget:
    return RouteTarget(ns, "reviews", "reviews-v1", "reviews-v2", options={**OPTIONS, **extra})


def vs(co: Any, ns: str) -> dict[str, Any]:
    return raw(co, GROUP, VERSION, "virtualservices", ns, "reviews")


def dr(co: Any, ns: str) -> dict[str, Any]:
    return raw(co, GROUP, VERSION, "destinationrules", ns, "reviews")


def weights(http_route: dict[str, Any]) -> dict[str, int]:
    return {d["destination"]["subset"]: d["weight"] for d in http_route["route"]}


class IstioChecked:
    """Every successful write of an Istio object, read back and validated by istioctl (see the fixture)."""

    def __init__(self, co: Any) -> None:
        self.co, self.on, self.refused = co, True, False
        self.seen: list[tuple[str, str, str]] = []  # (kind, name, verb) of each validated write

    def written(self, kind: Any, namespace: str, name: str, verb: str) -> None:
        if self.on and kind.group == GROUP:
            stored = raw(self.co, kind.group, kind.version, kind.plural, namespace, name)
            try:
                assert_istio_valid([stored], f"as stored after {verb}")
            except AssertionError:
                self.refused = True  # reported once, here: the end-of-test check would repeat it
                raise
            self.seen.append((kind.kind, name, verb))


@pytest.fixture(autouse=True)
def istio_checked(co: Any, ns: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[IstioChecked]:
    """istioctl validates each object the router creates or patches, as the apiserver stored it, and at
    the end of the test what is left (a test that stores an invalid object on purpose sets `.on = False`)."""
    checks = IstioChecked(co)
    create, patch = Objects.create, Objects.patch

    def checked_create(self: Objects, namespace: str, name: str, *args: Any, **kwargs: Any) -> Any:
        created = create(self, namespace, name, *args, **kwargs)
        checks.written(self.kind, namespace, name, "create")
        return created

    def checked_patch(self: Objects, obj: Any, ops: Any, verb: str) -> Any:
        result = patch(self, obj, ops, verb)
        checks.written(self.kind, obj["metadata"]["namespace"], obj["metadata"]["name"], verb)
        return result

    monkeypatch.setattr(Objects, "create", checked_create)
    monkeypatch.setattr(Objects, "patch", checked_patch)
    yield checks
    if checks.on and not checks.refused:
        left = [
            o
            for plural in ("virtualservices", "destinationrules")
            for o in co.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]
        ]
        if left:
            assert_istio_valid(left, "left at the end of the test")


def test_reconcile_creates_subsets_and_routes_all_on_stable_and_never_moves_weights(
    api: Any, co: Any, ns: str
) -> None:
    router, t = make_router("istio", api), target(ns)
    router.reconcile(t)
    assert dr(co, ns)["spec"] == {
        "host": "reviews",
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    }
    created = vs(co, ns)
    assert created["spec"]["hosts"] == ["reviews"]
    assert weights(created["spec"]["http"][-1]) == {"v1": 100}
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
    assert weights(vs(co, ns)["spec"]["http"][0]) == {"v1": 100}


def test_ab_header_rules_exact_and_regex_round_trip(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("istio", api), target(ns)
    rules = (
        Match("header", name="end-user", value="jason"),
        Match("header", name="X-Region", regex="^cn-.*$"),
        Match("cookie", name="canary", value="always"),
        Match("user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
        Match("user-hash", name="x-user-id", percent=20),
    )
    plan = RoutePlan.canary_at(0, rules, salt="reviews-3")
    router.set_routes(t, plan)
    assert router.get_routes(t) == plan
    first = vs(co, ns)["spec"]["http"][0]
    assert first["match"][:2] == [
        {"headers": {"end-user": {"exact": "jason"}}},
        {"headers": {"x-region": {"regex": "^cn-.*$"}}},
    ]
    assert first["match"][3:] == [
        {"headers": {"x-user-id": {"regex": "^.*[13579]$"}}},
        {"headers": {"x-graylane-bucket": {"regex": "^([0-9]|1[0-9])$"}}},
    ]
    assert weights(first) == {"v2": 100}
    router.set_routes(t, STABLE_ONLY)
    assert [r["name"] for r in vs(co, ns)["spec"]["http"]] == ["graylane-primary"]


def test_source_ip_is_refused(api: Any, ns: str) -> None:
    with pytest.raises(ConfigError, match="source-ip matching .* not supported by router istio"):
        make_router("istio", api).set_routes(
            target(ns), RoutePlan.canary_at(0, (Match("source-ip", cidrs=("10.0.0.0/8",)),))
        )


def test_a_hand_edited_weight_reads_back_as_such(api: Any, co: Any, ns: str) -> None:
    router, t = make_router("istio", api), target(ns)
    router.set_routes(t, RoutePlan.canary_at(0, (Match("header", name="end-user", value="jason"),)))
    edit = [
        {
            "op": "add",
            "path": "/spec/http/1/route/-",  # a hand-added canary (graylane lists it only above 0)
            "value": {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50},
        },
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 50},
    ]
    co.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "virtualservices", "reviews", edit, _content_type=JSON_PATCH
    )
    live = router.get_routes(t)
    assert (live.stable, live.canary) == (50, 50)
    edit = [{"op": "replace", "path": "/spec/http/0/match/0/headers/end-user/exact", "value": "bob"}]
    co.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "virtualservices", "reviews", edit, _content_type=JSON_PATCH
    )
    assert router.get_routes(t).match == (DRIFTED,)


def test_circuit_breaker_set_and_clear_rate_limit_refused(api: Any, co: Any, ns: str) -> None:
    pool = {"http": {"http1MaxPendingRequests": 100}}
    router, t = make_router("istio", api), target(ns, connectionPool=pool)
    router.set_protection(t, Protection(None, CircuitBreaker("NetworkErrorRatio() > 0.30")))
    policy = dr(co, ns)["spec"]["trafficPolicy"]
    assert policy["outlierDetection"] == {
        "consecutiveGatewayErrors": 5,
        "interval": "10s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 100,
    }
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
    assert weights(live["spec"]["http"][0]) == {"v1": 100}


def test_a_wrong_field_path_is_detected(
    api: Any, co: Any, ns: str, monkeypatch: Any, istio_checked: IstioChecked
) -> None:
    router, t = make_router("istio", api), target(ns)
    router.reconcile(t)

    def misspelt(entries: Any, base: str, s: Any, plan: RoutePlan, kept: Any) -> tuple[list[Any], None]:
        canary = {"destination": {"host": s.host, "subset": s.canary}, "wieght": plan.canary}
        return [
            {"op": "add", "path": f"{base}/0/weight", "value": 0},
            {"op": "add", "path": f"{base}/-", "value": canary},
        ], None

    monkeypatch.setattr(istio, "weight_ops", misspelt)
    with pytest.raises(Reject, match="the stored spec is not what was written"):
        router.set_routes(t, RoutePlan.canary_at(20))
    istio_checked.on = False  # the pruned object is stored: Istio would refuse it too
    verdict = istio_validate([vs(co, ns)])
    assert not verdict.ok and "total destination weight = 0" in verdict.output, verdict.output


def test_every_step_of_a_release_is_valid_istio(
    api: Any, co: Any, ns: str, istio_checked: IstioChecked
) -> None:
    """Seed 003's flow and the steps around it; the fixture validates each object after each write."""
    pool = {
        "tcp": {"maxConnections": 100},
        "http": {"http1MaxPendingRequests": 100, "maxRequestsPerConnection": 10},
    }
    router, t = make_router("istio", api), target(ns, connectionPool=pool)
    router.reconcile(t)
    rules = (
        Match("header", name="location", value="shenzhen"),
        Match("cookie", name="canary", value="always"),
        Match("user-hash", name="x-user-id", percent=10),
    )
    router.set_routes(t, RoutePlan.canary_at(0, rules, salt="reviews-7"))  # A/B first
    for weight in (20, 40, 50, 60, 80, 100):  # steps, the seed's manual 50 %, then everything on the canary
        router.set_routes(t, RoutePlan.canary_at(weight, rules if weight < 50 else (), salt="reviews-7"))
        assert weights(vs(co, ns)["spec"]["http"][-1]) == {"v1": 100 - weight, "v2": weight}
    router.set_protection(t, Protection(None, CircuitBreaker("NetworkErrorRatio() > 0.30")))
    router.set_protection(t, Protection(None, CircuitBreaker("ResponseCodeRatio(500, 600, 0, 600) > 0.25")))
    router.finalize(t)  # promoted: stable runs the new version, all traffic on it, rules gone
    router.set_routes(t, RoutePlan.canary_at(40))
    router.set_routes(t, STABLE_ONLY)  # a rolled back second release
    router.set_protection(t, Protection())
    assert dr(co, ns)["spec"] == {
        "host": "reviews",
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    }
    verbs = [(kind, verb) for kind, _, verb in istio_checked.seen]
    assert (
        verbs.count(("VirtualService", "set routes")) == 10
        and verbs.count(("DestinationRule", "set protection")) == 3
    )
    assert {("VirtualService", "create"), ("DestinationRule", "create")} <= set(verbs)


def test_a_write_istio_would_refuse_fails_the_test(
    api: Any, ns: str, monkeypatch: Any, istio_checked: IstioChecked
) -> None:
    """The check is live: a router bug the CRD schema lets through (no weight on any destination) is caught."""
    router, t = make_router("istio", api), target(ns)
    router.reconcile(t)

    def weightless(entries: Any, base: str, s: Any, plan: RoutePlan, kept: Any) -> tuple[list[Any], None]:
        canary = {"destination": {"host": s.host, "subset": s.canary}, "weight": 0}
        return [
            {"op": "add", "path": f"{base}/0/weight", "value": 0},
            {"op": "add", "path": f"{base}/-", "value": canary},
        ], None

    monkeypatch.setattr(istio, "weight_ops", weightless)
    with pytest.raises(
        AssertionError,
        match=r"(?s)istioctl validate refused VirtualService/.*/reviews as stored "
        r"after set routes.*total destination weight = 0",
    ):
        router.set_routes(t, RoutePlan.canary_at(20))
    istio_checked.on = False  # what is stored is invalid on purpose
