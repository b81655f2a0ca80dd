"""The process-wide runner, built once from Settings on the first event (keeps imports off cold start)."""

from __future__ import annotations

from functools import cache
from typing import Any

from functions.settings import Settings


def build_runner(settings: Settings, client_for: Any = None) -> Any:
    """The runner `settings` describe; `client_for(cluster)` builds the Kubernetes clients of the kubernetes
    providers (default: the cluster's kubeconfig context, else the current one)."""
    from functions.providers.stores import make_store
    from functions.runner import Runner

    store = make_store(settings.store)
    providers = _providers(settings, client_for)
    return Runner(store, policies_from(settings.policies, cache=settings.policy_cache), providers, _bus(settings), source=settings.source,
                  events_recorder=_events_recorder(settings, providers))  # fmt: skip


def policies_from(url: str, context: str = "", cache: str | None = None) -> Any:
    """The policy source `url` names: `configmap://` (in the kube `context`), or a directory of YAML that is
    reloaded when edited, its files compiled once into the policy `cache` (default: GRAYLANE_POLICY_CACHE)."""
    if url.startswith("configmap://"):
        from functions.providers.kube import client_from
        from functions.providers.policysource import ConfigMapPolicies

        return ConfigMapPolicies(client_from(context=context or None))
    import os

    from functions.policies import DirectoryPolicies
    from functions.policy_cache import PolicyCache

    setting = os.environ.get("GRAYLANE_POLICY_CACHE", "") if cache is None else cache
    return DirectoryPolicies(url, check_interval=5.0, cache=PolicyCache.configured(setting))


def _providers(settings: Settings, client_for: Any = None) -> Any:
    if settings.providers == "kubernetes":
        from functions.providers.factory import KubernetesProviders

        return KubernetesProviders(settings, client_for) if client_for is not None else KubernetesProviders(settings)
    from functions.providers.recording import RecordingProviders

    return RecordingProviders()


def _events_recorder(settings: Settings, providers: Any) -> Any:
    """A Kubernetes Event on the workload for every transition, when graylane runs against a cluster."""
    if settings.providers != "kubernetes":
        return None
    from functions.observability.kube_events import KubeEventRecorder

    return KubeEventRecorder(providers.client(""))


def _bus(settings: Settings) -> Any:
    if not settings.sink:
        return None
    from functions.bus import HttpBus

    return HttpBus(settings.sink, token_file=settings.sink_token_file)


@cache
def runner() -> Any:
    from functions.observability.logs import configure_from_env

    configure_from_env()
    return build_runner(Settings.from_env())
