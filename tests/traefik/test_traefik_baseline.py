"""[baseline] A fresh baseline on real Traefik v2.11 and v3, in front of pods of the test cluster (kwok + the pod
runner), with real Prometheus scraping Traefik.

1. The split: graylane's KubernetesWorkloads derive the baseline Deployment (the stable's image, track
   `baseline`) and its Service; the IngressRoute's managed route lists stable, canary and baseline; 5,000
   requests through Traefik are answered by the three Deployments' pods within ±2 points of the plan (the
   answering pod tells them apart: the baseline's run the stable's version).
2. A canary worse than the baseline, while the long-running stable is worse still (a warm stable that has
   drifted: 30 % 5xx; the fresh baseline of the same image 0 %; the canary 10 %): the Runner compares canary
   vs baseline on Traefik's series and rolls the release back; on the stable's series the same judge passes.
   The baseline's Deployment and Service are gone afterwards, the route is the stable's alone.
3. A canary exactly as slow as any fresh pod (the stable is warm: fast; baseline and canary +60 ms) is
   promoted: its latency is judged against the baseline's, where the stable's would have failed it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from functions.core.analysis import FAIL, PASS, judge
from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.events import MetricSample
from functions.core.policy import MetricCheck
from functions.core.state import Phase
from functions.errors import ConflictError, NotReady
from functions.providers.metrics import templates as tp
from functions.providers.routers import traefik
from functions.providers.workloads.base import WorkloadTarget
from functions.providers.workloads.kubernetes import KubernetesWorkloads
from tests.real.protection_stack import wait_for
from tests.traefik import seed
from tests.traefik.analysis import (
    AnalysisStack,
    close_stable_alone,
    first_version,
    flask_policy,
    push,
    stable_alone,
)
from tests.traefik.conftest import FlaskApp, need_traefik, pod_urls, wait_rolled_out
from tests.traefik.pods import PodRunner

if TYPE_CHECKING:
    from tests.k8s.cluster import KubeCluster

pytestmark = [pytest.mark.traefik, pytest.mark.k8s, pytest.mark.controller]

BASELINE = "k8s-flask-baseline"
SPLITS = (
    RoutePlan(stable=60, canary=20, baseline=20),
    RoutePlan(stable=90, canary=5, baseline=5),
    RoutePlan(stable=0, canary=50, baseline=50),
)
REQUESTS = 5000
measured: dict[str, Any] = {}  # printed at the end of each test, for the report


@pytest.fixture(params=["v2", "v3"])
def stable_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlaskApp]:
    version = str(request.param)
    need_traefik(version)
    kube: KubeCluster = request.getfixturevalue("kube")
    pods: PodRunner = request.getfixturevalue("pods")
    app = stable_alone(version, kube, pods, tmp_path / "traefik")
    try:
        yield app
    finally:
        close_stable_alone(app)
        for key in ("v1", "v2", "v1@baseline"):
            b = pods.behaviours.get(key)
            if b is not None:
                b.error_rate, b.delay = 0.0, 0.0


def _workload(app: FlaskApp) -> WorkloadTarget:
    return WorkloadTarget(app.pro, "flask", seed.STABLE, seed.CANARY, container="flask", baseline=BASELINE)


def _until(call: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except (NotReady, ConflictError):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.2)


def _who(backend: str) -> str:
    """The Deployment of the pod that answered (`<ns>/<deployment>-<rs hash>-<pod hash>`)."""
    pod = backend.split("/", 1)[-1]
    for name in (BASELINE, seed.CANARY, seed.STABLE):
        if pod.startswith(f"{name}-") and pod[len(name) + 1 :].count("-") == 1:
            return name
    return f"unknown {backend}"


def test_baseline_traefik_splits_5000_requests_three_ways(stable_app: FlaskApp) -> None:
    app, work = stable_app, KubernetesWorkloads(stable_app.api)
    seed.apply(app.api, [seed.deployment(app.pro, seed.CANARY, "v2")])
    wait_rolled_out(app.api, app.pro, [seed.CANARY])
    _until(lambda: work.deploy_baseline(_workload(app), f"{seed.REPOSITORY}:v1"))
    app.pods.wait_serving(app.pro, {"v1": 3, "v2": 1})  # two stable pods, the baseline's, the canary's
    t = replace(app.target, baseline=BASELINE)
    app.router.reconcile(t)
    client = app.client()
    splits = {}
    for plan in SPLITS:
        app.router.set_routes(t, plan)
        assert app.router.get_routes(t) == plan
        app.in_force()
        for name in (seed.CANARY, BASELINE):
            app.traefik.wait_servers(f"{app.pro}-{name}-{seed.PORT}", pod_urls(app.api, app.pro, name))
        counts: Counter[str] = Counter()
        versions: Counter[tuple[str, str]] = Counter()
        for _ in range(REQUESTS):
            status, version = client.get()
            assert status == 200, (status, version)
            who = _who(client.backend)
            counts[who] += 1
            versions[(who, version)] += 1
        shares = {n: 100 * counts[n] / REQUESTS for n in (seed.STABLE, seed.CANARY, BASELINE)}
        splits[f"{plan.stable}/{plan.canary}/{plan.baseline}"] = dict(counts)
        assert sum(counts.values()) == REQUESTS and set(counts) <= {seed.STABLE, seed.CANARY, BASELINE}, (
            counts
        )
        for name, planned in (
            (seed.STABLE, plan.stable),
            (seed.CANARY, plan.canary),
            (BASELINE, plan.baseline),
        ):
            assert abs(shares[name] - planned) <= 2.0, (plan, shares)
        assert {v for (who, v) in versions if who == BASELINE} <= {"v1"}  # the stable's image, fresh pods
    route = app.ingress_route()
    managed = route["spec"]["routes"][-1]["services"]
    assert [(s["name"], s["weight"]) for s in managed] == [
        (seed.STABLE, 0),
        (seed.CANARY, 50),
        (BASELINE, 50),
    ]
    app.router.set_routes(t, STABLE_ONLY)
    app.in_force()
    assert {_who(b) for b in _backends(app, 200)} == {seed.STABLE}
    work.remove_baseline(_workload(app))
    app.router.finalize(t)
    assert [s["name"] for s in app.ingress_route()["spec"]["routes"][-1]["services"]] == [seed.STABLE]
    print(
        f"\nTraefik {app.version} baseline splits over {REQUESTS} requests each (stable/canary/baseline planned "
        f"-> answered): {splits}"
    )


def _backends(app: FlaskApp, n: int) -> list[str]:
    client = app.client()
    out = []
    for _ in range(n):
        client.get()
        out.append(client.backend)
    return out


def _stack(app: FlaskApp, kube: Any, directory: Path, metric: MetricCheck, pause: float) -> AnalysisStack:
    policy = replace(flask_policy(app.version, app.pro, (metric,), pause=pause), baseline=True)
    return AnalysisStack(app, kube, directory, policy)


def _judged_on_the_stable(stack: AnalysisStack, metric: MetricCheck, window: int) -> MetricSample:
    """The same metric measured the way it would be without a baseline: the canary vs the stable's series."""
    target = tp.target(stack.policy, "probe")
    if metric.template == "latency":
        values = tp.split_values([target], stack.query(tp.latency_query("traefik", [(target, window)])))[
            "probe"
        ]
        return MetricSample(metric.name, value=values[tp.CANARY], stable_value=values[tp.STABLE])
    split = tp.split_counts("traefik", [target], stack.query(tp.counts_query("traefik", [(target, window)])))[
        "probe"
    ]
    canary, stable = split[tp.CANARY], split[tp.STABLE]
    return MetricSample(
        metric.name,
        value=canary.errors / canary.requests,
        stable_value=stable.errors / stable.requests,
        canary_requests=canary.requests,
    )


