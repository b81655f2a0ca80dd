"""The detection benchmark's simulated Prometheus answers graylane's real queries with Prometheus' semantics,
and its traffic is the same for every policy (common random numbers)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from functions.providers.metrics import templates as tp
from functions.providers.routers import traefik
from tests.bench.detection_sim import (
    PRE,
    TSDB,
    Scenario,
    Sim,
    Traffic,
    bucket_quantile,
    extrapolated_increase,
)
from tests.support import canary_policy


def test_increase_extrapolates_like_prometheus() -> None:
    times = np.array([15.0, 30.0, 45.0, 60.0])
    # a counter starting at 0 is never extrapolated below zero; the end is 0 s away
    assert extrapolated_increase(times, np.array([0.0, 10.0, 20.0, 30.0]), 0.0, 60.0) == pytest.approx(30.0)
    # 15 s missing at the start (< 1.1 x the 15 s interval): extrapolated over the whole 60 s range
    assert extrapolated_increase(times, np.array([100.0, 110.0, 120.0, 130.0]), 0.0, 60.0) == pytest.approx(
        40.0
    )
    # a reset (100 -> 5) counts from zero: 5 + 10
    assert extrapolated_increase(times[:3], np.array([100.0, 5.0, 15.0]), 15.0, 45.0) == pytest.approx(15.0)


def test_bucket_quantile_interpolates_inside_a_bucket() -> None:
    buckets = [(0.1, 50.0), (0.25, 90.0), (0.5, 100.0), (math.inf, 100.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.7, buckets) == pytest.approx(0.1 + 0.15 * 0.5)
    assert bucket_quantile(1.0, [(0.1, 0.0), (math.inf, 4.0)]) == pytest.approx(
        0.1
    )  # in +Inf: the last bound
    assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def _sim(scrape: int = 15) -> tuple[Sim, tp.Target]:
    from functions.core.policy import RouterSpec

    policy = canary_policy(namespace="default")
    policy = type(policy)(
        **{
            **{f: getattr(policy, f) for f in policy.__dataclass_fields__},
            "router": RouterSpec(provider="nginx"),
        }
    )
    target = tp.target(policy, "r")
    sim = Sim(Traffic(3, Scenario("bad", 0.5)), scrape, 7, "nginx", target.names, horizon=600)
    return sim, target


def test_the_templates_queries_are_answered_from_the_scraped_counters() -> None:
    sim, target = _sim()
    sim.run_until(0)
    sim.weight = 0.2
    sim.run_until(120)
    counts = sim.tsdb.query(tp.counts_query("nginx", [(target, 60)]), 120.0)
    split = tp.split_counts("nginx", [target], counts)["r"]
    canary, stable = split["canary"], split["stable"]
    assert 0.4 < canary.errors / canary.requests < 0.6 and stable.errors / stable.requests < 0.02
    assert 0.15 < canary.requests / (canary.requests + stable.requests) < 0.25
    latency = tp.split_values([target], sim.tsdb.query(tp.latency_query("nginx", [(target, 60)]), 120.0))["r"]
    assert (
        60 < latency["stable"] < 250 and 60 < latency["canary"] < 250
    )  # p95 of log-normal(50 ms, 0.5) in ms
    # the last scrape before 120 s was at 112 s (phase 7): nothing after it is visible yet
    assert sim.tsdb.times[-1] == 112.0


def test_traffic_is_the_same_whoever_routes_it() -> None:
    a, b = Traffic(11, Scenario("x", 0.1)), Traffic(11, Scenario("x", 0.1))
    first = [len(u) for u, *_ in a.segments(-PRE, 300)]
    assert first == [len(u) for u, *_ in b.segments(-PRE, 300)]
    # a segment read in two halves is the same requests as read at once
    whole = np.concatenate([u for u, *_ in a.segments(10, 250)])
    halves = np.concatenate([u for u, *_ in b.segments(10, 130)] + [u for u, *_ in b.segments(130, 250)])
    assert np.array_equal(whole, halves)


def test_unsupported_queries_raise() -> None:
    sim, _ = _sim()
    with pytest.raises(ValueError, match="unsupported"):
        sim.tsdb.query("topk(3, up)", 0.0)
    assert TSDB([{"__name__": "up"}], 4).query("up", 0.0) == []


def test_the_real_stack_prediction_uses_the_real_stacks_series_buckets_and_latency() -> None:
    """tests/bench/realstack: the simulator fits the real stable's histogram and names Traefik's real series."""
    from tests.bench.detection_policies import series_names
    from tests.bench.detection_sim import draw_from_histogram, version_labels
    from tests.bench.realstack import histogram_cdf
    from tests.traefik.analysis import seed_policy_on_traefik

    cdf = histogram_cdf([(0.005, 80.0), (0.025, 95.0), (0.1, 99.0), (math.inf, 100.0)])
    assert cdf == ((0.005, 0.8), (0.025, 0.95), (0.1, 0.99), (math.inf, 1.0))
    lat = draw_from_histogram(cdf, np.random.default_rng(7).random(100_000))
    shares = [float((lat <= b).mean()) for b in (0.005, 0.025, 0.1)]
    assert shares == pytest.approx([0.8, 0.95, 0.99], abs=0.005) and lat.max() == 0.2  # +Inf: above 0.1
    assert float(np.median(lat)) == pytest.approx(0.005 * 0.5 / 0.8, rel=0.02)  # linear inside the bucket
    assert histogram_cdf([(0.005, 0.0), (math.inf, 0.0)]) == ()

    policy = seed_policy_on_traefik("v3", "rel-v3-abc")
    labels = version_labels("traefik", series_names(policy), "canary")
    assert labels == {"service": traefik.service_label("rel-v3-abc", "k8s-flask-canary", 8080)}
    ((name, regex),) = tp.target(policy, "x").canary.labels  # what graylane's queries select
    assert name == "service" and re.fullmatch(regex, labels["service"])
