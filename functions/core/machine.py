"""The release state machine. `decide()` is the only entry point; it does no I/O.

    decide(policy, state, event, now, observation) -> Decision(state, effects, events)

Every transition lives in TRANSITIONS (phase x event kind -> rule) or in a stage rule it names
(stages.py). Under at-least-once delivery an out-of-place event is normal: decide() never raises for
one; it returns the state unchanged (commands are still audited) and an `event.ignored` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

from functions.core import events as ev
from functions.core import per_version
from functions.core.analysis import analysis_due
from functions.core.effects import STABLE_ONLY, Effect, RoutePlan
from functions.core.events import (
    NO_OBSERVATION,
    Alert,
    Command,
    EffectFailure,
    Emitted,
    Event,
    ImagePushed,
    Observation,
    Tick,
)
from functions.core.flag_stage import everyone, flags_off, set_percent
from functions.core.flag_stage import next_step as flag_next_step
from functions.core.gates import promote_target, skipped_by_promote
from functions.core.hooks import GATE_PREFIX, held
from functions.core.moves import (
    FIRE,
    decide_gate,
    enter_from,
    ignore,
    pass_gate,
    pause,
    per_version_refusal,
    resume_hook_gate,
    rollback,
    start,
)
from functions.core.policy import ApprovalStage, FlagStage, Policy, PreviewStage, RollbackMode
from functions.core.protection import effective_protection, expire, rule_matches
from functions.core.rules_tick import tick_held, tick_inactive, tick_progressing, tick_waiting
from functions.core.stages import analysis_allows, next_step, set_weight
from functions.core.state import (
    MAX_ALERTS,
    ActiveAlert,
    AppState,
    Phase,
    Release,
    Timer,
    Version,
    bounded,
    parse_iso,
)
from functions.core.tx import Tx

Rule = Callable[[Tx], None]


class Decision(NamedTuple):
    state: AppState
    effects: tuple[Effect, ...]
    events: tuple[Emitted, ...]


def decide(
    policy: Policy, state: AppState, event: Event, now: datetime, observation: Observation = NO_OBSERVATION
) -> Decision:
    if event.id and event.id in state.seen:
        return Decision(state, (), ())  # a redelivery: already decided
    tx = Tx(policy, state, event, now, observation)
    if per_version.active(policy):
        per_version.ensure_first(tx)  # a state from the pair model: its stable runs in the first Deployment
    kind = event_kind(event)
    problem = release_mismatch(state, event) if isinstance(event, Command) else ""
    if problem:
        ignore(tx, problem)  # a command for another release (an old button, a late delivery) moves nothing
    elif kind in GLOBAL:
        GLOBAL[kind](tx)
    elif tx.rel is None or not tx.rel.active:
        INACTIVE.get(kind, _not_active)(tx)
    else:
        TRANSITIONS[tx.rel.phase].get(kind, _not_now)(tx)
    return Decision(*tx.result())


def event_kind(event: Event) -> str:
    if isinstance(event, ImagePushed):
        return "push"
    if isinstance(event, Tick):
        return "tick"
    if isinstance(event, Alert):
        return "alert"
    if isinstance(event, EffectFailure):
        return "effect-failed"
    return event.action


def wants_analysis(policy: Policy, state: AppState, now: datetime) -> bool:
    """Should the runner measure metrics before deciding on a tick? (Pure, used by the runner.)"""
    return analysis_due(policy, state.release, now)


def release_mismatch(state: AppState, cmd: Command) -> str:
    """Why `cmd` is not for the app's current release ("" when it is). Pure; the edges ask it too, so a
    sender hears the refusal at once, and decide() enforces it whatever reaches it later.

    A command names the release it was meant for (a button carries it; a typed command, the CLI and the API
    name the release current when they were sent) and, except a rollback (whose version is where to go), its
    target version. An app without any release has nothing to name.
    """
    rel = state.release
    if rel is None:
        return (
            f"the command names release {cmd.release}, but {state.app} has no release" if cmd.release else ""
        )
    current = f"{rel.id} ({rel.target.version})"
    if not cmd.release:
        return f"the command names no release; the current release of {state.app} is {current}"
    if cmd.release != rel.id:
        return (
            f"the command is for release {cmd.release}, but the current release of {state.app} is {current}"
        )
    if cmd.action != "rollback" and cmd.version and cmd.version != rel.target.version:
        return f"the command is for version {cmd.version}, but release {rel.id} deploys {rel.target.version}"
    return ""


# -- ignoring ---------------------------------------------------------------------------------------


def _not_now(tx: Tx) -> None:
    ignore(tx, f"not possible while the release is {tx.release.phase.value}")


def _not_active(tx: Tx) -> None:
    ignore(tx, "no active release")


# -- image pushed -------------------------------------------------------------------------------------


def on_push(tx: Tx) -> None:
    event = tx.event
    assert isinstance(event, ImagePushed)
    target, rel, state = event.target, tx.rel, tx.state
    if rel is not None and rel.active and rel.target.image == target.image:
        return ignore(tx, f"{target.version} is already being released")
    if (rel is None or not rel.active) and state.stable.image == target.image:
        return ignore(tx, f"{target.version} is already stable")
    if not state.stable.image:
        return _initialise(tx, target)
    if per_version.active(tx.policy) and (why := per_version_refusal(tx, target)):
        return ignore(tx, why)
    again = per_version.active(tx.policy) and state.stable.image == target.image
    if rel is not None and rel.active:
        why = f"superseded by {target.version}"
        if again:  # one Deployment per version: the stable's own serves it, there is nothing to release
            why += ", the stable version, which keeps running in its own Deployment"
        if rel.promoted and rel.wave + 1 >= len(tx.policy.waves):
            # fully promoted, only being watched: it stays stable and the new release starts from it (a flag it
            # was still rolling out goes off: the new release rolls it out again)
            flags_off(tx, below=100)
            tx.update(watching=False, analysing=False, canary_deployed=False)
            tx.set_phase(Phase.SUPERSEDED, "superseded", why, ev.RELEASE_SUPERSEDED)
        else:
            # the way back of a rollback: traffic to stable first, and clusters already on the target return
            # to the origin, so the new release starts from one known stable everywhere
            rollback(tx, why, Phase.SUPERSEDED, "superseded", ev.RELEASE_SUPERSEDED)
        if tx.state.warm is not None and per_version.active(tx.policy):
            per_version.drop_warm(tx)  # the previous version's own Deployment goes now
        elif tx.state.warm is not None:  # the new canary replaces the warm copy in the canary workload
            tx.set_state(warm=None, warm_until="")
    if again:
        return
    start(tx, target, kind="release")
    if held(tx, "confirm-rollout", "enter:0"):
        return
    enter_from(tx, 0)


def _initialise(tx: Tx, target: Version) -> None:
    """The first image an app ever sees becomes stable directly: there is nothing to compare it with.

    In every wave's cluster, and with the route written out, so later releases find their route objects.
    Per-version model: it is what the first Deployment runs, which is left as it is (per_version.adopt).
    """
    if per_version.active(tx.policy):
        return per_version.adopt(tx, target)
    for cluster in [w.cluster for w in tx.policy.waves] or [""]:
        tx.effect("promote-stable", image=target.image, version=target.version, cluster=cluster)
        tx.effect("set-routes", routes=STABLE_ONLY, cluster=cluster)
    tx.set_state(stable=target, routes=STABLE_ONLY)
    tx.record("initialised", reason=f"{target.version} is the first version: made stable")


# -- commands ------------------------------------------------------------------------------------------


def _command(tx: Tx) -> Command:
    assert isinstance(tx.event, Command)
    return tx.event


def _who(tx: Tx) -> str:
    actor = _command(tx).actor
    return f"{actor.user} via {actor.via}"


def _gate_params(tx: Tx, cmd: Command) -> dict[str, int] | str:
    """The gate's declared parameters filled from the command, or the reason they are refused."""
    stage = tx.stage()
    declared = stage.params if isinstance(stage, ApprovalStage) and stage.name == tx.release.gate else ()
    given = dict(cmd.params)
    if cmd.weight is not None:
        given.setdefault("weight", cmd.weight)
    out: dict[str, int] = {}
    for p in declared:
        value = given.get(p.name, p.default)
        if value is None:
            return f"gate {stage.name} needs parameter {p.name} ({p.min}..{p.max})"  # type: ignore[union-attr]
        if not p.min <= value <= p.max:
            return f"parameter {p.name}={value} is not allowed; expected {p.min}..{p.max}"
        out[p.name] = int(value)
    return out


