"""A CLI command run on the local store: one Command event handled by the runner, in this process.

The answer has the approval API's shape, so the CLI prints both alike. Whoever runs it can write the
store, so approvers are not consulted; the decision is still audited and lands in the release history.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from functions import catalog, present
from functions.approvals import Approvals
from functions.audit import AuditRecord
from functions.chatops.authz import Requester
from functions.core.events import Command
from functions.core.state import iso
from functions.errors import GraylaneError, Reject

if TYPE_CHECKING:
    from functions.runner import Runner


def run_command(
    runner: Runner, approvals: Approvals, app: str, action: str, who: Requester, fields: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    base = {"app": app, "action": action}
    policy = approvals.policy(app)
    if policy is None:
        return 404, {**base, "outcome": "not-found", "error": f"no ReleasePolicy for {app}"}
    event_id = f"cli-{uuid.uuid4().hex}"
    cmd = Command(
        id=event_id,
        app=app,
        action=action,
        actor=who.actor,
        gate=fields.get("gate", ""),
        weight=fields.get("weight"),
        params=dict(fields.get("params") or {}),
        version=fields.get("version", ""),
        reason=fields.get("reason", ""),
        release=fields.get("release", ""),
    )
    try:
        catalog.to_domain(catalog.from_domain(cmd, source="/graylane/cli"))
    except Reject as err:
        return 400, {**base, "outcome": "invalid", "error": str(err).split(": ", 1)[-1]}
    outcome = runner.handle(cmd)[0]
    state = approvals.state(app)
    mine = [h for h in state.history if h.event_id == event_id]
    entry = next((h for h in mine if h.action == "ignored"), mine[0] if mine else None)
    refused = outcome.status in ("ignored", "rejected") or (entry is not None and entry.action == "ignored")
    reason = (entry.reason if entry is not None else outcome.reason) or outcome.status
    _audit(approvals, app, action, who, cmd, "refused" if refused else "accepted", reason, event_id)
    if refused:
        return 409, {**base, "outcome": "refused", "error": f"refused: {reason}", "eventId": event_id}
    rel = state.release
    where = f" (release {rel.id} now {rel.phase.value})" if rel is not None else ""
    message = f"{action} {app}: {reason}{where}"
    return 202, {
        **base,
        "outcome": "accepted",
        "message": message,
        "eventId": event_id,
        "data": present.status(state, policy, approvals.clock()),
    }


def _audit(
    approvals: Approvals,
    app: str,
    action: str,
    who: Requester,
    cmd: Command,
    outcome: str,
    reason: str,
    event_id: str,
) -> None:
    detail = {
        k: v
        for k, v in (
            ("weight", cmd.weight),
            ("params", dict(cmd.params)),
            ("version", cmd.version),
            ("reason", cmd.reason),
            ("release", cmd.release),
        )
        if v not in (None, "", {})
    }
    try:
        approvals.audit.record(
            AuditRecord(
                at=iso(approvals.clock()),
                app=app,
                action=action,
                outcome=outcome,
                user=who.user,
                via="cli",
                gate=cmd.gate,
                detail=detail,
                reason=reason,
                event_id=event_id,
            )
        )
    except GraylaneError:
        pass  # the command is already in the release history; the audit copy is best effort here
