"""Waves across two real clusters and blue-green on Kubernetes, end to end through the Runner.

Two apiservers, each with kube-controller-manager and fake Nodes (kube-scheduler + kwok): "dc-main" (the
session cluster) and "dc-2" (started by this module). KubernetesProviders reaches each through `client_for`.
A witness wraps the real router and workloads and, before every call, reads from the apiserver of the call's
cluster what the ordering rules are about, so the test checks what each cluster looked like when traffic
moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from kubernetes import client

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import MetricSample
from functions.core.policy import (
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    Policy,
    PromoteStage,
    RouterSpec,
    Stage,
    Wave,
    WorkloadSpec,
)
from functions.core.state import AppState, Phase, Release
from functions.errors import NotReady
from functions.providers.factory import KubernetesProviders
from functions.providers.kube import client_from
from functions.providers.recording import healthy
from functions.providers.routers.base import RouteTarget
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner, route_target
from functions.settings import Settings
from tests.contract.workload_support import REPO, stable_deployment
from tests.k8s.cluster import FakeNodes, KubeCluster, deployment_is_ready, install_crds, load_crds
from tests.support import Clock, StaticPolicies, canary_policy, command, handle, push, tick

pytestmark = pytest.mark.k8s
MAIN, DC2 = "dc-main", "dc-2"
HERE = ""  # the cluster of effects when a policy has no waves: the current context (dc-main here)
STABLE, CANARY = "k8s-flask", "k8s-flask-canary"
OPTIONS = {
    "ingressRoute": "k8s-flask-pro",
    "create": True,
    "host": "pro.coding",
    "entryPoints": ["web"],
    "group": "traefik.io",
    "stableService": STABLE,
    "canaryService": CANARY,
    "port": 8080,
}
V1, V2 = f"{REPO}:v1", f"{REPO}:v2"
ALL_CANARY = RoutePlan.canary_at(100)


@dataclass
class Call:
    at: float
    cluster: str
    verb: str
    arg: Any
    seen: dict[str, Any]  # what the call's cluster showed just before the call
    outcome: str = "ok"


@dataclass
class Witness:
    apis: dict[str, Any]  # cluster -> ApiClient ("" is the current context: dc-main)
    ns: str
    calls: list[Call] = field(default_factory=list)

    def deployment(self, cluster: str, name: str) -> dict[str, Any] | None:
        try:
            dep = client.AppsV1Api(self.apis[cluster]).read_namespaced_deployment(name, self.ns)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        image = next(c.image for c in dep.spec.template.spec.containers if c.name == "flask")
        return {"image": image, "ready": deployment_is_ready(dep), "replicas": dep.spec.replicas}

    def route(self, cluster: str) -> dict[str, Any] | None:
        try:
            return dict(
                client.CustomObjectsApi(self.apis[cluster]).get_namespaced_custom_object(
                    "traefik.io", "v1alpha1", self.ns, "ingressroutes", "k8s-flask-pro"
                )
            )
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def weights(self, cluster: str) -> dict[str, int]:
        route = self.route(cluster)
        if not route:
            return {}
        listed = {s["name"]: s["weight"] for s in route["spec"]["routes"][-1]["services"]}
        return {STABLE: 0, CANARY: 0, **listed}  # a Service the route does not list gets none

    def snapshot(self, cluster: str) -> dict[str, Any]:
        return {
            "stable": self.deployment(cluster, STABLE),
            "canary": self.deployment(cluster, CANARY),
            "weights": self.weights(cluster),
        }

    def record(self, cluster: str, verb: str, arg: Any, call: Callable[[], Any]) -> Any:
        entry = Call(time.monotonic(), cluster, verb, arg, self.snapshot(cluster))
        self.calls.append(entry)
        try:
            return call()
        except NotReady:
            entry.outcome = "not-ready"
            raise

    def index(self, cluster: str, verb: str, arg: Any = None, outcome: str = "ok", after: int = -1) -> int:
        return next(
            i
            for i, c in enumerate(self.calls)
            if i > after
            and c.cluster == cluster
            and c.verb == verb
            and c.outcome == outcome
            and (arg is None or c.arg == arg)
        )

    def clusters_touched(self, since: int = 0) -> set[str]:
        return {c.cluster for c in self.calls[since:]}


class WitnessRouter:
    def __init__(self, router: Any, witness: Witness, cluster: str) -> None:
        self.router, self.witness, self.cluster = router, witness, cluster

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        self.witness.record(self.cluster, "set_routes", plan, lambda: self.router.set_routes(target, plan))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


class WitnessWorkloads:
    def __init__(self, workloads: Any, witness: Witness, cluster: str) -> None:
        self.workloads, self.witness, self.cluster = workloads, witness, cluster

    def deploy_canary(self, target: Any, image: str) -> None:
        self.witness.record(
            self.cluster, "deploy_canary", image, lambda: self.workloads.deploy_canary(target, image)
        )

    def promote_stable(self, target: Any, image: str) -> None:
        self.witness.record(
            self.cluster, "promote_stable", image, lambda: self.workloads.promote_stable(target, image)
        )

    def scale_down_canary(self, target: Any) -> None:
        self.witness.record(
            self.cluster, "scale_down_canary", None, lambda: self.workloads.scale_down_canary(target)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.workloads, name)


class WitnessedProviders(KubernetesProviders):
    """The production factory over two clusters; only measure is scripted (Prometheus is tested on its own)."""

    def __init__(self, configs: dict[str, Any], witness: Witness) -> None:
        super().__init__(
            Settings(providers="kubernetes"), client_for=lambda cluster: client_from(configs[cluster])
        )
        self.witness = witness
        self.measure_fn: Callable[[Policy, Release], tuple[MetricSample, ...]] = healthy

    def router(self, policy: Policy, cluster: str) -> Any:
        return WitnessRouter(super().router(policy, cluster), self.witness, cluster)

    def workloads(self, policy: Policy, cluster: str) -> Any:
        return WitnessWorkloads(super().workloads(policy, cluster), self.witness, cluster)

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.measure_fn(policy, release)


def bad(policy: Policy, _: Release) -> tuple[MetricSample, ...]:
    return (MetricSample(name="success-rate", value=0.5, canary_requests=500),)


@pytest.fixture(scope="module")
def dc2() -> Iterator[KubeCluster]:
    """A second cluster: its own etcd, apiserver (CRDs served), kube-controller-manager and fake Nodes."""
    cluster = KubeCluster.start()
    try:
        with cluster.api_client() as api:
            install_crds(api, load_crds())
        cluster.start_nodes()
        yield cluster
    finally:
        cluster.stop()


@dataclass
class World:
    """Both clusters with the app's stable Deployment on v1, a Runner over them, and a fake clock."""

    policy: Policy
    witness: Witness
    providers: WitnessedProviders
    store: MemoryStore
    clock: Clock
    runner: Runner

    def state(self) -> AppState:
        doc, _ = self.store.load(self.policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    def settled(self, phase: Phase, gate: str = "") -> bool:
        state = self.state()
        rel = state.release
        return rel is not None and rel.phase == phase and rel.gate == gate and not state.pending

    def ticks_until(self, done: Callable[[], bool], advance: float, limit: int = 150) -> None:
        """Tick (the fake clock moving `advance` s each time) until done; bounded, with short real sleeps."""
        for _ in range(limit):
            if done():
                return
            self.clock.advance(advance)
            self.runner.handle(tick(self.policy.app))
            time.sleep(0.2)
        calls = [(c.cluster, c.verb, c.outcome) for c in self.witness.calls[-12:]]
        state = self.state()
        phase = state.release.phase if state.release else None
        pytest.fail(
            f"not done after {limit} ticks: phase {phase}, pending {len(state.pending)}; calls {calls}"
        )


@pytest.fixture(name="world")
def world_fixture(
    request: pytest.FixtureRequest, kube: KubeCluster, ns: str, nodes: FakeNodes, dc2: KubeCluster
) -> Iterator[World]:
    stages: tuple[Stage, ...] = request.param["stages"]
    waves: tuple[Wave, ...] = request.param["waves"]
    base = canary_policy("flask", ns, stages=stages, analysis=request.param["analysis"])
    policy = replace(
        base,
        # no Prometheus here (measure is scripted): the guard and adaptive exposure, which read the routers'
        # counters from it, are off, so each step routes its own weight (tests/real and tests/traefik run them)
        analysis=replace(base.analysis, guard=False, exposure_budget=0.0) if base.analysis else None,
        router=RouterSpec("traefik", dict(OPTIONS)),
        waves=waves,
        workload=WorkloadSpec(name=STABLE, canary=CANARY, container="flask"),
    )
    configs = {"": kube.configuration, MAIN: kube.configuration, DC2: dc2.configuration}
    with kube.api_client() as main_api, dc2.api_client() as dc2_api:
        client.CoreV1Api(dc2_api).create_namespace({"metadata": {"name": ns}})
        witness = Witness({"": main_api, MAIN: main_api, DC2: dc2_api}, ns)
        providers = WitnessedProviders(configs, witness)
        try:
            # each cluster already serves the app: the stable Deployment runs v1, and the route exists with all
            # traffic on the stable (the machine writes routes only when they change; reconcile creates them)
            for cluster, api in ((MAIN, main_api), (DC2, dc2_api))[: 2 if waves else 1]:
                stable_deployment(api, ns)
                providers.router(policy, cluster).reconcile(route_target(policy, cluster))
            store, clock = MemoryStore(), Clock()
            runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)
            witness.calls.clear()
            yield World(policy, witness, providers, store, clock, runner)
        finally:
            providers.close()
            client.CoreV1Api(dc2_api).delete_namespace(ns)


