"""The HTML release report: one self-contained file with inline SVG plots drawn here (no matplotlib).

Plots: canary/stable weights over time, canary vs stable success rate and latency (sampled from
Prometheus during the run), the rate limit in force with the 429s it caused, and the verdicts
timeline; tables: gates with who approved and when, milestones, and the release history.

The input is a plain JSON-able dict (`RunData`), built while the demo runs (`Recorder`) or, for
`graylane report --store`, from an app's stored state alone (`from_state`: weights and gates from the
history, verdicts of the current release; no Prometheus samples).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from functions.core.policy import Policy
from functions.core.state import AppState, parse_iso
from functions.core.values import value

RunData = dict[str, Any]
Rows = Sequence[dict[str, Any]]  # samples or states over time, each with its "t" (seconds since the start)
Marks = list[tuple[float, str]]  # milestones: (t, label)
Bands = list[tuple[float, float, str]]  # shaded spans: (from, to, label)
COLOURS = {
    "stable": "#2563eb",
    "canary": "#ea580c",
    "planned": "#9ca3af",
    "pass": "#16a34a",
    "fail": "#dc2626",
    "inconclusive": "#ca8a04",
    "limit": "#7c3aed",
    "denied": "#dc2626",
    "grid": "#e5e7eb",
}


def empty(title: str, app: str, started_at: str) -> RunData:
    return {
        "title": title,
        "app": app,
        "startedAt": started_at,
        "elapsed": 0.0,
        "milestones": [],
        "states": [],
        "metrics": [],
        "verdicts": [],
        "gates": [],
        "history": [],
        "summary": {},
    }


def seconds_since(start: str, at: str) -> float:
    try:
        return round((parse_iso(at) - parse_iso(start)).total_seconds(), 3)
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------------------------------- collecting


@dataclass
class Recorder:
    """Accumulates RunData from state snapshots and metric samples (one thread calls it at a time)."""

    data: RunData
    _verdicts: set[tuple[str, str]] = field(default_factory=set)
    _gates: set[tuple[str, str, str]] = field(default_factory=set)

    def milestone(self, t: float, label: str) -> None:
        self.data["milestones"].append({"t": round(t, 2), "label": label})

    def state(self, t: float, state: AppState, policy: Policy | None) -> None:
        rel = state.release
        limit = state.protection.rate_limit
        snap = {
            "release": rel.id if rel else "",
            "version": rel.target.version if rel else state.stable.version,
            "phase": rel.phase.value if rel else "stable",
            "stage": rel.stage if rel else -1,
            "stable": state.routes.stable,
            "canary": state.routes.canary,
            "ab": bool(state.routes.match),
            "planned": (rel.planned_weight or state.routes.canary)
            if rel and rel.active
            else state.routes.canary,
            "rateLimit": limit.average if limit else None,
            "gate": rel.gate if rel else "",
        }
        states = self.data["states"]
        if not states or {k: v for k, v in states[-1].items() if k != "t"} != snap:
            states.append({"t": round(t, 2), **snap})
        if rel is None:
            return
        start = self.data["startedAt"]
        for v in rel.verdicts:
            if (rel.id, v.at) not in self._verdicts:
                self._verdicts.add((rel.id, v.at))
                self.data["verdicts"].append(
                    {
                        "t": seconds_since(start, v.at),
                        "release": rel.id,
                        "version": rel.target.version,
                        "verdict": v.verdict,
                        "reason": v.reason,
                    }
                )
        for g in rel.gates:
            if (rel.id, g.gate, g.at) not in self._gates:
                self._gates.add((rel.id, g.gate, g.at))
                self.data["gates"].append(
                    {
                        "t": seconds_since(start, g.at),
                        "release": rel.id,
                        "version": rel.target.version,
                        "gate": g.gate,
                        "decision": g.decision,
                        "user": g.by.user,
                        "via": g.by.via,
                        "at": g.at,
                        "params": dict(g.params),
                    }
                )

    def metrics(self, t: float, sample: dict[str, float | None]) -> None:
        self.data["metrics"].append({"t": round(t, 2), **sample})

    def finish(self, state: AppState | None, elapsed: float, summary: dict[str, Any]) -> RunData:
        if state is not None:
            self.data["history"] = history_rows(state)
        self.data["elapsed"] = round(elapsed, 1)
        self.data["summary"] = summary
        return self.data


def history_rows(state: AppState) -> list[dict[str, Any]]:
    return [
        {
            "at": h.at,
            "release": h.release,
            "action": h.action,
            "phaseFrom": h.phase_from,
            "phaseTo": h.phase_to,
            "weight": h.weight,
            "by": f"{h.by.user} via {h.by.via}" if h.by else "",
            "reason": h.reason,
        }
        for h in state.history
    ]


_PLANNED = re.compile(r"of the planned (\d+)%")


def from_state(state: AppState, policy: Policy | None, title: str = "") -> RunData:
    """RunData from stored state only: weights and gates from the history, the current release's verdicts."""
    first = state.history[0].at if state.history else (state.release.started_at if state.release else "")
    data = empty(title or f"graylane report: {state.app}", state.app, first)
    rec = Recorder(data)
    for h in state.history:
        t = seconds_since(first, h.at)
        if h.weight is not None:
            planned = _PLANNED.search(h.reason)  # "...: 5% of the planned 20% (...)": capped by exposure
            data["states"].append(
                {
                    "t": t,
                    "release": h.release,
                    "version": "",
                    "phase": h.phase_to,
                    "stage": h.stage,
                    "stable": 100 - h.weight,
                    "canary": h.weight,
                    "ab": False,
                    "planned": int(planned.group(1)) if planned else h.weight,
                    "rateLimit": None,
                    "gate": "",
                }
            )
        if h.action in ("approved", "rejected", "gate-timeout"):
            gate = h.reason.split()[1] if h.reason.startswith("gate ") else ""
            data["gates"].append(
                {
                    "t": t,
                    "release": h.release,
                    "version": "",
                    "gate": gate,
                    "decision": h.action,
                    "user": h.by.user if h.by else "",
                    "via": h.by.via if h.by else "",
                    "at": h.at,
                    "params": {},
                }
            )
        if h.action in ("started", "promoted", "rolled-back", "protection", "alert"):
            rec.milestone(t, f"{h.release} {h.action}: {h.reason}"[:80])
    if state.release is not None:
        rec._gates.update((g["release"], g["gate"], g["at"]) for g in data["gates"])
        for v in state.release.verdicts:
            data["verdicts"].append(
                {
                    "t": seconds_since(first, v.at),
                    "release": state.release.id,
                    "version": state.release.target.version,
                    "verdict": v.verdict,
                    "reason": v.reason,
                }
            )
    last = state.history[-1].at if state.history else first
    return rec.finish(state, seconds_since(first, last), {"stable": state.stable.version or "-"})


