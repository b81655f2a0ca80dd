"""Messages count whole requests: Prometheus' increase() extrapolates, people count requests."""

from __future__ import annotations

import math

import pytest

from functions.core.analysis import INCONCLUSIVE, judge, whole
from functions.core.events import MetricSample
from functions.core.policy import Analysis, MetricCheck

AT = "2024-05-01T12:00:00.000000Z"


def test_the_minimum_requests_guard_names_whole_requests() -> None:
    check = MetricCheck(name="success-rate", template="success-rate", min=0.9)
    result = judge(
        Analysis(metrics=(check,), min_requests=20),
        (MetricSample("success-rate", value=1.0, canary_requests=4.37267),),
        AT,
    )
    assert (result.verdict, result.metrics[0].reason) == (INCONCLUSIVE, "4 canary requests < 20")
    # 19.6 is below 20: it must not read "20 canary requests < 20"
    result = judge(
        Analysis(metrics=(check,), min_requests=20),
        (MetricSample("success-rate", value=1.0, canary_requests=19.6),),
        AT,
    )
    assert result.metrics[0].reason == "19 canary requests < 20"


def test_the_sequential_judge_shows_whole_counts() -> None:
    check = MetricCheck(name="errors", template="error-rate", judge="sequential")
    sample = MetricSample(
        "errors",
        value=0.01,
        canary_requests=409.73,
        canary_errors=3.9,
        stable_requests=2011.2,
        stable_errors=1.04,
    )
    reason = judge(Analysis(metrics=(check,), min_requests=50), (sample,), AT).metrics[0].reason
    assert "canary 4/410 vs stable 1/2011," in reason and "409.73" not in reason


@pytest.mark.parametrize(
    ("count", "down", "shown"),
    [
        (4.37267, False, "4"),
        (4.6, False, "5"),
        (4.6, True, "4"),
        (0.0, True, "0"),
        (1200.0, False, "1200"),
        (math.inf, False, "inf"),
        (math.nan, True, "nan"),
    ],
)
def test_whole(count: float, down: bool, shown: str) -> None:
    assert whole(count, down) == shown
