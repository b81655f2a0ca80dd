"""One Deployment per version on the real apiserver (issue 12 item 7, `-k version_subsets`): seed 003's
Bookinfo `reviews`, released v1 -> v2 -> v3 and rolled back, through the Runner and the production factory
(KubernetesProviders: the Istio router on the upstream Istio CRDs, KubernetesWorkloads), the Deployments
rolled out by kube-controller-manager onto kwok's fake Nodes.

The user's objects are Bookinfo's own (platform/kube/bookinfo.yaml's reviews-v1 Deployment, its
destination-rule and virtual-service): graylane must create reviews-v2 and reviews-v3 from the stable
version's spec, add their subsets to the user's DestinationRule next to the user's, move weight between
the subsets, never re-image a Deployment, and leave everything of the user's as it was (the first
Deployment's replicas aside, which are scaled to zero while another version is stable and back when it is
rolled back to). Every Istio object written is validated by istioctl as stored (tests/k8s/istio_validate.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from functions.core.events import MetricSample
from functions.core.policy import CanaryStage, CanaryStep, Policy, PromoteStage
from functions.core.policy_parse import parse_policy
from functions.core.state import AppState, Phase, Release
from functions.errors import NotReady
from functions.providers.factory import KubernetesProviders
from functions.providers.kube import client_from
from functions.providers.recording import healthy
from functions.providers.routers._common import Objects
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from functions.settings import Settings
from tests.contract.workload_support import until_ready
from tests.k8s.cluster import wait_deployment_ready
from tests.k8s.istio_validate import assert_istio_valid
from tests.support import Clock, StaticPolicies, command, push, tick

pytestmark = pytest.mark.k8s
EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "examples" / "istio-bookinfo.yaml"
GROUP, VERSION = "networking.istio.io", "v1"
REPO = "registry.example.com/bookinfo/reviews"
# volatile metadata the apiserver moves on every write; the rest of a user's object must not change
VOLATILE = ("resourceVersion", "generation", "managedFields")


def reviews_v1() -> dict[str, Any]:
    """Bookinfo's reviews-v1 (platform/kube/bookinfo.yaml), image from the example's repository."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "reviews-v1",
            "labels": {"app": "reviews", "version": "v1"},
            "annotations": {"team.example.com/owner": "bookinfo"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
            "template": {
                "metadata": {
                    "labels": {"app": "reviews", "version": "v1"},
                    "annotations": {"sidecar.istio.io/inject": "true"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "reviews",
                            "image": f"{REPO}:v1",
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                            "ports": [{"containerPort": 9080}],
                            "volumeMounts": [
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "wlp-output", "mountPath": "/opt/ibm/wlp/output"},
                            ],
                        }
                    ],
                    "volumes": [{"name": "wlp-output", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def destination_rule() -> dict[str, Any]:
    """Bookinfo's destination-rule-all-mtls.yaml for reviews, with only the v1 subset (seed 003's start)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "labels": {"app": "reviews"}},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
        },
    }


def virtual_service() -> dict[str, Any]:
    """Bookinfo's reviews VirtualService as users grow it (virtual-service-all-v1.yaml, plus the samples'
    end-user jason route, here pinned to v1, and retries, a timeout and a header on everyone's route)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "labels": {"app": "reviews"}, "annotations": {"owner": "bookinfo"}},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                },
                {
                    "name": "everyone",
                    "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
                    "timeout": "10s",
                    "headers": {"request": {"set": {"x-team": "bookinfo"}}},
                },
            ],
        },
    }


def users_part_of_vs(vs: dict[str, Any]) -> dict[str, Any]:
    """The VirtualService without what graylane owns: the weights of everyone's route (the managed one, its
    destinations being the versions'), graylane's annotations."""
    out = bare(vs)
    annotations = {
        k: v for k, v in out["metadata"].get("annotations", {}).items() if not k.startswith("graylane.dev/")
    }
    out["metadata"]["annotations"] = annotations
    for route in out["spec"]["http"]:
        if route.get("name") == "everyone":
            route["route"] = [{k: v for k, v in d.items() if k != "weight"} for d in route["route"]]
    return out


def bookinfo_policy(ns: str) -> Policy:
    """The seed 003 example, with timed steps instead of its gates so the test can run it unattended, and one
    retired Deployment kept (so a rollback's retirement deletes the one retired longest ago)."""
    pol = parse_policy(yaml.safe_load(EXAMPLE.read_text()))
    stages = (
        CanaryStage(steps=(CanaryStep(20, 30.0), CanaryStep(50, 30.0))),
        PromoteStage(keep_previous=60.0),
    )
    assert pol.analysis is not None
    workload = replace(pol.workload, keep_retired=1)
    return replace(
        pol,
        namespace=ns,
        stages=stages,
        workload=workload,
        # no Prometheus here (measure is scripted): the guard and adaptive exposure, which read the counters
        # from it, are off, so each step routes its own weight
        analysis=replace(pol.analysis, interval=15.0, guard=False, exposure_budget=0.0),
    )


