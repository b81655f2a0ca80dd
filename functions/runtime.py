"""The process-wide runner, built once from Settings on the first event (keeps imports off cold start)."""

from __future__ import annotations

from functools import cache
from typing import Any

from functions.settings import Settings


def build_runner(settings: Settings) -> Any:
    from functions.providers.stores import make_store
    from functions.runner import Runner

    store = make_store(settings.store)
    return Runner(store, _policies(settings), _providers(settings), _bus(settings), source=settings.source)


def _policies(settings: Settings) -> Any:
    if settings.policies.startswith("configmap://"):
        from functions.providers.kube import client_from
        from functions.providers.policysource import ConfigMapPolicies

        return ConfigMapPolicies(client_from())
    from functions.policies import DirectoryPolicies

    return DirectoryPolicies(settings.policies)


def _providers(settings: Settings) -> Any:
    if settings.providers == "kubernetes":
        from functions.providers.factory import KubernetesProviders

        return KubernetesProviders(settings)
    from functions.providers.recording import RecordingProviders

    return RecordingProviders()


def _bus(settings: Settings) -> Any:
    if not settings.sink:
        return None
    from functions.bus import HttpBus

    return HttpBus(settings.sink)


@cache
def runner() -> Any:
    return build_runner(Settings.from_env())
