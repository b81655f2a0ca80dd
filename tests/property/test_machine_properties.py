"""Property tests for decide(): random event sequences against several policy shapes, invariants after every step.

Each example picks a policy shape, then draws steps that depend on the state reached (so gates get approved
with valid and invalid parameters, timers fire, analysis passes and fails) and plays the runner: most steps
apply (clear) the pending effects, some don't. After every decision the invariants below must hold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import Phase as HPhase
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from functions.core.effects import STABLE_ONLY, Effect, RoutePlan
from functions.core.events import (
    COMMAND_REJECTED,
    MUTATING_ACTIONS,
    Alert,
    Command,
    Event,
    ImagePushed,
    Observation,
    Tick,
)
from functions.core.machine import Decision, decide
from functions.core.policy import (
    ABTestStage,
    ApprovalStage,
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    CircuitBreaker,
    GateParam,
    LinearSchedule,
    LoadTest,
    Match,
    MigrationJob,
    NotifySpec,
    Policy,
    PreviewStage,
    PreviewTraffic,
    PromoteStage,
    ProtectionRule,
    ProtectStage,
    RateLimit,
    RollbackMode,
    Wave,
)
from functions.core.protection import effective_protection, expire
from functions.core.state import (
    MAX_ALERTS,
    MAX_HISTORY,
    MAX_SEEN,
    MAX_VERDICTS,
    TERMINAL,
    Actor,
    AppState,
    HistoryEntry,
    Phase,
    Release,
    parse_iso,
)
from tests.unit.machine_helpers import APP, T0, analysis, make_policy, observed, version

PROTECTION = (
    ProtectionRule(
        alert="HighLatency",
        rate_limit_factor=0.5,
        floor=5,
        hold_down=30,
        circuit_breaker=CircuitBreaker("LatencyAtQuantileMS(50.0) > 100"),
    ),
    ProtectionRule(
        alert="Overload", match=(("severity", "page"),), rate_limit_factor=0.2, floor=20, hold_down=90
    ),
)
PROTECT = ProtectStage(rate_limit=RateLimit(average=100, burst=150), circuit_breaker=None)
HEADER = Match(kind="header", name="X-Canary", value="always")
HASH = Match(kind="user-hash", name="X-User", percent=10)

SHAPES: dict[str, Policy] = {
    "seed": make_policy(
        PreviewStage(migration=MigrationJob(name="migrate", command=("migrate",))),
        ApprovalStage(name="ab", timeout=120, on_timeout="approve"),
        ABTestStage(match=(HEADER,), duration=60),
        ApprovalStage(name="canary", params=(GateParam(name="weight", default=10, min=5, max=50),)),
        CanaryStage(steps=(CanaryStep(20, 30), CanaryStep(40, None), CanaryStep(80, 30))),
        ApprovalStage(name="promote", timeout=600),
        PromoteStage(keep_previous=60),
        PROTECT,
        analysis=analysis(failure_limit=2, inconclusive_limit=3, start_step=2),
        protection=PROTECTION,
        notify=(NotifySpec(kind="slack"),),
        revision_history=3,
    ),
    "abtest-manual": make_policy(
        ABTestStage(match=(HASH,), duration=0),
        ApprovalStage(name="weight", params=(GateParam(name="pct", min=1, max=30),)),
        CanaryStage(mode="manual", weight_param="pct", weight=5, hold=60),
        PromoteStage(),
        analysis=analysis(inconclusive_limit=2),
        rollback=RollbackMode.FREEZE,
        protection=PROTECTION,
    ),
    "bluegreen": make_policy(
        BlueGreenStage(
            preview=30, preview_traffic=PreviewTraffic(load_test=LoadTest(url="http://web.test/", rps=20))
        ),
        PromoteStage(keep_previous=120),
        PROTECT,
        analysis=analysis(),
        rollback=RollbackMode.ROLL_FORWARD,
        protection=PROTECTION,
        revision_history=2,
    ),
    "linear": make_policy(
        CanaryStage(mode="linear", linear=LinearSchedule(start=10, end=55, increment=15, every=30)),
        ApprovalStage(name="promote", timeout=90, on_timeout="reject"),
        PromoteStage(),
        analysis=analysis(failure_limit=3),
    ),
    "waves": make_policy(
        PreviewStage(),
        ApprovalStage(name="go", timeout=60, on_timeout="approve"),
        CanaryStage(steps=(CanaryStep(25, 30), CanaryStep(50, 30))),
        PromoteStage(keep_previous=30),
        PROTECT,
        analysis=analysis(failure_limit=2),
        waves=(
            Wave("sh", cluster="ctx-sh"),
            Wave("bj", cluster="ctx-bj", approval=True),
            Wave("gz", cluster="ctx-gz"),
        ),
        protection=PROTECTION,
    ),
    "no-analysis": make_policy(
        ApprovalStage(name="start"),
        ABTestStage(match=(HEADER,), duration=30),
        BlueGreenStage(preview=30),
        CanaryStage(steps=(CanaryStep(30, None),)),
        PromoteStage(),
        PROTECT,
        waves=(Wave("a"), Wave("b", cluster="ctx-b", approval=True)),
    ),
}

# no shrinking: sequences are long and shrinking one can take minutes; the notes of a failing example
# already print every event with the history actions it caused
PHASES = (HPhase.explicit, HPhase.generate)
TAGS = ("v1", "v2", "v3", "v4", "v5")
STEPS = (0.0, 0.0, 1.0, 5.0, 10.0, 30.0, 31.0, 61.0, 120.0, 600.0, 3600.0)
VERDICTS = ("pass", "pass", "pass", "fail", "no-data", "unavailable")
LIKELY = {  # commands an operator tends to send in each phase, on top of any command at all
    Phase.WAITING: ("approve", "approve", "approve", "pause", "promote"),
    Phase.PAUSED: ("resume", "resume", "promote"),
    Phase.PROGRESSING: ("resume", "resume", "promote", "pause", "weight"),
    Phase.FROZEN: ("abort", "rollback"),
}
DRIFT = (None, None, None, None, RoutePlan(100, 0), RoutePlan(50, 50))


@dataclass
class Run:
    """One sequence being played: the state, the clock, and what the invariants need to remember."""

    policy: Policy
    state: AppState
    now: datetime = T0
    counter: int = 0
    sent: list[tuple[Event, Observation]] = field(default_factory=list)
    ended: dict[str, Release] = field(default_factory=dict)  # terminal releases by id
    promotions: Counter[str] = field(default_factory=Counter)
    canary_up: dict[str, bool] = field(default_factory=dict)  # canary workload running, per cluster

    def next_id(self) -> str:
        self.counter += 1
        return f"evt-{self.counter}"


# -- drawing events -----------------------------------------------------------------------------------------


def _gates(policy: Policy) -> list[str]:
    names = [s.name for s in policy.stages if isinstance(s, ApprovalStage)]
    return names + [f"wave-{w.name}" for w in policy.waves] + ["nope"]


def current(run: Run, action: str, **fields: object) -> Command:
    """A command for the current release, as a button of its notice (or the CLI, or a typed command) sends it."""
    rel = run.state.release
    pin: dict[str, object] = {}
    if rel is not None:
        pin = (
            {"release": rel.id}
            if action == "rollback"
            else {"release": rel.id, "version": rel.target.version}
        )
    return Command(id=run.next_id(), app=APP, action=action, **{**pin, **fields})  # type: ignore[arg-type]


def draw_pin(data: st.DataObject, run: Run, action: str, ver: str) -> dict[str, str]:
    """release/version of a drawn command: mostly the current release, sometimes an old button's, another
    release's, a wrong target version, or none at all."""
    rel = run.state.release
    earlier = [f"web-{n}" for n in range(max(0, run.state.seq - 2), run.state.seq)] or ["web-0"]
    release = data.draw(st.sampled_from((rel.id if rel else "",) * 5 + ("", "web-99", *earlier)))
    if action == "rollback":
        return {"release": release, "version": ver}
    target = rel.target.version if rel else ""
    return {"release": release, "version": data.draw(st.sampled_from((target, target, target, "", "v0")))}


