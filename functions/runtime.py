"""The process-wide runner, built once from Settings on the first event (keeps imports off cold start)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from functions.settings import Settings

if TYPE_CHECKING:  # the runner and providers are imported on the first event, not at cold start
    from functions.providers.factory import ClientFor, KubernetesProviders
    from functions.providers.recording import RecordingProviders
    from functions.runner import Bus, EventsRecorder, PolicySource, Runner


def build_runner(settings: Settings, client_for: ClientFor | None = None) -> Runner:
    """The runner `settings` describe; `client_for(cluster)` builds the Kubernetes clients of the kubernetes
    providers (default: the cluster's kubeconfig context, else the current one)."""
    from functions.providers.stores import make_store
    from functions.runner import Runner

    store = make_store(settings.store)
    providers = _providers(settings, client_for)
    return Runner(
        store,
        policies_from(settings.policies, cache=settings.policy_cache),
        providers,
        _bus(settings),
        source=settings.source,
        events_recorder=_events_recorder(providers),
    )


def policies_from(url: str, context: str = "", cache: str | None = None) -> PolicySource:
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


def _providers(
    settings: Settings, client_for: ClientFor | None = None
) -> KubernetesProviders | RecordingProviders:
    if settings.providers == "kubernetes":
        from functions.providers.factory import KubernetesProviders

        return (
            KubernetesProviders(settings, client_for)
            if client_for is not None
            else KubernetesProviders(settings)
        )
    from functions.providers.recording import RecordingProviders

    return RecordingProviders()


def _events_recorder(providers: KubernetesProviders | RecordingProviders) -> EventsRecorder | None:
    """A Kubernetes Event on the workload for every transition, when graylane runs against a cluster."""
    from functions.providers.recording import RecordingProviders

    if isinstance(providers, RecordingProviders):
        return None
    from functions.observability.kube_events import KubeEventRecorder

    return KubeEventRecorder(providers.client(""))


def _bus(settings: Settings) -> Bus | None:
    if not settings.sink:
        return None
    from functions.bus import HttpBus

    return HttpBus(settings.sink, token_file=settings.sink_token_file)


@cache
def runner() -> Runner:
    from functions.observability.logs import configure_from_env

    configure_from_env()
    return build_runner(Settings.from_env())
