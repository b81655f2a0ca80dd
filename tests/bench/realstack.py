"""The real stack agrees: graylane on real Traefik + real Prometheus, next to the simulator's prediction.

    python -m tests.bench realstack [--quick]

The stack of tests/traefik (see its README): the test apiserver with kube-controller-manager, kube-scheduler
and kwok nodes; the seed's flask app (Deployment k8s-flask at v1, Services k8s-flask and k8s-flask-canary)
whose ready pods are served by the pod runner; real Traefik v3 (built from its Go modules, `make traefik`)
routing by the IngressRoute graylane writes; real Prometheus scraping Traefik's metrics entry point every
15 s or 1 s; the real `Runner` with `KubernetesProviders` (TraefikRouter, KubernetesWorkloads,
PrometheusAnalysis), ticked every 5 s (`graylane serve`'s default), on seed 002's policy
(`tests.traefik.analysis.seed_policy_on_traefik`: steps 20/40/60/80 % with 2-minute pauses, analysis from step
2, failureLimit 3, success rate >= 0.90; graylane's defaults for the rest: guard and adaptive exposure on).
100 requests per second (4 clients x 25/s) through Traefik; both versions answer 0.5 % 5xx. Releases, one
after the other on the same stack: a 50 % error canary, and a canary answering 100 ms later.

Between releases the bench waits two scrapes after the canary's last request, so the next release's guard
baseline holds it. Measured per release, from the real answers the clients got: time from the canary's first request to
`release.rolledback`, canary requests until the last one (Traefik applies the route back a little after the
event), requests the canary failed minus the 0.5 % stable would have failed too (an estimate: on the real
stack the draws are not coupled), slowed requests (canary requests, for the latency canary), and requests no
backend answered (must be 0).

The simulator's prediction for the same setup: `tests/bench/detection_sim` with the same `Policy` object
(router traefik, port 8080, the same Traefik series names, the harness' Traefik buckets
`tests.traefik.proxy.BUCKETS`), 100 rps, 0.5 % stable errors, the stable's latency drawn from the
real stable's Traefik histogram of that run (bucket shares, linear inside a bucket), the canary's 100 ms later, the
same scrape and tick, over `SIM_RUNS` runs: median and p10-p90. A real median more than 2x off the
simulator's is flagged ("gap") with the measured lags next to it (push to the canary's first request, route
back to the canary's last one); the README explains it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.detection_sim import BASE_ERRORS, RPS, Scenario, Traffic
from tests.bench.registry import suite
from tests.traefik.proxy import BUCKETS

SCRAPES = (15, 1)
TICK_S = 5.0
CLIENTS = 4
TRAEFIK = "v3"
SIM_RUNS = 300
SCENARIOS = (
    Scenario("catastrophic 50%", 0.50),
    Scenario("latency +100ms", BASE_ERRORS, 100.0),
)


# -- the simulator's prediction -------------------------------------------------------------------


def predict(policy: Any, scenario: Scenario, scrape: int, runs: int) -> dict[str, Any]:
    """graylane's Runner on the simulator, with the real stack's policy, traffic and scrape."""
    from tests.bench import detection_policies as dp
    from tests.bench.detection import _phase, run_policy

    out = []
    for seed in range(1, runs + 1):
        graylane = dp.Graylane("graylane-realstack", policy)
        graylane.tick_every = int(TICK_S)
        out.append(run_policy(graylane, Traffic(seed, scenario), scrape, _phase(seed, scrape)))
    rolled = [r for r in out if r["outcome"] == "rolled-back"]
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
    t = [r["t"] for r in rolled]
    caused = [float(r["caused"]) for r in out]
    requests = [float(r["canary_requests"]) for r in out]
    return {
        "runs": runs,
        "rollback_rate": len(rolled) / runs,
        "rollback_s_median": pct(t, 50),
        "rollback_s_p10": pct(t, 10),
        "rollback_s_p90": pct(t, 90),
        "failed_by_canary_median": pct(caused, 50),
        "failed_by_canary_mean": float(np.mean(caused)),
        "failed_by_canary_p10": pct(caused, 10),
        "failed_by_canary_p90": pct(caused, 90),
        "canary_requests_median": pct(requests, 50),
        "canary_requests_p10": pct(requests, 10),
        "canary_requests_p90": pct(requests, 90),
    }


# -- the real stack -------------------------------------------------------------------------------


class RealStack:
    """The cluster, kwok nodes and pod runner, shared by every scrape's Traefik + Prometheus + Runner."""

    def __enter__(self) -> RealStack:
        from tests.k8s.cluster import KubeCluster, install_crds, load_crds
        from tests.traefik.binaries import traefik_binary
        from tests.traefik.pods import PodRunner

        traefik_binary(TRAEFIK)  # a missing build fails here, with the command that builds it
        os.environ.setdefault("GRAYLANE_POLICY_CACHE", tempfile.mkdtemp(prefix="graylane-policy-cache-"))
        self.dir = Path(tempfile.mkdtemp(prefix="graylane-realstack-"))
        self.kube = KubeCluster.start()
        self.pods: Any = None
        try:
            with self.kube.api_client() as api:
                install_crds(api, load_crds())
            self.kube.start_controller_manager()
            self.kube.start_nodes()
            self.pods = PodRunner(self.kube.api_client()).start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pods is not None:
            self.pods.stop()
        self.kube.stop()  # stops the nodes and the controller manager with it