def bare(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without status, the metadata the apiserver moves on each write, and the revision annotation
    kube-controller-manager's deployment controller sets (whenever it gets to it)."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    for key in VOLATILE:
        out["metadata"].pop(key, None)
    annotations = out["metadata"].get("annotations") or {}
    annotations.pop("deployment.kubernetes.io/revision", None)
    if "annotations" in out["metadata"] and not annotations:
        del out["metadata"]["annotations"]
    return out


@dataclass
class Cluster:
    api: Any
    ns: str
    moments: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (verb, what, seen)

    def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                    "apps", "v1", self.ns, "deployments", name
                )
            )
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def istio(self, plural: str) -> dict[str, Any]:
        return dict(
            client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, "reviews"
            )
        )

    def weights(self) -> dict[str, int]:
        """Subset -> weight of the route graylane weighs (everyone's, or its own in a VirtualService it created;
        a lone destination takes 100)."""
        out: dict[str, int] = {}
        for http in self.istio("virtualservices")["spec"].get("http", []):
            if http.get("name") not in ("everyone", "graylane-primary"):
                continue
            for d in http.get("route", []):
                subset = d["destination"].get("subset", "")
                out[subset] = out.get(subset, 0) + int(d.get("weight", 100 if len(http["route"]) == 1 else 0))
        return out

    def ready(self, name: str) -> bool:
        dep = self.deployment(name)
        if dep is None:
            return False
        status, want = dep.get("status", {}), dep["spec"].get("replicas", 1)
        return bool(
            want
            and status.get("updatedReplicas") == want
            and status.get("availableReplicas") == want
            and status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
        )


class WitnessRouter:
    """Before each route change: which versions' Deployments were ready (traffic must only go to ready ones)."""

    def __init__(self, router: Any, cluster: Cluster) -> None:
        self.router, self.cluster = router, cluster

    def set_routes(self, target: Any, plan: Any) -> None:
        versions = target.versions
        routed = [s.workload for s in (versions.stable, versions.canary) if s is not None]
        seen = {name: self.cluster.ready(name) for name in routed}
        self.cluster.moments.append(
            ("set_routes", f"{target.stable}:{plan.stable}/{target.canary}:{plan.canary}", seen)
        )
        self.router.set_routes(target, plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


class WitnessWorkloads:
    """Before a version's Deployment is scaled down: what the VirtualService sent to its subset."""

    def __init__(self, workloads: Any, cluster: Cluster) -> None:
        self.workloads, self.cluster = workloads, cluster

    def scale_down_version(self, target: Any, slot: Any) -> None:
        self.cluster.moments.append(
            ("scale_down", slot.workload, {"weight": self.cluster.weights().get(slot.subset, 0)})
        )
        self.workloads.scale_down_version(target, slot)

    def deploy_version(self, target: Any, slot: Any, source: str) -> None:
        try:
            self.workloads.deploy_version(target, slot, source)
        except NotReady:
            raise
        self.cluster.moments.append(("deployed", slot.workload, {"ready": self.cluster.ready(slot.workload)}))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.workloads, name)


class Providers(KubernetesProviders):
    def __init__(self, kube: Any, cluster: Cluster) -> None:
        super().__init__(
            Settings(providers="kubernetes"), client_for=lambda _: client_from(kube.configuration)
        )
        self.cluster = cluster
        self.measure_fn: Callable[[Policy, Release], tuple[MetricSample, ...]] = healthy

    def router(self, policy: Policy, cluster: str) -> Any:
        return WitnessRouter(super().router(policy, cluster), self.cluster)

    def workloads(self, policy: Policy, cluster: str) -> Any:
        return WitnessWorkloads(super().workloads(policy, cluster), self.cluster)

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.measure_fn(policy, release)


def failing(policy: Policy, _: Release) -> tuple[MetricSample, ...]:
    return (MetricSample(name="success-rate", value=0.5, canary_requests=500),)


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    with client_from(kube.configuration) as api_client:
        yield api_client


