"""Canary analysis on real Traefik, end to end, for tests/traefik/test_traefik_analysis.py:

    traffic ──► Traefik (k8s-flask-pro, weights written by graylane) ──► pods of k8s-flask / k8s-flask-canary
                  │ metrics entry point: traefik_service_* {service="<ns>-<svc>-8080@kubernetescrd"}
                  ▼
    Prometheus (1 s scrape) ◄── PrometheusAnalysis (graylane's traefik templates) ◄── Runner ◄── ticker
                                                  │
                      KubernetesProviders: TraefikRouter + KubernetesWorkloads on the test apiserver

Nothing is recorded or simulated: the runner's workload effects change the real Deployments (the canary
is derived from k8s-flask with the pushed image, promotion rolls k8s-flask to it), kwok runs their pods,
the pod runner serves each ready pod with its image's version, the endpoint controllers list them, and
Traefik routes real requests by the IngressRoute graylane wrote.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from functions.bus import MemoryBus
from functions.core.events import ImagePushed, Tick
from functions.core.policy import (
    Analysis,
    CanaryStage,
    CanaryStep,
    ImageRule,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
    WorkloadSpec,
)
from functions.core.state import AppState, Version
from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports
from functions.providers.factory import KubernetesProviders
from functions.providers.stores.sqlite import SqliteStore
from functions.runner import Runner
from functions.settings import Settings
from tests.real.protection_stack import binary, wait_for
from tests.support import StaticPolicies
from tests.traefik import seed
from tests.traefik.client import Traffic
from tests.traefik.conftest import (
    GROUPS,
    FlaskApp,
    drop_namespace,
    make_namespace,
    pod_urls,
    target_for,
    wait_rolled_out,
)
from tests.traefik.pods import PodRunner
from tests.traefik.proxy import Traefik


def flask_policy(
    version: str,
    ns: str,
    metrics: tuple[MetricCheck, ...],
    pause: float = 10.0,
    window: float = 10.0,
    alpha: float = 0.001,
    guard: bool = False,
    exposure_budget: float = 0.0,
    start_step: int = 1,
) -> Policy:
    """The seed's app: steps 20 → 50 (each held `pause` s) under analysis every second, then promote.

    The guard and adaptive exposure are off unless asked for: the judge tests watch the judge they test
    (the guard would roll a bad canary back first) at the planned weights."""
    return Policy(
        name="flask",
        namespace=ns,
        image=ImageRule(repository=seed.REPOSITORY),
        router=RouterSpec(provider="traefik", options=dict(target_for(version, ns, create=True).options)),
        workload=WorkloadSpec(name=seed.STABLE, canary=seed.CANARY, container="flask"),
        stages=(CanaryStage(steps=(CanaryStep(20, pause), CanaryStep(50, pause))), PromoteStage()),
        analysis=Analysis(
            interval=1.0,
            window=window,
            metrics=metrics,
            alpha=alpha,
            guard=guard,
            exposure_budget=exposure_budget,
            start_step=start_step,
        ),
    )


def seed_policy_on_traefik(version: str, ns: str) -> Policy:
    """Seed 002's policy (infra/examples/argo-canary-analysis.yaml: steps 20/40/60/80 % with 2-minute pauses,
    analysis every 10 s over 1 m from step 2, failureLimit 3, success rate >= 0.90; graylane's defaults for
    the rest, so the guard and adaptive exposure are on) for the seed's flask app behind this Traefik."""
    from dataclasses import replace

    from functions.policies import load_policy_file

    (policy,) = load_policy_file(
        Path(__file__).resolve().parents[2] / "infra/examples/argo-canary-analysis.yaml"
    )
    assert policy.analysis is not None
    return replace(
        policy,
        name="flask",
        namespace=ns,
        image=ImageRule(repository=seed.REPOSITORY),
        router=RouterSpec(provider="traefik", options=dict(target_for(version, ns, create=True).options)),
        workload=WorkloadSpec(name=seed.STABLE, canary=seed.CANARY, container="flask"),
        analysis=replace(policy.analysis, prometheus=""),  # the stack's Prometheus (the process default)
    )


