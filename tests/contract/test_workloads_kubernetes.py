"""Kubernetes workloads against the real apiserver, with kube-controller-manager rolling Deployments out onto
fake Nodes (kube-scheduler + kwok) where pods become ready. The job controller is not started
(tests/k8s/cluster.py DEFAULT_CONTROLLERS), so the Job tests play it: they patch the Job's status to
succeeded or failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from functions.errors import ConfigError, ConflictError, GraylaneError, NotReady
from functions.providers.kube import client_from
from functions.providers.workloads.base import WorkloadTarget
from functions.providers.workloads.kubernetes import TRACK, KubernetesWorkloads, selects
from tests.contract.workload_support import REPO, deployment, image_of, stable_deployment, until_ready
from tests.k8s.cluster import FakeNodes, deployment_is_ready

pytestmark = pytest.mark.k8s


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    with client_from(kube.configuration) as api_client:
        yield api_client


def target(ns: str, **kw: Any) -> WorkloadTarget:
    return WorkloadTarget(ns, "flask", "k8s-flask", "k8s-flask-canary", container="flask", **kw)


def pods(api: Any, ns: str, selector: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items)


def spy_writes(work: KubernetesWorkloads) -> list[str]:
    """Record every create and patch the workloads send (reads are not writes)."""
    writes: list[str] = []
    for verb in ("create_namespaced_custom_object", "patch_namespaced_custom_object"):
        real = getattr(work.api, verb)

        def spy(*args: Any, _real: Any = real, _verb: str = verb, **kw: Any) -> Any:
            writes.append(
                f"{_verb} {args[3]}/{args[4] if isinstance(args[4], str) else args[4]['metadata']['name']}"
            )
            return _real(*args, **kw)

        setattr(work.api, verb, spy)
    return writes


def test_canary_is_derived_from_stable_with_the_new_image_and_reports_not_ready_until_available(
    api: Any, ns: str, nodes: FakeNodes
) -> None:
    stable = stable_deployment(api, ns)
    work = KubernetesWorkloads(api)
    with pytest.raises(NotReady, match=f"Deployment {ns}/k8s-flask-canary deploy canary"):
        work.deploy_canary(target(ns), f"{REPO}:v2")
    until_ready(lambda: work.deploy_canary(target(ns), f"{REPO}:v2"))
    canary = deployment(api, ns, "k8s-flask-canary")
    assert deployment_is_ready(client.AppsV1Api(api).read_namespaced_deployment("k8s-flask-canary", ns))
    assert image_of(canary) == f"{REPO}:v2" and image_of(canary, "proxy") == "registry.example.com/envoy:1.0"
    assert canary["spec"]["replicas"] == stable["spec"]["replicas"] == 2
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "k8s-flask-canary", TRACK: "canary"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {
        "app": "k8s-flask-canary",
        "tier": "backend",
        TRACK: "canary",
    }
    assert canary["metadata"]["labels"]["graylane.dev/app"] == "flask"
    flask = canary["spec"]["template"]["spec"]["containers"][1]
    assert flask["env"] == [{"name": "DATABASE_URL", "value": "postgres://db/flask"}]
    # the stable Service's selector (app=k8s-flask) still finds only stable pods, all on v1
    stable_pods = pods(api, ns, "app=k8s-flask")
    assert len(stable_pods) == 2 and {p.spec.containers[1].image for p in stable_pods} == {f"{REPO}:v1"}
    assert {p.spec.containers[1].image for p in pods(api, ns, "app=k8s-flask-canary")} == {f"{REPO}:v2"}


def test_existing_canary_changes_only_what_differs_and_scale_down_is_idempotent(
    api: Any, ns: str, nodes: FakeNodes
) -> None:
    stable_deployment(api, ns)
    work, one = KubernetesWorkloads(api), target(ns, replicas=1)
    until_ready(lambda: work.deploy_canary(one, f"{REPO}:v2"))
    assert deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 1
    writes = spy_writes(work)
    work.deploy_canary(one, f"{REPO}:v2")  # ready and unchanged: no write at all
    assert writes == []
    work.scale_down_canary(one)
    down = deployment(api, ns, "k8s-flask-canary")
    assert down["spec"]["replicas"] == 0 and image_of(down) == f"{REPO}:v2"
    work.scale_down_canary(one)
    assert writes == ["patch_namespaced_custom_object deployments/k8s-flask-canary"]
    work.scale_down_canary(WorkloadTarget(ns, "flask", "k8s-flask", "missing-canary"))  # no canary: fine
    seen = until_ready(lambda: work.deploy_canary(one, f"{REPO}:v3"))  # scaled back up on the next version
    assert seen and image_of(deployment(api, ns, "k8s-flask-canary")) == f"{REPO}:v3"
    assert deployment(api, ns, "k8s-flask-canary")["spec"]["replicas"] == 1


def test_promote_stable_is_not_ready_until_the_rollout_completes(api: Any, ns: str, nodes: FakeNodes) -> None:
    stable_deployment(api, ns)
    work = KubernetesWorkloads(api)
    with nodes.cordoned():  # no new pod is scheduled, so none becomes ready: the rollout cannot complete
        with pytest.raises(NotReady, match="not observed yet"):
            work.promote_stable(target(ns), f"{REPO}:v2")
        time.sleep(2.0)  # the controller creates the new ReplicaSet's pods, which stay Pending
        with pytest.raises(NotReady, match=r"rolling out .*:v2: .*updatedReplicas"):
            work.promote_stable(target(ns), f"{REPO}:v2")
    until_ready(lambda: work.promote_stable(target(ns), f"{REPO}:v2"))
    live = client.AppsV1Api(api).read_namespaced_deployment("k8s-flask", ns)
    assert deployment_is_ready(live) and live.spec.template.spec.containers[1].image == f"{REPO}:v2"
    assert {p.spec.containers[1].image for p in pods(api, ns, "app=k8s-flask")} == {f"{REPO}:v2"}


def test_preview_runs_in_its_own_namespace_with_one_replica(api: Any, ns: str, nodes: FakeNodes) -> None:
    stable_deployment(api, ns)
    core, dev = client.CoreV1Api(api), f"{ns}-dev"
    core.create_namespace({"metadata": {"name": dev, "labels": {"graylane.test/namespace": "true"}}})
    try:
        work = KubernetesWorkloads(api)
        until_ready(lambda: work.deploy_preview(target(ns), f"{REPO}:v2", "dev", dev, "k8s-flask-dev"))
        preview = deployment(api, dev, "k8s-flask-dev")
        assert image_of(preview) == f"{REPO}:v2" and preview["spec"]["replicas"] == 1
        assert preview["spec"]["selector"]["matchLabels"] == {"app": "k8s-flask-dev", TRACK: "preview"}
        assert preview["metadata"]["labels"]["graylane.dev/environment"] == "dev"
        # no workload name: <app>-<environment>, next to the stable one
        until_ready(lambda: work.deploy_preview(target(ns), f"{REPO}:v2", "qa", "", ""))
        assert image_of(deployment(api, ns, "flask-qa")) == f"{REPO}:v2"
        until_ready(lambda: work.deploy_preview(target(ns), f"{REPO}:v3", "dev", dev, "k8s-flask-dev"))
        assert image_of(deployment(api, dev, "k8s-flask-dev")) == f"{REPO}:v3"
    finally:
        core.delete_namespace(dev)


def test_canary_whose_pods_the_stable_selector_would_match_is_refused(api: Any, ns: str) -> None:
    # Istio subsets select on `version`: no label carries the Deployment's name, so no safe derivation
    stable_deployment(api, ns, name="reviews-v1", labels={"app": "reviews", "version": "v1"}, wait=False)
    work = KubernetesWorkloads(api)
    subset = WorkloadTarget(ns, "reviews", "reviews-v1", "reviews-v2", container="flask")
    with pytest.raises(
        ConfigError, match=f"Deployment {ns}/reviews-v2 deploy canary: its pods would be selected"
    ):
        work.deploy_canary(subset, f"{REPO}:v2")
    assert client.AppsV1Api(api).list_namespaced_deployment(ns).items[0].metadata.name == "reviews-v1"
    assert len(client.AppsV1Api(api).list_namespaced_deployment(ns).items) == 1


def test_selector_matching() -> None:
    sel = {
        "matchLabels": {"app": "a"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}],
    }
    assert selects(sel, {"app": "a", "tier": "x", "more": "1"})
    assert not selects(sel, {"app": "a", "tier": "y"}) and not selects(sel, {"app": "b", "tier": "x"})
    assert not selects({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": "1"})
    assert selects({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["1"]}]}, {})


def job_status(api: Any, ns: str, name: str, condition: str, reason: str = "", message: str = "") -> None:
    """Play the job controller: record the Job's outcome in its status. Since 1.31 the apiserver wants the
    outcome as the controller writes it: Complete after SuccessCriteriaMet (and a completionTime), Failed
    after FailureTarget."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def cond(kind: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": "True",
            "lastProbeTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }

    if condition == "Complete":
        status = {
            "conditions": [cond("SuccessCriteriaMet"), cond("Complete")],
            "succeeded": 1,
            "completionTime": now,
        }
    else:
        status = {"conditions": [cond("FailureTarget"), cond("Failed")], "failed": 2}
    body = {"status": {"startTime": now, **status}}
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status("batch", "v1", ns, "jobs", name, body)


