"""[mirror] The mirror stage: parsing, validation per router, decide(), and the routers' pure renderings.

A mirror stage copies `percent` % of the live requests to the canary and discards its answers: the plan is
RoutePlan(stable=100, canary=0, mirror=N), every client is answered by the stable, the analysis judges the
canary on the copies. Real Traefik, the apiserver and istioctl are in tests/traefik/test_traefik_mirror.py
and tests/contract/test_mirror_routers.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import CanaryStage, CanaryStep, MirrorStage, PromoteStage
from functions.core.policy_parse import parse_policy, problems, to_doc
from functions.core.state import Phase
from functions.errors import PolicyError
from functions.providers.routers import gateway_api, istio, traefik
from functions.providers.routers._common import apply_patch
from functions.providers.routers.base import RouteTarget
from tests.unit.machine_helpers import FAIL, NO_DATA, PASS, Driver, analysis, kinds, make_policy

ROUTERS: dict[str, dict[str, Any]] = {
    "traefik": {"ingressRoute": "web", "host": "web.example.com"},
    "istio": {"virtualService": "web", "destinationRule": "web"},
    "gateway-api": {"httpRoute": "web"},
    "nginx": {"stableIngress": "web"},
    "haproxy": {"backend": "web"},
    "recording": {},
}


def doc(provider: str, *stages: dict[str, Any], **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": {"repository": "registry.example.com/shop/web"},
        "router": {"provider": provider, **ROUTERS[provider], **options},
        "analysis": {"metrics": [{"name": "errors", "query": "sum(rate(errors[1m]))", "max": 0.05}]},
        "stages": list(stages)
        or [{"mirror": {"percent": 50, "duration": "5m"}}, {"canary": {"steps": [{"weight": 50}]}}],
    }
    return {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }


# --- parsing -------------------------------------------------------------------------------------------------


def test_mirror_stage_parses_and_round_trips() -> None:
    policy = parse_policy(doc("traefik"))
    assert policy.stages[0] == MirrorStage(percent=50, duration=300.0, analysis=True)
    assert parse_policy(yaml.safe_load(yaml.safe_dump(to_doc(policy)))) == policy


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        ({"percent": 0}, "spec.stages[0].mirror.percent", "an integer 1..100"),
        ({"percent": 101}, "spec.stages[0].mirror.percent", "an integer 1..100"),
        ({"percent": "half"}, "spec.stages[0].mirror.percent", "an integer 1..100"),
        ({}, "spec.stages[0].mirror.percent", "required"),
        ({"percent": 10, "weight": 5}, "spec.stages[0].mirror.weight", ""),
        ({"percent": 10, "duration": "soon"}, "spec.stages[0].mirror.duration", "a duration"),
    ],
)
def test_mirror_bad_fields_are_refused_at_their_path(body: dict[str, Any], path: str, expected: str) -> None:
    found = problems(doc("traefik", {"mirror": body}))
    assert [p for p, _ in found] == [path], found
    assert expected in found[0][1]


def test_mirror_stage_goes_before_promote() -> None:
    found = problems(doc("traefik", {"promote": {}}, {"mirror": {"percent": 10}}))
    assert found and found[0][0] == "spec.stages[1].mirror" and "after the promote stage" in found[0][1]


def test_mirror_analysis_needs_spec_analysis() -> None:
    policy = doc("traefik", {"mirror": {"percent": 10, "analysis": True}})
    del policy["spec"]["analysis"]
    assert [p for p, _ in problems(policy)] == ["spec.stages[0].mirror.analysis"]


# --- validation per router -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["nginx", "haproxy"])
def test_mirror_is_refused_at_validate_by_routers_that_cannot(provider: str) -> None:
    found = problems(doc(provider))
    assert found == [("spec.stages[0].mirror", found[0][1])]
    assert found[0][1].startswith(
        f"traffic mirroring is not supported by router {provider}; supported: weights"
    )
    with pytest.raises(PolicyError, match=r"spec\.stages\[0\]\.mirror: traffic mirroring"):
        parse_policy(doc(provider))


@pytest.mark.parametrize("provider", ["traefik", "istio", "gateway-api", "recording"])
def test_mirror_is_accepted_by_routers_that_can(provider: str) -> None:
    assert problems(doc(provider)) == []


def test_mirror_on_traefik_needs_no_ingress_route() -> None:
    """With a weighted TraefikService alone, graylane's mirroring service is one of its entries."""
    policy = doc("traefik")
    policy["spec"]["router"] = {"provider": "traefik", "traefikService": "web"}
    assert problems(policy) == []


def test_mirror_on_gateway_api_through_traefik_is_refused_naming_the_implementation() -> None:
    found = problems(doc("gateway-api", metrics="traefik"))
    assert [p for p, _ in found] == ["spec.stages[0].mirror"]
    assert "router gateway-api on traefik" in found[0][1] and "RequestMirror" in found[0][1]


