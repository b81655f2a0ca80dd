"""Judges: turn measured samples into a three-valued verdict. Pure.

- threshold: the canary value must lie in [min, max];
- comparison: the canary may be worse than stable by at most `tolerance` (absolute or relative). For the
  latency template this is the latency judge: canary quantile vs stable quantile;
- sequential: a mixture sequential probability ratio test (mSPRT) on counts. Conditioned on how many
  "bad" events (errors, or requests slower than a bound) happened in total, each one lands on the canary
  with probability p0 = canary share of the requests when canary and stable are alike, and with
  p(θ) = θ·s / (θ·s + 1 - s) when the canary's rate is θ times stable's. The evidence is the likelihood
  ratio averaged over a grid of θ > 1 (mild to catastrophic regressions). Under "no regression" (θ <= 1)
  it is a non-negative supermartingale in the number of events, so by Ville's inequality it ever reaches
  1/alpha with probability <= alpha, however often it is looked at. It needs cumulative counts since the
  analysis started (the Prometheus provider measures them so), not a sliding window.

"No data" and "Prometheus unreachable" are inconclusive, never a pass. The release verdict is fail if
any metric fails, else inconclusive if any metric is inconclusive, else pass.
"""

from __future__ import annotations

import math
from datetime import datetime

from functions.core.counters import Evidence
from functions.core.events import MetricSample
from functions.core.policy import Analysis, MetricCheck, Policy
from functions.core.state import MetricResult, Phase, Release, VerdictRecord, parse_iso

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
HIGHER_IS_BETTER = frozenset({"success-rate"})
SEQUENTIAL_EFFECT = 2.0  # sequential_llr's default alternative: the canary's bad-event rate is twice stable's
# Rate ratios the mixture averages over, equally weighted: 1.25x ... ~1,400x, a factor 1.6 apart. A grid
# (not one fixed alternative) detects a 4x and a 100x regression each about as fast as a test tuned for it,
# at the price of log(len(grid)) nats of evidence.
MIXTURE_EFFECTS = tuple(1.25 * 1.6**k for k in range(16))
RAW_CHARS = 400  # how much of the raw query result is kept in a verdict's reason


def watch_checks(analysis: Analysis) -> tuple[MetricCheck, ...]:
    """After promotion the previous version takes no traffic, so nothing is left to compare with: only
    threshold checks (on the new version, now the stable workload) judge the post-promotion watch."""
    return tuple(m for m in analysis.metrics if m.judge == "threshold")


def judge(
    analysis: Analysis,
    samples: tuple[MetricSample, ...],
    at: str,
    watching: bool = False,
    evidence: Evidence | None = None,
) -> VerdictRecord:
    by_name = {s.name: s for s in samples}
    checks = watch_checks(analysis) if watching else analysis.metrics
    results = tuple(_judge_metric(analysis, check, by_name.get(check.name), evidence) for check in checks)
    verdicts = {r.verdict for r in results}
    overall = (
        FAIL if FAIL in verdicts else INCONCLUSIVE if (INCONCLUSIVE in verdicts or not results) else PASS
    )
    reason = "; ".join(f"{r.name}: {r.reason}" for r in results if r.verdict == overall) or "no metrics"
    return VerdictRecord(at=at, verdict=overall, reason=reason, metrics=results)


def _judge_metric(
    analysis: Analysis, check: MetricCheck, sample: MetricSample | None, evidence: Evidence | None = None
) -> MetricResult:
    if check.judge == "sequential" and check.template == "latency":
        verdict, reason = _latency_sequential(analysis, evidence)
        value, stable = (sample.value, sample.stable_value) if sample is not None else (None, None)
        return MetricResult(check.name, verdict, reason, value, stable, sample.query if sample else "")
    if sample is None:
        return MetricResult(check.name, INCONCLUSIVE, "not measured")
    if sample.status != "ok":
        return MetricResult(
            check.name, INCONCLUSIVE, f"{sample.status}: {sample.detail}".rstrip(": "), query=sample.query
        )
    if sample.canary_requests is not None and sample.canary_requests < analysis.min_requests:
        return MetricResult(
            check.name,
            INCONCLUSIVE,
            f"{whole(sample.canary_requests, down=True)} canary requests < {analysis.min_requests}",
            value=sample.value,
            stable_value=sample.stable_value,
            query=sample.query,
        )
    rule = {"threshold": _threshold, "comparison": _comparison, "sequential": _sequential}[check.judge]
    verdict, reason = rule(analysis, check, sample)
    if sample.detail:  # the raw result travels with the verdict, bounded so the state stays small
        reason = f"{reason} [raw {sample.detail[:RAW_CHARS]}]"
    return MetricResult(check.name, verdict, reason, sample.value, sample.stable_value, sample.query)


