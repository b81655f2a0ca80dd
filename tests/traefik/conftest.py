"""Fixtures for the real-Traefik tests: the seed's app on the test cluster, real pods, real Traefik.

    kube (apiserver) + kube_nodes (controller manager, scheduler, kwok: pods get POD_CIDR IPs and go Ready)
      └─ PodRunner: a demo-service process per ready pod on podIP:8080, answering its image tag
    Deployments k8s-flask (v1) / k8s-flask-canary (v2) / k8s-flask-dev, the seed's Services
      └─ Endpoints (read by Traefik v2.11) and EndpointSlices (read by v3) from kube-controller-manager
    Traefik v2.11 (traefik.containo.us) or v3 (traefik.io, + Gateway provider) on 127.0.0.1
      └─ graylane's TraefikRouter / GatewayAPIRouter writing the objects, the system under test

A missing Traefik build fails with the command that builds it (`make traefik`), never skips.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from functions.core.effects import Protection, RoutePlan
from functions.providers.routers.base import RouteTarget
from functions.providers.routers.traefik import TraefikRouter
from tests.traefik import seed
from tests.traefik.binaries import TraefikMissing, traefik_binary
from tests.traefik.client import Client
from tests.traefik.pods import PodRunner
from tests.traefik.proxy import Traefik

if TYPE_CHECKING:
    from tests.k8s.cluster import KubeCluster

GROUPS = {"v2": "traefik.containo.us", "v3": "traefik.io"}


def need_traefik(version: str) -> None:
    """Fail (never skip) with the command that builds Traefik `version` when it is not built."""
    missing = ""
    try:
        traefik_binary(version)
    except TraefikMissing as err:
        missing = str(err)
    if missing:  # outside the except block: one clear message, not a chained traceback
        pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def pods(kube: KubeCluster, kube_nodes: Any) -> Iterator[PodRunner]:
    """Real backends for the ready pods of every namespace a fixture asks it to watch."""
    runner = PodRunner(kube.api_client()).start()
    try:
        yield runner
    finally:
        runner.stop()


def make_namespace(api: Any, prefix: str) -> str:
    from kubernetes import client

    name = f"{prefix}-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace(
        {"metadata": {"name": name, "labels": {"graylane.test/namespace": "true"}}}
    )
    return name


def drop_namespace(api: Any, name: str) -> None:
    from kubernetes import client

    try:
        client.CoreV1Api(api).delete_namespace(name)
    except client.ApiException as err:
        if err.status != 404:
            raise


def wait_rolled_out(api: Any, ns: str, names: list[str], timeout: float = 60.0) -> None:
    from kubernetes import client

    from tests.k8s.cluster import deployment_is_ready

    apps = client.AppsV1Api(api)
    seed.wait(
        lambda: all(deployment_is_ready(apps.read_namespaced_deployment(n, ns)) for n in names),
        f"Deployments {ns}/{names} rolled out",
        timeout,
    )


def pod_urls(api: Any, ns: str, app: str, port: int = seed.PORT) -> set[str]:
    """http://podIP:port of the ready pods labelled app=<app> (what the Service's endpoints list)."""
    from kubernetes import client

    from tests.traefik.pods import pod_ready

    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"app={app}").items
    return {f"http://{p.status.pod_ip}:{port}" for p in pods if pod_ready(p)}


