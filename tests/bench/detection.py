"""Detection benchmark: how fast each canary policy rolls back a regression, how often a healthy one, and what it
costs in failed requests — graylane measured as the product, not as a model of it.

Every run draws its requests once (common random numbers, `detection_sim.Traffic`): each second's requests,
where each would go at any weight, whether it would fail on the canary and on stable, and its latency. Every
policy is then driven on those same requests by its own decision rule (`detection_policies`): graylane is the
real `Runner` + `decide()` + `PrometheusAnalysis` on a simulated clock, its queries answered by a simulated
Prometheus that scrapes the routers' counters every `scrape_s` seconds; Argo Rollouts and Flagger keep their
documented rules and read the same scraped series.

Every system runs the same user configuration, the seed's (infra/examples/argo-canary-analysis.yaml: steps
20/40/60/80 % with 2-minute pauses, analysis from step 2, failureLimit 3, success rate >= 0.90 as the user's
metric), and each system's own defaults for everything the seed leaves open: `graylane-seed` is that file
as graylane parses it, `argo-seed` the seed's Rollout. Flagger cannot express the seed's steps; it runs its
documented example (`flagger-example`) and its defaults (`flagger-defaults`).

Outcomes per scenario and policy: rollback / promotion / pause rates, times (from the canary's first request),
canary requests until the rollback, and canary-caused failed requests (requests that failed on the canary
and would have succeeded on stable: exact, thanks to the coupled draws). Next to each regression, Wald's
approximation of the expected number of canary requests an optimal SPRT (known rates, alpha 1 %, beta 5 %)
needs, and the failed requests that costs: no test can do better on average.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from tests.bench.detection_sim import BASE_ERRORS, LAT_MEDIAN_S, LAT_SIGMA, RPS, Scenario, Sim, Traffic
from tests.bench.registry import suite

SCRAPES = (15, 1)  # seconds; the first is the headline
HORIZON = 1800  # seconds simulated at most
ALPHA, BETA = 0.01, 0.05  # for the SPRT floor
SEED_SCHEDULE_S = 480.0  # 4 steps x 2 minutes
ANCHORS = ("argo-seed", "flagger-example", "flagger-defaults")
GRAYLANE = "graylane-seed"

SCENARIOS = (
    Scenario("healthy", BASE_ERRORS),
    Scenario("mild 2%", 0.02),
    Scenario("bad 10%", 0.10),
    Scenario("catastrophic 50%", 0.50),
    Scenario("latency +100ms", BASE_ERRORS, 100.0),
)


# -- the information-theoretic floor --------------------------------------------------------------


def _wald_n(kl: float) -> float:
    """Expected sample size of Wald's SPRT under H1 (per observation KL divergence `kl`)."""
    a = (1 - BETA) * math.log((1 - BETA) / ALPHA) + BETA * math.log(BETA / (1 - ALPHA))
    return a / kl


def _kl_bernoulli(p1: float, p0: float) -> float:
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


def _kl_latency(shift_ms: float) -> float:
    """KL(shifted log-normal || log-normal) per request, by numerical integration (ms)."""
    median = LAT_MEDIAN_S * 1000
    x = np.linspace(shift_ms + 1e-6, shift_ms + 5000, 400_000)
    y = x - shift_ms

    def logpdf(v: np.ndarray) -> np.ndarray:
        return -np.log(v * LAT_SIGMA * math.sqrt(2 * math.pi)) - (np.log(v) - math.log(median)) ** 2 / (
            2 * LAT_SIGMA**2
        )

    p1 = np.exp(logpdf(y))
    return float(np.trapezoid(p1 * (logpdf(y) - logpdf(x)), x))


def sprt_floor(s: Scenario) -> float:
    """Canary requests an optimal SPRT needs on average to detect the scenario's regression."""
    if s.latency_shift_ms:
        return _wald_n(_kl_latency(s.latency_shift_ms))
    return _wald_n(_kl_bernoulli(s.canary_errors, BASE_ERRORS))


def floor_failed(s: Scenario) -> float:
    """The failed requests the floor's canary requests cost: SPRT requests x the canary's excess error rate."""
    return sprt_floor(s) * max(0.0, s.canary_errors - BASE_ERRORS)


