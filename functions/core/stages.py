"""Stage rules: what entering a stage does, and what its timer does when it fires.

Each rule returns True when its stage is complete (the machine then enters the next stage at once).
ENTER (stage kind -> rule) and FIRE (timer -> rule) below name them, merged with flag_stage.py's in
moves.py; nothing else branches on the stage kind.
"""

from __future__ import annotations

from collections.abc import Callable

from functions.core import baseline, per_version
from functions.core import events as ev
from functions.core.analysis import watch_checks
from functions.core.autoscale import follow_share, grows
from functions.core.counters import Evidence
from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.exposure import active as exposure_active
from functions.core.exposure import allowed
from functions.core.hooks import held, keep_fed, record_in_git, start_load
from functions.core.policy import (
    ABTestStage,
    ApprovalStage,
    BlueGreenStage,
    CanaryStage,
    Match,
    MirrorStage,
    PreviewStage,
    PromoteStage,
    ProtectStage,
    SessionAffinity,
    Stage,
)
from functions.core.protection import effective_protection
from functions.core.state import MAX_VERDICTS, Phase, bounded
from functions.core.tx import Tx

StageRule = Callable[[Tx, Stage], bool]


def ensure_canary(tx: Tx) -> None:
    rel = tx.release
    if not rel.canary_deployed and rel.target_slot is not None:
        per_version.deploy_target(tx)  # the target version's own Deployment and subset
    elif not rel.canary_deployed:
        tx.effect("deploy-canary", image=rel.target.image, version=rel.target.version)
        # the counters as read before the canary's first request are the guard's baseline (guard.wants_totals)
        totals = tx.obs.totals
        evidence = (
            Evidence(wave=rel.wave, base=totals, at=tx.now_iso) if totals and totals.status == "ok" else None
        )
        tx.update(canary_deployed=True, canary_share="", evidence=evidence)
        baseline.deploy(tx)  # a fresh baseline beside it, when the policy asks for one


def set_weight(tx: Tx, weight: int, reason: str, planned: int = 0) -> None:
    """Route `weight` to the canary. `planned`: the step weight it is a capped form of (0: not capped, e.g. a
    human's weight command, an A/B test or a blue-green switch)."""
    rel = tx.release
    before = rel.weight
    tx.update(weight=weight, planned_weight=planned)
    salt = rel.id if any(m.kind == "user-hash" and not m.salt for m in rel.match) else ""
    share = (
        None if rel.match and weight < 100 else weight
    )  # a match route's share is unknown; 100 is everyone
    first = grows(rel.canary_share, share)  # a canary about to carry more is sized for it first
    if first:
        follow_share(tx, share)
    plan = baseline.plan(tx.policy, rel, weight, rel.match, salt)
    tx.update(baseline_weight=plan.baseline)
    tx.route(plan)
    if not first:
        follow_share(tx, share)
    if plan.baseline:
        reason = f"{reason} (baseline {plan.baseline}%, stable {plan.stable}%)"
    tx.record("weight", reason=reason + affinity_note(tx.policy.session_affinity, before, weight))


def affinity_note(affinity: SessionAffinity | None, before: int, weight: int) -> str:
    """What a weight change does to pinned clients (spec.sessionAffinity), for the history and the status."""
    if affinity is None or before == weight:
        return ""
    if 0 < weight < 100:
        return f"; session affinity: every client drawn afresh at {weight} % and pinned by its cookie ({affinity.cookie})"
    return f"; session affinity: off at {weight} % (every client goes {'to the canary' if weight else 'to stable'})"


def set_planned(tx: Tx, planned: int, reason: str) -> None:
    """Route the weight a step plans, capped by adaptive exposure (the cap and its reason are recorded)."""
    rel = tx.release
    weight = allowed(tx.policy, rel.evidence, planned)
    if weight < planned:
        why = (
            rel.evidence.cap_reason
            if rel.evidence is not None and rel.evidence.cap
            else (f"probe weight {weight}%: no evidence about the canary yet")
        )
        reason = f"{reason}: {weight}% of the planned {planned}% ({why})"
    set_weight(tx, weight, reason, planned)


# a capped weight moves only by at least this factor (or to the planned weight): fewer route writes
EXPOSURE_STEP = 1.25