@dataclass
class FlaskApp:
    """The seed's app in namespaces `pro`/`dev` behind a running Traefik, and graylane's router for it."""

    version: str  # Traefik "v2" | "v3"
    group: str
    pro: str
    dev: str
    api: Any
    pods: PodRunner
    traefik: Traefik
    router: TraefikRouter
    target: RouteTarget
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, host: str = seed.HOST, source: str = "127.0.0.1") -> Client:
        return Client(self.traefik.port, host, source)

    def ingress_route(self, name: str = seed.PRO_ROUTE, ns: str = "") -> dict[str, Any]:
        obj = {
            "apiVersion": f"{self.group}/v1alpha1",
            "kind": "IngressRoute",
            "metadata": {"name": name, "namespace": ns or self.pro},
        }
        return seed.read(self.api, obj)

    def middlewares(self, route: dict[str, Any]) -> dict[str, Any]:
        """name -> stored spec of every Middleware the IngressRoute names."""
        names = {m["name"] for r in route["spec"].get("routes") or [] for m in r.get("middlewares") or []}
        return {
            n: seed.read(
                self.api,
                {
                    "apiVersion": f"{self.group}/v1alpha1",
                    "kind": "Middleware",
                    "metadata": {"name": n, "namespace": self.pro},
                },
            )["spec"]
            for n in sorted(names)
        }

    def in_force(self, name: str = seed.PRO_ROUTE) -> None:
        """Until Traefik routes by the stored IngressRoute and the Middlewares it names."""
        route = self.ingress_route(name)
        self.traefik.wait_route(route, self.middlewares(route))

    def route(self, plan: RoutePlan) -> None:
        """graylane writes the plan; returns once Traefik routes by it."""
        self.router.set_routes(self.target, plan)
        self.in_force()

    def protect(self, protection: Protection) -> None:
        self.router.set_protection(self.target, protection)
        self.in_force()


def target_for(version: str, pro: str, create: bool = False) -> RouteTarget:
    """The router's target on the seed's IngressRoute; `create`: graylane creates it (no seed routing)."""
    options = {
        "ingressRoute": seed.PRO_ROUTE,
        "host": seed.HOST,
        "entryPoints": ["web"],
        "stableService": seed.STABLE,
        "canaryService": seed.CANARY,
        "port": seed.PORT,
        "group": GROUPS[version],
        **({"create": True} if create else {}),
    }
    return RouteTarget(pro, "flask", seed.STABLE, seed.CANARY, options=options)


def start_flask(version: str, kube: KubeCluster, pods: PodRunner, directory: Path) -> FlaskApp:
    """Namespaces, the seed's workloads and routing, pods served, Traefik started and in sync."""
    need_traefik(version)
    group = GROUPS[version]
    api = kube.api_client()
    pro, dev = make_namespace(api, f"pro-{version}"), make_namespace(api, f"dev-{version}")
    pods.watch(pro)
    pods.watch(dev)
    seed.apply(api, seed.workloads(pro, dev))
    wait_rolled_out(api, pro, [seed.STABLE, seed.CANARY])
    wait_rolled_out(api, dev, [seed.DEV])
    pods.wait_serving(pro, {"v1": 2, "v2": 1})
    seed.apply(api, seed.routing(group, pro, dev))
    traefik = Traefik.start(version, directory, kube.kubeconfig, [pro, dev], gateway=version == "v3")
    app = FlaskApp(
        version,
        group,
        pro,
        dev,
        api,
        pods,
        traefik,
        TraefikRouter(kube.api_client()),
        target_for(version, pro),
    )
    for svc in (
        seed.STABLE,
        seed.CANARY,
    ):  # the weighted route's backends: Traefik names them <ns>-<svc>-<port>
        traefik.wait_servers(f"{pro}-{svc}-{seed.PORT}", pod_urls(api, pro, svc))
    return app


def stop_flask(app: FlaskApp) -> None:
    app.traefik.stop()
    for ns in (app.pro, app.dev):
        drop_namespace(app.api, ns)


@pytest.fixture(scope="module", params=["v2", "v3"])
def flask(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskApp]:
    version = str(request.param)
    need_traefik(version)  # before the cluster starts: a missing build fails at once
    kube, pods = request.getfixturevalue("kube"), request.getfixturevalue("pods")
    app = start_flask(version, kube, pods, tmp_path_factory.mktemp(f"traefik-{version}"))
    try:
        yield app
    finally:
        stop_flask(app)
