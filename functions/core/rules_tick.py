"""The rules for a tick (the periodic look at a release), one per phase: heal what drifted (routes, flags),
relax protection whose alerts are over, let the guard and the analysis judge the canary, then move on when a
timer fired or a gate's hooks answered. Named by core/machine.py's TRANSITIONS. Pure.
"""

from __future__ import annotations

from functions.core import events as ev
from functions.core.analysis import analysis_due, judge
from functions.core.events import Observation
from functions.core.guard import watch
from functions.core.hooks import GATE_PREFIX, answers, keep_fed, refusals, rollback_asked, with_rollout_hooks
from functions.core.moves import (
    FIRE,
    decide_gate,
    enter_from,
    fail,
    pass_gate,
    pause,
    resume_hook_gate,
    rollback,
)
from functions.core.policy import ApprovalStage, PreviewStage
from functions.core.protection import effective_protection, expire
from functions.core.stages import record_verdict
from functions.core.state import Phase, Release, parse_iso
from functions.core.tx import Tx


def tick_progressing(tx: Tx) -> None:
    _heal_drift(tx)
    _heal_flags(tx)
    _relax(tx)
    if failure := watch(tx):  # the guard: from the canary's first request, whatever startStep says
        return fail(tx, failure)
    _analyse(tx)
    rel = tx.release
    if rel.phase != Phase.PROGRESSING:
        return
    keep_fed(tx)
    stage = tx.stage()
    if isinstance(stage, PreviewStage) and not tx.state.pending:
        tx.record("preview-ready", reason=f"{rel.target.version} deployed to {stage.environment}")
        return enter_from(tx, rel.stage + 1)
    if not tx.timer_fired() or stage is None:
        return
    timer = rel.timer
    assert timer is not None
    done = FIRE[timer.name](tx, stage)
    if done or tx.release.timer != timer:
        tx.record("timer", reason=f"{timer.name} timer", scheduled_at=timer.due)
    if done:
        enter_from(tx, tx.release.stage + 1)


def tick_waiting(tx: Tx) -> None:
    _heal_drift(tx)
    _heal_flags(tx)
    _relax(tx)
    if failure := watch(tx):
        return fail(tx, failure)
    _analyse(tx)
    rel = tx.release
    if rel.phase != Phase.WAITING:
        return
    keep_fed(tx)
    if rel.gate.startswith(GATE_PREFIX):
        return _tick_hook_gate(tx)
    if not tx.timer_fired() or rel.timer is None:
        return
    stage = tx.stage()
    on_timeout = stage.on_timeout if isinstance(stage, ApprovalStage) else "reject"
    tx.record("gate-timeout", reason=f"gate {rel.gate} timed out: {on_timeout}", scheduled_at=rel.timer.due)
    if on_timeout == "approve":
        pass_gate(tx, rel.gate, "timed-out", {})
    else:
        decide_gate(tx, rel.gate, "timed-out")
        rollback(tx, f"gate {rel.gate} timed out", Phase.ABORTED, "aborted", ev.RELEASE_ABORTED)


def tick_held(tx: Tx) -> None:
    _heal_drift(tx)
    _relax(tx)


def tick_inactive(tx: Tx) -> None:
    _heal_drift(tx)
    _relax(tx)


def _heal_drift(tx: Tx) -> None:
    live = tx.obs.routes
    if live is None or live == tx.state.routes:
        return
    if any(e.kind == "set-routes" for e in tx.state.pending):
        return  # a write is still on its way
    tx.effect("set-routes", routes=tx.state.routes)
    tx.record(
        "drift",
        reason=f"live routes {live.stable}/{live.canary} differ from desired "
        f"{tx.state.routes.stable}/{tx.state.routes.canary}: re-applied",
    )


def _heal_flags(tx: Tx) -> None:
    """A flag of this release that reads back otherwise than desired (edited by hand, lost) is written again."""
    live, rel = tx.obs.flags, tx.release
    if live is None or any(e.kind == "set-flag" for e in tx.state.pending):
        return
    for plan in tx.state.flags:
        if plan.release == rel.id and plan.cluster == tx.cluster() and plan not in live:
            tx.effect("set-flag", flag=plan, cluster=plan.cluster)
            tx.record(
                "drift",
                reason=f"flag {plan.key} does not read back as {plan.variant} for {plan.percent}% "
                "of users: re-applied",
            )


