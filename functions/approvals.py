"""Release commands from people (chat, the approval API, the CLI): authorise, audit, publish.

A mutating command is checked against the app's policy approvers here, before anything moves (the
machine only judges whether the command fits the release's phase, and records it in history). Then:
- allowed: one `dev.graylane.release.command` CloudEvent is published; the release_command function
  decides it and records who, where, when and what in the release's history;
- denied: nothing is published; the answer is 403 with the reason;
- for another release: a command names the release it is for (a button carries it; a command that names
  none is pinned here to the release current when it arrives, and the answer says which). One that names a
  release other than the current one (an old button, a stale script) is refused with 409 and the reason,
  and nothing is published; decide() refuses it too if the release changes before the event is decided;
- either way the decision is appended to the audit log (audit before publish: no unaudited command).

`status` and `history` only read the state. Results carry an HTTP status so every surface answers alike.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from functions import catalog, present
from functions.audit import AuditLog, AuditRecord
from functions.chatops.authz import Requester, authorize
from functions.core.events import ACTIONS, MUTATING_ACTIONS, Command
from functions.core.gates import skipped_by_promote
from functions.core.machine import release_mismatch
from functions.core.policy import Policy
from functions.core.state import AppState, iso
from functions.core.values import value
from functions.errors import GraylaneError, NotFound, ProviderUnavailable, Reject

if TYPE_CHECKING:
    from functions.providers.stores.base import StateStore
    from functions.runner import Bus, PolicySource

log = logging.getLogger("graylane.approvals")

SOURCE_PREFIX = "/graylane/approvals"


@value
class CommandRequest:
    app: str
    action: str
    requester: Requester
    gate: str = ""
    weight: int | None = None
    params: dict[str, int] = field(default_factory=dict)
    version: str = ""  # rollback: where to go; any other action: the target version of `release`
    reason: str = ""
    limit: int = 20  # history
    delivery: str = ""  # the platform's delivery id: a redelivery publishes the same event id
    release: str = ""  # the release it is for; empty: the one current now (the answer names it)


@value
class Result:
    status: int  # HTTP: 200 read, 202 accepted, 400 invalid, 403 denied, 404 unknown app, 409 refused, 503 unavailable
    outcome: str  # ok | accepted | denied | invalid | refused | not-found | unavailable
    message: str
    app: str = ""
    action: str = ""
    event_id: str = ""
    gate: str = ""
    data: Any = None  # status: the status object; history: the entries
    lines: tuple[str, ...] = ()  # the same for people
    release: str = ""  # a command: the release it is for
    version: str = ""  # ... and that release's target version

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "outcome": self.outcome,
            "message": self.message,
            "app": self.app,
            "action": self.action,
        }
        if self.event_id:
            out["eventId"] = self.event_id
        if self.gate:
            out["gate"] = self.gate
        if self.release:
            out["release"] = self.release
        if self.version:
            out["version"] = self.version
        if self.data is not None:
            out["data"] = self.data
        return out


class _About(TypedDict, total=False):  # the fields of a Result that say what it answers
    app: str
    action: str
    gate: str


class _Pin(TypedDict):  # ... and the release a command is for
    release: str
    version: str


class Approvals:
    def __init__(
        self,
        store: StateStore,
        policies: PolicySource,
        bus: Bus | None,
        audit: AuditLog,
        clock: Callable[[], datetime] | None = None,
        source_prefix: str = SOURCE_PREFIX,
    ) -> None:
        self.store = store
        self.policies = policies
        self.bus = bus
        self.audit = audit
        self.clock = clock or (lambda: datetime.now(UTC))
        self.source_prefix = source_prefix

    # -- entry point -----------------------------------------------------------------------------
    def execute(self, req: CommandRequest) -> Result:
        base = _About(app=req.app, action=req.action)
        if req.action not in ACTIONS:
            return Result(
                400,
                "invalid",
                f"unknown action {req.action[:40]!r}; expected one of {', '.join(ACTIONS)}",
                **base,
            )
        if not catalog.is_app(req.app):
            return Result(400, "invalid", f"app {req.app[:80]!r} is not {catalog.APP_EXPECTED}", **base)
        policy = self.policy(req.app)
        if policy is None:
            return Result(404, "not-found", f"no ReleasePolicy for {req.app}", **base)
        try:
            state = self.state(req.app)
        except ProviderUnavailable as err:
            return Result(503, "unavailable", f"state of {req.app} could not be read: {err}", **base)
        if req.action not in MUTATING_ACTIONS:
            return self._read(req, policy, state)
        return self._command(req, policy, state)

    # -- reads ------------------------------------------------------------------------------------
    def policy(self, app: str) -> Policy | None:
        getter = getattr(self.policies, "get", None)
        try:
            if getter is not None:
                policy: Policy = getter(app)
                return policy
            return next((p for p in self.policies.all() if p.app == app), None)
        except NotFound:
            return None

    def state(self, app: str) -> AppState:
        try:
            doc, _ = self.store.load(app)
        except GraylaneError as err:
            raise ProviderUnavailable(str(err)) from err
        return AppState.from_json(doc) if doc else AppState(app=app)

    def apps(self) -> list[AppState]:
        """The state of every app in the store (audit documents left out); ProviderUnavailable when down."""
        from functions.audit import is_audit_key

        try:
            keys = [k for k in self.store.list_apps() if not is_audit_key(k)]
        except GraylaneError as err:
            raise ProviderUnavailable(str(err)) from err
        return [self.state(k) for k in keys]

    def _read(self, req: CommandRequest, policy: Policy, state: AppState) -> Result:
        base = _About(app=req.app, action=req.action)
        if req.action == "history":
            lines = present.history(state, req.limit)
            message = (
                f"history of {req.app}: {len(lines)} entries" if lines else f"{req.app} has no history yet"
            )
            return Result(
                200, "ok", message, data=present.history_json(state, req.limit), lines=tuple(lines), **base
            )
        text = present.summary(state, policy, self.clock())
        return Result(
            200,
            "ok",
            text.splitlines()[0],
            data=present.status(state, policy, self.clock()),
            lines=tuple(text.splitlines()),
            **base,
        )

    # -- commands ---------------------------------------------------------------------------------
    def _command(self, req: CommandRequest, policy: Policy, state: AppState) -> Result:
        rel = state.release
        waiting = rel.gate if rel is not None and rel.active else ""
        # approve/reject name the gate they were authorised for: a release that moved on to another gate
        # before the event is decided must not take this approval as one for the new gate
        gate = (req.gate or waiting) if req.action in ("approve", "reject") else ""
        base = _About(app=req.app, action=req.action, gate=gate)
        if req.action in ("approve", "reject") and not gate:
            return self._refuse(
                req,
                409,
                "invalid",
                f"{req.app} is not waiting at a gate; name the gate to {req.action}",
                gate,
            )
        req = pinned(req, state)  # a command names its release: the one it was sent for, or the current one
        event_id = self._event_id(req)
        command = Command(
            id=event_id,
            app=req.app,
            action=req.action,
            actor=req.requester.actor,
            gate=gate,
            weight=req.weight,
            params=dict(req.params),
            version=req.version,
            reason=req.reason,
            release=req.release,
        )
        event = catalog.from_domain(command, source=f"{self.source_prefix}/{req.requester.via}")
        try:
            catalog.to_domain(event)  # the consumer's own checks, before anything is published
        except Reject as err:
            return self._refuse(req, 400, "invalid", str(err).split(": ", 1)[-1], gate)
        verdict = authorize(
            policy.approvers,
            req.requester,
            req.action,
            gate,
            skipped_by_promote(policy.stages, state.release),
        )
        if not verdict.allowed:
            return self._refuse(req, 403, "denied", verdict.reason, gate)
        stale = release_mismatch(
            state, command
        )  # decide()'s own rule, answered now rather than after the broker
        if stale:
            return self._refuse(req, 409, "refused", stale, gate)
        pin = _Pin(release=req.release, version=_target(req, state))
        try:
            self._audit(req, "accepted", gate, verdict.reason, event_id)
        except GraylaneError as err:
            return Result(
                503,
                "unavailable",
                f"the audit log could not be written, nothing was done: {err}",
                **base,
                **pin,
            )
        try:
            if self.bus is None:  # a reader's Approvals (the CLI decides its commands itself: cli_local)
                raise GraylaneError("no broker is configured")
            self.bus.publish(event)
        except GraylaneError as err:
            log.warning("command %s for %s not published: %s", event_id, req.app, err)
            self._audit_quietly(req, "failed", gate, f"not published: {err}", event_id)
            return Result(
                503, "unavailable", f"the command could not be handed to the broker: {err}", **base, **pin
            )
        what = f"{req.action} gate {gate}" if gate else req.action
        of = f" release {req.release} ({pin['version']})" if req.release else ""
        return Result(
            202,
            "accepted",
            f"accepted: {what} on {req.app}{of} by {req.requester.shown} (event {event_id})",
            event_id=event_id,
            **base,
            **pin,
        )

    def _refuse(self, req: CommandRequest, status: int, outcome: str, reason: str, gate: str) -> Result:
        self._audit_quietly(req, outcome, gate, reason, "")
        verb = "denied" if outcome == "denied" else "refused"
        return Result(
            status,
            outcome,
            f"{verb}: {reason}",
            app=req.app,
            action=req.action,
            gate=gate,
            release=req.release,
        )

    def _audit(self, req: CommandRequest, outcome: str, gate: str, reason: str, event_id: str) -> None:
        detail: dict[str, Any] = {
            k: v
            for k, v in (
                ("weight", req.weight),
                ("params", dict(req.params)),
                ("version", req.version),
                ("reason", req.reason),
                ("release", req.release),
            )
            if v not in (None, "", {})
        }
        self.audit.record(
            AuditRecord(
                at=iso(self.clock()),
                app=req.app,
                action=req.action,
                outcome=outcome,
                user=req.requester.user,
                via=req.requester.via,
                channel=req.requester.channel,
                gate=gate,
                detail=detail,
                reason=reason,
                event_id=event_id,
            )
        )

    def _audit_quietly(
        self, req: CommandRequest, outcome: str, gate: str, reason: str, event_id: str
    ) -> None:
        """A refusal is answered even when the audit log is down (it did nothing); the failure is logged."""
        try:
            self._audit(req, outcome, gate, reason, event_id)
        except GraylaneError as err:
            log.error(
                "audit of %s %s by %s (%s) failed: %s", req.action, req.app, req.requester.user, outcome, err
            )

    def _event_id(self, req: CommandRequest) -> str:
        if not req.delivery:
            return f"cmd-{uuid.uuid4().hex}"
        key = "\x1f".join((req.requester.via, req.delivery, req.app, req.action))
        return "cmd-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def pinned(req: CommandRequest, state: AppState) -> CommandRequest:
    """`req` naming its release: as sent (a button, `--release`), or else the app's current release, with
    that release's target version (a rollback's version stays where to go)."""
    rel = state.release
    if req.release or rel is None:
        return req
    version = req.version if req.action == "rollback" else (req.version or rel.target.version)
    return replace(req, release=rel.id, version=version)


def _target(req: CommandRequest, state: AppState) -> str:
    """The target version of the release `req` is for (shown in the answer)."""
    rel = state.release
    if rel is not None and rel.id == req.release:
        return rel.target.version
    return "" if req.action == "rollback" else req.version