def draw_command(data: st.DataObject, run: Run) -> Command:
    rel = run.state.release
    likely = LIKELY.get(rel.phase if rel is not None else Phase.SUCCEEDED, ("rollback",))
    action = data.draw(st.sampled_from(MUTATING_ACTIONS + likely))
    open_gate = rel.gate if rel is not None else ""
    gate = data.draw(st.sampled_from(("", "", open_gate, *_gates(run.policy))))
    weight = data.draw(st.sampled_from((None, None, -1, 0, 5, 10, 25, 30, 50, 60, 100, 101)))
    params = data.draw(st.sampled_from(({}, {}, {"pct": 10}, {"pct": 31}, {"weight": 20}, {"weight": 4})))
    ver = data.draw(st.sampled_from(("", "", "v0", *TAGS)))
    user = data.draw(st.sampled_from(("alice", "bob")))
    return Command(
        id=run.next_id(),
        app=APP,
        action=action,
        actor=Actor(user=user, via="cli"),
        gate=gate,
        weight=weight,
        params=params,
        reason="because",
        **draw_pin(data, run, action, ver),
    )


def draw_alert(data: st.DataObject, run: Run, about_canary: bool = True) -> Alert:
    rel = run.state.release
    firing = data.draw(st.booleans())
    known = [a for a in run.state.alerts if not a.resolved_at and a.rule < len(run.policy.protection)]
    if (
        not firing and known and data.draw(st.sampled_from((True, True, False)))
    ):  # resolve one that fires, as Alertmanager would
        alert = data.draw(st.sampled_from(known))
        name = run.policy.protection[alert.rule].alert
        return Alert(
            id=run.next_id(),
            app=APP,
            fingerprint=alert.fingerprint,
            firing=False,
            alertname=name,
            labels={"severity": "page"},
        )
    name = data.draw(st.sampled_from(("HighLatency", "Overload", "Unrelated")))
    canary = (
        {"track": "canary"},
        {"canary": "true"},
        {"graylane_release": rel.id if rel else "web-0"},
        {"version": rel.target.version if rel else "v0"},
    )
    labels = data.draw(
        st.sampled_from(
            ({}, {"severity": "page"}, {"severity": "page"}, {"track": "stable"}, {"version": "v1"})
            + (canary if about_canary else ())
        )
    )
    fingerprint = data.draw(st.sampled_from(("fp-a", "fp-b", "fp-c")))
    return Alert(
        id=run.next_id(), app=APP, fingerprint=fingerprint, firing=firing, alertname=name, labels=labels
    )


