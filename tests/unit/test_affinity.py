"""Session affinity (issue 14 item 3, `pytest -k affinity`): spec.sessionAffinity parsed and refused at validate
where the router cannot pin a client to a version; the Traefik sticky cookie and the HAProxy map entries each
weight renders. The real proxies are tests/traefik/test_traefik_affinity.py and tests/real/test_haproxy_affinity.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.cli import main
from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import SessionAffinity
from functions.core.policy_parse import parse_policy, problems, to_doc
from functions.errors import ConfigError
from functions.importers import convert
from functions.providers.routers import haproxy, traefik
from functions.providers.routers.base import RouteTarget

COOKIE = {"name": "shop-sticky", "maxAge": "1h"}
ROUTERS: dict[str, dict[str, Any]] = {
    "traefik": {"traefikService": "web-wrr"},
    "haproxy": {"backend": "web"},
    "recording": {},
    "istio": {"virtualService": "web", "destinationRule": "web"},
    "gateway-api": {"httpRoute": "web"},
    "nginx": {"stableIngress": "web"},
}


def doc(
    provider: str = "traefik", affinity: Any = None, stages: list[Any] | None = None, **options: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": {"repository": "registry.example.com/shop/web"},
        "router": {"provider": provider, **ROUTERS[provider], **options},
        "stages": stages
        or [{"canary": {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 50, "pause": "1m"}]}}],
        "sessionAffinity": {"cookie": dict(COOKIE)} if affinity is None else affinity,
    }
    return {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }


PINNED = SessionAffinity("shop-sticky", 3600)


def target(affinity: SessionAffinity | None = PINNED) -> RouteTarget:
    return RouteTarget(
        "shop", "web", "web", "web-canary", options={"traefikService": "web-wrr"}, affinity=affinity
    )


# --- the policy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["traefik", "haproxy", "recording"])
def test_affinity_parses_and_round_trips_on_routers_that_pin(provider: str) -> None:
    policy = parse_policy(doc(provider))
    assert policy.session_affinity == SessionAffinity(cookie="shop-sticky", max_age=3600)
    assert to_doc(policy)["spec"]["sessionAffinity"] == {"cookie": {"name": "shop-sticky", "maxAge": 3600}}
    assert parse_policy(to_doc(policy)) == policy


def test_affinity_defaults_to_a_session_cookie_named_graylane_affinity() -> None:
    policy = parse_policy(doc(affinity={"cookie": {}}))
    assert policy.session_affinity == SessionAffinity(cookie="graylane-affinity", max_age=None)
    without = doc()
    del without["spec"]["sessionAffinity"]
    assert parse_policy(without).session_affinity is None


@pytest.mark.parametrize(
    ("affinity", "path", "says"),
    [
        (
            {"cookie": {"name": "bad name"}},
            "spec.sessionAffinity.cookie.name",
            "a cookie name (RFC 6265 token",
        ),
        ({"cookie": {"name": "x" * 65}}, "spec.sessionAffinity.cookie.name", "at most 64"),
        ({"cookie": {"maxAge": "1.5s"}}, "spec.sessionAffinity.cookie.maxAge", "whole seconds"),
        ({"cookie": {"maxAge": 0}}, "spec.sessionAffinity.cookie.maxAge", "> 0"),
        ({"cookie": {"path": "/"}}, "spec.sessionAffinity.cookie.path", ""),
        ({"header": "x-user-id"}, "spec.sessionAffinity.header", ""),
        ({}, "spec.sessionAffinity.cookie", ""),
    ],
)
def test_affinity_bad_fields_are_refused_at_their_path(
    affinity: dict[str, Any], path: str, says: str
) -> None:
    found = dict(problems(doc(affinity=affinity)))
    assert path in found, found
    assert says in found[path]


def test_affinity_needs_a_canary_stage() -> None:
    found = problems(doc(stages=[{"bluegreen": {"preview": "1m"}}]))
    assert (
        "spec.sessionAffinity",
        "keeps clients on a version while a canary stage weighs the traffic; this policy has no canary stage",
    ) in found


@pytest.mark.parametrize(
    ("provider", "why"),
    [
        ("istio", "consistentHash picks a pod inside the subset the VirtualService's weights already chose"),
        ("gateway-api", "sessionPersistence is in Gateway API's experimental channel only"),
        ("nginx", "a stable client re-draws at every request and drifts onto the canary"),
    ],
)
def test_affinity_is_refused_at_validate_naming_the_router_and_why(provider: str, why: str) -> None:
    [(path, message)] = problems(doc(provider))
    assert path == "spec.sessionAffinity"
    assert message.startswith(f"session affinity is not supported by router {provider} (")
    assert why in message


def test_affinity_on_traefik_needs_a_weighted_traefikservice() -> None:
    d = doc()
    d["spec"]["router"] = {"provider": "traefik", "ingressRoute": "web"}
    [(path, message)] = problems(d)
    assert path == "spec.sessionAffinity"
    assert "needs router option traefikService with router traefik" in message
    assert "services[].sticky pins pods inside one Service" in message


def test_affinity_max_age_is_refused_on_traefik_v2s_group_and_a_session_cookie_is_not() -> None:
    legacy = doc(group="traefik.containo.us")
    assert problems(legacy) == [
        (
            "spec.sessionAffinity.cookie.maxAge",
            "is not supported by router traefik with group "
            "traefik.containo.us (Traefik v2.11's sticky cookie has no maxAge: a session cookie); "
            "leave it out or use group traefik.io with Traefik v3",
        )
    ]
    assert problems(doc(group="traefik.containo.us", affinity={"cookie": {"name": "s"}})) == []


def test_affinity_graylane_validate_exits_non_zero_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(doc("istio")))
    assert main(["validate", str(path)]) != 0
    out = capsys.readouterr()
    assert "spec.sessionAffinity" in out.out + out.err
    assert "session affinity is not supported by router istio" in out.out + out.err
    path.write_text(yaml.safe_dump(doc("haproxy")))
    assert main(["validate", str(path)]) == 0


# --- Traefik: the sticky cookie of the weighted TraefikService ------------------------------------------------


def test_traefik_affinity_cookie_is_named_after_the_weight_and_only_while_weighted() -> None:
    t = target()
    assert traefik.sticky(t, RoutePlan.canary_at(20)) == {
        "cookie": {"name": "shop-sticky-20", "httpOnly": True, "maxAge": 3600}
    }
    assert traefik.sticky(t, RoutePlan.canary_at(40))["cookie"]["name"] == "shop-sticky-40"
    for off in (STABLE_ONLY, RoutePlan.canary_at(100)):
        assert traefik.sticky(t, off) is None
    assert traefik.sticky(target(None), RoutePlan.canary_at(20)) is None
    assert "maxAge" not in traefik.sticky(target(SessionAffinity("s")), RoutePlan.canary_at(20))["cookie"]


def ts(sticky: Any = None, written: Any = None) -> dict[str, Any]:
    weighted: dict[str, Any] = {
        "services": [
            {"name": "web", "port": 80, "weight": 80},
            {"name": "web-canary", "port": 80, "weight": 20},
        ]
    }
    if sticky is not None:
        weighted["sticky"] = sticky
    meta: dict[str, Any] = {"name": "web-wrr", "namespace": "shop"}
    if written is not None:
        meta["annotations"] = {traefik.STICKY: json.dumps(written, sort_keys=True)}
    return {"metadata": meta, "spec": {"weighted": weighted}}


def test_traefik_affinity_sticky_ops_add_replace_remove_and_are_idempotent() -> None:
    at20 = traefik.sticky(target(), RoutePlan.canary_at(20))
    at40 = traefik.sticky(target(), RoutePlan.canary_at(40))
    ops, notes = traefik.sticky_ops(ts(), at20, "w")
    assert ops == [{"op": "add", "path": "/spec/weighted/sticky", "value": at20}]
    assert json.loads(notes[traefik.STICKY] or "") == at20
    assert traefik.sticky_ops(ts(at20, at20), at20, "w") == ([], {})  # written already: nothing to do
    ops, notes = traefik.sticky_ops(ts(at20, at20), at40, "w")  # a weight change renames the cookie: re-roll
    assert ops == [{"op": "add", "path": "/spec/weighted/sticky", "value": at40}]
    ops, notes = traefik.sticky_ops(ts(at40, at40), None, "w")
    assert ops == [{"op": "remove", "path": "/spec/weighted/sticky"}] and notes == {traefik.STICKY: None}
    assert traefik.sticky_ops(ts(), None, "w") == ([], {})


def test_traefik_affinity_keeps_a_users_sticky_when_off_and_refuses_to_replace_it() -> None:
    users = {"cookie": {"name": "theirs"}}
    assert traefik.sticky_ops(ts(users), None, "w") == ([], {})
    with pytest.raises(
        ConfigError, match=r"TraefikService shop/web-wrr spec.weighted.sticky .* is the user's"
    ):
        traefik.sticky_ops(ts(users), traefik.sticky(target(), RoutePlan.canary_at(20)), "w")
    with pytest.raises(ConfigError, match="session affinity needs router option traefikService"):
        traefik.TraefikRouter(None).set_routes(
            RouteTarget(
                "shop",
                "web",
                "web",
                "web-canary",
                options={"ingressRoute": "web", "group": "traefik.io"},
                affinity=SessionAffinity(),
            ),
            RoutePlan.canary_at(20),
        )


# --- HAProxy: the map entries its config pins clients by ---------------------------------------------------------


def test_haproxy_affinity_map_entries_only_while_weighted() -> None:
    t = target()
    assert haproxy.affinity_entries(t, RoutePlan.canary_at(20)) == ["affinity shop-sticky", "maxage 3600"]
    assert haproxy.affinity_entries(target(SessionAffinity("s")), RoutePlan.canary_at(50)) == ["affinity s"]
    for off in (STABLE_ONLY, RoutePlan.canary_at(100)):
        assert haproxy.affinity_entries(t, off) == []
    assert haproxy.affinity_entries(target(None), RoutePlan.canary_at(20)) == []


def test_haproxy_affinity_config_declares_the_stick_table_and_the_cookie(tmp_path: Path) -> None:
    cfg = haproxy.render_config(
        socket_path=tmp_path / "s",
        maps_dir=tmp_path,
        bind="127.0.0.1:1",
        stable="127.0.0.1:2",
        canary="127.0.0.1:3",
        backend="be_web",
    )
    assert "backend be_web_affinity\n" in cfg
    assert "stick-table type string len 64 size 1m expire 1d" in cfg.split("backend be_web_affinity", 1)[1]
    assert "stick on var(txn.gl_client) table be_web_affinity" in cfg


# --- importing Flagger's sessionAffinity ----------------------------------------------------------------------


def flagger(provider: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "provider": provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m",
                "stepWeight": 20,
                "maxWeight": 60,
                "sessionAffinity": {"cookieName": "flagger-cookie", "maxAge": 21600},
            },
        },
    }


def test_affinity_imported_from_flagger_where_the_router_pins_and_noted_where_not() -> None:
    [item] = convert([flagger("traefik")])
    assert item.document["spec"]["sessionAffinity"] == {"cookie": {"name": "flagger-cookie", "maxAge": 21600}}
    assert any("re-rolls every client at each weight change" in str(n) for n in item.notes)
    [item] = convert([flagger("istio")])
    assert "sessionAffinity" not in item.document["spec"]
    assert any(
        "spec.analysis.sessionAffinity" in str(n) and "not supported by router istio" in str(n)
        for n in item.notes
    )
    for provider in ("traefik", "istio"):
        [item] = convert([flagger(provider)])
        assert problems(copy.deepcopy(item.document)) == [], provider


# --- the history says what a weight change did to pinned clients ----------------------------------------------


def test_affinity_history_says_each_weight_change_redraws_every_client() -> None:
    from functions.core.policy import CanaryStage, CanaryStep, PromoteStage
    from tests.unit.machine_helpers import Driver, make_policy

    policy = make_policy(
        CanaryStage(steps=(CanaryStep(20, 60.0), CanaryStep(50, 60.0))),
        PromoteStage(),
        session_affinity=SessionAffinity("shop-sticky"),
    )
    d = Driver.with_stable(policy)
    d.push("v2")
    for _ in range(6):
        d.tick(61)
    reasons = [h.reason for h in d.state.history if h.action == "weight"]
    assert any(
        "session affinity: every client drawn afresh at 20 % and pinned by its cookie (shop-sticky)" in r
        for r in reasons
    ), reasons
    assert any("drawn afresh at 50 %" in r for r in reasons), reasons
    plain = Driver.with_stable(make_policy(*policy.stages))
    plain.push("v2")
    for _ in range(6):
        plain.tick(61)
    assert not any("session affinity" in h.reason for h in plain.state.history)
