"""Judges: turn measured samples into a three-valued verdict. Pure.

- threshold: the canary value must lie in [min, max];
- comparison: the canary may be worse than stable by at most `tolerance` (absolute or relative);
- sequential: a likelihood-ratio test on error counts, conditioned on the traffic share, whose
  false-failure probability stays below alpha however often it is checked (Ville's inequality).

"No data" and "Prometheus unreachable" are inconclusive, never a pass. The release verdict is fail if
any metric fails, else inconclusive if any metric is inconclusive, else pass.
"""

from __future__ import annotations

import math

from functions.core.events import MetricSample
from functions.core.policy import Analysis, MetricCheck
from functions.core.state import MetricResult, VerdictRecord

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
HIGHER_IS_BETTER = frozenset({"success-rate"})
SEQUENTIAL_EFFECT = 2.0  # alternative hypothesis: the canary's error rate is at least twice stable's
SEQUENTIAL_POWER_LOSS = 0.2  # beta: accept "no regression" once the evidence for it is this strong


def judge(analysis: Analysis, samples: tuple[MetricSample, ...], at: str) -> VerdictRecord:
    by_name = {s.name: s for s in samples}
    results = tuple(_judge_metric(analysis, check, by_name.get(check.name)) for check in analysis.metrics)
    verdicts = {r.verdict for r in results}
    overall = FAIL if FAIL in verdicts else INCONCLUSIVE if (INCONCLUSIVE in verdicts or not results) else PASS
    reason = "; ".join(f"{r.name}: {r.reason}" for r in results if r.verdict == overall) or "no metrics"
    return VerdictRecord(at=at, verdict=overall, reason=reason, metrics=results)


def _judge_metric(analysis: Analysis, check: MetricCheck, sample: MetricSample | None) -> MetricResult:
    if sample is None:
        return MetricResult(check.name, INCONCLUSIVE, "not measured")
    if sample.status != "ok":
        return MetricResult(check.name, INCONCLUSIVE, f"{sample.status}: {sample.detail}".rstrip(": "),
                            query=sample.query)  # fmt: skip
    if sample.canary_requests is not None and sample.canary_requests < analysis.min_requests:
        return MetricResult(
            check.name, INCONCLUSIVE, f"{sample.canary_requests:g} canary requests < {analysis.min_requests}",
            value=sample.value, stable_value=sample.stable_value, query=sample.query,
        )  # fmt: skip
    rule = {"threshold": _threshold, "comparison": _comparison, "sequential": _sequential}[check.judge]
    verdict, reason = rule(analysis, check, sample)
    return MetricResult(check.name, verdict, reason, sample.value, sample.stable_value, sample.query)


def _threshold(_: Analysis, check: MetricCheck, s: MetricSample) -> tuple[str, str]:
    if s.value is None or math.isnan(s.value):
        return INCONCLUSIVE, "no value"
    if check.min is not None and s.value < check.min:
        return FAIL, f"{s.value:.4g} < min {check.min:g}"
    if check.max is not None and s.value > check.max:
        return FAIL, f"{s.value:.4g} > max {check.max:g}"
    return PASS, f"{s.value:.4g} within range"


def _comparison(_: Analysis, check: MetricCheck, s: MetricSample) -> tuple[str, str]:
    if s.value is None or s.stable_value is None or math.isnan(s.value) or math.isnan(s.stable_value):
        return INCONCLUSIVE, "canary or stable value missing"
    worse_by = (s.stable_value - s.value) if check.template in HIGHER_IS_BETTER else (s.value - s.stable_value)
    if check.relative:
        if s.stable_value == 0:
            return (FAIL, "stable is 0 and canary is worse") if worse_by > 0 else (PASS, "both 0")
        worse_by /= abs(s.stable_value)
    if worse_by > check.tolerance:
        return FAIL, f"canary {s.value:.4g} vs stable {s.stable_value:.4g}: worse by {worse_by:.4g} > {check.tolerance:g}"
    return PASS, f"canary {s.value:.4g} vs stable {s.stable_value:.4g} within {check.tolerance:g}"


def sequential_llr(canary_errors: float, canary_requests: float, stable_errors: float, stable_requests: float,
                   effect: float = SEQUENTIAL_EFFECT) -> float:  # fmt: skip
    """Log-likelihood ratio that errors come from a canary `effect` times worse, given who got the traffic.

    Conditioned on the total number of errors, each error lands on the canary with probability
    p0 = share of canary requests under "no difference", p1 under "canary `effect`x worse".
    """
    if canary_requests <= 0 or stable_requests <= 0:
        return 0.0
    p0 = canary_requests / (canary_requests + stable_requests)
    p1 = effect * canary_requests / (effect * canary_requests + stable_requests)
    return canary_errors * math.log(p1 / p0) + stable_errors * math.log((1 - p1) / (1 - p0))


def _sequential(analysis: Analysis, _: MetricCheck, s: MetricSample) -> tuple[str, str]:
    counts = (s.canary_errors, s.canary_requests, s.stable_errors, s.stable_requests)
    if any(c is None for c in counts):
        return INCONCLUSIVE, "error/request counts missing"
    ce, cr, se, sr = (float(c) for c in counts)  # type: ignore[arg-type]
    llr = sequential_llr(ce, cr, se, sr)
    upper = math.log(1 / analysis.alpha)
    if llr >= upper:
        return FAIL, f"LLR {llr:.2f} >= {upper:.2f}: canary errors {ce:g}/{cr:g} vs stable {se:g}/{sr:g}"
    if llr <= math.log(SEQUENTIAL_POWER_LOSS) or (llr <= 0 and cr >= analysis.min_requests):
        return PASS, f"LLR {llr:.2f}: no regression (canary {ce:g}/{cr:g}, stable {se:g}/{sr:g})"
    return INCONCLUSIVE, f"LLR {llr:.2f}: not enough evidence yet"