def draw_step(data: st.DataObject, run: Run) -> tuple[Event, Observation]:
    kind = data.draw(
        st.sampled_from(
            (
                "tick",
                "tick",
                "tick",
                "tick",
                "command",
                "command",
                "command",
                "push",
                "alert",
                "alert",
                "duplicate",
            )
        )
    )
    run.now += timedelta(seconds=data.draw(st.sampled_from(STEPS)))
    if kind == "duplicate" and run.sent:
        return data.draw(st.sampled_from(run.sent))
    if kind == "push":
        tag = data.draw(st.sampled_from(TAGS))
        return ImagePushed(id=run.next_id(), app=APP, target=version(tag), tag=tag), Observation()
    if kind == "command":
        return draw_command(data, run), Observation()
    if kind == "alert":
        return draw_alert(data, run), Observation()
    verdict = data.draw(st.sampled_from((None, *VERDICTS)))
    metrics = observed(verdict).metrics if verdict else None
    return Tick(id=run.next_id(), app=APP), Observation(
        metrics=metrics, routes=data.draw(st.sampled_from(DRIFT))
    )


# -- invariants --------------------------------------------------------------------------------------------------


def assert_plan(plan: RoutePlan) -> None:
    assert 0 <= plan.stable <= 100 and 0 <= plan.canary <= 100 and plan.stable + plan.canary == 100, plan


def check_routes(out: Decision) -> None:
    """1. every desired and every requested route plan is a valid weight split."""
    assert_plan(out.state.routes)
    for effect in out.effects:
        if effect.kind == "set-routes":
            assert effect.routes is not None
            assert_plan(effect.routes)


def entries(before: AppState, event: Event, out: Decision) -> list[HistoryEntry]:
    """The history entries this decision added (event ids are unique except for redeliveries)."""
    if event.id in before.seen:
        return []
    return [h for h in out.state.history if h.event_id == event.id]


