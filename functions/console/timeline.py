"""A release's timeline from its stored state alone (pure: state + policy + now in, plain values and SVG out).

- weights: the desired canary weight after every transition of the release (its history), and what the
  router is told now; a routed weight below the desired one is shown as capped;
- canary vs stable success rate and latency: the values recorded in the release's verdicts (the metrics whose
  template is success-rate / latency, or whose name says so), each verdict with every metric's values, reason
  and the query that produced it;
- gates: every decision with who made it, via what, when and with which parameters, and the gate waited at.

The plots reuse the HTML report's SVG helpers (functions/local/report.py), so the console and
`graylane report` draw the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from functions.core.policy import Policy
from functions.core.state import AppState, VerdictRecord, parse_iso
from functions.local.report import COLOURS, Frame, Series, chart, dots


def _t(start: str, at: str) -> float:
    try:
        return max(0.0, round((parse_iso(at) - parse_iso(start)).total_seconds(), 3))
    except ValueError:
        return 0.0


def _kind(policy: Policy | None, name: str) -> str:
    """success | latency | '' for the metric called `name`."""
    template = ""
    if policy is not None and policy.analysis is not None:
        template = next((m.template for m in policy.analysis.metrics if m.name == name), "")
    probe = f"{template} {name}".lower()
    if "success" in probe:
        return "success"
    if "latency" in probe or "duration" in probe:
        return "latency"
    return ""


def model(state: AppState, policy: Policy | None, now: datetime) -> dict[str, Any]:
    """The timeline of the app's current (or latest) release as plain values; {} without a release."""
    rel = state.release
    if rel is None:
        return {}
    start = rel.started_at
    end = rel.ended_at or (now.isoformat() if rel.active else "")
    x_max = max(_t(start, end) if end else 0.0, 1.0)
    weights: list[tuple[float, float]] = [(0.0, 0.0)]
    for h in state.history:
        if h.release == rel.id and h.weight is not None:
            weights.append((_t(start, h.at), float(h.weight)))
    weights.append((x_max, float(rel.weight)))
    routed = state.routes.canary if rel.active else 0
    success: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    for v in rel.verdicts:
        t = _t(start, v.at)
        for m in v.metrics:
            kind = _kind(policy, m.name)
            if kind == "success":
                success.append({"t": t, "canary": _pct(m.value), "stable": _pct(m.stable_value)})
            elif kind == "latency":
                latency.append({"t": t, "canary": m.value, "stable": m.stable_value})
    gates = [
        {
            "t": _t(start, g.at),
            "gate": g.gate,
            "decision": g.decision,
            "at": g.at,
            "user": g.by.user,
            "via": g.by.via,
            "channel": g.by.channel,
            "params": dict(g.params),
        }
        for g in rel.gates
    ]
    return {
        "release": rel.id,
        "start": start,
        "end": rel.ended_at,
        "xMax": x_max,
        "weights": weights,
        "weight": rel.weight,
        "routed": routed,
        "capped": bool(rel.active and routed < rel.weight),
        "success": success,
        "latency": latency,
        "gates": gates,
        "waiting": rel.gate,
        "verdicts": [verdict_row(start, v) for v in reversed(rel.verdicts)],
    }


def _pct(v: float | None) -> float | None:
    if v is None:
        return None
    return v * 100 if v <= 1.0 else v


def verdict_row(start: str, v: VerdictRecord) -> dict[str, Any]:
    return {
        "t": _t(start, v.at),
        "at": v.at,
        "verdict": v.verdict,
        "reason": v.reason,
        "metrics": [
            {
                "name": m.name,
                "verdict": m.verdict,
                "reason": m.reason,
                "value": m.value,
                "stable": m.stable_value,
                "query": m.query,
            }
            for m in v.metrics
        ],
    }


def svg(data: dict[str, Any]) -> list[str]:
    """The plots of a timeline model: weights, success rate, latency (when measured), verdicts."""
    if not data:
        return []
    x_max = data["xMax"]
    marks = [
        (g["t"], f"gate {g['gate']} {g['decision']} by {g['user']} via {g['via']}") for g in data["gates"]
    ]
    plots = [
        chart(
            "Canary weight (%): desired; dashed marks are gate decisions",
            (Series("desired", COLOURS["canary"], tuple(data["weights"]), step=True),),
            Frame(x_max, 0, 100, height=180),
            "%",
            marks,
        )
    ]
    if data["success"]:
        rows = data["success"]
        values = [v for r in rows for v in (r["canary"], r["stable"]) if v is not None]
        low = max(0.0, min([*values, 90.0]) // 5 * 5) if values else 0.0
        plots.append(
            chart(
                "Success rate (%) from the verdicts: canary vs stable",
                (
                    Series("stable", COLOURS["stable"], _series(rows, "stable")),
                    Series("canary", COLOURS["canary"], _series(rows, "canary")),
                ),
                Frame(x_max, low, 100, height=180),
                "%",
                marks,
            )
        )
    if data["latency"]:
        rows = data["latency"]
        top = max([v for r in rows for v in (r["canary"], r["stable"]) if v is not None] + [1.0])
        plots.append(
            chart(
                "Latency (ms) from the verdicts: canary vs stable",
                (
                    Series("stable", COLOURS["stable"], _series(rows, "stable")),
                    Series("canary", COLOURS["canary"], _series(rows, "canary")),
                ),
                Frame(x_max, 0, float(int(top * 1.25) + 1), height=180),
                "",
                marks,
            )
        )
    verdicts = data["verdicts"]
    plots.append(
        dots(
            "Verdicts",
            [data["release"]],
            [(v["t"], 0, v["verdict"], f"+{v['t']:.0f}s {v['verdict']} {v['reason']}") for v in verdicts],
            Frame(x_max, 0, 1, height=90, left=120),
        )
    )
    return plots


def _series(rows: list[dict[str, Any]], key: str) -> tuple[tuple[float, float], ...]:
    return tuple((r["t"], float("nan") if r[key] is None else float(r[key])) for r in rows)
