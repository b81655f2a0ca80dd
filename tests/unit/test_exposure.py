"""Adaptive exposure: a new canary starts at the probe weight, rises to the planned step weight only as fast
as the evidence allows, falls back when it worsens, and never changes the user's schedule."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.core.counters import Evidence
from functions.core.evidence import rate_ucb
from functions.core.exposure import cap
from functions.core.policy import Analysis, ApprovalStage, CanaryStage, GateParam, PromoteStage
from functions.core.state import Phase
from tests.unit.evidence_helpers import Counters, run, seed_like
from tests.unit.machine_helpers import Driver


def started(policy) -> Driver:  # type: ignore[no-untyped-def]
    d = Driver.with_stable(policy)
    d.push("v2")
    return d


def weights(d: Driver) -> list[int]:
    return [h.weight for h in d.state.history if h.action == "weight" and h.weight is not None]


def test_exposure_starts_at_the_probe_weight_and_says_why() -> None:
    d = started(seed_like())
    assert d.state.routes.canary == 5 and d.rel.planned_weight == 20
    entry = [h for h in d.state.history if h.action == "weight"][-1]
    assert "5% of the planned 20%" in entry.reason and "probe" in entry.reason


def test_exposure_rises_with_evidence_to_the_planned_weight() -> None:
    d = started(seed_like())
    run(d, Counters(), 115)
    seen = weights(d)
    assert seen[0] == 5 and seen[-1] == 20 and seen == sorted(seen)  # monotone ramp, capped by the plan
    assert all(w <= 20 for w in seen)
    raised = [h for h in d.state.history if h.reason.startswith("exposure:")]
    assert raised and "canary excess" in raised[0].reason and "budget 5 failed requests" in raised[0].reason


def test_exposure_keeps_the_schedule_of_a_healthy_canary() -> None:
    d = started(seed_like())
    run(d, Counters(), 480)
    assert d.rel.phase == Phase.SUCCEEDED  # 4 steps x 2 minutes: promoted on time


def test_exposure_holds_a_bad_canary_at_the_probe_weight() -> None:
    d = started(seed_like(guard=False))  # no guard: only exposure protects step 1
    run(d, Counters(canary_errors_rate=0.10), 110)
    assert d.rel.step == 0 and d.state.routes.canary == 5 and max(weights(d)) == 5


def test_exposure_falls_back_when_the_evidence_worsens() -> None:
    d = started(seed_like(guard=False))
    counters = Counters()
    run(d, counters, 110)
    assert d.state.routes.canary == 20
    counters.canary_errors_rate = 0.3  # the canary starts failing
    run(d, counters, 9)  # the step timer fires at 120 s: next step, still capped
    run(d, counters, 60)
    assert d.state.routes.canary < 20 and d.rel.planned_weight == 40


def test_exposure_budget_zero_is_off() -> None:
    d = started(seed_like(exposure_budget=0))
    assert d.state.routes.canary == 20
    run(d, Counters(), 30)
    assert weights(d) == [20]


def test_exposure_does_not_cap_a_human_weight_command() -> None:
    d = started(seed_like())
    d.command("weight", weight=50)
    run(d, Counters(), 30)
    assert d.state.routes.canary == 50 and d.rel.planned_weight == 0


def test_exposure_does_not_cap_the_weight_a_gates_approver_chose() -> None:
    # seed 000: the product owner approves gate canary-weight with weight=50 for a manual canary stage
    gate = ApprovalStage(name="canary-weight", params=(GateParam(name="weight", default=50, min=1, max=100),))
    policy = replace(
        seed_like(), stages=(gate, CanaryStage(mode="manual"), ApprovalStage(name="promote"), PromoteStage())
    )
    d = Driver.with_stable(policy)
    d.push("v2")
    d.command("approve", gate="canary-weight", weight=50)
    assert d.state.routes.canary == 50 and d.rel.planned_weight == 0
    run(d, Counters(rps=400.0), 60)  # more traffic: a capped weight would fall, a human's stays
    assert weights(d) == [50] and d.rel.active


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20_000), k=st.integers(0, 200))
def test_exposure_ucb_is_above_the_estimate_and_shrinks_with_data(n: int, k: int) -> None:
    k = min(k, n)
    u = rate_ucb(k, n, 0.01)
    assert k / n <= u <= 1.0
    assert rate_ucb(2 * k, 2 * n, 0.01) <= u + 1e-9


def test_exposure_ucb_covers_the_true_rate_at_every_look() -> None:
    import random

    rng, misses, runs = random.Random(3), 0, 300
    for _ in range(runs):
        k = n = 0
        for _ in range(60):
            batch = rng.randint(1, 50)
            n += batch
            k += sum(rng.random() < 0.02 for _ in range(batch))
            if rate_ucb(k, n, 0.05) < 0.02:
                misses += 1
                break
    assert misses / runs <= 0.05


def test_exposure_cap_is_budget_over_bound_rate_and_lag() -> None:
    analysis = Analysis(exposure_budget=5.0)
    e = Evidence(
        canary_requests=10_000,
        canary_errors=50,
        stable_requests=10_000,
        stable_errors=50,
        rate=100.0,
        interval=15.0,
    )
    percent, reason = cap(e, analysis, "haproxy")  # no histogram: errors only
    bound = rate_ucb(50, 10_000, 0.01) - 0.005
    assert percent == int(100 * 5.0 / (bound * 100 * 15))
    assert "evidence lag 15s" in reason
    assert cap(replace(e, rate=0.0), analysis, "haproxy")[0] == 0  # no traffic measured: no cap yet


def test_exposure_cap_and_reason_show_in_status() -> None:
    from functions import present
    from tests.unit.machine_helpers import T0

    d = started(seed_like())
    status = present.status(d.state, d.policy, T0)["release"]
    assert status["weight"] == 5 and status["plannedWeight"] == 20
    assert status["exposure"].startswith("5% of the planned 20%: probe weight")
    assert "exposure: 5% of the planned 20%" in present.summary(d.state, d.policy, T0)


def test_exposure_weight_changes_are_catalog_events() -> None:
    from functions.catalog import to_cloudevent, validate

    d = started(seed_like())
    counters, emitted = Counters(), []  # type: ignore[var-annotated]
    for _ in range(24):
        counters.serve(5, d.state.routes.canary)
        d.tick(5, counters.observe())
        assert d.last is not None
        emitted += [e for e in d.last.events if e.type.endswith("weight.changed")]
    assert emitted and all("plannedWeight" in e.data for e in emitted)
    for i, e in enumerate(emitted):
        validate(to_cloudevent(e, d.policy.app, d.rel.id, "/graylane/release-tick", id=f"x/{i}"))
