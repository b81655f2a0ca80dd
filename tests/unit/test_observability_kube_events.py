"""The pure parts of the Kubernetes Event recorder: names, reasons, messages and the Event body."""

from __future__ import annotations

import re

from functions.core import events as ev
from functions.core.events import Emitted
from functions.core.state import Release, Version
from functions.observability.kube_events import KubeEventRecorder, event_name, message_for, reason_for
from tests.support import T0, canary_policy

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
RELEASE = Release(
    id="web-3",
    seq=3,
    target=Version("v2", "registry.example.com/web:v2"),
    origin=Version("v1"),
    started_at="2026-11-23T08:00:00Z",
    weight=20,
)


def test_event_names_are_deterministic_dns_safe_and_bounded() -> None:
    assert event_name("web", "web-3", 7, 0) == "web.web-3.7.0"
    assert event_name("Web_App", "Web_App-3", 7, 1) == "web-app.web-app-3.7.1"
    assert event_name("web", "", 1, 2) == "web.app.1.2"
    assert event_name("-web-", "..x..", 1, 0) == "web.x.1.0"
    long = event_name("d" * 250, "r" * 100, 1, 0)
    assert len(long) <= 253 and long != event_name("d" * 250, "r" * 101, 1, 0)
    for name in (long, event_name("a.b", "-", 0, 0), event_name("UPPER", "x_y", 3, 4)):
        assert DNS_SUBDOMAIN.fullmatch(name), name


def test_every_emitted_type_has_a_camel_case_reason() -> None:
    reasons = {t: reason_for(Emitted(t, {"verdict": "fail"})) for t in ev.EMITTED}
    assert reasons[ev.RELEASE_PROMOTED] == "ReleasePromoted"
    assert reasons[ev.RELEASE_ROLLED_BACK] == "ReleaseRolledBack"
    assert reasons[ev.ANALYSIS_VERDICT] == "AnalysisFailed"
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", r) for r in reasons.values()), reasons
    assert len(set(reasons.values())) == len(reasons)
    assert reason_for(Emitted(f"{ev.PREFIX}.release.new-thing", {})) == "ReleaseNewThing"


def test_message_names_the_release_version_what_and_why() -> None:
    policy = canary_policy()
    data = {"target": {"version": "v2"}, "weight": 20, "reason": "success-rate 0.5 < min 0.9"}
    assert message_for(policy, RELEASE, Emitted(ev.RELEASE_ROLLED_BACK, data)) == (
        "web-3 v2 release rolledback at 20%: success-rate 0.5 < min 0.9"
    )
    assert message_for(
        policy, RELEASE, Emitted(ev.GATE_DECIDED, {"gate": "promote", "decision": "approved"})
    ) == ("web-3 v2 release gate decided gate promote approved")
    assert message_for(policy, None, Emitted(ev.PROTECTION_CHANGED, {})) == "prod/web protection changed"
    assert len(message_for(policy, RELEASE, Emitted(ev.RELEASE_FAILED, {"reason": "x" * 5000}))) == 1024


def test_body_is_a_core_v1_event_on_the_stable_deployment() -> None:
    policy = canary_policy()
    recorder = KubeEventRecorder(api_client=None, clock=lambda: T0, instance="pod-1")
    body = recorder.body(policy, RELEASE, ev.RELEASE_FROZEN, "ReleaseFrozen", "held", generation=9, index=2)
    assert body["metadata"]["name"] == "web.web-3.9.2" and body["metadata"]["namespace"] == "prod"
    assert body["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "prod",
    }
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "ReleaseFrozen", 1)
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-11-23T08:00:00Z"
    assert body["source"] == {"component": "graylane"} and body["reportingComponent"] == "graylane"
    normal = recorder.body(
        policy, RELEASE, ev.RELEASE_PROMOTED, "ReleasePromoted", "ok", generation=9, index=3
    )
    assert normal["type"] == "Normal"
