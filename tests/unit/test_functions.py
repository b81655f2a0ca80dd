"""Each function served by functions-framework, fed every catalog example in binary and structured mode;
and every event the functions emit validates against the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary, to_structured
from functions_framework import create_app

from functions import catalog, runtime
from functions.bus import MemoryBus
from functions.core import events as ev
from functions.demo import APP, EXAMPLES, measure, script
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {
    "release_start": (ev.IMAGE_PUSHED,),
    "release_tick": (ev.RELEASE_TICK,),
    "release_command": (ev.RELEASE_COMMAND,),
    "protection": (ev.ALERT_FIRING, ev.ALERT_RESOLVED),
}
CASES = [(t, typ, name) for t, types in TARGETS.items() for typ in types for name in catalog.examples_for(typ)]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRAYLANE_STORE", "memory://")
    monkeypatch.setenv("GRAYLANE_POLICIES", str(ROOT / "infra" / "examples"))
    monkeypatch.delenv("K_SINK", raising=False)
    runtime.runner.cache_clear()
    yield
    runtime.runner.cache_clear()


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize(("target", "type_", "example"), CASES)
def test_function_answers_every_catalog_example(env: None, target: str, type_: str, example: str, mode: str) -> None:
    client = create_app(target, str(ROOT / "functions" / f"{target}.py"), "cloudevent").test_client()
    event = catalog.examples_for(type_)[example]
    ce = catalog.make_event(event["type"], event.get("subject", ""), event.get("data", {}), id=event["id"])
    headers, body = (to_binary if mode == "binary" else to_structured)(ce)
    if mode == "binary":
        headers["Content-Type"] = "application/json"
    response = client.post("/", headers=headers, data=body)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_function_acknowledges_but_ignores_a_type_it_does_not_handle(env: None) -> None:
    client = create_app("release_tick", str(ROOT / "functions" / "release_tick.py"), "cloudevent").test_client()
    ce = catalog.make_event(ev.IMAGE_PUSHED, "", {"repository": "r/x", "tag": "v1", "source": "generic"})
    headers, body = to_binary(ce)
    headers["Content-Type"] = "application/json"
    assert client.post("/", headers=headers, data=body).status_code == 200
    assert runtime.runner().store.list_apps() == []


def test_malformed_event_is_acknowledged_and_changes_no_state(env: None) -> None:
    client = create_app("release_command", str(ROOT / "functions" / "release_command.py"), "cloudevent").test_client()
    ce = catalog.make_event(ev.RELEASE_COMMAND, "pro/flask", {"action": "weight", "weight": 150,
                                                              "actor": {"user": "mallory", "via": "api"}})
    headers, body = to_structured(ce)
    assert client.post("/", headers=headers, data=body).status_code == 200
    assert runtime.runner().store.list_apps() == []


def test_every_emitted_event_validates_against_the_catalog() -> None:
    bus = MemoryBus()
    clock = Clock()
    runner = Runner(MemoryStore(), DirectoryPolicies(str(EXAMPLES)), RecordingProviders(measure), bus=bus,
                    clock=clock)  # fmt: skip
    for dt, event, _ in script():
        clock.advance(dt)
        runner.handle(event)
    published = bus.events
    types = {e["type"] for e in published}
    # the demo walks gates, A/B, canary, promotion, protection, a rollback and alert handling
    assert {ev.RELEASE_STARTED, ev.GATE_WAITING, ev.GATE_DECIDED, ev.RELEASE_PROMOTED, ev.RELEASE_SUCCEEDED,
            ev.RELEASE_ROLLED_BACK, ev.ANALYSIS_VERDICT, ev.PROTECTION_CHANGED} <= types
    for event in published:
        catalog.validate(event)
        assert event["subject"] == APP
    assert len({e["id"] for e in published}) == len(published), "emitted ids are unique"


def test_emitted_events_of_commands_supersede_and_freeze_validate() -> None:
    from dataclasses import replace

    from functions.core.events import MetricSample
    from functions.core.policy import RollbackMode
    from tests.support import StaticPolicies, canary_policy, command, push, tick

    bad = lambda p, r: (MetricSample(name="success-rate", value=0.1, canary_requests=900),)  # noqa: E731
    policy = replace(canary_policy(), rollback=RollbackMode.FREEZE)
    bus, clock = MemoryBus(), Clock()
    runner = Runner(MemoryStore(), StaticPolicies([policy]), RecordingProviders(), bus=bus, clock=clock)
    app = policy.app
    for event in [push(app, "v1"), push(app, "v2"), command(app, "pause"), command(app, "approve"),
                  command(app, "resume"), command(app, "weight", weight=35), push(app, "v3"),
                  command(app, "abort", reason="enough"), command(app, "rollback", version="v0"),
                  push(app, "v4")]:  # fmt: skip
        clock.advance(5)
        runner.handle(event)
    runner.providers = RecordingProviders(bad)  # type: ignore[assignment]
    for _ in range(3):
        clock.advance(10)
        runner.handle(tick())
    types = {e["type"] for e in bus.events}
    assert {ev.RELEASE_PAUSED, ev.RELEASE_RESUMED, ev.WEIGHT_CHANGED, ev.RELEASE_SUPERSEDED, ev.RELEASE_ABORTED,
            ev.COMMAND_REJECTED, ev.RELEASE_FROZEN} <= types
    for event in bus.events:
        catalog.validate(event)


def test_a_knative_ping_is_a_tick_sweep(env: None) -> None:
    client = create_app("release_tick", str(ROOT / "functions" / "release_tick.py"), "cloudevent").test_client()
    headers = {"ce-specversion": "1.0", "ce-type": ev.KNATIVE_PING, "ce-source": "/apis/v1/namespaces/graylane/pingsources/tick",
               "ce-id": "ping-1", "Content-Type": "application/json"}  # fmt: skip
    assert client.post("/", headers=headers, data="{}").status_code == 200
    from cloudevents.http import CloudEvent

    from functions.core.events import Tick

    ping = CloudEvent({"type": ev.KNATIVE_PING, "source": "/pingsources/tick", "id": "p2"}, {"any": "payload"})
    assert catalog.to_domain(ping) == Tick(id="p2")
