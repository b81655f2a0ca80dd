"""The only place that names concrete providers: routers, workloads, notifier and metrics per policy.

`KubernetesProviders` implements runner.Providers for GRAYLANE_PROVIDERS=kubernetes. It holds one
ApiClient per cluster (a policy wave's cluster is a kubeconfig context; "" is the current context, or the
in-cluster service account inside a pod) and one provider object per (cluster, provider): routers and
workloads are stateless apart from their client, so every app on a cluster shares them. Provider modules
are imported on first use, so a function only pays for the providers its policies name.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from functions.core.counters import Totals
from functions.core.events import MetricSample
from functions.core.policy import Policy
from functions.core.state import Release
from functions.errors import ConfigError
from functions.providers.notifiers.base import Notifier
from functions.providers.routers.base import Router
from functions.providers.workloads.base import Workloads
from functions.settings import Settings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from functions.providers.metrics.prometheus import PrometheusAnalysis

T = TypeVar("T")

log = logging.getLogger("graylane.providers")

ClientFor = Callable[[str], "ApiClient"]  # cluster (kubeconfig context, "" = current/in-cluster) -> ApiClient


def default_client(cluster: str) -> ApiClient:
    from functions.providers.kube import client_from

    return client_from(context=cluster or None)


class LogNotifier:
    """Notices to the log: used when a policy names no notifier, or the notifiers package is not there."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    def send(self, notice: dict[str, Any]) -> None:
        log.info("notice %s %s: %s", notice.get("id", ""), notice.get("type", ""), notice.get("message", ""))


class KubernetesProviders:
    """runner.Providers on Kubernetes: routers by policy.router.provider, Deployments/Jobs, Prometheus."""

    def __init__(
        self, settings: Settings, client_for: ClientFor = default_client, timeout: float = 5.0
    ) -> None:
        self.settings = settings
        self.client_for = client_for
        self.timeout = timeout
        self._clients: dict[str, Any] = {}
        self._cache: dict[tuple[str, ...], Any] = {}
        self._lock = threading.RLock()  # re-entrant: building a router or workloads builds its client

    # -- runner.Providers ----------------------------------------------------------------------------
    def router(self, policy: Policy, cluster: str) -> Router:
        """The policy's router, built by its module (functions.providers.routers.REGISTRY): one per cluster
        and provider, or per set of options for a module that says so (HAProxy: one per admin socket)."""
        from functions.providers.routers import make_router, per_options
        from functions.providers.routers.base import Cluster

        provider, options = policy.router.provider, policy.router.options
        key: tuple[str, ...] = ("router", cluster, provider)
        if per_options(provider):
            key += (json.dumps(options, sort_keys=True, default=str),)
        place = Cluster(name=cluster, client=lambda: self.client(cluster))
        return self._once(key, lambda: make_router(provider, place, self.settings, options))

    def workloads(self, policy: Policy, cluster: str) -> Workloads:
        from functions.providers.workloads.kubernetes import KubernetesWorkloads

        return self._once(
            ("workloads", cluster), lambda: KubernetesWorkloads(self.client(cluster), timeout=self.timeout)
        )

    def notifier(self, policy: Policy) -> Notifier:
        if not policy.notify:
            return self._once(("notifier", ""), LogNotifier)
        key = ("notifier", json.dumps([(n.kind, n.url, n.secret) for n in policy.notify]))
        return self._once(key, lambda: _notifier(policy))

    def flags(self, policy: Policy, cluster: str) -> Any:
        """The flag document of spec.flags: a ConfigMap in the app's namespace of `cluster`, or a file."""
        from functions.providers.flags import flag_store

        source = policy.flags
        client = self.client(cluster) if source is not None and not source.file else None
        return flag_store(source, policy.namespace, client)

    def hooks(self, policy: Policy) -> Any:
        from functions.providers.hooks import HttpHooks

        return HttpHooks(policy)

    def gitops(self, policy: Policy) -> Any:
        from functions.providers.gitops.git import GitWriter

        return GitWriter(policy)

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self._analysis().measure(policy, release)

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        return self._analysis().measure_many(pairs)

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Totals]:
        return self._analysis().totals_many(pairs)

    def _analysis(self) -> PrometheusAnalysis:
        return self._once(("metrics", "prometheus"), lambda: _prometheus(self.settings.prometheus))

    # -- clients and the cache -----------------------------------------------------------------------
    def client(self, cluster: str) -> ApiClient:
        """The ApiClient of `cluster`, built once (client_from raises ConfigError naming the context)."""
        return self._once(("client", cluster), lambda: self.client_for(cluster))

    def _once(self, key: tuple[str, ...], build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            built: T = self._cache[key]  # what `build` made for this key
            return built

    def close(self) -> None:
        """Close every ApiClient built here (their connection pools and threads)."""
        with self._lock:
            clients = [v for k, v in self._cache.items() if k[0] == "client"]
            self._cache.clear()
        for api_client in clients:
            close = getattr(api_client, "close", None)
            if close is not None:
                close()


def _notifier(policy: Policy) -> Notifier:
    """All of policy.notify's channels as one notifier (secrets from the environment, see notifiers)."""
    try:
        from functions.providers.notifiers import make_notifier
    except ImportError as err:  # a broken or missing notifiers package must not stop releases
        log.warning("notifiers for %s are not available (%s); notices go to the log", policy.app, err)
        return LogNotifier(reason=str(err))
    notifier: Notifier = make_notifier(policy.notify)
    return notifier


def _prometheus(url: str) -> PrometheusAnalysis:
    try:
        from functions.providers.metrics import PrometheusAnalysis
    except ImportError as err:
        raise ConfigError(
            f"GRAYLANE_PROVIDERS=kubernetes: Prometheus analysis is not available: {err}"
        ) from err
    return PrometheusAnalysis(url)
