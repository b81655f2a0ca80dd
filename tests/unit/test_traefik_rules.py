"""The Traefik router writes each API group's own rule syntax (what real Traefik v2.11 and v3 accept).

Traefik v2.11 serves traefik.containo.us (and traefik.io) with the v2 matchers `Headers`, `HeadersRegexp`
and `ClientIP(a, b)`; its IngressRoute route has no `syntax` field. Traefik v3 serves only traefik.io, with
the v3 matchers `Header`, `HeaderRegexp` and `ClientIP(a)`, and accepts `syntax: v2` per route. The same
rules are sent through the real proxies in tests/traefik.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from functions.core.effects import RoutePlan
from functions.core.policy import Match
from functions.errors import ConfigError
from functions.providers.routers import traefik
from functions.providers.routers.base import RouteTarget

RULES = (
    Match(kind="header", name="location", value="shenzhen"),
    Match(kind="header", name="x-env", regex="^st.*$"),
    Match(kind="cookie", name="gray", regex="tr(ue|y)"),
    Match(kind="user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
    Match(kind="user-hash", name="x-uid", percent=20),
)
V2_ONLY = re.compile(r"\bHeaders(Regexp)?\(")
V3_ONLY = re.compile(r"\bHeader(Regexp)?\(")


def _routes(group: str | None, plan: RoutePlan, **options: Any) -> list[dict[str, Any]]:
    opts = {"ingressRoute": "k8s-flask-pro", "host": "pro.coding", "port": 8080, **options}
    if group is not None:
        opts["group"] = group
    s = traefik._setup(RouteTarget("pro", "flask", "k8s-flask", "k8s-flask-canary", options=opts))
    return traefik._routes(s, plan, [])


def test_the_legacy_group_gets_v2_matchers_and_never_a_syntax_field() -> None:
    routes = _routes("traefik.containo.us", RoutePlan.canary_at(20, match=RULES, salt="s"))
    assert routes[0]["match"] == (
        "Host(`pro.coding`) && (Headers(`location`, `shenzhen`) || HeadersRegexp(`x-env`, `^st.*$`)"
        " || HeadersRegexp(`cookie`, `^(.*?;\\s*)?gray=(?:tr(ue|y))(;.*)?$`)"
        " || HeadersRegexp(`x-user-id`, `^.*[13579]$`) || HeadersRegexp(`x-graylane-bucket`, `^([0-9]|1[0-9])$`))"
    )
    assert not V3_ONLY.search(routes[0]["match"])
    assert all("syntax" not in r for r in routes)
    assert routes[1] == {
        "kind": "Rule",
        "match": "Host(`pro.coding`)",
        "services": [
            {"kind": "Service", "name": "k8s-flask", "port": 8080, "weight": 80},
            {"kind": "Service", "name": "k8s-flask-canary", "port": 8080, "weight": 20},
        ],
    }


@pytest.mark.parametrize("group", [None, "traefik.io"])
def test_traefik_io_gets_v3_matchers_by_default(group: str | None) -> None:
    routes = _routes(group, RoutePlan.canary_at(0, match=RULES, salt="s"))
    assert routes[0]["match"].startswith(
        "Host(`pro.coding`) && (Header(`location`, `shenzhen`) || HeaderRegexp("
    )
    assert not V2_ONLY.search(routes[0]["match"])
    assert all("syntax" not in r for r in routes)


def test_v3_source_ranges_are_one_client_ip_each_and_v2_ones_share_one() -> None:
    cidrs = Match(kind="source-ip", cidrs=("10.0.0.0/8", "192.168.1.7/32"))
    v3 = _routes("traefik.io", RoutePlan.canary_at(0, match=(cidrs,)))[0]["match"]
    assert v3 == "Host(`pro.coding`) && ((ClientIP(`10.0.0.0/8`) || ClientIP(`192.168.1.7/32`)))"
    v2 = _routes("traefik.io", RoutePlan.canary_at(0, match=(cidrs,)), ruleSyntax="v2")[0]["match"]
    assert v2 == "Host(`pro.coding`) && (ClientIP(`10.0.0.0/8`, `192.168.1.7/32`))"


def test_v2_syntax_on_traefik_io_is_declared_on_every_route() -> None:
    routes = _routes("traefik.io", RoutePlan.canary_at(50, match=RULES[:1]), ruleSyntax="v2")
    assert [r.get("syntax") for r in routes] == ["v2", "v2"]
    assert "Headers(`location`, `shenzhen`)" in routes[0]["match"]


def test_v3_syntax_cannot_be_asked_of_the_legacy_group() -> None:
    with pytest.raises(ConfigError, match="ruleSyntax is 'v3'"):
        _routes("traefik.containo.us", RoutePlan(), ruleSyntax="v3")


def test_a_backtick_in_a_value_is_refused_rather_than_breaking_the_rule() -> None:
    with pytest.raises(ConfigError, match="backtick"):
        _routes("traefik.io", RoutePlan.canary_at(0, match=(Match(kind="header", name="x", value="a`b"),)))


def _services(route: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(s["name"], s.get("weight")) for s in route["services"]]


@pytest.mark.parametrize("group", ["traefik.io", "traefik.containo.us"])
def test_a_canary_without_traffic_is_not_listed_so_its_missing_pods_cannot_drop_the_route(group: str) -> None:
    """Traefik drops a route whose Service has no endpoints ("no servers found"): 404 for everyone."""
    assert [_services(r) for r in _routes(group, RoutePlan())] == [[("k8s-flask", 100)]]
    assert _services(_routes(group, RoutePlan.canary_at(5))[-1]) == [
        ("k8s-flask", 95),
        ("k8s-flask-canary", 5),
    ]
    assert _services(_routes(group, RoutePlan.canary_at(100))[-1]) == [
        ("k8s-flask", 0),
        ("k8s-flask-canary", 100),
    ]


def test_the_ab_route_is_weighted_so_traefik_names_its_backend_after_the_canary_service() -> None:
    routes = _routes("traefik.io", RoutePlan.canary_at(0, match=RULES[:1]))
    assert _services(routes[0]) == [("k8s-flask-canary", 100), ("k8s-flask", 0)]
    assert _services(routes[1]) == [("k8s-flask", 100)]


def test_a_traefik_service_weighs_only_what_gets_traffic() -> None:
    opts = {"traefikService": "flask-wrr", "port": 8080}
    s = traefik._setup(RouteTarget("pro", "flask", "k8s-flask", "k8s-flask-canary", options=opts))
    assert [x["name"] for x in traefik._weighted(s, RoutePlan())] == ["k8s-flask"]
    assert [x["weight"] for x in traefik._weighted(s, RoutePlan.canary_at(30))] == [70, 30]


def test_replace_swaps_the_users_reference_in_place_and_restore_puts_it_back_element_by_element() -> None:
    """userProtection replace (pure part): graylane's reference takes the user's list position, each element
    tested before it is replaced; restoring gives back exactly the user's element."""
    from functions.providers.routers._common import apply_patch

    users = {"name": "flask-k8s-traffic", "namespace": "pro"}
    route = {"match": "Host(`pro.coding`)", "middlewares": [{"name": "auth"}, users, {"name": "breaker"}]}
    ops, swapped = traefik.swap_refs(route, "/spec/routes/1", {"web-rate-limit": users}, {})
    assert ops == [
        {"op": "test", "path": "/spec/routes/1/middlewares/1", "value": users},
        {"op": "replace", "path": "/spec/routes/1/middlewares/1", "value": {"name": "web-rate-limit"}},
    ]
    assert swapped["middlewares"] == [{"name": "auth"}, {"name": "web-rate-limit"}, {"name": "breaker"}]
    assert traefik.middleware_ops(swapped, "/spec/routes/1", {"web-rate-limit": True}) == []  # already there
    doc = {"spec": {"routes": [{}, swapped]}}
    back, restored = traefik.swap_refs(swapped, "/spec/routes/1", {}, {"web-rate-limit": users})
    assert restored == route and apply_patch(doc, back)["spec"]["routes"][1] == route
    assert traefik.swap_refs(route, "/spec/routes/1", {}, {"web-rate-limit": users}) == (
        [],
        route,
    )  # idempotent