def whole(count: float, down: bool = False) -> str:
    """A request or error count for people: Prometheus' increase() extrapolates (4.37267 requests), so show
    whole ones; `down` rounds down, so a count below a minimum never reads as reaching it (19.6 -> 19)."""
    if not math.isfinite(count):
        return str(count)
    return str(math.floor(count) if down else round(count))


def _missing(x: float | None) -> bool:
    return x is None or math.isnan(x)


def _threshold(_: Analysis, check: MetricCheck, s: MetricSample) -> tuple[str, str]:
    if _missing(s.value):
        return INCONCLUSIVE, "no value"
    assert s.value is not None
    if check.min is not None and s.value < check.min:
        return FAIL, f"{s.value:.4g} < min {check.min:g}"
    if check.max is not None and s.value > check.max:
        return FAIL, f"{s.value:.4g} > max {check.max:g}"
    return PASS, f"{s.value:.4g} within range"


def _comparison(_: Analysis, check: MetricCheck, s: MetricSample) -> tuple[str, str]:
    if _missing(s.value) or _missing(s.stable_value):
        return INCONCLUSIVE, f"canary or {s.reference} value missing"
    assert s.value is not None and s.stable_value is not None
    worse_by = (
        (s.stable_value - s.value) if check.template in HIGHER_IS_BETTER else (s.value - s.stable_value)
    )
    if check.relative:
        if s.stable_value == 0:
            return (FAIL, "stable is 0 and canary is worse") if worse_by > 0 else (PASS, "both 0")
        worse_by /= abs(s.stable_value)
    if worse_by > check.tolerance:
        return (
            FAIL,
            f"canary {s.value:.4g} vs {s.reference} {s.stable_value:.4g}: worse by {worse_by:.4g} > {check.tolerance:g}",
        )
    return PASS, f"canary {s.value:.4g} vs {s.reference} {s.stable_value:.4g} within {check.tolerance:g}"


def _shares(canary_requests: float, stable_requests: float, effect: float) -> tuple[float, float]:
    """Probability that one bad event is the canary's: under "alike" (p0) and under "`effect`x worse" (p1)."""
    p0 = canary_requests / (canary_requests + stable_requests)
    p1 = effect * canary_requests / (effect * canary_requests + stable_requests)
    return p0, p1


def sequential_llr(
    canary_errors: float,
    canary_requests: float,
    stable_errors: float,
    stable_requests: float,
    effect: float = SEQUENTIAL_EFFECT,
) -> float:
    """Log-likelihood ratio that bad events come from a canary `effect` times worse, given who got the traffic."""
    if canary_requests <= 0 or stable_requests <= 0:
        return 0.0
    p0, p1 = _shares(canary_requests, stable_requests, effect)
    return canary_errors * math.log(p1 / p0) + stable_errors * math.log((1 - p1) / (1 - p0))


def mixture_log_evidence(
    canary_errors: float,
    canary_requests: float,
    stable_errors: float,
    stable_requests: float,
    effects: tuple[float, ...] = MIXTURE_EFFECTS,
) -> float:
    """log of the mSPRT statistic: the mean over `effects` of exp(sequential_llr). 0 means no evidence yet."""
    llrs = [
        sequential_llr(canary_errors, canary_requests, stable_errors, stable_requests, e) for e in effects
    ]
    top = max(llrs)
    return top + math.log(sum(math.exp(x - top) for x in llrs) / len(llrs))


