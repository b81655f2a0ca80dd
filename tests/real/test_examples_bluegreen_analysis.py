"""Every example in infra/examples runs a whole release, judged by real metric queries (issue 11, item 8).

Each example is parsed from its file and driven through the real Runner on a SQLite store: pushes, ticks on a
simulated clock, approvals of every gate (a human looks at the latest verdict first). The analysis is the real
PrometheusAnalysis against a real Prometheus: a synthetic data plane writes, at the simulated time, the series
the example's proxy exports (Traefik's, the Traefik Gateway provider's, Istio's, NGINX Ingress', HAProxy's),
with traffic that follows what graylane asked the router for: the weights, the A/B rules (a share of the users
matches each), the blue-green preview's header route and the load test graylane starts against it. No
always-healthy stand-in: a healthy v2 must be promoted on those numbers, and a broken v2 must not.

The label forms are written here from each proxy's documentation, not taken from graylane's templates, so a
template that queries the wrong series fails this test.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import Command, ImagePushed, MetricSample, Tick
from functions.core.policy import ApprovalStage, Match, Policy
from functions.core.policy_parse import parse_policy
from functions.core.state import TERMINAL, Actor, AppState, Phase, Release, Version
from functions.providers.metrics import PrometheusAnalysis
from functions.providers.recording import RecordingProviders
from functions.providers.stores.sqlite import SqliteStore
from functions.runner import Runner
from tests.real.promsynth import Labels, Prometheus
from tests.support import StaticPolicies

pytestmark = pytest.mark.real
EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
USERS_RPS = 50.0  # user requests per second per cluster
STEP = 5  # seconds between synthetic samples
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # seconds


@dataclass(frozen=True)
class Health:
    error_share: float
    latency: float  # seconds


HEALTHY, BROKEN = Health(0.001, 0.040), Health(0.25, 0.400)


# -- what each proxy exports (label forms from the proxies' documentation) ------------------------------------


Series = list[tuple[Labels, float, bool]]  # (labels, increment of a counter or value of a gauge, is a gauge)
Render = Callable[[float, float, float], Series]  # (requests, errors, latency in seconds) of one STEP


def _labels(name: str, labels: dict[str, str]) -> Labels:
    return tuple(sorted((("__name__", name), *labels.items())))


def _buckets(
    name: str, labels: dict[str, str], requests: float, latency: float, scale: float = 1.0
) -> Series:
    out = [
        (_labels(name, {**labels, "le": f"{b * scale:g}"}), requests if latency <= b else 0.0, False)
        for b in BUCKETS
    ]
    return out + [(_labels(name, {**labels, "le": "+Inf"}), requests, False)]


def _codes(
    name: str, labels: dict[str, str], code: str, ok: str, failed: str, requests: float, bad: float
) -> Series:
    return [
        (_labels(name, {**labels, code: ok}), requests - bad, False),
        (_labels(name, {**labels, code: failed}), bad, False),
    ]


def traefik(service: str) -> Render:
    """traefik_service_* of one Kubernetes Service backend, `service` being Traefik's name of it."""

    def series(requests: float, bad: float, latency: float) -> Series:
        base = {"service": service, "method": "GET", "protocol": "http"}
        return [
            *_codes("traefik_service_requests_total", base, "code", "200", "503", requests, bad),
            *_buckets(
                "traefik_service_request_duration_seconds_bucket", {**base, "code": "200"}, requests, latency
            ),
        ]

    return series


def istio(namespace: str, workload: str) -> Render:
    def series(requests: float, bad: float, latency: float) -> Series:
        base = {
            "reporter": "destination",
            "destination_workload_namespace": namespace,
            "destination_workload": workload,
            "destination_service": f"reviews.{namespace}.svc.cluster.local",
        }
        return [
            *_codes("istio_requests_total", base, "response_code", "200", "503", requests, bad),
            *_buckets("istio_request_duration_milliseconds_bucket", base, requests, latency, scale=1000),
        ]

    return series


def nginx(namespace: str, ingress: str, service: str) -> Render:
    def series(requests: float, bad: float, latency: float) -> Series:
        base = {"namespace": namespace, "ingress": ingress, "service": service, "method": "GET", "path": "/"}
        return [
            *_codes("nginx_ingress_controller_requests", base, "status", "200", "502", requests, bad),
            *_buckets("nginx_ingress_controller_request_duration_seconds_bucket", base, requests, latency),
        ]

    return series


