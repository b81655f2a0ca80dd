"""Plain formatting of release state for people: the status row, history lines, kubectl-like tables.

Used by chat replies, the approval API and the CLI, so every surface says the same thing the same way.
No I/O; `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from functions.core.baseline import compared
from functions.core.policy import ApprovalStage, Policy
from functions.core.state import AppState, HistoryEntry, Release, parse_iso

LIST_COLUMNS = ("namespace", "app", "release", "phase", "stage", "weight", "verdict", "age")


def age(since: str, now: datetime) -> str:
    """kubectl's compact age: 45s, 12m, 5h, 3d; '-' when unknown."""
    if not since:
        return "-"
    try:
        seconds = max(0, int((now - parse_iso(since)).total_seconds()))
    except ValueError:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def stage_label(policy: Policy | None, index: int) -> str:
    """`canary`, `approval:promote`, ... for stage `index` of the policy; the number when unknown."""
    if policy is None or not 0 <= index < len(policy.stages):
        return str(index + 1) if index >= 0 else "-"
    stage = policy.stages[index]
    kind = type(stage).__name__.removesuffix("Stage").lower()
    return f"{kind}:{stage.name}" if isinstance(stage, ApprovalStage) else kind


def status(state: AppState, policy: Policy | None, now: datetime) -> dict[str, Any]:
    """The status of an app as plain JSON values (the API answer, the CLI's -o json, the chat reply)."""
    rel = state.release
    out: dict[str, Any] = {
        "app": state.app,
        "stable": state.stable.version or "-",
        "routes": {
            "stable": state.routes.stable,
            "canary": state.routes.canary,
            "abTest": bool(state.routes.match),
            **({"mirror": state.routes.mirror} if state.routes.mirror else {}),
        },  # % copied to the canary
        "release": None,
    }
    if rel is not None:
        latest = rel.verdicts[-1] if rel.verdicts else None
        out["release"] = {
            "id": rel.id,
            "version": rel.target.version,
            "from": rel.origin.version,
            "kind": rel.kind,
            "phase": rel.phase.value,
            "stage": stage_label(policy, rel.stage),
            "stageIndex": rel.stage,
            "step": rel.step,
            "weight": rel.weight,
            "gate": rel.gate,
            "verdict": latest.verdict if latest else "",
            "verdictReason": latest.reason if latest else "",
            "startedAt": rel.started_at,
            "endedAt": rel.ended_at,
            "reason": rel.reason,
            "timer": {"name": rel.timer.name, "due": rel.timer.due} if rel.timer else None,
            "wave": rel.wave,
            "plannedWeight": rel.planned_weight or rel.weight,
            "exposure": exposure_note(rel),
            "guard": guard_note(rel),
            "gates": [
                {"gate": g.gate, "decision": g.decision, "at": g.at, "by": g.by.user, "via": g.by.via}
                for g in rel.gates
            ],
        }
    if state.routes.baseline:  # a fresh baseline takes its share (functions/core/baseline.py)
        out["routes"]["baseline"] = state.routes.baseline
    if rel is not None and rel.baseline_deployed:
        workload = policy.baseline_workload if policy is not None else ""
        out["release"]["baseline"] = {
            "workload": workload,
            "weight": rel.baseline_weight,
            "image": rel.origin.image,
            "compared": policy is not None and compared(policy, rel),
        }
    out["row"] = row(state, policy, now)
    return out


def exposure_note(rel: Release) -> str:
    """Why the canary runs below its step's planned weight ('' when it does not)."""
    if not rel.active or not rel.planned_weight or rel.weight >= rel.planned_weight:
        return ""
    e = rel.evidence
    why = e.cap_reason if e is not None and e.cap else "probe weight: no evidence about the canary yet"
    return f"{rel.weight}% of the planned {rel.planned_weight}%: {why}"


def guard_note(rel: Release) -> dict[str, Any] | None:
    """The guard's evidence so far: log e-values against log(1/alpha), and what they were computed from."""
    e = rel.evidence
    if e is None:
        return None
    from functions.core.evidence import log_evidence

    return {
        "errorsLogEvidence": round(log_evidence(e.errors), 3),
        "latencyLogEvidence": round(log_evidence(e.latency), 3),
        "canary": {"requests": e.canary_requests, "errors": e.canary_errors, "slow": e.slow_canary},
        "stable": {"requests": e.stable_requests, "errors": e.stable_errors, "slow": e.slow_stable},
        "latencyBoundMs": e.bound_ms,
        "cap": e.cap,
    }


