"""The rules for a human's command (chat, console, CLI, API): approve or reject a gate, set a weight, promote,
pause, resume, abort and roll back. Each is a `cmd_*` named by core/machine.py's TRANSITIONS for the phases
that take it; decide() has already checked that the command is for the current release. Pure.
"""

from __future__ import annotations

from functions.core import events as ev
from functions.core import per_version
from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import Command
from functions.core.flag_stage import everyone, flags_off, set_percent
from functions.core.flag_stage import next_step as flag_next_step
from functions.core.gates import promote_target, skipped_by_promote
from functions.core.hooks import GATE_PREFIX
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
from functions.core.policy import ApprovalStage, FlagStage, PreviewStage
from functions.core.stages import analysis_allows, next_step, set_weight
from functions.core.state import Phase, Timer, Version, parse_iso
from functions.core.tx import Tx


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
    _to_revision(tx, target, after_release=rel is not None)


def _to_revision(tx: Tx, target: Version, after_release: bool) -> None:
    """No release is active: a release of kind rollback makes `target`, a previous version, stable at once
    (a switch of traffic when it still runs warm in the canary workload; its own Deployment, per-version)."""
    state = tx.state
    warm = state.warm == target and state.warm_until and parse_iso(state.warm_until) > tx.now
    if after_release:
        flags_off(tx)  # what the release being rolled back from turned on
    start(tx, target, kind="rollback")
    if per_version.active(tx.policy):
        per_version.roll_back_to(
            tx, tx.release.origin_slot
        )  # its own Deployment runs; the stable's scales down
    else:
        if warm:
            tx.route(RoutePlan.canary_at(100))  # the previous version is still running: switch at once
        tx.effect("promote-stable", image=target.image, version=target.version)
        tx.route(STABLE_ONLY)
        if warm:
            tx.effect("scale-down-canary")
    revisions = (state.stable,) + tuple(v for v in state.revisions if v != target)
    tx.set_state(stable=target, revisions=revisions[: tx.policy.revision_history], warm=None, warm_until="")
    why = f"rolled back to {target.version} by {_who(tx)}" + (" (warm)" if warm else "")
    tx.set_phase(Phase.ROLLED_BACK, "rolled-back", why, ev.RELEASE_ROLLED_BACK)


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
            return f"gate {tx.release.gate} needs parameter {p.name} ({p.min}..{p.max})"
        if not p.min <= value <= p.max:
            return f"parameter {p.name}={value} is not allowed; expected {p.min}..{p.max}"
        out[p.name] = int(value)
    return out