def cmd_approve(tx: Tx) -> None:
    cmd, rel = _command(tx), tx.release
    gate = cmd.gate or rel.gate
    if gate != rel.gate:
        return ignore(tx, f"gate {gate} is not open; waiting at {rel.gate}")
    if gate.startswith(GATE_PREFIX):  # a human stands in for the hooks
        tx.record("approved", reason=f"gate {gate} approved by {_who(tx)} for its hooks")
        return resume_hook_gate(tx, f"approved by {_who(tx)}")
    params = _gate_params(tx, cmd)
    if isinstance(params, str):
        return ignore(tx, params)
    pass_gate(tx, gate, "approved", params)


def cmd_reject(tx: Tx) -> None:
    cmd, rel = _command(tx), tx.release
    gate = cmd.gate or rel.gate
    if gate != rel.gate:
        return ignore(tx, f"gate {gate} is not open; waiting at {rel.gate}")
    decide_gate(tx, gate, "rejected")
    why = f"gate {gate} rejected by {_who(tx)}" + (f": {cmd.reason}" if cmd.reason else "")
    rollback(tx, why, Phase.ABORTED, "rejected", ev.RELEASE_ABORTED)


def cmd_weight(tx: Tx) -> None:
    cmd, rel = _command(tx), tx.release
    if cmd.weight is None or not 0 <= cmd.weight <= 100:
        return ignore(tx, f"weight {cmd.weight} is not allowed; expected 0..100")
    stage = tx.stage()
    if isinstance(stage, FlagStage):  # the flag's percentage is the weight of a flag stage
        tx.update(params={**rel.params, "weight": cmd.weight})
        set_percent(tx, stage, cmd.weight, f"manual weight by {_who(tx)}")
        tx.emit(ev.WEIGHT_CHANGED)
        return
    if not rel.canary_deployed or rel.promoted:
        return ignore(tx, "no canary is taking traffic in this stage")
    tx.update(params={**rel.params, "weight": cmd.weight})
    set_weight(tx, cmd.weight, f"manual weight {cmd.weight} by {_who(tx)}")
    tx.emit(ev.WEIGHT_CHANGED)