# ---------------------------------------------------------------------------------------------- SVG


@value
class Series:
    name: str
    colour: str
    points: tuple[tuple[float, float], ...]
    step: bool = False  # hold each value until the next point (weights, limits)


@value
class Frame:
    """Plot area: x in seconds [0, x_max], y in [y_min, y_max]."""

    x_max: float
    y_min: float
    y_max: float
    width: int = 920
    height: int = 220
    left: int = 56
    right: int = 16
    top: int = 28
    bottom: int = 30

    def x(self, t: float) -> float:
        return self.left + (self.width - self.left - self.right) * max(0.0, min(t, self.x_max)) / (
            self.x_max or 1
        )

    def y(self, v: float) -> float:
        span = (self.y_max - self.y_min) or 1
        v = max(self.y_min, min(v, self.y_max))
        return self.top + (self.height - self.top - self.bottom) * (1 - (v - self.y_min) / span)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 6) for i in range(int((hi - first) / step) + 1)]


def _path(frame: Frame, s: Series) -> str:
    parts: list[str] = []
    prev: tuple[float, float] | None = None
    for t, v in s.points:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            prev = None  # a gap: no line across missing samples
            continue
        x, y = frame.x(t), frame.y(v)
        if prev is None:
            parts.append(f"M{x:.1f},{y:.1f}")
        elif s.step:
            parts.append(f"H{x:.1f}V{y:.1f}")
        else:
            parts.append(f"L{x:.1f},{y:.1f}")
        prev = (x, y)
    if s.step and prev is not None:
        parts.append(f"H{frame.x(frame.x_max):.1f}")
    return "".join(parts)