WAVES = {
    "stages": (CanaryStage(steps=(CanaryStep(50, 30.0),)), PromoteStage()),
    "waves": (Wave(MAIN, cluster=MAIN), Wave(DC2, cluster=DC2, approval=True)),
    "analysis": True,
}
BLUE_GREEN = {
    "stages": (BlueGreenStage(preview=2.0, analysis=False), PromoteStage()),
    "waves": (),
    "analysis": False,
}


def assert_promoted_before_traffic_returns(witness: Witness, cluster: str, after: int = -1) -> None:
    """Routes go back to the stable only once it runs v2 and is ready; the canary goes away after that."""
    done = witness.index(cluster, "promote_stable", V2, after=after)
    back = witness.index(cluster, "set_routes", STABLE_ONLY, after=done)
    assert witness.calls[back].seen["stable"] == {"image": V2, "ready": True, "replicas": 2}
    down = witness.index(cluster, "scale_down_canary", after=back)
    assert witness.calls[done].at < witness.calls[back].at < witness.calls[down].at
    assert witness.calls[down].seen["weights"] == {STABLE: 100, CANARY: 0}


@pytest.mark.parametrize("world", [WAVES], indirect=True)
def test_waves_release_one_cluster_at_a_time_behind_the_wave_gate(world: World) -> None:
    w, app = world.witness, world.policy.app
    world.runner.handle(push(app, "v1"))  # the first image: stable, with its route, in every wave's cluster
    assert {c.cluster for c in w.calls if c.verb == "promote_stable"} >= {MAIN, DC2}
    dc2_route, since_v1 = w.route(DC2), len(w.calls)
    assert dc2_route is not None
    world.runner.handle(push(app, "v2"))
    world.ticks_until(lambda: w.weights(MAIN).get(CANARY) == 50, advance=0)
    world.ticks_until(lambda: world.settled(Phase.WAITING, gate=f"wave-{DC2}"), advance=10)

    # wave dc-main is done in dc-main only; dc-2 still runs v1 and its route was not written
    assert w.clusters_touched(since_v1) <= {"", MAIN}
    assert_promoted_before_traffic_returns(w, MAIN)
    assert w.deployment(MAIN, STABLE) == {"image": V2, "ready": True, "replicas": 2}
    assert w.weights(MAIN) == {STABLE: 100, CANARY: 0}
    assert w.deployment(DC2, STABLE) == {"image": V1, "ready": True, "replicas": 2}
    assert w.deployment(DC2, CANARY) is None
    assert w.route(DC2)["metadata"]["resourceVersion"] == dc2_route["metadata"]["resourceVersion"]
    mark = len(w.calls)

    handle(world.runner, command(app, "approve", gate=f"wave-{DC2}"))
    world.ticks_until(lambda: w.weights(DC2).get(CANARY) == 50, advance=0)
    world.ticks_until(lambda: world.settled(Phase.SUCCEEDED), advance=10)
    assert w.clusters_touched(since=mark) == {DC2}  # wave dc-2 leaves dc-main alone
    assert_promoted_before_traffic_returns(w, DC2, after=mark - 1)
    for cluster in (MAIN, DC2):
        assert w.deployment(cluster, STABLE) == {"image": V2, "ready": True, "replicas": 2}
        assert (w.deployment(cluster, CANARY) or {}).get("replicas") == 0
        assert w.weights(cluster) == {STABLE: 100, CANARY: 0}


