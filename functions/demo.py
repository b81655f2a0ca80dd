"""`graylane demo`: the main job end to end on the embedded default, in one process, in seconds.

SQLite state, the seed's Traefik pipeline policy (infra/examples/traefik-pipeline.yaml), recording
providers standing in for Traefik and Kubernetes, and a simulated clock so 30-minute A/B tests take
no time. Every line printed is a real transition decided by decide() and persisted through the runner.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.core.counters import Totals
from functions.core.events import Alert, Command, ImagePushed, MetricSample, Tick
from functions.core.policy import Policy
from functions.core.state import Actor, AppState, Release, Version

if TYPE_CHECKING:  # built in run(), lazily: the demo's module imports nothing of the providers
    from functions.providers.recording import RecordingProviders

EXAMPLES = Path(__file__).resolve().parents[1] / "infra" / "examples"
APP = "pro/flask"
REPO = "registry.example.com/coding/cd-production/flask"


@dataclass
class SimClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def measure(policy: Policy, release: Release) -> tuple[MetricSample, ...]:
    """v3 is broken: 12 % of its requests fail and it is slower; everything else is healthy."""
    bad = release.target.version == "v3.0.0"
    return (
        MetricSample(name="success-rate", value=0.88 if bad else 0.998, canary_requests=2400),
        MetricSample(name="latency", value=0.140 if bad else 0.052, stable_value=0.050, canary_requests=2400),
    )


@dataclass
class DemoCounters:
    """The routers' raw request counters for the guard: 200 requests/s split at the routed weight; v3 fails 12 %
    of its requests (0.3 % for everything else). Adaptive exposure ramps a canary up as they accumulate."""

    clock: SimClock
    providers: RecordingProviders  # the routed weight is read from its router
    rps: float = 200.0

    def __post_init__(self) -> None:
        self.at = self.clock.now
        self.counts = [0.0, 0.0, 0.0, 0.0]  # canary requests, errors, stable requests, errors
        self.version = ""

    def __call__(self, policy: Policy, release: Release) -> Totals:
        from functions.core.effects import STABLE_ONLY

        routes = next(iter(self.providers.router_.routes.values()), STABLE_ONLY)
        seconds = (self.clock.now - self.at).total_seconds()
        self.at = self.clock.now
        bad = 0.12 if release.target.version == "v3.0.0" else 0.003
        canary = self.rps * seconds * routes.canary / 100
        stable = self.rps * seconds - canary
        c = self.counts
        c[0], c[1], c[2], c[3] = c[0] + canary, c[1] + canary * bad, c[2] + stable, c[3] + stable * 0.003
        return Totals(
            canary_requests=round(c[0]),
            canary_errors=round(c[1]),
            stable_requests=round(c[2]),
            stable_errors=round(c[3]),
        )


def script() -> Iterator[tuple[float, Any, str]]:
    n = iter(range(1, 10_000))
    ops, po = Actor("ops-lead", "slack", "#flask-release"), Actor("product-owner", "dingtalk")

    def push(tag: str) -> ImagePushed:
        return ImagePushed(
            id=f"push-{next(n)}",
            app=APP,
            target=Version(tag, f"{REPO}@sha256:{tag}"),
            repository=REPO,
            tag=tag,
            source="dockerhub",
        )

    def cmd(action: str, actor: Actor, release: str, version: str, **kw: Any) -> Command:
        """What a button of `release`'s notification (or a command typed against it) sends."""
        return Command(
            id=f"cmd-{next(n)}", app=APP, action=action, actor=actor, release=release, version=version, **kw
        )

    def ticks(count: int, every: float) -> Iterator[tuple[float, Any, str]]:
        for _ in range(count):
            yield every, Tick(id=f"tick-{next(n)}", app=APP), ""

    yield 0, push("v1.0.0"), "first image: becomes stable"
    yield 60, push("v2.0.0"), "push v2: preview + DB migration"
    yield from ticks(1, 10)
    v2, v3 = ("flask-1", "v2.0.0"), ("flask-2", "v3.0.0")  # v1.0.0 becomes stable without a release
    yield 60, cmd("approve", ops, *v2, gate="ab-test"), "ops-lead approves the A/B test in Slack"
    yield from ticks(4, 600)
    yield 30, cmd("approve", po, *v2, gate="canary-weight", weight=50), "product-owner sets 50% in DingTalk"
    yield from ticks(12, 10)  # adaptive exposure: 5 % first, then up to 50 % as evidence accumulates
    yield 30, cmd("approve", ops, *v2, gate="promote"), "ops-lead promotes"
    yield from ticks(7, 100)
    yield 120, push("v3.0.0"), "push a bad v3"
    yield from ticks(1, 10)
    yield 30, cmd("approve", ops, *v3, gate="ab-test"), "A/B test of v3"
    yield from ticks(4, 10)
    yield (
        60,
        Alert(
            id=f"alert-{next(n)}",
            app=APP,
            fingerprint="f1",
            firing=True,
            alertname="FlaskHighErrorRate",
            labels={"alertname": "FlaskHighErrorRate", "service": "k8s-flask"},
        ),
        "error burst: alert fires",
    )
    yield (
        90,
        Alert(
            id=f"alert-{next(n)}",
            app=APP,
            fingerprint="f1",
            firing=False,
            alertname="FlaskHighErrorRate",
            labels={"alertname": "FlaskHighErrorRate", "service": "k8s-flask"},
        ),
        "alert resolves",
    )
    yield from ticks(2, 90)


def line(state: AppState, note: str, at: datetime, start: datetime) -> str:
    rel = state.release
    routes = state.routes
    rl = state.protection.rate_limit
    verdict = rel.verdicts[-1].verdict if rel and rel.verdicts else "-"
    stage = f"{rel.stage + 1}" if rel else "-"
    return (
        f"+{(at - start).total_seconds() / 60:6.1f}m  {(rel.target.version if rel else '-'):7} "
        f"{(rel.phase.value if rel else '-'):12} stage {stage:2} {rel.gate if rel and rel.gate else '':14} "
        f"stable/canary {routes.stable:3}/{routes.canary:<3} {'A/B' if routes.match else '   '} "
        f"verdict {verdict:12} limit {rl.average if rl else '-':>4}  {note}"
    )


def run(out: Any = print) -> AppState:
    from functions.policies import DirectoryPolicies
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores.sqlite import SqliteStore
    from functions.runner import Runner

    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    clock = SimClock(start)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "graylane.db"))
        providers = RecordingProviders(measure)
        providers.totals_fn = DemoCounters(clock, providers)
        runner = Runner(store, DirectoryPolicies(str(EXAMPLES)), providers, clock=clock)
        out(f"graylane demo: {APP} with {EXAMPLES / 'traefik-pipeline.yaml'} (simulated clock, SQLite state)")
        state = AppState(app=APP)
        for dt, event, note in script():
            clock.now += timedelta(seconds=dt)
            runner.handle(event)
            doc, _ = store.load(APP)
            new = AppState.from_json(doc) if doc else state
            if new.generation != state.generation or note:
                out(line(new, note, clock.now, start))
            state = new
        out("\nhistory (last 12):")
        for h in state.history[-12:]:
            who = f" by {h.by.user} via {h.by.via}" if h.by else ""
            out(f"  {h.at[11:19]} {h.release:8} {h.action:14} {h.reason}{who}")
        return state
