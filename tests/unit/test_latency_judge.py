"""The latency judge: an anytime-valid sequential test on the share of canary requests slower than the bucket
bound at the stable's p95, from the histograms of Traefik, Istio and NGINX (HAProxy has none)."""

from __future__ import annotations

import math
import random

import pytest

from functions.core.analysis import FAIL, INCONCLUSIVE, PASS, judge
from functions.core.counters import Evidence, Totals
from functions.core.events import MetricSample
from functions.core.evidence import _choose_bound, log_evidence, update
from functions.core.policy import Analysis, ImageRule, MetricCheck, Policy, RouterSpec
from functions.core.state import Release, Version
from functions.providers.metrics import templates as tp
from functions.providers.metrics.prometheus import Answer, PrometheusAnalysis
from tests.unit.evidence_helpers import Counters
from tests.unit.machine_helpers import T0

LATENCY = MetricCheck(name="latency", template="latency", judge="sequential")
AT = "2024-05-01T12:00:00.000000Z"


def _evidence(shift_ms: float, seconds: int = 60) -> Evidence:
    counters, e = Counters(canary_slow_ms=shift_ms), None
    e = update(e, counters.totals(), T0)
    for _ in range(seconds // 15):
        counters.serve(15, 20)
        e = update(e, counters.totals(), T0)
    assert e is not None
    return e


def test_latency_judge_fails_a_slower_canary_and_passes_an_equal_one() -> None:
    analysis = Analysis(metrics=(LATENCY,))
    sample = (MetricSample(name="latency", value=150.0, stable_value=95.0, canary_requests=1200),)
    slow = judge(analysis, sample, AT, evidence=_evidence(100.0))
    assert slow.verdict == FAIL and "slower than 100 ms" in slow.reason
    same = judge(analysis, sample, AT, evidence=_evidence(0.0))
    assert same.verdict == PASS and same.metrics[0].value == 150.0  # the p95 is still recorded
    assert judge(analysis, sample, AT, evidence=None).verdict == INCONCLUSIVE


@pytest.mark.parametrize(
    ("router", "bounds_s", "to_ms", "expected_ms"),
    [
        ("nginx", (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), 1000.0, 100.0),
        ("traefik", (0.1, 0.3, 1.2, 5.0), 1000.0, 100.0),
        ("istio", (1, 5, 10, 25, 50, 100, 250, 500, 1000), 1.0, 100.0),
    ],
)
def test_latency_judge_bound_is_the_bucket_at_the_p95_on_each_router(
    router: str, bounds_s: tuple[float, ...], to_ms: float, expected_ms: float
) -> None:
    """Log-normal(50 ms, 0.5) latency: p95 = 114 ms; the largest bucket bound with >= 5 % above it."""
    policy = Policy(
        name="web", namespace="prod", image=ImageRule("r/x"), router=RouterSpec(router, {}), stages=()
    )
    target = tp.target(policy, "web-1")
    names = {"traefik": "service", "nginx": "service", "istio": "destination_workload"}
    labels = {
        "traefik": {"service": "prod-web-80@kubernetescrd"},
        "nginx": {"namespace": "prod", "service": "web"},
        "istio": {"destination_workload_namespace": "prod", "destination_workload": "web"},
    }[router]
    assert names[router] in labels
    series = []
    for b in (*bounds_s, math.inf):
        ms = b * to_ms
        share = (
            1.0 if math.isinf(ms) else 0.5 * math.erfc(-(math.log(ms) - math.log(50.0)) / 0.5 / math.sqrt(2))
        )
        series.append(
            {
                "metric": {**labels, "le": "+Inf" if math.isinf(b) else f"{b:g}"},
                "value": [0, str(1000 * share)],
            }
        )
    assert tp.buckets_query(router, [target]).startswith("sum by (")
    stable = tp.split_buckets(router, [target], series)["web-1"]["stable"]
    assert sorted(stable)[-1] == math.inf and min(stable) == pytest.approx(bounds_s[0] * to_ms)
    bounds = tuple(sorted(stable))
    delta = tuple((b, 0.0, stable[b]) for b in bounds)
    assert _choose_bound(delta) == pytest.approx(expected_ms)


def test_latency_judge_has_no_histogram_on_haproxy() -> None:
    assert tp.buckets_query("haproxy", []) == ""


def test_latency_judge_reads_raw_buckets_with_the_counters() -> None:
    policy = Policy(
        name="web",
        namespace="prod",
        image=ImageRule("r/x"),
        router=RouterSpec("nginx", {}),
        stages=(),
        analysis=Analysis(metrics=(LATENCY,)),
    )
    release = Release(id="web-2", seq=2, target=Version("v2"), origin=Version("v1"), started_at=AT)
    sent: list[str] = []

    class Fake(PrometheusAnalysis):
        def _query(self, url: str, query: str, now: float) -> Answer:
            sent.append(query)
            if "bucket" in query:
                return Answer(
                    query,
                    [
                        {"metric": {"namespace": "prod", "service": svc, "le": le}, "value": [0, v]}
                        for svc in ("web", "web-canary")
                        for le, v in (("0.1", "90"), ("+Inf", "100"))
                    ],
                )
            return Answer(
                query,
                [
                    {
                        "metric": {"namespace": "prod", "service": "web-canary", "status": code},
                        "value": [0, v],
                    }
                    for code, v in (("200", "95"), ("503", "5"))
                ],
            )

    totals = Fake("http://p").totals_many([(policy, release)])["web-2"]
    assert len(sent) == 2 and all("increase" not in q for q in sent)  # raw counters: no extrapolation
    assert (totals.canary_requests, totals.canary_errors, totals.stable_requests) == (100.0, 5.0, 0.0)
    assert totals.buckets == ((100.0, 90.0, 90.0), (math.inf, 100.0, 100.0))


def _reading(bounds: tuple[float, ...], c: list[float], s: list[float]) -> Totals:
    return Totals(canary_requests=c[-1], stable_requests=s[-1], buckets=tuple(zip(bounds, c, s, strict=True)))


def test_latency_judge_is_anytime_valid_under_repeated_looks() -> None:
    """Canary and stable with the same latency: whatever the bucket layout and however many looks, the
    judge's e-process crosses log(1/alpha) in at most alpha of the runs."""
    alpha, runs, looks = 0.05, 300, 150
    rng = random.Random(11)
    bounds = (25.0, 50.0, 100.0, 250.0, math.inf)
    cum = (0.08, 0.5, 0.917, 0.9994, 1.0)
    crossed = 0
    for _ in range(runs):
        c = [0.0] * len(bounds)
        s = [0.0] * len(bounds)

        e = update(None, _reading(bounds, c, s), T0)
        share = rng.choice((0.05, 0.2, 0.5))
        for _ in range(looks):
            for version, n in (
                (c, rng.randint(0, 20) if rng.random() < share * 2 else 0),
                (s, rng.randint(5, 40)),
            ):
                for _ in range(n):
                    u = rng.random()
                    for i, p in enumerate(cum):
                        if u <= p:
                            version[i] += 1
            e = update(e, _reading(bounds, c, s), T0)
            if log_evidence(e.latency) >= math.log(1 / alpha):
                crossed += 1
                break
    assert crossed / runs <= alpha, crossed