def test_migration_job_runs_the_stable_container_until_it_succeeds(api: Any, ns: str) -> None:
    stable_deployment(api, ns, wait=False)
    work, command = KubernetesWorkloads(api), ("flask", "db", "upgrade")
    with pytest.raises(NotReady, match=f"Job {ns}/migrate-db-flask-2 run: not finished"):
        work.run_job(target(ns), "migrate-db-flask-2", f"{REPO}:v2", command)
    with pytest.raises(NotReady):  # AlreadyExists is not an error: the same Job is checked again
        work.run_job(target(ns), "migrate-db-flask-2", f"{REPO}:v2", command)
    job = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "batch", "v1", ns, "jobs", "migrate-db-flask-2"
    )
    assert job["spec"]["backoffLimit"] == 1 and job["metadata"]["labels"]["graylane.dev/app"] == "flask"
    pod = job["spec"]["template"]
    [one] = pod["spec"]["containers"]  # the sidecar is dropped, or the Job would never complete
    assert one["name"] == "flask" and one["image"] == f"{REPO}:v2" and one["command"] == list(command)
    assert "args" not in one and "readinessProbe" not in one
    assert one["env"] == [{"name": "DATABASE_URL", "value": "postgres://db/flask"}]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert not selects(
        {"matchLabels": {"app": "k8s-flask"}}, pod["metadata"]["labels"]
    )  # no Service sends it traffic
    assert pod["metadata"]["labels"]["graylane.dev/app"] == "flask"
    job_status(api, ns, "migrate-db-flask-2", "Complete")
    work.run_job(target(ns), "migrate-db-flask-2", f"{REPO}:v2", command)
    work.run_job(target(ns), "migrate-db-flask-2", f"{REPO}:v2", command)  # done stays done