# -- running --------------------------------------------------------------------------------------


def _policies() -> list[Any]:
    from tests.bench.detection_policies import ArgoSeed, Flagger, Graylane, seed_policy

    seed = seed_policy()
    return [
        Graylane(GRAYLANE, seed),
        ArgoSeed(seed),
        Flagger("flagger-example", seed, threshold=5, max_weight=50),
        Flagger("flagger-defaults", seed, threshold=1, max_weight=100),
    ]


def _phase(seed: int, scrape: int) -> int:
    return int(np.random.default_rng([seed, 1_000_003]).integers(0, scrape))


def run_policy(policy: Any, traffic: Traffic, scrape: int, phase: int) -> dict[str, Any]:
    """One policy on one run's traffic, from the canary's first request until it ends or the horizon."""
    from tests.bench.detection_policies import series_names

    sim = Sim(traffic, scrape, phase, policy.policy.router.provider, series_names(policy.policy), HORIZON)
    sim.run_until(0)
    policy.start(sim)
    outcome, t = "running", 0
    step = policy.tick_every
    while t < HORIZON:
        t = (t // step + 1) * step
        sim.run_until(t)
        result = policy.tick(sim, t)
        if result:
            outcome = result
            break
    sim.end()
    return {
        "outcome": outcome,
        "t": float(t),
        "canary_requests": sim.canary_requests,
        "caused": sim.caused_failures,
    }


def run_batch(job: tuple[int, int, list[int]]) -> dict[str, list[dict[str, Any]]]:
    """Runs `seeds` of scenario `si` at `scrape` for every policy (a process-pool task)."""
    si, scrape, seeds = job
    scenario = SCENARIOS[si]
    policies = _policies()
    out: dict[str, list[dict[str, Any]]] = {p.name: [] for p in policies}
    for seed in seeds:
        traffic = Traffic(seed, scenario)  # the same requests for every policy (and every scenario)
        phase = _phase(seed, scrape)
        for policy in policies:
            out[policy.name].append(run_policy(policy, traffic, scrape, phase))
    return out


def summarise(runs: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    outcome = np.array([r["outcome"] for r in runs])
    t = np.array([r["t"] for r in runs])
    requests = np.array([r["canary_requests"] for r in runs], dtype=float)
    caused = np.array([r["caused"] for r in runs], dtype=float)
    rolled, promoted = outcome == "rolled-back", outcome == "promoted"
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
    return {
        "runs": len(runs),
        "rollback_rate": float(rolled.mean()),
        "promotion_rate": float(promoted.mean()),
        "pause_rate": float(np.isin(outcome, ("paused", "frozen")).mean()),
        "rollback_s_median": pct(t[rolled], 50),
        "rollback_s_p90": pct(t[rolled], 90),
        "promotion_s_median": pct(t[promoted], 50),
        "promotion_s_p90": pct(t[promoted], 90),
        "canary_requests_to_rollback_median": pct(requests[rolled], 50),
        "canary_requests_mean": float(requests.mean()),
        "failed_by_canary_mean": float(caused.mean()),  # until rollback, promotion or the horizon
        "slowed_requests_mean": float(requests.mean()) if scenario.latency_shift_ms else 0.0,
    }


def measure(
    scrape: int,
    healthy_runs: int,
    bad_runs: int,
    workers: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    jobs: list[tuple[int, int, list[int]]] = []
    for si, scenario in enumerate(SCENARIOS):
        n = healthy_runs if scenario.healthy else bad_runs
        seeds = list(range(1, n + 1))
        size = max(1, math.ceil(n / (workers * 4)))
        jobs += [(si, scrape, seeds[i : i + size]) for i in range(0, n, size)]
    merged: dict[int, dict[str, list[dict[str, Any]]]] = {}
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for (si, _, _), part in zip(jobs, pool.map(run_batch, jobs), strict=True):
            for name, runs in part.items():
                merged.setdefault(si, {}).setdefault(name, []).extend(runs)
    progress(
        f"scrape {scrape}s: {sum(len(j[2]) for j in jobs)} runs x 4 policies in "
        f"{time.perf_counter() - started:.0f}s"
    )
    scenarios: dict[str, Any] = {}
    for si, scenario in enumerate(SCENARIOS):
        per: dict[str, Any] = {}
        if not scenario.healthy:
            per["sprt_min_canary_requests"] = sprt_floor(scenario)
            per["sprt_min_failed_requests"] = floor_failed(scenario)
        for name, runs in merged[si].items():
            per[name] = summarise(runs, scenario)
        scenarios[scenario.name] = per
    model = {
        "rps": RPS,
        "scrape_s": scrape,
        "tick_s": _tick_s(),
        "base_error_rate": BASE_ERRORS,
        "latency": f"log-normal median {LAT_MEDIAN_S * 1000:g} ms sigma {LAT_SIGMA}",
        "alpha": ALPHA,
        "beta": BETA,
        "horizon_s": HORIZON,
        "healthy_runs": healthy_runs,
        "regression_runs": bad_runs,
        "probe_weight": probe_weight(),
    }
    return {"model": model, "scenarios": scenarios}


def _tick_s() -> int:
    from tests.bench.detection_policies import TICK_S

    return TICK_S


def probe_weight() -> int:
    """The weight graylane-seed's canary starts at (the first step's, or the exposure probe's)."""
    from tests.bench.detection_policies import seed_policy

    policy = seed_policy()
    first = next(s for s in policy.stages if s.kind == "canary").steps[0].weight  # type: ignore[union-attr]
    probe = getattr(policy.analysis, "probe_weight", None)
    budget = getattr(policy.analysis, "exposure_budget", 0)
    return min(first, probe) if probe and budget else first


# -- the table ------------------------------------------------------------------------------------

Row = tuple[str, str, str, str]


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}s"


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def _ratio(anchor: float, mine: float) -> float:
    return math.inf if mine <= 0 else anchor / mine


def _fmt_ratio(r: float) -> str:
    return "inf" if math.isinf(r) else f"{r:.1f}x"


def rows_for(result: dict[str, Any], headline: bool) -> list[Row]:
    model, scenarios = result["model"], result["scenarios"]
    scrape, tick = model["scrape_s"], model["tick_s"]
    tag = f"[scrape {scrape}s]"
    rows: list[Row] = []
    for scenario in SCENARIOS:
        per = scenarios[scenario.name]
        for name in (GRAYLANE, *ANCHORS):
            r = per[name]
            if scenario.healthy:
                res = (
                    f"false rollback {100 * r['rollback_rate']:.2f}% of {r['runs']}, paused "
                    f"{100 * r['pause_rate']:.1f}%, promoted in {_s(r['promotion_s_median'])} "
                    f"(p90 {_s(r['promotion_s_p90'])}), {r['canary_requests_mean']:,.0f} canary req"
                )
            else:
                harm = (
                    f"{_n(r['slowed_requests_mean'])} slowed"
                    if scenario.latency_shift_ms
                    else f"{_n(r['failed_by_canary_mean'])} failed"
                )
                reqs = r["canary_requests_to_rollback_median"]
                res = (
                    f"rollback {100 * r['rollback_rate']:.0f}% in {_s(r['rollback_s_median'])} "
                    f"(p90 {_s(r['rollback_s_p90'])}), {harm}, promoted {100 * r['promotion_rate']:.0f}%, "
                    f"{'-' if reqs is None else _n(reqs)} canary req"
                )
            rows.append((f"{tag} {scenario.name}: {name}", res, "-", "-"))
        if not scenario.healthy:
            floor = per["sprt_min_canary_requests"]
            what = (
                f"{_n(floor)} canary req"
                if scenario.latency_shift_ms
                else f"{_n(floor)} canary req = {per['sprt_min_failed_requests']:.1f} failed"
            )
            rows.append((f"{tag} {scenario.name}: SPRT floor (alpha 1%, beta 5%)", what, "-", "-"))
        rows += _targets(scenario, per, scrape, tick, model["probe_weight"], headline, tag)
    return rows


def _check(ok: bool, headline: bool) -> str:
    if not headline:
        return "(info)"
    return "met" if ok else "missed"


def _targets(
    scenario: Scenario, per: dict[str, Any], scrape: int, tick: int, probe: int, headline: bool, tag: str
) -> list[Row]:
    g = per[GRAYLANE]
    rows: list[Row] = []
    if scenario.healthy:
        rows.append(
            (
                f"{tag} healthy: graylane false rollbacks",
                f"{100 * g['rollback_rate']:.2f}% of {g['runs']}",
                "<= 1% over >= 2,000 runs",
                _check(g["rollback_rate"] <= 0.01 and g["runs"] >= 2000, headline),
            )
        )
        limit = 1.1 * SEED_SCHEDULE_S
        mine = g["promotion_s_median"]
        rows.append(
            (
                f"{tag} healthy: graylane promotion vs the seed's schedule",
                f"{_s(mine)} (p90 {_s(g['promotion_s_p90'])}) vs {SEED_SCHEDULE_S:.0f}s",
                f"<= {limit:.0f}s (schedule + 10%)",
                _check(mine is not None and mine <= limit, headline),
            )
        )
        return rows
    mine = g["failed_by_canary_mean"]
    if scenario.canary_errors >= 0.1:
        for anchor, need in (("argo-seed", 10.0), ("flagger-example", 10.0), ("flagger-defaults", 5.0)):
            ratio = _ratio(per[anchor]["failed_by_canary_mean"], mine)
            rows.append(
                (
                    f"{tag} {scenario.name}: failed, {anchor} / graylane",
                    f"{_n(per[anchor]['failed_by_canary_mean'])} / {_n(mine)} = {_fmt_ratio(ratio)}",
                    f">= {need:g}x",
                    _check(ratio >= need, headline),
                )
            )
    elif not scenario.latency_shift_ms:
        catching = [a for a in ANCHORS if per[a]["rollback_rate"] >= 0.5]
        best = min((per[a]["failed_by_canary_mean"] for a in catching), default=math.inf)
        rows.append(
            (
                f"{tag} {scenario.name}: failed, graylane vs anchors that catch it",
                f"{_n(mine)} vs {_n(best) if catching else '-'} ({', '.join(catching) or 'none catches it'})",
                "fewer",
                _check(mine < best, headline),
            )
        )
        floor = per["sprt_min_failed_requests"]
        rows.append(
            (
                f"{tag} {scenario.name}: failed, graylane vs SPRT floor",
                f"{_n(mine)} vs {floor:.1f} = {mine / floor:.2f}x",
                "<= 2x",
                _check(mine <= 2 * floor, headline),
            )
        )
    if scenario.canary_errors >= 0.5:
        limit = scrape + tick
        t = g["rollback_s_median"]
        rows.append(
            (
                f"{tag} {scenario.name}: graylane time to rollback",
                f"{_s(t)} (p90 {_s(g['rollback_s_p90'])})",
                f"<= {limit}s (scrape + tick)",
                _check(t is not None and t <= limit, headline),
            )
        )
    reqs = g["canary_requests_to_rollback_median"]
    limit_req = 3 * per["sprt_min_canary_requests"] + scrape * RPS * probe / 100
    caught = g["rollback_rate"]
    rows.append(
        (
            f"{tag} {scenario.name}: graylane canary requests before rollback",
            f"{'-' if reqs is None else _n(reqs)} (caught {100 * caught:.0f}%)",
            f"<= {_n(limit_req)} (3x SPRT + scrape at {probe}%)",
            _check(reqs is not None and reqs <= limit_req and caught >= 0.95, headline),
        )
    )
    return rows


@suite("detection")
def bench_detection(args: argparse.Namespace) -> dict[str, Any]:
    import sys

    healthy_runs, bad_runs = (200, 100) if args.quick else (2000, 300)
    workers = max(1, min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    say = lambda m: print(f"  detection: {m}", file=sys.stderr, flush=True)  # noqa: E731
    head, *others = SCRAPES
    # the false-rollback target (>= 2,000 healthy runs) is the headline's; the 1 s scrape is for information
    results = {
        scrape: measure(scrape, healthy_runs if scrape == head else healthy_runs // 2, bad_runs, workers, say)
        for scrape in SCRAPES
    }
    rows = rows_for(results[head], headline=True)
    for scrape in others:
        rows += rows_for(results[scrape], headline=False)
    out = dict(results[head])
    out["by_scrape"] = {f"{s}s": results[s] for s in SCRAPES}
    out["seconds"] = time.perf_counter() - started
    out["rows"] = rows
    return out
