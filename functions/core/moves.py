"""The moves the machine's rules share: start a release, enter stages (and the ones after them that complete at
once), finish a wave, decide and pass gates, fail, roll back, pause, and ignore an out-of-place event.

Each takes the transition in progress (a Tx, see core/tx.py) and adds to it; none is a rule of the table
itself (core/machine.py's TRANSITIONS names the rules, in rules_*.py). Pure.
"""

from __future__ import annotations

from functions.core import events as ev
from functions.core import per_version
from functions.core.baseline import remove as remove_baseline
from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import Command
from functions.core.flag_stage import ENTER as FLAG_ENTER
from functions.core.flag_stage import FIRE as FLAG_FIRE
from functions.core.flag_stage import flags_off
from functions.core.hooks import held, passed, url_hooks
from functions.core.policy import (
    ABTestStage,
    BlueGreenStage,
    CanaryStage,
    FlagStage,
    MirrorStage,
    PromoteStage,
    RollbackMode,
)
from functions.core.stages import ENTER as STAGE_ENTER
from functions.core.stages import FIRE as STAGE_FIRE
from functions.core.stages import StageRule, ensure_canary, wait_at_gate
from functions.core.state import Actor, GateDecision, Phase, Release, Version, parse_iso
from functions.core.tx import Tx

ENTER: dict[type, StageRule] = {**STAGE_ENTER, **FLAG_ENTER}  # stage kind -> entering it
FIRE = {**STAGE_FIRE, **FLAG_FIRE}  # timer name -> what its firing does to the stage
TRAFFIC_STAGES = (ABTestStage, CanaryStage, BlueGreenStage, FlagStage, MirrorStage)


def ignore(tx: Tx, reason: str) -> None:
    """Out of place: state unchanged; a command is still audited in the history."""
    event = tx.event
    phase = tx.rel.phase.value if tx.rel else "none"
    if isinstance(event, Command):
        tx.record("ignored", reason=f"{event.action}: {reason}")
        actor = {"user": event.actor.user, "via": event.actor.via}
        if event.actor.channel:
            actor["channel"] = event.actor.channel
        data = {"app": tx.policy.app, "action": event.action, "actor": actor, "reason": reason}
        if event.release:  # the release the command was for (not necessarily the current one)
            data["release"] = event.release
        tx.emit(ev.COMMAND_REJECTED, data, release=False)
    else:
        tx.emit(
            ev.EVENT_IGNORED,
            {
                "app": tx.policy.app,
                "eventType": event.type,
                "eventId": event.id,
                "phase": phase,
                "reason": reason,
            },
            release=False,
        )


def start(tx: Tx, target: Version, kind: str) -> None:
    seq = tx.state.seq + 1
    tx.set_state(seq=seq)
    tx.rel = Release(
        id=f"{tx.policy.name}-{seq}",
        seq=seq,
        target=target,
        origin=tx.state.stable,
        started_at=tx.now_iso,
        kind=kind,
        stage_started_at=tx.now_iso,
    )
    tx.changed = True
    if per_version.active(tx.policy):
        per_version.begin(tx)
    tx.record("started", reason=f"{kind} {tx.state.stable.version or '-'} -> {target.version}")
    tx.emit(ev.RELEASE_STARTED)


def per_version_refusal(tx: Tx, target: Version) -> str:
    why = per_version.refusal(tx, target)
    return f"per-version model: {why}" if why else ""


def enter_from(tx: Tx, index: int) -> None:
    """Enter stage `index`, and the ones after it while they complete at once."""
    stages = tx.policy.stages
    while index < len(stages):
        stage = stages[index]
        tx.update(
            stage=index,
            step=0,
            stage_started_at=tx.now_iso,
            step_started_at=tx.now_iso,
            timer=None,
            gate="",
            gate_next=-1,
            passes_in_step=0,
        )
        if tx.release.phase != Phase.PROGRESSING:
            tx.set_phase(Phase.PROGRESSING, "progressing")
        if _held_by_hooks(tx, stage, index):
            return
        tx.record("stage", reason=f"entered {stage.kind} stage {index + 1}/{len(stages)}")
        tx.emit(ev.RELEASE_STAGE, {"stageKind": stage.kind})
        if not ENTER[type(stage)](tx, stage):
            return
        index += 1
    _finish_wave(tx)


def _held_by_hooks(tx: Tx, stage: object, index: int) -> bool:
    """Hooks asked before a stage: confirm-promotion before the promote stage, pre-rollout before a wave's
    first traffic stage routes anything (its canary is deployed first, so the hook can look at it)."""
    if isinstance(stage, PromoteStage):
        return held(tx, "confirm-promotion", f"enter:{index}")
    first = next((i for i, s in enumerate(tx.policy.stages) if isinstance(s, TRAFFIC_STAGES)), -1)
    if index != first or not url_hooks(tx.policy, "pre-rollout"):
        return False
    if not isinstance(stage, FlagStage):
        ensure_canary(tx)
    return held(tx, "pre-rollout", f"enter:{index}")