def push(app: str, tag: str) -> ImagePushed:
    return ImagePushed(
        id=f"push-{tag}-{time.monotonic_ns()}",
        app=app,
        repository=seed.REPOSITORY,
        tag=tag,
        target=Version(tag, f"{seed.REPOSITORY}:{tag}"),
    )


class AnalysisStack:
    """Prometheus scraping the app's Traefik, and a Runner ticking its policy with the real providers."""

    def __init__(
        self,
        app: FlaskApp,
        kube: Any,
        directory: Path,
        policy: Policy,
        tick_every: float = 0.5,
        scrape_s: float = 1.0,
    ) -> None:
        self.app, self.kube, self.dir, self.policy = app, kube, directory, policy
        self.tick_every, self.scrape_s = tick_every, scrape_s
        self.published: list[tuple[float, Any]] = []
        self.tick_errors: list[BaseException] = []
        self.clients: list[Traffic] = []
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._prometheus: Any = None
        self._prometheus_log: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> AnalysisStack:
        try:
            self._start_prometheus()
            self._start_runner()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        for client in self.clients:
            client.stop()
        self.clients.clear()
        if self._prometheus is not None and self._prometheus.poll() is None:
            self._prometheus.terminate()
            self._prometheus.wait(timeout=10)
        if self._prometheus_log is not None:
            self._prometheus_log.close()
        providers = getattr(self, "providers", None)
        if providers is not None:
            providers.close()

    def _start_prometheus(self) -> None:
        def ports() -> None:
            self.prometheus_port = free_port()

        ports()
        retry_on_fresh_ports("prometheus", self._spawn_prometheus, ports)

    def _spawn_prometheus(self) -> None:
        import subprocess

        if self._prometheus_log is not None:
            self._prometheus_log.close()
        config = {
            "global": {
                "scrape_interval": f"{self.scrape_s:g}s",
                "scrape_timeout": "1s",
                "evaluation_interval": f"{self.scrape_s:g}s",
            },
            "scrape_configs": [
                {
                    "job_name": "traefik",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.app.traefik.metrics_port}"]}],
                }
            ],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
        log = self.dir / "prometheus.log"
        start = log.stat().st_size if log.exists() else 0
        self._prometheus_log = log.open("ab")
        self._prometheus = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
            stdout=self._prometheus_log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )

        def ready() -> bool:
            if self._prometheus.poll() is not None:
                output = log.read_text(errors="replace")[start:]
                if port_taken(output):
                    raise PortTaken(f"prometheus: its address was already in use: {output[-300:]}")
                raise AssertionError(f"prometheus exited: {output[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=0.5) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("prometheus ready", ready, timeout=15, every=0.05)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def _start_runner(self) -> None:
        settings = Settings(providers="kubernetes", prometheus=self.prometheus_url)
        self.providers = KubernetesProviders(settings, client_for=lambda cluster: self.kube.api_client())
        self.store = SqliteStore(self.dir / "state.db")
        self.bus = MemoryBus()
        self.bus.subscribe("", lambda event: self.published.append((time.monotonic(), event)))
        self.runner = Runner(
            self.store,
            StaticPolicies([self.policy]),
            self.providers,
            bus=self.bus,
            source="/graylane/release-tick",
        )

        def tick() -> None:
            while not self._stop.wait(self.tick_every):
                try:
                    self.runner.handle(Tick(id=f"tick-{uuid.uuid4().hex}", app=self.policy.app))
                except Exception as err:  # a failed tick is retried by the next one; kept for diagnosis
                    self.tick_errors.append(err)

        self._ticker = threading.Thread(target=tick, name="ticker", daemon=True)
        self._ticker.start()

    # -- what tests use ------------------------------------------------------------------------------------
    def load(self, clients: int = 4, rps: float = 40.0) -> list[Traffic]:
        started = [
            Traffic(self.app.traefik.port, seed.HOST, rps=rps, source=f"127.0.0.{10 + i}").start()
            for i in range(clients)
        ]
        self.clients.extend(started)
        return started

    def hits(self, since: float = 0.0, until: float = float("inf")) -> list[Any]:
        return [h for c in self.clients for h in c.since(since, until)]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?{urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=3) as r:
            result: list[dict[str, Any]] = json.load(r)["data"]["result"]
        return result

    def wait_scraping(self, service: str, timeout: float = 20.0) -> None:
        """Until Prometheus holds fresh traffic of `service` (a first scrape comes a few seconds after start)."""
        span = max(3, round(3 * self.scrape_s))  # at least two scrapes
        fresh = f'sum(increase(traefik_service_requests_total{{service="{service}"}}[{span}s]))'
        wait_for(
            f"Prometheus scraping Traefik ({service})",
            lambda: any(float(s["value"][1]) > 0 for s in self.query(fresh)),
            timeout=timeout,
            every=0.2,
        )

    def state(self) -> AppState:
        doc, _ = self.store.load(self.policy.app)
        return AppState.from_json(doc) if doc else AppState(app=self.policy.app)

    def events(self, suffix: str) -> list[tuple[float, Any]]:
        return [(at, e) for at, e in list(self.published) if str(e["type"]).endswith(suffix)]

    def first(self, suffix: str) -> float | None:
        found = self.events(suffix)
        return found[0][0] if found else None

    def story(self) -> str:
        state = self.state()
        lines = [f"{h.at} {h.action}: {h.reason}" for h in state.history[-25:]]
        if state.release is not None:
            lines += [f"verdict {v.at} {v.verdict}: {v.reason[:300]}" for v in state.release.verdicts[-6:]]
        return "\n".join(
            ["release story:", *lines, f"tick errors: {[repr(e)[:300] for e in self.tick_errors[:3]]}"]
        )


def stable_alone(version: str, kube: Any, pods: PodRunner, directory: Path) -> FlaskApp:
    """The stable app alone in a fresh namespace behind its own Traefik (graylane creates the route): the
    Deployment k8s-flask at v1 and the Services k8s-flask and k8s-flask-canary, no canary Deployment."""
    from functions.providers.routers.traefik import TraefikRouter

    api = kube.api_client()
    ns = make_namespace(api, f"rel-{version}")
    pods.watch(ns)
    objects = seed.workloads(ns)
    seed.apply(api, [o for o in objects if o["metadata"]["name"] != seed.CANARY or o["kind"] == "Service"])
    wait_rolled_out(api, ns, [seed.STABLE])
    pods.wait_serving(ns, {"v1": 2})
    traefik = Traefik.start(version, directory, kube.kubeconfig, [ns], gateway=version == "v3")
    return FlaskApp(
        version,
        GROUPS[version],
        ns,
        "",
        api,
        pods,
        traefik,
        TraefikRouter(kube.api_client()),
        target_for(version, ns, create=True),
    )


def close_stable_alone(app: FlaskApp) -> None:
    app.traefik.stop()
    drop_namespace(app.api, app.pro)


def first_version(stack: AnalysisStack, clients: int = 4, rps: float = 40.0) -> None:
    """v1 becomes stable: graylane creates the IngressRoute (all on k8s-flask); traffic flows and is scraped."""
    from functions.providers.routers import traefik

    app = stack.app
    stack.runner.handle(push(stack.policy.app, "v1"))
    app.in_force()
    # the stable alone: Traefik names the route's load balancer after the route, which the template knows
    alone = traefik.route_service_label(app.pro, seed.PRO_ROUTE, traefik.default_rule(seed.HOST))
    app.traefik.wait_servers(alone.split("@")[0], pod_urls(app.api, app.pro, seed.STABLE))
    client = app.client()
    assert {client.get()[1] for _ in range(20)} == {"v1"}  # answered by v1 (its baseline 5xx included)
    stack.load(clients=clients, rps=rps)
    stack.wait_scraping(alone, timeout=max(20.0, 4 * stack.scrape_s + 10))
