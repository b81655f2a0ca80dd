"""[baseline] A fresh baseline on the real apiserver: its Deployment (the stable's image, the canary's labels scheme
and size) rolled out by kube-controller-manager onto kwok's fake Nodes, its own Service with EndpointSlices of
its pods, both removed at the end (idempotently, the user's objects never written); the routers' baseline
entries on the upstream CRDs with every user field kept byte for byte (istioctl validates each VirtualService);
and a whole release through the Runner: the baseline is Ready before the route names it, traffic leaves it
before it is removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import MetricSample
from functions.core.policy import CanaryStage, CanaryStep, Policy, PromoteStage, RouterSpec, WorkloadSpec
from functions.core.state import AppState, Phase, Release
from functions.errors import NotReady
from functions.providers.factory import KubernetesProviders
from functions.providers.kube import client_from
from functions.providers.recording import healthy
from functions.providers.routers import make_router
from functions.providers.routers.base import RouteTarget
from functions.providers.stores.memory import MemoryStore
from functions.providers.workloads.base import WorkloadTarget
from functions.providers.workloads.kubernetes import TRACK, KubernetesWorkloads
from functions.runner import Runner
from functions.settings import Settings
from tests.contract.router_support import co_fixture  # noqa: F401
from tests.contract.test_user_fields import (
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
from tests.contract.workload_support import REPO, deployment, image_of, stable_deployment, until_ready
from tests.k8s.cluster import deployment_is_ready
from tests.support import Clock, StaticPolicies, canary_policy, push, tick
from tests.traefik import seed

pytestmark = pytest.mark.k8s
BASELINE = "k8s-flask-baseline"
VOLATILE = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    with client_from(kube.configuration) as api_client:
        yield api_client


def target(ns: str, **kw: Any) -> WorkloadTarget:
    return WorkloadTarget(
        ns, "flask", "k8s-flask", "k8s-flask-canary", container="flask", baseline=BASELINE, **kw
    )


def stable_service(api: Any, ns: str) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "k8s-flask",
            "labels": {"app": "k8s-flask", "team": "web"},
            "annotations": {"owner": "web@example.com"},
        },
        "spec": {
            "type": "NodePort",
            "selector": {"app": "k8s-flask"},
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}],
        },
    }
    core = client.CoreV1Api(api)
    core.create_namespaced_service(ns, body)
    return dict(api.sanitize_for_serialization(core.read_namespaced_service("k8s-flask", ns)))


def service(api: Any, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(api.sanitize_for_serialization(client.CoreV1Api(api).read_namespaced_service(name, ns)))
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


def exists(api: Any, ns: str, name: str) -> bool:
    try:
        client.AppsV1Api(api).read_namespaced_deployment(name, ns)
        return True
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise


def wait(what: str, ok: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def endpoint_ips(api: Any, ns: str, name: str) -> set[str]:
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        ns, label_selector=f"kubernetes.io/service-name={name}"
    )
    return {
        a
        for s in slices.items
        for e in s.endpoints or []
        if (e.conditions and e.conditions.ready)
        for a in e.addresses
    }


def pod_ips(api: Any, ns: str, selector: str) -> set[str]:
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items
    return {p.status.pod_ip for p in pods if p.status.pod_ip and p.metadata.deletion_timestamp is None}


def test_baseline_deployment_and_service_run_fresh_and_go(api: Any, ns: str, nodes: Any) -> None:
    stable = stable_deployment(api, ns, replicas=3)
    svc = stable_service(api, ns)
    work = KubernetesWorkloads(api)
    until_ready(lambda: work.deploy_canary(target(ns, replicas=1), f"{REPO}:v2"))  # the canary at 1 replica
    with pytest.raises(NotReady, match=f"Deployment {ns}/{BASELINE} deploy baseline"):
        work.deploy_baseline(target(ns), f"{REPO}:v1")
    until_ready(lambda: work.deploy_baseline(target(ns), f"{REPO}:v1"))
    dep = deployment(api, ns, BASELINE)
    assert deployment_is_ready(client.AppsV1Api(api).read_namespaced_deployment(BASELINE, ns))
    assert image_of(dep) == f"{REPO}:v1" and image_of(dep, "proxy") == "registry.example.com/envoy:1.0"
    assert dep["spec"]["replicas"] == 1  # the canary's size, not the stable's 3
    assert dep["spec"]["selector"]["matchLabels"] == {"app": BASELINE, TRACK: "baseline"}
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "graylane"
    assert dep["metadata"]["labels"]["graylane.dev/app"] == "flask"
    own = service(api, ns, BASELINE)
    assert own is not None and own["spec"]["selector"] == {"app": BASELINE, TRACK: "baseline"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in own["spec"]["ports"]] == [("http", 8080, 8080)]
    assert own["spec"]["type"] == "ClusterIP" and "nodePort" not in own["spec"]["ports"][0]
    assert own["metadata"]["labels"] == {
        "app": BASELINE,
        "team": "web",
        TRACK: "baseline",
        "graylane.dev/app": "flask",
        "app.kubernetes.io/managed-by": "graylane",
    }
    wait(
        "the baseline Service's EndpointSlice",
        lambda: endpoint_ips(api, ns, BASELINE) == pod_ips(api, ns, f"app={BASELINE}") != set(),
    )
    assert endpoint_ips(api, ns, BASELINE).isdisjoint(pod_ips(api, ns, "app=k8s-flask"))  # never a stable pod
    assert endpoint_ips(api, ns, "k8s-flask").isdisjoint(
        pod_ips(api, ns, f"app={BASELINE}")
    )  # nor the reverse
    # the user's stable Deployment and Service were read, never written
    assert {k: deployment(api, ns, "k8s-flask")["metadata"].get(k) for k in ("labels", "annotations")} == {
        k: stable["metadata"].get(k) for k in ("labels", "annotations")
    }
    assert service(api, ns, "k8s-flask") == svc
    assert deployment(api, ns, "k8s-flask")["spec"] == stable["spec"]

    work.deploy_baseline(target(ns), f"{REPO}:v1")  # ready: applying it again changes nothing
    assert deployment(api, ns, BASELINE)["metadata"]["resourceVersion"] == dep["metadata"]["resourceVersion"]
    work.scale_canary(
        target(ns, replicas=1), 50
    )  # the canary grows (its HPA, or a human): the baseline follows
    client.AppsV1Api(api).patch_namespaced_deployment_scale("k8s-flask-canary", ns, {"spec": {"replicas": 2}})
    work.scale_canary(target(ns, replicas=1), 50)
    assert deployment(api, ns, BASELINE)["spec"]["replicas"] == 2

    until_ready(
        lambda: work.remove_baseline(target(ns))
    )  # a Conflict (the controller wrote meanwhile) retries
    assert service(api, ns, BASELINE) is None
    wait("the baseline Deployment deleted", lambda: not exists(api, ns, BASELINE))
    work.remove_baseline(target(ns))  # idempotent
    assert service(api, ns, "k8s-flask") == svc and deployment(api, ns, "k8s-flask")["spec"] == stable["spec"]


def test_baseline_removal_leaves_a_users_objects_of_that_name_alone(api: Any, ns: str) -> None:
    mine = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": BASELINE},
        "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]},
    }
    client.CoreV1Api(api).create_namespaced_service(ns, mine)
    before = service(api, ns, BASELINE)
    KubernetesWorkloads(api).remove_baseline(target(ns))
    assert service(api, ns, BASELINE) == before


# -- the routers' baseline entries in the user's objects ------------------------------------------------------------

THREE_WAY = (
    STABLE_ONLY,
    RoutePlan(stable=90, canary=5, baseline=5),
    RoutePlan(stable=60, canary=20, baseline=20),
    RoutePlan.canary_at(0, ()),
    RoutePlan(stable=0, canary=50, baseline=50),
    STABLE_ONLY,
)


def _run(router: Any, t: RouteTarget, check: Callable[[str], None]) -> None:
    for plan in THREE_WAY:
        router.reconcile(t)
        router.set_routes(t, plan)
        assert router.get_routes(t) == plan
        check(f"after {plan}")
    router.set_routes(t, RoutePlan(stable=60, canary=20, baseline=20))
    router.finalize(
        t
    )  # a release that ended without routing stable first: finalize takes the baseline out too
    check("after finalize")


def _without_baseline(
    strip: Callable[[dict[str, Any]], None],
    is_baseline: Callable[[Any], bool],
    lists: Callable[[dict[str, Any]], list[list[Any]]],
) -> Callable[[dict[str, Any]], None]:
    def owned(obj: dict[str, Any]) -> None:
        for entries in lists(obj):
            entries[:] = [e for e in entries if not is_baseline(e)]
        strip(obj)

    return owned


@pytest.mark.parametrize("group", ["traefik.io", "traefik.containo.us"])
def test_baseline_traefik_entry_keeps_the_users_fields(api: Any, ns: str, group: str) -> None:
    objects = seed.apply(api, _seed_000(group, ns))

    def lists(o: dict[str, Any]) -> list[list[Any]]:
        return [r["services"] for r in o["spec"].get("routes") or []] if o["kind"] == "IngressRoute" else []

    owned = _without_baseline(_traefik_owned, lambda e: e.get("name") == BASELINE, lists)
    before = {o["metadata"]["name"]: user_part(o, owned) for o in objects}
    router, t = make_router("traefik", api), replace(_traefik_target(ns), baseline=BASELINE)
    seen: dict[str, Any] = {}

    def check(when: str) -> None:
        for obj in objects:
            live = seed.read(api, obj)
            assert user_part(live, owned) == before[obj["metadata"]["name"]], (when, obj["metadata"]["name"])
            if obj["metadata"]["name"] == seed.PRO_ROUTE:
                seen[when] = live

    _run(router, t, check)
    routes = seen[f"after {RoutePlan(stable=60, canary=20, baseline=20)}"]["spec"]["routes"]
    services = next(r for r in routes if r.get("priority") == 10)["services"]
    assert services == [
        {"name": n, "port": seed.PORT, "namespace": ns, "passHostHeader": True, "weight": w}
        for n, w in ((seed.STABLE, 60), (seed.CANARY, 20), (BASELINE, 20))
    ]
    final = next(r for r in seed.read(api, objects[2])["spec"]["routes"] if r.get("priority") == 10)[
        "services"
    ]
    assert [s["name"] for s in final] == [seed.STABLE]


def test_baseline_istio_destination_keeps_the_users_fields_and_istioctl_accepts_it(
    api: Any, co: Any, ns: str
) -> None:
    from tests.k8s.istio_validate import assert_istio_valid

    objects = _seed_003(ns)
    for obj in objects:
        co.create_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", obj)

    def read(obj: dict[str, Any]) -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", "reviews"))

    def lists(o: dict[str, Any]) -> list[list[Any]]:
        return [r["route"] for r in o["spec"].get("http") or []] if o["kind"] == "VirtualService" else []

    owned = _without_baseline(_istio_owned, lambda d: d["destination"]["host"] == "reviews-baseline", lists)
    before = [user_part(read(o), owned) for o in objects]
    router = make_router("istio", api)
    t = RouteTarget(
        ns,
        "reviews",
        "reviews-v1",
        "reviews-v2",
        baseline="reviews-baseline",
        options={
            "virtualService": "reviews",
            "destinationRule": "reviews",
            "host": "reviews",
            "stableSubset": "v1",
            "canarySubset": "v2",
        },
    )
    stored: dict[str, Any] = {}

    def check(when: str) -> None:
        live = [read(o) for o in objects]
        assert [user_part(o, owned) for o in live] == before, when
        assert_istio_valid(live, when)
        stored[when] = live[0]

    _run(router, t, check)
    everyone = stored[f"after {RoutePlan(stable=60, canary=20, baseline=20)}"]["spec"]["http"][1]
    assert everyone["route"] == [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 60},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
        {"destination": {"host": "reviews-baseline"}, "weight": 20},
    ]
    assert read(objects[0])["spec"]["http"][1]["route"] == [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}
    ]


def test_baseline_gateway_backend_keeps_the_users_fields(api: Any, co: Any, ns: str) -> None:
    gateway = ("gateway.networking.k8s.io", "v1")
    co.create_namespaced_custom_object(*gateway, ns, "httproutes", _httproute(ns))

    def read() -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*gateway, ns, "httproutes", "shop"))

    lists = lambda o: [r["backendRefs"] for r in o["spec"]["rules"]]  # noqa: E731
    owned = _without_baseline(_gateway_owned, lambda b: b["name"] == "shop-baseline", lists)
    before = user_part(read(), owned)
    router = make_router("gateway-api", api)
    t = RouteTarget(
        ns,
        "shop",
        "shop-blue",
        "shop-green",
        options={"httpRoute": "shop", "port": 8080},
        baseline="shop-baseline",
    )
    stored: dict[str, Any] = {}

    def check(when: str) -> None:
        live = read()
        assert user_part(live, owned) == before, when
        stored[when] = live

    _run(router, t, check)
    rules = stored[f"after {RoutePlan(stable=60, canary=20, baseline=20)}"]["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rules[1]["backendRefs"]] == [
        ("shop-blue", 60),
        ("shop-green", 20),
        ("shop-baseline", 20),
    ]
    assert all(b["name"] != "shop-baseline" for r in read()["spec"]["rules"] for b in r["backendRefs"])


# -- a release through the Runner ---------------------------------------------------------------------------------

OPTIONS = {
    "ingressRoute": "k8s-flask-pro",
    "host": "pro.coding",
    "entryPoints": ["web"],
    "group": "traefik.io",
    "stableService": "k8s-flask",
    "canaryService": "k8s-flask-canary",
    "port": 8080,
    "create": True,
}


class Watched(KubernetesProviders):
    """The production factory; before every route write it records whether the baseline was Ready, before every
    baseline removal what the route listed (straight from the apiserver). Only measure is scripted."""

    def __init__(self, kube: Any, ns: str) -> None:
        super().__init__(
            Settings(providers="kubernetes"), client_for=lambda cluster: client_from(kube.configuration)
        )
        self.ns, self.api = ns, client_from(kube.configuration)
        self.seen: list[tuple[str, Any, Any]] = []
        self.measure_fn: Callable[[Policy, Release], tuple[MetricSample, ...]] = healthy

    def weights(self) -> dict[str, int]:
        try:
            route = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                "traefik.io", "v1alpha1", self.ns, "ingressroutes", "k8s-flask-pro"
            )
        except client.ApiException as err:
            if err.status == 404:
                return {}
            raise
        return {s["name"]: s.get("weight", 1) for s in route["spec"]["routes"][-1]["services"]}

    def baseline_ready(self) -> bool:
        try:
            return deployment_is_ready(
                client.AppsV1Api(self.api).read_namespaced_deployment(BASELINE, self.ns)
            )
        except client.ApiException:
            return False

    def router(self, policy: Policy, cluster: str) -> Any:
        real, outer = super().router(policy, cluster), self

        class Router:
            def set_routes(self, target: Any, plan: RoutePlan) -> None:
                outer.seen.append(("set_routes", plan, outer.baseline_ready()))
                real.set_routes(target, plan)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        return Router()

    def workloads(self, policy: Policy, cluster: str) -> Any:
        real, outer = super().workloads(policy, cluster), self

        class Workloads:
            def remove_baseline(self, target: Any) -> None:
                outer.seen.append(("remove_baseline", outer.weights(), None))
                real.remove_baseline(target)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        return Workloads()

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.measure_fn(policy, release)


def test_baseline_release_through_the_runner_on_the_real_apiserver(
    api: Any, ns: str, kube: Any, nodes: Any
) -> None:
    stable_deployment(api, ns)
    stable_service(api, ns)
    steps = (CanaryStage(steps=(CanaryStep(20, 30.0), CanaryStep(50, 30.0))), PromoteStage())
    base = canary_policy("flask", ns, stages=steps)
    assert base.analysis is not None
    policy = replace(
        base,
        router=RouterSpec("traefik", dict(OPTIONS)),
        baseline=True,
        workload=WorkloadSpec(name="k8s-flask", canary="k8s-flask-canary", container="flask"),
        analysis=replace(base.analysis, guard=False, exposure_budget=0.0),
    )
    store, clock, providers = MemoryStore(), Clock(), Watched(kube, ns)
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)

    def state() -> AppState:
        doc, _ = store.load(policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    def ticks_until(done: Callable[[], bool], advance: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (
                f"timed out; seen {providers.seen[-4:]}; {state().history[-3:]}"
            )
            clock.advance(advance)
            runner.handle(tick(policy.app))
            time.sleep(0.2)

    def released(phase: Phase) -> Callable[[], bool]:
        return lambda: state().release is not None and state().release.phase == phase and not state().pending  # type: ignore[union-attr]

    try:
        runner.handle(push(policy.app, "v1"))
        runner.handle(push(policy.app, "v2"))
        ticks_until(lambda: providers.weights().get(BASELINE) == 20, advance=0)
        assert providers.weights() == {"k8s-flask": 60, "k8s-flask-canary": 20, BASELINE: 20}
        assert image_of(deployment(api, ns, BASELINE)) == f"{REPO}:v1"  # the stable's image, fresh pods
        three_way = [ready for verb, plan, ready in providers.seen if verb == "set_routes" and plan.baseline]
        assert three_way and all(three_way)  # the route named the baseline only once it was Ready
        ticks_until(released(Phase.SUCCEEDED), advance=10)
        removal = [w for verb, w, _ in providers.seen if verb == "remove_baseline"]
        assert removal == [{"k8s-flask": 100}]  # traffic had left the baseline (and the canary)
        assert not exists(api, ns, BASELINE) or deployment(api, ns, BASELINE)["metadata"].get(
            "deletionTimestamp"
        )
        assert service(api, ns, BASELINE) is None

        providers.seen.clear()
        runner.handle(push(policy.app, "v3"))
        ticks_until(lambda: providers.weights().get(BASELINE) == 20, advance=0)
        assert image_of(deployment(api, ns, BASELINE)) == f"{REPO}:v2"  # the new stable's image
        providers.measure_fn = lambda p, r: (
            MetricSample(name="success-rate", value=0.5, canary_requests=500),
        )
        ticks_until(released(Phase.ROLLED_BACK), advance=10)
        assert [w for verb, w, _ in providers.seen if verb == "remove_baseline"] == [{"k8s-flask": 100}]
        assert service(api, ns, BASELINE) is None and providers.weights() == {"k8s-flask": 100}
        wait("the baseline Deployment deleted", lambda: not exists(api, ns, BASELINE))
        assert state().release.baseline_deployed is False  # type: ignore[union-attr]
    finally:
        providers.close()
