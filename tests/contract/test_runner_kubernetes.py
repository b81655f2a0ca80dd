"""A release end to end through the Runner on the real apiserver: KubernetesProviders moving Traefik routes
(IngressRoute CRD) and real Deployments rolled out by kube-controller-manager onto fake Nodes (kwok).

A witness wraps the real router and workloads: before each call it reads, straight from the apiserver, what
the ordering rules are about, so the test checks what the cluster looked like at the moment traffic moved or
the canary went away, not just the order of calls.
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
from functions.core.policy import CanaryStage, CanaryStep, Policy, PromoteStage, RouterSpec, WorkloadSpec
from functions.core.state import AppState, Phase, Release
from functions.errors import NotReady
from functions.providers.factory import KubernetesProviders
from functions.providers.kube import client_from
from functions.providers.recording import healthy
from functions.providers.stores.memory import MemoryStore
from functions.providers.workloads.kubernetes import KubernetesWorkloads
from functions.runner import Runner
from functions.settings import Settings
from tests.contract.workload_support import REPO, deployment, image_of, stable_deployment
from tests.k8s.cluster import deployment_is_ready
from tests.support import Clock, StaticPolicies, canary_policy, push, tick

pytestmark = pytest.mark.k8s
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


@dataclass
class Call:
    at: float
    verb: str
    arg: Any
    seen: dict[str, Any]  # what the apiserver showed just before the call
    outcome: str = "ok"


@dataclass
class Witness:
    api: Any
    ns: str
    calls: list[Call] = field(default_factory=list)

    def stable(self) -> dict[str, Any]:
        dep = client.AppsV1Api(self.api).read_namespaced_deployment("k8s-flask", self.ns)
        return {"image": dep.spec.template.spec.containers[1].image, "ready": deployment_is_ready(dep)}

    def weights(self) -> dict[str, int]:
        try:
            route = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                "traefik.io", "v1alpha1", self.ns, "ingressroutes", "k8s-flask-pro"
            )
        except client.ApiException as err:
            if err.status == 404:  # not created yet
                return {}
            raise
        listed = {s["name"]: s["weight"] for s in route["spec"]["routes"][-1]["services"]}
        return {
            "k8s-flask": 0,
            "k8s-flask-canary": 0,
            **listed,
        }  # a Service the route does not list gets none

    def record(self, verb: str, arg: Any, seen: dict[str, Any], call: Callable[[], Any]) -> Any:
        entry = Call(time.monotonic(), verb, arg, seen)
        self.calls.append(entry)
        try:
            return call()
        except NotReady:
            entry.outcome = "not-ready"
            raise

    def index(self, verb: str, arg: Any = None, outcome: str = "ok", after: int = -1) -> int:
        return next(
            i
            for i, c in enumerate(self.calls)
            if i > after and c.verb == verb and c.outcome == outcome and (arg is None or c.arg == arg)
        )


class WitnessRouter:
    def __init__(self, router: Any, witness: Witness) -> None:
        self.router, self.witness = router, witness

    def set_routes(self, target: Any, plan: RoutePlan) -> None:
        self.witness.record(
            "set_routes", plan, self.witness.stable(), lambda: self.router.set_routes(target, plan)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


class WitnessWorkloads:
    def __init__(self, workloads: KubernetesWorkloads, witness: Witness) -> None:
        self.workloads, self.witness = workloads, witness

    def promote_stable(self, target: Any, image: str) -> None:
        self.witness.record("promote_stable", image, {}, lambda: self.workloads.promote_stable(target, image))

    def scale_down_canary(self, target: Any) -> None:
        seen = {"weights": self.witness.weights()}
        self.witness.record("scale_down_canary", None, seen, lambda: self.workloads.scale_down_canary(target))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.workloads, name)


class WitnessedProviders(KubernetesProviders):
    """The production factory; only measure is scripted (Prometheus is tested on its own)."""

    def __init__(self, kube: Any, witness: Witness) -> None:
        super().__init__(
            Settings(providers="kubernetes"), client_for=lambda cluster: client_from(kube.configuration)
        )
        self.witness = witness
        self.measure_fn: Callable[[Policy, Release], tuple[MetricSample, ...]] = healthy

    def router(self, policy: Policy, cluster: str) -> Any:
        return WitnessRouter(super().router(policy, cluster), self.witness)

    def workloads(self, policy: Policy, cluster: str) -> Any:
        return WitnessWorkloads(super().workloads(policy, cluster), self.witness)  # type: ignore[arg-type]

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.measure_fn(policy, release)


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    with client_from(kube.configuration) as api_client:
        yield api_client


def bad(policy: Policy, _: Release) -> tuple[MetricSample, ...]:
    return (MetricSample(name="success-rate", value=0.5, canary_requests=500),)


def test_traefik_release_promotes_on_a_ready_stable_and_rolls_back_traffic_first(
    api: Any, ns: str, kube: Any, nodes: Any
) -> None:
    stable_deployment(api, ns)
    steps = (CanaryStage(steps=(CanaryStep(20, 30.0), CanaryStep(50, 30.0))), PromoteStage())
    base = canary_policy("flask", ns, stages=steps)
    assert base.analysis is not None
    # no Prometheus here (measure is scripted): the guard and adaptive exposure, which read Traefik's counters
    # from it, are off, so each step routes its own weight
    policy = replace(
        base,
        router=RouterSpec("traefik", dict(OPTIONS)),
        workload=WorkloadSpec(name="k8s-flask", canary="k8s-flask-canary", container="flask"),
        analysis=replace(base.analysis, guard=False, exposure_budget=0.0),
    )
    witness, store, clock = Witness(api, ns), MemoryStore(), Clock()
    providers = WitnessedProviders(kube, witness)
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)

    def state() -> AppState:
        doc, _ = store.load(policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    def ticks_until(done: Callable[[], bool], advance: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (
                f"timed out; calls: {[(c.verb, c.outcome) for c in witness.calls]}"
            )
            clock.advance(advance)
            runner.handle(tick(policy.app))
            time.sleep(0.2)

    try:
        runner.handle(push(policy.app, "v1"))
        runner.handle(push(policy.app, "v2"))
        ticks_until(lambda: witness.weights().get("k8s-flask-canary") == 20, advance=0)  # canary ready, 20 %
        ticks_until(lambda: state().release.phase == Phase.SUCCEEDED and not state().pending, advance=10)
        # promotion: the stable Deployment is rolled out on v2 before the routes go back to it
        first = witness.index("promote_stable", f"{REPO}:v2", outcome="not-ready")
        done = witness.index("promote_stable", f"{REPO}:v2", after=first)
        back = witness.index("set_routes", STABLE_ONLY, after=first)
        assert done < back and witness.calls[back].seen == {"image": f"{REPO}:v2", "ready": True}
        assert (
            witness.calls[done].at
            < witness.calls[back].at
            < witness.calls[witness.index("scale_down_canary")].at
        )
        assert witness.weights() == {"k8s-flask": 100, "k8s-flask-canary": 0}
        assert deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 0

        mark = len(witness.calls)
        runner.handle(push(policy.app, "v3"))
        ticks_until(lambda: witness.weights().get("k8s-flask-canary") == 20, advance=0)
        assert image_of(deployment(api, ns, "k8s-flask-canary")) == f"{REPO}:v3"
        providers.measure_fn = bad
        ticks_until(lambda: state().release.phase == Phase.ROLLED_BACK and not state().pending, advance=10)
        # rollback: traffic is all on stable (as read from the IngressRoute) before the canary scales down
        back = witness.index("set_routes", STABLE_ONLY, after=mark)
        down = witness.index("scale_down_canary", after=mark)
        assert back < down and witness.calls[back].at < witness.calls[down].at
        assert witness.calls[down].seen == {"weights": {"k8s-flask": 100, "k8s-flask-canary": 0}}
        assert deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 0
        assert image_of(deployment(api, ns, "k8s-flask")) == f"{REPO}:v2"
    finally:
        providers.close()


def test_a_release_on_an_ingressroute_that_does_not_exist_fails_naming_it(
    api: Any, ns: str, kube: Any, nodes: Any
) -> None:
    """Without router option create, graylane never makes an IngressRoute next to the user's: the first
    route change fails for good (MissingObject), the release fails with the name in its reason and history,
    and nothing is created."""
    stable_deployment(api, ns)
    options = {k: v for k, v in OPTIONS.items() if k != "create"}
    steps = (CanaryStage(steps=(CanaryStep(20, 30.0),)), PromoteStage())
    policy = replace(
        canary_policy("flask", ns, stages=steps),
        router=RouterSpec("traefik", options),
        workload=WorkloadSpec(name="k8s-flask", canary="k8s-flask-canary", container="flask"),
    )
    witness, store, clock = Witness(api, ns), MemoryStore(), Clock()
    providers = WitnessedProviders(kube, witness)
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)

    def state() -> AppState:
        doc, _ = store.load(policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    missing = f"IngressRoute {ns}/k8s-flask-pro (group traefik.io) does not exist"
    try:
        runner.handle(push(policy.app, "v1"))
        runner.handle(push(policy.app, "v2"))
        deadline = time.monotonic() + 60
        while not (state().release is not None and not state().release.active and not state().pending):
            assert time.monotonic() < deadline, f"still {state().release}; pending {state().pending}"
            runner.handle(tick(policy.app))
            time.sleep(0.2)
        rel = state().release
        assert rel.phase in (Phase.FAILED, Phase.FROZEN, Phase.ROLLED_BACK), rel
        assert missing in rel.reason, rel.reason
        assert any(missing in h.reason for h in state().history if h.action in ("effect-failed", "failed")), [
            (h.action, h.reason) for h in state().history
        ]
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "traefik.io", "v1alpha1", ns, "ingressroutes"
        )["items"]
        assert listed == []
    finally:
        providers.close()
