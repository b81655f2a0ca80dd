"""graylane's GatewayAPIRouter driving Traefik v3's Kubernetes Gateway provider with real requests.

A GatewayClass (controllerName traefik.io/gateway-controller) and a Gateway whose HTTP listener is
Traefik's `web` entry point; graylane creates and weighs the HTTPRoute (weights on backendRefs, header
matches on the A/B rule). The backends are the same seed Deployments and Services as for the CRD
provider; Traefik's Gateway provider reads their EndpointSlices.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import ImageRule, Match, Policy, RouterSpec, WorkloadSpec
from functions.providers.metrics import templates as tp
from functions.providers.routers.base import RouteTarget
from functions.providers.routers.gateway_api import GatewayAPIRouter
from tests.traefik import seed
from tests.traefik.client import Client
from tests.traefik.conftest import drop_namespace, make_namespace, need_traefik, pod_urls, wait_rolled_out
from tests.traefik.pods import PodRunner
from tests.traefik.proxy import GATEWAY, Traefik

if TYPE_CHECKING:
    from tests.k8s.cluster import KubeCluster

pytestmark = [pytest.mark.traefik, pytest.mark.k8s, pytest.mark.controller]

HOST = "gw.coding"
ROUTE = "k8s-flask"
HEADER = Match(kind="header", name="location", value="shenzhen")
ODD_IDS = Match(kind="user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9))
SPLITS: dict[int, float] = {}


@dataclass
class GatewayApp:
    ns: str
    api: Any
    pods: PodRunner
    traefik: Traefik
    router: GatewayAPIRouter
    target: RouteTarget

    def client(self) -> Client:
        return Client(self.traefik.port, HOST)

    def http_route(self) -> dict[str, Any]:
        return seed.read(
            self.api,
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": ROUTE, "namespace": self.ns},
            },
        )

    def route(self, plan: RoutePlan) -> None:
        self.router.set_routes(self.target, plan)
        self.traefik.wait_http_route(self.http_route())


@pytest.fixture(scope="module")
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayApp]:
    need_traefik("v3")  # before the cluster starts: a missing build fails at once
    kube: KubeCluster = request.getfixturevalue("kube")
    pods: PodRunner = request.getfixturevalue("pods")
    api = kube.api_client()
    ns = make_namespace(api, "gw-v3")
    pods.watch(ns)
    seed.apply(api, seed.workloads(ns))
    wait_rolled_out(api, ns, [seed.STABLE, seed.CANARY])
    pods.wait_serving(ns, {"v1": 2, "v2": 1})
    traefik = Traefik.start(
        "v3", tmp_path_factory.mktemp("traefik-gateway"), kube.kubeconfig, [ns], gateway=True
    )
    class_name = f"traefik-{secrets.token_hex(3)}"
    objects = seed.gateway(ns, "traefik", class_name, traefik.port)
    try:
        seed.apply(api, objects)
        options = {
            "httpRoute": ROUTE,
            "stableService": seed.STABLE,
            "canaryService": seed.CANARY,
            "port": seed.PORT,
            "parentRef": "traefik",
            "host": HOST,
            "metrics": "traefik",
            "create": True,
        }
        app = GatewayApp(
            ns,
            api,
            pods,
            traefik,
            GatewayAPIRouter(kube.api_client()),
            RouteTarget(ns, "flask", seed.STABLE, seed.CANARY, options=options),
        )
        app.router.reconcile(app.target)  # graylane creates the HTTPRoute, all on stable
        app.traefik.wait_http_route(app.http_route())
        for svc in (seed.STABLE, seed.CANARY):
            traefik.wait_servers(f"{ns}-{svc}-http-{seed.PORT}", pod_urls(api, ns, svc), provider=GATEWAY)
        yield app
    finally:
        traefik.stop()
        seed.delete(api, objects[0])
        drop_namespace(api, ns)


@pytest.fixture
def app(gw: GatewayApp) -> GatewayApp:
    gw.route(STABLE_ONLY)
    return gw


def test_the_gateway_and_the_route_are_accepted_by_traefik(app: GatewayApp) -> None:
    route = app.http_route()
    parents = route.get("status", {}).get("parents") or []
    assert parents and parents[0]["controllerName"] == seed.GATEWAY_CONTROLLER
    conditions = {c["type"]: c["status"] for c in parents[0]["conditions"]}
    assert conditions.get("Accepted") == "True" and conditions.get("ResolvedRefs") == "True", parents
    assert app.client().split(200) == Counter(v1=200)


@pytest.mark.parametrize("canary", [20, 50, 5])
def test_weighted_split_over_5000_requests_is_within_two_points(app: GatewayApp, canary: int) -> None:
    app.route(RoutePlan.canary_at(canary))
    seen = app.client().split(5000)
    share = 100 * seen["v2"] / 5000
    SPLITS[canary] = share
    print(
        f"\nTraefik v3 Gateway split {100 - canary}/{canary}: v1 {seen['v1']} v2 {seen['v2']} -> {share:.2f} %"
    )
    assert seen["v1"] + seen["v2"] == 5000, seen
    assert abs(share - canary) <= 2, seen


def test_header_match_sends_exactly_the_matching_requests_to_the_canary(app: GatewayApp) -> None:
    app.route(RoutePlan.canary_at(0, match=(HEADER,)))
    client = app.client()
    assert client.split(500, {"location": "shenzhen"}) == Counter(v2=500)
    assert client.split(200, {"location": "beijing"}) == Counter(v1=200)
    assert client.split(200) == Counter(v1=200)


def test_regex_header_match_and_weights_together(app: GatewayApp) -> None:
    app.route(RoutePlan.canary_at(50, match=(HEADER, ODD_IDS)))
    client = app.client()
    assert client.split(200, {"location": "shenzhen"}) == Counter(v2=200)
    assert {uid: client.answer({"x-user-id": str(uid)}) for uid in range(101, 200, 2)} == {
        uid: "v2" for uid in range(101, 200, 2)
    }
    rest = client.split(1000, {"x-user-id": "1000"})
    assert abs(rest["v2"] - 500) <= 20, rest


def test_weights_change_under_load_without_a_single_failed_request(app: GatewayApp) -> None:
    stop, results, errors = threading.Event(), Counter[str](), []

    def load() -> None:
        client = app.client()
        while not stop.is_set():
            try:
                results[client.answer()] += 1
            except Exception as err:  # noqa: BLE001
                errors.append(repr(err))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        for weight in (0, 20, 50, 100, 0, 95, 5, 100, 50, 0):
            app.route(RoutePlan.canary_at(weight))
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join(timeout=10)
    print(f"\nTraefik v3 Gateway under load: {dict(results)}, errors {len(errors)}")
    assert not errors and set(results) == {"v1", "v2"}, (results, errors[:5])


def test_gateway_api_templates_with_metrics_traefik_select_the_gateway_providers_series(
    app: GatewayApp,
) -> None:
    """Traefik's Gateway provider names HTTPRoute backends `<ns>-<svc>-http-<port>@kubernetesgateway`."""
    policy = Policy(
        name="flask",
        namespace=app.ns,
        image=ImageRule(repository=seed.REPOSITORY),
        router=RouterSpec("gateway-api", dict(app.target.options)),
        stages=(),
        workload=WorkloadSpec(name=seed.STABLE, canary=seed.CANARY),
    )
    assert tp.metrics_source(policy) == "traefik"
    target = tp.target(policy, "gw")
    before = tp.split_counts("traefik", [target], app.traefik.series("traefik_service_requests_total")).get(
        "gw", {}
    )
    app.route(RoutePlan.canary_at(20))
    app.pods.set("v2", error_rate=0.5)
    try:
        seen = app.client().split(1000)
    finally:
        app.pods.set("v2", error_rate=0.0)
    after = tp.split_counts("traefik", [target], app.traefik.series("traefik_service_requests_total"))["gw"]
    zero = tp.Counts()
    stable = after[tp.STABLE].requests - before.get(tp.STABLE, zero).requests
    canary = after[tp.CANARY].requests - before.get(tp.CANARY, zero).requests
    errors = after[tp.CANARY].errors - before.get(tp.CANARY, zero).errors
    assert (stable, canary) == (800, 200), (stable, canary, seen)  # every request, on the right version
    assert errors == seen["status 500"] and 60 < errors < 140, (errors, seen)


def test_read_back_and_finalize(app: GatewayApp) -> None:
    plan = RoutePlan.canary_at(40, match=(HEADER,))
    app.route(plan)
    assert app.router.get_routes(app.target) == plan
    app.router.finalize(app.target)
    app.traefik.wait_http_route(app.http_route())
    assert app.client().split(100, {"location": "shenzhen"}) == Counter(v1=100)
    print(f"\nTraefik v3 Gateway measured canary shares: {SPLITS}")