def haproxy(backend: str, server: str) -> Render:
    def series(requests: float, bad: float, latency: float) -> Series:
        base = {"proxy": backend, "server": server}
        return [
            *_codes("haproxy_server_http_responses_total", base, "code", "2xx", "5xx", requests, bad),
            (_labels("haproxy_server_http_responses_total", {**base, "code": "4xx"}), 0.0, False),
            (
                _labels("haproxy_server_response_time_average_seconds", base),
                latency if requests else 0.0,
                True,
            ),
        ]

    return series


@dataclass(frozen=True)
class Example:
    file: str
    tags: tuple[str, str]  # the stable version and the one released
    stable: Render
    canary: Render
    broken_ends: Phase = Phase.ROLLED_BACK  # what a broken v2 comes to (the policy's rollback mode)
    per_workload: Callable[[str], Render] | None = None  # one Deployment per version: its series by name


CASES = [
    # Traefik IngressRoute backends: <namespace>-<service>-<port>@kubernetescrd
    Example(
        "traefik-pipeline.yaml",
        ("v1.0.0", "v2.0.0"),
        traefik("pro-k8s-flask-8080@kubernetescrd"),
        traefik("pro-k8s-flask-canary-8080@kubernetescrd"),
    ),
    Example(
        "waves.yaml",
        ("3.0.0", "3.1.0"),
        traefik("shop-checkout-80@kubernetescrd"),
        traefik("shop-checkout-canary-80@kubernetescrd"),
    ),
    # HTTPRoute backends of Traefik v3's Gateway provider: <namespace>-<service>-http-<port>@kubernetesgateway
    Example(
        "bluegreen.yaml",
        ("2.0.0", "2.1.0"),
        traefik("web-shop-blue-http-80@kubernetesgateway"),
        traefik("web-shop-green-http-80@kubernetesgateway"),
    ),
    # one Deployment per version (reviews-v1, reviews-v2): Istio labels each one's series by its name
    Example(
        "istio-bookinfo.yaml",
        ("v1", "v2"),
        istio("default", "reviews-v1"),
        istio("default", "reviews-v2"),
        per_workload=lambda workload: istio("default", workload),
    ),
    Example(
        "argo-canary-analysis.yaml",
        ("v1", "v2"),
        nginx("default", "canary-demo", "canary-demo"),
        nginx("default", "canary-demo-canary", "canary-demo-canary"),
    ),
    Example(
        "gray-user-id.yaml",
        ("release-1.0.0", "release-1.1.0"),
        haproxy("profile", "stable"),
        haproxy("profile", "canary"),
        broken_ends=Phase.FROZEN,
    ),
]


# -- the data plane: traffic as graylane routed it -------------------------------------------------------------


def user_share(rule: Match) -> float:
    """The share of user requests a targeting rule matches (the preview header: none, only the load test)."""
    if rule.kind == "header" and rule.name.startswith("x-graylane-preview"):
        return 0.0
    return {
        "header": 0.1,
        "cookie": 0.05,
        "user-id-digit": len(rule.digits) / 10,
        "user-hash": rule.percent / 100,
        "source-ip": 0.02,
    }[rule.kind]


@dataclass
class LoadTest:
    started: float
    seconds: float
    rps: float
    header: tuple[str, str]


