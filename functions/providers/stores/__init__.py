"""State stores by name, and the one factory that builds them from a URL.

sqlite:///graylane.db                 relative path (SQLAlchemy's convention)
sqlite:////var/lib/graylane/state.db  absolute path (four slashes)
sqlite://:memory:                     private in-process database (also sqlite:///:memory:)
memory://                             a dict (tests)
configmap://?context=NAME&namespaces=a,b&kubeconfig=PATH&timeout=5
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from functions.errors import ConfigError
from functions.providers.stores.base import StateStore
from functions.providers.stores.configmap import ConfigMapStore
from functions.providers.stores.memory import MemoryStore
from functions.providers.stores.sqlite import SqliteStore

__all__ = ["STORES", "ConfigMapStore", "MemoryStore", "SqliteStore", "StateStore", "make_store"]

STORES: dict[str, type] = {"configmap": ConfigMapStore, "memory": MemoryStore, "sqlite": SqliteStore}

_CONFIGMAP_OPTIONS = {"context", "kubeconfig", "namespaces", "timeout"}


def make_store(url: str, **deps: Any) -> StateStore:
    """The store `url` names. deps: `api_client` or `configuration` for configmap:// (else built
    by providers.kube.client_from); other stores need none and ignore them."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in STORES:
        raise ConfigError(
            f"state store URL {url!r}: unknown scheme {scheme!r}; known: {', '.join(sorted(STORES))}"
        )
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        path = rest.split("?", 1)[0].removeprefix("/")  # the third slash only ends the empty host
        if not path:
            raise ConfigError(
                f"state store URL {url!r}: sqlite needs a path, e.g. sqlite:////var/lib/graylane/state.db"
            )
        return SqliteStore(path)
    return _configmap_store(url, deps)


def _configmap_store(url: str, deps: dict[str, Any]) -> ConfigMapStore:
    options = {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    unknown = set(options) - _CONFIGMAP_OPTIONS
    if unknown:
        raise ConfigError(
            f"state store URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_CONFIGMAP_OPTIONS))}"
        )
    try:
        timeout = float(options.get("timeout", "5"))
    except ValueError as err:
        raise ConfigError(
            f"state store URL {url!r}: timeout must be seconds, got {options['timeout']!r}"
        ) from err
    namespaces = [ns for ns in options.get("namespaces", "").split(",") if ns] or None
    api_client = deps.get("api_client")
    if api_client is None:
        from functions.providers.kube import client_from

        api_client = client_from(
            configuration=deps.get("configuration"),
            kubeconfig=options.get("kubeconfig"),
            context=options.get("context"),
            timeout=timeout,
        )
    return ConfigMapStore(api_client, namespaces=namespaces, timeout=timeout)