@pytest.mark.parametrize("world", [WAVES], indirect=True)
def test_rollback_in_the_second_wave_returns_traffic_first_and_the_first_cluster_to_v1(world: World) -> None:
    w, app = world.witness, world.policy.app
    world.runner.handle(push(app, "v1"))
    world.runner.handle(push(app, "v2"))
    world.ticks_until(lambda: world.settled(Phase.WAITING, gate=f"wave-{DC2}"), advance=10)
    assert w.deployment(MAIN, STABLE) == {"image": V2, "ready": True, "replicas": 2}
    handle(world.runner, command(app, "approve", gate=f"wave-{DC2}"))
    world.ticks_until(lambda: w.weights(DC2).get(CANARY) == 50, advance=0)
    mark = len(w.calls)

    world.providers.measure_fn = bad  # the canary in dc-2 fails its analysis
    world.ticks_until(lambda: world.settled(Phase.ROLLED_BACK), advance=10)
    # dc-2: all traffic on its stable (read from its IngressRoute) before its canary scales down
    back = w.index(DC2, "set_routes", STABLE_ONLY, after=mark - 1)
    down = w.index(DC2, "scale_down_canary", after=back)
    assert w.calls[back].at < w.calls[down].at
    assert w.calls[down].seen["weights"] == {STABLE: 100, CANARY: 0}
    assert w.deployment(DC2, STABLE) == {"image": V1, "ready": True, "replicas": 2}
    assert (w.deployment(DC2, CANARY) or {}).get("replicas") == 0
    # dc-main, promoted in wave 1, returns to v1 and is rolled out
    w.index(MAIN, "promote_stable", V1, after=mark - 1)
    assert w.deployment(MAIN, STABLE) == {"image": V1, "ready": True, "replicas": 2}
    assert w.weights(MAIN) == w.weights(DC2) == {STABLE: 100, CANARY: 0}
    assert world.state().stable.image == V1


