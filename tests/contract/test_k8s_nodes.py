"""The fake Nodes of the test cluster (kube-scheduler + kwok, tests/k8s/cluster.py) behave as a cluster's do:
a Deployment rolls out onto them, its pods get IPs of POD_CIDR that this machine can bind and reach, and a
Service's Endpoints and EndpointSlices list exactly the ready pods. A harness that runs one real process per
ready pod, bound to the pod's IP, behind a real Traefik relies on all three.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.k8s.cluster import POD_CIDR, FakeNodes, KubeCluster, pod_is_ready, wait_deployment_ready

pytestmark = [pytest.mark.k8s, pytest.mark.controller]
PORT = 8080


@pytest.fixture(name="api", scope="module")
def api_fixture(kube: KubeCluster) -> Iterator[client.ApiClient]:
    with kube.api_client() as api:
        yield api


def web(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "demo:1",
                            "ports": [{"name": "http", "containerPort": PORT}],
                        },
                    ]
                },
            },
        },
    }


def web_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def ready_pods(core: client.CoreV1Api, ns: str) -> list[Any]:
    return [p for p in core.list_namespaced_pod(ns, label_selector="app=web").items if pod_is_ready(p)]


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` and its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        seen = check()
        if seen:
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen after {timeout:.0f}s")
        time.sleep(0.2)


def endpoint_ips(core: client.CoreV1Api, ns: str) -> tuple[set[str], set[str], set[int]]:
    """Ready and not-ready addresses and the ports of the Endpoints object of Service web."""
    try:
        ep = core.read_namespaced_endpoints("web", ns)
    except ApiException as exc:
        if exc.status == 404:
            return set(), set(), set()
        raise
    subsets = ep.subsets or []
    ready = {a.ip for s in subsets for a in s.addresses or []}
    unready = {a.ip for s in subsets for a in s.not_ready_addresses or []}
    return ready, unready, {p.port for s in subsets for p in s.ports or []}


def slice_ips(discovery: client.DiscoveryV1Api, ns: str) -> tuple[set[str], set[str], set[int]]:
    """Ready and not-ready addresses and the ports of every EndpointSlice of Service web."""
    slices = discovery.list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=web"
    ).items
    ready, unready, ports = set(), set(), set()
    for es in slices:
        assert es.address_type == "IPv4"
        ports |= {p.port for p in es.ports or []}
        for endpoint in es.endpoints or []:
            (ready if endpoint.conditions.ready else unready).update(endpoint.addresses)
    return ready, unready, ports


def test_a_deployment_rolls_out_onto_the_fake_nodes_with_pod_ips_of_their_pod_cidrs(
    api: client.ApiClient, ns: str, nodes: FakeNodes
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, web(replicas=4))
    dep = wait_deployment_ready(apps, ns, "web", timeout=60)
    available = {c.type: c.status for c in dep.status.conditions}
    assert dep.status.available_replicas == 4 and available["Available"] == "True"
    pods = core.list_namespaced_pod(ns, label_selector="app=web").items
    assert len(pods) == 4 and all(pod_is_ready(p) for p in pods)
    node_cidrs = {n.metadata.name: ipaddress.ip_network(n.spec.pod_cidr) for n in core.list_node().items}
    for pod in pods:
        assert pod.spec.node_name in nodes.names  # bound by kube-scheduler
        ip = ipaddress.ip_address(pod.status.pod_ip)
        assert (
            ip in node_cidrs[pod.spec.node_name]
            and ip in nodes.pod_range
            and ip in ipaddress.ip_network(POD_CIDR)
        )
        assert [s.ready for s in pod.status.container_statuses] == [True]
        assert pod.status.container_statuses[0].state.running is not None
    assert len({p.status.pod_ip for p in pods}) == 4


def test_service_endpoints_and_endpoint_slices_list_exactly_the_ready_pods(
    api: client.ApiClient, ns: str, nodes: FakeNodes
) -> None:
    apps, core, discovery = client.AppsV1Api(api), client.CoreV1Api(api), client.DiscoveryV1Api(api)
    core.create_namespaced_service(ns, web_service())
    apps.create_namespaced_deployment(ns, web(replicas=2))
    wait_deployment_ready(apps, ns, "web", timeout=60)
    ips = {p.status.pod_ip for p in ready_pods(core, ns)}
    assert len(ips) == 2
    until(lambda: slice_ips(discovery, ns) == (ips, set(), {PORT}), f"EndpointSlice with {ips}")
    until(lambda: endpoint_ips(core, ns) == (ips, set(), {PORT}), f"Endpoints with {ips}")

    # a pod that turns unready leaves the ready set of both (kwok's stages leave a Running pod alone)
    sick = ready_pods(core, ns)[0]
    conditions = [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}]
    core.patch_namespaced_pod_status(sick.metadata.name, ns, {"status": {"conditions": conditions}})
    healthy = ips - {sick.status.pod_ip}
    until(
        lambda: slice_ips(discovery, ns) == (healthy, {sick.status.pod_ip}, {PORT}),
        "unready pod in the slice",
    )
    until(
        lambda: endpoint_ips(core, ns) == (healthy, {sick.status.pod_ip}, {PORT}), "unready pod in Endpoints"
    )

    # a pod the scheduler cannot place has no IP and is in neither; once placed and ready, it is in both
    with nodes.cordoned():
        apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
        until(lambda: len(core.list_namespaced_pod(ns, label_selector="app=web").items) == 3, "third pod")
        time.sleep(1.0)
        pending = [
            p for p in core.list_namespaced_pod(ns, label_selector="app=web").items if not p.spec.node_name
        ]
        assert len(pending) == 1 and not pending[0].status.pod_ip
        assert slice_ips(discovery, ns) == (healthy, {sick.status.pod_ip}, {PORT})
    third = until(lambda: {p.status.pod_ip for p in ready_pods(core, ns)} - ips, "the third pod ready")
    until(lambda: slice_ips(discovery, ns)[0] == healthy | third, "third pod in the slice")
    until(lambda: endpoint_ips(core, ns)[0] == healthy | third, "third pod in Endpoints")


def test_a_pod_ip_can_be_bound_and_reached_on_this_machine(
    api: client.ApiClient, ns: str, nodes: FakeNodes
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, web(replicas=1))
    wait_deployment_ready(apps, ns, "web", timeout=60)
    [pod] = ready_pods(core, ns)
    ip = pod.status.pod_ip
    assert not ipaddress.ip_address(ip).is_loopback
    with socket.create_server((ip, PORT)) as server:  # what a pod's process does: listen on its IP and port
        server.settimeout(5)
        with socket.create_connection((ip, PORT), timeout=5) as conn:
            peer, _ = server.accept()
            with peer:
                conn.sendall(b"ping")
                assert peer.recv(4) == b"ping"
                assert peer.getsockname() == (ip, PORT)


def test_endpoints_refuse_loopback_addresses_so_pods_need_other_ips(api: client.ApiClient, ns: str) -> None:
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    endpoints = {
        "metadata": {"name": "loop"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": PORT}]}],
    }
    with pytest.raises(ApiException) as err:
        core.create_namespaced_endpoints(ns, endpoints)
    assert err.value.status == 422
    assert "may not be in the loopback range (127.0.0.0/8, ::1/128)" in err.value.body, err.value.body
    endpoint_slice = {
        "metadata": {"name": "loop"},
        "addressType": "IPv4",
        "ports": [{"port": PORT}],
        "endpoints": [{"addresses": ["127.0.0.1"]}],
    }
    with pytest.raises(ApiException) as err:
        discovery.create_namespaced_endpoint_slice(ns, endpoint_slice)
    assert err.value.status == 422
    assert "may not be in the loopback range (127.0.0.0/8, ::1/128)" in err.value.body, err.value.body