def cmd_promote(tx: Tx) -> None:
    rel, stages = tx.release, tx.policy.stages
    analysis = tx.policy.analysis
    if analysis is not None and rel.failures >= analysis.failure_limit:
        return ignore(tx, "analysis failed: promotion refused")
    if rel.watching:
        timer = rel.timer
        tx.update(timer=None)
        FIRE["watch"](tx, stages[rel.stage])
        tx.record(
            "promote", reason=f"watch ended early by {_who(tx)}", scheduled_at=timer.due if timer else ""
        )
        return enter_from(tx, rel.stage + 1)
    stage = tx.stage()
    if isinstance(stage, FlagStage) and not rel.gate.startswith(GATE_PREFIX + "pre-rollout"):
        everyone(tx, stage, _who(tx))
        tx.record("promote", reason=f"flag {stage.key} promoted to every user by {_who(tx)}")
        return enter_from(tx, rel.stage + 1)
    target = promote_target(stages, rel)
    if target is None or rel.promoted:
        return ignore(tx, "nothing left to promote")
    for gate in skipped_by_promote(stages, rel):  # the command stands for every gate it skips, and says so
        decide_gate(tx, gate, "approved")
    tx.record("promote", reason=f"promoted by {_who(tx)}")
    enter_from(tx, target)


def cmd_pause(tx: Tx) -> None:
    pause(tx, f"paused by {_who(tx)}" + (f": {_command(tx).reason}" if _command(tx).reason else ""))