def follow_exposure(tx: Tx) -> None:
    """After new evidence, move the weight of a planned step to what the exposure cap now allows."""
    rel = tx.release
    if not exposure_active(tx.policy) or rel.planned_weight <= 0:
        return
    target = allowed(tx.policy, rel.evidence, rel.planned_weight)
    current = rel.weight
    if target == current:
        return
    if target > current and target != rel.planned_weight and target < current * EXPOSURE_STEP:
        return
    if target < current and target * EXPOSURE_STEP > current:
        return
    why = rel.evidence.cap_reason if rel.evidence is not None else ""
    if target == rel.planned_weight:
        why = f"the planned {target}%: {why}" if why else f"the planned {target}%"
    reason = f"exposure: {current}% -> {target}% ({why})"
    set_weight(tx, target, reason, rel.planned_weight)
    tx.emit(ev.WEIGHT_CHANGED, {"reason": reason[:2048], "plannedWeight": rel.planned_weight})


def analysis_allows(tx: Tx) -> bool:
    """Inconclusive never promotes: an analysed step moves on only after its latest verdict passed."""
    rel = tx.release
    if not rel.analysing:
        return True
    return rel.passes_in_step > 0 and bool(rel.verdicts) and rel.verdicts[-1].verdict == "pass"


def _analysed(tx: Tx, wanted: bool) -> bool:
    """A stage asks for analysis; without an analysis in the policy there is no verdict to wait for."""
    return wanted and tx.policy.analysis is not None


# -- entering ---------------------------------------------------------------------------------------


def enter_preview(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, PreviewStage)
    rel = tx.release
    if rel.wave > 0:
        return True  # the preview environment is shared by all waves
    if stage.migration:
        m = stage.migration
        tx.effect(
            "run-migration",
            job=f"{m.name}-{rel.id}",
            image=m.image or rel.target.image,
            command=m.command,
            version=rel.target.version,
        )
    tx.effect(
        "deploy-preview",
        image=rel.target.image,
        version=rel.target.version,
        environment=stage.environment,
        namespace=stage.namespace,
        workload=stage.workload,
    )
    return False  # complete once its effects are applied (see tick_preview)


def enter_approval(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, ApprovalStage)
    wait_at_gate(tx, stage.name, tx.release.stage + 1, stage.timeout)
    return False


def wait_at_gate(tx: Tx, gate: str, next_stage: int, timeout: float | None) -> None:
    tx.update(gate=gate, gate_next=next_stage)
    tx.set_timer("gate-timeout", timeout)
    tx.set_phase(Phase.WAITING, "gate-waiting", reason=f"waiting for approval at gate {gate}")
    tx.emit(ev.GATE_WAITING, {"gate": gate})


def enter_abtest(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, ABTestStage)
    ensure_canary(tx)
    tx.update(match=stage.match, analysing=_analysed(tx, stage.analysis), passes_in_step=0)
    set_weight(tx, 0, "A/B test: matching requests go to the canary")
    keep_fed(tx)
    tx.set_timer("stage", stage.duration or None)
    return False


def enter_mirror(tx: Tx, stage: Stage) -> bool:
    """Copies of `percent` % of the live requests reach the canary, whose answers are discarded: every client
    is answered by the stable (weight 0), and the analysis judges the canary on the copies."""
    assert isinstance(stage, MirrorStage)
    ensure_canary(tx)
    tx.update(match=(), weight=0, planned_weight=0, analysing=_analysed(tx, stage.analysis), passes_in_step=0)
    follow_share(tx, stage.percent)  # the canary serves the copies: sized for that share before they come
    tx.route(RoutePlan.mirrored(stage.percent))
    tx.record(
        "weight",
        reason=f"mirror: {stage.percent}% of the live requests copied to the canary, its answers "
        "discarded (every client is answered by the stable)",
    )
    keep_fed(tx)
    tx.set_timer("stage", stage.duration or None)
    return False