def check_promotion(run: Run, before: AppState, event: Event, out: Decision) -> None:
    """2. nothing is promoted past a closed gate or after the analysis failed."""
    rel = out.state.release
    promoted_now = [h for h in entries(before, event, out) if h.action == "promoted"]
    if rel is not None and rel.kind == "release" and rel.target != rel.origin:
        for effect in out.effects:
            if effect.kind == "promote-stable" and effect.image == rel.target.image:
                assert promoted_now, f"promote-stable of {rel.target.version} without a promotion entry"
    if not promoted_now:
        return
    assert rel is not None and rel.kind == "release"
    run.promotions[rel.id] += len(promoted_now)
    n = run.promotions[rel.id]  # promotions of this release so far: one per wave
    stages = run.policy.stages
    first_promote = next(i for i, s in enumerate(stages) if isinstance(s, PromoteStage))
    passed = Counter(g.gate for g in rel.gates if g.decision in ("approved", "timed-out"))
    for stage in stages[:first_promote]:
        if isinstance(stage, ApprovalStage):
            assert passed[stage.name] >= n, (
                f"promoted {n}x but gate {stage.name} passed {passed[stage.name]}x"
            )
    for wave in run.policy.waves[1:n]:
        if wave.approval:
            assert passed[f"wave-{wave.name}"] >= 1, f"promoted in wave {wave.name} without its gate"
    if run.policy.analysis is not None:
        assert rel.failures < run.policy.analysis.failure_limit, "promoted after a failed analysis"
    assert all(g.decision != "rejected" for g in rel.gates)


def check_analysis_gates_progress(before: AppState, event: Event, out: Decision) -> None:
    """2b. inconclusive never promotes: a timer moves an analysed step on only after a pass in that step."""
    old, rel = before.release, out.state.release
    if not isinstance(event, Tick) or old is None or rel is None or old.id != rel.id:
        return
    if old.phase != Phase.PROGRESSING or not old.analysing or (old.stage, old.step) == (rel.stage, rel.step):
        return
    if rel.phase in (Phase.ROLLED_BACK, Phase.FROZEN, Phase.PAUSED):
        return
    if old.watching and not old.verdicts:
        return  # a watch that was never measured ends on its timer
    passes = [v for v in rel.verdicts if v.verdict == "pass" and v.at >= old.step_started_at]
    assert passes and rel.verdicts[-1].verdict == "pass", (
        f"moved on from stage {old.stage} step {old.step} without a passing verdict"
    )


def _scale_downs_follow_stable_routes(before: AppState, effects: tuple[Effect, ...]) -> None:
    for j, effect in enumerate(effects):
        if effect.kind != "scale-down-canary":
            continue
        earlier = [e for e in effects[:j] if e.kind == "set-routes" and e.cluster == effect.cluster]
        current = earlier[-1].routes if earlier else before.routes
        assert current == STABLE_ONLY or (
            current is not None and current.canary == 0 and not current.match
        ), f"scale-down of the canary while routes are {current}"
        later = effects[j + 1 :]
        redeploy = next(
            (k for k, e in enumerate(later) if e.kind == "deploy-canary" and e.cluster == effect.cluster),
            len(later),
        )
        for e in later[:redeploy]:
            if e.kind == "set-routes" and e.cluster == effect.cluster:
                assert e.routes is not None and e.routes.canary == 0, "traffic sent to a scaled-down canary"


def check_canary_serves(run: Run, out: Decision) -> None:
    """3b. traffic only goes to a canary workload that runs (deployed or kept warm, not scaled down)."""
    for effect in out.effects:
        if effect.kind in ("deploy-canary", "keep-warm"):
            run.canary_up[effect.cluster] = True
        elif effect.kind == "scale-down-canary":
            run.canary_up[effect.cluster] = False
        elif (
            effect.kind == "set-routes"
            and effect.routes is not None
            and (effect.routes.canary or effect.routes.match)
        ):
            assert run.canary_up.get(effect.cluster), (
                f"routes {effect.routes} to a canary that is not running"
            )