def chart(
    title: str,
    series: Sequence[Series],
    frame: Frame,
    unit: str = "",
    marks: Iterable[tuple[float, str]] = (),
    bands: Iterable[tuple[float, float, str]] = (),
) -> str:
    """An SVG line chart with axes, a legend, vertical milestone marks and shaded bands (t0, t1, label)."""
    f = frame
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {f.width} {f.height}" '
        f'role="img" aria-label="{_esc(title)}">',
        f'<text x="{f.left}" y="16" class="title">{_esc(title)}</text>',
    ]
    for t0, t1, label in bands:
        out.append(
            f'<rect x="{f.x(t0):.1f}" y="{f.top}" width="{max(1.0, f.x(t1) - f.x(t0)):.1f}" '
            f'height="{f.height - f.top - f.bottom}" fill="#fde68a" opacity="0.35"><title>{_esc(label)}'
            "</title></rect>"
        )
    for v in _ticks(f.y_min, f.y_max, 4):
        out.append(
            f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{f.y(v):.1f}" y2="{f.y(v):.1f}" '
            f'stroke="{COLOURS["grid"]}"/><text x="{f.left - 6}" y="{f.y(v) + 4:.1f}" class="ytick">'
            f"{v:g}{_esc(unit)}</text>"
        )
    for t in _ticks(0, f.x_max, 8):
        out.append(f'<text x="{f.x(t):.1f}" y="{f.height - 10}" class="xtick">{t:g}s</text>')
    for t, label in marks:
        out.append(
            f'<line x1="{f.x(t):.1f}" x2="{f.x(t):.1f}" y1="{f.top}" y2="{f.height - f.bottom}" '
            f'class="mark"><title>{_esc(label)}</title></line>'
        )
    for i, s in enumerate(series):
        d = _path(f, s)
        if d:
            out.append(
                f'<path d="{d}" fill="none" stroke="{s.colour}" stroke-width="2"><title>{_esc(s.name)}'
                "</title></path>"
            )
        lx = f.width - f.right - 150 * (len(series) - i)
        out.append(
            f'<rect x="{lx}" y="8" width="12" height="4" fill="{s.colour}"/>'
            f'<text x="{lx + 16}" y="14" class="legend">{_esc(s.name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def dots(title: str, rows: Sequence[str], points: Sequence[tuple[float, int, str, str]], frame: Frame) -> str:
    """A timeline of coloured dots: (t, row index, colour key, tooltip) with one labelled row per release."""
    f = frame
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {f.width} {f.height}" '
        f'role="img" aria-label="{_esc(title)}">',
        f'<text x="{f.left}" y="16" class="title">{_esc(title)}</text>',
    ]
    band = (f.height - f.top - f.bottom) / max(1, len(rows))
    for i, name in enumerate(rows):
        y = f.top + band * (i + 0.5)
        out.append(
            f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLOURS["grid"]}"/>'
            f'<text x="{f.left - 6}" y="{y + 4:.1f}" class="ytick">{_esc(name)}</text>'
        )
    for t in _ticks(0, f.x_max, 8):
        out.append(f'<text x="{f.x(t):.1f}" y="{f.height - 10}" class="xtick">{t:g}s</text>')
    for t, row, key, tip in points:
        y = f.top + band * (row + 0.5)
        out.append(
            f'<circle class="verdict {key}" cx="{f.x(t):.1f}" cy="{y:.1f}" r="5" '
            f'fill="{COLOURS.get(key, "#6b7280")}"><title>{_esc(tip)}</title></circle>'
        )
    for i, key in enumerate(("pass", "inconclusive", "fail")):
        lx = f.width - f.right - 120 * (3 - i)
        out.append(
            f'<circle cx="{lx}" cy="10" r="5" fill="{COLOURS[key]}"/>'
            f'<text x="{lx + 9}" y="14" class="legend">{key}</text>'
        )
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------- the page


