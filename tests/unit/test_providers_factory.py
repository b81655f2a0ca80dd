"""KubernetesProviders wiring: one client per cluster, one provider per (cluster, provider), lazy metrics."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from functions.core.policy import NotifySpec, RouterSpec
from functions.core.state import Release, Version
from functions.errors import ConfigError
from functions.providers.factory import KubernetesProviders, LogNotifier
from functions.providers.kube import client_from
from functions.providers.notifiers import FanOut
from functions.providers.recording import RecordingRouter
from functions.providers.routers.traefik import TraefikRouter
from functions.providers.workloads.kubernetes import KubernetesWorkloads
from functions.runtime import _providers
from functions.settings import Settings
from tests.support import canary_policy


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clients:
    """Real ApiClients pointing at a closed port (nothing here sends a request); counts what was built."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, cluster: str) -> Any:
        self.built.append(cluster)
        return client_from(client.Configuration(host=f"https://127.0.0.1:{closed_port()}"))


def make(**settings: str) -> tuple[KubernetesProviders, Clients]:
    clients = Clients()
    return KubernetesProviders(Settings(providers="kubernetes", **settings), client_for=clients), clients


def test_one_client_per_cluster_and_one_provider_per_cluster_and_kind() -> None:
    providers, clients = make()
    traefik = replace(canary_policy(), router=RouterSpec("traefik", {"ingressRoute": "web"}))
    other_app = replace(canary_policy(name="api"), router=RouterSpec("traefik", {"ingressRoute": "api"}))
    router = providers.router(traefik, "")
    assert isinstance(router, TraefikRouter) and providers.router(other_app, "") is router
    assert providers.router(traefik, "dc-2") is not router
    work = providers.workloads(traefik, "")
    assert isinstance(work, KubernetesWorkloads) and providers.workloads(other_app, "") is work
    assert providers.workloads(traefik, "dc-2") is not work
    assert clients.built == ["", "dc-2"]  # the router and the workloads of a cluster share its client
    providers.close()


def test_unknown_router_names_the_known_ones_and_recording_is_allowed() -> None:
    providers, _ = make()
    with pytest.raises(ConfigError, match="router provider 'linkerd' is unknown; known: .*traefik"):
        providers.router(replace(canary_policy(), router=RouterSpec("linkerd")), "")
    assert isinstance(providers.router(canary_policy(), ""), RecordingRouter)


def test_notifier_falls_back_to_the_log_without_targets() -> None:
    providers, _ = make()
    notifier = providers.notifier(canary_policy())
    assert isinstance(notifier, LogNotifier)
    notifier.send({"id": "e1", "type": "dev.graylane.release.started", "message": "web v2 started"})
    with_targets = replace(
        canary_policy(), notify=(NotifySpec(kind="webhook", url="https://hooks.example.com/x"),)
    )
    built = providers.notifier(with_targets)
    assert isinstance(built, FanOut) and providers.notifier(with_targets) is built
    assert [name for name, _ in built.channels] == ["0:webhook"]


def test_measure_uses_prometheus_and_an_unreachable_one_is_unavailable_never_a_pass() -> None:
    providers, _ = make(prometheus=f"http://127.0.0.1:{closed_port()}")
    policy = canary_policy()
    release = Release(
        id="web-1",
        seq=1,
        target=Version("v2", "registry.example.com/web:v2"),
        origin=Version("v1", "registry.example.com/web:v1"),
        started_at="2026-11-23T08:00:00+00:00",
    )
    samples = providers.measure(policy, release)
    assert [(s.name, s.status) for s in samples] == [("success-rate", "unavailable")]


def test_runtime_builds_kubernetes_providers_when_asked() -> None:
    assert isinstance(_providers(Settings(providers="kubernetes")), KubernetesProviders)
    assert not isinstance(_providers(Settings()), KubernetesProviders)
