"""Which route of the user's IngressRoute the Traefik router weighs (traefik.managed_index), and the errors that
name the routes and the option to set when none or several could be it."""

from __future__ import annotations

from typing import Any

import pytest

from functions.errors import ConfigError
from functions.providers.routers import traefik
from functions.providers.routers.base import RouteTarget


def _setup(**options: Any) -> Any:
    opts = {"ingressRoute": "k8s-flask-pro", **options}
    return traefik._setup(RouteTarget("pro", "flask", "k8s-flask", "k8s-flask-canary", options=opts))


def _route(match: str, *services: dict[str, Any]) -> dict[str, Any]:
    return {"match": match, "services": list(services)}


STABLE = {"name": "k8s-flask", "port": 80}
OTHER = {"name": "docs", "port": 80}


def test_the_route_naming_the_stable_service_is_weighed() -> None:
    routes = [_route("Host(`docs`)", OTHER), _route("Host(`pro`)", STABLE)]

    assert traefik.managed_index(routes, _setup(), "k8s-flask-pro") == 1


def test_an_ab_route_giving_the_stable_no_weight_does_not_count_as_a_second_one() -> None:
    routes = [
        _route("Host(`pro`) && Header(`x`, `1`)", {**STABLE, "weight": 0}),
        _route("Host(`pro`)", STABLE),
    ]

    assert traefik.managed_index(routes, _setup(), "k8s-flask-pro") == 1


def test_graylanes_own_ab_route_is_never_the_weighed_one() -> None:
    ab = "Host(`pro`) && Header(`x`, `1`)"
    routes = [_route(ab, STABLE), _route("Host(`pro`)", STABLE)]

    assert traefik.managed_index(routes, _setup(), "k8s-flask-pro", ab_match=ab) == 1


def test_option_route_names_the_match() -> None:
    routes = [_route("Host(`a`)", STABLE), _route("Host(`b`)", STABLE)]

    assert traefik.managed_index(routes, _setup(route="Host(`b`)"), "k8s-flask-pro") == 1
    with pytest.raises(
        ConfigError, match=r"has no route whose match is 'Host\(`c`\)' \(router option route\); "
    ):
        traefik.managed_index(routes, _setup(route="Host(`c`)"), "k8s-flask-pro")


def test_option_traefik_service_finds_the_route_of_the_traefik_service() -> None:
    routes = [
        _route("Host(`a`)", STABLE),
        _route("Host(`b`)", {"kind": "TraefikService", "name": "flask-wrr"}),
    ]

    assert traefik.managed_index(routes, _setup(traefikService="flask-wrr"), "k8s-flask-pro") == 1


def test_no_route_to_the_stable_names_the_backend_and_the_options() -> None:
    with pytest.raises(
        ConfigError, match="no route sends traffic to Service k8s-flask .* option stableService"
    ):
        traefik.managed_index([_route("Host(`docs`)", OTHER)], _setup(), "k8s-flask-pro")


def test_several_routes_to_the_stable_name_each_and_option_route() -> None:
    routes = [_route("Host(`a`)", STABLE), _route("Host(`b`)", STABLE)]

    with pytest.raises(ConfigError) as err:
        traefik.managed_index(routes, _setup(), "k8s-flask-pro")

    assert "spec.routes[0] (match 'Host(`a`)') and spec.routes[1] (match 'Host(`b`)')" in str(err.value)
    assert "all send traffic to Service k8s-flask; set router option route" in str(err.value)