@pytest.fixture(name="validated")
def validated_fixture(api: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """istioctl validates every Istio object graylane creates or patches, as the apiserver stored it."""
    co, seen = client.CustomObjectsApi(api), []
    create, patch = Objects.create, Objects.patch

    def check(kind: Any, namespace: str, name: str, verb: str) -> None:
        if kind.group == GROUP:
            stored = dict(
                co.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name)
            )
            assert_istio_valid([stored], f"{kind.kind} {name} as stored after {verb}")
            seen.append(f"{kind.kind}/{verb}")

    def checked_create(self: Objects, namespace: str, name: str, *args: Any, **kwargs: Any) -> Any:
        created = create(self, namespace, name, *args, **kwargs)
        check(self.kind, namespace, name, "create")
        return created

    def checked_patch(self: Objects, obj: Any, ops: Any, verb: str) -> Any:
        result = patch(self, obj, ops, verb)
        check(self.kind, obj["metadata"]["namespace"], obj["metadata"]["name"], verb)
        return result

    monkeypatch.setattr(Objects, "create", checked_create)
    monkeypatch.setattr(Objects, "patch", checked_patch)
    return seen


def test_version_subsets_bookinfo_release_switches_subsets_and_never_re_images(
    api: Any, ns: str, kube: Any, nodes: Any, validated: list[str], caplog: Any
) -> None:
    apps, co = client.AppsV1Api(api), client.CustomObjectsApi(api)
    apps.create_namespaced_deployment(ns, reviews_v1())
    wait_deployment_ready(apps, ns, "reviews-v1")
    co.create_namespaced_custom_object(GROUP, VERSION, ns, "destinationrules", destination_rule())
    co.create_namespaced_custom_object(GROUP, VERSION, ns, "virtualservices", virtual_service())
    cluster = Cluster(api, ns)
    users = {
        "deployment": bare(cluster.deployment("reviews-v1") or {}),
        "destinationrule": bare(cluster.istio("destinationrules")),
        "virtualservice": users_part_of_vs(cluster.istio("virtualservices")),
    }
    policy = bookinfo_policy(ns)
    providers, store, clock = Providers(kube, cluster), MemoryStore(), Clock()
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)

    def state() -> AppState:
        doc, _ = store.load(policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    def ticks_until(done: Callable[[], bool], advance: float, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (
                f"timed out; last moments: {cluster.moments[-6:]}; pending: {[e.kind for e in state().pending]}"
            )
            clock.advance(advance)
            runner.handle(tick(policy.app))
            time.sleep(0.2)

    def settled(phase: Phase) -> Callable[[], bool]:
        return lambda: state().release is not None and state().release.phase == phase and not state().pending

    try:
        runner.handle(push(policy.app, "v1", repo=REPO))  # adopted: what reviews-v1 runs; all traffic to v1
        ticks_until(lambda: not state().pending, advance=0)
        assert cluster.weights() == {"v1": 100}

        # -- v2: its own Deployment from reviews-v1's spec, subset v2 beside the user's v1 ------------------
        runner.handle(push(policy.app, "v2", repo=REPO))
        ticks_until(lambda: cluster.weights().get("v2") == 20, advance=0)
        v2 = cluster.deployment("reviews-v2")
        assert v2 is not None
        pod = v2["spec"]["template"]
        assert v2["spec"]["selector"]["matchLabels"] == {"app": "reviews", "version": "v2"}
        assert pod["metadata"]["labels"] == {"app": "reviews", "version": "v2"}
        assert pod["spec"]["containers"][0]["image"] == f"{REPO}:v2" and v2["spec"]["replicas"] == 2
        user_pod = users["deployment"]["spec"]["template"]["spec"]
        assert {k: v for k, v in pod["spec"].items() if k != "containers"} == {
            k: v for k, v in user_pod.items() if k != "containers"
        }  # volumes, service account, ... as the user's
        assert {k: v for k, v in pod["spec"]["containers"][0].items() if k != "image"} == {
            k: v for k, v in user_pod["containers"][0].items() if k != "image"
        }  # env, ports, mounts
        assert v2["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "graylane"
        dr = cluster.istio("destinationrules")
        assert dr["spec"]["subsets"] == [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ]
        assert dr["spec"]["trafficPolicy"] == {"tls": {"mode": "ISTIO_MUTUAL"}}

        ticks_until(settled(Phase.SUCCEEDED), advance=15)
        # promotion switched the route to subset v2, kept reviews-v1 warm for keepPrevious, then scaled it down
        assert cluster.weights() in ({"v2": 100}, {"v2": 100, "v1": 0})
        assert (cluster.deployment("reviews-v1") or {})["spec"]["replicas"] == 0
        assert (cluster.deployment("reviews-v1") or {})["spec"]["template"]["spec"]["containers"][0][
            "image"
        ] == f"{REPO}:v1"  # never re-imaged: its version label tells the truth
        down = next(m for m in cluster.moments if m[0] == "scale_down" and m[1] == "reviews-v1")
        assert down[2] == {"weight": 0}  # no traffic left on v1 when it went
        assert all(all(seen.values()) for verb, _, seen in cluster.moments if verb == "set_routes"), (
            cluster.moments
        )

        # -- v3: from the stable reviews-v2; it fails its analysis and is rolled back, traffic first -----------
        providers.measure_fn = failing
        runner.handle(push(policy.app, "v3", repo=REPO))
        ticks_until(settled(Phase.ROLLED_BACK), advance=15)
        v3 = cluster.deployment("reviews-v3")
        assert v3 is not None and v3["metadata"]["annotations"]["graylane.dev/derived-from"] == "reviews-v2"
        assert v3["spec"]["replicas"] == 0 and cluster.weights().get("v3", 0) == 0
        down = next(m for m in cluster.moments if m[0] == "scale_down" and m[1] == "reviews-v3")
        assert down[2] == {"weight": 0}
        assert [s["name"] for s in cluster.istio("destinationrules")["spec"]["subsets"]] == ["v1", "v2", "v3"]
        assert (cluster.deployment("reviews-v2") or {})["spec"]["template"]["spec"]["containers"][0][
            "image"
        ] == f"{REPO}:v2"

        # -- rollback to v1: the user's Deployment scaled up again, traffic back to subset v1 ------------------
        providers.measure_fn = healthy
        runner.handle(command(policy.app, "rollback", version="v1", release=state().release.id))
        ticks_until(lambda: not state().pending and cluster.ready("reviews-v1"), advance=0)
        assert state().stable.version == "v1" and cluster.weights().get("v1") == 100
        assert (cluster.deployment("reviews-v2") or {})["spec"]["replicas"] == 0
        # keepRetired 1: reviews-v3, retired before reviews-v2, is deleted and its subset leaves the rule
        assert cluster.deployment("reviews-v3") is None
        assert [s["name"] for s in cluster.istio("destinationrules")["spec"]["subsets"]] == ["v1", "v2"]
        assert "DestinationRule/remove subsets" in validated
        # the user's objects, byte for byte (outside graylane's owned paths: subsets it added, its annotation)
        assert bare(cluster.deployment("reviews-v1") or {}) == users["deployment"]
        dr = bare(cluster.istio("destinationrules"))
        owned = dr["metadata"].get("annotations", {}).pop("graylane.dev/subsets", None)
        assert owned == "v2"
        if not dr["metadata"]["annotations"]:
            del dr["metadata"]["annotations"]
        dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] != "v2"]
        assert dr == users["destinationrule"]
        assert (
            users_part_of_vs(cluster.istio("virtualservices")) == users["virtualservice"]
        )  # jason's route too
        assert cluster.istio("virtualservices")["spec"]["http"][1]["route"] == [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}
        ]
        assert "DestinationRule/add subsets" in validated and "VirtualService/set routes" in validated
        said = [r.getMessage() for r in caplog.records if "routes-finalized" in r.getMessage()]
        assert any(
            "spec.http[0] still sends traffic to subset v1, not the stable version's (v2)" in m for m in said
        )
    finally:
        providers.close()


