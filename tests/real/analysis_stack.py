"""The analysis loop on real components, for tests/real/test_analysis_e2e.py:

    traffic ──► HAProxy (weights) ──► stable / canary backends (error rate and delay set over /_ctl)
                  │ exporter (proxy="be_app", server="stable"|"canary")
                  ▼
    Prometheus (1 s scrape) ◄── PrometheusAnalysis.measure ◄── Runner ◄── ticker (a release.tick every 0.5 s)
                                                                 │
                                       HAProxyRouter (weights), RecordingWorkloads, RecordingNotifier

It is the ProtectionStack without alerting (no rule, no Alertmanager, no gateway: only analysis can roll a
release back) and with the real Prometheus analysis instead of always-healthy metrics. The two backends ARE
the stable and the canary workload, so workload effects are only recorded.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from functions.core.events import MetricSample
from functions.core.policy import (
    Analysis,
    CanaryStage,
    CanaryStep,
    ImageRule,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
)
from functions.core.state import AppState, Release
from functions.providers.metrics.prometheus import PrometheusAnalysis
from functions.providers.recording import CallLog, RecordingNotifier, RecordingWorkloads
from functions.providers.routers.haproxy import HAProxyRouter
from functions.providers.stores.sqlite import SqliteStore
from functions.runner import Runner
from tests.real.protection_stack import APP, ProtectionStack, Traffic, wait_for
from tests.support import StaticPolicies

BACKEND = "be_app"  # the HAProxy backend of install_config; the haproxy template's `proxy` label


def canary_policy(
    socket: Path,
    metrics: tuple[MetricCheck, ...],
    pause: float = 10.0,
    window: float = 10.0,
    inconclusive_limit: int = 6,
    alpha: float = 0.001,
    guard: bool = False,
    exposure_budget: float = 0.0,
    start_step: int = 1,
) -> Policy:
    """Steps 20 → 50 (each held `pause` s) under analysis every second, then promote.

    The guard and adaptive exposure are off unless asked for: the judge tests watch the judge they test
    (the guard would roll a bad canary back first) at the planned weights.

    `backend` in the router options is read by both the router and the haproxy template, so the
    template's series (`proxy="be_app"`, `server="stable"|"canary"`) are the servers the router weighs.
    """
    return Policy(
        name="web",
        namespace="real",
        image=ImageRule(repository="registry.example.com/web"),
        router=RouterSpec(provider="haproxy", options={"socket": str(socket), "backend": BACKEND}),
        stages=(CanaryStage(steps=(CanaryStep(20, pause), CanaryStep(50, pause))), PromoteStage()),
        analysis=Analysis(
            interval=1.0,
            window=window,
            metrics=metrics,
            inconclusive_limit=inconclusive_limit,
            alpha=alpha,
            guard=guard,
            exposure_budget=exposure_budget,
            start_step=start_step,
        ),
    )


class AnalysisProviders:
    """runner.Providers: the live HAProxy, recorded workloads and notices, real Prometheus measurements."""

    def __init__(self, prometheus_url: str) -> None:
        self.log = CallLog()
        self.workloads_ = RecordingWorkloads(self.log)
        self.notifier_ = RecordingNotifier(self.log)
        # 1 s per attempt, one retry: a stopped Prometheus costs a tick ~0.1 s (refused), not seconds
        self.analysis = PrometheusAnalysis(prometheus_url, timeout=1.0, retries=1)
        self._routers: dict[str, HAProxyRouter] = {}

    def router(self, policy: Policy, cluster: str) -> HAProxyRouter:
        socket = str(policy.router.options["socket"])
        if socket not in self._routers:
            self._routers[socket] = HAProxyRouter.from_options(policy.router.options)
        return self._routers[socket]

    def workloads(self, policy: Policy, cluster: str) -> RecordingWorkloads:
        return self.workloads_

    def notifier(self, policy: Policy) -> RecordingNotifier:
        return self.notifier_

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.analysis.measure(policy, release)

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Any]:  # the guard's raw counters
        return self.analysis.totals_many(pairs)


class AnalysisStack(ProtectionStack):
    """HAProxy + backends + Prometheus (scrape only) + a Runner ticking `policy(socket)` with real analysis.

    `published` keeps every emitted CloudEvent with the monotonic time it was published, so a test can
    compare event times with the traffic's (time.monotonic()) hits.
    """

    alerting = False

    def __init__(self, directory: Path, policy: Callable[[Path], Policy], tick_every: float = 0.5) -> None:
        super().__init__(directory, tick_every=tick_every)
        self.make_policy = policy
        self.published: list[tuple[float, Any]] = []
        self.clients: list[Traffic] = []

    def start(self) -> AnalysisStack:
        try:
            self._start_haproxy()
            self._start_prometheus()
            self._start_runner()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> AnalysisStack:
        return self.start()

    def stop(self) -> None:
        for client in self.clients:
            client.stop()
        self.clients.clear()
        super().stop()

    def _start_runner(self) -> None:
        self.policy = self.make_policy(self.socket)
        self.providers = AnalysisProviders(f"http://127.0.0.1:{self.prometheus_port}")  # type: ignore[assignment]
        self.store = SqliteStore(self.dir / "state.db")
        self.runner = Runner(
            self.store,
            StaticPolicies([self.policy]),
            self.providers,
            bus=self.bus,
            source="/graylane/release-tick",
        )
        self.bus.subscribe("", lambda event: self.published.append((time.monotonic(), event)))
        self._start_ticker()

    # -- what tests use ------------------------------------------------------------------------------------
    def load(self, clients: int = 4, rps: float = 40.0) -> list[Traffic]:
        """`clients` paced loops of `rps` each, from their own addresses (one slow canary answer only
        delays its own loop, so the total holds up when the canary is slow)."""
        started = [self.traffic(f"127.0.0.{10 + i}", rps=rps) for i in range(clients)]
        self.clients.extend(started)
        return started

    def set_backend(self, name: str, error_rate: float | None = None, delay: float | None = None) -> None:
        """Change a backend's behaviour over its own HTTP control endpoint (as an operator would)."""
        query = "&".join(
            f"{k}={v}" for k, v in (("error_rate", error_rate), ("delay", delay)) if v is not None
        )
        with urllib.request.urlopen(f"{self.backends[name].url}/_ctl?{query}", timeout=2) as r:
            r.read()

    def query(self, promql: str) -> float:
        """The first value of an instant query (0 when empty), straight from Prometheus' HTTP API."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?{urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=2) as r:
            result = json.load(r)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def wait_scraping(self, timeout: float = 15.0) -> None:
        """Until Prometheus holds fresh stable traffic. Ready is not scraping: a (re)started Prometheus
        sends its first scrape ~5 s later (service discovery throttles its first update)."""
        fresh = (
            f'sum(increase(haproxy_server_http_responses_total{{proxy="{BACKEND}", server="stable"}}[3s]))'
        )
        wait_for("Prometheus scraping HAProxy", lambda: self.query(fresh) > 0, timeout=timeout, every=0.2)

    def state(self) -> AppState:
        doc, _ = self.store.load(APP)
        return AppState.from_json(doc) if doc else AppState(app=APP)

    def events(self, suffix: str) -> list[tuple[float, Any]]:
        return [(at, e) for at, e in list(self.published) if str(e["type"]).endswith(suffix)]
