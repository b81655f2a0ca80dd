"""A fresh baseline (`spec.baseline`, a canary stage's `baseline`): decide() deploys it with the canary, routes it
at the canary's (capped) weight, removes it when the release ends; the judges and the guard compare the canary
with its series, not the stable's; routers that cannot split three ways refuse it at validate."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from functions.core import baseline
from functions.core.analysis import FAIL, PASS, judge
from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import MetricSample, Observation
from functions.core.policy import (
    Analysis,
    CanaryStage,
    CanaryStep,
    ImageRule,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
)
from functions.core.policy_doc import to_doc
from functions.core.policy_parse import parse_policy, problems
from functions.core.state import AppState, Phase, Release, Version
from functions.providers.metrics import templates as tp
from functions.providers.metrics.prometheus import Answer, PrometheusAnalysis
from functions.providers.routers import gateway_api, istio, traefik
from functions.providers.routers._common import apply_patch, live_plan
from functions.providers.routers.base import RouteTarget
from tests.unit.evidence_helpers import Counters, run, seed_like
from tests.unit.machine_helpers import Driver, make_policy, version

AT = "2024-05-01T12:00:00.000000Z"
BASELINE = "web-baseline"


def _doc(provider: str = "traefik", stage: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    canary = stage if stage is not None else {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 50}]}
    return {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web", "namespace": "team-a"},
        "spec": {
            "image": {"repository": "r/web"},
            "workload": {"name": "web"},
            "router": {"provider": provider, **({"ingressRoute": "web"} if provider == "traefik" else {})},
            "stages": [{"canary": canary}, {"promote": {}}],
            **spec,
        },
    }


def _policy(*stages: Any, **changes: Any) -> Policy:
    stages = stages or (CanaryStage(steps=(CanaryStep(20, 60.0), CanaryStep(50, 60.0))), PromoteStage())
    return replace(make_policy(*stages, **changes), baseline=True)


def _kinds(d: Driver) -> list[str]:
    assert d.last is not None
    return [e.kind for e in d.last.effects]


# -- the policy ---------------------------------------------------------------------------------------------------


def test_baseline_is_a_policy_key_and_a_canary_stage_option() -> None:
    policy = parse_policy(_doc(baseline=True))
    assert policy.baseline and baseline.uses(policy) and policy.baseline_workload == "web-baseline"
    staged = parse_policy(_doc(stage={"steps": [{"weight": 10}], "baseline": True}))
    assert not staged.baseline and isinstance(staged.stages[0], CanaryStage) and staged.stages[0].baseline
    off = parse_policy(_doc(stage={"steps": [{"weight": 10}], "baseline": False}, baseline=True))
    assert not baseline.uses(off)  # the stage's own false wins over the policy's
    for p in (policy, staged, off):
        assert parse_policy(to_doc(p)) == p  # the normalised document keeps it
    assert not baseline.uses(parse_policy(_doc()))


def test_baseline_refused_at_validate_where_the_router_splits_two_ways() -> None:
    found = dict(problems(_doc("nginx", baseline=True)))
    assert "not supported by router nginx" in found["spec.baseline"]
    assert "three-way split" in found["spec.baseline"]
    staged = dict(problems(_doc("nginx", stage={"steps": [{"weight": 10}], "baseline": True})))
    assert "not supported by router nginx" in staged["spec.stages[0].canary.baseline"]
    for provider in ("traefik", "istio", "gateway-api", "haproxy"):
        assert problems(_doc(provider, baseline=True)) == [], provider


def test_baseline_refused_at_validate_with_a_bad_value_or_per_version() -> None:
    assert "spec.baseline" in dict(problems(_doc(baseline="yes")))
    doc = _doc("istio", baseline=True)
    doc["spec"]["workload"] |= {"model": "per-version"}
    assert "per-version" in dict(problems(doc))["spec.baseline"]
    bg = _doc(baseline=True)
    bg["spec"]["stages"] = [{"bluegreen": {"preview": "1m"}}, {"promote": {}}]
    assert "needs a canary stage" in dict(problems(bg))["spec.baseline"]


# -- decide -------------------------------------------------------------------------------------------------------


def test_baseline_deployed_with_the_canary_and_routed_at_its_weight() -> None:
    d = Driver.with_stable(_policy())
    d.push("v2")
    effects = d.last.effects if d.last else ()
    deploys = [e for e in effects if e.kind in ("deploy-canary", "deploy-baseline", "set-routes")]
    assert [e.kind for e in deploys] == ["deploy-canary", "deploy-baseline", "set-routes"]
    assert deploys[1].image == version("v1").image and deploys[1].version == "v1"  # the stable's image
    assert deploys[2].routes == RoutePlan(stable=60, canary=20, baseline=20)
    assert d.rel.baseline_deployed and d.rel.baseline_weight == 20
    assert any(h.action == "baseline" and "deployed fresh" in h.reason for h in d.state.history)
    assert "(baseline 20%, stable 60%)" in [h for h in d.state.history if h.action == "weight"][-1].reason
    d.tick(61, Observation(metrics=()))
    assert d.state.routes == RoutePlan(stable=0, canary=50, baseline=50)


def test_baseline_weight_is_the_canarys_as_far_as_the_stable_allows() -> None:
    assert [baseline.weight_for(w) for w in (0, 5, 20, 50, 60, 80, 100)] == [0, 5, 20, 50, 40, 20, 0]
    d = Driver.with_stable(_policy(CanaryStage(steps=(CanaryStep(80, 60.0),)), PromoteStage()))
    d.push("v2")
    assert d.state.routes == RoutePlan(stable=0, canary=80, baseline=20)


def test_baseline_follows_the_canarys_capped_weight_under_adaptive_exposure() -> None:
    policy = replace(seed_like(), baseline=True, router=RouterSpec(provider="traefik"))
    d = Driver.with_stable(policy)
    d.push("v2")
    assert d.state.routes == RoutePlan(
        stable=90, canary=5, baseline=5
    )  # the probe weight, and the baseline's
    run(d, Counters(), 115)
    assert d.state.routes.canary == 20 and d.state.routes.baseline == 20  # ramped to the plan, together
    weights = [h for h in d.state.history if h.action == "weight"]
    assert len(weights) >= 3 and all(f"(baseline {h.weight}%" in h.reason for h in weights), [
        h.reason for h in weights
    ]


def test_baseline_not_routed_in_a_stage_without_it() -> None:
    d = Driver.with_stable(
        _policy(
            CanaryStage(steps=(CanaryStep(20, 60.0),), baseline=False),
            CanaryStage(steps=(CanaryStep(40, 60.0),), baseline=True),
            PromoteStage(),
        )
    )
    d.push("v2")
    assert d.rel.baseline_deployed and d.state.routes == RoutePlan.canary_at(20)  # deployed, not routed yet
    assert not baseline.compared(d.policy, d.rel)
    d.tick(61)
    assert d.state.routes == RoutePlan(stable=20, canary=40, baseline=40) and baseline.compared(
        d.policy, d.rel
    )


def _after_traffic_left(effects: list[Any]) -> None:
    kinds = [e.kind for e in effects]
    assert kinds.count("remove-baseline") == 1, kinds
    removed = kinds.index("remove-baseline")
    routes = [i for i, e in enumerate(effects) if e.kind == "set-routes"]
    assert routes and routes[0] < removed and effects[routes[0]].routes == STABLE_ONLY, kinds
    assert "finalize-routes" in kinds[removed:], kinds


def test_baseline_removed_at_promotion_after_traffic_left_it() -> None:
    d = Driver.with_stable(_policy(CanaryStage(steps=(CanaryStep(20, 60.0),)), PromoteStage()))
    d.push("v2")
    d.tick(61, Observation(metrics=()))
    assert d.rel.phase == Phase.SUCCEEDED and not d.rel.baseline_deployed and d.rel.baseline_weight == 0
    _after_traffic_left(list(d.last.effects if d.last else ()))
    d.tick(5)
    assert "remove-baseline" not in _kinds(d)  # once


@pytest.mark.parametrize("how", ["rollback", "abort", "supersede", "fail"])
def test_baseline_removed_when_the_release_ends_any_other_way(how: str) -> None:
    analysis = Analysis(
        interval=10.0, metrics=(MetricCheck(name="error-rate", template="error-rate", max=0.05),)
    )
    d = Driver.with_stable(_policy(analysis=analysis))
    d.push("v2")
    first = d.rel.id
    if how == "supersede":
        d.push("v3")
    elif how == "fail":
        d.tick(11, Observation(metrics=(MetricSample(name="error-rate", value=0.5),)))
    else:
        d.command(how)
    effects = list(d.last.effects if d.last else ())
    _after_traffic_left(effects)
    if how == "supersede":  # the new release deploys its own baseline, fresh
        assert d.rel.id != first and d.rel.baseline_deployed
        kinds = [e.kind for e in effects]
        assert kinds.index("remove-baseline") < kinds.index("deploy-baseline")
    else:
        assert d.rel.phase != Phase.PROGRESSING and not d.rel.baseline_deployed


def test_baseline_effects_are_replayed_safely() -> None:
    """A redelivered push (same event id) changes nothing; a runner that crashed after deploy-baseline applies it
    again (the provider's create is idempotent), and the state still says one baseline."""
    d = Driver.with_stable(_policy())
    d.push("v2", event_id="push-1")
    state = d.state
    d.push("v2", event_id="push-1")
    assert _kinds(d) == [] and d.state.release == state.release


# -- the judges ---------------------------------------------------------------------------------------------------


def test_baseline_judges_compare_the_canary_with_the_baseline_series() -> None:
    p = Policy(
        name="web", namespace="prod", image=ImageRule("r/x"), router=RouterSpec("traefik", {}), stages=()
    )
    plain, fresh = tp.target(p, "web-1"), tp.target(p, "web-1", baseline=True)
    assert plain.canary == fresh.canary and plain.stable != fresh.stable and fresh.reference == "baseline"
    assert fresh.stable.matches({"service": "prod-web-baseline-80@kubernetescrd"})
    assert not fresh.stable.matches({"service": "prod-web-80@kubernetescrd"})  # never the warm stable
    assert not plain.stable.matches({"service": "prod-web-baseline-80@kubernetescrd"})
    series = [
        {"metric": {"service": s, "code": c}, "value": [0, str(v)]}
        for s, c, v in (
            ("prod-web-80@kubernetescrd", "200", 1000),
            ("prod-web-80@kubernetescrd", "500", 100),  # stable: 10 %
            ("prod-web-baseline-80@kubernetescrd", "200", 200),  # baseline: none
            ("prod-web-canary-80@kubernetescrd", "200", 180),
            ("prod-web-canary-80@kubernetescrd", "500", 20),
        )
    ]
    split = tp.split_counts("traefik", [fresh], series)["web-1"]
    assert (split[tp.STABLE].requests, split[tp.STABLE].errors) == (200.0, 0.0)
    assert tp.split_counts("traefik", [plain], series)["web-1"][tp.STABLE].requests == 1100.0
    assert "web\\\\-baseline" in tp.counts_query("traefik", [(fresh, 60)])


@pytest.mark.parametrize(
    ("router", "labels"),
    [
        ("istio", {"destination_workload_namespace": "prod", "destination_workload": "web-baseline"}),
        ("gateway-api", {"service": "prod-web-baseline-http-80@kubernetesgateway"}),
    ],
)
def test_baseline_series_on_istio_and_gateway_api(router: str, labels: dict[str, str]) -> None:
    options = {"metrics": "traefik"} if router == "gateway-api" else {}
    p = Policy(
        name="web", namespace="prod", image=ImageRule("r/x"), router=RouterSpec(router, options), stages=()
    )
    assert tp.target(p, "w", baseline=True).stable.matches(labels)
    assert not tp.target(p, "w").stable.matches(labels)


def _release(**changes: Any) -> Release:
    base = Release(
        id="web-2",
        seq=2,
        target=Version("v2"),
        origin=Version("v1"),
        started_at=AT,
        baseline_deployed=True,
        stage=0,
    )
    return replace(base, **changes)


def test_baseline_compared_only_while_it_is_routed() -> None:
    p = _policy()
    assert baseline.compared(p, _release())
    assert not baseline.compared(p, _release(baseline_deployed=False))
    assert not baseline.compared(p, _release(promoted=True)) and not baseline.compared(
        p, _release(watching=True)
    )
    assert not baseline.compared(p, _release(stage=1))  # the promote stage
    assert not baseline.compared(replace(p, baseline=False), _release())


def test_baseline_is_what_prometheus_measures_the_canary_against() -> None:
    """The provider's comparison (a sample's stable_value) and the guard's counters are the baseline's: a canary
    as bad as the baseline passes although the warm stable has no errors, one worse than the baseline fails
    although the stable is worse still."""
    comparison = MetricCheck(name="errors", template="error-rate", judge="comparison", tolerance=0.02)
    p = replace(
        _policy(analysis=Analysis(interval=10.0, window=60.0, metrics=(comparison,))),
        router=RouterSpec("traefik", {}),
        namespace="prod",
    )
    rates = {
        "prod-web-80@kubernetescrd": 0.0,
        "prod-web-baseline-80@kubernetescrd": 0.10,
        "prod-web-canary-80@kubernetescrd": 0.10,
    }

    class Fake(PrometheusAnalysis):
        def _query(self, url: str, query: str, now: float) -> Answer:
            if "bucket" in query:
                return Answer(query, [])
            return Answer(
                query,
                [
                    {
                        "metric": {"service": s, "code": c},
                        "value": [0, str(1000 * (r if c == "500" else 1 - r))],
                    }
                    for s, r in rates.items()
                    for c in ("200", "500")
                ],
            )

    prom = Fake("http://p", clock=lambda: 1.7e9)
    (sample,) = prom.measure(p, _release())
    assert (sample.value, sample.stable_value) == (pytest.approx(0.10), pytest.approx(0.10))
    assert judge(p.analysis, (sample,), AT).verdict == PASS  # type: ignore[arg-type]
    totals = prom.totals_many([(p, _release())])["web-2"]
    assert (totals.stable_requests, totals.stable_errors) == (1000.0, 100.0)  # the guard's too
    (vs_stable,) = prom.measure(p, _release(baseline_deployed=False))
    assert vs_stable.stable_value == pytest.approx(0.0)
    assert judge(p.analysis, (vs_stable,), AT).verdict == FAIL  # type: ignore[arg-type]

    rates.update({"prod-web-80@kubernetescrd": 0.30, "prod-web-baseline-80@kubernetescrd": 0.0})
    (worse,) = prom.measure(p, _release())
    verdict = judge(p.analysis, (worse,), AT)  # type: ignore[arg-type]
    assert verdict.verdict == FAIL and "vs baseline 0" in verdict.reason
    (vs_stable,) = prom.measure(p, _release(baseline_deployed=False))
    assert judge(p.analysis, (vs_stable,), AT).verdict == PASS  # type: ignore[arg-type]


def test_baseline_name_is_a_custom_query_variable() -> None:
    p = Policy(
        name="web", namespace="prod", image=ImageRule("r/x"), router=RouterSpec("traefik", {}), stages=()
    )
    names = tp.target(p, "w", baseline=True).names
    assert tp.render("{{baseline}}/{{stable}}", names) == "web-baseline/web"


# -- routers (pure parts) -----------------------------------------------------------------------------------------


def _traefik_setup(**options: Any) -> Any:
    target = RouteTarget(
        "prod", "web", "web", "web-canary", options={"ingressRoute": "web", **options}, baseline=BASELINE
    )
    return traefik._setup(target, "traefik.io")


def test_baseline_traefik_entry_copies_the_stables_and_goes_at_zero() -> None:
    s = _traefik_setup()
    stable = {"kind": "Service", "name": "web", "port": 8080, "namespace": "prod", "passHostHeader": False}
    entries: list[Any] = [stable]
    plan = RoutePlan(stable=60, canary=20, baseline=20)
    ops, _ = traefik.weight_ops(entries, "/spec/routes/0/services", s, plan, None)
    after = apply_patch({"spec": {"routes": [{"services": entries}]}}, ops)["spec"]["routes"][0]["services"]
    assert after == [
        {**stable, "weight": 60},
        {**stable, "name": "web-canary", "weight": 20},
        {**stable, "name": BASELINE, "weight": 20},
    ]
    assert traefik._weights(after, s) == (60, 20) and traefik._baseline_weight(after, s) == 20
    again, _ = traefik.weight_ops(after, "/spec/routes/0/services", s, plan, None)
    assert again == []  # idempotent
    ops, _ = traefik.weight_ops(
        after, "/spec/routes/0/services", s, RoutePlan(stable=0, canary=50, baseline=50), None
    )
    moved = apply_patch(
        {"s": after}, [{**o, "path": "/s" + o["path"][len("/spec/routes/0/services") :]} for o in ops]
    )["s"]
    assert [e["weight"] for e in moved] == [0, 50, 50]
    ops, removed = traefik.weight_ops(moved, "/spec/routes/0/services", s, STABLE_ONLY, None)
    back = apply_patch(
        {"s": moved}, [{**o, "path": "/s" + o["path"][len("/spec/routes/0/services") :]} for o in ops]
    )["s"]
    assert back == [{**stable, "weight": 100}] and removed == {**stable, "name": "web-canary"}


def test_baseline_traefik_ignores_a_baseline_entry_without_the_feature() -> None:
    s = replace(_traefik_setup(), baseline="")
    entries = [
        {"kind": "Service", "name": "web", "port": 80},
        {"kind": "Service", "name": BASELINE, "port": 80},
    ]
    ops, _ = traefik.weight_ops(entries, "/b", s, STABLE_ONLY, None)
    assert all("/1" not in o["path"] for o in ops)  # a Service of the user's named so is not graylane's


def test_baseline_live_plan_reads_three_weights() -> None:
    plan = live_plan(RoutePlan(), 60, 20, None, lambda p: None, "x", baseline=20)
    assert plan == RoutePlan(stable=60, canary=20, baseline=20)
    assert live_plan(RoutePlan(), 3, 1, None, lambda p: None, "x", baseline=1) == RoutePlan(
        stable=60, canary=20, baseline=20
    )
    with pytest.raises(ValueError, match="sum to 100"):
        RoutePlan(stable=50, canary=30, baseline=30)


def test_baseline_istio_destination_is_its_own_host() -> None:
    target = RouteTarget("prod", "web", "web", "web-canary", options={}, baseline=BASELINE)
    s = istio._setup(target)
    stable = {
        "destination": {"host": "web", "subset": "stable", "port": {"number": 80}},
        "headers": {"x": {}},
    }
    plan = RoutePlan(stable=60, canary=20, baseline=20)
    ops, _ = istio.weight_ops([stable], "/r", s, plan, None)
    after = apply_patch({"r": [stable]}, ops)["r"]
    assert after[2] == {
        "destination": {"host": BASELINE, "port": {"number": 80}},
        "headers": {"x": {}},
        "weight": 20,
    }
    assert after[1]["destination"]["subset"] == "canary" and after[0]["weight"] == 60
    ops, _ = istio.weight_ops(after, "/r", s, STABLE_ONLY, None)
    assert apply_patch({"r": after}, ops)["r"] == [{**stable, "weight": 100}]


def test_baseline_gateway_api_backend_ref() -> None:
    target = RouteTarget("prod", "web", "web", "web-canary", options={"port": 8080}, baseline=BASELINE)
    s = gateway_api._setup(target)
    stable = {"group": "", "kind": "Service", "name": "web", "port": 8080, "weight": 100}
    ops, _ = gateway_api.weight_ops([stable], "/b", s, RoutePlan(stable=80, canary=10, baseline=10), None)
    after = apply_patch({"b": [stable]}, ops)["b"]
    assert [(e["name"], e["weight"]) for e in after] == [("web", 80), ("web-canary", 10), (BASELINE, 10)]
    ops, _ = gateway_api.weight_ops(after, "/b", s, STABLE_ONLY, None, drop=True)
    assert [e["name"] for e in apply_patch({"b": after}, ops)["b"]] == ["web"]


def test_baseline_owned_paths_are_declared() -> None:
    for module in (traefik, istio, gateway_api):
        assert any("{baseline}" in o.path for o in module.OWNS), module.NAME


def test_baseline_shows_in_status() -> None:
    from functions.present import status, summary

    d = Driver.with_stable(_policy())
    d.push("v2")
    shown = status(d.state, d.policy, d.now)
    assert shown["routes"] == {"stable": 60, "canary": 20, "abTest": False, "baseline": 20}
    assert shown["release"]["baseline"] == {
        "workload": "web-baseline",
        "weight": 20,
        "image": version("v1").image,
        "compared": True,
    }
    assert "fresh baseline 20%" in summary(d.state, d.policy, d.now)
    d.command("abort")
    assert "baseline" not in status(d.state, d.policy, d.now)["routes"]


def test_baseline_guard_counts_a_switch_of_reference_as_a_new_start() -> None:
    from functions.core.counters import Totals
    from functions.core.evidence import update
    from functions.core.guard import failed
    from tests.unit.machine_helpers import T0

    first = Totals(canary_requests=100, canary_errors=0, stable_requests=10_000, stable_errors=10)
    e = update(None, first, T0)
    switched = Totals(
        canary_requests=200,
        canary_errors=50,
        stable_requests=100,
        stable_errors=0,
        reference="baseline",
        read_at="b",
    )
    e = update(e, switched, T0)
    assert e.canary_requests == 0 and e.base == switched  # the stable's 10,000 are not the baseline's 100
    worse = replace(switched, canary_requests=1200, canary_errors=550, stable_requests=1100, read_at="c")
    e = update(e, worse, T0)
    assert e.canary_requests == 1000 and e.stable_requests == 1000 and e.canary_errors == 500
    reason = failed(e, Analysis(alpha=0.01))
    assert reason.startswith("canary errors 500/1000 vs baseline 0/1000"), reason


def test_baseline_nginx_refuses_a_three_way_plan_before_writing() -> None:
    from functions.errors import ConfigError
    from functions.providers.routers.nginx import NginxRouter

    router = NginxRouter.__new__(NginxRouter)  # no cluster: the refusal comes before any read or write
    with pytest.raises(ConfigError, match="splits two ways"):
        router.set_routes(
            RouteTarget("prod", "web", "web", "web-canary", options={"stableIngress": "web"}),
            RoutePlan(stable=60, canary=20, baseline=20),
        )


def test_baseline_through_the_runner_on_recording_providers() -> None:
    """The runner applies deploy-baseline and remove-baseline through the workloads, in order with the routes."""
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores.memory import MemoryStore
    from functions.runner import Runner
    from tests.support import Clock, StaticPolicies, canary_policy, command, handle, push

    policy = replace(canary_policy(), baseline=True)
    store, clock, providers = MemoryStore(), Clock(), RecordingProviders()
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)
    runner.handle(push(policy.app, "v1"))
    runner.handle(push(policy.app, "v2"))
    assert providers.router_.routes["/prod/web"] == RoutePlan(stable=60, canary=20, baseline=20)
    assert providers.workloads_.images["/prod/web-baseline"] == "registry.example.com/web:v1"
    handle(runner, command(policy.app, "abort"))
    verbs = [
        (c[0], c[1]) for c in providers.log.calls if c[0] in ("set_routes", "remove_baseline", "finalize")
    ]
    assert verbs[-3:] == [
        ("set_routes", "/prod/web"),
        ("remove_baseline", "/prod/web-baseline"),
        ("finalize", "/prod/web"),
    ]
    assert "/prod/web-baseline" not in providers.workloads_.images
    assert providers.router_.routes["/prod/web"] == STABLE_ONLY


