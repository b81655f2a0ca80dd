"""PrometheusAnalysis against a real Prometheus scraping a tiny exporter whose counters the test controls.

The exporter serves each router's standard metric names (HAProxy, Traefik, Istio, NGINX Ingress) with
counters that grow at fixed rates per version; Prometheus scrapes it every second. Needs the Debian
`prometheus` binary (`make deps`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from functions.core.analysis import judge
from functions.core.policy import Analysis, ImageRule, MetricCheck, Policy, RouterSpec, WorkloadSpec
from functions.core.state import Release, Version
from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports
from functions.providers.metrics import PrometheusAnalysis

pytestmark = pytest.mark.real
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5)  # seconds


@dataclass(frozen=True)
class Traffic:
    """Requests per second of one version, the share that fails, and where its latency sits."""

    rps: float
    error_share: float = 0.0
    latency: float = 0.04  # seconds


class Exporter:
    """Counters computed from elapsed time, so every scrape sees steady rates."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.series: dict[tuple[str, str, str], Traffic] = {}  # (router, identity, version) -> traffic

    def set(self, router: str, identity: str, version: str, traffic: Traffic) -> None:
        self.series[(router, identity, version)] = traffic

    def render(self) -> str:
        dt = time.monotonic() - self.t0
        lines: list[str] = []
        for (router, ident, version), tr in self.series.items():
            total, bad = tr.rps * dt, tr.rps * tr.error_share * dt
            lines += RENDER[router](ident, version, total, bad, tr.latency)
        return "\n".join(lines) + "\n"


def _buckets(name: str, labels: str, total: float, latency: float, scale: float = 1.0) -> list[str]:
    out = [f'{name}{{{labels},le="{b * scale:g}"}} {total if latency <= b else 0.0}' for b in BUCKETS]
    return out + [f'{name}{{{labels},le="+Inf"}} {total}']


def _haproxy(ident: str, server: str, total: float, bad: float, latency: float) -> list[str]:
    lab = f'proxy="{ident}",server="{server}"'
    return [
        f'haproxy_server_http_responses_total{{{lab},code="2xx"}} {total - bad}',
        f'haproxy_server_http_responses_total{{{lab},code="5xx"}} {bad}',
        f'haproxy_server_http_responses_total{{{lab},code="4xx"}} 0',
        f"haproxy_server_response_time_average_seconds{{{lab}}} {latency}",
    ]


def _traefik(ident: str, service: str, total: float, bad: float, latency: float) -> list[str]:
    lab = f'service="{ident}-{service}-80@kubernetescrd",method="GET",protocol="http"'
    return [
        f'traefik_service_requests_total{{{lab},code="200"}} {total - bad}',
        f'traefik_service_requests_total{{{lab},code="503"}} {bad}',
        *_buckets("traefik_service_request_duration_seconds_bucket", f'{lab},code="200"', total, latency),
    ]


def _istio(ident: str, workload: str, total: float, bad: float, latency: float) -> list[str]:
    lab = f'reporter="destination",destination_workload_namespace="{ident}",destination_workload="{workload}"'
    return [
        f'istio_requests_total{{{lab},response_code="200"}} {total - bad}',
        f'istio_requests_total{{{lab},response_code="500"}} {bad}',
        f'istio_requests_total{{reporter="source",destination_workload_namespace="{ident}",'
        f'destination_workload="{workload}",response_code="500"}} {total}',  # must be ignored
        *_buckets("istio_request_duration_milliseconds_bucket", lab, total, latency, scale=1000),
    ]


def _nginx(ident: str, service: str, total: float, bad: float, latency: float) -> list[str]:
    lab = f'namespace="{ident}",service="{service}",ingress="{service}"'
    return [
        f'nginx_ingress_controller_requests{{{lab},status="200"}} {total - bad}',
        f'nginx_ingress_controller_requests{{{lab},status="502"}} {bad}',
        *_buckets("nginx_ingress_controller_request_duration_seconds_bucket", lab, total, latency),
    ]


RENDER = {"haproxy": _haproxy, "traefik": _traefik, "istio": _istio, "nginx": _nginx}


_free_port = free_port