@dataclass
class DataPlane:
    """Counters per series, grown every STEP seconds from the routes and workloads graylane set."""

    policy: Policy
    example: Example
    providers: RecordingProviders
    health: dict[str, Health]  # by version tag
    prometheus: Prometheus
    start: float
    now: float = 0.0
    totals: dict[Labels, float] = field(default_factory=dict)
    user_requests: dict[tuple[str, str], float] = field(
        default_factory=dict
    )  # (cluster, version) -> user requests
    load_tests: dict[str, LoadTest] = field(default_factory=dict)

    def clusters(self) -> list[str]:
        return [w.cluster for w in self.policy.waves] or [""]

    def version(self, cluster: str, workload: str) -> str:
        image = self.providers.workloads_.images.get(f"{cluster}/{self.policy.namespace}/{workload}", "")
        return image.rsplit(":", 1)[-1] if image else ""

    def _load(self, cluster: str, at: float) -> list[LoadTest]:
        for key, args in getattr(self.providers.workloads_, "load_tests", {}).items():
            if key.startswith(f"{cluster}/") and key not in self.load_tests:
                self.load_tests[key] = _parse_hey(args, self.now)
        return [
            t
            for k, t in self.load_tests.items()
            if k.startswith(f"{cluster}/") and t.started <= at < t.started + t.seconds
        ]

    def advance(self, until: float) -> None:
        """Traffic from now to `until`, on the routes as they are now (graylane changes them only when it decides)."""
        samples: dict[Labels, list[tuple[int, float]]] = {}
        t = self.now
        while t + STEP <= until:
            t += STEP
            for cluster in self.clusters():
                self._grow(cluster, t, samples)
        self.now = t
        self.prometheus.write(samples)

    def _grow(self, cluster: str, t: float, samples: dict[Labels, list[tuple[int, float]]]) -> None:
        p = self.policy
        plan: RoutePlan = self.providers.router_.routes.get(f"{cluster}/{p.namespace}/{p.name}", STABLE_ONLY)
        matched = min(1.0, sum(user_share(m) for m in plan.match))
        to_canary = USERS_RPS * (matched + (1 - matched) * plan.canary / 100)
        flows = {"canary": to_canary, "stable": USERS_RPS - to_canary}
        for test in self._load(cluster, t):  # hey's requests take the route their header matches
            header_route = any(m.kind == "header" and (m.name, m.value) == test.header for m in plan.match)
            share = 1.0 if header_route else plan.canary / 100
            flows["canary"] += test.rps * share
            flows["stable"] += test.rps * (1 - share)
        for track, version, render in self._tracks(cluster):
            rate = flows[track] if version else 0.0
            users = (USERS_RPS - to_canary) if track == "stable" else to_canary
            self.user_requests[(cluster, version)] = (
                self.user_requests.get((cluster, version), 0.0) + users * STEP
            )
            health = self.health.get(version, HEALTHY)
            requests = rate * STEP
            for labels, value, gauge in render(requests, requests * health.error_share, health.latency):
                labels = tuple(sorted((*labels, ("cluster", cluster)))) if cluster else labels
                self.totals[labels] = value if gauge else self.totals.get(labels, 0.0) + value
                samples.setdefault(labels, []).append((int(t * 1000), self.totals[labels]))

    def _tracks(self, cluster: str) -> list[tuple[str, str, Render]]:
        """(track, version running there or "", its series) for the stable and the canary side of the route."""
        p = self.policy
        if self.example.per_workload is None:
            return [
                ("stable", self.version(cluster, p.stable_workload), self.example.stable),
                ("canary", self.version(cluster, p.canary_workload), self.example.canary),
            ]
        # one Deployment per version: the route names the versions' subsets; "" is a Deployment at zero
        versions = self.providers.router_.versions.get(f"{cluster}/{p.namespace}/{p.name}")
        if versions is None:  # before the first push: nothing routed yet
            return []
        images = self.providers.workloads_.images
        out = []
        for track, slot in (("stable", versions.stable), ("canary", versions.canary)):
            running = slot is not None and images.get(f"{cluster}/{p.namespace}/{slot.workload}") != ""
            out.append(
                (
                    track,
                    slot.version if slot is not None and running else "",
                    self.example.per_workload(slot.workload if slot is not None else ""),
                )
            )
        return out


def _parse_hey(args: tuple[str, ...], now: float) -> LoadTest:
    """What hey would do with the arguments graylane gave it: -z duration, -c workers at -q requests/s each."""
    opts: dict[str, Any] = {"-c": "50", "-q": "0", "-z": "0s"}
    header = ("", "")
    items = list(args)
    while items:
        flag = items.pop(0)
        if flag == "-H":
            name, _, value = items.pop(0).partition(":")
            header = (name.strip().lower(), value.strip())
        elif flag.startswith("-"):
            opts[flag] = items.pop(0)
    assert items == [] and args[-1].startswith("http"), shlex.join(args)
    return LoadTest(
        started=now,
        seconds=float(opts["-z"].rstrip("s")),
        rps=int(opts["-c"]) * float(opts["-q"]),
        header=header,
    )


# -- driving a release ---------------------------------------------------------------------------------------------


class PrometheusProviders(RecordingProviders):
    """Recording router and workloads (the data plane reads them), real PrometheusAnalysis."""

    def __init__(self, analysis: PrometheusAnalysis) -> None:
        super().__init__()
        self.analysis = analysis

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.analysis.measure(policy, release)

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        return self.analysis.measure_many(pairs)

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Any]:  # the guard's raw counters
        return self.analysis.totals_many(pairs)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Outcome:
    state: AppState
    plane: DataPlane
    queries: list[str]
    decisions: list[str]


