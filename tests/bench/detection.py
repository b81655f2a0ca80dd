"""Detection benchmark: how fast each canary policy rolls back a regression, and how often a healthy one.

A seeded, vectorised traffic simulator (numpy; one array lane per run) models requests per second, the
canary's traffic share at each step, Prometheus scraping every SCRAPE seconds and each policy's query
windows. Every policy sees the same traffic and is modelled by its own decision rule:

- argo-seed: the seed's Rollout (steps 20/40/60/80 % with 2-minute pauses; background analysis from
  step index 2, i.e. 40 %), a measurement every 10 s of the canary success rate over 1m, success when
  `result > 0.90`, failed once failed measurements EXCEED failureLimit 3 (not necessarily consecutive:
  argoproj/argo-rollouts analysis/analysis.go `if result.Failed > metric.FailureLimit`).
- flagger-example: the documented example (interval 1m, threshold 5, maxWeight 50, stepWeight 10,
  request-success-rate >= 99 % over 1m, request-duration p99 <= 500 ms over 1m). Each interval: a failed
  check increments failedChecks (never reset) and holds the weight; a passed one adds stepWeight; a pass
  at maxWeight promotes and the next interval routes everything to the promoted primary; at the start of
  an interval failedChecks >= threshold rolls back (fluxcd/flagger pkg/controller/scheduler.go).
- flagger-defaults: the same with Flagger's defaults (interval 60s, threshold 1, maxWeight 100:
  pkg/apis/flagger/v1beta1/canary.go); stepWeight has no default, the docs' 10 is used.
- graylane-default: the policy defaults of functions/core/policy.py (10 s interval, failureLimit 1,
  inconclusiveLimit 6, minRequests 50, alpha 0.01) on the seed's steps, with the mixture sequential judge
  on cumulative error counts since the stage started (functions/core/analysis.py) and the latency judge
  (p95 from the histogram, canary vs stable, relative tolerance 0.2 over 1m). A step moves on at its
  timer only after a passing verdict; 6 inconclusive verdicts in a row pause the release.

Next to each scenario: Wald's approximation of the expected number of canary requests an optimal SPRT
(known p0 and p1, alpha=0.01, beta=0.05) needs to reject "no regression": nothing can do much better.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.core.analysis import MIXTURE_EFFECTS, mixture_log_evidence
from tests.bench.registry import suite

RPS = 100.0  # total requests per second of the service
SCRAPE = 15  # Prometheus scrape interval, seconds
BASE_ERRORS = 0.005
LAT_MEDIAN_MS, LAT_SIGMA = 50.0, 0.5  # stable latency: log-normal
BUCKETS_MS = np.array([10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2500, np.inf])
HORIZON = 1800  # seconds simulated at most
ALPHA, BETA = 0.01, 0.05  # for the SPRT bound


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_errors: float
    latency_shift_ms: float = 0.0

    @property
    def healthy(self) -> bool:
        return self.canary_errors <= BASE_ERRORS and self.latency_shift_ms == 0


SCENARIOS = (
    Scenario("healthy", BASE_ERRORS),
    Scenario("mild 2%", 0.02),
    Scenario("bad 10%", 0.10),
    Scenario("catastrophic 50%", 0.50),
    Scenario("latency +100ms", BASE_ERRORS, 100.0),
)


def _bucket_probs(shift_ms: float) -> np.ndarray:
    """P(latency in each bucket) for log-normal latency shifted by shift_ms."""
    upper = BUCKETS_MS - shift_ms
    z = np.where(upper > 0, (np.log(np.maximum(upper, 1e-9)) - math.log(LAT_MEDIAN_MS)) / LAT_SIGMA, -np.inf)
    cdf = np.array(
        [0.5 * math.erfc(-x / math.sqrt(2)) if np.isfinite(x) else (1.0 if x > 0 else 0.0) for x in z]
    )
    cdf[-1] = 1.0
    return np.diff(np.concatenate([[0.0], cdf]))


# -- the information-theoretic floor --------------------------------------------------------------


def _wald_n(kl: float) -> float:
    """Expected sample size of Wald's SPRT under H1 (per observation KL divergence `kl`)."""
    a = (1 - BETA) * math.log((1 - BETA) / ALPHA) + BETA * math.log(BETA / (1 - ALPHA))
    return a / kl