def _release(stack: Any, tag: str, scenario: Scenario, scrape: int) -> dict[str, Any]:
    """Push `tag` with the scenario's behaviour, wait for the rollback and the route back, measure."""
    from functions.core.effects import RoutePlan
    from tests.real.protection_stack import wait_for
    from tests.traefik import seed
    from tests.traefik.analysis import push
    from tests.traefik.conftest import pod_urls, wait_rolled_out

    app = stack.app
    app.pods.set(tag, error_rate=scenario.canary_errors, delay=scenario.latency_shift_ms / 1000.0)
    started = time.monotonic()
    stack.runner.handle(push(stack.policy.app, tag))

    def ended() -> float | None:
        for suffix in (".release.rolledback", ".release.succeeded", ".release.paused", ".release.frozen"):
            at = [a for a, _ in stack.events(suffix) if a >= started]
            if at:
                return at[0]
        return None

    end = wait_for(f"release of {tag} ended", ended, timeout=6 * scrape + 90, every=0.05)
    release = stack.state().release
    wait_for("route back to 100/0", lambda: app.router.get_routes(app.target) == RoutePlan(), timeout=20)
    app.in_force()
    wait_rolled_out(app.api, app.pro, [seed.CANARY])
    wait_for("canary without pods", lambda: not pod_urls(app.api, app.pro, seed.CANARY), timeout=30)
    time.sleep(2.0)  # the clients' last answers (a request in flight at the route change)
    hits = stack.hits(started)
    canary = [h for h in hits if h.version == tag]
    first = min((h.at for h in canary), default=None)
    last = max((h.at for h in canary), default=None)
    # the next release's guard baseline must include this canary's last requests: two scrapes after them
    # (a push within one scrape of a canary's last requests counts that canary's unscraped tail as its own)
    time.sleep(max(0.0, (last or 0.0) + 2 * scrape + 1 - time.monotonic()))
    failed = sum(h.status >= 500 for h in canary)
    elapsed = [h for h in hits if h.at <= end]
    span = (max(h.at for h in elapsed) - min(h.at for h in elapsed)) if len(elapsed) > 1 else 0.0
    weights = sorted(
        {
            h.weight
            for h in stack.state().history
            if release is not None and h.release == release.id and h.weight
        }
    )
    return {
        "tag": tag,
        "outcome": "rolled-back"
        if release is not None and release.phase.value == "rolled-back"
        else (release.phase.value if release is not None else "none"),
        "reason": release.reason if release is not None else "",
        "step": release.step if release is not None else None,
        "push_to_first_canary_request_s": None if first is None else first - started,
        "rollback_s": None if first is None else end - first,  # from the canary's first request
        "last_canary_request_after_rollback_s": None if last is None else last - end,
        "canary_requests": len(canary),
        "canary_failed": failed,
        "failed_by_canary_est": max(0.0, failed - BASE_ERRORS * len(canary)),
        "slowed_requests": len(canary) if scenario.latency_shift_ms else 0,
        "unanswered": sum(1 for h in hits if not h.version),
        "rps": len(elapsed) / span if span else 0.0,
        "weights": weights,  # the canary weights the release routed (capped by exposure)
    }