def cmd_resume(tx: Tx) -> None:
    rel = tx.release
    if rel.phase == Phase.PAUSED:
        timer = rel.timer
        if timer is not None and rel.paused_timer_left is not None:
            timer = Timer(name=timer.name, due=tx.due(rel.paused_timer_left))
        tx.update(timer=timer, paused_timer_left=None, inconclusive_run=0)
        tx.set_phase(
            Phase(rel.paused_from or "progressing"), "resumed", f"resumed by {_who(tx)}", ev.RELEASE_RESUMED
        )
        return
    stage = tx.stage()
    if rel.timer is not None or stage is None:
        return ignore(tx, "the release is not paused")
    if isinstance(stage, PreviewStage):
        return ignore(tx, "the preview stage completes by itself once the preview is deployed")
    # an indefinite pause (a step without a duration, an open-ended A/B test): a human moves it on
    if not analysis_allows(tx) and rel.verdicts and rel.verdicts[-1].verdict == "fail":
        return ignore(tx, "the latest analysis failed")
    tx.record("resumed", reason=f"continued by {_who(tx)}")
    if flag_next_step(tx, stage) if isinstance(stage, FlagStage) else next_step(tx, stage):
        enter_from(tx, tx.release.stage + 1)


def cmd_abort(tx: Tx) -> None:
    why = f"aborted by {_who(tx)}" + (f": {_command(tx).reason}" if _command(tx).reason else "")
    rollback(tx, why, Phase.ABORTED, "aborted", ev.RELEASE_ABORTED)


def cmd_rollback(tx: Tx) -> None:
    cmd, rel = _command(tx), tx.rel
    if rel is not None and rel.active:
        if cmd.version and cmd.version != rel.origin.version:
            return ignore(tx, f"release {rel.id} is active; abort it before rolling back to {cmd.version}")
        why = f"rolled back by {_who(tx)}" + (f": {cmd.reason}" if cmd.reason else "")
        return rollback(tx, why, Phase.ROLLED_BACK, "rolled-back", ev.RELEASE_ROLLED_BACK)
    state = tx.state
    known = [v for v in state.revisions if not cmd.version or v.version == cmd.version]
    if not known:
        have = ", ".join(v.version for v in state.revisions) or "none"
        return ignore(tx, f"version {cmd.version or '(previous)'} is not in the revision history ({have})")
    target = known[0]
    if per_version.active(tx.policy) and (why := per_version_refusal(tx, target)):
        return ignore(tx, why)
    warm = state.warm == target and state.warm_until and parse_iso(state.warm_until) > tx.now
    if rel is not None:
        flags_off(tx)  # what the release being rolled back from turned on
    start(tx, target, kind="rollback")
    if per_version.active(tx.policy):
        per_version.roll_back_to(
            tx, tx.release.origin_slot
        )  # its own Deployment runs; the stable's scales down
    elif warm:
        tx.route(RoutePlan.canary_at(100))  # the previous version is still running: switch at once
    if not per_version.active(tx.policy):
        tx.effect("promote-stable", image=target.image, version=target.version)
        tx.route(STABLE_ONLY)
    if warm and not per_version.active(tx.policy):
        tx.effect("scale-down-canary")
    revisions = (state.stable,) + tuple(v for v in state.revisions if v != target)
    tx.set_state(stable=target, revisions=revisions[: tx.policy.revision_history], warm=None, warm_until="")
    why = f"rolled back to {target.version} by {_who(tx)}" + (" (warm)" if warm else "")
    tx.set_phase(Phase.ROLLED_BACK, "rolled-back", why, ev.RELEASE_ROLLED_BACK)


# -- alerts -----------------------------------------------------------------------------------------------


def _names_canary(alert: Alert, rel: Release) -> bool:
    labels = alert.labels
    return (
        labels.get("graylane_release") == rel.id
        or labels.get("track") == "canary"
        or labels.get("canary") == "true"
        or (bool(rel.target.version) and labels.get("version") == rel.target.version)
    )


def on_alert(tx: Tx) -> None:
    alert = tx.event
    assert isinstance(alert, Alert)
    acted = False
    rel = tx.rel
    if alert.firing and rel is not None and rel.active and rel.canary_deployed and _names_canary(alert, rel):
        rollback(
            tx,
            f"alert {alert.alertname} fired on the canary",
            Phase.ROLLED_BACK,
            "rolled-back",
            ev.RELEASE_ROLLED_BACK,
        )
        acted = True
    acted = _protection(tx, alert) or acted
    if not acted:
        ignore(tx, f"alert {alert.alertname} matches no protection rule and no canary")


