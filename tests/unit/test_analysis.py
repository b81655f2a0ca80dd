"""Judges: threshold, canary-vs-stable comparison and the sequential test; no data is never a pass."""

from __future__ import annotations

import math

import pytest

from functions.core.analysis import FAIL, INCONCLUSIVE, PASS, judge, sequential_llr
from functions.core.events import MetricSample
from functions.core.policy import Analysis, MetricCheck

AT = "2024-05-01T12:00:00.000000Z"


def verdict(check: MetricCheck, s: MetricSample, **analysis: float) -> tuple[str, str]:
    result = judge(Analysis(metrics=(check,), **analysis), (s,), AT)  # type: ignore[arg-type]
    assert len(result.metrics) == 1 and result.at == AT
    return result.verdict, result.metrics[0].reason


# -- threshold ---------------------------------------------------------------------------------------------

LATENCY = MetricCheck(name="p99", template="latency", min=0.0, max=500.0)


@pytest.mark.parametrize(
    ("value", "expected", "reason"),
    [
        (120.0, PASS, "120 within range"),
        (500.0, PASS, "500 within range"),
        (500.5, FAIL, "500.5 > max 500"),
        (-1.0, FAIL, "-1 < min 0"),
        (math.nan, INCONCLUSIVE, "no value"),
        (None, INCONCLUSIVE, "no value"),
    ],
)
def test_threshold(value: float | None, expected: str, reason: str) -> None:
    assert verdict(LATENCY, MetricSample(name="p99", value=value)) == (expected, reason)


def test_threshold_with_one_bound() -> None:
    check = MetricCheck(name="success", template="success-rate", min=0.99)

    assert verdict(check, MetricSample(name="success", value=1.0))[0] == PASS
    assert verdict(check, MetricSample(name="success", value=0.98))[0] == FAIL


# -- no data --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "reason"),
    [
        (MetricSample(name="p99", status="no-data"), "no-data"),
        (
            MetricSample(name="p99", status="unavailable", detail="connection refused"),
            "unavailable: connection refused",
        ),
        (MetricSample(name="p99", value=10.0, canary_requests=12), "12 canary requests < 50"),
    ],
)
def test_missing_or_thin_data_is_inconclusive(s: MetricSample, reason: str) -> None:
    assert verdict(LATENCY, s) == (INCONCLUSIVE, reason)


def test_a_metric_that_was_not_measured_is_inconclusive() -> None:
    result = judge(Analysis(metrics=(LATENCY,)), (MetricSample(name="other", value=1.0),), AT)

    assert (result.verdict, result.reason) == (INCONCLUSIVE, "p99: not measured")


def test_an_analysis_without_metrics_is_never_a_pass() -> None:
    result = judge(Analysis(), (), AT)

    assert (result.verdict, result.reason) == (INCONCLUSIVE, "no metrics")


def test_any_failure_fails_and_any_inconclusive_holds_back_a_pass() -> None:
    errors = MetricCheck(name="errors", template="error-rate", max=0.01)
    analysis = Analysis(metrics=(LATENCY, errors))
    ok, bad, none = (
        MetricSample(name="p99", value=1.0),
        MetricSample(name="errors", value=0.5),
        MetricSample(name="errors", status="no-data"),
    )

    assert judge(analysis, (ok, MetricSample(name="errors", value=0.0)), AT).verdict == PASS
    assert judge(analysis, (ok, none), AT).verdict == INCONCLUSIVE
    failed = judge(analysis, (MetricSample(name="p99", status="no-data"), bad), AT)
    assert failed.verdict == FAIL and failed.reason == "errors: 0.5 > max 0.01"
    assert [m.verdict for m in failed.metrics] == [INCONCLUSIVE, FAIL]


