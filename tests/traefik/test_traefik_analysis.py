"""Canary analysis on Traefik's real metrics, for Traefik v2.11 and v3 (see tests/traefik/analysis.py).

Each scenario starts from the seed's stable app alone (Deployment k8s-flask at v1, the Services
k8s-flask and k8s-flask-canary; no canary Deployment, no route): graylane creates the IngressRoute, derives
the canary Deployment for the pushed image, weighs it 20 → 50 under analysis every second on what
Prometheus scraped from Traefik (`traefik_service_requests_total`), and then rolls back or promotes.

1. The templates' queries select Traefik's real series: the counts per version match what the backends
   served, and the latency query answers for both versions.
2. A canary answering 35 % 5xx is rolled back: traffic back on v1, the canary scaled down, and no
   request fails on the way (no 404 while the canary has no pods).
3. A healthy canary is promoted: k8s-flask rolls out v2 and serves everything.
4. The guard on the seed's own policy (analysis from step 2): a 50 % error canary and a +100 ms canary are
   rolled back in step 1, before the user's metric is ever judged, on Traefik's raw counters and latency
   buckets. Scenarios 2 and 3 run with the guard and adaptive exposure off: they test the user's metrics.
   (How fast, next to the simulator's prediction: `python -m tests.bench realstack`.)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from functions.catalog import validate
from functions.core.effects import RoutePlan
from functions.core.policy import MetricCheck
from functions.core.state import Phase
from functions.providers.metrics import templates as tp
from functions.providers.routers import traefik
from tests.real.protection_stack import wait_for
from tests.traefik import seed
from tests.traefik.analysis import (
    AnalysisStack,
    close_stable_alone,
    first_version,
    flask_policy,
    push,
    seed_policy_on_traefik,
    stable_alone,
)
from tests.traefik.conftest import (
    FlaskApp,
    need_traefik,
    pod_urls,
    wait_rolled_out,
)
from tests.traefik.pods import PodRunner

if TYPE_CHECKING:
    from tests.k8s.cluster import KubeCluster

pytestmark = [pytest.mark.traefik, pytest.mark.k8s, pytest.mark.controller]

BASELINE = 0.005  # both versions' everyday 5xx rate
ERRORS = MetricCheck(name="errors", template="success-rate", judge="sequential")
SUCCESS = MetricCheck(name="success-rate", template="success-rate", min=0.95)
LATENCY = MetricCheck(
    name="latency", template="latency", judge="comparison", tolerance=1000.0
)  # measured only


@pytest.fixture(params=["v2", "v3"])
def stable_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlaskApp]:
    """The stable app alone in a fresh namespace behind its own Traefik (graylane creates the route)."""
    version = str(request.param)
    need_traefik(version)  # before the cluster starts: a missing build fails at once
    kube: KubeCluster = request.getfixturevalue("kube")
    pods: PodRunner = request.getfixturevalue("pods")
    app = stable_alone(version, kube, pods, tmp_path / "traefik")
    try:
        yield app
    finally:
        close_stable_alone(app)
        for v in ("v1", "v2"):
            pods.set(v, error_rate=0.0, delay=0.0)


def _running(app: FlaskApp, kube: KubeCluster, directory: Path, **policy: Any) -> AnalysisStack:
    metrics = policy.pop("metrics", (ERRORS, SUCCESS))
    return AnalysisStack(app, kube, directory, flask_policy(app.version, app.pro, metrics, **policy))


def _first_version(stack: AnalysisStack) -> None:
    first_version(stack)


def _check_events(stack: AnalysisStack) -> None:
    assert stack.tick_errors == [], f"ticks failed: {[repr(e)[:300] for e in stack.tick_errors[:3]]}"
    for _, event in stack.published:  # every CloudEvent the release emitted is in the catalog
        validate(event)


def _failed(hits: list[Any]) -> Counter[str]:
    """Answers that are neither a version nor the backends' own 5xx: Traefik's 404/502/503, transport errors."""
    return Counter(f"status {h.status}" for h in hits if not h.version)


def _assert_none_failed(stack: AnalysisStack, started: float) -> None:
    hits = stack.hits(started)
    failed = _failed(hits)
    if failed:
        when = [round(h.at - started, 2) for h in hits if not h.version]
        events = [
            (round(at - started, 2), str(e["type"]).rsplit(".", 2)[-2:])
            for at, e in stack.published
            if at >= started
        ]
        raise AssertionError(
            f"requests no backend answered during the release: {failed} at {when} s; events {events}"
        )


def test_the_traefik_templates_select_traefiks_real_series(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    app = stable_app
    with _running(app, kube, tmp_path, metrics=(ERRORS, SUCCESS, LATENCY)) as stack:
        _first_version(stack)
        seed.apply(app.api, [seed.deployment(app.pro, seed.CANARY, "v2")])  # a canary by hand, 20 %
        wait_rolled_out(app.api, app.pro, [seed.CANARY])
        app.pods.set("v2", error_rate=0.2)
        app.route(RoutePlan.canary_at(20))
        app.traefik.wait_servers(
            f"{app.pro}-{seed.CANARY}-{seed.PORT}", pod_urls(app.api, app.pro, seed.CANARY)
        )
        t0, served0 = (
            time.monotonic(),
            (app.pods.served("v1"), app.pods.served("v2"), app.pods.behaviour("v2").failed),
        )
        time.sleep(6.0)
        target = tp.target(stack.policy, "probe")
        query = tp.counts_query("traefik", [(target, 5)])
        series = stack.query(query)
        split = tp.split_counts("traefik", [target], series)["probe"]
        latency = tp.split_values([target], stack.query(tp.latency_query("traefik", [(target, 5)])))["probe"]
        served = (app.pods.served("v1") - served0[0], app.pods.served("v2") - served0[1])
        print(
            f"\nTraefik {app.version}: {query}\n  -> {split}; latency ms {latency}; backends served {served} "
            f"in {time.monotonic() - t0:.1f} s; series {[s['metric'] for s in series]}"
        )
        services = {s["metric"]["service"] for s in series}
        weighted = {traefik.service_label(app.pro, s, seed.PORT) for s in (seed.STABLE, seed.CANARY)}
        alone = traefik.route_service_label(app.pro, seed.PRO_ROUTE, traefik.default_rule(seed.HOST))
        assert weighted <= services <= weighted | {alone}, services  # the stable alone, before the canary
        stable, canary = split[tp.STABLE], split[tp.CANARY]
        assert stable.seen and canary.seen
        share = canary.requests / (stable.requests + canary.requests)
        assert abs(share - 0.2) < 0.05, split  # the weights graylane wrote, seen in Traefik's counters
        assert 0.1 < canary.errors / canary.requests < 0.3 and stable.errors == 0, split
        assert all(v == v and 0 < v < 1000 for v in (latency[tp.STABLE], latency[tp.CANARY])), latency
        _check_events(stack)


def test_a_bad_canary_is_rolled_back_on_traefiks_metrics(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    app = stable_app
    with _running(app, kube, tmp_path) as stack:
        try:
            app.pods.set("v1", error_rate=BASELINE)
            app.pods.set("v2", error_rate=0.35)
            _first_version(stack)
            started = time.monotonic()
            stack.runner.handle(push(stack.policy.app, "v2"))
            routed = wait_for(
                "canary at 20 % in Traefik",
                lambda: (
                    stack.first(".release.weight.changed")
                    or any(h.version == "v2" for h in stack.hits(started))
                ),
                timeout=30,
            )
            assert routed
            rolled_back = wait_for(
                "release rolled back", lambda: stack.first(".release.rolledback"), timeout=40
            )
            release = stack.state().release
            assert release is not None and release.phase == Phase.ROLLED_BACK
            assert release.reason.startswith("analysis failed") and stack.state().stable.version == "v1"
            errors = {m.name: m for m in release.verdicts[-1].metrics}["errors"]
            assert errors.verdict == "fail" and "traefik_service_requests_total" in errors.query
            assert (
                traefik.service_label(app.pro, seed.CANARY, seed.PORT).replace("-", "\\\\-") in errors.query
            )
            success = {m.name: m for m in release.verdicts[-1].metrics}["success-rate"]
            # ~0.65 from real 5xx; few canary requests in a 10 s increase() (extrapolated) spread it wide
            assert success.value is not None and 0.3 < success.value < 0.9, success

            # back on stable in Traefik, the canary scaled down to no pods, and nobody saw an error page
            wait_for(
                "route back to 100/0", lambda: app.router.get_routes(app.target) == RoutePlan(), timeout=10
            )
            app.in_force()
            wait_rolled_out(app.api, app.pro, [seed.CANARY])
            assert pod_urls(app.api, app.pro, seed.CANARY) == set()
            time.sleep(3.0)
            settled = time.monotonic()
            time.sleep(2.0)
            after = stack.hits(settled)
            assert len(after) > 100 and {h.version for h in after} == {"v1"}, Counter(
                h.version for h in after
            )
            _assert_none_failed(stack, started)
            canary_hits = [h for h in stack.hits(started, rolled_back) if h.version == "v2"]
            first_bad = min(h.at for h in canary_hits if h.status == 500)
            print(
                f"\nTraefik {app.version} bad canary: first bad request -> rolled back {rolled_back - first_bad:.2f} s "
                f"({len(canary_hits)} canary requests, {sum(h.status == 500 for h in canary_hits)} failed, "
                f"{len(release.verdicts)} verdicts)"
            )
            assert rolled_back - first_bad < 20.0
            assert stack.events(".release.promoted") == []
            _check_events(stack)
        except BaseException:
            print(stack.story())
            raise


def test_a_healthy_canary_is_promoted_on_traefiks_metrics(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    app = stable_app
    with _running(app, kube, tmp_path, pause=8.0) as stack:
        try:
            for v in ("v1", "v2"):
                app.pods.set(v, error_rate=BASELINE)
            _first_version(stack)
            started = time.monotonic()
            stack.runner.handle(push(stack.policy.app, "v2"))
            succeeded = wait_for("release succeeded", lambda: stack.first(".release.succeeded"), timeout=90)
            release = stack.state().release
            assert release is not None and release.phase == Phase.SUCCEEDED and release.promoted
            assert stack.state().stable.version == "v2" and release.failures == 0
            verdicts = [e.data["verdict"] for _, e in stack.events(".analysis.verdict")]
            assert "fail" not in verdicts and verdicts.count("pass") >= 2, verdicts

            # the stable Deployment runs v2 now, Traefik sends it everything, the canary has no pods left
            wait_for(
                "route back to 100/0", lambda: app.router.get_routes(app.target) == RoutePlan(), timeout=10
            )
            wait_rolled_out(app.api, app.pro, [seed.STABLE, seed.CANARY])
            app.pods.wait_serving(app.pro, {"v2": 2})
            time.sleep(2.0)
            settled = time.monotonic()
            time.sleep(2.0)
            after = stack.hits(settled)
            assert len(after) > 100 and {h.version for h in after} == {"v2"}, Counter(
                h.version for h in after
            )
            stepped = stack.first(".release.step.advanced")
            promoted = stack.first(".release.promoted")
            assert stepped is not None and promoted is not None
            for since, until, share in ((started + 2, stepped, 0.2), (stepped + 1, promoted, 0.5)):
                hits = [h for h in stack.hits(since, until) if h.version]
                canary = sum(h.version == "v2" for h in hits)
                assert len(hits) > 200 and abs(canary / len(hits) - share) < 0.1, (share, canary, len(hits))
            _assert_none_failed(stack, started)
            print(
                f"\nTraefik {app.version} healthy canary: promoted {promoted - started:.1f} s, "
                f"succeeded {succeeded - started:.1f} s after the push; verdicts {verdicts.count('pass')} pass, "
                f"{verdicts.count('inconclusive')} inconclusive"
            )
            _check_events(stack)
        except BaseException:
            print(stack.story())
            raise


@pytest.mark.parametrize("regression", ["errors", "latency"])
def test_the_guard_rolls_back_before_start_step_on_traefiks_metrics(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path, regression: str
) -> None:
    """The seed's policy (startStep 2, success rate >= 0.90 every 10 s) with graylane's defaults: the guard reads
    Traefik's counters from the canary's first request at the probe weight and rolls it back in step 1."""
    app = stable_app
    policy = seed_policy_on_traefik(app.version, app.pro)
    assert policy.analysis is not None and policy.analysis.start_step == 2 and policy.analysis.guard
    with AnalysisStack(app, kube, tmp_path, policy) as stack:
        try:
            app.pods.set("v1", error_rate=BASELINE)
            if regression == "errors":
                app.pods.set("v2", error_rate=0.5)
            else:
                app.pods.set("v2", error_rate=BASELINE, delay=0.1)
            first_version(stack)
            started = time.monotonic()
            stack.runner.handle(push(stack.policy.app, "v2"))
            rolled_back = wait_for(
                "release rolled back", lambda: stack.first(".release.rolledback"), timeout=60
            )
            release = stack.state().release
            assert release is not None and release.phase == Phase.ROLLED_BACK, stack.story()
            # in step 1 (index 0) at the probe weight: startStep 2 never came, the user's metric never ran
            assert release.step == 0 and not release.analysing, (release.step, release.analysing)
            assert {m.name for v in release.verdicts for m in v.metrics} == {"guard"}, release.verdicts
            what = "canary errors" if regression == "errors" else "canary requests slower than"
            assert release.reason.startswith(f"guard: {what}"), release.reason
            guard = {m.name: m for m in release.verdicts[-1].metrics}["guard"]
            assert guard.verdict == "fail" and "increase" not in guard.query  # the raw counters
            metric = "traefik_service_requests_total" if regression == "errors" else "_bucket"
            assert metric in guard.query, guard.query
            assert stack.state().stable.version == "v1"
            weights = [h.weight for h in stack.state().history if h.weight]
            assert weights and max(weights) < 20, weights  # capped below the first step's 20 %
            wait_for(
                "route back to 100/0", lambda: app.router.get_routes(app.target) == RoutePlan(), timeout=10
            )
            _assert_none_failed(stack, started)
            canary = [h for h in stack.hits(started, rolled_back) if h.version == "v2"]
            print(
                f"\nTraefik {app.version} guard ({regression}): rolled back {rolled_back - started:.1f} s after "
                f"the push, {len(canary)} canary requests, {sum(h.status == 500 for h in canary)} failed, "
                f"weights {weights}"
            )
            assert stack.events(".release.promoted") == []
            _check_events(stack)
        except BaseException:
            print(stack.story())
            raise