@pytest.mark.parametrize("world", [BLUE_GREEN], indirect=True)
def test_blue_green_switches_to_a_ready_green_and_back_to_a_promoted_stable(world: World) -> None:
    w, app = world.witness, world.policy.app
    world.runner.handle(push(app, "v1"))
    world.runner.handle(push(app, "v2"))
    # green is deployed and ready while it takes no traffic; the preview timer has not fired (clock stopped)
    world.ticks_until(lambda: world.settled(Phase.PROGRESSING), advance=0)
    assert w.deployment(MAIN, CANARY) == {"image": V2, "ready": True, "replicas": 2}
    assert w.weights(MAIN) == {STABLE: 100, CANARY: 0}
    assert w.deployment(MAIN, STABLE) == {"image": V1, "ready": True, "replicas": 2}

    world.ticks_until(lambda: world.settled(Phase.SUCCEEDED), advance=1)
    switch = w.index(HERE, "set_routes", ALL_CANARY)
    assert w.calls[switch].seen["canary"] == {"image": V2, "ready": True, "replicas": 2}
    assert w.calls[switch].seen["weights"] == {STABLE: 100, CANARY: 0}
    first = w.index(HERE, "promote_stable", V2, after=switch, outcome="not-ready")
    # while the stable rolls out to v2, all traffic is on green
    assert w.calls[first].seen["weights"] == {STABLE: 0, CANARY: 100}
    assert_promoted_before_traffic_returns(w, HERE, after=first)
    back = w.index(HERE, "set_routes", STABLE_ONLY, after=first)
    assert w.calls[back].seen["weights"] == {STABLE: 0, CANARY: 100}
    assert w.deployment(MAIN, STABLE) == {"image": V2, "ready": True, "replicas": 2}
    assert (w.deployment(MAIN, CANARY) or {}).get("replicas") == 0
    assert w.weights(MAIN) == {STABLE: 100, CANARY: 0}