def enter_canary(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, CanaryStage)
    ensure_canary(tx)
    tx.update(match=(), passes_in_step=0)
    if stage.mode == "steps":
        return _canary_step(tx, stage, 0)
    if stage.mode == "linear":
        assert stage.linear is not None
        tx.update(analysing=_analysed(tx, stage.analysis))
        set_planned(tx, stage.linear.start, "linear schedule starts")
        tx.set_timer("linear", stage.linear.every)
        keep_fed(tx)
        return False
    weight = tx.release.params.get(stage.weight_param, stage.weight)
    tx.update(analysing=_analysed(tx, stage.analysis))
    # the weight a gate's approver chose is a human's weight, like a `weight` command: the guard watches it,
    # adaptive exposure does not cap it (seed 000: the product owner picks the canary's share at the gate)
    set_weight(tx, int(weight or 0), f"manual weight ({stage.weight_param})")
    keep_fed(tx)
    if stage.hold > 0:
        tx.set_timer("stage", stage.hold)
        return False
    return True


def _canary_step(tx: Tx, stage: CanaryStage, step: int) -> bool:
    if step >= len(stage.steps):
        return True
    analysis = tx.policy.analysis
    analysing = stage.analysis and analysis is not None and step + 1 >= analysis.start_step
    tx.update(step=step, step_started_at=tx.now_iso, passes_in_step=0, analysing=analysing)
    set_planned(tx, stage.steps[step].weight, f"step {step + 1}/{len(stage.steps)}")
    tx.set_timer("step", stage.steps[step].pause)
    keep_fed(tx)
    if step > 0:
        tx.emit(ev.RELEASE_STEP)
    return False


def enter_bluegreen(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, BlueGreenStage)
    ensure_canary(tx)
    rel, traffic = tx.release, stage.preview_traffic
    # users stay on blue; with previewTraffic, requests carrying `<header>: <release id>` reach green, so the
    # analysis measures green on real requests (the load test's, or a test client's) before the switch
    match = (Match(kind="header", name=traffic.header, value=rel.id),) if traffic is not None else ()
    tx.update(match=match, analysing=_analysed(tx, stage.analysis), passes_in_step=0)
    reached = f"; requests with {traffic.header}: {rel.id} reach it" if traffic is not None else ""
    set_weight(tx, 0, f"blue-green: green deployed, no user traffic yet{reached}")
    if traffic is not None and traffic.load_test is not None:  # the preview's own load test, once
        load = traffic.load_test
        start_load(
            tx,
            load,
            load.duration or stage.preview,
            {traffic.header: rel.id},
            f"{rel.id}-preview" + (f"-{rel.wave}" if rel.wave else ""),
        )
    else:  # or the load hook's, sending the preview header when there is one
        keep_fed(tx)
    tx.set_timer("stage", stage.preview)
    return False


def enter_promote(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, PromoteStage)
    rel = tx.release
    if rel.target_slot is not None:
        return per_version.promote(tx, stage)  # a switch of the route to the target's subset
    # the stable workload must run the new version before traffic moves back to it
    tx.effect("promote-stable", image=rel.target.image, version=rel.target.version)
    tx.update(match=(), weight=0)
    tx.route(STABLE_ONLY)
    baseline.remove(tx)  # out of the route with the canary: its Deployment and Service go
    earlier = tuple(v for v in tx.state.revisions if v != rel.origin)
    revisions = ((rel.origin,) + earlier if rel.origin.image else earlier)[: tx.policy.revision_history]
    tx.set_state(stable=rel.target, revisions=revisions)
    tx.update(promoted=True)
    tx.record("promoted", reason=f"{rel.target.version} is now stable")
    tx.emit(ev.RELEASE_PROMOTED)
    if rel.wave + 1 >= len(tx.policy.waves):  # every cluster runs it now: Git may say so
        record_in_git(tx, "promotion", rel.target, f"{rel.id} promoted")
    if stage.keep_previous > 0 and rel.origin.image:
        tx.effect("keep-warm", image=rel.origin.image, version=rel.origin.version)
        follow_share(tx, 100)  # the warm previous version can take all traffic back at once
        tx.set_state(warm=rel.origin, warm_until=tx.due(stage.keep_previous))
        analysis = tx.policy.analysis
        tx.update(
            watching=True, analysing=analysis is not None and bool(watch_checks(analysis)), passes_in_step=0
        )
        tx.set_timer("watch", stage.keep_previous)
        return False
    tx.effect("scale-down-canary")
    tx.update(canary_deployed=False, analysing=False)
    return True


