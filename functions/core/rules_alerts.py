"""The rules for what the outside reports, whatever the phase: an alert firing or resolving (a canary it names
is rolled back; a protection rule it matches tightens or relaxes protection), and an effect that failed for
good (the release fails, or freezes). Named by core/machine.py's TRANSITIONS. Pure.
"""

from __future__ import annotations

from dataclasses import replace

from functions.core import events as ev
from functions.core.events import Alert, EffectFailure
from functions.core.moves import ignore, rollback
from functions.core.policy import RollbackMode
from functions.core.protection import effective_protection, expire, rule_matches
from functions.core.state import MAX_ALERTS, ActiveAlert, Phase, Release, bounded
from functions.core.tx import Tx


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


def _names_canary(alert: Alert, rel: Release) -> bool:
    labels = alert.labels
    return (
        labels.get("graylane_release") == rel.id
        or labels.get("track") == "canary"
        or labels.get("canary") == "true"
        or (bool(rel.target.version) and labels.get("version") == rel.target.version)
    )


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
