"""Domain events: the inputs of decide() and the events it emits. Frozen values, no I/O.

Catalog type names (reverse DNS) live here; the JSON Schemas and examples of each `data` live in the
top-level events/ catalog. `functions.catalog` converts between CloudEvents and these values.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from functions.core.counters import Totals
from functions.core.effects import FlagPlan, RoutePlan
from functions.core.state import Actor, MetricResult, Version
from functions.core.values import value

PREFIX = "dev.graylane"

# consumed
IMAGE_PUSHED = f"{PREFIX}.image.pushed"
RELEASE_TICK = f"{PREFIX}.release.tick"
RELEASE_COMMAND = f"{PREFIX}.release.command"
ALERT_FIRING = f"{PREFIX}.alert.firing"
ALERT_RESOLVED = f"{PREFIX}.alert.resolved"
# A Knative PingSource cannot choose its CloudEvent type: its ping is read as a tick sweeping every app.
KNATIVE_PING = "dev.knative.sources.ping"

# emitted
RELEASE_STARTED = f"{PREFIX}.release.started"
RELEASE_STAGE = f"{PREFIX}.release.stage.entered"
RELEASE_STEP = f"{PREFIX}.release.step.advanced"
GATE_WAITING = f"{PREFIX}.release.gate.waiting"
GATE_DECIDED = f"{PREFIX}.release.gate.decided"
RELEASE_PROMOTED = f"{PREFIX}.release.promoted"
RELEASE_SUCCEEDED = f"{PREFIX}.release.succeeded"
RELEASE_ROLLED_BACK = f"{PREFIX}.release.rolledback"
RELEASE_FROZEN = f"{PREFIX}.release.frozen"
RELEASE_PAUSED = f"{PREFIX}.release.paused"
RELEASE_RESUMED = f"{PREFIX}.release.resumed"
RELEASE_ABORTED = f"{PREFIX}.release.aborted"
RELEASE_SUPERSEDED = f"{PREFIX}.release.superseded"
RELEASE_FAILED = f"{PREFIX}.release.failed"
WEIGHT_CHANGED = f"{PREFIX}.release.weight.changed"
ANALYSIS_VERDICT = f"{PREFIX}.analysis.verdict"
PROTECTION_CHANGED = f"{PREFIX}.protection.changed"
EVENT_IGNORED = f"{PREFIX}.event.ignored"
COMMAND_REJECTED = f"{PREFIX}.command.rejected"

CONSUMED = (IMAGE_PUSHED, RELEASE_TICK, RELEASE_COMMAND, ALERT_FIRING, ALERT_RESOLVED)
EMITTED = (
    RELEASE_STARTED,
    RELEASE_STAGE,
    RELEASE_STEP,
    GATE_WAITING,
    GATE_DECIDED,
    RELEASE_PROMOTED,
    RELEASE_SUCCEEDED,
    RELEASE_ROLLED_BACK,
    RELEASE_FROZEN,
    RELEASE_PAUSED,
    RELEASE_RESUMED,
    RELEASE_ABORTED,
    RELEASE_SUPERSEDED,
    RELEASE_FAILED,
    WEIGHT_CHANGED,
    ANALYSIS_VERDICT,
    PROTECTION_CHANGED,
    EVENT_IGNORED,
    COMMAND_REJECTED,
)

ACTIONS = (
    "status",
    "approve",
    "reject",
    "weight",
    "promote",
    "pause",
    "resume",
    "abort",
    "rollback",
    "history",
)
MUTATING_ACTIONS = ACTIONS[1:9]


@value
class ImagePushed:
    id: str
    app: str  # namespace/name the policy matched
    target: Version
    repository: str = ""
    tag: str = ""
    digest: str = ""
    source: str = ""  # dockerhub | harbor | ghcr | ... | generic
    type: str = IMAGE_PUSHED


@value
class Tick:
    id: str
    app: str = ""  # empty: every app with an active release
    type: str = RELEASE_TICK


@value
class Command:
    id: str
    app: str
    action: str  # one of MUTATING_ACTIONS
    actor: Actor = Actor()
    gate: str = ""  # approve/reject: which gate; empty means the one being waited on
    weight: int | None = None  # weight; approve: value of the gate's weight parameter
    params: dict[str, int] = field(default_factory=dict)  # approve: gate parameters
    version: str = ""  # rollback: the version to return to; any other action: the release's target version
    reason: str = ""
    release: str = ""  # the release the command is for: decide() refuses it for any other (or for none)
    type: str = RELEASE_COMMAND


@value
class Alert:
    id: str
    app: str
    fingerprint: str
    firing: bool
    alertname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    starts_at: str = ""
    type: str = ALERT_FIRING


@value
class EffectFailure:
    """Internal, never published: the runner reports an effect that failed for good (a failed Job)."""

    id: str  # "<effect id>/failed": a second report of the same failure is a duplicate
    app: str
    effect: str
    kind: str
    reason: str
    type: str = f"{PREFIX}.internal.effect.failed"


Event = ImagePushed | Tick | Command | Alert | EffectFailure


@value
class MetricSample:
    """One metric as measured by the runner for the current release (no judgement yet)."""

    name: str
    status: str = "ok"  # ok | no-data | unavailable
    value: float | None = None  # canary value
    stable_value: float | None = None
    canary_requests: float | None = None  # counts over the window, for the sequential judge
    canary_errors: float | None = None
    stable_requests: float | None = None
    stable_errors: float | None = None
    query: str = ""
    detail: str = ""
    reference: str = "stable"  # whose series the stable_* fields are: "stable", or the fresh "baseline"


@value
class HookResult:
    """One hook's answer, as the runner got it before deciding (functions.core.hooks.hook_calls asked for it)."""

    name: str
    type: str
    point: str  # the release point the call was about ("<type>@<wave>/<stage>/<step>")
    ok: bool  # a 2xx answer
    status: int = 0  # the HTTP status (0: no answer: refused, timed out)
    detail: str = ""
    id: str = ""  # the call's delivery id


@value
class Observation:
    """What the runner saw outside before deciding: metrics and the live routes."""

    metrics: tuple[MetricSample, ...] | None = None  # None: analysis was not run for this event
    routes: RoutePlan | None = None  # read back from the router; None when not read
    totals: Totals | None = None  # the versions' raw request counters, for the guard; None when not read
    measured_at: str = ""  # when the metrics were measured (ISO); decide() refuses them if a verdict is newer
    release: str = ""  # the release the metrics were measured for; decide() refuses them for another one
    hooks: tuple[HookResult, ...] | None = None  # hooks the runner called for this decision; None: none asked
    flags: tuple[FlagPlan, ...] | None = None  # the release's flags as read back from the flag documents


NO_OBSERVATION = Observation()


@value
class Emitted:
    """An event decide() wants published; the runner wraps it in a CloudEvent of the catalog."""

    type: str
    data: dict[str, Any]


def verdict_data(results: tuple[MetricResult, ...]) -> list[dict[str, Any]]:
    return [{"name": r.name, "verdict": r.verdict, "reason": r.reason, "value": r.value} for r in results]