# -- comparison --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "canary", "stable", "expected"),
    [
        (MetricCheck(name="m", template="latency", judge="comparison", tolerance=20), 115.0, 100.0, PASS),
        (MetricCheck(name="m", template="latency", judge="comparison", tolerance=20), 121.0, 100.0, FAIL),
        (MetricCheck(name="m", template="latency", judge="comparison", tolerance=20), 10.0, 100.0, PASS),
        (
            MetricCheck(name="m", template="latency", judge="comparison", tolerance=0.1, relative=True),
            109.0,
            100.0,
            PASS,
        ),
        (
            MetricCheck(name="m", template="latency", judge="comparison", tolerance=0.1, relative=True),
            111.0,
            100.0,
            FAIL,
        ),
        (
            MetricCheck(name="m", template="success-rate", judge="comparison", tolerance=0.01),
            0.985,
            0.999,
            FAIL,
        ),
        (MetricCheck(name="m", template="success-rate", judge="comparison", tolerance=0.01), 1.0, 0.95, PASS),
        (
            MetricCheck(name="m", template="error-rate", judge="comparison", tolerance=0.5, relative=True),
            0.0,
            0.0,
            PASS,
        ),
        (
            MetricCheck(name="m", template="error-rate", judge="comparison", tolerance=0.5, relative=True),
            0.01,
            0.0,
            FAIL,
        ),
    ],
)
def test_comparison(check: MetricCheck, canary: float, stable: float, expected: str) -> None:
    assert verdict(check, MetricSample(name="m", value=canary, stable_value=stable))[0] == expected


def test_comparison_needs_both_values() -> None:
    check = MetricCheck(name="m", judge="comparison", tolerance=1)

    assert verdict(check, MetricSample(name="m", value=1.0)) == (
        INCONCLUSIVE,
        "canary or stable value missing",
    )
    assert verdict(check, MetricSample(name="m", value=1.0, stable_value=math.nan))[0] == INCONCLUSIVE


# -- sequential ---------------------------------------------------------------------------------------------------

SEQ = MetricCheck(name="errors", judge="sequential")


def counts(ce: float, cr: float, se: float, sr: float) -> MetricSample:
    return MetricSample(
        name="errors", canary_errors=ce, canary_requests=cr, stable_errors=se, stable_requests=sr
    )


def test_sequential_llr_is_zero_without_traffic_and_signed_by_the_evidence() -> None:
    assert sequential_llr(5, 0, 5, 100) == 0.0
    assert sequential_llr(50, 1000, 50, 9000) > 0  # canary has 9x the error rate of stable
    assert sequential_llr(5, 1000, 45, 9000) < 0  # same rate on both
    assert sequential_llr(0, 1000, 0, 9000) == 0.0


def test_sequential_fails_a_clear_regression() -> None:
    result, reason = verdict(SEQ, counts(60, 1000, 60, 9000), alpha=0.01)

    assert result == FAIL and "60/1000" in reason


def test_sequential_passes_when_the_canary_is_no_worse() -> None:
    assert verdict(SEQ, counts(10, 1000, 90, 9000))[0] == PASS
    assert verdict(SEQ, counts(5, 1000, 90, 9000))[0] == PASS


def test_sequential_needs_counts() -> None:
    s = MetricSample(name="errors", canary_errors=1, canary_requests=100)

    result, reason = verdict(SEQ, s)

    assert result == INCONCLUSIVE and "counts missing" in reason


SEVERITY = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2}


def test_a_larger_alpha_is_never_less_severe_and_sometimes_more() -> None:
    differs = []
    for canary_errors in range(0, 60, 3):
        s = counts(canary_errors, 1000, 90, 9000)
        loose, strict = verdict(SEQ, s, alpha=0.5)[0], verdict(SEQ, s, alpha=0.001)[0]
        assert SEVERITY[loose] >= SEVERITY[strict], canary_errors
        differs.append(loose != strict)

    assert any(differs)


def test_more_canary_errors_are_never_judged_better() -> None:
    severities = [SEVERITY[verdict(SEQ, counts(e, 1000, 90, 9000))[0]] for e in range(0, 80, 4)]

    assert severities == sorted(severities) and severities[0] == 0 and severities[-1] == 2


def test_the_post_promotion_watch_is_judged_by_threshold_checks_only() -> None:
    from functions.core.analysis import judge
    from functions.core.events import MetricSample
    from functions.core.policy import Analysis, MetricCheck

    analysis = Analysis(
        metrics=(
            MetricCheck(name="sr", template="success-rate", min=0.9),
            MetricCheck(name="lat", template="latency", judge="comparison", tolerance=0.01),
        )
    )
    samples = (
        MetricSample(name="sr", value=0.99, canary_requests=500),
        MetricSample(name="lat", value=0.05, stable_value=None, canary_requests=500),
    )  # no baseline left
    assert judge(analysis, samples, "t").verdict == "inconclusive"
    watched = judge(analysis, samples, "t", watching=True)
    assert watched.verdict == "pass" and [m.name for m in watched.metrics] == ["sr"]