def enter_protect(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, ProtectStage)
    from functions.core.effects import Protection

    base = Protection(rate_limit=stage.rate_limit, circuit_breaker=stage.circuit_breaker)
    tx.set_state(base_protection=base)
    tx.protect(effective_protection(tx.policy, base, tx.state.alerts), "protect stage")
    return True


ENTER: dict[type, StageRule] = {
    PreviewStage: enter_preview,
    ApprovalStage: enter_approval,
    ABTestStage: enter_abtest,
    MirrorStage: enter_mirror,
    CanaryStage: enter_canary,
    BlueGreenStage: enter_bluegreen,
    PromoteStage: enter_promote,
    ProtectStage: enter_protect,
}


# -- timers ---------------------------------------------------------------------------------------


def fire_step(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, CanaryStage)
    if not analysis_allows(tx):
        return False
    step = tx.release.step + 1
    if step < len(stage.steps) and raising(tx, "step", stage.steps[step].weight):
        return False
    return _canary_step(tx, stage, step)


def raising(tx: Tx, timer: str, to: int) -> bool:
    """Held by confirm-traffic-increase hooks before a timed step raises the weight (resuming `timer`'s rule).
    `to` is the step's planned weight: it raises when it plans more than the current step planned (or routes,
    when it was not capped); adaptive exposure moving the routed weight up to a confirmed plan asks no hook."""
    rel = tx.release
    return to > max(rel.weight, rel.planned_weight) and held(tx, "confirm-traffic-increase", f"fire:{timer}")


def next_step(tx: Tx, stage: Stage) -> bool:
    """A human moves an open-ended step or stage on (no timer to wait for); True when the stage is done."""
    if isinstance(stage, CanaryStage) and stage.mode == "steps":
        return _canary_step(tx, stage, tx.release.step + 1)
    if isinstance(stage, BlueGreenStage):
        set_weight(tx, 100, "blue-green switch")
    return True


def fire_linear(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, CanaryStage) and stage.linear is not None
    if not analysis_allows(tx):
        return False
    rel = tx.release
    planned = rel.planned_weight or rel.weight
    if planned >= stage.linear.end:
        return True
    weight = min(stage.linear.end, planned + stage.linear.increment)
    if raising(tx, "linear", weight):
        return False
    tx.update(step=rel.step + 1, step_started_at=tx.now_iso, passes_in_step=0)
    set_planned(tx, weight, "linear schedule")
    tx.set_timer("linear", stage.linear.every)
    tx.emit(ev.RELEASE_STEP)
    return False


def fire_stage(tx: Tx, stage: Stage) -> bool:
    """End of an A/B test, a manual hold, or a blue-green preview."""
    if not analysis_allows(tx):
        return False
    if isinstance(stage, BlueGreenStage):
        set_weight(tx, 100, "blue-green switch")
    return True


def fire_watch(tx: Tx, stage: Stage) -> bool:
    if not analysis_allows(tx) and tx.release.verdicts:
        return False  # a watch with analysis needs a passing verdict before the previous version goes
    if tx.release.target_slot is not None:
        per_version.end_watch(tx)  # the previous version's Deployment leaves the route and scales down
    else:
        tx.effect("scale-down-canary")
    tx.set_state(warm=None, warm_until="")
    tx.update(watching=False, analysing=False, canary_deployed=False)
    return True


FIRE: dict[str, StageRule] = {
    "step": fire_step,
    "linear": fire_linear,
    "stage": fire_stage,
    "watch": fire_watch,
}


def record_verdict(tx: Tx, verdict: object) -> None:
    from functions.core.state import VerdictRecord

    assert isinstance(verdict, VerdictRecord)
    rel = tx.release
    tx.update(
        verdicts=bounded(rel.verdicts + (verdict,), MAX_VERDICTS),
        last_analysis_at=tx.now_iso,
        passes_in_step=rel.passes_in_step + (verdict.verdict == "pass"),
        failures=rel.failures + (verdict.verdict == "fail"),
        inconclusive_run=rel.inconclusive_run + 1 if verdict.verdict == "inconclusive" else 0,
    )