def check_rollback(before: AppState, out: Decision) -> None:
    """3. a rollback ends on 100% stable; traffic moves before the canary is scaled down."""
    _scale_downs_follow_stable_routes(before, out.effects)
    rel, old = out.state.release, before.release
    if rel is None or rel.phase not in (Phase.ROLLED_BACK, Phase.ABORTED):
        return
    if old is not None and old.id == rel.id and old.phase == rel.phase:
        return  # ended earlier
    assert out.state.routes == STABLE_ONLY and rel.weight == 0 and not rel.canary_deployed
    assert not rel.match and not rel.promoted
    if rel.kind == "release":  # every wave, and the stable version on record, are back on the origin
        assert out.state.stable == rel.origin, f"rolled back but stable is {out.state.stable.version}"


def check_terminal(run: Run, out: Decision) -> None:
    """4. a release that ended stays exactly as it ended."""
    rel = out.state.release
    if rel is None:
        return
    if rel.id in run.ended:
        assert rel == run.ended[rel.id], f"{rel.id} changed after it ended {run.ended[rel.id].phase}"
    elif rel.phase in TERMINAL:
        run.ended[rel.id] = rel
    for h in out.state.history:  # a superseded release is only in the history: it ends there for good
        if h.action == "superseded":
            assert h.release != rel.id


def check_explained(run: Run, before: AppState, event: Event, out: Decision) -> None:
    """5. every change of phase, stage, step or weight is in the history; everything stays bounded."""
    old, rel = before.release, out.state.release
    mine = entries(before, event, out)
    if rel is not None and (
        old is None
        or old.id != rel.id
        or (old.phase, old.stage, old.step, old.weight, old.wave)
        != (rel.phase, rel.stage, rel.step, rel.weight, rel.wave)
    ):
        assert mine and all(h.action for h in mine), f"unexplained transition on {event.type}"
        assert event.id in out.state.seen
    if out.state.routes != before.routes or out.effects:
        assert out.state.generation == before.generation + 1
    state = out.state
    assert (
        len(state.history) <= MAX_HISTORY and len(state.seen) <= MAX_SEEN and len(state.alerts) <= MAX_ALERTS
    )
    assert len(state.revisions) <= run.policy.revision_history
    assert rel is None or len(rel.verdicts) <= MAX_VERDICTS


def check_one_verdict_per_interval(run: Run, before: AppState, out: Decision) -> None:
    """2c. a verdict is recorded at most once per analysis interval, however often ticks bring metrics."""
    old, rel = before.release, out.state.release
    if old is None or rel is None or old.id != rel.id or rel.verdicts == old.verdicts or not old.verdicts:
        return
    assert run.policy.analysis is not None
    gap = (parse_iso(rel.verdicts[-1].at) - parse_iso(old.verdicts[-1].at)).total_seconds()
    assert gap >= run.policy.analysis.interval * 0.95, f"two verdicts {gap:g} s apart"


def check_stale_commands(before: AppState, event: Event, out: Decision) -> None:
    """9. a command for another release (an old button, a late delivery), naming none while the app has one,
    or naming another target version, moves nothing: it is only recorded as ignored and rejected."""
    if not isinstance(event, Command) or event.id in before.seen:
        return
    rel = before.release
    current_id = rel.id if rel is not None else ""
    wrong_version = (
        rel is not None and event.action != "rollback" and event.version not in ("", rel.target.version)
    )
    if event.release == current_id and not wrong_version:
        return
    assert out.effects == () and out.state.release == before.release and out.state.routes == before.routes
    assert (out.state.stable, out.state.protection, out.state.pending) == (
        before.stable,
        before.protection,
        before.pending,
    )
    mine = [h for h in out.state.history if h.event_id == event.id]
    assert [h.action for h in mine] == ["ignored"] and (event.release or "names no release") in mine[0].reason
    assert [e.type for e in out.events] == [COMMAND_REJECTED]


def check_alerts(run: Run, event: Event, out: Decision) -> None:
    """Protection relaxes: after any tick no resolved alert outlives its hold-down."""
    if isinstance(event, Tick):
        assert expire(run.policy, out.state.alerts, run.now) == out.state.alerts, (
            "hold-down over, not relaxed"
        )
    assert (
        effective_protection(run.policy, out.state.base_protection, out.state.alerts) == out.state.protection
    )