def _serve(exporter: Exporter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = exporter.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Stack:
    url: str
    exporter: Exporter
    started: str  # ISO time the traffic started: every release's stage start


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: run `make deps` (apt-get install prometheus)", pytrace=False
        )
    exporter = Exporter()
    _fill(exporter)
    server = _serve(exporter)
    work = Path(tempfile.mkdtemp(prefix="graylane-prom-"))
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: routers\n    static_configs: [{{targets: ['127.0.0.1:{server.server_address[1]}']}}]\n"
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> str:  # on a fresh port each time: one taken meanwhile is retried (functions.local.ports)
        port = _free_port()
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(work / "prometheus.log").open("w"),
            )
        )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, procs[-1], work)
        return url

    try:
        url = retry_on_fresh_ports("prometheus", start, lambda: None)
        started = datetime.now(UTC).isoformat()
        time.sleep(7)  # enough 1 s scrapes for a 5 s window
        yield Stack(url, exporter, started)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], work: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (work / "prometheus.log").read_text(errors="replace")
            if port_taken(log):
                raise PortTaken(f"prometheus: {url} was taken before it could bind it")
            pytest.fail(f"prometheus exited: {log[-2000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail("prometheus did not become ready in 20 s", pytrace=False)


APPS = ("a1", "a2", "a3", "a4", "a5")


def _fill(e: Exporter) -> None:
    e.set("haproxy", "shop-checkout", "stable", Traffic(160, 0.0, 0.04))
    e.set("haproxy", "shop-checkout", "canary", Traffic(40, 0.5, 0.12))
    for i, app in enumerate(APPS):  # five traefik apps, canary error share 0 %, 10 %, ... 40 %
        e.set("traefik", "web", app, Traffic(80))
        e.set("traefik", "web", f"{app}-canary", Traffic(20, 0.1 * i))
    e.set("istio", "bookinfo", "reviews-v1", Traffic(90, 0.0, 0.03))
    e.set("istio", "bookinfo", "reviews-v2", Traffic(10, 0.2, 0.3))
    e.set("nginx", "default", "canary-demo", Traffic(80))
    e.set("nginx", "default", "canary-demo-canary", Traffic(20, 0.0, 0.07))


ERRORS = MetricCheck(name="errors", template="error-rate", judge="sequential")
SUCCESS = MetricCheck(name="success-rate", template="success-rate", judge="threshold", min=0.95)
LATENCY = MetricCheck(name="latency", template="latency", judge="comparison", tolerance=0.5, relative=True)


def _policy(router: str, name: str, namespace: str, **options: str) -> Policy:
    analysis = Analysis(interval=1, window=5, min_requests=20, metrics=(SUCCESS, ERRORS, LATENCY))
    return Policy(
        name=name,
        namespace=namespace,
        image=ImageRule(repository=f"r/{name}"),
        router=RouterSpec(router, dict(options)),
        stages=(),
        analysis=analysis,
    )


def _release(policy: Policy, started: str) -> Release:
    v = Version("v2", f"r/{policy.name}:v2")
    return Release(
        id=f"{policy.name}-2", seq=2, target=v, origin=v, started_at=started, stage_started_at=started
    )


def _by_name(samples: tuple) -> dict:
    return {s.name: s for s in samples}


def test_haproxy_success_rate_errors_and_latency(stack: Stack) -> None:
    policy = _policy("haproxy", "checkout", "shop")
    samples = _by_name(PrometheusAnalysis(stack.url).measure(policy, _release(policy, stack.started)))
    assert {s.status for s in samples.values()} == {"ok"}
    assert samples["success-rate"].value == pytest.approx(0.5, abs=0.02)
    assert samples["success-rate"].stable_value == pytest.approx(1.0)
    assert samples["errors"].canary_requests / samples["errors"].stable_requests == pytest.approx(
        0.25, rel=0.1
    )
    assert samples["latency"].value == pytest.approx(120.0) and samples[
        "latency"
    ].stable_value == pytest.approx(40.0)
    assert "haproxy_server_http_responses_total" in samples["errors"].query
    assert '"server":"canary"' in samples["errors"].detail  # the raw result travels with the sample
    verdict = judge(policy.analysis, tuple(samples.values()), "now")  # type: ignore[arg-type]
    assert verdict.verdict == "fail"
    assert {m.name for m in verdict.metrics if m.verdict == "fail"} == {"success-rate", "errors", "latency"}


def test_istio_and_nginx_templates(stack: Stack) -> None:
    istio = replace(
        _policy("istio", "reviews", "bookinfo"), workload=WorkloadSpec(name="reviews-v1", canary="reviews-v2")
    )
    nginx = _policy(
        "nginx", "canary-demo", "default", stableService="canary-demo", canaryService="canary-demo-canary"
    )
    prom = PrometheusAnalysis(stack.url)
    out = prom.measure_many(
        [(istio, _release(istio, stack.started)), (nginx, _release(nginx, stack.started))]
    )
    i, n = _by_name(out["reviews-2"]), _by_name(out["canary-demo-2"])
    assert i["success-rate"].value == pytest.approx(0.8, abs=0.02)  # reporter="source" series ignored
    assert i["latency"].value == pytest.approx(
        250 + 0.95 * 250, rel=0.01
    )  # p95 inside the (250, 500] ms bucket
    assert i["latency"].stable_value == pytest.approx(25 + 0.95 * 25, rel=0.01)
    assert n["success-rate"].value == pytest.approx(1.0) and n["errors"].canary_errors == 0
    assert n["latency"].value == pytest.approx(50 + 0.95 * 50, rel=0.01)
    assert len(prom.queries) == 2 * 3  # two routers: window counts, cumulative counts, latency each


def test_n_releases_cost_one_query_per_metric(stack: Stack) -> None:
    policies = [_policy("traefik", app, "web") for app in APPS]
    pairs = [(p, _release(p, stack.started)) for p in policies]
    one, many = PrometheusAnalysis(stack.url), PrometheusAnalysis(stack.url)
    one.measure_many(pairs[:1])
    out = many.measure_many(pairs)
    assert len(many.queries) == len(one.queries) == 3
    for i, app in enumerate(APPS):
        errors = _by_name(out[f"{app}-2"])["errors"]
        assert errors.status == "ok"
        assert errors.value == pytest.approx(0.1 * i, abs=0.02)
        assert errors.stable_value == pytest.approx(0.0)
        assert errors.canary_requests / errors.stable_requests == pytest.approx(0.25, rel=0.1)
    verdicts = [judge(p.analysis, out[f"{p.name}-2"], "now").verdict for p in policies]  # type: ignore[arg-type]
    assert verdicts[0] == "pass" and set(verdicts[2:]) == {"fail"}


def test_sequential_counts_are_cumulative_since_the_stage_started(stack: Stack) -> None:
    policy = _policy("haproxy", "checkout", "shop")
    early = _release(policy, datetime.now(UTC).isoformat())
    late = replace(early, stage_started_at=stack.started)
    prom = PrometheusAnalysis(stack.url)
    fresh, old = (_by_name(prom.measure(policy, r))["errors"] for r in (early, late))
    window = _by_name(prom.measure(policy, early))["success-rate"]
    assert old.canary_requests > fresh.canary_requests  # longer since the stage started: more requests
    assert fresh.canary_requests == pytest.approx(window.canary_requests, rel=0.3)  # never below the window
    assert "[5s]" in window.query


def test_custom_query_templating(stack: Stack) -> None:
    check = MetricCheck(
        name="canary-5xx",
        judge="comparison",
        tolerance=0.05,
        query='sum(rate(haproxy_server_http_responses_total{proxy="{{namespace}}-{{app}}",'
        'server="{{target}}",code="5xx"}[{{window}}])) / sum(rate('
        'haproxy_server_http_responses_total{proxy="{{namespace}}-{{app}}",'
        'server="{{target}}"}[{{window}}]))',
    )
    policy = replace(
        _policy("haproxy", "checkout", "shop"),
        analysis=Analysis(interval=1, window=5, min_requests=20, metrics=(check,)),
    )
    (sample,) = PrometheusAnalysis(stack.url).measure(policy, _release(policy, stack.started))
    assert sample.status == "ok"
    assert 'proxy="shop-checkout",server="canary"' in sample.query and "[5s]" in sample.query
    assert sample.value == pytest.approx(0.5, abs=0.02) and sample.stable_value == pytest.approx(0.0)
    assert judge(policy.analysis, (sample,), "now").verdict == "fail"  # type: ignore[arg-type]


def test_no_traffic_is_no_data(stack: Stack) -> None:
    policy = _policy("haproxy", "ghost", "shop")
    samples = PrometheusAnalysis(stack.url).measure(policy, _release(policy, stack.started))
    assert {s.status for s in samples} == {"no-data"}
    assert judge(policy.analysis, samples, "now").verdict == "inconclusive"  # type: ignore[arg-type]


def test_unreachable_prometheus_is_inconclusive_after_retries() -> None:
    policy = _policy("haproxy", "checkout", "shop")
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    samples = PrometheusAnalysis(url, timeout=0.5, retries=1).measure(
        policy, _release(policy, "2026-01-01T00:00:00Z")
    )
    assert time.monotonic() - started < 10
    assert {s.status for s in samples} == {"unavailable"}
    assert all("ConnectionError" in s.detail and url in s.detail for s in samples)
    verdict = judge(policy.analysis, samples, "now")  # type: ignore[arg-type]
    assert verdict.verdict == "inconclusive" and "unavailable" in verdict.reason
