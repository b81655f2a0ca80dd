"""Shared test builders: policies as values, a static policy source, a fake clock, event factories."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from functions.core.events import Command, ImagePushed, Tick
from functions.core.policy import (
    Analysis,
    ApprovalStage,
    CanaryStage,
    CanaryStep,
    ImageRule,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
    Stage,
)
from functions.core.state import Actor, AppState, Version
from functions.errors import NotFound

T0 = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
_ids = itertools.count(1)


def canary_policy(
    name: str = "web", namespace: str = "prod", stages: tuple[Stage, ...] | None = None, analysis: bool = True
) -> Policy:
    """Steps 20/50 with 60 s pauses, analysis from the first step, a promote gate."""
    return Policy(
        name=name,
        namespace=namespace,
        image=ImageRule(repository=f"registry.example.com/{name}"),
        router=RouterSpec(provider="recording"),
        stages=stages
        or (
            CanaryStage(steps=(CanaryStep(20, 60.0), CanaryStep(50, 60.0))),
            ApprovalStage(name="promote"),
            PromoteStage(),
        ),
        analysis=Analysis(
            interval=10.0, metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),)
        )
        if analysis
        else None,
    )


@dataclass
class StaticPolicies:
    policies: list[Policy] = field(default_factory=list)

    def get(self, app: str) -> Policy:
        for p in self.policies:
            if p.app == app:
                return p
        raise NotFound(f"policy {app} get: not found")

    def for_image(self, repository: str, tag: str) -> Policy | None:
        return next((p for p in self.policies if p.image.repository == repository), None)

    def all(self) -> list[Policy]:
        return list(self.policies)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def eid(prefix: str = "e") -> str:
    return f"{prefix}-{next(_ids)}"


def push(app: str, version: str, repo: str = "") -> ImagePushed:
    name = app.split("/")[1]
    repository = repo or f"registry.example.com/{name}"
    return ImagePushed(
        id=eid("push"),
        app=app,
        target=Version(version, f"{repository}:{version}"),
        repository=repository,
        tag=version,
    )


def tick(app: str = "") -> Tick:
    return Tick(id=eid("tick"), app=app)


def command(app: str, action: str, user: str = "alice", **kw: object) -> Command:
    return Command(id=eid(action), app=app, action=action, actor=Actor(user=user, via="cli"), **kw)  # type: ignore[arg-type]


def for_current(state: AppState, event: object) -> object:
    """A command as an edge sends it: named for the release current when it is sent (the CLI, the API and a
    typed chat command resolve it then). Other events, and commands that name a release, are left alone."""
    rel = state.release
    if not isinstance(event, Command) or event.release or rel is None:
        return event
    version = event.version if event.action == "rollback" else rel.target.version
    return replace(event, release=rel.id, version=version)


def sent(store: object, event: object) -> object:
    """`for_current` with the app's state read from `store` (the runner's)."""
    if not isinstance(event, Command):
        return event
    doc, _ = store.load(event.app)  # type: ignore[attr-defined]
    return for_current(AppState.from_json(doc) if doc else AppState(app=event.app), event)


def handle(runner: object, event: object) -> object:
    """runner.handle(event), a command being named for the current release first (see `for_current`)."""
    return runner.handle(sent(runner.store, event))  # type: ignore[attr-defined]
