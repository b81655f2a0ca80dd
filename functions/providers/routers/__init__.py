"""Traffic routers: one module per provider, and REGISTRY, the one place that lists them.

A router module declares everything the rest of graylane needs to know about its provider (see
functions.core.routing: NAME, OPTIONS, CAPABILITIES, METRICS, measured_by, versions, check, OWNS) and how
it is built (`build(settings, cluster)`). The policy parser and the capability check (core, through the
catalog installed below), the metric templates, both provider factories (Kubernetes and local) and the
README's tables all read REGISTRY; nothing else names a provider. Adding one is a module here, one line in
_MODULES and its tests.

Modules are imported on first use, so building one router never imports the others (cold start).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

from functions.core import routing
from functions.core.routing import RouterMetrics, RouterModule
from functions.errors import ConfigError
from functions.providers.routers.base import Cluster, Router

# provider name -> module, in the order the docs and error messages list them
_MODULES = {
    "traefik": "functions.providers.routers.traefik",
    "istio": "functions.providers.routers.istio",
    "gateway-api": "functions.providers.routers.gateway_api",
    "nginx": "functions.providers.routers.nginx",
    "haproxy": "functions.providers.routers.haproxy",
    "recording": "functions.providers.routers.recording",
}


class Registry(Mapping[str, RouterModule]):
    """provider name -> its module (a functions.core.routing.RouterModule), imported when first asked for."""

    def __init__(self, modules: Mapping[str, str]) -> None:
        self._paths = dict(modules)

    def __getitem__(self, name: str) -> RouterModule:
        path = self._paths[name]
        try:
            module: Any = importlib.import_module(path)
        except ImportError as err:
            raise ConfigError(f"router provider {name!r} is not available: {err}") from err
        if getattr(module, "NAME", None) != name:
            raise ConfigError(
                f"router module {path} declares NAME {getattr(module, 'NAME', None)!r}, not {name!r}"
            )
        return cast(RouterModule, module)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def series(self) -> dict[str, RouterMetrics]:
        """source -> its standard series, for every router that has its own (METRICS)."""
        return {name: m.METRICS for name in self if (m := self[name]).METRICS is not None}


REGISTRY = Registry(_MODULES)
routing.install(REGISTRY)


def make_router(
    name: str, cluster: Cluster | Any = None, settings: Any = None, options: Mapping[str, Any] | None = None
) -> Router:
    """The router for provider `name`, built by its module on `cluster` (a Cluster, or an ApiClient: see
    functions.providers.kube.client_from) with the policy's router `options` (only a module declaring
    PER_OPTIONS reads them: one router per admin socket). An unknown name is a ConfigError listing the
    known ones."""
    if name not in REGISTRY:
        raise ConfigError(f"router provider {name!r} is unknown; known: {', '.join(sorted(REGISTRY))}")
    if not isinstance(cluster, Cluster):
        api_client = cluster
        cluster = Cluster(client=None if api_client is None else (lambda: api_client))
    module: Any = REGISTRY[name]
    router: Router = module.build(settings, cluster, dict(options or {}))
    return router


def per_options(name: str) -> bool:
    """Whether provider `name` builds one router per set of options (else one per cluster)."""
    return name in REGISTRY and bool(getattr(REGISTRY[name], "PER_OPTIONS", False))
