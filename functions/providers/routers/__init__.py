"""Traffic routers: the provider name of a policy -> the Router class that moves its traffic.

Classes are imported on first use, so asking for one router never imports the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from functions.errors import ConfigError
from functions.providers.routers.base import Router

_PATHS = {
    "traefik": "functions.providers.routers.traefik:TraefikRouter",
    "istio": "functions.providers.routers.istio:IstioRouter",
    "gateway-api": "functions.providers.routers.gateway_api:GatewayAPIRouter",
    "nginx": "functions.providers.routers.nginx:NginxRouter",
    "haproxy": "functions.providers.routers.haproxy:HAProxyRouter",  # written by the HAProxy work
}


class _Classes(Mapping[str, type]):
    """name -> router class, importing a module only when its class is asked for."""

    def __getitem__(self, name: str) -> type:
        module, _, cls = _PATHS[name].partition(":")
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(_PATHS)

    def __len__(self) -> int:
        return len(_PATHS)


ROUTERS: Mapping[str, type] = _Classes()


def make_router(name: str, api_client: Any) -> Router:
    """The router for provider `name`, talking through `api_client` (see functions.providers.kube.client_from)."""
    if name not in _PATHS:
        raise ConfigError(f"router provider {name!r} is unknown; known: {', '.join(sorted(_PATHS))}")
    try:
        cls = ROUTERS[name]
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"router provider {name!r} is not available: {err}") from err
    router: Router = cls(api_client)
    return router