def _protection(tx: Tx, alert: Alert) -> bool:
    rules = [i for i, r in enumerate(tx.policy.protection) if rule_matches(r, alert.alertname, alert.labels)]
    if not rules:
        return False
    alerts = {a.fingerprint: a for a in tx.state.alerts}
    known = alerts.get(alert.fingerprint)
    if alert.firing:
        if known is not None and not known.resolved_at:
            return False  # the same alert again: idempotent per fingerprint
        alerts[alert.fingerprint] = ActiveAlert(
            fingerprint=alert.fingerprint, rule=rules[0], since=tx.now_iso
        )
    else:
        if known is None or known.resolved_at:
            return False
        alerts[alert.fingerprint] = replace(known, resolved_at=tx.now_iso)
    active = expire(tx.policy, bounded(tuple(alerts.values()), MAX_ALERTS), tx.now)
    tx.set_state(alerts=active)
    state_word = "firing" if alert.firing else "resolved (relaxes after hold-down)"
    tx.record("alert", reason=f"alert {alert.alertname} {state_word}")
    tx.protect(
        effective_protection(tx.policy, tx.state.base_protection, active),
        f"alert {alert.alertname} {state_word}",
    )
    return True


# -- effects that failed for good ----------------------------------------------------------------------


def on_effect_failed(tx: Tx) -> None:
    """A failed migration Job (say) cannot be retried into success: drop it and fail the release."""
    failure = tx.event
    assert isinstance(failure, EffectFailure)
    pending = tx.state.pending
    if not any(e.id == failure.effect for e in pending):
        return ignore(tx, f"effect {failure.effect} is no longer pending")
    rel = tx.rel
    if failure.kind == "git-write-back":  # Git could not be told: recorded, the release goes on
        tx.set_state(pending=tuple(e for e in pending if e.id != failure.effect))
        return tx.record("effect-failed", reason=f"{failure.kind} failed: {failure.reason}")
    # what the release still wanted done after the failed effect is moot now (the way back replaces it)
    mine = f"{rel.id}/" if rel is not None and rel.active else failure.effect
    tx.set_state(pending=tuple(e for e in pending if e.id != failure.effect and not e.id.startswith(mine)))
    why = f"{failure.kind} failed: {failure.reason}"
    if rel is None or not rel.active:
        return tx.record("effect-failed", reason=why)
    if tx.policy.rollback is RollbackMode.ROLLBACK:
        return rollback(tx, why, Phase.FAILED, "failed", ev.RELEASE_FAILED)
    tx.update(timer=None)
    tx.set_phase(Phase.FROZEN, "frozen", why, ev.RELEASE_FROZEN)


# -- the table ------------------------------------------------------------------------------------------

_ANY_ACTIVE: dict[str, Rule] = {"abort": cmd_abort, "rollback": cmd_rollback, "weight": cmd_weight}

TRANSITIONS: dict[Phase, dict[str, Rule]] = {
    Phase.PROGRESSING: {
        **_ANY_ACTIVE,
        "tick": tick_progressing,
        "promote": cmd_promote,
        "pause": cmd_pause,
        "resume": cmd_resume,
    },
    Phase.WAITING: {
        **_ANY_ACTIVE,
        "tick": tick_waiting,
        "approve": cmd_approve,
        "reject": cmd_reject,
        "promote": cmd_promote,
        "pause": cmd_pause,
    },
    Phase.PAUSED: {**_ANY_ACTIVE, "tick": tick_held, "resume": cmd_resume, "promote": cmd_promote},
    Phase.FROZEN: {"tick": tick_held, "abort": cmd_abort, "rollback": cmd_rollback},
}
INACTIVE: dict[str, Rule] = {"tick": tick_inactive, "rollback": cmd_rollback}
GLOBAL: dict[str, Rule] = {"push": on_push, "alert": on_alert, "effect-failed": on_effect_failed}
