"""The alert-driven protection loop on real components, for tests/real/test_protection_e2e.py and the
`protection` benchmark:

    traffic ──► HAProxy (limits.map) ──► stable / canary backends
                  │ exporter
                  ▼
    Prometheus (1 s scrape, 1 s rules: 5xx ratio per server) ──► Alertmanager (group_wait 0 s)
                  ──► gateway POST /hooks/alertmanager (Bearer) ──► MemoryBus ──► Runner ──► HAProxyRouter

Everything listens on 127.0.0.1 on free ports and is stopped by its own handle. The runner's state is a
real SqliteStore; a ticker sends a `release.tick` every 0.5 s (what a PingSource does in production) so
resolved alerts relax after their hold-down. Workloads are the recording provider (no cluster here).
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from functions.bus import MemoryBus
from functions.core.effects import RoutePlan
from functions.core.events import ALERT_FIRING, ALERT_RESOLVED, Tick
from functions.core.policy import (
    CanaryStage,
    CanaryStep,
    ImageRule,
    NotifySpec,
    Policy,
    PromoteStage,
    ProtectionRule,
    ProtectStage,
    RateLimit,
    RouterSpec,
)
from functions.core.state import Release
from functions.gateway import GatewaySettings, build_app
from functions.local.ports import PortTaken, bind_listener, free_port, port_taken, retry_on_fresh_ports
from functions.providers.notifiers import FanOut, make_notifier
from functions.providers.recording import RecordingWorkloads, healthy
from functions.providers.routers.base import RouteTarget
from functions.providers.routers.haproxy import HAProxyRouter, install_config
from functions.providers.sources import make_sources
from functions.providers.sources.base import Credentials
from functions.providers.stores.sqlite import SqliteStore
from functions.runner import Runner
from tests.real.backends import Backend, start_backend
from tests.support import StaticPolicies

APP = "real/web"
TOKEN = "alertmanager-test-token"
PROTECT_ALERT, CANARY_ALERT = "WebHighErrorRate", "CanaryHighErrorRate"


class NotReadyInTime(AssertionError):
    """A bounded wait ran out; the message says what was awaited."""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0, every: float = 0.01) -> Any:
    """Poll `check` until it returns something truthy (returned); NotReadyInTime after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise NotReadyInTime(f"{what}: not within {timeout} s")
        time.sleep(every)


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise NotReadyInTime(f"none of {', '.join(names)} is installed: run infra/local/install-deps.sh")


def web_policy(socket: Path, notify_url: str, hold_down: float) -> Policy:
    """One canary step held long (so a release stays active), then promote and protect at 1000/s."""
    return Policy(
        name="web",
        namespace="real",
        image=ImageRule(repository="registry.example.com/web"),
        router=RouterSpec(provider="haproxy", options={"socket": str(socket)}),
        stages=(
            CanaryStage(steps=(CanaryStep(20, 3600.0),)),
            PromoteStage(),
            ProtectStage(rate_limit=RateLimit(average=1000, burst=1000, period=1.0)),
        ),
        protection=(
            ProtectionRule(
                alert=PROTECT_ALERT,
                match=(("severity", "critical"),),
                rate_limit_factor=0.1,
                floor=5,
                hold_down=hold_down,
            ),
        ),
        notify=(NotifySpec(kind="webhook", url=notify_url),),
    )


class RealProviders:
    """The real HAProxyRouter from the policy's router options, recording workloads, real notifiers."""

    def __init__(self) -> None:
        self.workloads_ = RecordingWorkloads()
        self.notifiers: list[FanOut] = []
        self._routers: dict[str, HAProxyRouter] = {}

    def router(self, policy: Policy, cluster: str) -> HAProxyRouter:
        socket = str(policy.router.options["socket"])
        if socket not in self._routers:
            self._routers[socket] = HAProxyRouter.from_options(policy.router.options)
        return self._routers[socket]

    def workloads(self, policy: Policy, cluster: str) -> RecordingWorkloads:
        return self.workloads_

    def notifier(self, policy: Policy) -> FanOut:
        fan_out = make_notifier(policy.notify, {})
        self.notifiers.append(fan_out)
        return fan_out

    def measure(self, policy: Policy, release: Release) -> Any:
        return healthy(policy, release)


@dataclass
class Notices:
    """A real HTTP receiver for the generic webhook notifier: keeps every notice it is sent."""

    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        notices = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with notices.lock:
                    notices.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/notices"

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [n for n in self.received if str(n.get("type", "")).endswith(suffix)]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Hit:
    at: float  # time.monotonic()
    status: int  # 0: a transport failure
    backend: str