def _finish_wave(tx: Tx) -> None:
    rel, waves = tx.release, tx.policy.waves
    if rel.wave + 1 < len(waves):
        nxt = rel.wave + 1
        tx.update(wave=nxt, promoted=False, canary_deployed=False, watching=False, weight=0, match=())
        tx.set_state(routes=STABLE_ONLY)  # the next cluster's route still sends everything to its stable
        tx.record("wave", reason=f"wave {waves[nxt].name} ({nxt + 1}/{len(waves)})")
        if waves[nxt].approval:
            tx.update(stage=0)
            return wait_at_gate(tx, f"wave-{waves[nxt].name}", 0, None)
        return enter_from(tx, 0)
    tx.set_phase(Phase.SUCCEEDED, "succeeded", f"{rel.target.version} fully released", ev.RELEASE_SUCCEEDED)


def decide_gate(tx: Tx, gate: str, decision: str, params: dict[str, int] | None = None) -> None:
    rel = tx.release
    record = GateDecision(
        gate=gate, decision=decision, at=tx.now_iso, params=dict(params or {}), by=tx.actor or Actor()
    )
    tx.update(gates=rel.gates + (record,))
    tx.emit(ev.GATE_DECIDED, {"gate": gate, "decision": decision, "params": dict(params or {})})


def pass_gate(tx: Tx, gate: str, decision: str, params: dict[str, int]) -> None:
    rel = tx.release
    tx.update(params={**rel.params, **params})
    decide_gate(tx, gate, decision, params)
    tx.record(decision, reason=f"gate {gate} {decision}" + (f" with {params}" if params else ""))
    enter_from(tx, rel.gate_next if rel.gate_next >= 0 else rel.stage + 1)


def resume_hook_gate(tx: Tx, reason: str) -> None:
    """The gate's hooks said yes (or a human approved the gate): mark its point passed and go on from where the
    release was held: enter the stage, or take the step the timer wanted."""
    rel = tx.release
    gate, resume = rel.gate, rel.hook_resume
    tx.update(hook_passed=passed(rel), gate="", gate_next=-1, hook_point="", hook_resume="", hook_answer="")
    decide_gate(tx, gate, "approved")
    tx.set_phase(Phase.PROGRESSING, "approved", f"gate {gate}: {reason}")
    what, _, arg = resume.partition(":")
    if what == "enter":
        return enter_from(tx, int(arg))
    stage = tx.stage()
    if what == "fire" and stage is not None and FIRE[arg](tx, stage):
        enter_from(tx, tx.release.stage + 1)


def fail(tx: Tx, reason: str) -> None:
    mode = tx.policy.rollback
    if mode is RollbackMode.ROLLBACK:
        return rollback(tx, reason, Phase.ROLLED_BACK, "rolled-back", ev.RELEASE_ROLLED_BACK)
    tx.update(timer=None)
    if mode is RollbackMode.ROLL_FORWARD:
        flags_off(tx)
        tx.stable_only()
        tx.update(weight=0, match=())
        reason += " (roll-forward: traffic on stable, waiting for a fixed image)"
    tx.set_phase(Phase.FROZEN, "frozen", reason, ev.RELEASE_FROZEN)


def rollback(tx: Tx, reason: str, phase: Phase, action: str, event_type: str) -> None:
    """Traffic returns to the previous version first; only then are workloads changed."""
    flags_off(tx)  # a flag's variant goes off first: it is the quickest way back for its users
    rel, state = tx.release, tx.state
    origin = rel.origin
    if per_version.active(tx.policy) and rel.target_slot is not None:
        per_version.roll_back(tx)  # routes back to the origin's subset, scales the target's Deployment down
    elif rel.promoted:
        if rel.watching and state.warm == origin:
            tx.route(RoutePlan.canary_at(100))  # the warm previous version takes traffic at once
        tx.effect("promote-stable", image=origin.image, version=origin.version)
        tx.route(STABLE_ONLY)
    else:
        tx.stable_only()
    if rel.promoted or rel.wave > 0:  # stable moved to the target in this wave or an earlier one
        revisions = tuple(v for v in state.revisions if v != origin)
        tx.set_state(stable=origin, revisions=revisions, warm=None, warm_until="")
    if (rel.canary_deployed or rel.promoted) and rel.target_slot is None:
        tx.effect("scale-down-canary")
    remove_baseline(tx)  # traffic left it above: its Deployment and Service go
    for wave in range(rel.wave):  # earlier waves were promoted: return them too
        tx.effect("promote-stable", image=origin.image, version=origin.version, cluster=tx.cluster(wave))
    tx.update(weight=0, match=(), canary_deployed=False, watching=False, promoted=False)
    tx.set_phase(phase, action, reason, event_type)


def pause(tx: Tx, reason: str) -> None:
    rel = tx.release
    left = None
    if rel.timer is not None:
        left = max(0.0, (parse_iso(rel.timer.due) - tx.now).total_seconds())
    tx.update(paused_from=rel.phase.value, paused_timer_left=left)
    tx.set_phase(Phase.PAUSED, "paused", reason, ev.RELEASE_PAUSED)
