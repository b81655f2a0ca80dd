"""The policies of the detection benchmark, each driven on the same simulated traffic (detection_sim.Sim).

- `Graylane`: the product. The real `Runner` (MemoryStore, the real `decide()`) with a simulated clock,
  a router that moves the simulated weight, and the real `PrometheusAnalysis` whose HTTP call is answered by
  the simulated TSDB (`SimPrometheus._query`): the built-in templates' counts, cumulative counts and
  histogram queries are parsed and evaluated with Prometheus' semantics. Ticks are release.tick sweeps every
  `TICK_S` seconds (the `graylane serve` default ticker).
- `ArgoSeed`: the seed's Rollout (steps 20/40/60/80 % with 2-minute pauses; background analysis from step
  index 2, i.e. when 40 % is set), a measurement when the AnalysisRun starts and every 10 s of the canary's
  success rate over 1m, success when `result > 0.90`, failed once failed measurements EXCEED failureLimit 3
  in total (argoproj/argo-rollouts analysis/analysis.go `if result.Failed > metric.FailureLimit`). An empty
  result counts as failed.
- `Flagger`: interval 1m; each interval a failed check (request-success-rate >= 99 % and
  request-duration p99 <= 500 ms over 1m) increments failedChecks (never reset) and holds the weight, a
  passed one adds stepWeight, a pass at maxWeight promotes (the next interval routes everything to the
  promoted primary); at the start of an interval failedChecks >= threshold rolls back
  (fluxcd/flagger pkg/controller/scheduler.go). `flagger-example` is the documented example (threshold 5,
  maxWeight 50, stepWeight 10), `flagger-defaults` Flagger's defaults (threshold 1, maxWeight 100;
  stepWeight has no default, the docs' 10 is used).

Every anchor reads the same TSDB as graylane, through the same `increase`/`histogram_quantile` semantics.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

from functions.core import events as ev
from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.events import ImagePushed, MetricSample, Tick
from functions.core.policy import Policy
from functions.core.state import Release, Version
from functions.providers.metrics import templates as tp
from functions.providers.metrics.prometheus import Answer, PrometheusAnalysis
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.bench.detection_sim import Sim
from tests.support import T0, StaticPolicies

TICK_S = 5  # graylane serve's default ticker
SEED_POLICY = Path(__file__).resolve().parents[2] / "infra" / "examples" / "argo-canary-analysis.yaml"
EPOCH0 = T0.timestamp()


def seed_policy() -> Policy:
    from functions.policies import load_policy_file

    (policy,) = load_policy_file(SEED_POLICY)
    return policy


def series_names(policy: Policy) -> dict[str, str]:
    return {**tp.target(policy, "sim").names, "port": str(policy.router.options.get("port", 80))}


# -- graylane ---------------------------------------------------------------------------------------


class SimPrometheus(PrometheusAnalysis):
    """The real provider; only its HTTP call is answered by the simulated Prometheus."""

    def __init__(self, sim: Sim) -> None:
        super().__init__("http://sim-prometheus", clock=lambda: EPOCH0 + sim.t)
        self.sim = sim

    def _query(self, url: str, query: str, now: float) -> Answer:
        return Answer(query, self.sim.tsdb.query(query, now - EPOCH0))


class SimRouter:
    def __init__(self, sim: Sim) -> None:
        self.sim, self.plan = sim, STABLE_ONLY

    def set_routes(self, target: Any, plan: RoutePlan) -> None:
        self.plan = plan
        self.sim.weight = plan.canary / 100.0

    def get_routes(self, target: Any) -> RoutePlan:
        return self.plan

    def set_protection(self, target: Any, protection: Protection) -> None:
        pass

    def reconcile(self, target: Any) -> None:
        pass

    def survey(self, target: Any) -> tuple[str, ...]:
        return ()

    def finalize(self, target: Any) -> None:
        self.set_routes(target, STABLE_ONLY)


class _Nothing:
    """Workloads and notifier: the simulated versions are always ready; notices go nowhere."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class SimProviders:
    def __init__(self, sim: Sim) -> None:
        self.router_ = SimRouter(sim)
        self.metrics = SimPrometheus(sim)
        self.nothing = _Nothing()

    def router(self, policy: Policy, cluster: str) -> SimRouter:
        return self.router_

    def workloads(self, policy: Policy, cluster: str) -> Any:
        return self.nothing

    def notifier(self, policy: Policy) -> Any:
        return self.nothing

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.metrics.measure(policy, release)

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        return self.metrics.measure_many(pairs)

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Any]:
        return self.metrics.totals_many(pairs)


_ENDS = {
    ev.RELEASE_ROLLED_BACK: "rolled-back",
    ev.RELEASE_SUCCEEDED: "promoted",
    ev.RELEASE_PAUSED: "paused",
    ev.RELEASE_FROZEN: "frozen",
    ev.RELEASE_FAILED: "rolled-back",
    ev.RELEASE_ABORTED: "aborted",
}