def measure_real(scrape: int, reps: int, say: Any, real: RealStack) -> dict[str, list[dict[str, Any]]]:
    from tests.traefik.analysis import (
        AnalysisStack,
        close_stable_alone,
        first_version,
        seed_policy_on_traefik,
        stable_alone,
    )

    out: dict[str, list[dict[str, Any]]] = {s.name: [] for s in SCENARIOS}
    directory = real.dir / f"scrape-{scrape}s"
    directory.mkdir()
    app = stable_alone(TRAEFIK, real.kube, real.pods, directory / "traefik")
    try:
        policy = seed_policy_on_traefik(TRAEFIK, app.pro)
        real.pods.set("v1", error_rate=BASE_ERRORS, delay=0.0)
        with AnalysisStack(app, real.kube, directory, policy, tick_every=TICK_S, scrape_s=scrape) as stack:
            first_version(stack, clients=CLIENTS, rps=RPS / CLIENTS)
            n = 1
            for rep in range(reps):
                for scenario in SCENARIOS:
                    n += 1
                    r = _release(stack, f"v{n}", scenario, scrape)
                    say(
                        f"scrape {scrape}s {scenario.name} #{rep + 1}: {r['outcome']} {r['rollback_s']}s after "
                        f"the first canary request, {r['canary_requests']} canary req, {r['canary_failed']} failed "
                        f"({r['reason'][:60]})"
                    )
                    out[scenario.name].append(r)
                    if stack.tick_errors:
                        say(f"tick errors: {[repr(e)[:200] for e in stack.tick_errors[:3]]}")
            out["stable_buckets"] = stable_buckets(stack)  # type: ignore[assignment]
            return out
    finally:
        close_stable_alone(app)


def stable_buckets(stack: Any) -> list[tuple[float, float]]:
    """(le, cumulative count) of the stable's latency histogram in Traefik, as Prometheus last scraped it."""
    from functions.providers.routers import traefik
    from tests.traefik import seed

    app = stack.app
    names = {
        traefik.service_label(app.pro, seed.STABLE, seed.PORT),
        traefik.route_service_label(app.pro, seed.PRO_ROUTE, traefik.default_rule(seed.HOST)),
    }
    series = stack.query("sum by (service, le) (traefik_service_request_duration_seconds_bucket)")
    counts: dict[float, float] = {}
    for s in series:
        if s["metric"].get("service") in names:
            le = float(s["metric"]["le"])
            counts[le] = counts.get(le, 0.0) + float(s["value"][1])
    return sorted(counts.items())


