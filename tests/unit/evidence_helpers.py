"""Builders for the guard / exposure / latency-judge tests: a policy on a router with counters, and raw counters
(`Totals`) that grow at the weight the release routes, read as a scrape would."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from functions.core.counters import Totals
from functions.core.events import MetricSample, Observation
from functions.core.policy import (
    Analysis,
    CanaryStage,
    CanaryStep,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
)
from tests.unit.machine_helpers import Driver, make_policy

BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, float("inf"))  # NGINX's default buckets


def seed_like(**analysis: Any) -> Policy:
    """The seed's shape: steps 20/40/60/80 with 2-minute pauses, analysis from step 2, success rate >= 0.90."""
    base = Analysis(
        interval=10.0,
        start_step=2,
        failure_limit=3,
        metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),),
    )
    policy = make_policy(
        CanaryStage(steps=tuple(CanaryStep(w, 120.0) for w in (20, 40, 60, 80))),
        PromoteStage(),
        analysis=replace(base, **analysis),
    )
    return replace(policy, router=RouterSpec(provider="nginx"))


@dataclass
class Counters:
    """The two versions' counters: `serve(seconds, weight)` adds what `rps` requests a second would do."""

    canary_errors_rate: float = 0.005
    stable_errors_rate: float = 0.005
    canary_slow_ms: float = 0.0  # added to the canary's latency
    rps: float = 100.0
    seed: int | None = None  # None: expected counts (deterministic); else Poisson/binomial draws
    canary: list[float] = field(default_factory=lambda: [0.0, 0.0] + [0.0] * len(BOUNDS_MS))
    stable: list[float] = field(default_factory=lambda: [10_000.0, 50.0] + [0.0] * len(BOUNDS_MS))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _latency_shares(self, shift: float) -> list[float]:
        """P(latency <= bound) for a log-normal(50 ms, 0.5) latency plus `shift` ms."""
        import math

        out = []
        for b in BOUNDS_MS:
            x = b - shift
            out.append(
                1.0
                if math.isinf(b)
                else 0.0
                if x <= 0
                else 0.5 * math.erfc(-(math.log(x) - math.log(50.0)) / 0.5 / math.sqrt(2))
            )
        return out

    def _draw(self, n: float, p: float) -> float:
        if self.seed is None:
            return n * p
        return float(sum(self.rng.random() < p for _ in range(int(n))))

    def _requests(self, mean: float) -> float:
        if self.seed is None:
            return mean
        # Poisson by inversion is slow for large means; a normal approximation is plenty here
        return float(max(0, round(self.rng.gauss(mean, mean**0.5))))

    def serve(self, seconds: float, weight: float) -> None:
        for version, share, errors, shift in (
            (self.canary, weight / 100, self.canary_errors_rate, self.canary_slow_ms),
            (self.stable, 1 - weight / 100, self.stable_errors_rate, 0.0),
        ):
            n = self._requests(self.rps * seconds * share)
            version[0] += n
            version[1] += self._draw(n, errors)
            cum = self._latency_shares(shift)
            if self.seed is None:
                for i, c in enumerate(cum):
                    version[2 + i] += n * c
            else:
                counts = [0.0] * len(cum)
                for _ in range(int(n)):
                    u = self.rng.random()
                    for i, c in enumerate(cum):
                        if u <= c:
                            counts[i] += 1
                for i in range(len(cum)):
                    version[2 + i] += counts[i]

    def totals(self) -> Totals:
        c, s = self.canary, self.stable
        return Totals(
            canary_requests=c[0],
            canary_errors=c[1],
            stable_requests=s[0],
            stable_errors=s[1],
            buckets=tuple((b, c[2 + i], s[2 + i]) for i, b in enumerate(BOUNDS_MS)),
        )

    def observe(self) -> Observation:
        """The counters, and the user's success-rate metric as the window query would measure it."""
        success = MetricSample(name="success-rate", value=1 - self.canary_errors_rate, canary_requests=1000.0)
        return Observation(totals=self.totals(), metrics=(success,))


def run(driver: Driver, counters: Counters, seconds: float, every: float = 5.0) -> None:
    """Serve traffic at the routed weight and tick every `every` seconds (a scrape before each tick)."""
    t = 0.0
    while t < seconds and driver.rel.active:
        counters.serve(every, driver.state.routes.canary)
        driver.tick(every, counters.observe())
        t += every