class Graylane:
    """graylane itself: pushes and tick sweeps through the real Runner, on the simulated clock."""

    tick_every = TICK_S

    def __init__(self, name: str, policy: Policy) -> None:
        self.name, self.policy = name, policy

    def start(self, sim: Sim) -> None:
        self.sim = sim
        self.providers = SimProviders(sim)
        self.runner = Runner(
            MemoryStore(),
            StaticPolicies([self.policy]),
            self.providers,
            clock=lambda: T0 + timedelta(seconds=sim.t),
        )
        repo = self.policy.image.repository
        for n, tag in enumerate(("blue", "green")):  # the first push makes blue stable; green is the canary
            self.runner.handle(
                ImagePushed(
                    id=f"push-{n}",
                    app=self.policy.app,
                    repository=repo,
                    tag=tag,
                    target=Version(tag, f"{repo}:{tag}"),
                )
            )
        self.ticks = 0

    def tick(self, sim: Sim, t: int) -> str | None:
        if t % self.tick_every:
            return None
        self.ticks += 1
        outcomes = self.runner.handle(Tick(id=f"tick-{t}"))
        for outcome in outcomes:
            for emitted in outcome.emitted:
                if emitted in _ENDS:
                    return _ENDS[emitted]
        return None


# -- anchors ----------------------------------------------------------------------------------------


class _Reader:
    """Canary success rate and latency quantile over a window, as PromQL on the simulated TSDB."""

    def __init__(self, sim: Sim, policy: Policy) -> None:
        r = tp.ROUTERS[policy.router.provider]
        names = series_names(policy)
        self.sim, self.r = sim, r
        self.canary = ", ".join(f'{k}="{v}"' for k, v in _canary_labels(policy, names).items())

    def success_rate(self, t: int, window: int, ok_regex: str) -> float:
        r, sel = self.r, self.canary
        good = self.sim.tsdb.query(
            f'sum(rate({r.requests}{{{sel}, {r.code_label}!~"{ok_regex}"}}[{window}s]))', t
        )
        total = self.sim.tsdb.query(f"sum(rate({r.requests}{{{sel}}}[{window}s]))", t)
        if not good or not total:
            return math.nan
        g, a = float(good[0]["value"][1]), float(total[0]["value"][1])
        return g / a if a > 0 else math.nan

    def latency_ms(self, t: int, window: int, q: float) -> float:
        r = self.r
        res = self.sim.tsdb.query(
            f"histogram_quantile({q}, sum by (le) (rate({r.duration_bucket}{{{self.canary}}}"
            f"[{window}s]))) * {r.to_ms:g}",
            t,
        )
        return float(res[0]["value"][1]) if res else math.nan


def _canary_labels(policy: Policy, names: dict[str, str]) -> dict[str, str]:
    from tests.bench.detection_sim import version_labels

    return version_labels(policy.router.provider, names, "canary")


class ArgoSeed:
    name = "argo-seed"
    tick_every = 1
    steps, pause, start_index, interval, limit, window = (20, 40, 60, 80), 120, 1, 10, 3, 60

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def start(self, sim: Sim) -> None:
        self.reader = _Reader(sim, self.policy)
        sim.weight = self.steps[0] / 100
        self.failed = 0

    def tick(self, sim: Sim, t: int) -> str | None:
        if t % self.pause == 0:
            step = t // self.pause
            if step >= len(self.steps):
                return "promoted"
            sim.weight = self.steps[step] / 100
        started = self.start_index * self.pause
        if t >= started and (t - started) % self.interval == 0:
            success = self.reader.success_rate(t, self.window, "[4-5].*")
            self.failed += not success > 0.90  # NaN (no result) fails too
            if self.failed > self.limit:
                return "rolled-back"
        return None


class Flagger:
    tick_every = 1

    def __init__(
        self, name: str, policy: Policy, threshold: int, max_weight: int, step: int = 10, interval: int = 60
    ) -> None:
        self.name, self.policy = name, policy
        self.threshold, self.max_weight, self.step, self.interval = threshold, max_weight, step, interval

    def start(self, sim: Sim) -> None:
        self.reader = _Reader(sim, self.policy)
        self.failed, self.promoting, self.weight = 0, False, self.step
        sim.weight = self.step / 100  # the first interval only starts the canary

    def tick(self, sim: Sim, t: int) -> str | None:
        if t == 0 or t % self.interval:
            return None
        if self.failed >= self.threshold:
            return "rolled-back"
        if self.promoting:
            return "promoted"  # finalising: all traffic to the promoted primary
        success = 100 * self.reader.success_rate(t, 60, "5.*")
        p99 = self.reader.latency_ms(t, 60, 0.99)
        if not (success >= 99 and p99 <= 500):  # NaN (no traffic) is a failed check
            self.failed += 1
            return None
        if self.weight >= self.max_weight:
            self.promoting = True
            return None
        self.weight = min(self.weight + self.step, self.max_weight)
        sim.weight = self.weight / 100
        return None
