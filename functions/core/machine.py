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
from functions.core.effects import STABLE_ONLY, Effect
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
from functions.core.flag_stage import flags_off
from functions.core.hooks import held
from functions.core.moves import enter_from, ignore, per_version_refusal, rollback, start
from functions.core.policy import Policy, RollbackMode
from functions.core.protection import effective_protection, expire, rule_matches
from functions.core.rules_commands import (
    cmd_abort,
    cmd_approve,
    cmd_pause,
    cmd_promote,
    cmd_reject,
    cmd_resume,
    cmd_rollback,
    cmd_weight,
)
from functions.core.rules_tick import tick_held, tick_inactive, tick_progressing, tick_waiting
from functions.core.state import MAX_ALERTS, ActiveAlert, AppState, Phase, Release, Version, bounded
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
