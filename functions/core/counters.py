"""Raw request counters of a release's two versions, and the evidence the guard has drawn from them. Values only.

`Totals` is what the runner reads from Prometheus on a tick: the counters themselves as last scraped (an
instant `sum by` over the router's request counter and its latency histogram), not `increase()`s, so
consecutive readings differ by exactly the requests served between two scrapes (no extrapolation).
`Evidence` (kept in the release) accumulates those differences; functions/core/evidence.py computes it.
"""

from __future__ import annotations

from functions.core.values import value


@value
class Totals:
    status: str = "ok"  # ok | no-data | unavailable
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0
    # latency histogram, cumulative like Prometheus' buckets: (upper bound in ms, canary count, stable count),
    # ascending, +Inf last. Empty when the router keeps no histogram (HAProxy: averages only).
    buckets: tuple[tuple[float, float, float], ...] = ()
    detail: str = ""
    read_at: str = ""  # when the runner read them (ISO): an older reading than the evidence's is ignored
    query: str = ""  # the PromQL they were read with (recorded with a guard verdict)
    reference: str = "stable"  # whose counters the stable_* fields are: "stable", or the fresh "baseline"


@value
class Evidence:
    """What the guard knows about the canary of the current wave (every field accumulates across steps)."""

    wave: int = 0
    base: Totals | None = None  # the counters at the last change: the next increments are taken from here
    at: str = ""  # when the counters last changed
    interval: float = 0.0  # seconds between the last two changes (the scrape interval, or the tick if slower)
    rate: float = 0.0  # requests per second (both versions) over the last change
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0
    errors: tuple[float, ...] = ()  # per effect size: log-likelihood ratio of the error e-process
    bound_ms: float = (
        0.0  # latency: a request slower than this is "slow" (pinned when first chosen; 0: not yet)
    )
    slow_canary_requests: float = 0.0  # counted from the moment the bound was chosen
    slow_canary: float = 0.0
    slow_stable_requests: float = 0.0
    slow_stable: float = 0.0
    latency: tuple[float, ...] = ()  # per effect size: log-likelihood ratio of the latency e-process
    cap: int = 0  # exposure: the highest weight the evidence allows now (percent); 0 before any evidence
    cap_reason: str = ""