@pytest.mark.parametrize("choice", ["keep", "wrap", "replace"])
def test_user_protection_is_one_of_keep_wrap_replace(choice: str) -> None:
    options = {"ingressRoute": "web", "userProtection": choice}
    assert (
        traefik._setup(RouteTarget("prod", "web", "web", "web-canary", options=options)).user_protection
        == choice
    )
    with pytest.raises(
        ConfigError, match="router option userProtection is 'swap'; expected one of keep, wrap, replace"
    ):
        traefik._setup(
            RouteTarget("prod", "web", "web", "web-canary", options={**options, "userProtection": "swap"})
        )


def test_one_weight_helper_serves_every_backend_list() -> None:
    """routers/_common.backend_weight_ops: the stable's weight, the canary added as the stable's copy (or the
    user's kept entry), removed at 0 and returned; Gateway API's drop=False keeps it listed at 0."""
    from functions.providers.routers._common import backend_weight_ops

    entries = [{"name": "web", "port": 80, "passHostHeader": True}]

    def ops(plan: RoutePlan, entries: list[Any], kept: Any = None, drop: bool = True) -> Any:
        return backend_weight_ops(entries, "/b", plan, is_stable=lambda e: e["name"] == "web",
                                  is_canary=lambda e: e["name"] == "web-canary",
                                  canary_of=lambda e: {**e, "name": "web-canary"}, kept=kept, what="w: /b lists web",
                                  drop=drop)  # fmt: skip

    assert ops(RoutePlan.canary_at(20), entries) == ([
        {"op": "add", "path": "/b/0/weight", "value": 80},
        {"op": "add", "path": "/b/-", "value": {"name": "web-canary", "port": 80, "passHostHeader": True,
                                               "weight": 20}}], None)  # fmt: skip
    assert ops(RoutePlan(), entries) == ([], None)  # a lone stable without a weight keeps none
    listed = [{**entries[0], "weight": 80}, {"name": "web-canary", "port": 81, "weight": 20}]
    assert ops(RoutePlan(), listed) == (
        [{"op": "add", "path": "/b/0/weight", "value": 100}, {"op": "remove", "path": "/b/1"}],
        {"name": "web-canary", "port": 81},
    )
    assert ops(RoutePlan(), listed, drop=False) == (
        [
            {"op": "add", "path": "/b/0/weight", "value": 100},
            {"op": "add", "path": "/b/1/weight", "value": 0},
        ],
        None,
    )
    assert ops(RoutePlan.canary_at(10), entries, kept={"name": "web-canary", "port": 81})[0][-1]["value"] == {
        "name": "web-canary",
        "port": 81,
        "weight": 10,
    }
    with pytest.raises(ConfigError, match=r"w: /b lists web 2 times; expected once"):
        ops(RoutePlan(), entries * 2)
