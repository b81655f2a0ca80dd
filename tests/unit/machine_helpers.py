"""Builders for decide() tests: policies built straight from the dataclasses, events, observations, and a
`Driver` that plays the runner (decide, then apply: the runner clears `pending` once effects are applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.core.effects import Effect, RoutePlan
from functions.core.events import (
    NO_OBSERVATION,
    Alert,
    Command,
    Emitted,
    Event,
    ImagePushed,
    MetricSample,
    Observation,
    Tick,
)
from functions.core.machine import Decision, decide
from functions.core.policy import (
    Analysis,
    ApprovalStage,
    CanaryStage,
    CanaryStep,
    GateParam,
    ImageRule,
    MetricCheck,
    Policy,
    PreviewStage,
    PromoteStage,
    RouterSpec,
    Stage,
)
from functions.core.state import MAX_APPLIED, Actor, AppState, Release, Version, bounded

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
REPO = "registry.example.com/team-a/web"
APP = "team-a/web"


def version(tag: str) -> Version:
    return Version(version=tag, image=f"{REPO}:{tag}")


def analysis(**changes: Any) -> Analysis:
    """One threshold metric: error-rate must stay <= 5%."""
    base = Analysis(interval=10.0, metrics=(MetricCheck(name="error-rate", template="error-rate", max=0.05),))
    return replace(base, **changes)


def make_policy(*stages: Stage, **changes: Any) -> Policy:
    return Policy(
        name="web",
        namespace="team-a",
        image=ImageRule(repository=REPO),
        router=RouterSpec(provider="recording"),
        stages=stages,
        **changes,
    )


def seed_flow(**changes: Any) -> Policy:
    """The seed flow: preview with migration, A/B gate, canary steps under analysis, promote gate, promote."""
    from functions.core.policy import MigrationJob

    return make_policy(
        PreviewStage(migration=MigrationJob(name="migrate", command=("flask", "db", "upgrade"))),
        ApprovalStage(name="canary", params=(GateParam(name="weight", min=1, max=50),)),
        CanaryStage(steps=(CanaryStep(20, 60.0), CanaryStep(40, 60.0))),
        ApprovalStage(name="promote"),
        PromoteStage(),
        **{"analysis": analysis(), **changes},
    )


def sample(verdict: str) -> MetricSample:
    """A measured error-rate sample judged `verdict` by `analysis()` (no-data is inconclusive)."""
    if verdict == "pass":
        return MetricSample(name="error-rate", value=0.01)
    if verdict == "fail":
        return MetricSample(name="error-rate", value=0.30)
    if verdict == "unavailable":
        return MetricSample(name="error-rate", status="unavailable", detail="connection refused")
    return MetricSample(name="error-rate", status="no-data")


def observed(verdict: str) -> Observation:
    return Observation(metrics=(sample(verdict),))


PASS = observed("pass")
FAIL = observed("fail")
NO_DATA = observed("no-data")


def kinds(effects: tuple[Effect, ...]) -> list[str]:
    return [e.kind for e in effects]


def types(events: tuple[Emitted, ...]) -> list[str]:
    return [e.type.removeprefix("dev.graylane.") for e in events]


def actions(state: AppState) -> list[str]:
    return [h.action for h in state.history]


@dataclass
class Driver:
    """Feeds events to decide() the way the runner does, with a clock the test moves."""

    policy: Policy
    state: AppState = field(default_factory=lambda: AppState(app=APP))
    now: datetime = T0
    auto_apply: bool = True  # clear pending after each decision, as the runner does once effects are applied
    last: Decision | None = None
    counter: int = 0

    @classmethod
    def with_stable(cls, policy: Policy, tag: str = "v1", **kwargs: Any) -> Driver:
        return cls(policy, AppState(app=APP, stable=version(tag)), **kwargs)

    @property
    def rel(self) -> Release:
        assert self.state.release is not None
        return self.state.release

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def send(self, event: Event, obs: Observation = NO_OBSERVATION) -> Decision:
        self.last = decide(self.policy, self.state, event, self.now, obs)
        self.state = self.last.state
        if self.auto_apply:
            self.apply()
        return self.last

    def apply(self) -> None:
        pending = self.state.pending
        self.state = replace(
            self.state,
            pending=(),
            applied=bounded(self.state.applied + tuple(e.id for e in pending), MAX_APPLIED),
        )

    def push(self, tag: str, event_id: str = "") -> Decision:
        event = ImagePushed(id=event_id or self.next_id("push"), app=APP, target=version(tag), tag=tag)
        return self.send(event)

    def tick(self, seconds: float = 0.0, obs: Observation = NO_OBSERVATION) -> Decision:
        self.now += timedelta(seconds=seconds)
        return self.send(Tick(id=self.next_id("tick"), app=APP), obs)

    def command(self, action: str, event_id: str = "", **fields: Any) -> Decision:
        """A command for the current release (as the CLI or a button names it), unless `release` is given."""
        fields.setdefault("actor", Actor(user="alice", via="cli"))
        rel = self.state.release
        if "release" not in fields and rel is not None:
            fields["release"] = rel.id
            if action != "rollback":
                fields.setdefault("version", rel.target.version)
        return self.send(Command(id=event_id or self.next_id("cmd"), app=APP, action=action, **fields))

    def alert(
        self, name: str, firing: bool = True, fingerprint: str = "fp-1", event_id: str = "", **labels: str
    ) -> Decision:
        event = Alert(
            id=event_id or self.next_id("alert"),
            app=APP,
            fingerprint=fingerprint,
            firing=firing,
            alertname=name,
            labels=dict(labels),
        )
        return self.send(event)


def route(weight: int) -> RoutePlan:
    return RoutePlan.canary_at(weight)
