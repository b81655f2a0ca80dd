"""Tx: one decide() call's transition in progress. decide() builds it, the rules add to it, `result()`
freezes it into the new state, the effects and the events.

Why a mutable object and not plain returns: one event runs several rules in a row (a tick heals drifted
routes, lets the guard and the analysis judge, then may roll back, which ends the release, which tells the
hooks), and each adds effects, events and history entries whose order is the order the runner applies and
publishes them. A Tx collects them, so a rule says `tx.route(plan)`, `tx.emit(...)`, `tx.record(...)`
instead of taking and returning five accumulators.

What it guarantees:
- Its inputs are never mutated: policy, state, event and observation are frozen values; `tx.state` and
  `tx.rel` (the release being decided) are only ever replaced by new values (`set_state`, `update`).
- It is used once: `result()` is called by decide() at the end, and nothing touches the Tx afterwards.
- Nothing changed, nothing written: when no rule changed anything, `result()` gives back the input state
  (the same object) and no effects, so the runner saves nothing (an ignored tick only emits event.ignored;
  an ignored command is still recorded in the history, so it changes the state).
- Effect ids are deterministic (release or policy name / next generation / index-kind), so a redelivered
  event or a decision retried after a conflict produces the same ids and the runner applies nothing twice.
- When the release ends (`set_phase` to an end phase), `result()` puts the finalize-routes effects where it
  ended: after the release's own effects, before the post-rollout hooks and the GitOps write-back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from functions.core import events as ev
from functions.core.effects import STABLE_ONLY, Effect, EffectKind, FlagPlan, Protection, RoutePlan
from functions.core.events import Emitted, Event, Observation
from functions.core.policy import Policy, Stage
from functions.core.slots import Routed
from functions.core.state import (
    MAX_HISTORY,
    MAX_SEEN,
    Actor,
    AppState,
    HistoryEntry,
    Phase,
    Release,
    Timer,
    bounded,
    iso,
    parse_iso,
)

# transitions worth telling people about; each also becomes a notify effect when the policy has notifiers
NOTIFY = frozenset(
    {
        ev.RELEASE_STARTED,
        ev.RELEASE_STEP,
        ev.GATE_WAITING,
        ev.RELEASE_PROMOTED,
        ev.RELEASE_SUCCEEDED,
        ev.RELEASE_ROLLED_BACK,
        ev.RELEASE_FROZEN,
        ev.RELEASE_FAILED,
        ev.RELEASE_PAUSED,
        ev.RELEASE_ABORTED,
        ev.PROTECTION_CHANGED,
    }
)


class Tx:
    """The transition in progress (see the module docstring): inputs, and what the rules have added so far."""

    def __init__(
        self, policy: Policy, state: AppState, event: Event, now: datetime, obs: Observation
    ) -> None:
        self.policy = policy
        self.state = state
        self.event = event
        self.now = now
        self.obs = obs
        self.rel: Release | None = state.release
        self.effects: list[Effect] = []
        self.emitted: list[Emitted] = []
        self.entries: list[HistoryEntry] = []
        self.changed = False
        self.actor: Actor | None = getattr(event, "actor", None)
        self.end_at: int | None = None  # where the release ended, in self.effects (see set_phase)

    # -- time -------------------------------------------------------------------------------
    @property
    def now_iso(self) -> str:
        return iso(self.now)

    def due(self, seconds: float) -> str:
        return iso(self.now + timedelta(seconds=seconds))

    def timer_fired(self) -> bool:
        rel = self.rel
        return rel is not None and rel.timer is not None and parse_iso(rel.timer.due) <= self.now

    def set_timer(self, name: str, seconds: float | None) -> None:
        self.update(timer=None if seconds is None else Timer(name=name, due=self.due(seconds)))

    # -- state --------------------------------------------------------------------------------
    def update(self, **changes: Any) -> Release:
        assert self.rel is not None
        self.rel = replace(self.rel, **changes)
        self.changed = True
        return self.rel

    def set_state(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)
        self.changed = True

    @property
    def release(self) -> Release:
        assert self.rel is not None
        return self.rel

    def stages(self) -> tuple[Stage, ...]:
        return self.policy.stages

    def stage(self) -> Stage | None:
        rel = self.release
        return self.policy.stages[rel.stage] if 0 <= rel.stage < len(self.policy.stages) else None

    def cluster(self, wave: int | None = None) -> str:
        waves = self.policy.waves
        index = self.release.wave if wave is None else wave
        return waves[index].cluster if waves and index < len(waves) else ""

    # -- effects --------------------------------------------------------------------------------
    def effect(self, kind: EffectKind, **fields: Any) -> None:
        owner = self.rel.id if self.rel else self.policy.name
        eid = f"{owner}/{self.state.generation + 1}/{len(self.effects)}-{kind}"
        fields.setdefault("cluster", self.cluster() if self.rel and self.policy.waves else "")
        if self.policy.workload.per_version:
            self._per_version_fields(kind, fields)
        self.effects.append(Effect(id=eid, kind=kind, **fields))
        self.changed = True

    def route(self, plan: RoutePlan, wave: int | None = None, versions: Routed | None = None) -> None:
        """Desire `plan` (per-version model: between `versions`, by default the ones routed now); emits a
        set-routes effect only when it differs from what is desired now."""
        versions = self.state.routed if versions is None else versions
        if (
            plan == self.state.routes
            and versions == self.state.routed
            and not any(e.kind == "set-routes" for e in self.effects)
        ):
            return
        cluster = self.cluster(wave) if self.rel and self.policy.waves else ""
        extra = {"versions": versions} if self.policy.workload.per_version else {}
        self.effect("set-routes", routes=plan, cluster=cluster, **extra)
        self.set_state(routes=plan, routed=versions)

    def _per_version_fields(self, kind: str, fields: dict[str, Any]) -> None:
        """Per-version model: route effects name the subsets they are between, and what copies the stable
        Deployment (a preview, a migration Job) names the stable version's Deployment."""
        if kind in ("set-routes", "set-protection", "finalize-routes"):
            fields.setdefault("versions", self.state.routed)
            if fields["versions"] is not None and fields["versions"].stable is None:
                fields["versions"] = None  # no version adopted yet: nothing to name
        elif kind in ("deploy-preview", "run-migration", "load-test"):
            stable = next((s for s in self.state.slots if s.version == self.state.stable.version), None)
            if stable is not None:
                fields.setdefault("source", stable.workload)

    def stable_only(self) -> None:
        self.route(STABLE_ONLY)

    def flag(self, plan: FlagPlan) -> None:
        """Desire `plan` for its flag (in its cluster's document); a set-flag effect only when it changes."""
        same: Callable[[FlagPlan], bool] = lambda p: p.key == plan.key and p.cluster == plan.cluster  # noqa: E731
        if any(p == plan for p in self.state.flags):
            return
        self.set_state(flags=tuple(p for p in self.state.flags if not same(p)) + (plan,))
        self.effect("set-flag", flag=plan, cluster=plan.cluster)

    def protect(self, protection: Protection, reason: str) -> None:
        if protection == self.state.protection:
            return
        self.set_state(protection=protection)
        self.effect("set-protection", protection=protection)
        data: dict[str, Any] = {
            "app": self.policy.app,
            "reason": reason,
            "alerts": [a.fingerprint for a in self.state.alerts],
        }
        if protection.rate_limit:
            rl = protection.rate_limit
            data["rateLimit"] = {"average": rl.average, "burst": rl.burst, "period": rl.period}
        if protection.circuit_breaker:
            data["circuitBreaker"] = {"expression": protection.circuit_breaker.expression}
        self.emit(ev.PROTECTION_CHANGED, data, release=False)
        self.record("protection", reason=reason)

    # -- events and history --------------------------------------------------------------------
    def emit(self, type_: str, extra: dict[str, Any] | None = None, release: bool = True) -> None:
        data: dict[str, Any] = {}
        if release and self.rel is not None:
            rel = self.rel
            data = {
                "release": rel.id,
                "app": self.policy.app,
                "phase": rel.phase.value,
                "stage": rel.stage,
                "step": rel.step,
                "weight": rel.weight,
                "wave": rel.wave,
                "target": {"version": rel.target.version, "image": rel.target.image},
                "origin": {"version": rel.origin.version, "image": rel.origin.image},
            }
            if self.actor is not None:
                data["by"] = {"user": self.actor.user, "via": self.actor.via, "channel": self.actor.channel}
        data.update(extra or {})
        self.emitted.append(Emitted(type=type_, data=data))
        if type_ in NOTIFY and self.policy.notify:
            self.effect("notify", message=_headline(type_, data), notice={"type": type_, **data})

    def record(self, action: str, reason: str = "", phase_from: str = "", scheduled_at: str = "") -> None:
        rel = self.rel
        self.entries.append(
            HistoryEntry(
                at=self.now_iso,
                event=self.event.type if not scheduled_at else "timer",
                event_id=self.event.id,
                release=rel.id if rel else "",
                action=action,
                phase_from=phase_from,
                phase_to=rel.phase.value if rel else "",
                stage=rel.stage if rel else -1,
                step=rel.step if rel else -1,
                weight=rel.weight if rel else None,
                by=self.actor,
                reason=reason,
                scheduled_at=scheduled_at,
            )
        )
        self.changed = True

    def set_phase(self, phase: Phase, action: str, reason: str = "", event_type: str = "") -> None:
        before = self.release.phase.value
        self.update(phase=phase)
        if phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.SUPERSEDED, Phase.FAILED):
            self.update(ended_at=self.now_iso, reason=reason, timer=None, gate="", analysing=False)
        elif reason:
            self.update(reason=reason)
        self.record(action, reason=reason, phase_from=before)
        if event_type:
            self.emit(event_type, {"reason": reason} if reason else None)
        if phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.SUPERSEDED, Phase.FAILED):
            from functions.core.baseline import remove as remove_baseline
            from functions.core.hooks import release_ended  # post-rollout hooks and the GitOps write-back

            remove_baseline(self)  # an ended release's baseline goes (its callers removed it already)
            self.end_at = len(self.effects)  # result() puts finalize-routes here: before the hooks are told
            release_ended(self, phase, reason)

    # -- result ----------------------------------------------------------------------------------
    def result(self) -> tuple[AppState, tuple[Effect, ...], tuple[Emitted, ...]]:
        end_at = self.end_at
        if end_at is not None and not any(e.kind == "finalize-routes" for e in self.effects):
            # every cluster the release routed in (wave 0..its wave), after its own effects (traffic back on
            # stable) and before the post-rollout hooks and the GitOps write-back are told it ended
            before = len(self.effects)
            waves = range(self.release.wave + 1) if self.policy.waves else range(1)
            for wave in waves:
                self.effect("finalize-routes", cluster=self.cluster(wave) if self.policy.waves else "")
            added = self.effects[before:]
            self.effects[before:] = []
            self.effects[end_at:end_at] = added
        if not self.changed:
            return self.state, (), tuple(self.emitted)
        state = replace(
            self.state,
            release=self.rel,
            pending=self.state.pending + tuple(self.effects),
            history=bounded(self.state.history + tuple(self.entries), MAX_HISTORY),
            seen=bounded(self.state.seen + (self.event.id,), MAX_SEEN),
            generation=self.state.generation + 1,
        )
        return state, tuple(self.effects), tuple(self.emitted)


def _headline(type_: str, data: dict[str, Any]) -> str:
    what = type_.removeprefix(f"{ev.PREFIX}.").replace(".", " ")
    target = data.get("target", {}).get("version", "")
    app = data.get("app", "")
    weight = data.get("weight")
    tail = f" at {weight}%" if weight else ""
    reason = f": {data['reason']}" if data.get("reason") else ""
    return f"{app} {target} {what}{tail}{reason}".strip()
