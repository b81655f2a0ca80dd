"""A live view of releases in the terminal: plain ANSI, no curses.

On a TTY the view redraws one compact table (app, release, phase, stage, weights, last verdict, gate,
protection) plus the latest notices in place whenever something changes. Elsewhere (a pipe, a CI log)
it prints one line per change instead, so the output stays readable as a log.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from functions.core.policy import Policy
from functions.core.state import AppState, Phase
from functions.core.values import value

RESET, BOLD, DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
COLOURS = {
    Phase.SUCCEEDED: "\x1b[32m",
    Phase.ROLLED_BACK: "\x1b[31m",
    Phase.FAILED: "\x1b[31m",
    Phase.ABORTED: "\x1b[31m",
    Phase.FROZEN: "\x1b[35m",
    Phase.WAITING: "\x1b[33m",
    Phase.PAUSED: "\x1b[33m",
    Phase.PROGRESSING: "\x1b[36m",
    Phase.SUPERSEDED: "\x1b[2m",
}
COLUMNS = ("app", "release", "phase", "stage", "weights", "verdict", "gate", "protection")


@value
class Row:
    app: str
    release: str = "-"
    phase: str = "stable"
    stage: str = "-"
    stable: int = 100
    canary: int = 0
    ab: bool = False
    verdict: str = "-"
    gate: str = "-"
    protection: str = "-"

    @property
    def weights(self) -> str:
        return f"{self.stable}/{self.canary}" + (" +A/B" if self.ab else "")

    def cells(self) -> tuple[str, ...]:
        return (
            self.app,
            self.release,
            self.phase,
            self.stage,
            self.weights,
            self.verdict,
            self.gate,
            self.protection,
        )


def stage_name(policy: Policy | None, index: int) -> str:
    if policy is None or not 0 <= index < len(policy.stages):
        return "-"
    stage = policy.stages[index]
    name = getattr(stage, "name", "")
    return f"{stage.kind}:{name}" if name else stage.kind


def row_of(state: AppState, policy: Policy | None) -> Row:
    """What the table shows of one app."""
    rel = state.release
    limit = state.protection.rate_limit
    base = state.base_protection.rate_limit
    protection = "-"
    if limit is not None:
        protection = f"limit {limit.average}/s" + (
            f" (tightened from {base.average})" if base is not None and limit.average < base.average else ""
        )
    if state.protection.circuit_breaker is not None:
        protection += ", breaker armed"
    if rel is None:
        return Row(
            app=state.app,
            release=f"stable {state.stable.version or '-'}",
            protection=protection,
            stable=state.routes.stable,
            canary=state.routes.canary,
        )
    verdict = "-"
    if rel.verdicts:
        v = rel.verdicts[-1]
        verdict = v.verdict + (f" ({short(v.reason, 40)})" if v.reason and v.verdict != "pass" else "")
    step = (
        f" step {rel.step + 1}"
        if policy is not None
        and rel.active
        and rel.stage < len(policy.stages)
        and policy.stages[rel.stage].kind == "canary"
        else ""
    )
    return Row(
        app=state.app,
        release=f"{rel.id} {rel.target.version}",
        phase=rel.phase.value,
        stage=(stage_name(policy, rel.stage) + step) if rel.active else "-",
        stable=state.routes.stable,
        canary=state.routes.canary,
        ab=bool(state.routes.match),
        verdict=verdict,
        gate=rel.gate or "-",
        protection=protection,
    )


def short(reason: str, limit: int = 80) -> str:
    """A reason without the raw series a verdict carries, cut to `limit` characters."""
    text = reason.split(" [raw", 1)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event_type: str, data: dict[str, Any], policy: Policy | None) -> str:
    """One line for an emitted event: what happened to which release, in the policy's words."""
    kind = event_type.removeprefix("dev.graylane.")
    parts = [kind]
    if data.get("release"):
        parts.append(str(data["release"]))
    target = data.get("target")
    if isinstance(target, dict) and target.get("version"):
        parts.append(str(target["version"]))
    if kind == "release.stage.entered" and isinstance(data.get("stage"), int):
        parts.append(f"-> {stage_name(policy, data['stage'])}")
    if kind in ("release.step.advanced", "release.weight.changed") and data.get("weight") is not None:
        parts.append(f"canary {data['weight']}%")
    for key in ("gate", "decision", "verdict", "alertname", "status"):
        if data.get(key):
            parts.append(f"{key} {data[key]}")
    by = data.get("by") or data.get("actor")
    if isinstance(by, dict) and by.get("user"):
        parts.append(f"by {by['user']} via {by.get('via', '?')}")
    limit = data.get("rateLimit")
    if isinstance(limit, dict) and limit.get("average") is not None:
        parts.append(f"rate limit {limit['average']}/s")
    if data.get("reason"):
        parts.append(f"({short(str(data['reason']))})")
    return " ".join(parts)