class Traffic:
    """A paced client loop from one source address: about `rps` requests per second until stopped."""

    def __init__(self, port: int, source: str, rps: float) -> None:
        from tests.real.conftest import Client

        self.client = Client(port, source, timeout=2.0)
        self.rps = rps
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{source}", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close()

    def _run(self) -> None:
        gap = 1.0 / self.rps
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                status, backend = self.client.get()
            except (OSError, http.client.HTTPException):
                status, backend = 0, ""
            with self._lock:
                self.hits.append(Hit(time.monotonic(), status, backend))
            due = max(due + gap, time.monotonic() - 0.1)  # behind by more than 0.1 s: don't burst to catch up
            time.sleep(max(0.0, due - time.monotonic()))

    def since(self, t: float) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.at >= t]

    def first(self, status: int, since: float) -> float | None:
        return next((h.at for h in self.since(since) if h.status == status), None)


class ProtectionStack:
    """Starts everything in `directory` (start()), stops everything it started (stop())."""

    alerting = True  # Prometheus rules and Alertmanager; a stack that must not roll back by alert sets False

    def __init__(self, directory: Path, hold_down: float = 2.0, tick_every: float = 0.5) -> None:
        self.dir = directory
        self.hold_down = hold_down
        self.tick_every = tick_every
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.backends: dict[str, Backend] = {}
        self.notices = Notices()
        self.bus = MemoryBus()
        self.providers = RealProviders()
        self._stoppers: list[Callable[[], None]] = []
        self._log_start: dict[str, int] = {}  # where each process's current run begins in its log
        self.alertmanager_port = self.gateway_port = 0  # chosen when they start
        self.tick_errors: list[BaseException] = []  # what failed ticks raised (the next tick retries)
        self.target = RouteTarget(namespace="real", app="web", stable="stable", canary="canary")

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> ProtectionStack:
        try:
            self._start_haproxy()
            self._start_alertmanager()  # before Prometheus, whose configuration names its actual port
            self._start_prometheus()
            self._start_functions()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:  # stop everything else regardless
                pass
        self._stoppers.clear()

    def __enter__(self) -> ProtectionStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use ------------------------------------------------------------------------------------
    @property
    def router(self) -> HAProxyRouter:
        return self.providers.router(self.policy, "")

    def protection(self) -> dict[str, int]:
        return self.router.get_protection(self.target)

    def routes(self) -> RoutePlan:
        return self.router.get_routes(self.target)

    def traffic(self, source: str = "127.0.0.3", rps: float = 150.0) -> Traffic:
        return Traffic(self.haproxy_port, source, rps).start()

    def errors(self, backend: str, rate: float) -> None:
        """Set a backend's error rate over its own HTTP control endpoint."""
        with urllib.request.urlopen(f"{self.backends[backend].url}/_ctl?error_rate={rate}", timeout=2) as r:
            r.read()

    def stop_prometheus(self) -> None:
        """Terminate Prometheus (its data stays on disk): queries fail until start_prometheus()."""
        process = self.processes["prometheus"]
        process.terminate()
        process.wait(timeout=10)

    def start_prometheus(self) -> None:
        """(Re)start Prometheus on its port with its config and data directory; returns once it is ready."""
        self._spawn(
            "prometheus",
            [
                binary("prometheus"),
                "--config.file=prometheus.yml",
                f"--storage.tsdb.path={self.dir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
        )
        self._ready("prometheus", f"http://127.0.0.1:{self.prometheus_port}/-/ready")

    def alert_state(self) -> tuple[Any, ...]:
        from functions.core.state import AppState

        doc, _ = self.store.load(APP)
        return AppState.from_json(doc).alerts if doc else ()

    # -- components ----------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self._log_start[name] = (
            (self.dir / f"{name}.log").stat().st_size if (self.dir / f"{name}.log").exists() else 0
        )
        log = (self.dir / f"{name}.log").open("ab")  # a restarted process appends to its log
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.processes[name] = process

        def stop() -> None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()

        self._stoppers.append(stop)
        return process

    def _ready(self, name: str, url: str) -> None:
        """Until `url` answers 200; PortTaken if the process exited because its address was in use."""

        def up() -> bool:
            process = self.processes[name]
            if process.poll() is not None:
                output = (self.dir / f"{name}.log").read_text(errors="replace")[
                    self._log_start.get(name, 0) :
                ]
                if port_taken(output):
                    raise PortTaken(f"{name}: its address was already in use: {output[-500:]}")
                raise NotReadyInTime(f"{name} exited with {process.returncode}: {output[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=0.5) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(f"{name} ready at {url}", up, timeout=15, every=0.05)

    def _start_haproxy(self) -> None:
        for name in ("stable", "canary"):
            backend = start_backend(name)
            self.backends[name] = backend
            self._stoppers.append(backend.stop)
        self.socket = self.dir / "haproxy" / "admin.sock"

        def ports() -> None:
            self.haproxy_port, self.metrics_port = free_port(), free_port()

        def start() -> None:
            cfg = install_config(
                self.dir / "haproxy",
                bind=f"127.0.0.1:{self.haproxy_port}",
                stable=f"127.0.0.1:{self.backends['stable'].port}",
                canary=f"127.0.0.1:{self.backends['canary'].port}",
                metrics_bind=f"127.0.0.1:{self.metrics_port}",
            )
            self._spawn("haproxy", [binary("haproxy"), "-db", "-f", str(cfg)])
            self._ready("haproxy", f"http://127.0.0.1:{self.metrics_port}/metrics")

        ports()
        retry_on_fresh_ports("haproxy", start, ports)

    def _start_prometheus(self) -> None:
        self.prometheus_port = free_port()
        ratio = (
            'sum by (proxy, server) (rate(haproxy_server_http_responses_total{code="5xx"}[5s]))'
            " / sum by (proxy, server) (rate(haproxy_server_http_responses_total[5s]))"
        )
        rules = {
            "groups": [
                {
                    "name": "web",
                    "interval": "1s",
                    "rules": [
                        {"record": "server:http_error_ratio:rate5s", "expr": ratio},
                        {
                            "alert": PROTECT_ALERT,
                            "for": "0s",
                            "expr": 'server:http_error_ratio:rate5s{proxy="be_app", server="stable"} > 0.1',
                            "labels": {"severity": "critical", "graylane_app": APP},
                            "annotations": {"summary": "stable 5xx ratio {{ $value }} above 0.1"},
                        },
                        {
                            "alert": CANARY_ALERT,
                            "for": "0s",
                            "expr": 'server:http_error_ratio:rate5s{proxy="be_app", server="canary"} > 0.1',
                            "labels": {"severity": "critical", "graylane_app": APP, "track": "canary"},
                        },
                    ],
                }
            ]
        }
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "haproxy",
                    "params": {"scope": ["server"]},
                    "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}],
                }
            ],
        }
        if not self.alerting:  # scrape only: no rule can fire and no Alertmanager is asked
            del config["rule_files"], config["alerting"]
        (self.dir / "rules.yml").write_text(json.dumps(rules, indent=1))  # JSON is YAML
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=1))

        def reroll() -> None:
            self.prometheus_port = free_port()

        retry_on_fresh_ports("prometheus", self.start_prometheus, reroll)

    def _start_alertmanager(self) -> None:
        self.alertmanager_port = free_port()
        if not self.alerting:
            return
        # the gateway's socket is bound now and served later: Alertmanager's target cannot be taken meanwhile
        self.gateway_listener = bind_listener()
        self._stoppers.append(self.gateway_listener.close)
        self.gateway_port = self.gateway_listener.getsockname()[1]
        config = {
            "route": {
                "receiver": "graylane",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "graylane",
                    "webhook_configs": [
                        {
                            "url": f"http://127.0.0.1:{self.gateway_port}/hooks/alertmanager",
                            "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
                        }
                    ],
                }
            ],
        }
        (self.dir / "alertmanager.yml").write_text(json.dumps(config, indent=1))

        def start() -> None:
            self._spawn(
                "alertmanager",
                [
                    binary("prometheus-alertmanager", "alertmanager"),
                    "--config.file=alertmanager.yml",
                    f"--storage.path={self.dir / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                    "--cluster.listen-address=",
                ],
            )
            self._ready("alertmanager", f"http://127.0.0.1:{self.alertmanager_port}/-/ready")

        def reroll() -> None:
            self.alertmanager_port = free_port()

        retry_on_fresh_ports("alertmanager", start, reroll)

    def _start_functions(self) -> None:
        import uvicorn

        notify_url = self.notices.start()
        self._stoppers.append(self.notices.stop)
        self.policy = web_policy(self.socket, notify_url, self.hold_down)
        policies = StaticPolicies([self.policy])
        self.store = SqliteStore(self.dir / "state.db")
        self.runner = Runner(
            self.store, policies, self.providers, bus=self.bus, source="/graylane/protection"
        )
        # the protection function: every alert CloudEvent the gateway publishes goes through the runner
        self.bus.subscribe(
            "dev.graylane.alert.",
            lambda event: self.runner.handle_cloudevent(event, expect=(ALERT_FIRING, ALERT_RESOLVED)),
        )
        settings = GatewaySettings(credentials={"alertmanager": Credentials(token=TOKEN)})
        app = build_app(settings, make_sources(["alertmanager"]), self.bus, policies)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.gateway_listener]}, name="gateway", daemon=True
        )
        thread.start()

        def stop_gateway() -> None:
            server.should_exit = True
            thread.join(timeout=5)

        self._stoppers.append(stop_gateway)
        wait_for("gateway started", lambda: server.started, timeout=10)
        self._start_ticker()

    def _start_ticker(self) -> None:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.tick_every):
                try:
                    self.runner.handle(Tick(id=f"tick-{uuid.uuid4().hex}", app=APP))
                except Exception as err:  # a failed tick is retried by the next one; kept for diagnosis
                    self.tick_errors.append(err)

        thread = threading.Thread(target=tick, name="ticker", daemon=True)
        thread.start()

        def stop_ticker() -> None:
            stop.set()
            thread.join(timeout=5)

        self._stoppers.append(stop_ticker)
