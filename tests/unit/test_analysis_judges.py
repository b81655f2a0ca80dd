"""The judges: threshold, comparison (latency), and the anytime-valid mixture sequential test."""

from __future__ import annotations

import math
import random

import pytest

from functions.core.analysis import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    judge,
    mixture_log_evidence,
    sequential_llr,
)
from functions.core.events import MetricSample
from functions.core.policy import Analysis, MetricCheck

AT = "2026-01-01T00:00:00Z"
ERRORS = MetricCheck(name="errors", template="error-rate", judge="sequential")
LATENCY = MetricCheck(name="latency", template="latency", judge="comparison", tolerance=0.2, relative=True)
SUCCESS = MetricCheck(name="success-rate", template="success-rate", judge="threshold", min=0.99)


def counts(ce: float, cr: float, se: float, sr: float, name: str = "errors") -> MetricSample:
    return MetricSample(
        name=name,
        value=ce / cr if cr else None,
        stable_value=se / sr if sr else None,
        canary_requests=cr,
        canary_errors=ce,
        stable_requests=sr,
        stable_errors=se,
    )


def verdict_of(check: MetricCheck, sample: MetricSample, **analysis: object) -> str:
    return judge(Analysis(metrics=(check,), **analysis), (sample,), AT).verdict  # type: ignore[arg-type]


# -- threshold and comparison -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(0.995, PASS), (0.99, PASS), (0.98, FAIL), (math.nan, INCONCLUSIVE)]
)
def test_threshold_range(value: float, expected: str) -> None:
    sample = MetricSample(name="success-rate", value=value, canary_requests=1000)
    assert verdict_of(SUCCESS, sample) == expected


@pytest.mark.parametrize(
    ("canary", "stable", "expected"), [(110.0, 100.0, PASS), (130.0, 100.0, FAIL), (40.0, 100.0, PASS)]
)
def test_latency_comparison_is_relative_to_stable(canary: float, stable: float, expected: str) -> None:
    sample = MetricSample(name="latency", value=canary, stable_value=stable, canary_requests=500)
    record = judge(Analysis(metrics=(LATENCY,)), (sample,), AT)
    assert record.verdict == expected
    assert f"{canary:.4g}" in record.metrics[0].reason and f"{stable:.4g}" in record.metrics[0].reason


def test_latency_without_stable_value_is_inconclusive() -> None:
    sample = MetricSample(name="latency", value=150.0, stable_value=None, canary_requests=500)
    assert verdict_of(LATENCY, sample) == INCONCLUSIVE


# -- guards: no data, unreachable, too few requests ------------------------------------------------


@pytest.mark.parametrize("status", ["no-data", "unavailable"])
def test_missing_measurements_are_inconclusive_never_pass(status: str) -> None:
    sample = MetricSample(name="errors", status=status, detail="connection refused", query="up")
    record = judge(Analysis(metrics=(ERRORS,)), (sample,), AT)
    assert record.verdict == INCONCLUSIVE
    assert status in record.reason and "connection refused" in record.reason
    assert record.metrics[0].query == "up"


def test_unmeasured_metric_is_inconclusive() -> None:
    assert judge(Analysis(metrics=(ERRORS,)), (), AT).verdict == INCONCLUSIVE


def test_minimum_sample_guard() -> None:
    few = counts(ce=30, cr=40, se=1, sr=160)  # 75 % errors, but only 40 canary requests
    assert verdict_of(ERRORS, few, min_requests=50) == INCONCLUSIVE
    assert verdict_of(ERRORS, few, min_requests=20) == FAIL


def test_missing_counts_or_stable_traffic_is_inconclusive() -> None:
    assert verdict_of(ERRORS, MetricSample(name="errors", value=0.1, canary_requests=500)) == INCONCLUSIVE
    assert verdict_of(ERRORS, counts(ce=5, cr=500, se=0, sr=0)) == INCONCLUSIVE