class LiveView:
    """Redraws rows + notices on a TTY, else prints changes as lines. Thread-safe."""

    def __init__(
        self,
        stream: TextIO | None = None,
        tty: bool | None = None,
        notices: int = 6,
        title: str = "graylane",
        clock: Any = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.title = title
        self.clock = clock
        self.started = clock()
        self.notices: deque[str] = deque(maxlen=notices)
        self.rows: list[Row] = []
        self.status = ""
        self._drawn = 0
        self._lock = threading.Lock()

    def elapsed(self) -> str:
        return f"+{self.clock() - self.started:5.1f}s"

    def update(self, rows: list[Row], status: str | None = None) -> bool:
        """Show `rows` (and the status line); True when something changed."""
        with self._lock:
            changed = rows != self.rows or (status is not None and status != self.status)
            if not changed:
                return False
            old = {r.app: r for r in self.rows}
            self.rows = list(rows)
            if status is not None:
                self.status = status
            if self.tty:
                self._redraw()
            else:
                for r in rows:
                    if old.get(r.app) != r:
                        self._line("  ".join(f"{c}={v}" for c, v in zip(COLUMNS, r.cells(), strict=True)))
            return True

    def note(self, text: str) -> None:
        """A notice or a scenario step: kept under the table (TTY) or printed (log)."""
        with self._lock:
            self.notices.append(f"{self.elapsed()} {text}")
            if self.tty:
                self._redraw()
            else:
                self._line(text)

    def close(self) -> None:
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write("\n")
                self.stream.flush()
            self._drawn = 0

    # -- drawing ------------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.stream.write(f"{self.elapsed()} {text}\n")
        self.stream.flush()

    def render(self) -> list[str]:
        """The table's lines (with ANSI colours)."""
        cells = [COLUMNS, *(r.cells() for r in self.rows)]
        widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
        lines = [
            f"{BOLD}{self.title}{RESET}  {DIM}{self.elapsed()}{RESET}  {self.status}",
            BOLD + "  ".join(h.upper().ljust(w) for h, w in zip(COLUMNS, widths, strict=True)) + RESET,
        ]
        for r in self.rows:
            text = "  ".join(c.ljust(w) for c, w in zip(r.cells(), widths, strict=True))
            colour = COLOURS.get(Phase(r.phase), "") if r.phase in Phase._value2member_map_ else ""
            lines.append(f"{colour}{text}{RESET}" if colour else text)
            lines.append(f"  {DIM}stable{RESET} {bar(r.stable)} {DIM}canary{RESET} {r.canary}%")
        lines.append(f"{DIM}{'─' * 60}{RESET}")
        lines += [f"  {n}" for n in self.notices]
        return lines

    def _redraw(self) -> None:
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F\x1b[J")  # back to the table's first line, clear below
        lines = self.render()
        out.append("\n".join(f"{line}\x1b[K" for line in lines) + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)


def bar(stable: int, width: int = 30) -> str:
    """stable share as a bar: filled for stable, light for canary."""
    full = round(width * max(0, min(100, stable)) / 100)
    return "█" * full + "░" * (width - full)
