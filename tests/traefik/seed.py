"""The objects seed 000 (the CODING Traefik pipeline) brings, for one test namespace and API group.

Workloads: Deployments `k8s-flask` (stable, image `.../flask:v1`), `k8s-flask-canary` (`:v2`) and
`k8s-flask-dev` (`:v2-dev`), each selected by a Service of the seed (`k8s-flask`, `k8s-flask-canary`,
`k8s-flask-nodeport`) on port 8080. Routing, as the seed writes it (namespace `pro`/`dev` become the test's
namespaces): IngressRoutes `k8s-flask-pro` (pro.coding, 50/50), `k8s-flask-abtest` (pro.coding with
`location: shenzhen` to the canary) and `k8s-flask-dev` (dev.coding), Middlewares `flask-k8s-traffic`
(rateLimit 500/1000) and `k8s-flask-breaker` (circuitBreaker `LatencyAtQuantileMS(50.0) > 100`).

The seed is Traefik v2 (`traefik.containo.us`, `Headers(...)`); on traefik.io (Traefik v3) the same
objects carry the v3 matcher `Header(...)`, as a user migrating them writes them.
"""

from __future__ import annotations

import time
from typing import Any

REPOSITORY = "registry.example.com/team/flask"
PORT = 8080
HOST, DEV_HOST = "pro.coding", "dev.coding"
STABLE, CANARY, DEV = "k8s-flask", "k8s-flask-canary", "k8s-flask-dev"
DEV_SERVICE = "k8s-flask-nodeport"
PRO_ROUTE, ABTEST_ROUTE, DEV_ROUTE = "k8s-flask-pro", "k8s-flask-abtest", "k8s-flask-dev"
RATE_LIMIT, BREAKER = "flask-k8s-traffic", "k8s-flask-breaker"


def deployment(ns: str, name: str, version: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    container = {
        "name": "flask",
        "image": f"{REPOSITORY}:{version}",
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
            },
        },
    }


def service(ns: str, name: str, selects: str, kind: str = "ClusterIP") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": kind,
            "selector": {"app": selects},
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


def workloads(pro: str, dev: str = "", stable: str = "v1", canary: str = "v2") -> list[dict[str, Any]]:
    objects = [
        deployment(pro, STABLE, stable, replicas=2),
        service(pro, STABLE, STABLE),
        deployment(pro, CANARY, canary),
        service(pro, CANARY, CANARY),
    ]
    if dev:
        objects += [deployment(dev, DEV, f"{canary}-dev"), service(dev, DEV_SERVICE, DEV, kind="NodePort")]
    return objects


GATEWAY_CONTROLLER = "traefik.io/gateway-controller"  # the GatewayClass controllerName Traefik v3 serves


def gateway(ns: str, name: str, class_name: str, port: int) -> list[dict[str, Any]]:
    """A GatewayClass for Traefik and a Gateway whose HTTP listener is Traefik's `web` entry point (the
    Gateway provider maps a listener to the entry point with the same port)."""
    group = "gateway.networking.k8s.io/v1"
    return [
        {
            "apiVersion": group,
            "kind": "GatewayClass",
            "metadata": {"name": class_name},
            "spec": {"controllerName": GATEWAY_CONTROLLER},
        },
        {
            "apiVersion": group,
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "gatewayClassName": class_name,
                "listeners": [
                    {
                        "name": "web",
                        "port": port,
                        "protocol": "HTTP",
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }
                ],
            },
        },
    ]


def _ir(group: str, ns: str, name: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"entryPoints": ["web"], "routes": routes},
    }


def routing(group: str, pro: str, dev: str) -> list[dict[str, Any]]:
    """The seed's IngressRoutes and Middlewares in `group` (v2 matchers on traefik.containo.us)."""
    header = "Headers" if group == "traefik.containo.us" else "Header"

    def svc(name: str, ns: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "port": PORT, "namespace": ns, **extra}

    def mw(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": name, "namespace": pro}
        return {"apiVersion": f"{group}/v1alpha1", "kind": "Middleware", "metadata": meta, "spec": spec}

    return [
        _ir(
            group,
            dev,
            DEV_ROUTE,
            [{"kind": "Rule", "match": f"Host(`{DEV_HOST}`)", "services": [svc(DEV_SERVICE, dev)]}],
        ),
        _ir(
            group,
            pro,
            ABTEST_ROUTE,
            [
                {
                    "kind": "Rule",
                    "match": f"Host(`{HOST}`) && {header}(`location`, `shenzhen`)",
                    "services": [svc(CANARY, pro)],
                }
            ],
        ),
        _ir(
            group,
            pro,
            PRO_ROUTE,
            [
                {
                    "kind": "Rule",
                    "match": f"Host(`{HOST}`)",
                    "services": [svc(STABLE, pro, weight=50), svc(CANARY, pro, weight=50)],
                }
            ],
        ),
        mw(RATE_LIMIT, {"rateLimit": {"burst": 1000, "average": 500}}),
        mw(BREAKER, {"circuitBreaker": {"expression": "LatencyAtQuantileMS(50.0) > 100"}}),
    ]


# -- applying objects ---------------------------------------------------------------------------------------

_PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "IngressRoute": "ingressroutes",
    "Middleware": "middlewares",
    "TraefikService": "traefikservices",
    "Gateway": "gateways",
    "GatewayClass": "gatewayclasses",
    "HTTPRoute": "httproutes",
}


def _path(obj: dict[str, Any], named: bool = True) -> str:
    api_version, kind = obj["apiVersion"], obj["kind"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = obj["metadata"].get("namespace")
    path = f"{base}/namespaces/{ns}/{_PLURALS[kind]}" if ns else f"{base}/{_PLURALS[kind]}"
    return f"{path}/{obj['metadata']['name']}" if named else path


def apply(api_client: Any, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create each object, or replace its spec if it exists (the stored objects are returned)."""
    from kubernetes.client.rest import ApiException

    stored = []
    for obj in objects:
        try:
            stored.append(_call(api_client, "POST", _path(obj, named=False), obj))
        except ApiException as err:
            if err.status != 409:
                raise
            live = _call(api_client, "GET", _path(obj))
            body = {
                **obj,
                "metadata": {**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]},
            }
            if obj["kind"] == "Service":  # the allocated cluster IP and node ports stay
                body["spec"] = {**live["spec"], **obj["spec"]}
            stored.append(_call(api_client, "PUT", _path(obj), body))
    return stored


def delete(api_client: Any, obj: dict[str, Any]) -> None:
    from kubernetes.client.rest import ApiException

    try:
        _call(api_client, "DELETE", _path(obj))
    except ApiException as err:
        if err.status != 404:
            raise


def read(api_client: Any, obj: dict[str, Any]) -> dict[str, Any]:
    return _call(api_client, "GET", _path(obj))


def read_all(api_client: Any, group: str, ns: str, plural: str) -> list[dict[str, Any]]:
    """Every object of group/plural in ns ([] when the cluster does not serve it)."""
    from kubernetes.client.rest import ApiException

    try:
        return list(
            _call(api_client, "GET", f"/apis/{group}/v1alpha1/namespaces/{ns}/{plural}").get("items") or []
        )
    except ApiException as err:
        if err.status == 404:
            return []
        raise


def _call(api_client: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    from functions.providers.kube import request

    return request(api_client, method, path, {}, body=body, timeout=10)


def wait(check: Any, what: str, timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)