# -- the Istio router alone: subsets in the user's DestinationRule ---------------------------------------------


def route_target(ns: str, stable: Any, canary: Any, *subsets: Any, create: bool = False) -> Any:
    from functions.core.slots import Routed
    from functions.providers.routers.base import RouteTarget

    versions = Routed(stable=stable, canary=canary, subsets=subsets)
    options = {"virtualService": "reviews", "destinationRule": "reviews", "host": "reviews", "create": create}
    return RouteTarget(
        ns, "reviews", stable.workload, canary.workload if canary else "", options=options, versions=versions
    )


def test_version_subsets_router_refuses_a_users_subset_that_selects_other_pods(
    api: Any, ns: str, validated: list[str]
) -> None:
    from functions.core.effects import RoutePlan
    from functions.core.slots import Slot, new_slot
    from functions.errors import ConfigError
    from functions.providers.routers import make_router

    co = client.CustomObjectsApi(api)
    rule = destination_rule()
    rule["spec"]["subsets"].append({"name": "v2", "labels": {"version": "2.0"}})  # the user's, other pods
    co.create_namespaced_custom_object(GROUP, VERSION, ns, "destinationrules", rule)
    co.create_namespaced_custom_object(GROUP, VERSION, ns, "virtualservices", virtual_service())
    v1 = Slot("v1", f"{REPO}:v1", "reviews-v1", "v1", "v1", owned=False)
    v2 = new_slot("reviews-{version}", "v2", f"{REPO}:v2")
    before = Cluster(api, ns).istio("virtualservices")

    with pytest.raises(
        ConfigError, match=r"own subset v2 selects \{'version': '2.0'\}, but the pods graylane runs"
    ):
        make_router("istio", api).set_routes(
            route_target(ns, v1, v2, v1, v2, create=True), RoutePlan.canary_at(20)
        )
    assert Cluster(api, ns).istio("virtualservices") == before  # nothing written


