"""The runner's observability hooks on the in-memory store and recording providers: metrics of a real
release, logs carrying the event and correlation ids, and the Kubernetes Event recorder hook."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from functions.core import events as ev
from functions.core.effects import RoutePlan
from functions.core.policy import Policy
from functions.core.state import AppState, Phase
from functions.observability import logs, metrics
from functions.observability.kube_events import KubeEventRecorder
from functions.providers.kube import client_from
from functions.providers.recording import RecordingProviders, RecordingRouter
from functions.providers.routers.base import RouteTarget
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, canary_policy, command, handle, push, tick


def make(
    namespace: str, providers: RecordingProviders | None = None, recorder: Any = None
) -> tuple[Runner, MemoryStore, RecordingProviders, Clock, str]:
    store, clock = MemoryStore(), Clock()
    providers = providers or RecordingProviders()
    policy = canary_policy(namespace=namespace)
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock, events_recorder=recorder)
    return runner, store, providers, clock, policy.app


def state_of(store: MemoryStore, app: str) -> AppState:
    doc, _ = store.load(app)
    assert doc is not None
    return AppState.from_json(doc)


def counters() -> dict[str, float]:
    return {
        "started": metrics.TRANSITIONS.get(type=ev.RELEASE_STARTED),
        "promoted": metrics.TRANSITIONS.get(type=ev.RELEASE_PROMOTED),
        "verdict": metrics.TRANSITIONS.get(type=ev.ANALYSIS_VERDICT),
        "decisions": metrics.DECISION.count(),
        "cycles": metrics.CYCLE.count(),
        "routes-applied": metrics.EFFECTS.get(kind="set-routes", outcome="applied"),
        "routes-failed": metrics.EFFECTS.get(kind="set-routes", outcome="failed"),
        "routes-not-ready": metrics.EFFECTS.get(kind="set-routes", outcome="not-ready"),
        "threshold-pass": metrics.VERDICTS.get(judge="threshold", verdict="pass"),
        "succeeded": metrics.RELEASES.get(phase="succeeded"),
        "progressing": metrics.RELEASES.get(phase="progressing"),
    }


def test_a_release_moves_the_transition_decision_effect_verdict_and_phase_metrics() -> None:
    runner, store, _, clock, app = make("obs-release")
    before = counters()
    runner.handle(push(app, "v1"))
    runner.handle(push(app, "v2"))
    mid = counters()
    assert mid["progressing"] == before["progressing"] + 1
    for _ in range(14):  # two 60 s steps with analysis every 10 s
        clock.advance(10)
        runner.handle(tick(app))
    handle(runner, command(app, "approve", gate="promote"))
    assert state_of(store, app).release.phase == Phase.SUCCEEDED
    after = counters()
    diff = {k: after[k] - before[k] for k in before}
    assert diff["started"] == 1 and diff["promoted"] == 1
    verdicts = len(state_of(store, app).release.verdicts)
    assert verdicts > 0 and diff["verdict"] == verdicts and diff["threshold-pass"] == verdicts
    assert diff["decisions"] >= 17 and diff["cycles"] == 17  # 2 pushes + 14 ticks + 1 command
    assert diff["routes-applied"] >= 3 and diff["routes-failed"] == 0
    assert diff["succeeded"] == 1 and diff["progressing"] == 0


def test_failed_and_unconfirmed_effects_are_counted_by_outcome() -> None:
    class StaleRouter(RecordingRouter):
        """Accepts a plan but reads back stable-only once: the runner sees the routes as not ready."""

        stale = 1

        def get_routes(self, target: RouteTarget) -> RoutePlan:
            if self.stale:
                self.stale -= 1
                return RoutePlan()
            return super().get_routes(target)

    providers = RecordingProviders()
    providers.router_ = StaleRouter(providers.log)
    runner, _, _, _, app = make("obs-effects", providers)
    runner.handle(push(app, "v1"))  # writes the stable-only route (and reads it back) from the start
    providers.router_.stale = 1
    before = counters()
    providers.log.fail("set_routes", times=1)
    assert runner.handle(push(app, "v2"))[0].pending > 0  # failed
    assert runner.handle(tick(app))[0].pending > 0  # applied but read back stale
    assert runner.handle(tick(app))[0].pending == 0
    after = counters()
    assert after["routes-failed"] - before["routes-failed"] == 1
    assert after["routes-not-ready"] - before["routes-not-ready"] == 1
    assert after["routes-applied"] - before["routes-applied"] == 1


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("DEBUG", out, "json")
    try:
        yield out
    finally:
        logs.unconfigure()
        logging.getLogger(logs.ROOT).setLevel(logging.NOTSET)


def test_every_log_line_of_a_cycle_carries_the_event_and_release(json_logs: io.StringIO) -> None:
    providers = RecordingProviders()
    runner, store, _, _, app = make("obs-logs", providers)
    runner.handle(push(app, "v1"))
    providers.log.fail("set_routes", times=1)
    event = push(app, "v2")
    runner.handle(event)
    release = state_of(store, app).release.id
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    mine = [line for line in lines if line["event_id"] == event.id]
    # the runner's "not done yet" line for the failed effect and its per-event summary line
    assert any("not done" in line["msg"] for line in mine)
    summary = next(line for line in mine if line.get("status") == "transitioned")
    assert ev.RELEASE_STARTED in summary["emitted"] and summary["pending"] > 0
    assert {(line["correlation_id"], line["app"], line["event_type"]) for line in mine} == {
        (release, app, ev.IMAGE_PUSHED)
    }
    assert all(line["logger"].startswith("graylane") for line in lines)


class ListRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[str]]] = []

    def record_emitted(self, policy: Policy, state: AppState, emitted: tuple[Any, ...]) -> list[str]:
        self.calls.append((policy.app, state.generation, [e.type for e in emitted]))
        return []


def test_the_recorder_is_called_once_per_saved_transition_with_its_events() -> None:
    recorder = ListRecorder()
    runner, store, _, clock, app = make("obs-recorder", recorder=recorder)
    expected = []
    event = push(app, "v2")
    for e in (push(app, "v1"), event, event, tick(app)):  # the second `event` is a redelivery
        clock.advance(1)
        (outcome,) = runner.handle(e)
        if outcome.status == "transitioned":
            expected.append((app, state_of(store, app).generation, outcome.emitted))
        else:
            assert outcome.status == "duplicate"
    assert len(expected) == 3 and recorder.calls == expected
    assert ev.RELEASE_STARTED in expected[1][2]


def test_an_unreachable_apiserver_never_fails_a_release(json_logs: io.StringIO) -> None:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused
    recorder = KubeEventRecorder(client_from(configuration=cfg, timeout=2.0))
    runner, store, _, _, app = make("obs-down", recorder=recorder)
    runner.handle(push(app, "v1"))
    assert runner.handle(push(app, "v2"))[0].status == "transitioned"
    assert state_of(store, app).release.phase == Phase.PROGRESSING
    warnings = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    warnings = [w for w in warnings if w["logger"] == "graylane.observability.kube_events"]
    assert warnings and all(w["level"] == "WARNING" and "Event" in w["msg"] for w in warnings)
    assert "ReleaseStarted" in " ".join(w["msg"] for w in warnings)