ERRORS = MetricCheck(name="errors", template="error-rate", judge="comparison", tolerance=0.05)


@pytest.mark.parametrize("stable_app", ["v3"], indirect=True)
def test_baseline_traefik_a_canary_worse_than_the_baseline_is_rolled_back_though_the_stable_is_worse(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    app = stable_app
    app.pods.set("v1", error_rate=0.30)  # the long-running stable, drifted
    app.pods.set("v1", error_rate=0.0, track="baseline")  # the same image, fresh
    app.pods.set("v2", error_rate=0.10)
    with _stack(app, kube, tmp_path, ERRORS, pause=15.0) as stack:
        try:
            first_version(stack)
            started = time.monotonic()
            stack.runner.handle(push(stack.policy.app, "v2"))
            rolled_back = wait_for(
                "release rolled back", lambda: stack.first(".release.rolledback"), timeout=60
            )
            release = stack.state().release
            assert release is not None and release.phase == Phase.ROLLED_BACK, stack.story()
            routed = [h.reason for h in stack.state().history if h.action == "weight"]
            assert any("(baseline 20%, stable 60%)" in r for r in routed), routed
            errors = {m.name: m for m in release.verdicts[-1].metrics}["errors"]
            assert errors.verdict == FAIL and "vs baseline" in errors.reason, errors
            label = traefik.service_label(app.pro, BASELINE, seed.PORT).replace("-", "\\\\-")
            assert label in errors.query, errors.query
            assert errors.value is not None and errors.stable_value is not None
            # canary ~10 % (the first verdict sees its first few dozen requests, through increase()'s extrapolation:
            # wide), baseline 0
            assert 0.02 < errors.value < 0.5 and errors.stable_value < 0.02, errors
            served = {
                k: (app.pods.behaviour(*k.split("@")).served, app.pods.behaviour(*k.split("@")).failed)
                for k in ("v1", "v1@baseline", "v2")
            }
            on_stable = _judged_on_the_stable(stack, ERRORS, 30)  # the whole canary period
            assert on_stable.stable_value is not None and on_stable.stable_value > 0.2, on_stable
            assert judge(stack.policy.analysis, (on_stable,), "now").verdict == PASS  # type: ignore[arg-type]
            wait_for(
                "route back to the stable alone",
                lambda: app.router.get_routes(app.target) == RoutePlan(),
                timeout=15,
            )
            wait_for("the baseline's Deployment and Service removed", lambda: _gone(app), timeout=30)
            assert [s["name"] for s in app.ingress_route()["spec"]["routes"][-1]["services"]] == [seed.STABLE]
            assert stack.tick_errors == [], stack.tick_errors[:3]
            measured["served (requests, 5xx)"] = served
            measured["errors"] = {
                "canary": errors.value,
                "baseline": errors.stable_value,
                "stable": on_stable.stable_value,
                "rolled back after s": rolled_back - started,
            }
            print(
                f"\nTraefik {app.version} baseline vs stable (error rate): canary {errors.value:.3f} vs baseline "
                f"{errors.stable_value:.3f} -> {errors.verdict}; the same judge on the stable's series: canary "
                f"{on_stable.value:.3f} vs stable {on_stable.stable_value:.3f} -> pass; rolled back "
                f"{rolled_back - started:.1f} s after the push; backends served (requests, 5xx) {served}"
            )
        except BaseException:
            print(stack.story())
            raise


LATENCY = MetricCheck(name="latency", template="latency", judge="comparison", tolerance=0.5, relative=True)


@pytest.mark.parametrize("stable_app", ["v3"], indirect=True)
def test_baseline_traefik_a_canary_as_slow_as_a_fresh_pod_is_promoted(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    app = stable_app
    app.pods.set("v1", delay=0.0)  # warm
    app.pods.set("v1", delay=0.06, track="baseline")  # a fresh pod of the same image: cold caches
    app.pods.set("v2", delay=0.06)
    with _stack(app, kube, tmp_path, LATENCY, pause=10.0) as stack:
        try:
            first_version(stack)
            started = time.monotonic()
            stack.runner.handle(push(stack.policy.app, "v2"))
            wait_for("the baseline routed", lambda: stack.state().routes.baseline == 20, timeout=60)
            time.sleep(6.0)
            on_stable = _judged_on_the_stable(stack, LATENCY, 5)
            succeeded = wait_for("release succeeded", lambda: stack.first(".release.succeeded"), timeout=90)
            release = stack.state().release
            assert release is not None and release.phase == Phase.SUCCEEDED, stack.story()
            passed = [m for v in release.verdicts for m in v.metrics if m.verdict == PASS]
            assert passed and all("vs baseline" in m.reason for m in passed), [m.reason for m in passed]
            assert judge(stack.policy.analysis, (on_stable,), "now").verdict == FAIL, on_stable  # type: ignore[arg-type]
            wait_for("the baseline's Deployment and Service removed", lambda: _gone(app), timeout=30)
            assert stack.tick_errors == [], stack.tick_errors[:3]
            last = passed[-1]
            measured["latency"] = {
                "canary p95 ms": last.value,
                "baseline p95 ms": last.stable_value,
                "stable p95 ms": on_stable.stable_value,
            }
            print(
                f"\nTraefik {app.version} baseline vs stable (p95 latency): canary {last.value:.1f} ms vs baseline "
                f"{last.stable_value:.1f} ms -> pass; vs the stable's {on_stable.stable_value:.1f} ms -> fail; "
                f"promoted, succeeded {succeeded - started:.1f} s after the push"
            )
        except BaseException:
            print(stack.story())
            raise


def _gone(app: FlaskApp) -> bool:
    from kubernetes import client

    core, apps = client.CoreV1Api(app.api), client.AppsV1Api(app.api)
    names = {d.metadata.name for d in apps.list_namespaced_deployment(app.pro).items}
    services = {s.metadata.name for s in core.list_namespaced_service(app.pro).items}
    return BASELINE not in names and BASELINE not in services
