"""Kubernetes Events for release transitions on the real kube-apiserver: the runner records one per emitted
event on the app's stable Deployment, a retry creates no duplicate, failures are Warnings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from functions.core.events import Emitted, MetricSample
from functions.core.state import AppState, Phase
from functions.observability.kube_events import KubeEventRecorder
from functions.providers.kube import client_from
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.k8s.cluster import KubeCluster
from tests.support import T0, Clock, StaticPolicies, canary_policy, push, tick

pytestmark = pytest.mark.k8s


@pytest.fixture
def api(kube: KubeCluster) -> Iterator[Any]:
    api_client = client_from(configuration=kube.new_configuration())
    try:
        yield api_client
    finally:
        api_client.close()


def events_of(api: Any, ns: str) -> list[Any]:
    found = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector="involvedObject.kind=Deployment,involvedObject.name=web"
    )
    return sorted(found.items, key=lambda e: e.metadata.name)


def run(api: Any, ns: str, measure: Any = None) -> tuple[Runner, MemoryStore, KubeEventRecorder, str]:
    clock = Clock()
    recorder = KubeEventRecorder(api, clock=clock, instance="test-pod")
    policy = canary_policy(namespace=ns)
    providers = RecordingProviders(measure) if measure else RecordingProviders()
    runner = Runner(MemoryStore(), StaticPolicies([policy]), providers, clock=clock, events_recorder=recorder)
    runner.handle(push(policy.app, "v1"))
    runner.handle(push(policy.app, "v2"))
    return runner, runner.store, recorder, policy.app


def test_transitions_become_events_on_the_stable_deployment(api: Any, ns: str) -> None:
    _, store, _, app = run(api, ns)
    doc, _ = store.load(app)
    state = AppState.from_json(doc or "")
    events = events_of(api, ns)
    assert [e.reason for e in events] == ["ReleaseStarted", "ReleaseStageEntered"]
    for i, e in enumerate(events):
        assert e.metadata.name == f"web.{state.release.id}.{state.generation}.{i}"
        o = e.involved_object
        assert (o.api_version, o.kind, o.name, o.namespace) == ("apps/v1", "Deployment", "web", ns)
        assert e.type == "Normal" and e.source.component == "graylane" and e.reporting_component == "graylane"
        assert e.reporting_instance == "test-pod" and e.count == 1
        assert e.first_timestamp == e.last_timestamp == T0
        assert e.metadata.labels["graylane.dev/release"] == state.release.id
    assert events[0].message.startswith(f"{state.release.id} v2 release started")


def test_a_retried_cycle_does_not_duplicate_events(api: Any, ns: str) -> None:
    _, store, recorder, app = run(api, ns)
    doc, _ = store.load(app)
    state = AppState.from_json(doc or "")
    first = [e.metadata.name for e in events_of(api, ns)]
    policy = canary_policy(namespace=ns)
    emitted = (Emitted("dev.graylane.release.started", {}), Emitted("dev.graylane.release.stage.entered", {}))
    # what a redelivery after a crash between the save and the Events would do: the same names again
    assert recorder.record_emitted(policy, state, emitted) == first
    assert not recorder.record(
        policy,
        state.release,
        emitted[0].type,
        "ReleaseStarted",
        "again",
        generation=state.generation,
        index=0,
    )
    assert [e.metadata.name for e in events_of(api, ns)] == first


def test_a_failed_analysis_is_recorded_as_warnings(api: Any, ns: str) -> None:
    bad = lambda p, r: (MetricSample(name="success-rate", value=0.5, canary_requests=500),)  # noqa: E731
    runner, store, _, app = run(api, ns, bad)
    runner.clock.advance(10)  # type: ignore[attr-defined]
    runner.handle(tick(app))
    doc, _ = store.load(app)
    assert AppState.from_json(doc or "").release.phase == Phase.ROLLED_BACK
    by_reason = {e.reason: e for e in events_of(api, ns)}
    assert by_reason["AnalysisFailed"].type == "Warning"
    assert by_reason["ReleaseRolledBack"].type == "Warning"
    assert "0.5 < min 0.9" in by_reason["ReleaseRolledBack"].message
    assert by_reason["ReleaseStarted"].type == "Normal"


def test_an_event_in_a_missing_namespace_fails_loudly_for_the_caller(api: Any) -> None:
    from functions.errors import GraylaneError

    policy = canary_policy(namespace="no-such-namespace-for-events")
    recorder = KubeEventRecorder(api)
    with pytest.raises(GraylaneError, match="Event no-such-namespace-for-events/web.app.1.0 create"):
        recorder.record(
            policy,
            None,
            "dev.graylane.protection.changed",
            "ProtectionChanged",
            "tightened",
            generation=1,
            index=0,
        )
    state = AppState(app=policy.app, generation=1)
    assert recorder.record_emitted(policy, state, (Emitted("dev.graylane.protection.changed", {}),)) == []