def rate_ratio(
    canary_errors: float, canary_requests: float, stable_errors: float, stable_requests: float
) -> float:
    """Point estimate of θ (canary bad-event rate / stable's), for the reason text; inf when stable has none."""
    canary = canary_errors / canary_requests if canary_requests else 0.0
    stable = stable_errors / stable_requests if stable_requests else 0.0
    if stable == 0:
        return 1.0 if canary == 0 else math.inf
    return canary / stable


def _latency_sequential(analysis: Analysis, e: Evidence | None) -> tuple[str, str]:
    """The latency judge: the guard's e-process on the share of canary requests slower than the bound
    (the bucket bound at the p95; functions/core/evidence.py), cumulated over every reading since the canary
    started, so it stays valid however often it is looked at."""
    if e is None or not e.bound_ms:
        return INCONCLUSIVE, "no latency histogram data yet"
    if e.slow_canary_requests < analysis.min_requests:
        return INCONCLUSIVE, f"{e.slow_canary_requests:g} canary requests < {analysis.min_requests}"
    # deferred import: evidence.py imports this module's MIXTURE_EFFECTS
    from functions.core.evidence import log_evidence

    evidence = log_evidence(e.latency)
    bound = math.log(1 / analysis.alpha)
    reference = e.base.reference if e.base is not None else "stable"
    numbers = (
        f"slower than {e.bound_ms:g} ms: canary {e.slow_canary:g}/{e.slow_canary_requests:g} vs {reference} "
        f"{e.slow_stable:g}/{e.slow_stable_requests:g}, log-evidence {evidence:.2f}"
    )
    if evidence >= bound:
        return FAIL, f"latency regression: {numbers} >= {bound:.2f} (alpha {analysis.alpha:g})"
    if evidence >= bound / 2:
        return INCONCLUSIVE, f"evidence building: {numbers}, rollback at {bound:.2f}"
    return PASS, f"no latency regression: {numbers} < {bound / 2:.2f}"


def _sequential(analysis: Analysis, _: MetricCheck, s: MetricSample) -> tuple[str, str]:
    counts = (s.canary_errors, s.canary_requests, s.stable_errors, s.stable_requests)
    if any(c is None or math.isnan(c) for c in counts):
        return INCONCLUSIVE, "bad-event/request counts missing"
    ce, cr, se, sr = (float(c) for c in counts)  # type: ignore[arg-type]
    if cr <= 0 or sr <= 0:
        return INCONCLUSIVE, f"no requests on {'canary' if cr <= 0 else s.reference}"
    evidence = mixture_log_evidence(ce, cr, se, sr)
    bound = math.log(1 / analysis.alpha)
    numbers = (
        f"canary {whole(ce)}/{whole(cr)} vs {s.reference} {whole(se)}/{whole(sr)}, ratio {rate_ratio(ce, cr, se, sr):.3g}, "
        f"log-evidence {evidence:.2f}"
    )
    if evidence >= bound:
        return FAIL, f"regression: {numbers} >= {bound:.2f} (alpha {analysis.alpha:g})"
    # Half-way to the bound the step holds: neither promote on suspicion nor roll back without proof.
    if evidence >= bound / 2:
        return INCONCLUSIVE, f"evidence building: {numbers}, rollback at {bound:.2f}"
    return PASS, f"no regression: {numbers} < {bound / 2:.2f}"


def analysis_due(policy: Policy, rel: Release | None, now: datetime) -> bool:
    """Is a verdict due for `rel` at `now`? One per analysis interval, counted from the release's last one.

    decide() applies this rule to every observation it is given; the runner asks it only to avoid measuring
    for nothing. (Ticks jitter, so a look 95 % of an interval after the last one counts as the next.)
    """
    if policy.analysis is None or rel is None or not rel.analysing:
        return False
    if rel.phase not in (Phase.PROGRESSING, Phase.WAITING):
        return False
    if not rel.last_analysis_at:
        return True
    return (now - parse_iso(rel.last_analysis_at)).total_seconds() >= policy.analysis.interval * 0.95
