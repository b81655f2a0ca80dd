"""Adaptive exposure: a canary's weight is capped by the evidence about it. Pure.

A regression is only seen once its requests have been scraped and a tick has looked at them; until then
every request the canary serves at weight `w` is a request the regression can fail. With `R` requests per
second, an evidence lag `L` (twice the measured interval between counter changes: one scrape plus one tick,
rounded up) and `δ` an anytime-valid upper bound of the canary's excess error rate over stable's (and of its
excess share of slow requests), the canary-caused failed requests in flight are at most `δ·w·R·L`. The cap is
the weight that keeps them at `analysis.exposureBudget`:

    cap = exposureBudget / (δ · R · L)

A new canary starts at `analysis.probeWeight` (before any evidence `δ` is 1), and every step's weight is the
user's step weight capped this way: the weight rises as fast as requests without a regression shrink `δ`, and
falls back when the evidence worsens. The user's schedule stays the plan: steps still move on at their
timers, at the weight the evidence allows by then. A canary with no regression reaches the user's weights
within a few scrapes of each step; one with a regression stays near the probe weight until the guard rolls it
back. `exposureBudget: 0` turns it off.
"""

from __future__ import annotations

from functions.core.capabilities import counted, histogrammed, metrics_source
from functions.core.counters import Evidence
from functions.core.evidence import excess_bounds
from functions.core.policy import Analysis, Policy

DEFAULT_LAG = 30.0  # seconds, before two counter changes have been seen
SLOW_REQUEST_COST = 0.1  # a request slowed past the stable's p95 costs a tenth of a failed one in the budget


def source(policy: Policy) -> str:
    """Whose counters measure the policy's versions (the router's, or for gateway-api its implementation's)."""
    return metrics_source(policy.router.provider, policy.router.options)


def active(policy: Policy) -> bool:
    a = policy.analysis
    return a is not None and a.exposure_budget > 0 and counted(source(policy))


def cap(evidence: Evidence, analysis: Analysis, router: str) -> tuple[int, str]:
    """`router`: the metrics source (see `source`)."""
    """The highest weight (percent, 0 = none yet) the evidence allows, and why."""
    if evidence.rate <= 0 or evidence.canary_requests <= 0:
        return 0, "no canary traffic measured yet"
    lag = evidence.interval if evidence.interval > 0 else DEFAULT_LAG
    histogram = histogrammed(router) and bool(evidence.base and evidence.base.buckets)
    errors, slow = excess_bounds(evidence, analysis.alpha, histogram)
    slow *= SLOW_REQUEST_COST
    worst = max(errors, slow, 1e-9)
    percent = int(min(100.0, 100 * analysis.exposure_budget / (worst * evidence.rate * lag)))
    what = "error rate" if errors >= slow else f"share of requests slower than {evidence.bound_ms:g} ms"
    if not evidence.bound_ms and histogram and slow >= errors:
        what = "latency (no histogram data yet)"
    reason = (
        f"exposure cap {percent}%: canary excess {what} <= {worst:.2%} ({100 * (1 - analysis.alpha):g}% "
        f"bound after {evidence.canary_requests:.0f} canary requests), {evidence.rate:.0f} req/s, "
        f"evidence lag {lag:.0f}s, budget {analysis.exposure_budget:g} failed requests"
    )
    return percent, reason


def allowed(policy: Policy, evidence: Evidence | None, planned: int) -> int:
    """The weight a step planned at `planned` may run at now."""
    if not active(policy) or planned <= 0:
        return planned
    assert policy.analysis is not None
    probe = policy.analysis.probe_weight
    limit = evidence.cap if evidence is not None and evidence.cap > 0 else probe
    return min(planned, max(probe, limit))
