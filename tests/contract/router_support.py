"""Helpers shared by the router contract tests (tests/contract/test_router_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from functions.providers.kube import client_from
from functions.providers.routers._common import Objects

JSON_PATCH = "application/json-patch+json"


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    """A graylane client (the one routers get in production) for the test apiserver."""
    with client_from(kube.configuration) as api_client:
        yield api_client


@pytest.fixture(name="co")
def co_fixture(api: Any) -> client.CustomObjectsApi:
    """Raw access, independent of the router code, to check objects at their upstream field paths."""
    return client.CustomObjectsApi(api)


def raw(
    co: client.CustomObjectsApi, group: str, version: str, plural: str, ns: str, name: str
) -> dict[str, Any]:
    return dict(co.get_namespaced_custom_object(group, version, ns, plural, name))


def race_on_read(
    monkeypatch: pytest.MonkeyPatch, co: client.CustomObjectsApi, plural: str, only: str = ""
) -> list[str]:
    """After the router reads an object of `plural` (named `only`, if given), a rival changes it first.

    Returns the list of names the rival wrote, so a test can assert the race really happened.
    """
    real_get: Callable[..., Any] = Objects.get
    raced: list[str] = []

    def get(self: Objects, namespace: str, name: str) -> Any:
        obj = real_get(self, namespace, name)
        if obj is not None and self.kind.plural == plural and name == (only or name) and not raced:
            rival = [{"op": "add", "path": "/metadata/labels/rival", "value": "wrote-first"}]
            if not obj["metadata"].get("labels"):
                rival = [{"op": "add", "path": "/metadata/labels", "value": {"rival": "wrote-first"}}]
            co.patch_namespaced_custom_object(
                self.kind.group, self.kind.version, namespace, plural, name, rival, _content_type=JSON_PATCH
            )
            raced.append(name)
        return obj

    monkeypatch.setattr(Objects, "get", get)
    return raced