def example_policy(file: str, prometheus: str) -> Policy:
    policy = parse_policy(yaml.safe_load((EXAMPLES / file).read_text()), source=file)
    assert policy.analysis is not None, f"{file} has no analysis: nothing would be measured"
    return replace(policy, analysis=replace(policy.analysis, prometheus=prometheus))  # this test's Prometheus


def run_release(example: Example, health: Health, tmp: Path) -> Iterator[Outcome]:
    prometheus = Prometheus().start()
    try:
        policy = example_policy(example.file, prometheus.url)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
        clock = Clock(start)
        analysis = PrometheusAnalysis(
            prometheus.url, timeout=5, retries=1, clock=lambda: clock.now.timestamp()
        )
        providers = PrometheusProviders(analysis)
        store = SqliteStore(tmp / "graylane.db")
        runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)
        old, new = example.tags
        plane = DataPlane(
            policy,
            example,
            providers,
            {old: HEALTHY, new: health},
            prometheus,
            start.timestamp(),
            now=start.timestamp(),
        )
        repo = policy.image.repository
        decisions: list[str] = []
        for tag in (old, new):
            clock.now += timedelta(seconds=STEP)
            plane.advance(clock.now.timestamp())
            runner.handle(
                ImagePushed(
                    id=f"push-{tag}",
                    app=policy.app,
                    target=Version(tag, f"{repo}:{tag}"),
                    repository=repo,
                    tag=tag,
                    source="generic",
                )
            )
        for i in range(600):
            state = _state(store, policy.app)
            rel = state.release
            assert rel is not None and rel.target.version == new, (
                f"{example.file}: the push of {new} started nothing"
            )
            if rel.phase in TERMINAL or rel.phase == Phase.FROZEN:
                break
            assert rel.phase != Phase.PAUSED, f"{example.file}: paused: {rel.reason}"
            if rel.phase == Phase.WAITING and _looked(policy, rel):  # a human approves what the metrics show
                decisions.append(f"approve {rel.gate}")
                params = _defaults(policy, rel.gate)
                runner.handle(
                    Command(
                        id=f"approve-{i}",
                        app=policy.app,
                        action="approve",
                        gate=rel.gate,
                        params=params,
                        actor=Actor("release-manager", "cli"),
                        release=rel.id,
                        version=rel.target.version,
                    )
                )
                continue
            clock.now += timedelta(seconds=_step(policy, rel, clock.now))
            plane.advance(clock.now.timestamp())
            runner.handle(Tick(id=f"tick-{i}", app=policy.app))
        else:
            raise AssertionError(
                f"{example.file}: the release did not end: {_state(store, policy.app).release}"
            )
        yield Outcome(_state(store, policy.app), plane, list(analysis.queries), decisions)
    finally:
        prometheus.close()


def _state(store: SqliteStore, app: str) -> AppState:
    doc, _ = store.load(app)
    assert doc is not None
    return AppState.from_json(doc)


def _looked(policy: Policy, rel: Release) -> bool:
    """At a gate of an analysed release, the latest verdict since the gate opened has passed."""
    if not rel.analysing:
        return True
    return (
        bool(rel.verdicts)
        and rel.verdicts[-1].verdict == "pass"
        and rel.verdicts[-1].at >= rel.stage_started_at
    )


def _defaults(policy: Policy, gate: str) -> dict[str, int]:
    stage = next((s for s in policy.stages if isinstance(s, ApprovalStage) and s.name == gate), None)
    return {p.name: p.default for p in stage.params if p.default is not None} if stage else {}


def _step(policy: Policy, rel: Release, now: datetime) -> float:
    """Look every analysis interval until the step has a passing verdict, then go to its timer."""
    interval = policy.analysis.interval if policy.analysis else 10.0
    if rel.phase == Phase.WAITING:  # its timer is the gate's timeout: look again, never let it run out
        return interval
    passed = (
        bool(rel.verdicts)
        and rel.verdicts[-1].verdict == "pass"
        and rel.verdicts[-1].at >= rel.step_started_at
    )
    if rel.timer is not None and (passed or not rel.analysing):
        due = datetime.fromisoformat(rel.timer.due.replace("Z", "+00:00"))
        return max(interval, (due - now).total_seconds() + 1)
    return interval