def test_fail_wins_over_inconclusive_and_reason_names_numbers_and_raw_result() -> None:
    bad = MetricSample(
        name="errors",
        canary_requests=1000,
        canary_errors=200,
        stable_requests=4000,
        stable_errors=20,
        query="sum(x)",
        detail='[[{"server":"canary"},"1000"]]',
    )
    missing = MetricSample(name="latency", status="no-data")
    record = judge(Analysis(metrics=(ERRORS, LATENCY)), (bad, missing), AT)
    assert record.verdict == FAIL
    assert "200/1000" in record.reason and "20/4000" in record.reason and "raw" in record.reason
    assert {m.name: m.verdict for m in record.metrics} == {"errors": FAIL, "latency": INCONCLUSIVE}


# -- the sequential test --------------------------------------------------------------------------


def test_llr_is_zero_without_traffic_and_signed_by_where_errors_land() -> None:
    assert sequential_llr(3, 0, 3, 100) == 0.0
    assert sequential_llr(10, 100, 0, 400) > 0 > sequential_llr(0, 100, 10, 400)


def test_same_error_rate_passes_and_rising_canary_errors_fail() -> None:
    assert verdict_of(ERRORS, counts(ce=5, cr=1000, se=20, sr=4000)) == PASS
    assert verdict_of(ERRORS, counts(ce=20, cr=1000, se=20, sr=4000)) == FAIL  # 4x stable, 1000 requests


def test_catastrophic_regression_needs_only_a_handful_of_requests() -> None:
    # 50 % errors vs 0.5 %, 20 % of the traffic: fails on the first look with enough requests
    assert verdict_of(ERRORS, counts(ce=30, cr=60, se=1, sr=240)) == FAIL


def test_canary_errors_with_a_clean_stable_fail() -> None:
    assert verdict_of(ERRORS, counts(ce=8, cr=200, se=0, sr=800)) == FAIL


def test_suspicion_holds_the_step_instead_of_passing() -> None:
    # evidence between half-way and the bound: neither pass nor fail
    ev = mixture_log_evidence(16, 1000, 20, 4000)
    assert math.log(100) / 2 <= ev < math.log(100)
    assert verdict_of(ERRORS, counts(ce=16, cr=1000, se=20, sr=4000)) == INCONCLUSIVE


def test_mixture_detects_mild_and_catastrophic_regressions_where_a_fixed_alternative_is_slow() -> None:
    # 5 errors in 10 canary requests, none in 40 stable ones: a test fixed at 2x (p1 caps at 1/3 on a 20 %
    # share) is still unsure; the mixture already has proof. With plenty of data both see a 4x regression.
    assert sequential_llr(5, 10, 0, 40) < math.log(100) <= mixture_log_evidence(5, 10, 0, 40)
    assert mixture_log_evidence(40, 2000, 40, 8000) >= math.log(100)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _false_failure_rate(alpha: float, runs: int, looks: int, seed: int) -> float:
    """Healthy canary (same error rate as stable), the judge looked at after every batch of traffic."""
    rng = random.Random(seed)
    bound = math.log(1 / alpha)
    failed = 0
    for _ in range(runs):
        ce = se = 0
        for look in range(1, looks + 1):
            ce += _poisson(rng, 1.0)  # 200 canary requests per look at 0.5 %
            se += _poisson(rng, 4.0)  # 800 stable requests per look
            if mixture_log_evidence(ce, 200 * look, se, 800 * look) >= bound:
                failed += 1
                break
    return failed / runs


def test_false_rollbacks_stay_below_alpha_however_often_it_looks() -> None:
    rate = _false_failure_rate(alpha=0.05, runs=400, looks=120, seed=7)
    assert rate <= 0.05
    # a per-look threshold test at the same 5 % per look would roll back most healthy releases
    assert 1 - 0.95**120 > 0.99


def test_more_looks_do_not_inflate_false_rollbacks_like_repeated_thresholds() -> None:
    few, many = _false_failure_rate(0.05, 300, 10, 11), _false_failure_rate(0.05, 300, 100, 11)
    assert many <= 0.05 and few <= 0.05