def check_redelivery(run: Run, event: Event, obs: Observation, out: Decision) -> None:
    """6. the same event again, at the same time, changes nothing."""
    again = decide(run.policy, out.state, event, run.now, obs)
    assert again.state == out.state and again.effects == ()


def check_round_trip(state: AppState) -> None:
    """8. every state reached survives the store."""
    text = state.to_json()
    assert AppState.from_json(text) == state


def step(run: Run, event: Event, obs: Observation, apply: bool) -> None:
    before = run.state
    frozen = before.to_json()
    run.sent.append((event, obs))
    duplicate = bool(event.id) and event.id in before.seen
    out = decide(run.policy, before, event, run.now, obs)  # 6. never raises
    if currently_in_test_context():
        note(
            f"{run.now:%H:%M:%S} {_describe(event, obs)} -> {[h.action for h in entries(before, event, out)]}"
        )
    assert before.to_json() == frozen  # 7. the input is not mutated
    if duplicate:
        assert out.state is before and out.effects == () and out.events == ()
    check_routes(out)
    check_promotion(run, before, event, out)
    check_analysis_gates_progress(before, event, out)
    check_one_verdict_per_interval(run, before, out)
    check_stale_commands(before, event, out)
    check_rollback(before, out)
    check_canary_serves(run, out)
    check_terminal(run, out)
    check_explained(run, before, event, out)
    check_alerts(run, event, out)
    check_redelivery(run, event, obs, out)
    check_round_trip(out.state)
    assert out.state.pending[len(out.state.pending) - len(out.effects) :] == out.effects
    run.state = replace(out.state, pending=()) if apply else out.state


def _describe(event: Event, obs: Observation) -> str:
    if isinstance(event, Command):
        return f"{event.id} {event.action} gate={event.gate!r} weight={event.weight} params={event.params} v={event.version!r}"
    if isinstance(event, Alert):
        return f"{event.id} alert {event.alertname} firing={event.firing} {event.fingerprint} {event.labels}"
    if isinstance(event, ImagePushed):
        return f"{event.id} push {event.target.version}"
    verdict = obs.metrics[0].value if obs.metrics else None
    return f"{event.id} tick metrics={verdict} routes={obs.routes}"


def start(policy: Policy, stable: bool) -> AppState:
    if not stable:
        return AppState(app=APP)
    return AppState(app=APP, stable=version("v1"), revisions=(version("v0"),))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_invariants_hold_after_every_event(shape: str, data: st.DataObject) -> None:
    policy = SHAPES[shape]
    run = Run(policy, start(policy, data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(min_value=1, max_value=50))):
        event, obs = draw_step(data, run)
        step(run, event, obs, apply=data.draw(st.sampled_from((True, True, True, False))))