def _points(rows: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[tuple[float, float], ...]:
    out = []
    for r in rows:
        v = r.get(key)
        out.append((float(r["t"]), float("nan") if v is None else float(v) * scale))
    return tuple(out)


def _ab_bands(states: Sequence[dict[str, Any]], x_max: float) -> list[tuple[float, float, str]]:
    bands, start, who = [], None, ""
    for s in states:
        if s.get("ab") and start is None:
            start, who = s["t"], f"A/B of {s.get('release', '')} {s.get('version', '')}"
        elif not s.get("ab") and start is not None:
            bands.append((start, s["t"], who))
            start = None
    if start is not None:
        bands.append((start, x_max, who))
    return bands


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc('' if c is None else c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(data: RunData) -> str:
    """The report page: the plots (traffic, success rate, latency, protection, verdicts), then the tables."""
    states, metrics, verdicts = data["states"], data["metrics"], data["verdicts"]
    x_max = max([data.get("elapsed") or 0.0, *(r["t"] for r in (*states, *metrics, *verdicts))] + [1.0])
    marks = [(m["t"], m["label"]) for m in data["milestones"]]
    bands = _ab_bands(states, x_max)
    plots = [
        chart(
            "Traffic weights (%) — shaded: A/B by header; planned: the step's weight before the exposure cap",
            (
                Series("stable", COLOURS["stable"], _points(states, "stable"), step=True),
                Series("canary", COLOURS["canary"], _points(states, "canary"), step=True),
                Series(
                    "planned",
                    COLOURS["planned"],
                    _points([s for s in states if "planned" in s], "planned"),
                    step=True,
                ),
            ),
            Frame(x_max, 0, 100),
            "%",
            marks,
            bands,
        )
    ]
    if metrics:
        plots += _metric_plots(states, metrics, x_max, marks, bands)
    plots.append(_verdict_plot(verdicts, x_max))
    return _page(data, "".join(plots), *_tables(data))


def _metric_plots(states: Rows, metrics: Rows, x_max: float, marks: Marks, bands: Bands) -> list[str]:
    """Success rate, latency and protection over time, from the Prometheus samples."""
    top = max([v for r in metrics for v in (r.get("stableMs"), r.get("canaryMs")) if v is not None] + [1.0])
    peak = max([r.get("denied") or 0.0 for r in metrics] + [s.get("rateLimit") or 0 for s in states] + [1.0])
    return [
        chart(
            "Success rate (%), 5 s rate from Prometheus",
            (
                Series("stable", COLOURS["stable"], _points(metrics, "stableSuccess", 100)),
                Series("canary", COLOURS["canary"], _points(metrics, "canarySuccess", 100)),
            ),
            Frame(x_max, _floor(metrics), 100),
            "%",
            marks,
            bands,
        ),
        chart(
            "Latency (ms), HAProxy average response time",
            (
                Series("stable", COLOURS["stable"], _points(metrics, "stableMs")),
                Series("canary", COLOURS["canary"], _points(metrics, "canaryMs")),
            ),
            Frame(x_max, 0, math.ceil(top * 1.2)),
            "",
            marks,
            bands,
        ),
        chart(
            "Protection: rate limit in force (req/s) and 429 answers per second",
            (
                Series("rate limit", COLOURS["limit"], _points(states, "rateLimit"), step=True),
                Series("429/s", COLOURS["denied"], _points(metrics, "denied")),
            ),
            Frame(x_max, 0, math.ceil(peak * 1.1)),
            "",
            marks,
        ),
    ]


def _verdict_plot(verdicts: Rows, x_max: float) -> str:
    """One row of dots per release: each analysis verdict, hovered for its reason."""
    releases = list(dict.fromkeys(v["release"] for v in verdicts))
    labels = [
        f"{r} {next((v['version'] for v in verdicts if v['release'] == r), '')}".strip() for r in releases
    ]
    return dots(
        "Analysis verdicts",
        labels or ["(none)"],
        [
            (
                v["t"],
                releases.index(v["release"]),
                v["verdict"],
                f"{v['t']:.1f}s {v['release']}: {v['verdict']} {v.get('reason', '')}",
            )
            for v in verdicts
        ],
        Frame(x_max, 0, 1, height=max(90, 50 + 36 * len(releases)), left=150),
    )


def _tables(data: RunData) -> tuple[str, str, str]:
    """The gates (who approved what, when), the milestones and the release history, as HTML tables."""
    gates = _table(
        ("time", "release", "version", "gate", "decision", "by", "via", "params"),
        (
            (
                f"+{g['t']:.1f}s",
                g["release"],
                g["version"],
                g["gate"],
                g["decision"],
                g["user"],
                g["via"],
                ", ".join(f"{k}={v}" for k, v in g.get("params", {}).items()),
            )
            for g in data["gates"]
        ),
        "gates",
    )
    milestones = _table(
        ("time", "what"), ((f"+{m['t']:.1f}s", m["label"]) for m in data["milestones"]), "milestones"
    )
    history = _table(
        ("at", "release", "action", "phase", "weight", "by", "reason"),
        (
            (
                h["at"][11:23],
                h["release"],
                h["action"],
                f"{h['phaseFrom']} → {h['phaseTo']}".strip(" →"),
                h["weight"],
                h["by"],
                h["reason"],
            )
            for h in data["history"]
        ),
        "history",
    )
    return gates, milestones, history


def _page(data: RunData, plots: str, gates: str, milestones: str, history: str) -> str:
    summary = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in data["summary"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(data["title"])}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 960px; color: #111827; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
svg.chart {{ width: 100%; height: auto; margin: 8px 0; }}
.title {{ font-weight: 600; font-size: 13px; }} .legend, .xtick, .ytick {{ font-size: 11px; fill: #374151; }}
.ytick {{ text-anchor: end; }} .xtick {{ text-anchor: middle; }}
.mark {{ stroke: #9ca3af; stroke-dasharray: 3 3; }}
table {{ border-collapse: collapse; width: 100%; font-size: 12px; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: 3px 6px; text-align: left; vertical-align: top; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }} dt {{ font-weight: 600; }}
</style></head><body>
<h1>{_esc(data["title"])}</h1>
<p>App <b>{_esc(data["app"])}</b>, started {_esc(data["startedAt"])}, {data.get("elapsed", 0):.1f} s.
Dashed lines mark milestones (hover for details).</p>
<dl class="summary">{summary}</dl>
<h2>Plots</h2>
{plots}
<h2>Gates: who approved, and when</h2>
{gates}
<h2>Milestones</h2>
{milestones}
<h2>History</h2>
{history}
</body></html>
"""


def _floor(metrics: Sequence[dict[str, Any]]) -> float:
    values = [v for r in metrics for v in (r.get("stableSuccess"), r.get("canarySuccess")) if v is not None]
    low = min(values, default=1.0) * 100
    return float(max(0, math.floor(min(low, 90) / 10) * 10))


def write_report(path: str | Path, data: RunData) -> Path:
    """Write the HTML report and its data (same name, .json) next to it; returns the HTML path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(data), encoding="utf-8")
    target.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return target


def load_data(path: str | Path) -> RunData:
    data: RunData = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


def now_iso() -> str:
    from datetime import UTC

    from functions.core.state import iso

    return iso(datetime.now(UTC))


def report_command(data_file: str | None, store_url: str, app: str, policies: str, out: str) -> Path:
    """`graylane report`: from a demo's saved data, or from one app's state in a store."""
    from functions.errors import ConfigError, NotFound

    if data_file and store_url:
        raise ConfigError("give either a data file or --store, not both")
    if data_file:
        try:
            return write_report(out, load_data(data_file))
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"report data {data_file}: cannot read it: {err}") from err
    if not store_url or not app:
        raise ConfigError("give a report data file, or --store URL and --app NAMESPACE/APP")
    from functions.providers.stores import make_store

    doc, _ = make_store(store_url).load(app)
    if not doc:
        raise NotFound(f"state of {app} not found in {store_url}")
    policy = None
    try:
        from functions.policies import DirectoryPolicies

        policy = DirectoryPolicies(policies).get(app)
    except NotFound:
        pass  # stage names are a nicety; the report stands without them
    return write_report(out, from_state(AppState.from_json(doc), policy))