# --- decide() ----------------------------------------------------------------------------------------------


def mirror_policy(**changes: Any) -> Any:
    return make_policy(
        MirrorStage(percent=50, duration=60.0),
        CanaryStage(steps=(CanaryStep(20, 60.0),)),
        PromoteStage(),
        **{"analysis": analysis(), **changes},
    )


def test_mirror_routes_every_answer_to_stable_and_copies_to_the_canary() -> None:
    d = Driver.with_stable(mirror_policy())
    out = d.push("v2")
    assert kinds(out.effects) == ["deploy-canary", "scale-canary", "set-routes"]
    routes = [e.routes for e in out.effects if e.kind == "set-routes"]
    assert routes == [RoutePlan(stable=100, canary=0, mirror=50)]
    assert [e.weight for e in out.effects if e.kind == "scale-canary"] == [50]  # sized for the copies
    assert d.rel.weight == 0 and d.rel.analysing and d.rel.timer is not None and d.rel.timer.name == "stage"
    assert any("mirror: 50% of the live requests copied to the canary" in h.reason for h in d.state.history)


def test_mirror_moves_on_only_after_a_passing_verdict_and_the_mirror_goes() -> None:
    d = Driver.with_stable(mirror_policy())
    d.push("v2")
    d.tick(61, NO_DATA)
    assert d.rel.stage == 0 and d.state.routes.mirror == 50  # inconclusive never moves on
    d.tick(10, PASS)
    assert d.rel.stage == 1 and d.state.routes == RoutePlan.canary_at(20)  # no mirror any more


def test_mirror_failing_analysis_rolls_back_to_stable_only() -> None:
    d = Driver.with_stable(mirror_policy())
    d.push("v2")
    d.tick(10, FAIL)
    assert d.rel.phase == Phase.ROLLED_BACK and d.state.routes == STABLE_ONLY


def test_mirror_open_ended_waits_for_resume() -> None:
    d = Driver.with_stable(make_policy(MirrorStage(percent=100, analysis=False), PromoteStage()))
    d.push("v2")
    d.tick(10_000)
    assert d.rel.stage == 0 and d.rel.timer is None and d.state.routes == RoutePlan(mirror=100)
    d.command("resume")
    assert d.rel.phase == Phase.SUCCEEDED and d.state.routes == STABLE_ONLY


def test_mirror_plan_never_has_live_canary_traffic() -> None:
    with pytest.raises(ValueError, match="no live traffic on the canary"):
        RoutePlan(stable=90, canary=10, mirror=50)
    with pytest.raises(ValueError, match="mirror share must be 0..100"):
        RoutePlan(mirror=101)
    assert RoutePlan.mirrored(30).to_dict() == {"mirror": 30}
    assert (
        "mirror" not in STABLE_ONLY.to_dict()
    )  # route-plan annotations of plans without mirror are unchanged


# --- the routers' renderings (pure) ---------------------------------------------------------------------------


def traefik_setup(**options: Any) -> Any:
    opts = {"ingressRoute": "web", "port": 8080, **options}
    return traefik._setup(RouteTarget("shop", "web", "web", "web-canary", options=opts))


USER_STABLE = {"name": "web", "port": 8080, "passHostHeader": False, "namespace": "shop"}


@pytest.mark.parametrize("weight", [None, 100, 7])
def test_mirror_traefik_entries_through_a_release(weight: int | None) -> None:
    """stable-only -> mirror -> weights -> mirror -> stable-only, element by element: the user's stable entry
    keeps every field but the weight, graylane's entry names the mirroring service, the canary entry goes."""
    s = traefik_setup()
    stable = {**USER_STABLE, **({"weight": weight} if weight is not None else {})}
    entries: list[Any] = [stable, {"name": "other", "port": 80, "weight": 0}]
    for plan in (RoutePlan.mirrored(50), RoutePlan.canary_at(20), RoutePlan.mirrored(10), STABLE_ONLY):
        ops, _ = traefik.weight_ops(entries, "/s", s, plan, None)
        entries = apply_patch({"s": entries}, ops)["s"]
        mine = [e for e in entries if traefik._is_mirror(e, s)]
        assert entries[0] == {
            **USER_STABLE,
            **({"weight": 0} if plan.mirror else {"weight": plan.stable} if "weight" in entries[0] else {}),
        }
        assert entries[1] == {"name": "other", "port": 80, "weight": 0}
        assert mine == (
            [{"kind": "TraefikService", "name": "web-mirror", "weight": 100}] if plan.mirror else []
        )
        assert traefik._weights(entries, s) == (plan.stable, plan.canary)
        assert [e for e in entries if e.get("name") == "web-canary"] == (
            [{**USER_STABLE, "name": "web-canary", "weight": plan.canary}] if plan.canary else []
        )
        assert traefik.weight_ops(entries, "/s", s, plan, None)[0] == []  # idempotent