def row(state: AppState, policy: Policy | None, now: datetime) -> dict[str, str]:
    """One line of `graylane list`: NAMESPACE APP RELEASE PHASE STAGE WEIGHT VERDICT AGE."""
    namespace, _, name = state.app.partition("/")
    rel = state.release
    if rel is None:
        return {
            "namespace": namespace,
            "app": name,
            "release": "-",
            "phase": "stable",
            "stage": "-",
            "weight": "0",
            "verdict": "-",
            "age": "-",
        }
    stage = stage_label(policy, rel.stage)
    if rel.gate and not stage.endswith(f":{rel.gate}"):  # a wave gate waits before the stage itself
        stage += f" ({rel.gate})"
    return {
        "namespace": namespace,
        "app": name,
        "release": f"{rel.id} {rel.target.version}".strip(),
        "phase": rel.phase.value,
        "stage": stage if rel.active else "-",
        "weight": str(rel.weight),
        "verdict": rel.verdicts[-1].verdict if rel.verdicts else "-",
        "age": age(rel.started_at, now),
    }


def summary(state: AppState, policy: Policy | None, now: datetime) -> str:
    """A few lines for a chat reply or `graylane status`."""
    rel = state.release
    head = f"{state.app}: stable {state.stable.version or '(none)'}"
    if rel is None:
        return head + ", no release yet"
    r = row(state, policy, now)
    lines = [
        head,
        f"release {rel.id} {rel.origin.version or '-'} -> {rel.target.version} ({rel.kind}): {r['phase']}"
        + (f", {rel.reason}" if rel.reason and not rel.active else ""),
    ]
    if rel.active:
        lines.append(
            f"stage {rel.stage + 1} {r['stage']}, canary weight {rel.weight}%, "
            f"traffic {state.routes.stable}/{state.routes.canary}"
            + (" with A/B match" if state.routes.match else "")
            + (
                f", fresh baseline {state.routes.baseline}% (the canary is compared with it)"
                if state.routes.baseline
                else ""
            )
            + (
                f", {state.routes.mirror}% of the requests mirrored to the canary (its answers discarded)"
                if state.routes.mirror
                else ""
            )
        )
        if note := exposure_note(rel):
            lines.append(f"exposure: {note}")
        if rel.gate:
            lines.append(f"waiting at gate {rel.gate}")
        if rel.timer:
            lines.append(f"next: {rel.timer.name} due {rel.timer.due}")
    if rel.verdicts:
        v = rel.verdicts[-1]
        lines.append(f"latest verdict: {v.verdict}" + (f" ({v.reason})" if v.reason else ""))
    return "\n".join(lines)


def history_line(entry: HistoryEntry) -> str:
    when = entry.at[:19].replace("T", " ")
    phases = (
        f" {entry.phase_from}->{entry.phase_to}"
        if entry.phase_from and entry.phase_from != entry.phase_to
        else ""
    )
    who = ""
    if entry.by is not None and entry.by.via != "system":
        who = f" by {entry.by.user} via {entry.by.via}" + (
            f" in {entry.by.channel}" if entry.by.channel else ""
        )
    weight = f" weight {entry.weight}" if entry.weight and entry.action in ("weight", "step", "stage") else ""
    reason = f": {entry.reason}" if entry.reason else ""
    return f"{when} {entry.release or '-'} {entry.action}{phases}{weight}{reason}{who}"


def history(state: AppState, limit: int = 20) -> list[str]:
    return [history_line(h) for h in state.history[-limit:]]


def history_json(state: AppState, limit: int = 20) -> list[dict[str, Any]]:
    out = []
    for h in state.history[-limit:]:
        item: dict[str, Any] = {
            "at": h.at,
            "release": h.release,
            "action": h.action,
            "event": h.event,
            "eventId": h.event_id,
            "phaseFrom": h.phase_from,
            "phaseTo": h.phase_to,
            "stage": h.stage,
            "step": h.step,
            "weight": h.weight,
            "reason": h.reason,
        }
        if h.by is not None:
            item["by"] = {"user": h.by.user, "via": h.by.via, "channel": h.by.channel}
        if h.scheduled_at:
            item["scheduledAt"] = h.scheduled_at
        out.append(item)
    return out


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """kubectl-style: upper-case headers, columns padded to their widest cell, three spaces apart."""
    cells = [[c.upper() for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )
