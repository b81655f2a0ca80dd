"""Kubernetes Events for release transitions, on the app's stable Deployment (`kubectl describe` shows them).

One core/v1 Event per event decide() emitted, created after the state that caused it was saved. Its
name is deterministic, `<deployment>.<release>.<generation>.<index>`, so a retried cycle or a twin
worker creating the same one gets 409 AlreadyExists, which counts as done: no duplicates. Events are
a courtesy to humans: a failure is logged and never fails a release (state and CloudEvents are the
record). The Kubernetes client is imported on the first write only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from functions.core import events as ev
from functions.errors import ConflictError, GraylaneError
from functions.providers.kube import api_error, request

if TYPE_CHECKING:
    from functions.core.events import Emitted
    from functions.core.policy import Policy
    from functions.core.state import AppState, Release
    from functions.providers.kube import ApiClient

log = logging.getLogger("graylane.observability.kube_events")

COMPONENT = "graylane"
MAX_MESSAGE = 1024  # the apiserver keeps messages short; kubectl truncates anyway
MAX_NAME = 253

REASONS: dict[str, str] = {
    ev.RELEASE_STARTED: "ReleaseStarted",
    ev.RELEASE_STAGE: "ReleaseStageEntered",
    ev.RELEASE_STEP: "ReleaseStepAdvanced",
    ev.GATE_WAITING: "ReleaseGateWaiting",
    ev.GATE_DECIDED: "ReleaseGateDecided",
    ev.RELEASE_PROMOTED: "ReleasePromoted",
    ev.RELEASE_SUCCEEDED: "ReleaseSucceeded",
    ev.RELEASE_ROLLED_BACK: "ReleaseRolledBack",
    ev.RELEASE_FROZEN: "ReleaseFrozen",
    ev.RELEASE_PAUSED: "ReleasePaused",
    ev.RELEASE_RESUMED: "ReleaseResumed",
    ev.RELEASE_ABORTED: "ReleaseAborted",
    ev.RELEASE_SUPERSEDED: "ReleaseSuperseded",
    ev.RELEASE_FAILED: "ReleaseFailed",
    ev.WEIGHT_CHANGED: "ReleaseWeightChanged",
    ev.PROTECTION_CHANGED: "ProtectionChanged",
    ev.EVENT_IGNORED: "EventIgnored",
    ev.COMMAND_REJECTED: "CommandRejected",
}
VERDICT_REASONS = {"pass": "AnalysisPassed", "fail": "AnalysisFailed", "inconclusive": "AnalysisInconclusive"}
WARNINGS = frozenset(
    {"ReleaseRolledBack", "ReleaseFailed", "ReleaseFrozen", "AnalysisFailed", "CommandRejected"}
)


def reason_for(emitted: Emitted) -> str:
    """The Event reason (CamelCase, as kubectl shows it) of one emitted catalog event."""
    if emitted.type == ev.ANALYSIS_VERDICT:
        return VERDICT_REASONS.get(str(emitted.data.get("verdict", "")), "AnalysisVerdict")
    if emitted.type in REASONS:
        return REASONS[emitted.type]
    tail = emitted.type.removeprefix(f"{ev.PREFIX}.")
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^a-zA-Z0-9]+", tail) if part)


def message_for(policy: Policy, release: Release | None, emitted: Emitted) -> str:
    """One human line: release, version, what happened, where traffic is and why."""
    data = emitted.data
    what = emitted.type.removeprefix(f"{ev.PREFIX}.").replace(".", " ")
    target = data.get("target")
    version = str(target.get("version", "")) if isinstance(target, dict) else ""
    if not version and release is not None:
        version = release.target.version
    parts = [release.id if release else policy.app, version, what]
    if data.get("gate"):
        parts.append(f"gate {data['gate']}" + (f" {data['decision']}" if data.get("decision") else ""))
    if data.get("weight"):
        parts.append(f"at {data['weight']}%")
    text = " ".join(p for p in parts if p)
    if data.get("reason"):
        text += f": {data['reason']}"
    return text[:MAX_MESSAGE]


def event_name(deployment: str, release: str, generation: int, index: int) -> str:
    """`<deployment>.<release>.<generation>.<index>`, lowercased and DNS-subdomain safe (≤ 253 chars)."""
    raw = f"{deployment}.{release or 'app'}.{generation}.{index}".lower()
    name = re.sub(r"[^a-z0-9.-]+", "-", raw)
    name = re.sub(r"-*\.[-.]*", ".", name).strip(".-")  # every label starts and ends alphanumeric
    if len(name) > MAX_NAME:  # keep it unique: a digest of the full name replaces the cut-off part
        digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
        name = name[: MAX_NAME - 17].rstrip(".-") + "." + digest
    return name


def _timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved(policy: Policy, release: Release | None) -> str:
    """The Deployment an app's Events are about: the stable workload; with one Deployment per version, the
    one the release deploys (the version its events are about)."""
    if release is not None and release.target_slot is not None:
        return release.target_slot.workload
    return policy.stable_workload


class KubeEventRecorder:
    """Creates core/v1 Events through one ApiClient (`functions.providers.kube.client_from()`)."""

    def __init__(
        self,
        api_client: ApiClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        instance: str = "",
    ) -> None:
        self.api_client = api_client
        self.clock = clock
        self.instance = instance or socket.gethostname()

    def body(
        self,
        policy: Policy,
        release: Release | None,
        emitted_type: str,
        reason: str,
        message: str,
        *,
        generation: int,
        index: int,
    ) -> dict[str, Any]:
        deployment = involved(policy, release)
        now = _timestamp(self.clock())
        labels = {"app.kubernetes.io/managed-by": COMPONENT, "graylane.dev/app": policy.name}
        if release is not None:
            labels["graylane.dev/release"] = release.id
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": event_name(deployment, release.id if release else "", generation, index),
                "namespace": policy.namespace,
                "labels": labels,
                "annotations": {"graylane.dev/event-type": emitted_type},
            },
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment,
                "namespace": policy.namespace,
            },
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "type": "Warning" if reason in WARNINGS else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
        }

    def record(
        self,
        policy: Policy,
        release: Release | None,
        emitted_type: str,
        reason: str,
        message: str,
        *,
        generation: int,
        index: int,
    ) -> bool:
        """Create the Event; True when created, False when it already existed (a retry). Raises GraylaneError."""
        body = self.body(policy, release, emitted_type, reason, message, generation=generation, index=index)
        name = f"{policy.namespace}/{body['metadata']['name']}"
        try:
            request(
                self.api_client,
                "POST",
                "/api/v1/namespaces/{namespace}/events",
                {"namespace": policy.namespace},
                body=body,
            )
        except Exception as err:  # classified by api_error: 409 means a retry already created it
            failure = api_error(err, "Event", name, "create")
            if isinstance(failure, ConflictError):
                return False
            raise failure from err
        return True

    def record_emitted(self, policy: Policy, state: AppState, emitted: Sequence[Emitted]) -> list[str]:
        """One Event per emitted event of the saved `state`; failures are logged, never raised.

        Returns the names of the Events created or already there.
        """
        names: list[str] = []
        release = state.release
        for index, e in enumerate(emitted):
            reason = reason_for(e)
            try:
                self.record(
                    policy,
                    release,
                    e.type,
                    reason,
                    message_for(policy, release, e),
                    generation=state.generation,
                    index=index,
                )
            except GraylaneError as err:
                log.warning("recording Kubernetes Event %s for %s failed: %s", reason, policy.app, err)
                continue
            names.append(
                event_name(involved(policy, release), release.id if release else "", state.generation, index)
            )
        return names