def test_version_subsets_router_creates_a_missing_rule_and_removes_only_the_subsets_it_added(
    api: Any, ns: str, validated: list[str]
) -> None:
    from functions.core.effects import STABLE_ONLY, RoutePlan
    from functions.core.slots import Slot, new_slot
    from functions.providers.routers import make_router

    router, cluster = make_router("istio", api), Cluster(api, ns)
    v1 = Slot("v1", f"{REPO}:v1", "reviews-v1", "v1", "v1", owned=False)
    v2, v3 = (new_slot("reviews-{version}", tag, f"{REPO}:{tag}") for tag in ("v2", "v3"))
    router.set_routes(route_target(ns, v1, v2, v1, v2, create=True), RoutePlan.canary_at(20))
    dr = cluster.istio("destinationrules")
    assert dr["spec"]["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
    assert dr["metadata"]["annotations"]["graylane.dev/subsets"] == "v1,v2"  # it created them all
    assert cluster.weights() == {"v1": 80, "v2": 20}
    assert router.get_routes(route_target(ns, v1, v2, v1, v2, create=True)) == RoutePlan.canary_at(20)
    # the user adds a subset of their own; v2 goes (its Deployment was deleted), v3 comes
    co = client.CustomObjectsApi(api)
    mine = {"name": "canary-debug", "labels": {"version": "debug"}}
    co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "destinationrules",
        "reviews",
        [{"op": "add", "path": "/spec/subsets/-", "value": mine}],
        _content_type="application/json-patch+json",
    )
    router.set_routes(route_target(ns, v3, None, v1, v3, create=True), STABLE_ONLY)
    dr = cluster.istio("destinationrules")
    assert [x["name"] for x in dr["spec"]["subsets"]] == ["v1", "canary-debug", "v3"]
    assert dr["metadata"]["annotations"]["graylane.dev/subsets"] == "v1,v3"
    assert cluster.weights() == {"v3": 100}
    assert router.get_routes(route_target(ns, v3, None, v1, v3, create=True)) == STABLE_ONLY


# -- the Kubernetes workloads alone: Deployments of the user's under a version's name ----------------------------


def test_version_subsets_workloads_never_re_image_or_delete_a_users_deployment(api: Any, ns: str) -> None:
    from functions.core.slots import new_slot
    from functions.errors import EffectFailed
    from functions.providers.workloads.base import WorkloadTarget
    from functions.providers.workloads.kubernetes import KubernetesWorkloads

    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, reviews_v1())
    theirs = reviews_v1()  # Bookinfo's own reviews-v2, applied by the user, running another build of v2
    theirs["metadata"] = {"name": "reviews-v2", "labels": {"app": "reviews", "version": "v2"}}
    for labels in (
        theirs["spec"]["selector"]["matchLabels"],
        theirs["spec"]["template"]["metadata"]["labels"],
    ):
        labels["version"] = "v2"
    theirs["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "docker.io/istio/examples-bookinfo-reviews-v2:1.20"
    )
    apps.create_namespaced_deployment(ns, theirs)
    cluster = Cluster(api, ns)
    before = bare(cluster.deployment("reviews-v2") or {})
    workloads = KubernetesWorkloads(api)
    target = WorkloadTarget(ns, "reviews", "reviews-v1", "", container="reviews", version_label="version")
    slot = new_slot("reviews-{version}", "v2", f"{REPO}:v2")

    with pytest.raises(
        EffectFailed, match=r"runs docker.io/istio/examples-bookinfo-reviews-v2:1.20, not .*never re-images"
    ):
        workloads.deploy_version(target, slot, "reviews-v1")
    workloads.delete_version(target, slot)  # not graylane's (no managed-by label): left alone
    assert bare(cluster.deployment("reviews-v2") or {}) == before
    for _ in range(2):  # retiring it only scales it, idempotently (a conflict with the controller is retried)
        until_ready(lambda: workloads.scale_down_version(target, slot))
    assert (cluster.deployment("reviews-v2") or {})["spec"]["replicas"] == 0
