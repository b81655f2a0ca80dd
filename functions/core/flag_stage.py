"""The flag stage: a feature flag's variant rolled out to a share of users, instead of traffic to a canary. Pure.

Its percentage moves like a canary's weight (steps with pauses, a manual percentage from a gate or a `weight`
command, a linear schedule), under the same analysis (the app's metrics by variant), confirm-traffic-increase
hooks and rollback: `flags_off` turns the release's flags off as the first effect of the decision that rolls
back. The exposure is a `FlagPlan` in the state; a `set-flag` effect writes it (flagd's format) wherever
spec.flags says. The stage runs after the promote stage, where the stable workload runs the code behind the
flag; a flag already serving its variant to everyone (an earlier release rolled it out) completes at once.
"""

from __future__ import annotations

from dataclasses import replace

from functions.core import events as ev
from functions.core.effects import FlagPlan
from functions.core.policy import FlagStage, Stage
from functions.core.stages import StageRule, analysis_allows, raising
from functions.core.tx import Tx


def current(tx: Tx, key: str) -> FlagPlan | None:
    cluster = tx.cluster()
    return next((p for p in tx.state.flags if p.key == key and p.cluster == cluster), None)


def set_percent(tx: Tx, stage: FlagStage, percent: int, reason: str) -> None:
    rel = tx.release
    tx.update(weight=percent)
    tx.flag(
        FlagPlan(
            key=stage.key,
            variant=stage.variant,
            off=stage.off,
            percent=percent,
            salt=stage.salt or rel.id,
            release=rel.id,
            cluster=tx.cluster(),
            variants=stage.variants,
        )
    )
    tx.record("weight", reason=f"flag {stage.key}: {stage.variant} for {percent}% of users ({reason})")


def flags_off(tx: Tx, below: int = 101) -> None:
    """Every flag this release turned on (below `below` %) serves its off variant again: the way back."""
    rel = tx.release
    for plan in tx.state.flags:
        if plan.release == rel.id and 0 < plan.percent < below:
            tx.flag(replace(plan, percent=0))
            tx.record("flag-off", reason=f"flag {plan.key}: {plan.off} for every user again")


def _analysed(tx: Tx, stage: FlagStage, step: int = 0) -> bool:
    analysis = tx.policy.analysis
    return stage.analysis and analysis is not None and step + 1 >= analysis.start_step


def enter_flag(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, FlagStage)
    plan = current(tx, stage.key)
    if (
        plan is not None
        and plan.percent == 100
        and plan.variant == stage.variant
        and plan.release != tx.release.id
    ):
        tx.record(
            "flag",
            reason=f"flag {stage.key} already serves {stage.variant} to every user "
            f"(since release {plan.release})",
        )
        return True
    tx.update(match=(), passes_in_step=0)
    if stage.mode == "steps":
        return _step(tx, stage, 0)
    if stage.mode == "linear":
        assert stage.linear is not None
        tx.update(analysing=_analysed(tx, stage))
        set_percent(tx, stage, stage.linear.start, "linear schedule starts")
        tx.set_timer("flag-linear", stage.linear.every)
        return False
    percent = tx.release.params.get(stage.weight_param, stage.weight)
    tx.update(analysing=_analysed(tx, stage))
    set_percent(tx, stage, int(percent or 0), f"manual percentage ({stage.weight_param})")
    if stage.hold > 0:
        tx.set_timer("flag-hold", stage.hold)
        return False
    return True


def _step(tx: Tx, stage: FlagStage, step: int) -> bool:
    if step >= len(stage.steps):
        return True
    tx.update(step=step, step_started_at=tx.now_iso, passes_in_step=0, analysing=_analysed(tx, stage, step))
    set_percent(tx, stage, stage.steps[step].weight, f"step {step + 1}/{len(stage.steps)}")
    tx.set_timer("flag-step", stage.steps[step].pause)
    if step > 0:
        tx.emit(ev.RELEASE_STEP)
    return False


def fire_step(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, FlagStage)
    if not analysis_allows(tx):
        return False
    step = tx.release.step + 1
    if step < len(stage.steps) and raising(tx, "flag-step", stage.steps[step].weight):
        return False
    return _step(tx, stage, step)


def fire_linear(tx: Tx, stage: Stage) -> bool:
    assert isinstance(stage, FlagStage) and stage.linear is not None
    if not analysis_allows(tx):
        return False
    rel = tx.release
    if rel.weight >= stage.linear.end:
        return True
    percent = min(stage.linear.end, rel.weight + stage.linear.increment)
    if raising(tx, "flag-linear", percent):
        return False
    tx.update(step=rel.step + 1, step_started_at=tx.now_iso, passes_in_step=0)
    set_percent(tx, stage, percent, "linear schedule")
    tx.set_timer("flag-linear", stage.linear.every)
    tx.emit(ev.RELEASE_STEP)
    return False


def fire_hold(tx: Tx, stage: Stage) -> bool:
    return analysis_allows(tx)


def next_step(tx: Tx, stage: FlagStage) -> bool:
    """A human moves an open-ended step on; True when the stage is done."""
    if stage.mode == "steps":
        return _step(tx, stage, tx.release.step + 1)
    return True


def everyone(tx: Tx, stage: FlagStage, who: str) -> None:
    """`promote` during a flag stage: the variant for every user, and the stage is done."""
    set_percent(tx, stage, 100, f"promoted by {who}")


ENTER: dict[type, StageRule] = {FlagStage: enter_flag}
FIRE = {"flag-step": fire_step, "flag-linear": fire_linear, "flag-hold": fire_hold}