def _kl_bernoulli(p1: float, p0: float) -> float:
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


def _kl_latency(shift_ms: float) -> float:
    """KL(shifted log-normal || log-normal) per request, by numerical integration."""
    x = np.linspace(shift_ms + 1e-6, shift_ms + 5000, 400_000)
    y = x - shift_ms

    def logpdf(v: np.ndarray) -> np.ndarray:
        return -np.log(v * LAT_SIGMA * math.sqrt(2 * math.pi)) - (
            np.log(v) - math.log(LAT_MEDIAN_MS)
        ) ** 2 / (2 * LAT_SIGMA**2)

    p1 = np.exp(logpdf(y))
    return float(np.trapezoid(p1 * (logpdf(y) - logpdf(x)), x))


def sprt_floor(s: Scenario) -> float:
    """Canary requests an optimal SPRT needs on average to detect the scenario's regression."""
    if s.latency_shift_ms:
        return _wald_n(_kl_latency(s.latency_shift_ms))
    return _wald_n(_kl_bernoulli(s.canary_errors, BASE_ERRORS))


# -- the simulator --------------------------------------------------------------------------------

K = len(BUCKETS_MS)
CR, CE, SR, SE = 0, 1, 2, 3
CB, SB = 4, 4 + K  # canary / stable bucket counts (not cumulative)
FIELDS = 4 + 2 * K


