"""HPA-aware canaries on the real apiserver: when the stable Deployment has a HorizontalPodAutoscaler
(autoscaling/v2), the canary gets one too — the stable's spec pointed at the canary, its bounds scaled to the
canary's share of the traffic, labelled graylane's and owned by the canary Deployment — and promotion and
rollback delete it before the canary scales to zero. The user's HPA is only ever read: its bytes, as the
apiserver serves them, are the same after a release as before.

The release tests run the Runner with KubernetesProviders (Traefik IngressRoute routes, Deployments rolled out by
kube-controller-manager onto kwok's fake Nodes). One of them also runs the real HPA controller
(kube-controller-manager's horizontal-pod-autoscaler-controller, in a process of its own): there is no metrics
server here, so it does what an HPA does whatever the metrics, keep its target within minReplicas..maxReplicas;
that is enough to see graylane's HPA drive the canary Deployment and the user's keep driving the stable.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from functions.core.events import MetricSample
from functions.core.policy import (
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    Policy,
    PromoteStage,
    RouterSpec,
    WorkloadSpec,
)
from functions.core.state import AppState, Phase, Release
from functions.errors import ConflictError, NotReady
from functions.providers.factory import KubernetesProviders
from functions.providers.kube import client_from
from functions.providers.recording import healthy
from functions.providers.stores.memory import MemoryStore
from functions.providers.workloads.autoscaling import DERIVED_FROM, CanaryAutoscaler
from functions.providers.workloads.base import WorkloadTarget
from functions.providers.workloads.kubernetes import KubernetesWorkloads
from functions.runner import Runner
from functions.settings import Settings
from tests.contract.workload_support import REPO, deployment, image_of, stable_deployment
from tests.k8s.cluster import KubeCluster, wait_deployment_ready
from tests.support import Clock, StaticPolicies, canary_policy, push, tick

pytestmark = pytest.mark.k8s
HPA = ("autoscaling", "v2", "horizontalpodautoscalers")
OPTIONS = {
    "ingressRoute": "k8s-flask-pro",
    "host": "pro.coding",
    "entryPoints": ["web"],
    "group": "traefik.io",
    "stableService": "k8s-flask",
    "canaryService": "k8s-flask-canary",
    "port": 8080,
    "create": True,  # the namespace starts empty: graylane makes the IngressRoute
}
# the user's HPA of the stable: two metrics, a behavior, labels and annotations of their own
USERS_HPA: dict[str, Any] = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {
        "name": "k8s-flask",
        "labels": {"team": "web", "app": "k8s-flask"},
        "annotations": {"owner": "web-team", "note": "sized for the Friday peak"},
    },
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "k8s-flask"},
        "minReplicas": 4,
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
            },
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "http_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "100"},
                },
            },
        ],
        "behavior": {
            "scaleDown": {
                "stabilizationWindowSeconds": 120,
                "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
            }
        },
    },
}


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    with client_from(kube.configuration) as api_client:
        yield api_client


@pytest.fixture
def hpa_controller(kube: KubeCluster, tmp_path: Any) -> Iterator[None]:
    """The real HPA controller of kube-controller-manager v1.37, syncing every second, for this test only."""
    log = tmp_path / "hpa-controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(kube.binaries.controller_manager),
                f"--kubeconfig={kube.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--controllers=horizontal-pod-autoscaler-controller",
                "--horizontal-pod-autoscaler-sync-period=1s",
                "--use-service-account-credentials=false",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def users_hpa(api: Any, ns: str, body: dict[str, Any] | None = None) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        *HPA[:2], ns, HPA[2], copy.deepcopy(body or USERS_HPA)
    )


def raw_hpa(api: Any, ns: str, name: str) -> bytes:
    """The HPA exactly as the apiserver serves it (bytes, resourceVersion included)."""
    answer = client.CustomObjectsApi(api).get_namespaced_custom_object(
        *HPA[:2], ns, HPA[2], name, _preload_content=False
    )
    return bytes(answer.data)


def hpa(api: Any, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(*HPA[:2], ns, HPA[2], name))
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


def hpas(api: Any, ns: str) -> list[str]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(*HPA[:2], ns, HPA[2])["items"]
    return sorted(h["metadata"]["name"] for h in items)


def bounds(api: Any, ns: str, name: str = "k8s-flask-canary") -> tuple[int, int] | None:
    live = hpa(api, ns, name)
    return None if live is None else (live["spec"]["minReplicas"], live["spec"]["maxReplicas"])


def weights(api: Any, ns: str) -> dict[str, int]:
    try:
        route = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "traefik.io", "v1alpha1", ns, "ingressroutes", "k8s-flask-pro"
        )
    except client.ApiException as err:
        if err.status == 404:
            return {}
        raise
    return {s["name"]: s["weight"] for s in route["spec"]["routes"][-1]["services"]}


def bad(policy: Policy, _: Release) -> tuple[MetricSample, ...]:
    return (MetricSample(name="success-rate", value=0.5, canary_requests=500),)


def ready(api: Any, ns: str, name: str) -> int:
    try:
        return int(client.AppsV1Api(api).read_namespaced_deployment(name, ns).status.ready_replicas or 0)
    except client.ApiException as err:
        if err.status == 404:  # not deployed yet
            return 0
        raise


class SeeingRouter:
    """The real router; before each route change it notes the canary's weight and its ready pods, as the
    apiserver shows them at that moment."""

    def __init__(self, router: Any, api: Any, ns: str, seen: list[tuple[int, int]]) -> None:
        self.router, self.api, self.ns, self.seen = router, api, ns, seen

    def set_routes(self, target: Any, plan: Any) -> None:
        self.seen.append((plan.canary, ready(self.api, self.ns, "k8s-flask-canary")))
        self.router.set_routes(target, plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


class Providers(KubernetesProviders):
    """The production factory; only measure is scripted (Prometheus is tested on its own)."""

    def __init__(self, kube: Any, ns: str) -> None:
        super().__init__(
            Settings(providers="kubernetes"), client_for=lambda cluster: client_from(kube.configuration)
        )
        self.measure_fn: Callable[[Policy, Release], tuple[MetricSample, ...]] = healthy
        self.ns = ns
        self.seen: list[tuple[int, int]] = []  # (the canary's weight, its pods ready) at each route change

    def router(self, policy: Policy, cluster: str) -> Any:
        return SeeingRouter(super().router(policy, cluster), self.client(cluster), self.ns, self.seen)

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.measure_fn(policy, release)


class Release_:
    """A policy (10 % → 50 % → promote by default), driven tick by tick through the Runner on a fake clock."""

    def __init__(self, kube: Any, ns: str, stages: tuple[Any, ...] = ()) -> None:
        steps = stages or (CanaryStage(steps=(CanaryStep(10, 30.0), CanaryStep(50, 30.0))), PromoteStage())
        base = canary_policy("flask", ns, stages=steps)
        assert base.analysis is not None
        # no Prometheus here (measure is scripted): the guard and adaptive exposure, which read Traefik's
        # counters from it, are off, so each step routes its own weight (tests/unit/test_exposure.py sizes the
        # canary for the capped weight)
        self.policy = replace(
            base,
            router=RouterSpec("traefik", dict(OPTIONS)),
            workload=WorkloadSpec(name="k8s-flask", canary="k8s-flask-canary", container="flask"),
            analysis=replace(base.analysis, guard=False, exposure_budget=0.0),
        )
        self.store, self.clock, self.providers = MemoryStore(), Clock(), Providers(kube, ns)
        self.runner = Runner(self.store, StaticPolicies([self.policy]), self.providers, clock=self.clock)

    def state(self) -> AppState:
        doc, _ = self.store.load(self.policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    def push(self, version: str) -> None:
        self.runner.handle(push(self.policy.app, version))

    def until(self, done: Callable[[], bool], advance: float = 0, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out; state: {self.state().release}"
            self.clock.advance(advance)
            self.runner.handle(tick(self.policy.app))
            time.sleep(0.2)

    def settled(self, phase: Phase) -> bool:
        state = self.state()
        return state.release is not None and state.release.phase == phase and not state.pending


def test_hpa_canary_follows_the_stables_hpa_through_promotion_and_rollback_and_the_users_hpa_keeps_its_bytes(
    api: Any, ns: str, kube: Any, nodes: Any
) -> None:
    stable_deployment(api, ns, replicas=4)
    users_hpa(api, ns)
    before = raw_hpa(api, ns, "k8s-flask")
    users_spec = hpa(api, ns, "k8s-flask")["spec"]  # type: ignore[index]
    run = Release_(kube, ns)
    try:
        run.push("v1")
        run.push("v2")
        run.until(lambda: weights(api, ns).get("k8s-flask-canary") == 10)
        run.until(lambda: bounds(api, ns) is not None)  # the same tick, after the route
        mine = hpa(api, ns, "k8s-flask-canary")
        assert mine is not None
        canary = deployment(api, ns, "k8s-flask-canary")
        # the user's spec (metrics, behavior) pointed at the canary, at ceil(10 % of 4..10) = 1..1
        assert mine["spec"] == {
            **users_spec,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "k8s-flask-canary"},
            "minReplicas": 1,
            "maxReplicas": 1,
        }
        assert mine["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "graylane",
            "graylane.dev/app": "flask",
        }
        assert mine["metadata"]["annotations"] == {DERIVED_FROM: "k8s-flask"}
        assert mine["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "k8s-flask-canary",
                "uid": canary["metadata"]["uid"],
            }
        ]
        run.until(lambda: bounds(api, ns) == (2, 5), advance=10)  # 50 %: ceil(2.0)..ceil(5.0)
        run.until(lambda: run.settled(Phase.SUCCEEDED), advance=10)
        # promoted: the stable runs v2 under the user's HPA; graylane's HPA went before the canary scaled down
        assert hpas(api, ns) == ["k8s-flask"]
        assert deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 0
        assert image_of(deployment(api, ns, "k8s-flask")) == f"{REPO}:v2"
        assert raw_hpa(api, ns, "k8s-flask") == before

        run.push("v3")
        run.until(lambda: bounds(api, ns) == (1, 1))
        assert image_of(deployment(api, ns, "k8s-flask-canary")) == f"{REPO}:v3"
        run.providers.measure_fn = bad
        run.until(lambda: run.settled(Phase.ROLLED_BACK), advance=10)
        assert hpas(api, ns) == ["k8s-flask"]
        assert deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 0
        assert image_of(deployment(api, ns, "k8s-flask")) == f"{REPO}:v2"
        assert raw_hpa(api, ns, "k8s-flask") == before  # not one write to the user's HPA in two releases
    finally:
        run.providers.close()


def test_hpa_the_real_hpa_controller_sizes_the_canary_within_graylanes_bounds(
    api: Any, ns: str, kube: Any, nodes: Any, hpa_controller: None
) -> None:
    stable_deployment(api, ns, replicas=4)
    users_hpa(api, ns)
    users_spec = hpa(api, ns, "k8s-flask")["spec"]  # type: ignore[index]
    apps = client.AppsV1Api(api)

    def replicas(name: str) -> int:
        return int(apps.read_namespaced_deployment_scale(name, ns).spec.replicas or 0)  # 0 is left out

    run = Release_(kube, ns)
    try:
        run.push("v1")
        run.push("v2")
        run.until(lambda: bounds(api, ns) == (1, 1))
        # deployed at the stable's 4 replicas; the HPA controller takes the canary down to its maxReplicas
        run.until(lambda: replicas("k8s-flask-canary") == 1, timeout=30)
        run.until(lambda: bounds(api, ns) == (2, 5), advance=10)
        assert weights(api, ns)["k8s-flask-canary"] == 10  # the route waits for the canary's new minimum
        run.until(lambda: replicas("k8s-flask-canary") == 2, timeout=30)  # the HPA controller raises it
        run.until(lambda: weights(api, ns)["k8s-flask-canary"] == 50, timeout=30)
        # every route change found the canary with at least the HPA minimum of its new share ready
        assert [(w, r) for w, r in run.providers.seen if w] in ([(10, 4), (50, 2)], [(10, 4), (50, 3)])
        status = hpa(api, ns, "k8s-flask-canary")["status"]  # type: ignore[index]
        assert status["desiredReplicas"] == 2
        assert replicas("k8s-flask") == 4  # the user's HPA keeps the stable within 4..10
        run.until(lambda: run.settled(Phase.SUCCEEDED), advance=10)
        assert hpas(api, ns) == ["k8s-flask"]
        time.sleep(3)  # three syncs of the HPA controller: nothing scales the canary back up
        assert replicas("k8s-flask-canary") == 0 and replicas("k8s-flask") == 4
        assert hpa(api, ns, "k8s-flask")["spec"] == users_spec  # type: ignore[index]
    finally:
        run.providers.close()


def test_hpa_blue_green_switches_only_once_green_has_the_stables_minimum_ready(
    api: Any, ns: str, kube: Any, nodes: Any, hpa_controller: None
) -> None:
    stable_deployment(api, ns, replicas=4)
    users_hpa(api, ns)
    run = Release_(kube, ns, (BlueGreenStage(preview=30.0, analysis=False), PromoteStage()))
    try:
        run.push("v1")
        run.push("v2")
        run.until(lambda: bounds(api, ns) == (1, 1))  # green, previewed with no user traffic: 1..1
        run.until(
            lambda: (
                ready(api, ns, "k8s-flask-canary") == 1
                and deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 1
            ),
            timeout=30,
        )
        run.until(
            lambda: bounds(api, ns) == (4, 10), advance=30
        )  # the switch: green gets the stable's bounds
        assert weights(api, ns).get("k8s-flask-canary", 0) == 0  # and users wait on blue until it has 4 ready
        run.until(lambda: run.settled(Phase.SUCCEEDED), timeout=60)
        switch = [(w, r) for w, r in run.providers.seen if w == 100]
        assert len(switch) == 1 and switch[0][1] >= 4, run.providers.seen
        assert hpas(api, ns) == ["k8s-flask"] and image_of(deployment(api, ns, "k8s-flask")) == f"{REPO}:v2"
    finally:
        run.providers.close()


# -- the autoscaler on its own, on a canary Deployment whose pods run on the fake Nodes -----------------------


def target(ns: str) -> WorkloadTarget:
    return WorkloadTarget(ns, "flask", "k8s-flask", "k8s-flask-canary", container="flask")


def canary_deployment(api: Any, ns: str) -> None:
    stable = deployment(api, ns, "k8s-flask")
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "k8s-flask-canary"},
        "spec": {
            **stable["spec"],
            "selector": {"matchLabels": {"app": "k8s-flask-canary"}},
            "template": {**stable["spec"]["template"], "metadata": {"labels": {"app": "k8s-flask-canary"}}},
        },
    }
    client.AppsV1Api(api).create_namespaced_deployment(ns, body)
    wait_deployment_ready(client.AppsV1Api(api), ns, "k8s-flask-canary")


def spy_writes(scaler: CanaryAutoscaler) -> list[str]:
    writes: list[str] = []
    for verb in (
        "create_namespaced_custom_object",
        "patch_namespaced_custom_object",
        "delete_namespaced_custom_object",
    ):
        real = getattr(scaler.api, verb)

        def spy(*args: Any, _real: Any = real, _verb: str = verb, **kw: Any) -> Any:
            writes.append(_verb.split("_")[0])
            return _real(*args, **kw)

        setattr(scaler.api, verb, spy)
    return writes


def test_hpa_resizes_only_what_changed_and_a_match_route_may_grow_as_far_as_the_stable(
    api: Any, ns: str, nodes: Any
) -> None:
    stable_deployment(api, ns, replicas=3, wait=False)
    users_hpa(api, ns, {**USERS_HPA, "spec": {**USERS_HPA["spec"], "minReplicas": 3, "maxReplicas": 7}})
    scaler = KubernetesWorkloads(api).autoscaler
    with pytest.raises(NotReady, match="no canary Deployment yet"):
        scaler.follow(target(ns), 20)
    canary_deployment(api, ns)
    writes = spy_writes(scaler)
    scaler.follow(target(ns), 20)
    assert bounds(api, ns) == (1, 2) and writes == ["create"]  # ceil(0.6)..ceil(1.4)
    scaler.follow(target(ns), 20)
    assert writes == ["create"]  # the same share again: nothing written
    scaler.follow(target(ns), None)  # a header/cookie route: nobody knows the share
    assert bounds(api, ns) == (1, 7) and writes == ["create", "patch"]
    scaler.follow(target(ns), 100)
    assert bounds(api, ns) == (3, 7)
    scaler.remove(target(ns))
    scaler.remove(target(ns))  # idempotent
    assert hpas(api, ns) == ["k8s-flask"] and writes == ["create", "patch", "patch", "delete"]


def test_hpa_a_resize_that_lost_a_race_is_a_conflict_never_an_overwrite(
    api: Any, ns: str, nodes: Any
) -> None:
    stable_deployment(api, ns, replicas=3, wait=False)
    users_hpa(api, ns)
    canary_deployment(api, ns)
    scaler = KubernetesWorkloads(api).autoscaler
    scaler.follow(target(ns), 10)
    stale = hpa(api, ns, "k8s-flask-canary")
    assert stale is not None
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        *HPA[:2], ns, HPA[2], "k8s-flask-canary", {"metadata": {"labels": {"touched": "yes"}}}
    )
    with pytest.raises(ConflictError, match="changed meanwhile"):
        scaler._patch(stale, [{"op": "replace", "path": "/spec/maxReplicas", "value": 9}])
    assert bounds(api, ns) == (1, 1)
    scaler.follow(target(ns), 50)  # the retried effect reads anew
    assert bounds(api, ns) == (2, 5)


def test_hpa_none_without_a_stable_hpa_and_the_users_own_canary_hpa_is_left_alone(
    api: Any, ns: str, nodes: Any
) -> None:
    stable_deployment(api, ns, replicas=3, wait=False)
    canary_deployment(api, ns)
    scaler = KubernetesWorkloads(api).autoscaler
    scaler.follow(target(ns), 50)
    assert hpas(api, ns) == []  # no HPA on the stable: none for the canary
    users_hpa(api, ns)
    scaler.follow(target(ns), 50)
    assert bounds(api, ns) == (2, 5)
    with pytest.raises(NotReady, match="3 ready of the 4 its HPA keeps for 100 % of the traffic"):
        scaler.follow(target(ns), 100)  # written; done once the HPA controller made it 4 (none runs here)
    assert bounds(api, ns) == (4, 10)
    client.CustomObjectsApi(api).delete_namespaced_custom_object(*HPA[:2], ns, HPA[2], "k8s-flask")
    scaler.follow(target(ns), 50)  # the user dropped the stable's HPA: graylane drops the canary's
    assert hpas(api, ns) == []
    users_hpa(api, ns)
    own = {
        **USERS_HPA,
        "metadata": {"name": "canary-by-hand"},
        "spec": {
            **USERS_HPA["spec"],
            "minReplicas": 1,
            "maxReplicas": 2,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "k8s-flask-canary"},
        },
    }
    users_hpa(api, ns, own)
    before = raw_hpa(api, ns, "canary-by-hand")
    scaler.follow(target(ns), 50)
    scaler.remove(target(ns))
    assert hpas(api, ns) == [
        "canary-by-hand",
        "k8s-flask",
    ]  # graylane makes none and deletes none of the user's
    assert raw_hpa(api, ns, "canary-by-hand") == before
