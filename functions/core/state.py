"""Release state: what graylane owns for one app, stored as one document (ConfigMap or SQLite row).

Frozen values; transitions build new ones with dataclasses.replace. Times are ISO-8601 UTC strings.
Everything that grows (history, verdicts, seen event ids, applied effect ids, revisions) is bounded,
so the stored object stays far below the 1 MiB ConfigMap limit whatever the number of releases.
"""

from __future__ import annotations

import json
from dataclasses import field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from functions.core.codec import from_plain, to_plain
from functions.core.counters import Evidence
from functions.core.effects import STABLE_ONLY, Effect, FlagPlan, Protection, RoutePlan
from functions.core.policy import Match
from functions.core.slots import Routed, Slot
from functions.core.values import value

SCHEMA_VERSION = 1
MAX_HISTORY = 200
MAX_VERDICTS = 20
MAX_SEEN = 256
MAX_APPLIED = 64
MAX_ALERTS = 50


class Phase(StrEnum):
    PROGRESSING = "progressing"  # moving through stages on timers and analysis
    WAITING = "waiting"  # at an approval gate
    PAUSED = "paused"  # a human paused it, or analysis was inconclusive too long
    FROZEN = "frozen"  # analysis failed with rollback mode freeze/roll-forward: a human decides
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled-back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"
    FAILED = "failed"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.SUPERSEDED, Phase.FAILED})


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@value
class Version:
    version: str = ""  # tag, e.g. v1.2.0
    image: str = ""  # pinned reference, repo@sha256:... when the digest is known


@value
class Actor:
    user: str = "graylane"
    via: str = (
        "system"  # system | cli | api | console | slack | dingtalk | feishu | wecom | alertmanager | registry
    )
    channel: str = ""


@value
class GateDecision:
    gate: str
    decision: str  # approved | rejected | timed-out
    at: str
    by: Actor = Actor()
    params: dict[str, int] = field(default_factory=dict)


@value
class MetricResult:
    name: str
    verdict: str  # pass | fail | inconclusive
    reason: str = ""
    value: float | None = None
    stable_value: float | None = None
    query: str = ""


@value
class VerdictRecord:
    at: str
    verdict: str  # pass | fail | inconclusive
    reason: str = ""
    metrics: tuple[MetricResult, ...] = ()


@value
class Timer:
    name: str  # step | stage | linear | gate-timeout | watch | resume
    due: str


@value
class Release:
    id: str  # "<app name>-<seq>": the correlation id of every event about this release
    seq: int
    target: Version
    origin: Version  # what was stable when the release started
    started_at: str
    phase: Phase = Phase.PROGRESSING
    kind: str = "release"  # release | rollback
    wave: int = 0
    stage: int = 0
    step: int = 0
    weight: int = 0  # desired canary weight
    match: tuple[Match, ...] = ()
    analysing: bool = False  # the latest traffic stage asked for analysis
    canary_deployed: bool = False
    promoted: bool = False  # stable runs the target in the current wave
    stage_started_at: str = ""
    step_started_at: str = ""
    timer: Timer | None = None
    paused_from: str = ""  # phase to restore on resume
    paused_timer_left: float | None = None  # seconds left on the timer when paused
    gate: str = ""  # gate being waited on
    gate_next: int = -1  # stage index entered once the gate passes
    watching: bool = False  # promoted; the previous version is kept warm and the new one watched
    gates: tuple[GateDecision, ...] = ()
    params: dict[str, int] = field(default_factory=dict)
    passes_in_step: int = 0
    failures: int = 0
    inconclusive_run: int = 0
    last_analysis_at: str = ""
    verdicts: tuple[VerdictRecord, ...] = ()
    reason: str = ""
    ended_at: str = ""
    hook_point: str = ""  # the point a hook gate holds ("<hook type>@<wave>/<stage>/<step>")
    hook_resume: str = ""  # what the gate resumes once its hooks say yes: "enter:<stage>" | "fire:<timer>"
    hook_answer: str = ""  # the hooks' latest refusal, recorded once (a re-ask with the same answer is quiet)
    hook_passed: tuple[str, ...] = ()  # points whose hooks said yes (or a human approved)
    canary_share: str = ""  # the share the canary's autoscaler was last sized for ("match": a match route)
    loads: int = 0  # load-hook tests started
    load_until: str = ""  # when the latest one stops sending
    origin_slot: Slot | None = None  # per-version model: the Deployment/subset of origin and of target
    target_slot: Slot | None = None
    planned_weight: int = 0  # the weight the policy's step asks for; `weight` is it capped by exposure
    evidence: Evidence | None = None  # what the guard knows about the canary (functions/core/evidence.py)
    baseline_deployed: bool = False  # a fresh baseline runs for this wave (functions/core/baseline.py)
    baseline_weight: int = 0  # the baseline's routed weight

    @property
    def active(self) -> bool:
        return self.phase not in TERMINAL


@value
class HistoryEntry:
    at: str
    event: str  # the catalog type (or "timer") that caused the transition
    event_id: str = ""
    release: str = ""
    action: str = (
        ""  # started | stage | step | gate-waiting | approved | rejected | promoted | rolled-back | ...
    )
    phase_from: str = ""
    phase_to: str = ""
    stage: int = -1
    step: int = -1
    weight: int | None = None
    by: Actor | None = None
    reason: str = ""
    scheduled_at: str = ""  # timers: when it was due, next to `at`, when it actually fired


@value
class ActiveAlert:
    fingerprint: str
    rule: int  # index into policy.protection
    since: str
    resolved_at: str = ""  # set on resolution; relaxes after the rule's hold-down


@value
class AppState:
    app: str  # namespace/name
    stable: Version = Version()
    revisions: tuple[Version, ...] = ()  # previously stable, newest first
    warm: Version | None = None  # previous version kept running in the canary workload
    warm_until: str = ""
    seq: int = 0
    release: Release | None = None
    routes: RoutePlan = STABLE_ONLY  # desired traffic
    routed: Routed = Routed()  # per-version model: the versions `routes` is between, the subsets kept
    slots: tuple[
        Slot, ...
    ] = ()  # per-version model: every version's Deployment that exists, least recently used first
    protection: Protection = Protection()  # desired protection
    flags: tuple[FlagPlan, ...] = ()  # desired exposure of the feature flags flag stages roll out
    base_protection: Protection = Protection()  # what the protect stage set, before alert tightening
    alerts: tuple[ActiveAlert, ...] = ()
    pending: tuple[Effect, ...] = ()  # desired, not yet applied, in order
    applied: tuple[str, ...] = ()  # ids of recently applied effects
    seen: tuple[str, ...] = ()  # ids of recently processed events
    history: tuple[HistoryEntry, ...] = ()
    generation: int = 0  # number of transitions; part of effect ids
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(to_plain(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AppState:
        return from_plain(cls, json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppState:
        return from_plain(cls, data)


def bounded(items: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    """Keep the newest `limit` items (items are appended at the end)."""
    return items[-limit:] if len(items) > limit else items