class Sim:
    """Counters per run, scraped every SCRAPE seconds; policies read only scraped snapshots."""

    def __init__(self, runs: int, scenario: Scenario, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.runs, self.s = runs, scenario
        self.weight = np.zeros(runs)  # canary share, 0..1
        self.active = np.ones(runs, dtype=bool)
        self.outcome = np.full(runs, "running", dtype=object)
        self.t_end = np.full(runs, np.nan)
        self.counters = np.zeros((runs, FIELDS))
        self.snaps = [self.counters.copy()]  # snapshot k at t = k * SCRAPE
        self.exposure = np.zeros(runs)  # canary requests served while the release was under test
        self.excess = np.zeros(runs)  # canary errors beyond the baseline rate
        self.p_canary = _bucket_probs(scenario.latency_shift_ms)
        self.p_stable = _bucket_probs(0.0)

    def second(self, t: int) -> None:
        w = np.where(self.active, self.weight, 0.0)
        nc = self.rng.poisson(RPS * w)
        ns = self.rng.poisson(RPS * (1 - w))
        ec = self.rng.binomial(nc, self.s.canary_errors)
        es = self.rng.binomial(ns, BASE_ERRORS)
        c = self.counters
        c[:, CR] += nc
        c[:, CE] += ec
        c[:, SR] += ns
        c[:, SE] += es
        c[:, CB:SB] += self.rng.multinomial(nc, self.p_canary)
        c[:, SB:] += self.rng.multinomial(ns, self.p_stable)
        self.exposure += nc
        self.excess += ec - nc * BASE_ERRORS
        if t % SCRAPE == 0:
            self.snaps.append(c.copy())

    def window(self, t: int, seconds: int) -> np.ndarray | None:
        """Increase over (t - seconds, t] as Prometheus sees it from its scrapes (None: < 2 samples)."""
        last = t // SCRAPE
        first = max(0, (t - seconds) // SCRAPE + 1)
        if last <= first:
            return None
        return self.snaps[last] - self.snaps[first]

    def since_start(self, t: int) -> np.ndarray:
        return self.snaps[t // SCRAPE] - self.snaps[0]

    def end(self, mask: np.ndarray, outcome: str, t: int) -> None:
        mask = mask & self.active
        self.outcome[mask] = outcome
        self.t_end[mask] = t
        self.active &= ~mask


def quantile_ms(d: np.ndarray, first: int, q: float) -> np.ndarray:
    """histogram_quantile(q) per run from bucket counts d[:, first:first+K] (NaN without requests)."""
    counts = d[:, first : first + K]
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    rank = q * total
    k = np.argmax(cum >= rank[:, None], axis=1)
    upper = BUCKETS_MS[k]
    lower = np.where(k > 0, BUCKETS_MS[np.maximum(k - 1, 0)], 0.0)
    below = np.where(k > 0, cum[np.arange(len(k)), np.maximum(k - 1, 0)], 0.0)
    inside = counts[np.arange(len(k)), k]
    frac = np.divide(rank - below, inside, out=np.zeros_like(rank), where=inside > 0)
    value = np.where(np.isinf(upper), BUCKETS_MS[-2], lower + (upper - lower) * frac)
    return np.where(total > 0, value, np.nan)


def log_evidence(ce: np.ndarray, cr: np.ndarray, se: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """Vectorised functions.core.analysis.mixture_log_evidence (checked against it in `_check_evidence`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p0 = cr / (cr + sr)
        llrs = []
        for e in MIXTURE_EFFECTS:
            p1 = e * cr / (e * cr + sr)
            llrs.append(ce * np.log(p1 / p0) + se * np.log((1 - p1) / (1 - p0)))
        stack = np.stack(llrs)
        top = stack.max(axis=0)
        out = top + np.log(np.exp(stack - top).mean(axis=0))
    return np.where((cr > 0) & (sr > 0), out, 0.0)


def _check_evidence() -> None:
    for args in ((3, 100, 2, 400), (30, 60, 1, 240), (16, 1000, 20, 4000)):
        fast = log_evidence(*(np.array([float(a)]) for a in args))[0]
        assert abs(fast - mixture_log_evidence(*args)) < 1e-9, (args, fast)


# -- policies -------------------------------------------------------------------------------------


class ArgoSeed:
    name = "argo-seed"
    steps, pause, start_index, interval, limit, window = (0.2, 0.4, 0.6, 0.8), 120, 1, 10, 3, 60

    def start(self, sim: Sim) -> None:
        sim.weight[:] = self.steps[0]
        self.failed = np.zeros(sim.runs, dtype=int)

    def tick(self, sim: Sim, t: int) -> None:
        if t % self.pause == 0:
            step = t // self.pause
            if step >= len(self.steps):
                sim.end(sim.active.copy(), "promoted", t)
                return
            sim.weight[:] = self.steps[step]
        if t >= self.start_index * self.pause and t % self.interval == 0:
            d = sim.window(t, self.window)
            if d is None:
                return
            with np.errstate(divide="ignore", invalid="ignore"):
                success = 1 - d[:, CE] / d[:, CR]
            self.failed += sim.active & ~(success > 0.90)  # NaN fails too
            sim.end(self.failed > self.limit, "rolled-back", t)


class Flagger:
    def __init__(
        self, name: str, threshold: int, max_weight: int, step: int = 10, interval: int = 60
    ) -> None:
        self.name, self.threshold, self.max_weight, self.step, self.interval = (
            name,
            threshold,
            max_weight,
            step,
            interval,
        )

    def start(self, sim: Sim) -> None:
        self.failed = np.zeros(sim.runs, dtype=int)
        self.promoting = np.zeros(sim.runs, dtype=bool)
        sim.weight[:] = self.step / 100  # the first interval only starts the canary

    def tick(self, sim: Sim, t: int) -> None:
        if t == 0 or t % self.interval:
            return
        sim.end(self.failed >= self.threshold, "rolled-back", t)
        sim.end(self.promoting, "promoted", t)  # finalising: all traffic to the promoted primary
        d = sim.window(t, 60)
        if d is None:
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            success = 100 * (1 - d[:, CE] / d[:, CR])
        p99 = quantile_ms(d, CB, 0.99)
        ok = (success >= 99) & (p99 <= 500)  # NaN (no traffic) is a failed check
        live = sim.active & ~self.promoting
        self.failed += live & ~ok
        at_max = sim.weight >= self.max_weight / 100 - 1e-9
        self.promoting |= live & ok & at_max
        grow = live & ok & ~at_max
        sim.weight[grow] = np.minimum(sim.weight[grow] + self.step / 100, self.max_weight / 100)


class Graylane:
    steps, interval, window = (0.2, 0.4, 0.6, 0.8), 10, 60
    alpha, min_requests, inconclusive_limit, tolerance = 0.01, 50, 6, 0.2

    def __init__(self, name: str = "graylane-default", pause: int = 120) -> None:
        self.name, self.pause = name, pause

    def start(self, sim: Sim) -> None:
        n = sim.runs
        self.step = np.zeros(n, dtype=int)
        self.step_start = np.zeros(n)
        self.passes = np.zeros(n, dtype=int)
        self.last_pass = np.zeros(n, dtype=bool)
        self.inconclusive = np.zeros(n, dtype=int)
        sim.weight[:] = self.steps[0]

    def tick(self, sim: Sim, t: int) -> None:
        if t == 0 or t % self.interval:
            return
        verdict = self._verdict(sim, t)  # 0 pass, 1 inconclusive, 2 fail
        live = sim.active.copy()
        sim.end(live & (verdict == 2), "rolled-back", t)
        self.inconclusive = np.where(verdict == 1, self.inconclusive + 1, 0)
        sim.end(live & (self.inconclusive >= self.inconclusive_limit), "paused", t)
        self.last_pass = verdict == 0
        self.passes += self.last_pass
        due = sim.active & (t - self.step_start >= self.pause) & self.last_pass & (self.passes > 0)
        last = due & (self.step == len(self.steps) - 1)
        sim.end(last, "promoted", t)
        move = due & ~last
        self.step[move] += 1
        self.step_start[move] = t
        self.passes[move] = 0
        sim.weight[move] = np.array(self.steps)[self.step[move]]

    def _verdict(self, sim: Sim, t: int) -> np.ndarray:
        n = sim.runs
        cum = sim.since_start(t)
        ev = log_evidence(cum[:, CE], cum[:, CR], cum[:, SE], cum[:, SR])
        bound = math.log(1 / self.alpha)
        errors = np.where(ev >= bound, 2, np.where(ev >= bound / 2, 1, 0))
        errors = np.where(cum[:, CR] < self.min_requests, 1, errors)
        d = sim.window(t, self.window)
        if d is None:
            return np.maximum(errors, 1)
        canary, stable = quantile_ms(d, CB, 0.95), quantile_ms(d, SB, 0.95)
        with np.errstate(invalid="ignore", divide="ignore"):
            worse = (canary - stable) / stable
        latency = np.where(
            np.isnan(worse) | (d[:, CR] < self.min_requests), 1, np.where(worse > self.tolerance, 2, 0)
        )
        return (
            np.where((errors == 2) | (latency == 2), 2, np.maximum(errors, latency)).astype(int)
            if n
            else errors
        )


def policies() -> list[Any]:
    return [Graylane(), Graylane("graylane-1m-steps", pause=60), ArgoSeed(), Flagger("flagger-example", threshold=5, max_weight=50),
            Flagger("flagger-defaults", threshold=1, max_weight=100)]  # fmt: skip


# -- running --------------------------------------------------------------------------------------


def simulate(policy: Any, scenario: Scenario, runs: int, seed: int) -> dict[str, Any]:
    sim = Sim(runs, scenario, seed)
    policy.start(sim)
    for t in range(1, HORIZON + 1):
        sim.second(t)
        policy.tick(sim, t)
        if not sim.active.any():
            break
    sim.end(sim.active.copy(), "running", HORIZON)
    rolled = sim.outcome == "rolled-back"
    promoted = sim.outcome == "promoted"
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
    return {
        "runs": runs,
        "rollback_rate": float(rolled.mean()),
        "promotion_rate": float(promoted.mean()),
        "pause_rate": float((sim.outcome == "paused").mean()),
        "rollback_s_median": pct(sim.t_end[rolled], 50),
        "rollback_s_p90": pct(sim.t_end[rolled], 90),
        "promotion_s_median": pct(sim.t_end[promoted], 50),
        "canary_requests_to_rollback_median": pct(sim.exposure[rolled], 50),
        "failed_by_canary_mean": float(sim.excess.mean()),  # until rollback, promotion or the horizon
        "slowed_requests_mean": float(sim.exposure.mean()) if scenario.latency_shift_ms else 0.0,
    }


def _fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}s"


def _row(scenario: Scenario, name: str, r: dict[str, Any], floor: float) -> tuple[str, str, str, str]:
    if scenario.healthy:
        result = (f"false rollback {100 * r['rollback_rate']:.1f}%, paused {100 * r['pause_rate']:.1f}%, "
                  f"promoted in {_fmt_s(r['promotion_s_median'])}")  # fmt: skip
        target = f"<= {100 * ALPHA:g}%" if name.startswith("graylane") else "-"
        verdict = ("ok" if r["rollback_rate"] <= ALPHA else "over") if name.startswith("graylane") else "-"
        return (f"healthy: {name}", result, target, verdict)
    harm = (f"{r['slowed_requests_mean']:,.0f} slowed" if scenario.latency_shift_ms
            else f"{r['failed_by_canary_mean']:,.1f} failed")  # fmt: skip
    reqs = r["canary_requests_to_rollback_median"]
    result = (f"rollback {100 * r['rollback_rate']:.0f}% in {_fmt_s(r['rollback_s_median'])} "
              f"(p90 {_fmt_s(r['rollback_s_p90'])}), {harm}, "
              f"promoted {100 * r['promotion_rate']:.0f}%, "
              f"{'-' if reqs is None else f'{reqs:,.0f}'} canary req (SPRT min {floor:,.{0 if floor >= 10 else 1}f})")  # fmt: skip
    return (f"{scenario.name}: {name}", result, "-", "-")


@suite("detection")
def bench_detection(args: argparse.Namespace) -> dict[str, Any]:
    _check_evidence()
    healthy_runs, bad_runs = (200, 100) if args.quick else (1000, 300)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[tuple[str, str, str, str]] = []
    for si, scenario in enumerate(SCENARIOS):
        floor = sprt_floor(scenario) if not scenario.healthy else 0.0
        per: dict[str, Any] = {"sprt_min_canary_requests": floor,
                               "sprt_min_seconds_at_20pct": floor / (RPS * 0.2) if floor else 0.0}  # fmt: skip
        for policy in policies():
            runs = healthy_runs if scenario.healthy else bad_runs
            per[policy.name] = simulate(
                policy, scenario, runs, seed=1000 + si
            )  # same traffic seed per scenario
            rows.append(_row(scenario, policy.name, per[policy.name], floor))
        if not scenario.healthy:
            rows.append(_verdict_row(scenario, per))
        results[scenario.name] = per
    elapsed = time.perf_counter() - started
    model = {"rps": RPS, "scrape_s": SCRAPE, "base_error_rate": BASE_ERRORS,
             "latency": f"log-normal median {LAT_MEDIAN_MS} ms sigma {LAT_SIGMA}", "alpha": ALPHA, "beta": BETA,
             "horizon_s": HORIZON, "healthy_runs": healthy_runs, "regression_runs": bad_runs}  # fmt: skip
    return {"model": model, "scenarios": results, "seconds": elapsed, "rows": rows}


def _verdict_row(scenario: Scenario, per: dict[str, Any]) -> tuple[str, str, str, str]:
    """graylane vs the fastest anchor on this scenario (time to roll back, median)."""
    g = per["graylane-default"]
    anchors = [per[n] for n in ("argo-seed", "flagger-example", "flagger-defaults")]
    best = min((a["rollback_s_median"] for a in anchors if a["rollback_s_median"] is not None), default=None)
    mine = g["rollback_s_median"]
    ok = mine is not None and (best is None or mine <= best) and g["rollback_rate"] >= 0.95
    return (f"{scenario.name}: graylane vs best anchor", f"{_fmt_s(mine)} vs {_fmt_s(best)}",
            "faster, >= 95% caught", "ok" if ok else "worse")  # fmt: skip