def _relax(tx: Tx) -> None:
    """Resolved alerts whose hold-down is over stop tightening protection (whether or not a release runs)."""
    alerts = expire(tx.policy, tx.state.alerts, tx.now)
    if alerts != tx.state.alerts:
        tx.set_state(alerts=alerts)
        tx.protect(effective_protection(tx.policy, tx.state.base_protection, alerts), "alert hold-down over")


def _analyse(tx: Tx) -> None:
    rel, analysis, samples = tx.release, tx.policy.analysis, tx.obs.metrics
    if analysis is None or samples is None or not rel.analysing:
        return
    # one verdict per interval, from measurements taken for this release after its latest verdict: two ticks
    # racing on one app (or a tick retried after a conflict) never count one interval twice
    if not analysis_due(tx.policy, rel, tx.now) or stale_observation(tx.obs, rel):
        return
    verdict = judge(analysis, samples, tx.now_iso, watching=rel.watching, evidence=rel.evidence)
    verdict = with_rollout_hooks(verdict, tx.policy, rel, tx.obs)
    record_verdict(tx, verdict)
    tx.emit(
        ev.ANALYSIS_VERDICT,
        {
            "release": rel.id,
            "app": tx.policy.app,
            "verdict": verdict.verdict,
            "reason": verdict.reason,
            "metrics": ev.verdict_data(verdict.metrics),
        },
        release=False,
    )
    rel = tx.release
    if verdict.verdict == "fail" and rel.failures >= analysis.failure_limit:
        fail(tx, f"analysis failed: {verdict.reason}")
    elif verdict.verdict == "inconclusive" and rel.inconclusive_run >= analysis.inconclusive_limit:
        pause(tx, f"{rel.inconclusive_run} inconclusive verdicts in a row: {verdict.reason}")
    if tx.release.active and (why := rollback_asked(tx.policy, rel, tx.obs)):
        rollback(tx, why, Phase.ROLLED_BACK, "rolled-back", ev.RELEASE_ROLLED_BACK)


def stale_observation(obs: Observation, rel: Release) -> str:
    """Why measured metrics may not be judged for `rel` ("" when they may): measured for another release, or
    before the release's latest verdict (a tick that lost a race to another one still holds them)."""
    if obs.release and obs.release != rel.id:
        return f"measured for release {obs.release}, not {rel.id}"
    if (
        obs.measured_at
        and rel.last_analysis_at
        and parse_iso(obs.measured_at) <= parse_iso(rel.last_analysis_at)
    ):
        return f"measured at {obs.measured_at}, before the latest verdict at {rel.last_analysis_at}"
    return ""


def _tick_hook_gate(tx: Tx) -> None:
    """The hooks of the gate answered (the runner asked them just before this decision): all 2xx resumes the
    release; otherwise a confirm hook holds it (its answer recorded when it changes) and a pre-rollout hook's
    failure counts as a failed check."""
    rel = tx.release
    if tx.obs.hooks is None:
        return  # nobody asked them for this decision
    kind = rel.gate.removeprefix(GATE_PREFIX)
    refused = refusals(tx.policy, kind, answers(tx.obs, kind, rel.hook_point))
    if not refused:
        return resume_hook_gate(tx, f"{kind} hooks answered 2xx")
    summary = "; ".join(refused)
    if kind == "pre-rollout":
        analysis = tx.policy.analysis
        limit = analysis.failure_limit if analysis is not None else 1
        tx.update(failures=rel.failures + 1, hook_answer=summary)
        if tx.release.failures >= limit:
            return fail(tx, f"pre-rollout hook failed: {summary}")
        return tx.record(
            "hook-failed", reason=f"pre-rollout hook failed ({tx.release.failures}/{limit}): {summary}"
        )
    if summary != rel.hook_answer:
        tx.update(hook_answer=summary)
        tx.record("hook-held", reason=f"{kind}: {summary}")
