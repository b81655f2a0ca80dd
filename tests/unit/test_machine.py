"""decide(): event sequences walked through the release state machine, asserting states, effects and events."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.events import Command, ImagePushed, Observation, Tick
from functions.core.gates import skipped_by_promote
from functions.core.machine import TRANSITIONS, decide, wants_analysis
from functions.core.policy import (
    ABTestStage,
    ApprovalStage,
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    CircuitBreaker,
    GateParam,
    LinearSchedule,
    Match,
    NotifySpec,
    PreviewStage,
    PromoteStage,
    ProtectionRule,
    ProtectStage,
    RateLimit,
    RollbackMode,
    Wave,
)
from functions.core.state import MAX_HISTORY, MAX_SEEN, AppState, Phase, iso
from tests.unit.machine_helpers import (
    APP,
    FAIL,
    NO_DATA,
    PASS,
    T0,
    Driver,
    actions,
    analysis,
    kinds,
    make_policy,
    observed,
    route,
    seed_flow,
    types,
    version,
)

# -- starting ----------------------------------------------------------------------------------------


def test_first_push_becomes_stable_without_a_release() -> None:
    d = Driver(seed_flow())

    out = d.push("v1")

    assert kinds(out.effects) == [
        "promote-stable",
        "set-routes",
    ]  # the route object is written from the start
    assert out.effects[0].image == version("v1").image and out.effects[0].version == "v1"
    assert d.state.stable == version("v1") and d.state.release is None and d.state.seq == 0
    assert actions(d.state) == ["initialised"]


def test_push_of_the_stable_image_is_ignored() -> None:
    d = Driver.with_stable(seed_flow())
    before = d.state

    out = d.push("v1")

    assert out.state == before and out.effects == ()
    assert types(out.events) == ["event.ignored"]
    assert "already stable" in out.events[0].data["reason"]


def test_push_starts_a_release_at_the_preview_stage() -> None:
    d = Driver.with_stable(seed_flow())

    out = d.push("v2")

    rel = d.rel
    assert (rel.id, rel.seq, rel.phase, rel.stage, rel.kind) == ("web-1", 1, Phase.PROGRESSING, 0, "release")
    assert rel.target == version("v2") and rel.origin == version("v1")
    assert kinds(out.effects) == ["run-migration", "deploy-preview"]  # the schema first, then the code
    migration, preview = out.effects
    assert migration.job == "migrate-web-1" and migration.command == ("flask", "db", "upgrade")
    assert migration.image == version("v2").image
    assert (preview.environment, preview.image) == ("preview", version("v2").image)
    assert types(out.events) == ["release.started", "release.stage.entered"]
    assert [e.id for e in out.effects] == ["web-1/1/0-run-migration", "web-1/1/1-deploy-preview"]


def test_preview_completes_on_the_tick_after_its_effects_were_applied() -> None:
    d = Driver.with_stable(seed_flow(), auto_apply=False)
    d.push("v2")

    d.tick(5)
    assert d.rel.stage == 0 and d.state.pending  # not applied yet: the preview is not there

    d.apply()
    d.tick(5)
    assert (d.rel.stage, d.rel.phase, d.rel.gate) == (1, Phase.WAITING, "canary")
    assert "preview-ready" in actions(d.state)


def test_the_same_image_pushed_again_during_its_release_is_ignored() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    before = d.state

    out = d.push("v2")

    assert out.state == before and types(out.events) == ["event.ignored"]


def _at_canary_step(d: Driver) -> None:
    d.push("v2")
    d.tick()
    d.command("approve", weight=10)


def test_a_newer_push_supersedes_the_release_in_progress() -> None:
    d = Driver.with_stable(seed_flow())
    _at_canary_step(d)
    d.policy = seed_flow(analysis=analysis(failure_limit=2))
    d.tick(61, FAIL)  # one failed verdict, below the limit
    assert d.state.routes.canary == 20

    out = d.push("v3")

    rel = d.rel
    assert (rel.id, rel.seq, rel.stage, rel.weight, rel.failures, rel.verdicts, rel.gates) == (
        "web-2",
        2,
        0,
        0,
        0,
        (),
        (),
    )
    assert rel.origin == version("v1") and rel.target == version("v3")
    assert d.state.routes == STABLE_ONLY
    assert kinds(out.effects)[:1] == ["set-routes"] and out.effects[0].routes == STABLE_ONLY
    assert out.effects[0].id.startswith("web-1/")  # the old release's effect
    superseded = [h for h in d.state.history if h.action == "superseded"]
    assert [(h.release, h.phase_to) for h in superseded] == [("web-1", "superseded")]
    assert types(out.events)[:2] == ["release.superseded", "release.started"]


# -- approval gates --------------------------------------------------------------------------------------


def test_approve_with_a_parameter_outside_its_range_is_refused_and_audited() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.tick()

    out = d.command("approve", weight=80)

    assert d.rel.phase == Phase.WAITING and d.rel.gates == ()
    assert types(out.events) == ["command.rejected"]
    assert "weight=80 is not allowed; expected 1..50" in out.events[0].data["reason"]
    last = d.state.history[-1]
    assert (last.action, last.by.user if last.by else "") == ("ignored", "alice")


def test_approve_without_a_required_parameter_is_refused() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.tick()

    out = d.command("approve")

    assert "needs parameter weight (1..50)" in out.events[0].data["reason"] and d.rel.phase == Phase.WAITING


def test_gate_parameter_default_fills_a_missing_value() -> None:
    gate = ApprovalStage(name="canary", params=(GateParam(name="weight", default=15, min=5, max=50),))
    d = Driver.with_stable(make_policy(gate, CanaryStage(mode="manual", weight=3, hold=60), PromoteStage()))
    d.push("v2")

    d.command("approve")

    assert d.rel.gates[-1].params == {"weight": 15} and d.state.routes == route(15)


def test_approve_of_another_gate_is_refused() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.tick()

    out = d.command("approve", gate="promote", weight=10)

    assert "gate promote is not open; waiting at canary" in out.events[0].data["reason"]


def test_approve_opens_the_gate_and_the_canary_starts_at_its_first_step() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.tick()

    out = d.command("approve", weight=10)

    rel = d.rel
    assert (rel.phase, rel.stage, rel.step, rel.weight) == (Phase.PROGRESSING, 2, 0, 20)
    assert rel.gates[0].gate == "canary" and rel.gates[0].decision == "approved"
    assert rel.gates[0].params == {"weight": 10} and rel.gates[0].by.user == "alice"
    assert kinds(out.effects) == ["deploy-canary", "scale-canary", "set-routes"]
    assert d.state.routes == RoutePlan(stable=80, canary=20)
    assert (
        rel.timer is not None
        and rel.timer.name == "step"
        and rel.timer.due == iso(d.now + timedelta(seconds=60))
    )


def test_reject_aborts_and_sends_traffic_to_stable_before_scaling_down() -> None:
    d = Driver.with_stable(seed_flow())
    _at_canary_step(d)
    d.tick(61, PASS)
    d.tick(61, PASS)
    assert d.rel.gate == "promote" and d.state.routes.canary == 40

    out = d.command("reject", reason="not today")

    assert d.rel.phase == Phase.ABORTED and d.rel.weight == 0 and d.state.routes == STABLE_ONLY
    assert kinds(out.effects) == ["set-routes", "scale-down-canary", "finalize-routes"]
    assert d.rel.gates[-1].decision == "rejected" and "not today" in d.rel.reason
    assert types(out.events) == ["release.gate.decided", "release.aborted"]
    assert d.state.stable == version("v1")


@pytest.mark.parametrize(
    ("on_timeout", "phase", "decision"),
    [("reject", Phase.ABORTED, "timed-out"), ("approve", Phase.SUCCEEDED, "timed-out")],
)
def test_gate_timeout(on_timeout: str, phase: Phase, decision: str) -> None:
    gate = ApprovalStage(name="go", timeout=300.0, on_timeout=on_timeout)  # type: ignore[arg-type]
    d = Driver.with_stable(make_policy(gate, PromoteStage()))
    d.push("v2")

    d.tick(299)
    assert d.rel.phase == Phase.WAITING
    d.tick(1)

    assert d.rel.phase == phase and d.rel.gates[-1].decision == decision
    timeout = next(h for h in d.state.history if h.action == "gate-timeout")
    assert timeout.scheduled_at == iso(T0 + timedelta(seconds=300)) and timeout.event == "timer"
    assert d.state.stable == (version("v2") if on_timeout == "approve" else version("v1"))


# -- A/B test ------------------------------------------------------------------------------------------------

HEADER = Match(kind="header", name="X-Canary", value="always")


def test_abtest_routes_matching_requests_only_for_its_duration() -> None:
    d = Driver.with_stable(
        make_policy(ABTestStage(match=(HEADER,), duration=600, analysis=False), PromoteStage())
    )

    out = d.push("v2")

    assert kinds(out.effects) == ["deploy-canary", "scale-canary", "set-routes"]
    assert d.state.routes == RoutePlan(stable=100, canary=0, match=(HEADER,))
    assert d.rel.timer is not None and d.rel.timer.name == "stage"
    d.tick(599)
    assert d.rel.stage == 0
    d.tick(1)
    assert d.rel.phase == Phase.SUCCEEDED and d.state.routes == STABLE_ONLY


def test_user_hash_rules_get_the_release_id_as_salt() -> None:
    rule = Match(kind="user-hash", name="X-User", percent=10)
    d = Driver.with_stable(make_policy(ABTestStage(match=(rule,), duration=60), PromoteStage()))

    d.push("v2")

    assert d.state.routes == RoutePlan(100, 0, match=(rule,), salt="web-1")


def test_stages_asking_for_analysis_run_on_timers_when_the_policy_has_none() -> None:
    stages = (
        ABTestStage(match=(HEADER,), duration=60),
        BlueGreenStage(preview=60),
        CanaryStage(mode="linear", linear=LinearSchedule(start=50, end=60, increment=10, every=60)),
        CanaryStage(mode="manual", weight=5, hold=60),
        PromoteStage(),
    )
    d = Driver.with_stable(make_policy(*stages))
    d.push("v2")

    seen = []
    for _ in range(6):
        d.tick(60)
        seen.append((d.rel.stage, d.rel.weight))

    assert seen == [(1, 0), (2, 50), (2, 60), (3, 5), (4, 0), (4, 0)] and d.rel.phase == Phase.SUCCEEDED


def test_open_ended_abtest_waits_for_resume() -> None:
    d = Driver.with_stable(make_policy(ABTestStage(match=(HEADER,), analysis=False), PromoteStage()))
    d.push("v2")

    d.tick(10_000)
    assert d.rel.stage == 0 and d.rel.timer is None

    d.command("resume")
    assert d.rel.phase == Phase.SUCCEEDED and d.state.stable == version("v2")


def test_abtest_under_analysis_waits_for_a_pass_after_its_duration() -> None:
    d = Driver.with_stable(
        make_policy(ABTestStage(match=(HEADER,), duration=60), PromoteStage(), analysis=analysis())
    )
    d.push("v2")

    d.tick(61, NO_DATA)
    assert d.rel.stage == 0  # inconclusive never promotes
    d.tick(10, PASS)
    assert d.rel.phase == Phase.SUCCEEDED


# -- canary steps ---------------------------------------------------------------------------------------------


def test_steps_move_on_their_pauses_and_a_step_without_pause_waits_for_resume() -> None:
    steps = (CanaryStep(10, 30.0), CanaryStep(50, None), CanaryStep(90, 30.0))
    d = Driver.with_stable(make_policy(CanaryStage(steps=steps), PromoteStage()))
    d.push("v2")
    assert (d.rel.step, d.state.routes) == (0, RoutePlan(90, 10))

    out = d.tick(30)
    assert (d.rel.step, d.rel.weight) == (1, 50) and types(out.events) == ["release.step.advanced"]
    assert d.rel.timer is None
    d.tick(3600)
    assert d.rel.step == 1

    d.command("resume")
    assert (d.rel.step, d.rel.weight) == (2, 90)
    d.tick(30)
    assert d.rel.phase == Phase.SUCCEEDED and d.state.routes == STABLE_ONLY


def test_timer_history_records_when_it_was_due() -> None:
    d = Driver.with_stable(
        make_policy(CanaryStage(steps=(CanaryStep(10, 30.0), CanaryStep(20, 30.0))), PromoteStage())
    )
    d.push("v2")

    d.tick(45)

    timer = next(h for h in d.state.history if h.action == "timer")
    assert timer.scheduled_at == iso(T0 + timedelta(seconds=30)) and timer.at == iso(
        T0 + timedelta(seconds=45)
    )


def test_analysis_starts_at_the_configured_step() -> None:
    steps = (CanaryStep(10, 30.0), CanaryStep(20, 30.0), CanaryStep(30, 30.0))
    d = Driver.with_stable(
        make_policy(CanaryStage(steps=steps), PromoteStage(), analysis=analysis(start_step=2))
    )
    d.push("v2")
    assert not d.rel.analysing
    assert not wants_analysis(d.policy, d.state, d.now)

    d.tick(30, PASS)  # not analysed yet: the sample is ignored
    assert d.rel.verdicts == () and d.rel.step == 1 and d.rel.analysing
    assert wants_analysis(d.policy, d.state, d.now)


def test_an_analysed_step_advances_only_after_its_latest_verdict_passed() -> None:
    d = Driver.with_stable(
        make_policy(
            CanaryStage(steps=(CanaryStep(10, 30.0), CanaryStep(50, 30.0))),
            PromoteStage(),
            analysis=analysis(),
        )
    )
    d.push("v2")

    d.tick(10, PASS)
    d.tick(25, NO_DATA)  # the timer fired, but the latest verdict is inconclusive
    assert d.rel.step == 0 and d.rel.passes_in_step == 1
    d.tick(10)  # no measurement this time: still inconclusive as latest
    assert d.rel.step == 0
    out = d.tick(10, PASS)
    assert d.rel.step == 1 and d.rel.passes_in_step == 0 and "release.step.advanced" in types(out.events)


def test_wants_analysis_respects_the_interval() -> None:
    d = Driver.with_stable(
        make_policy(CanaryStage(steps=(CanaryStep(10, 300.0),)), PromoteStage(), analysis=analysis())
    )
    d.push("v2")
    d.tick(1, PASS)

    assert not wants_analysis(d.policy, d.state, d.now + timedelta(seconds=5))
    assert wants_analysis(d.policy, d.state, d.now + timedelta(seconds=10))


def _failing_canary(mode: RollbackMode, failure_limit: int = 1) -> Driver:
    d = Driver.with_stable(
        make_policy(
            CanaryStage(steps=(CanaryStep(30, 60.0),)),
            PromoteStage(),
            analysis=analysis(failure_limit=failure_limit),
            rollback=mode,
        )
    )
    d.push("v2")
    return d


def test_failed_analysis_rolls_back() -> None:
    d = _failing_canary(RollbackMode.ROLLBACK)

    out = d.tick(10, FAIL)

    assert d.rel.phase == Phase.ROLLED_BACK and d.rel.weight == 0 and not d.rel.canary_deployed
    assert (
        kinds(out.effects) == ["set-routes", "scale-down-canary", "finalize-routes"]
        and d.state.routes == STABLE_ONLY
    )
    assert types(out.events) == ["analysis.verdict", "release.rolledback"]
    assert "error-rate" in d.rel.reason and d.rel.ended_at == d.state.history[-1].at


def test_failures_below_the_limit_do_not_roll_back() -> None:
    d = _failing_canary(RollbackMode.ROLLBACK, failure_limit=3)

    d.tick(10, FAIL)
    d.tick(10, FAIL)
    assert d.rel.phase == Phase.PROGRESSING and d.rel.failures == 2
    d.tick(10, FAIL)
    assert d.rel.phase == Phase.ROLLED_BACK


def test_freeze_keeps_weights_and_waits_for_a_human() -> None:
    d = _failing_canary(RollbackMode.FREEZE)

    out = d.tick(10, FAIL)

    assert d.rel.phase == Phase.FROZEN and d.rel.weight == 30 and d.state.routes.canary == 30
    assert out.effects == () and d.rel.timer is None and "release.frozen" in types(out.events)
    d.tick(600, PASS)
    assert d.rel.phase == Phase.FROZEN and len(d.rel.verdicts) == 1  # frozen: no analysis, no timers
    assert types(d.command("resume").events) == ["command.rejected"]
    d.command("abort")
    assert d.rel.phase == Phase.ABORTED and d.state.routes == STABLE_ONLY


def test_roll_forward_moves_traffic_to_stable_and_keeps_the_canary() -> None:
    d = _failing_canary(RollbackMode.ROLL_FORWARD)

    out = d.tick(10, FAIL)

    assert d.rel.phase == Phase.FROZEN and d.rel.weight == 0 and d.rel.canary_deployed
    assert kinds(out.effects) == ["set-routes"] and d.state.routes == STABLE_ONLY
    d.push("v3")  # the fixed image supersedes the frozen release
    assert d.rel.id == "web-2" and d.rel.phase == Phase.PROGRESSING


def test_inconclusive_too_long_pauses_and_resume_restores_the_timer() -> None:
    d = Driver.with_stable(
        make_policy(
            CanaryStage(steps=(CanaryStep(30, 100.0),)),
            PromoteStage(),
            analysis=analysis(inconclusive_limit=3),
        )
    )
    d.push("v2")

    d.tick(10, NO_DATA)
    d.tick(10, observed("unavailable"))
    out = d.tick(10, NO_DATA)

    assert (
        d.rel.phase == Phase.PAUSED and d.rel.paused_from == "progressing" and d.rel.paused_timer_left == 70
    )
    assert "release.paused" in types(out.events) and "3 inconclusive" in d.rel.reason
    d.tick(500)
    assert d.rel.phase == Phase.PAUSED
    out = d.command("resume")
    assert d.rel.phase == Phase.PROGRESSING and d.rel.inconclusive_run == 0
    assert d.rel.timer is not None and d.rel.timer.due == iso(d.now + timedelta(seconds=70))
    assert types(out.events) == ["release.resumed"]


def test_pause_and_resume_by_command_keep_the_time_left() -> None:
    d = Driver.with_stable(
        make_policy(CanaryStage(steps=(CanaryStep(30, 100.0), CanaryStep(60, 100.0))), PromoteStage())
    )
    d.push("v2")
    d.tick(40)

    d.command("pause", reason="looking at logs")
    d.tick(1000)
    assert d.rel.phase == Phase.PAUSED and d.rel.step == 0 and "looking at logs" in d.rel.reason
    d.command("resume")
    d.tick(59)
    assert d.rel.step == 0
    d.tick(1)
    assert d.rel.step == 1


# -- manual, linear, blue-green ---------------------------------------------------------------------------


def test_manual_canary_takes_its_weight_from_the_gate_and_holds() -> None:
    gate = ApprovalStage(name="weight", params=(GateParam(name="pct", min=1, max=50),))
    d = Driver.with_stable(
        make_policy(gate, CanaryStage(mode="manual", weight_param="pct", weight=5, hold=120), PromoteStage())
    )
    d.push("v2")

    d.command("approve", params={"pct": 25})

    assert d.state.routes == RoutePlan(75, 25) and d.rel.params == {"pct": 25}
    d.tick(119)
    assert d.rel.stage == 1
    d.tick(1)
    assert d.rel.phase == Phase.SUCCEEDED


def test_manual_canary_falls_back_to_its_stage_weight() -> None:
    d = Driver.with_stable(make_policy(CanaryStage(mode="manual", weight=7, hold=60), PromoteStage()))

    d.push("v2")

    assert d.rel.weight == 7 and d.state.routes.canary == 7


def test_weight_command_sets_the_canary_weight() -> None:
    d = Driver.with_stable(make_policy(CanaryStage(mode="manual", weight=7, hold=60), PromoteStage()))
    d.push("v2")

    out = d.command("weight", weight=33)

    assert d.state.routes.canary == 33 and d.rel.params["weight"] == 33
    assert types(out.events) == ["release.weight.changed"]
    assert types(d.command("weight", weight=101).events) == ["command.rejected"]
    assert d.state.routes.canary == 33


def test_weight_command_needs_a_canary() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")

    out = d.command("weight", weight=10)

    assert "no canary is taking traffic" in out.events[0].data["reason"] and d.state.routes == STABLE_ONLY


def test_linear_schedule_grows_the_weight_until_its_end() -> None:
    linear = LinearSchedule(start=10, end=35, increment=10, every=60)
    d = Driver.with_stable(make_policy(CanaryStage(mode="linear", linear=linear), PromoteStage()))
    d.push("v2")
    weights = [d.rel.weight]

    for _ in range(3):
        d.tick(60)
        weights.append(d.rel.weight)

    assert weights == [10, 20, 30, 35] and d.rel.step == 3
    d.tick(60)
    assert d.rel.phase == Phase.SUCCEEDED


def test_bluegreen_previews_without_traffic_then_switches() -> None:
    d = Driver.with_stable(make_policy(BlueGreenStage(preview=300), PromoteStage(), analysis=analysis()))

    d.push("v2")
    assert d.state.routes == RoutePlan(100, 0) and d.rel.canary_deployed

    d.tick(300, NO_DATA)
    assert d.rel.stage == 0 and d.state.routes.canary == 0
    out = d.tick(10, PASS)
    switch = [e.routes for e in out.effects if e.kind == "set-routes"]
    assert switch[0] == RoutePlan(0, 100) and switch[-1] == STABLE_ONLY
    assert d.rel.phase == Phase.SUCCEEDED


# -- promotion and protection ---------------------------------------------------------------------------


def test_promote_makes_the_target_stable_before_moving_traffic() -> None:
    d = Driver.with_stable(
        make_policy(
            CanaryStage(steps=(CanaryStep(50, 10),)),
            PromoteStage(),
            ProtectStage(rate_limit=RateLimit(100, 200)),
            revision_history=2,
        )
    )
    d.state = replace(d.state, revisions=(version("v0"), version("v-1")))
    d.push("v2")

    out = d.tick(10)

    assert kinds(out.effects) == [
        "promote-stable",
        "set-routes",
        "scale-down-canary",
        "set-protection",
        "finalize-routes",
    ]
    assert out.effects[0].image == version("v2").image and out.effects[1].routes == STABLE_ONLY
    assert out.effects[3].protection == Protection(rate_limit=RateLimit(100, 200))
    assert d.state.stable == version("v2") and d.state.revisions == (version("v1"), version("v0"))
    assert d.rel.phase == Phase.SUCCEEDED and d.rel.promoted
    assert types(out.events)[-4:] == [
        "release.promoted",
        "release.stage.entered",
        "protection.changed",
        "release.succeeded",
    ]


def test_keep_previous_keeps_the_old_version_warm_and_watches() -> None:
    d = Driver.with_stable(
        make_policy(
            CanaryStage(steps=(CanaryStep(50, 30),)),
            PromoteStage(keep_previous=600),
            analysis=analysis(start_step=2),
        )
    )
    d.push("v2")

    out = d.tick(30)

    assert kinds(out.effects) == ["promote-stable", "set-routes", "keep-warm", "scale-canary"]
    assert out.effects[2].image == version("v1").image and d.rel.canary_deployed
    assert d.rel.watching and d.rel.timer is not None and d.rel.timer.name == "watch"
    assert d.state.warm == version("v1") and d.state.warm_until == iso(T0 + timedelta(seconds=630))
    d.tick(600, NO_DATA)
    assert d.rel.watching  # needs a passing verdict before the previous version goes
    out = d.tick(10, PASS)
    assert (
        kinds(out.effects) == ["scale-down-canary", "finalize-routes"]
        and d.state.warm is None
        and not d.rel.canary_deployed
    )
    assert d.rel.phase == Phase.SUCCEEDED


def test_a_failed_watch_returns_to_the_warm_previous_version_at_once() -> None:
    d = Driver.with_stable(make_policy(PromoteStage(keep_previous=600), analysis=analysis()))
    d.push("v2")

    out = d.tick(10, FAIL)

    assert kinds(out.effects) == [
        "set-routes",
        "promote-stable",
        "set-routes",
        "scale-down-canary",
        "finalize-routes",
    ]
    assert out.effects[0].routes == RoutePlan(0, 100) and out.effects[2].routes == STABLE_ONLY
    assert d.state.stable == version("v1") and d.state.warm is None and d.rel.phase == Phase.ROLLED_BACK


def test_promote_command_records_the_gates_it_skips() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.tick()
    authorised = skipped_by_promote(d.policy.stages, d.rel)  # what the approvals front door asks about

    out = d.command("promote")

    assert [(g.gate, g.decision) for g in d.rel.gates] == [("canary", "approved"), ("promote", "approved")]
    assert authorised == ("canary", "promote")
    assert d.rel.phase == Phase.SUCCEEDED and d.state.stable == version("v2")
    assert kinds(out.effects) == [
        "promote-stable",
        "set-routes",
        "scale-down-canary",
        "finalize-routes",
    ] or kinds(out.effects) == ["promote-stable", "scale-down-canary", "finalize-routes"]


def test_promote_command_while_paused_at_a_gate_records_that_gate() -> None:
    d = Driver.with_stable(make_policy(ApprovalStage(name="go"), PromoteStage()))
    d.push("v2")
    d.command("pause")
    authorised = skipped_by_promote(d.policy.stages, d.rel)

    d.command("promote")

    assert [(g.gate, g.decision) for g in d.rel.gates] == [("go", "approved")]
    assert authorised == ("go",)
    assert d.rel.phase == Phase.SUCCEEDED


def test_promote_command_is_refused_after_a_failed_analysis() -> None:
    d = _failing_canary(RollbackMode.ROLLBACK, failure_limit=1)
    d.policy = replace(d.policy, analysis=analysis(failure_limit=1))
    d.state = replace(d.state, release=replace(d.rel, failures=1))

    out = d.command("promote")

    assert "promotion refused" in out.events[0].data["reason"] and d.state.stable == version("v1")


def test_promote_during_the_watch_ends_it_early() -> None:
    d = Driver.with_stable(make_policy(PromoteStage(keep_previous=600)))
    d.push("v2")

    out = d.command("promote")

    assert kinds(out.effects) == ["scale-down-canary", "finalize-routes"] and d.rel.phase == Phase.SUCCEEDED
    assert types(d.command("promote").events) == ["command.rejected"]


# -- commands out of place, duplicates ---------------------------------------------------------------------


def test_out_of_place_commands_are_audited_and_rejected() -> None:
    d = Driver.with_stable(make_policy(CanaryStage(steps=(CanaryStep(30, 60),)), PromoteStage()))
    d.push("v2")
    before = d.rel

    out = d.command("approve")

    assert d.rel == before and out.effects == ()
    assert types(out.events) == ["command.rejected"]
    data = out.events[0].data
    assert (data["app"], data["action"]) == (APP, "approve")
    assert data["reason"] == "not possible while the release is progressing"
    entry = d.state.history[-1]
    assert (entry.action, entry.release, entry.event_id) == ("ignored", "web-1", "cmd-2")


@pytest.mark.parametrize("action", ["approve", "reject", "weight", "promote", "pause", "resume", "abort"])
def test_commands_without_an_active_release_are_rejected(action: str) -> None:
    d = Driver.with_stable(seed_flow())

    out = d.command(action, weight=10)

    assert types(out.events) == ["command.rejected"] and out.events[0].data["reason"] == "no active release"
    assert d.state.release is None and d.state.stable == version("v1") and actions(d.state) == ["ignored"]


def test_transition_table_only_allows_abort_and_rollback_when_frozen() -> None:
    assert set(TRANSITIONS[Phase.FROZEN]) == {"tick", "abort", "rollback"}
    assert "approve" in TRANSITIONS[Phase.WAITING] and "approve" not in TRANSITIONS[Phase.PROGRESSING]
    assert not set(TRANSITIONS) & {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.SUPERSEDED}


def test_a_duplicate_event_id_is_a_no_op() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2", event_id="evt-1")
    before = d.state

    again = decide(d.policy, d.state, ImagePushed(id="evt-1", app=APP, target=version("v9")), d.now)

    assert again.state is before and again.effects == () and again.events == ()


def test_seen_and_history_stay_bounded() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")

    for _ in range(MAX_SEEN + 50):
        d.command("approve", weight=99)  # refused, yet audited

    assert len(d.state.seen) == MAX_SEEN and len(d.state.history) == MAX_HISTORY


def test_decide_does_not_mutate_its_input() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    state = d.state
    frozen = state.to_json()

    decide(d.policy, state, Command(id="c", app=APP, action="abort"), d.now)
    decide(d.policy, state, Tick(id="t"), d.now + timedelta(hours=1), Observation(metrics=PASS.metrics))

    assert state.to_json() == frozen


# -- rollback to a named version ----------------------------------------------------------------------------


def _released_twice(keep_previous: float = 0) -> Driver:
    d = Driver.with_stable(make_policy(PromoteStage(keep_previous=keep_previous)))
    d.push("v2")
    d.tick(keep_previous)
    d.push("v3")
    assert d.state.stable == version("v3") and d.state.revisions == (version("v2"), version("v1"))
    return d


def test_rollback_to_a_named_version_without_a_release() -> None:
    d = _released_twice()
    d.tick(1)

    out = d.command("rollback", version="v1")

    assert (
        kinds(out.effects) == ["promote-stable", "finalize-routes"]
        and out.effects[0].image == version("v1").image
    )
    assert d.state.stable == version("v1") and d.state.revisions == (version("v3"), version("v2"))
    rel = d.rel
    assert (rel.kind, rel.phase, rel.target, rel.origin) == (
        "rollback",
        Phase.ROLLED_BACK,
        version("v1"),
        version("v3"),
    )
    assert types(out.events) == ["release.started", "release.rolledback"]


def test_rollback_without_a_version_returns_to_the_previous_one() -> None:
    d = _released_twice()

    d.command("rollback")

    assert d.state.stable == version("v2")


def test_rollback_during_the_watch_switches_to_the_warm_version_first() -> None:
    d = _released_twice(keep_previous=600)
    assert d.rel.watching and d.state.warm == version("v2")

    out = d.command("rollback")

    assert kinds(out.effects) == [
        "set-routes",
        "promote-stable",
        "set-routes",
        "scale-down-canary",
        "finalize-routes",
    ]
    assert out.effects[0].routes == RoutePlan(0, 100) and out.effects[1].image == version("v2").image
    assert d.state.stable == version("v2") and d.state.revisions == (version("v1"),) and d.state.warm is None
    assert d.rel.phase == Phase.ROLLED_BACK and d.state.routes == STABLE_ONLY


def test_warm_fast_path_switches_traffic_before_promoting() -> None:
    d = Driver.with_stable(make_policy(PromoteStage()))
    d.state = replace(
        d.state,
        stable=version("v2"),
        revisions=(version("v1"),),
        warm=version("v1"),
        warm_until=iso(T0 + timedelta(seconds=300)),
    )

    out = d.command("rollback", version="v1")

    assert kinds(out.effects) == [
        "set-routes",
        "promote-stable",
        "set-routes",
        "scale-down-canary",
        "finalize-routes",
    ]
    assert out.effects[0].routes == RoutePlan(0, 100) and out.effects[2].routes == STABLE_ONLY
    assert d.state.warm is None and "(warm)" in d.rel.reason


def test_rollback_to_an_unknown_version_is_refused() -> None:
    d = _released_twice()

    out = d.command("rollback", version="v7")

    assert "v7 is not in the revision history (v2, v1)" in out.events[0].data["reason"]
    assert d.state.stable == version("v3")


def test_rollback_during_a_release_to_another_version_is_refused() -> None:
    d = Driver.with_stable(seed_flow())
    _at_canary_step(d)

    refused = d.command("rollback", version="v0")
    assert types(refused.events) == ["command.rejected"] and d.rel.phase == Phase.PROGRESSING

    out = d.command("rollback")
    assert d.rel.phase == Phase.ROLLED_BACK and kinds(out.effects) == [
        "set-routes",
        "scale-down-canary",
        "finalize-routes",
    ]


# -- alerts --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels", [{"graylane_release": "web-1"}, {"track": "canary"}, {"canary": "true"}, {"version": "v2"}]
)
def test_an_alert_naming_the_canary_rolls_it_back(labels: dict[str, str]) -> None:
    d = Driver.with_stable(seed_flow())
    _at_canary_step(d)

    out = d.alert("HighErrorRate", **labels)

    assert d.rel.phase == Phase.ROLLED_BACK and d.state.routes == STABLE_ONLY
    assert kinds(out.effects) == ["set-routes", "scale-down-canary", "finalize-routes"]


@pytest.mark.parametrize(
    "labels", [{"graylane_release": "web-9"}, {"track": "stable"}, {"version": "v1"}, {}]
)
def test_an_alert_about_something_else_is_ignored(labels: dict[str, str]) -> None:
    d = Driver.with_stable(seed_flow())
    _at_canary_step(d)
    before = d.state

    out = d.alert("HighErrorRate", **labels)

    assert out.state == before and types(out.events) == ["event.ignored"]


PROTECTED = make_policy(
    ProtectStage(rate_limit=RateLimit(average=100, burst=200)),
    protection=(
        ProtectionRule(
            alert="HighLatency",
            rate_limit_factor=0.5,
            floor=10,
            hold_down=60,
            circuit_breaker=CircuitBreaker("LatencyAtQuantileMS(50.0) > 100"),
        ),
        ProtectionRule(
            alert="Overload", match=(("severity", "page"),), rate_limit_factor=0.1, floor=30, hold_down=30
        ),
    ),
)


def test_alerts_tighten_protection_and_relax_after_hold_down() -> None:
    d = Driver.with_stable(PROTECTED)
    d.state = replace(
        d.state,
        base_protection=Protection(rate_limit=RateLimit(100, 200)),
        protection=Protection(rate_limit=RateLimit(100, 200)),
    )

    out = d.alert("HighLatency", fingerprint="a")
    assert kinds(out.effects) == ["set-protection"] and types(out.events) == ["protection.changed"]
    assert d.state.protection == Protection(
        RateLimit(50, 100), CircuitBreaker("LatencyAtQuantileMS(50.0) > 100")
    )

    assert d.alert("HighLatency", fingerprint="a").effects == ()  # idempotent per fingerprint
    d.alert("Overload", fingerprint="b", severity="page")  # factors multiply: 100 * 0.5 * 0.1 = 5, floor 30
    assert d.state.protection.rate_limit == RateLimit(30, 30)

    d.alert("Overload", firing=False, fingerprint="b", severity="page")
    d.alert("HighLatency", firing=False, fingerprint="a")
    assert d.state.protection.rate_limit == RateLimit(30, 30)  # hold-down: nothing relaxes at once
    d.tick(29)
    assert d.state.protection.rate_limit == RateLimit(30, 30)
    out = d.tick(1)  # Overload's hold-down is over; HighLatency's is not
    assert kinds(out.effects) == ["set-protection"] and d.state.protection.rate_limit == RateLimit(50, 100)
    d.tick(30)
    assert d.state.protection == Protection(rate_limit=RateLimit(100, 200)) and d.state.alerts == ()


def test_an_alert_matching_a_rule_with_other_labels_is_ignored() -> None:
    d = Driver.with_stable(PROTECTED)

    out = d.alert("Overload", severity="ticket")

    assert types(out.events) == ["event.ignored"] and d.state.alerts == ()


def test_alerts_before_the_protect_stage_tighten_the_limit_it_will_set() -> None:
    d = Driver.with_stable(PROTECTED)

    d.alert("HighLatency")

    assert d.state.protection.rate_limit == RateLimit(50, 100)


def test_protection_relaxes_on_a_tick_during_a_release() -> None:
    policy = replace(
        PROTECTED, stages=(CanaryStage(steps=(CanaryStep(10, None),)), PromoteStage()) + PROTECTED.stages
    )
    d = Driver.with_stable(policy)
    d.push("v2")
    d.alert("HighLatency")
    d.alert("HighLatency", firing=False)

    d.tick(59)
    assert d.state.protection.rate_limit == RateLimit(50, 100)
    d.tick(1)
    assert d.state.protection == Protection() and d.rel.phase == Phase.PROGRESSING
    assert d.state.history[-1].action == "protection"


def test_a_canary_alert_can_also_tighten_protection() -> None:
    policy = replace(
        PROTECTED, stages=(CanaryStage(steps=(CanaryStep(10, None),)), PromoteStage()) + PROTECTED.stages
    )
    d = Driver.with_stable(policy)
    d.push("v2")

    out = d.alert("HighLatency", track="canary")

    assert kinds(out.effects) == ["set-routes", "scale-down-canary", "finalize-routes", "set-protection"]
    assert d.rel.phase == Phase.ROLLED_BACK


# -- waves -------------------------------------------------------------------------------------------------------

WAVES = make_policy(
    PreviewStage(),
    CanaryStage(steps=(CanaryStep(50, 10),)),
    PromoteStage(),
    waves=(
        Wave("sh", cluster="ctx-sh"),
        Wave("bj", cluster="ctx-bj", approval=True),
        Wave("gz", cluster="ctx-gz"),
    ),
)


def test_waves_run_the_stages_per_cluster_with_preview_only_once() -> None:
    d = Driver.with_stable(WAVES)
    d.push("v2")
    d.tick()  # preview ready
    assert [e.cluster for e in d.last.effects] == ["ctx-sh", "ctx-sh", "ctx-sh"] if d.last else False

    out = d.tick(10)  # wave sh promoted; wave bj waits for its gate
    assert [(e.kind, e.cluster) for e in out.effects] == [
        ("promote-stable", "ctx-sh"),
        ("set-routes", "ctx-sh"),
        ("scale-down-canary", "ctx-sh"),
    ]
    assert (d.rel.wave, d.rel.phase, d.rel.gate, d.rel.stage) == (1, Phase.WAITING, "wave-bj", 0)
    assert d.state.routes == STABLE_ONLY and not d.rel.promoted

    out = d.command("approve")
    assert [(e.kind, e.cluster) for e in out.effects] == [
        ("deploy-canary", "ctx-bj"),
        ("scale-canary", "ctx-bj"),
        ("set-routes", "ctx-bj"),
    ]
    assert "deploy-preview" not in kinds(out.effects) and d.rel.stage == 1

    d.tick(10)  # bj promoted; gz starts at once (no gate)
    assert d.rel.wave == 2 and d.state.routes.canary == 50
    out = d.tick(10)
    assert [e.cluster for e in out.effects if e.kind == "promote-stable"] == ["ctx-gz"]
    assert d.rel.phase == Phase.SUCCEEDED and d.state.stable == version("v2")


def test_a_rollback_in_a_later_wave_returns_the_earlier_waves() -> None:
    d = Driver.with_stable(WAVES)
    d.push("v2")
    d.tick()
    d.tick(10)
    d.command("approve")

    out = d.command("abort")

    assert [(e.kind, e.cluster, e.version) for e in out.effects] == [
        ("set-routes", "ctx-bj", ""),
        ("scale-down-canary", "ctx-bj", ""),
        ("promote-stable", "ctx-sh", "v1"),
        ("finalize-routes", "ctx-sh", ""),
        ("finalize-routes", "ctx-bj", ""),
    ]
    assert d.rel.phase == Phase.ABORTED and d.state.stable == version("v1")


def test_promote_at_a_wave_gate_records_the_wave_gate() -> None:
    d = Driver.with_stable(WAVES)
    d.push("v2")
    d.tick()
    d.tick(10)
    authorised = skipped_by_promote(d.policy.stages, d.rel)

    d.command("promote")

    assert [(g.gate, g.decision) for g in d.rel.gates] == [("wave-bj", "approved")]
    assert authorised == ("wave-bj",)
    assert d.rel.wave == 2


# -- runner support ---------------------------------------------------------------------------------------------


def test_drifted_routes_are_reapplied_on_a_tick() -> None:
    d = Driver.with_stable(make_policy(CanaryStage(steps=(CanaryStep(30, 600),)), PromoteStage()))
    d.push("v2")

    out = d.tick(5, Observation(routes=RoutePlan(100, 0)))

    assert kinds(out.effects) == ["set-routes"] and out.effects[0].routes == d.state.routes
    assert d.state.history[-1].action == "drift"
    assert d.tick(5, Observation(routes=d.state.routes)).effects == ()


def test_notifiers_get_a_notify_effect_per_notable_transition() -> None:
    d = Driver.with_stable(seed_flow(notify=(NotifySpec(kind="slack", url="https://hooks.example.com/x"),)))

    out = d.push("v2")

    notices = [e for e in out.effects if e.kind == "notify"]
    assert [n.notice["type"] for n in notices] == ["dev.graylane.release.started"]
    assert notices[0].message.startswith("team-a/web v2 release started")


def test_every_state_round_trips_through_json() -> None:
    d = Driver.with_stable(seed_flow(notify=(NotifySpec(kind="slack"),)), auto_apply=False)
    d.push("v2")
    d.apply()
    d.tick()
    d.command("approve", weight=10)
    d.tick(61, PASS)

    assert AppState.from_json(d.state.to_json()) == d.state


def test_a_push_during_the_watch_drops_the_warm_copy_it_replaces() -> None:
    d = Driver.with_stable(
        make_policy(CanaryStage(steps=(CanaryStep(50, 10),)), PromoteStage(keep_previous=600))
    )
    d.push("v2")
    d.tick(10)
    assert d.rel.watching and d.state.warm == version("v1")

    d.push("v3")  # the v3 canary now runs in the canary workload that kept v1 warm
    d.command("abort")
    out = d.command("rollback", version="v1")

    assert d.state.warm is None and d.state.stable == version("v1")
    assert kinds(out.effects) == [
        "promote-stable",
        "finalize-routes",
    ]  # no switch to the (scaled down) canary workload


def test_a_push_at_a_later_wave_returns_earlier_waves_before_the_new_release() -> None:
    d = Driver.with_stable(WAVES)
    d.push("v2")
    d.tick()
    d.tick(10)  # sh promoted to v2; waiting at wave-bj
    assert d.rel.gate == "wave-bj"

    out = d.push("v3")

    superseded = [(e.kind, e.cluster, e.version) for e in out.effects if e.kind == "promote-stable"]
    assert superseded == [("promote-stable", "ctx-sh", "v1")]  # sh no longer runs the superseded v2
    assert d.rel.target == version("v3") and d.rel.origin == version("v1") and d.state.stable == version("v1")


def test_a_push_during_the_watch_keeps_the_promoted_version_stable() -> None:
    d = Driver.with_stable(
        make_policy(CanaryStage(steps=(CanaryStep(50, 10),)), PromoteStage(keep_previous=600))
    )
    d.push("v2")
    d.tick(10)
    assert d.rel.watching and d.state.stable == version("v2")

    out = d.push("v3")

    assert "promote-stable" not in kinds(out.effects)
    assert d.rel.origin == version("v2") and d.state.stable == version("v2") and d.state.warm is None


def test_resume_does_not_skip_a_preview_that_is_still_deploying() -> None:
    d = Driver.with_stable(make_policy(PreviewStage(), CanaryStage(steps=(CanaryStep(50, 10),))))
    d.push("v2")
    out = d.command("resume")
    assert "command.rejected" in "".join(types(out.events)) and d.rel.stage == 0


def test_an_effect_that_failed_for_good_fails_the_release_and_leaves_pending() -> None:
    from functions.core.events import EffectFailure
    from functions.core.policy import MigrationJob

    d = Driver.with_stable(
        make_policy(
            PreviewStage(migration=MigrationJob(name="migrate")), CanaryStage(steps=(CanaryStep(50, 10),))
        ),
        auto_apply=False,
    )
    out = d.push("v2")
    job = next(e for e in out.effects if e.kind == "run-migration")
    failed = EffectFailure(
        id=f"{job.id}/failed", app=d.state.app, effect=job.id, kind=job.kind, reason="exit 1"
    )

    out = d.send(failed)

    assert d.rel.phase == Phase.FAILED and "run-migration failed: exit 1" in d.rel.reason
    assert all(e.id != job.id for e in d.state.pending) and "release.failed" in "".join(types(out.events))
    assert d.send(failed).state is d.state  # a second report of the same failure is a duplicate


def test_the_first_image_becomes_stable_in_every_wave_cluster_with_its_route() -> None:
    d = Driver(WAVES)
    out = d.push("v1")
    assert [(e.kind, e.cluster) for e in out.effects] == [
        ("promote-stable", "ctx-sh"),
        ("set-routes", "ctx-sh"),
        ("promote-stable", "ctx-bj"),
        ("set-routes", "ctx-bj"),
        ("promote-stable", "ctx-gz"),
        ("set-routes", "ctx-gz"),
    ]
    assert d.state.stable == version("v1") and d.state.release is None