def test_mirror_traefik_mirroring_spec_copies_the_stable_entry() -> None:
    s = traefik_setup()
    spec = traefik.mirror_spec([{**USER_STABLE, "weight": 100}], s, 50, None)
    assert spec == {
        "mirroring": {**USER_STABLE, "mirrors": [{**USER_STABLE, "name": "web-canary", "percent": 50}]}
    }
    assert traefik.mirror_percent(spec, s) == 50
    kept = {"name": "web-canary", "port": 9090}  # the user's own canary entry, kept aside
    assert traefik.mirror_spec([USER_STABLE], s, 5, kept)["mirroring"]["mirrors"] == [{**kept, "percent": 5}]
    assert (
        traefik.mirror_percent({"mirroring": {"name": "web", "mirrors": [{"name": "x", "percent": 5}]}}, s)
        == 0
    )
    assert traefik.mirror_name(traefik_setup(traefikService="web-weights")) == "web-weights-mirror"


def istio_setup() -> Any:
    return istio._setup(
        RouteTarget(
            "shop",
            "reviews",
            "reviews-v1",
            "reviews-v2",
            options={"host": "reviews", "stableSubset": "v1", "canarySubset": "v2"},
        )
    )


def test_mirror_istio_sets_and_clears_mirror_on_the_managed_route() -> None:
    s = istio_setup()
    route = {
        "name": "main",
        "timeout": "3s",
        "route": [{"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}}],
    }
    ops = istio.mirror_ops(route, "/r/route", s, RoutePlan.mirrored(25), None)
    live = apply_patch({"r": route}, ops)["r"]
    assert live["mirror"] == {"host": "reviews", "subset": "v2", "port": {"number": 9080}}
    assert live["mirrorPercentage"] == {"value": 25.0} and istio.live_mirror(live, s) == 25
    assert istio.mirror_ops(live, "/r/route", s, RoutePlan.mirrored(25), None) == []
    back = apply_patch({"r": live}, istio.mirror_ops(live, "/r/route", s, STABLE_ONLY, None))["r"]
    assert back == route


def test_mirror_istio_a_users_own_mirror_is_refused_and_left_alone() -> None:
    s = istio_setup()
    route = {
        "name": "main",
        "mirror": {"host": "audit"},
        "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
    }
    with pytest.raises(Exception, match="it is the user's mirror"):
        istio.mirror_ops(route, "/r/route", s, RoutePlan.mirrored(25), None)
    assert istio.mirror_ops(route, "/r/route", s, STABLE_ONLY, None) == []


def test_mirror_gateway_filter_after_the_users_filters() -> None:
    s = gateway_api._setup(RouteTarget("shop", "web", "web", "web-canary", options={"port": 8080}))
    user = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]}}
    for rule in ({"backendRefs": []}, {"backendRefs": [], "filters": [user]}):
        live = apply_patch(
            {"r": rule}, gateway_api.mirror_ops(rule, "/r/filters", s, RoutePlan.mirrored(40))
        )["r"]
        assert live["filters"][-1] == {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 8080},
                "percent": 40,
            },
        }
        assert live["filters"][:-1] == rule.get("filters", []) and gateway_api.live_mirror(live, s) == 40
        moved = apply_patch(
            {"r": live}, gateway_api.mirror_ops(live, "/r/filters", s, RoutePlan.mirrored(5))
        )["r"]
        assert gateway_api.live_mirror(moved, s) == 5
        assert (
            apply_patch({"r": moved}, gateway_api.mirror_ops(moved, "/r/filters", s, STABLE_ONLY))["r"]
            == rule
        )


def test_mirror_status_shows_the_mirrored_share() -> None:
    from functions.present import status, summary

    d = Driver.with_stable(mirror_policy())
    d.push("v2")
    assert status(d.state, d.policy, d.now)["routes"] == {
        "stable": 100,
        "canary": 0,
        "abTest": False,
        "mirror": 50,
    }
    assert "traffic 100/0, 50% of the requests mirrored to the canary (its answers discarded)" in summary(
        d.state, d.policy, d.now
    )
    d.tick(10, PASS)
    d.tick(60, PASS)
    assert "mirror" not in status(d.state, d.policy, d.now)["routes"]


@pytest.mark.parametrize("provider", ["nginx", "haproxy"])
def test_mirror_graylane_validate_names_the_field_and_the_router(
    provider: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.cli import main

    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(doc(provider)))
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(
        f"{path}: spec.stages[0].mirror: traffic mirroring is not supported by "
        f"router {provider}; supported: weights"
    )