def test_failed_migration_job_is_a_permanent_error_with_the_jobs_message(api: Any, ns: str) -> None:
    stable_deployment(api, ns, wait=False)
    work = KubernetesWorkloads(api)
    with pytest.raises(NotReady):
        work.run_job(target(ns), "migrate-db-flask-3", f"{REPO}:v3", ("flask", "db", "upgrade"))
    job_status(
        api,
        ns,
        "migrate-db-flask-3",
        "Failed",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    with pytest.raises(
        GraylaneError,
        match="Job .*/migrate-db-flask-3 run: failed: BackoffLimitExceeded: Job has "
        "reached the specified backoff limit",
    ) as err:
        work.run_job(target(ns), "migrate-db-flask-3", f"{REPO}:v3", ("flask", "db", "upgrade"))
    assert not isinstance(err.value, NotReady)
    with pytest.raises(GraylaneError, match=f"exists with image {REPO}:v3, not {REPO}:v4"):
        work.run_job(target(ns), "migrate-db-flask-3", f"{REPO}:v4", ())


def test_a_write_based_on_a_stale_read_loses_with_conflict(
    api: Any, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stable_deployment(api, ns, wait=False)
    work = KubernetesWorkloads(api)
    real_get = KubernetesWorkloads._get

    def get_then_rival_writes(
        self: KubernetesWorkloads, kind: Any, namespace: str, name: str, verb: str
    ) -> Any:
        obj = real_get(self, kind, namespace, name, verb)
        patch = {"metadata": {"labels": {"rival": "wrote-first"}}}
        client.AppsV1Api(api).patch_namespaced_deployment(name, namespace, patch)
        return obj

    monkeypatch.setattr(KubernetesWorkloads, "_get", get_then_rival_writes)
    with pytest.raises(
        ConflictError, match=f"Deployment {ns}/k8s-flask promote: resourceVersion .* moved on"
    ):
        work.promote_stable(target(ns), f"{REPO}:v2")
    monkeypatch.undo()
    live = deployment(api, ns, "k8s-flask")
    assert image_of(live) == f"{REPO}:v1" and live["metadata"]["labels"]["rival"] == "wrote-first"
    work.scale_down_canary(target(ns))  # nothing to scale: no canary, no error
