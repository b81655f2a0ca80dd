"""Helpers for the Kubernetes workloads tests: a stable Deployment to start from, and polling until ready."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from functions.errors import ConflictError, NotReady
from tests.k8s.cluster import wait_deployment_ready

REPO = "registry.example.com/flask"


def stable_deployment(
    api: Any,
    ns: str,
    name: str = "k8s-flask",
    version: str = "v1",
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Create the app's stable Deployment (a sidecar, probes and env included) and wait for its rollout."""
    labels = labels or {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, "team": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "tier": "backend"}},
                "spec": {
                    "containers": [
                        {"name": "proxy", "image": "registry.example.com/envoy:1.0"},
                        {
                            "name": "flask",
                            "image": f"{REPO}:{version}",
                            "args": ["serve"],
                            "env": [{"name": "DATABASE_URL", "value": "postgres://db/flask"}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                        },
                    ]
                },
            },
        },
    }
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, body)
    if wait:
        wait_deployment_ready(apps, ns, name)
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object("apps", "v1", ns, "deployments", name)
    )


def deployment(api: Any, ns: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object("apps", "v1", ns, "deployments", name)
    )


def image_of(dep: dict[str, Any], container: str = "flask") -> str:
    return str(
        next(c["image"] for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    )


def until_ready(call: Callable[[], None], timeout: float = 45.0) -> list[str]:
    """Call until it stops raising NotReady; returns the NotReady messages seen on the way.

    A ConflictError (the controller updated the Deployment between our read and our guarded patch) is
    retried too, as the runner retries a pending effect on the next tick."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return seen
        except (NotReady, ConflictError) as err:
            if isinstance(err, NotReady):
                seen.append(str(err))
            if time.monotonic() > deadline:
                raise TimeoutError(f"still not ready after {timeout:.0f}s: {err}") from err
            time.sleep(0.2)