# -- the tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", CASES, ids=[c.file for c in CASES])
def test_bluegreen_analysis_every_example_promotes_a_healthy_release_on_real_queries(
    example: Example, tmp_path: Path
) -> None:
    [out] = list(run_release(example, HEALTHY, tmp_path))
    rel = out.state.release
    assert rel is not None and rel.phase == Phase.SUCCEEDED, (
        f"{rel.phase if rel else None}: {rel.reason if rel else ''}"
    )
    assert out.state.stable.version == example.tags[1]
    assert out.queries, "no query reached Prometheus"
    judged = [m for v in rel.verdicts for m in v.metrics]
    assert judged and all(m.query for m in judged if not m.name.startswith("custom")), (
        "verdicts without queries"
    )
    assert all("unavailable" not in m.reason for m in judged), [m.reason for m in judged]


@pytest.mark.parametrize("example", CASES, ids=[c.file for c in CASES])
def test_bluegreen_analysis_every_example_stops_a_broken_release_on_real_queries(
    example: Example, tmp_path: Path
) -> None:
    [out] = list(run_release(example, BROKEN, tmp_path))
    rel = out.state.release
    assert rel is not None and rel.phase == example.broken_ends, f"{rel.phase}: {rel.reason}"
    assert out.state.stable.version == example.tags[0]
    failed = [m for v in rel.verdicts for m in v.metrics if m.verdict == "fail"]
    assert failed and all(m.query for m in failed)


def test_bluegreen_analysis_the_preview_is_judged_on_load_test_traffic_users_never_see(
    tmp_path: Path,
) -> None:
    example = next(c for c in CASES if c.file == "bluegreen.yaml")
    [out] = list(run_release(example, BROKEN, tmp_path))
    rel = out.state.release
    assert rel is not None and rel.phase == Phase.ROLLED_BACK
    assert [k for k in out.plane.load_tests] == ["/web/shop-1-preview"]
    assert (
        out.plane.user_requests.get(("", example.tags[1]), 0.0) == 0.0
    )  # no user request ever reached green
    # Who fails the preview: the always-on guard (issue 13) reads the same counters and may prove the
    # regression on the load test's first requests, before the example's `errors` check has its window; or
    # that check does. Either way the verdict must be green's own error share, measured on green's series,
    # from requests that can only be the load test's (no user request reached green, asserted above).
    [preview] = [
        m for v in rel.verdicts for m in v.metrics if m.name in ("errors", "guard") and m.verdict == "fail"
    ]
    if preview.name == "errors":
        assert preview.value is not None and preview.value > 0.1  # measured green, on its requests
        assert "web-shop-green-http-80@kubernetesgateway" in preview.reason  # the raw series travel with it
    else:
        found = re.match(r"canary errors ([\d.]+)/([\d.]+) vs stable ", preview.reason)
        assert found, preview.reason
        errors, requests = float(found[1]), float(found[2])
        assert requests > 0 and errors / requests > 0.1  # measured green, on its requests
        assert "web-shop-green-http-80@kubernetesgateway" in preview.query.replace("\\", "")  # green's series
        [test] = out.plane.load_tests.values()
        assert requests <= test.rps * test.seconds  # green's requests: at most what the load test sent


def test_bluegreen_analysis_the_local_load_test_is_hey_sending_the_preview_header(tmp_path: Path) -> None:
    """`graylane serve --providers local` starts Debian's hey with the arguments decide() gave the effect."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from functions.core.hooks import hey_args
    from functions.local.providers import LocalConfig, ProcessWorkloads
    from functions.providers.workloads.base import WorkloadTarget

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("x-graylane-preview", ""))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    workloads = ProcessWorkloads(LocalConfig(workdir=str(tmp_path), socket="", stable_port=0, canary_port=0))
    target = WorkloadTarget(namespace="web", app="shop", stable="shop-blue", canary="shop-green")
    try:
        args = hey_args(
            f"http://127.0.0.1:{server.server_address[1]}/", 20, 2, {"x-graylane-preview": "shop-1"}
        )
        workloads.start_load_test(target, "shop-1-preview", "ignored-locally", args)
        workloads.start_load_test(target, "shop-1-preview", "ignored-locally", args)  # once per name
        workloads.load_tests["shop-1-preview"].wait(timeout=20)
        time.sleep(0.2)
    finally:
        workloads.stop_all()
        server.shutdown()
    assert 25 <= len(seen) <= 45, len(seen)  # about 20 requests/s for 2 s, from one hey
    assert set(seen) == {"shop-1"}