def happy_path(data: st.DataObject, run: Run) -> tuple[Event, Observation]:
    """Mostly what an operator and a healthy canary do: approve what is open, pass the analysis, wait."""
    rel = run.state.release
    if data.draw(st.integers(min_value=0, max_value=5)) == 5:
        return draw_step(data, run)  # now and then anything at all: a push, a rollback, an alert
    if rel is None or not rel.active or (rel.watching and data.draw(st.booleans())):
        if rel is not None and data.draw(st.booleans()):  # an operator returns to an earlier version
            ver = data.draw(st.sampled_from(("", "v1", "v2")))
            return current(run, "rollback", version=ver), Observation()
        tag = f"v{run.counter + 2}"
        return ImagePushed(id=run.next_id(), app=APP, target=version(tag), tag=tag), Observation()
    if rel.canary_deployed and data.draw(st.integers(min_value=0, max_value=4)) == 4:
        return current(run, data.draw(st.sampled_from(("abort", "rollback")))), Observation()
    if rel.phase == Phase.WAITING and data.draw(st.booleans()):
        params = data.draw(st.sampled_from(({}, {"weight": 20}, {"pct": 10})))
        return current(run, "approve", params=params, weight=params.get("weight")), Observation()
    if rel.phase in (Phase.PAUSED, Phase.PROGRESSING) and rel.timer is None and data.draw(st.booleans()):
        return current(run, "resume"), Observation()
    run.now += timedelta(seconds=data.draw(st.sampled_from((10.0, 31.0, 61.0))))
    verdict = data.draw(st.sampled_from(("pass", "pass", "pass", "no-data", "fail")))
    return Tick(id=run.next_id(), app=APP), observed(verdict)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(
    max_examples=14,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_releases_reach_the_end_under_the_invariants(shape: str, data: st.DataObject) -> None:
    """Sequences biased towards progress, so promotion, watch, waves and protection are reached often."""
    policy = SHAPES[shape]
    run = Run(policy, start(policy, True))
    for _ in range(data.draw(st.integers(min_value=5, max_value=60))):
        event, obs = happy_path(data, run)
        step(run, event, obs, apply=True)
    assert run.state.seq >= 1


def test_happy_paths_do_reach_promotion() -> None:
    """The biased sequences are not vacuous: every shape promotes under always-pass analysis."""
    for name, policy in SHAPES.items():
        run = Run(policy, start(policy, True))
        for i in range(200):
            rel = run.state.release
            if rel is not None and rel.phase == Phase.SUCCEEDED:
                break
            if rel is None:
                event: Event = ImagePushed(id=run.next_id(), app=APP, target=version("v2"), tag="v2")
            elif rel.phase == Phase.WAITING:
                event = current(run, "approve", params={"weight": 20, "pct": 10})
            elif rel.timer is None and i % 2:
                event = current(run, "resume")
            else:
                run.now += timedelta(seconds=31)
                event = Tick(id=run.next_id(), app=APP)
            step(run, event, observed("pass"), apply=True)
        assert run.state.release is not None and run.state.release.phase == Phase.SUCCEEDED, name
        assert run.state.stable == version("v2") and run.promotions[run.state.release.id] == max(
            1, len(policy.waves)
        )


HOLDING = make_policy(
    CanaryStage(steps=(CanaryStep(10, None),)), PromoteStage(), PROTECT, protection=PROTECTION
)


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_protection_follows_alerts_during_and_between_releases(data: st.DataObject) -> None:
    """Alerts firing, repeating and resolving, with ticks in between, while a release holds or after it ended."""
    run = Run(HOLDING, start(HOLDING, True))
    step(
        run, ImagePushed(id=run.next_id(), app=APP, target=version("v2"), tag="v2"), Observation(), apply=True
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=30))):
        if data.draw(st.booleans()):
            event: Event = draw_alert(data, run, about_canary=data.draw(st.integers(0, 9)) == 9)
        elif data.draw(st.integers(min_value=0, max_value=9)) == 9:
            event = current(run, data.draw(st.sampled_from(("resume", "abort"))))
        else:
            run.now += timedelta(
                seconds=data.draw(st.sampled_from((1.0, 10.0, 29.0, 30.0, 31.0, 89.0, 90.0, 120.0)))
            )
            event = Tick(id=run.next_id(), app=APP)
        step(run, event, Observation(), apply=True)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_stale_approval_old_buttons_pressed_later_change_nothing(shape: str, data: st.DataObject) -> None:
    """Releases move on (pushes supersede them, they end) while the buttons of their notices stay in the chat:
    a button pressed again later (a new delivery of the same command text) acts only on the release it names."""
    policy = SHAPES[shape]
    run = Run(policy, start(policy, True))
    buttons: list[Command] = []
    stale_pressed = 0
    for _ in range(data.draw(st.integers(min_value=10, max_value=60))):
        if buttons and data.draw(st.integers(min_value=0, max_value=3)) == 3:
            old = data.draw(st.sampled_from(buttons))
            event: Event = replace(old, id=run.next_id())  # the same button, pressed again
            rel = run.state.release
            stale_pressed += rel is None or old.release != rel.id
            step(run, event, Observation(), apply=True)  # check_stale_commands holds it to the rule
            continue
        if data.draw(st.integers(min_value=0, max_value=7)) == 7:  # a newer image supersedes the release
            tag = f"v{run.counter + 2}"
            event, obs = ImagePushed(id=run.next_id(), app=APP, target=version(tag), tag=tag), Observation()
        else:
            event, obs = happy_path(data, run)
        if isinstance(event, Command):
            buttons.append(event)
        step(run, event, obs, apply=True)
    note(f"{stale_pressed} stale presses")