def histogram_cdf(buckets: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """(le, cumulative share) of a cumulative histogram; () without requests."""
    total = buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else 0.0
    if total <= 0:
        return ()
    return tuple((le, count / total) for le, count in buckets)


# -- the table ------------------------------------------------------------------------------------


def _med(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def _gap(real: float | None, sim: float | None) -> float | None:
    if real is None or sim is None:
        return None
    if sim <= 0 or real <= 0:
        return None if real == sim else float("inf")
    return max(real / sim, sim / real)


def summarise_real(runs: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    rolled = [r for r in runs if r["outcome"] == "rolled-back"]
    harm = "slowed_requests" if scenario.latency_shift_ms else "failed_by_canary_est"
    return {
        "runs": len(runs),
        "rollback_rate": len(rolled) / len(runs) if runs else 0.0,
        "guard_before_start_step": all(r["reason"].startswith("guard:") and r["step"] == 0 for r in rolled),
        "rollback_s_median": _med([r["rollback_s"] for r in rolled if r["rollback_s"] is not None]),
        "failed_by_canary_median": _med([r["failed_by_canary_est"] for r in runs]),
        "harm_median": _med([float(r[harm]) for r in runs]),
        "canary_requests_median": _med([float(r["canary_requests"]) for r in runs]),
        "push_to_first_canary_request_s_median": _med(
            [
                r["push_to_first_canary_request_s"]
                for r in runs
                if r["push_to_first_canary_request_s"] is not None
            ]
        ),
        "last_canary_request_after_rollback_s_median": _med(
            [
                r["last_canary_request_after_rollback_s"]
                for r in runs
                if r["last_canary_request_after_rollback_s"] is not None
            ]
        ),
        "unanswered": sum(r["unanswered"] for r in runs),
        "rps_median": _med([r["rps"] for r in runs]),
    }


def _f(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:.1f}{unit}" if x < 100 else f"{x:,.0f}{unit}"


def rows_for(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, per in result["by_scrape"].items():
        cdf = dict(per["stable_latency"]["cdf"])
        share = ", ".join(
            f"{100 * (1 - cdf[b]):.1f}% > {1000 * b:g} ms" for b in (0.005, 0.025, 0.1) if b in cdf
        )
        rows.append(
            (
                f"[realstack Traefik {TRAEFIK}, scrape {key}] stable latency (Traefik's buckets)",
                f"{share}: the simulator draws the stable's latency from this histogram",
                "-",
                "-",
            )
        )
        for scenario in SCENARIOS:
            real, sim = per[scenario.name]["real"], per[scenario.name]["sim"]
            tag = f"[realstack Traefik {TRAEFIK}, scrape {key}] {scenario.name}"
            harm = "slowed" if scenario.latency_shift_ms else "failed"
            sim_harm = "canary_requests" if scenario.latency_shift_ms else "failed_by_canary"
            rows.append(
                (
                    f"{tag}: real",
                    f"rolled back {real['runs'] * real['rollback_rate']:.0f}/{real['runs']} "
                    f"(guard, step 1: {'yes' if real['guard_before_start_step'] else 'NO'}) in "
                    f"{_f(real['rollback_s_median'], 's')}, {_f(real['harm_median'])} {harm}, "
                    f"{_f(real['canary_requests_median'])} canary req, {real['unanswered']} unanswered, "
                    f"{_f(real['rps_median'])} rps",
                    "rolled back by the guard",
                    "met"
                    if real["rollback_rate"] == 1
                    and real["guard_before_start_step"]
                    and real["unanswered"] == 0
                    else "missed",
                )
            )
            rows.append(
                (
                    f"{tag}: simulator ({sim['runs']} runs)",
                    f"rolled back {100 * sim['rollback_rate']:.0f}% in {_f(sim['rollback_s_median'], 's')} "
                    f"(p10-p90 {_f(sim['rollback_s_p10'])}-{_f(sim['rollback_s_p90'], 's')}), "
                    f"{_f(sim[sim_harm + '_median'])} {harm} (p10-p90 {_f(sim[sim_harm + '_p10'])}-"
                    f"{_f(sim[sim_harm + '_p90'])})",
                    "-",
                    "-",
                )
            )
            g = per[scenario.name]["gap"]
            worst = max((v for v in (g["rollback_s"], g["harm"]) if v is not None), default=None)
            rows.append(
                (
                    f"{tag}: real vs simulator",
                    f"time {_f(g['rollback_s'], 'x')}, {harm} {_f(g['harm'], 'x')}; Traefik route lag "
                    f"{_f(real['last_canary_request_after_rollback_s_median'], 's')}, push to first canary "
                    f"request {_f(real['push_to_first_canary_request_s_median'], 's')}",
                    "within 2x or explained",
                    "within 2x" if worst is not None and worst <= 2 else "gap: see README",
                )
            )
    return rows


@suite("realstack")
def bench_realstack(args: argparse.Namespace) -> dict[str, Any]:
    from tests.traefik.analysis import seed_policy_on_traefik

    reps = 1 if args.quick else 3
    sim_runs = 50 if args.quick else SIM_RUNS
    say = lambda m: print(f"  realstack: {m}", file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    by_scrape: dict[str, Any] = {}
    with RealStack() as real:
        for scrape in SCRAPES:
            t0 = time.perf_counter()
            runs = measure_real(scrape, reps, say, real)
            say(f"scrape {scrape}s: real stack {time.perf_counter() - t0:.0f}s")
            policy = seed_policy_on_traefik(TRAEFIK, "rel-sim")
            buckets = runs.pop("stable_buckets")
            cdf = histogram_cdf(buckets)  # type: ignore[arg-type]
            say(f"scrape {scrape}s: the real stable's latency, Traefik's buckets: {cdf}")
            per: dict[str, Any] = {"stable_latency": {"buckets": buckets, "cdf": cdf}}
            for scenario in SCENARIOS:
                r = summarise_real(runs[scenario.name], scenario)
                same = replace(scenario, lat_cdf=cdf, buckets=BUCKETS)
                s = predict(policy, same, scrape, sim_runs)
                sim_harm = (
                    s["canary_requests_median"] if scenario.latency_shift_ms else s["failed_by_canary_median"]
                )
                per[scenario.name] = {
                    "real": r,
                    "sim": s,
                    "real_runs": runs[scenario.name],
                    "gap": {
                        "rollback_s": _gap(r["rollback_s_median"], s["rollback_s_median"]),
                        "harm": _gap(r["harm_median"], sim_harm),
                    },
                }
            by_scrape[f"{scrape}s"] = per
    model = {
        "traefik": TRAEFIK,
        "rps": RPS,
        "clients": CLIENTS,
        "tick_s": TICK_S,
        "base_error_rate": BASE_ERRORS,
        "policy": "infra/examples/argo-canary-analysis.yaml on traefik (tests.traefik.analysis)",
        "sim_stable_latency": "drawn from the real stable's Traefik histogram (by_scrape.*.stable_latency)",
        "buckets_s": list(BUCKETS),
        "reps": reps,
    }
    result: dict[str, Any] = {
        "model": model,
        "by_scrape": by_scrape,
        "seconds": time.perf_counter() - started,
    }
    result["rows"] = rows_for(result)
    return result
