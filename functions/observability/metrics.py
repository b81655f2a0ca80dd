"""Prometheus metrics of graylane itself: a tiny thread-safe registry and the text exposition format 0.0.4.

`prometheus_client` costs 70-120 ms to import here, more than a whole function's cold start budget, so
this module does what graylane needs (counters, gauges, histograms with labels) with the standard
library only. Every process has one registry, `REGISTRY`; `render()` is its exposition, served by the
gateway at `GET /metrics`.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functions.core.policy import Policy
    from functions.core.state import AppState, Release

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = (
    "progressing",
    "waiting",
    "paused",
    "frozen",
    "succeeded",
    "rolled-back",
    "aborted",
    "superseded",
    "failed",
)  # functions.core.state.Phase, kept literal so this module stays import-free
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

Sample = tuple[str, tuple[tuple[str, str], ...], float]  # (name suffix, labels, value)


class _Metric(ABC):
    kind = "untyped"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(
                f"metric {self.name}: labels {sorted(labels)} given, expected {list(self.labels)}"
            )
        return tuple(str(labels[name]) for name in self.labels)

    @abstractmethod
    def samples(self) -> list[Sample]:
        """Every sample of this metric, for the exposition."""

    def sample_names(self) -> tuple[str, ...]:
        return (self.name,)


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_, labels)
        self._values: dict[tuple[str, ...], float] = (
            {} if self.labels else {(): 0.0}
        )  # exposed from the start

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} can only go up; got {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[Sample]:
        with self._lock:
            values = sorted(self._values.items())
        return [("", tuple(zip(self.labels, key, strict=True)), v) for key, v in values]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def get(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[Sample]:
        with self._lock:
            values = sorted(self._values.items())
        return [("", tuple(zip(self.labels, key, strict=True)), v) for key, v in values]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help_, labels)
        if "le" in self.labels:
            raise ValueError(f"histogram {name}: label 'le' is reserved for buckets")
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name}: buckets {list(buckets)} must be distinct and non-empty")
        self.buckets = (*bounds, math.inf)
        self._series: dict[tuple[str, ...], list[float]] = {}  # per bucket counts, then sum, then count
        if not self.labels:  # exposed from the start, so rate() has a zero to begin with
            self._series[()] = [0.0] * (len(self.buckets) + 2)

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1  # non-cumulative here; render() accumulates
                    break
            series[-2] += value
            series[-1] += 1

    @contextmanager
    def time(self, **labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, **labels)

    def count(self, **labels: str) -> float:
        with self._lock:
            series = self._series.get(self._key(labels))
        return series[-1] if series else 0.0

    def sample_names(self) -> tuple[str, ...]:
        return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")

    def samples(self) -> list[Sample]:
        with self._lock:
            series = sorted((key, list(values)) for key, values in self._series.items())
        out: list[Sample] = []
        for key, values in series:
            labels = tuple(zip(self.labels, key, strict=True))
            running = 0.0
            for bound, n in zip(self.buckets, values, strict=False):
                running += n
                out.append(("_bucket", (*labels, ("le", _number(bound))), running))
            out.append(("_sum", labels, values[-2]))
            out.append(("_count", labels, values[-1]))
        return out


class Registry:
    """Metrics of one process, rendered in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> Any:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_: str, labels: Sequence[str] = ()) -> Counter:
        return self.register(Counter(name, help_, labels))  # type: ignore[no-any-return]

    def gauge(self, name: str, help_: str, labels: Sequence[str] = ()) -> Gauge:
        return self.register(Gauge(name, help_, labels))  # type: ignore[no-any-return]

    def histogram(
        self, name: str, help_: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return self.register(Histogram(name, help_, labels, buckets))  # type: ignore[no-any-return]

    def metrics(self) -> list[_Metric]:
        with self._lock:
            return list(self._metrics.values())

    def sample_names(self) -> dict[str, tuple[str, ...]]:
        """Every series name the exposition can contain -> its labels (histogram buckets add `le`)."""
        out: dict[str, tuple[str, ...]] = {}
        for metric in self.metrics():
            for name in metric.sample_names():
                out[name] = (*metric.labels, "le") if name.endswith("_bucket") else metric.labels
        return out

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics():
            lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            for suffix, labels, value in metric.samples():
                lines.append(f"{metric.name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# ---------------------------------------------------------------------------------------------- graylane's


REGISTRY = Registry()
RELEASES = REGISTRY.gauge(
    "graylane_releases", "Latest release of each app seen by this process, by phase.", ("phase",)
)
TRANSITIONS = REGISTRY.counter(
    "graylane_transitions_total", "Events emitted by decide(), by catalog type.", ("type",)
)
DECISION = REGISTRY.histogram(
    "graylane_decision_seconds", "Time spent in one decide() call.", buckets=DECISION_BUCKETS
)
CYCLE = REGISTRY.histogram(
    "graylane_cycle_seconds", "Time to handle one event: load, decide, save, apply, emit."
)
WEBHOOK_REQUESTS = REGISTRY.counter(
    "graylane_webhook_requests_total",
    "Webhook deliveries answered by the gateway, by source and HTTP status.",
    ("source", "status"),
)
WEBHOOK_IGNORED = REGISTRY.counter(
    "graylane_webhook_ignored_total",
    "Pushes and alerts of accepted deliveries graylane did not act on, by source and "
    "reason (no-tag, no-policy, not-allowed, bad-repository, bad-tag, unreadable, "
    "no-app, no-alertname).",
    ("source", "reason"),
)
WEBHOOK_SECONDS = REGISTRY.histogram(
    "graylane_webhook_seconds", "Time to answer one webhook delivery.", ("source",)
)
VERDICTS = REGISTRY.counter(
    "graylane_verdicts_total",
    "Metric results of analysis verdicts, by judge and verdict.",
    ("judge", "verdict"),
)
EFFECTS = REGISTRY.counter(
    "graylane_effects_total",
    "Effects the runner tried, by kind and outcome (applied, not-ready, failed).",
    ("kind", "outcome"),
)

_phases_lock = threading.Lock()
_phase_of: dict[str, str] = {}  # app -> phase of its latest release
for _phase in PHASES:
    RELEASES.set(0, phase=_phase)  # every phase is a series from the start: dashboards see zeros, not gaps


def render() -> str:
    return REGISTRY.render()


def observe_decision(seconds: float) -> None:
    DECISION.observe(seconds)


def transition(event_type: str) -> None:
    TRANSITIONS.inc(type=event_type)


def effect(kind: str, outcome: str) -> None:
    EFFECTS.inc(kind=kind, outcome=outcome)


def webhook(source: str, status: int, seconds: float) -> None:
    WEBHOOK_REQUESTS.inc(source=source, status=str(status))
    WEBHOOK_SECONDS.observe(seconds, source=source)


def webhook_ignored(source: str, reason: str) -> None:
    WEBHOOK_IGNORED.inc(source=source, reason=reason)


def release_seen(app: str, release: Release | None) -> None:
    """Track the latest release phase of `app` and recount the releases gauge."""
    with _phases_lock:
        if release is None:
            _phase_of.pop(app, None)
        else:
            _phase_of[app] = str(release.phase)
        counts = dict.fromkeys(PHASES, 0)
        for phase in _phase_of.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            RELEASES.set(n, phase=phase)


def observe_saved(policy: Policy, before: AppState, after: AppState) -> None:
    """After a saved transition: the release's phase, and each verdict recorded by it (once)."""
    release_seen(after.app, after.release)
    rel = after.release
    if rel is None or not rel.verdicts:
        return
    old = before.release
    known = set(old.verdicts) if old is not None and old.id == rel.id else set()
    judges = {m.name: m.judge for m in policy.analysis.metrics} if policy.analysis else {}
    for record in rel.verdicts:
        if record in known:
            continue
        for result in record.metrics:
            VERDICTS.inc(judge=judges.get(result.name, "unknown"), verdict=result.verdict)