def test_baseline_removal_that_fails_is_applied_again_and_finalize_waits_for_it() -> None:
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores.memory import MemoryStore
    from functions.runner import Runner
    from tests.support import Clock, StaticPolicies, canary_policy, command, handle, push, tick

    policy = replace(canary_policy(), baseline=True)
    store, clock, providers = MemoryStore(), Clock(), RecordingProviders()
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)
    runner.handle(push(policy.app, "v1"))
    runner.handle(push(policy.app, "v2"))
    providers.log.fail("remove_baseline", 2)  # the apiserver is down twice
    handle(runner, command(policy.app, "abort"))
    doc, _ = store.load(policy.app)
    pending = [e.kind for e in AppState.from_json(doc).pending]  # type: ignore[arg-type]
    assert pending[:2] == ["remove-baseline", "finalize-routes"], pending  # order kept: finalize after it
    assert providers.router_.routes["/prod/web"] == STABLE_ONLY  # traffic left it first
    for _ in range(3):
        clock.advance(10)
        runner.handle(tick(policy.app))
    doc, _ = store.load(policy.app)
    assert AppState.from_json(doc).pending == ()  # type: ignore[arg-type]
    assert "/prod/web-baseline" not in providers.workloads_.images
    assert [c[0] for c in providers.log.calls].count("remove_baseline") == 1  # the one that got through
