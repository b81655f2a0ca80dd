"""Which buttons an app's page offers a user, and reading a pressed one back from the form.

A button is offered when the release's phase takes the action (the machine's own transition table) and the
policy's approvers allow the user (`authorize`, as for every other surface); the ones the phase takes but the
user may not run are listed with the reason. The server checks again when the form arrives (Approvals.execute).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from functions.chatops.authz import Requester, authorize
from functions.core.gates import skipped_by_promote
from functions.core.machine import TRANSITIONS
from functions.core.policy import ApprovalStage, GateParam, Policy
from functions.core.state import AppState, Phase
from functions.core.values import value

ACTIONS = ("approve", "reject", "pause", "resume", "rollback")
FIELDS = ("action", "gate", "release", "version", "reason", "csrf")
PARAM_PREFIX = "param."
MAX_FIELD = {"gate": 128, "release": 160, "version": 200, "reason": 2048, "csrf": 128, "action": 20}


@value
class Button:
    action: str
    label: str
    allowed: bool
    reason: str  # why not (or which rule allows it)
    danger: bool = False


@value
class Offer:
    """What the page offers for the app's current release."""

    release: str  # the release the buttons are for ('' without an active release)
    gate: str
    buttons: tuple[Button, ...] = ()
    params: tuple[GateParam, ...] = ()  # approve: the gate's parameters
    versions: tuple[str, ...] = ()  # rollback of an ended release: where it can go
    origin: str = ""  # rollback of an active release: back to this version

    @property
    def allowed(self) -> tuple[Button, ...]:
        return tuple(b for b in self.buttons if b.allowed)

    def key(self) -> str:
        """Changes whenever what the form shows changes (the page re-renders the form only then)."""
        parts = [self.release, self.gate, ",".join(self.versions), self.origin]
        parts += [f"{b.action}:{b.allowed}:{b.reason}" for b in self.buttons]
        parts += [f"{p.name}:{p.default}:{p.min}:{p.max}" for p in self.params]
        return "|".join(parts)


def requester(user: str) -> Requester:
    return Requester(user=user, via="console")


def gate_params(policy: Policy | None, gate: str) -> tuple[GateParam, ...]:
    if policy is None or not gate:
        return ()
    stage = next((s for s in policy.stages if isinstance(s, ApprovalStage) and s.name == gate), None)
    return stage.params if stage is not None else ()


def offer(state: AppState, policy: Policy | None, user: str) -> Offer:
    rel = state.release
    if policy is None:
        return Offer(release=rel.id if rel else "", gate="")
    who = requester(user)
    skipped = skipped_by_promote(policy.stages, rel)
    buttons: list[Button] = []

    def add(action: str, label: str, gate: str = "", danger: bool = False) -> None:
        verdict = authorize(policy.approvers, who, action, gate, skipped)
        buttons.append(Button(action, label, verdict.allowed, verdict.reason, danger))

    if rel is not None and rel.active:
        takes = TRANSITIONS.get(rel.phase, {})
        if rel.gate and "approve" in takes:
            add("approve", f"Approve {rel.gate}", rel.gate)
        if rel.gate and "reject" in takes:
            add("reject", f"Reject {rel.gate}", rel.gate, danger=True)
        if "pause" in takes:
            add("pause", "Pause")
        if "resume" in takes and (rel.phase == Phase.PAUSED or rel.timer is None and not rel.gate):
            add("resume", "Resume")
        if "rollback" in takes:
            add("rollback", f"Roll back to {rel.origin.version or 'stable'}", danger=True)
        return Offer(
            release=rel.id,
            gate=rel.gate,
            buttons=tuple(buttons),
            params=gate_params(policy, rel.gate),
            origin=rel.origin.version,
        )
    versions = tuple(v.version for v in state.revisions if v.version)
    if versions:
        add("rollback", "Roll back", danger=True)
    return Offer(release=rel.id if rel else "", gate="", buttons=tuple(buttons), versions=versions)


@value
class Pressed:
    action: str
    gate: str = ""
    release: str = ""
    version: str = ""
    reason: str = ""
    params: dict[str, int] = field(default_factory=dict)


def read_form(form: Mapping[str, Any]) -> Pressed | str:
    """The button pressed and its fields, or the problem (naming the field) for a 400."""
    unknown = sorted(k for k in form if k not in FIELDS and not k.startswith(PARAM_PREFIX))
    if unknown:
        return f"unknown field(s) {', '.join(k[:40] for k in unknown[:5])}; allowed: {', '.join(FIELDS)}, param.NAME"
    values: dict[str, str] = {}
    for name in FIELDS:
        raw = form.get(name, "")
        if not isinstance(raw, str):
            return f"{name} must be text"
        if len(raw) > MAX_FIELD[name]:
            return f"{name} is longer than {MAX_FIELD[name]} characters"
        values[name] = raw.strip()
    if values["action"] not in ACTIONS:
        shown = values["action"][:20] or "(none)"
        return f"action {shown!r} is not allowed; expected one of {', '.join(ACTIONS)}"
    params = _params(form)
    if isinstance(params, str):
        return params
    if params and values["action"] != "approve":
        return f"param.{next(iter(params))}: gate parameters go with approve only"
    return Pressed(
        action=values["action"],
        gate=values["gate"],
        release=values["release"],
        version=values["version"],
        reason=values["reason"],
        params=params,
    )


def _params(form: Mapping[str, Any]) -> dict[str, int] | str:
    """The gate parameters filled in (param.NAME fields; an empty one leaves the gate's default), or the
    problem naming the field."""
    params: dict[str, int] = {}
    for key in form:
        if not key.startswith(PARAM_PREFIX):
            continue
        name, raw = key[len(PARAM_PREFIX) :], form[key]
        if not name.replace("-", "_").isidentifier() or len(name) > 64:
            return f"{key[:80]}: a gate parameter name is letters, digits, - and _"
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            continue  # left empty: the gate's default
        if not text.lstrip("-").isdigit() or len(text) > 12:
            return f"{key}: {text[:20]!r} is not a whole number"
        params[name] = int(text)
    return params
