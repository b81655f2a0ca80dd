"""Canary analysis end to end on real components (see tests/real/analysis_stack.py):

real traffic (~160 rps from 4 paced clients) → real HAProxy (weights set by the runner) → two real backends;
real Prometheus scrapes HAProxy every second; a ticker sends a release.tick every 0.5 s and the runner
measures through PrometheusAnalysis (analysis interval 1 s, 10 s window) and lets the verdict drive the
release. No alert rule exists: only analysis can roll a release back.

1. A canary answering 30 % 5xx (stable 0.5 %) is rolled back by the sequential judge; HAProxy is back to
   100/0 and serves no canary request afterwards.
2. A healthy canary (0.5 % 5xx on both) is promoted through 20 → 50 → promote, never rolled back.
3. Prometheus stopped after the first passing verdict: verdicts become inconclusive (unavailable), the
   release pauses after inconclusiveLimit and never promotes; Prometheus back + `resume` finishes it.
4. A canary 100 ms slower is rolled back by the latency comparison (HAProxy's average response time).
   HAProxy 2.6's exporter divides its sliding sum by the full window (512 samples) even while a server
   has answered fewer, so a fresh canary's average ramps up (+100 ms reads ~+15 ms after 80 requests,
   ~+77 ms after 390; `show stat` says 101 ms all along). Detection therefore waits for enough canary
   requests: this scenario sends more traffic (8 clients, ~200 rps) and asserts only what the gauge can
   show (canary - stable above the 50 ms tolerance, never above the real delay).

Each scenario has its own stack (fresh HAProxy counters and averages, fresh Prometheus) and is bounded
(≤ ~40 s). Every emitted CloudEvent is validated against the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from functions.catalog import validate
from functions.core.effects import RoutePlan
from functions.core.events import Command, ImagePushed
from functions.core.policy import MetricCheck
from functions.core.state import MAX_VERDICTS, Actor, MetricResult, Phase, Release, Version
from tests.real.analysis_stack import BACKEND, AnalysisStack, canary_policy
from tests.real.protection_stack import APP, wait_for

pytestmark = pytest.mark.real

REPOSITORY = "registry.example.com/web"
BASELINE = 0.005  # both versions' everyday 5xx rate: "healthy" is not "never fails"
ERRORS = MetricCheck(name="errors", template="success-rate", judge="sequential")
SUCCESS = MetricCheck(name="success-rate", template="success-rate", min=0.95)
LATENCY = MetricCheck(name="latency", template="latency", judge="comparison", tolerance=50.0)  # ms


@contextmanager
def running(tmp_path: Path, metrics: tuple[MetricCheck, ...], **policy: Any) -> Iterator[AnalysisStack]:
    with AnalysisStack(tmp_path, lambda socket: canary_policy(socket, metrics, **policy)) as stack:
        try:
            yield stack
        except BaseException:
            print(_story(stack))  # shown by pytest with the failure
            raise
        assert stack.tick_errors == [], f"ticks failed: {stack.tick_errors[:3]}"
        for _, event in stack.published:  # every CloudEvent the release emitted is in the catalog
            validate(event)


def _story(stack: AnalysisStack) -> str:
    """The release's history and latest verdicts, for a failure's report."""
    state = stack.state()
    lines = [f"{h.at} {h.action}: {h.reason}" for h in state.history[-25:]]
    if state.release is not None:
        lines += [f"verdict {v.at} {v.verdict}: {v.reason[:300]}" for v in state.release.verdicts[-8:]]
    return "\n".join(["release story:", *lines, f"tick errors: {stack.tick_errors[:3]}"])


def _push(version: str) -> ImagePushed:
    return ImagePushed(
        id=f"push-{version}-{time.monotonic_ns()}",
        app=APP,
        repository=REPOSITORY,
        tag=version,
        target=Version(version, f"{REPOSITORY}:{version}"),
    )


def _start_release(stack: AnalysisStack, clients: int = 4, rps: float = 40.0, first: int = 20) -> float:
    """v1 becomes stable, traffic flows and Prometheus has seen it; then v2 starts (returns that moment)."""
    stack.runner.handle(_push("v1"))
    stack.load(clients, rps)
    stack.wait_scraping()
    started = time.monotonic()
    stack.runner.handle(_push("v2"))
    assert stack.routes() == RoutePlan.canary_at(first), "the first step's weights are live in HAProxy"
    return started


def _first(stack: AnalysisStack, suffix: str) -> float | None:
    found = stack.events(suffix)
    return found[0][0] if found else None


def _release(stack: AnalysisStack) -> Release:
    release = stack.state().release
    assert release is not None and release.target.version == "v2"
    return release


def _results(release: Release, index: int = -1) -> dict[str, MetricResult]:
    return {m.name: m for m in release.verdicts[index].metrics}


def _canary_hits(stack: AnalysisStack, since: float, until: float = float("inf")) -> list[Any]:
    return [h for c in stack.clients for h in c.since(since) if h.at < until and h.backend == "canary"]


def _assert_verdicts_recorded(stack: AnalysisStack, release: Release) -> None:
    """State keeps the latest verdicts (bounded), in the order their analysis.verdict events were emitted."""
    events = [e.data for _, e in stack.events(".analysis.verdict")]
    assert events and all(d["release"] == release.id and d["app"] == APP for d in events)
    assert len(release.verdicts) == min(len(events), MAX_VERDICTS)  # every verdict emitted, the latest kept
    tail = events[-len(release.verdicts) :]
    assert [d["verdict"] for d in tail] == [v.verdict for v in release.verdicts]
    assert [[m["name"] for m in d["metrics"]] for d in tail] == [
        [m.name for m in v.metrics] for v in release.verdicts
    ]


def _assert_back_on_stable(stack: AnalysisStack) -> None:
    """Live HAProxy weights are 100/0 and no request reaches the canary any more."""
    wait_for("HAProxy back to 100/0", lambda: stack.routes() == RoutePlan(), timeout=5, every=0.05)
    settled = time.monotonic() + 0.5  # a request already sent to the canary (100 ms slow) may still finish
    time.sleep(2.5)
    served = sum(len(c.since(settled)) for c in stack.clients)
    assert served > 100, f"traffic kept flowing after the rollback ({served} requests in 2 s)"
    late = [round(h.at - settled, 3) for h in _canary_hits(stack, settled)]
    assert late == [], f"canary answers {late} s after the weights settled"


def test_a_bad_canary_is_rolled_back_by_the_sequential_judge(tmp_path: Path) -> None:
    with running(tmp_path, (ERRORS, SUCCESS)) as stack:
        stack.set_backend("stable", error_rate=BASELINE)
        stack.set_backend("canary", error_rate=0.3)
        started = _start_release(stack)
        rolled_back = wait_for(
            "release rolled back", lambda: _first(stack, ".release.rolledback"), timeout=25
        )

        release = _release(stack)
        assert release.phase == Phase.ROLLED_BACK and release.reason.startswith("analysis failed")
        assert stack.state().stable.version == "v1"
        _assert_back_on_stable(stack)
        assert stack.events(".release.promoted") == []
        assert [(verb, image) for verb, _, image in stack.providers.workloads_.log.calls] == [
            ("promote_stable", f"{REPOSITORY}:v1"),
            ("deploy_canary", f"{REPOSITORY}:v2"),
            ("scale_canary", 20),  # the canary's autoscaler, sized for its first step (none to size here)
            ("scale_down_canary", ""),
        ]

        _assert_verdicts_recorded(stack, release)
        assert release.verdicts[-1].verdict == "fail"
        results = _results(release)
        errors, success = results["errors"], results["success-rate"]
        assert errors.verdict == "fail" and "regression: canary" in errors.reason and "[raw " in errors.reason
        assert "haproxy_server_http_responses_total" in errors.query and f'proxy=~"{BACKEND}"' in errors.query
        assert success.value is not None and 0.5 < success.value < 0.95  # ~0.7 measured from real 5xx
        assert success.stable_value is not None and success.stable_value > 0.95
        last = stack.events(".analysis.verdict")[-1][1].data
        assert (
            last["verdict"] == "fail"
            and {m["name"]: m["verdict"] for m in last["metrics"]}["errors"] == "fail"
        )

        hits = _canary_hits(stack, started, rolled_back)
        first_bad = min(h.at for h in hits if h.status == 500)
        print(
            f"\nbad canary: first bad request -> rolled back {rolled_back - first_bad:.2f} s "
            f"(release start -> rolled back {rolled_back - started:.2f} s; {len(hits)} canary requests, "
            f"{sum(h.status == 500 for h in hits)} failed; {len(release.verdicts)} verdicts)"
        )
        assert rolled_back - first_bad < 15.0


def test_a_healthy_canary_is_promoted_without_a_false_rollback(tmp_path: Path) -> None:
    with running(tmp_path, (ERRORS, SUCCESS), pause=12.0) as stack:  # > MAX_VERDICTS analyses in all
        for name in ("stable", "canary"):
            stack.set_backend(name, error_rate=BASELINE)
        started = _start_release(stack)
        succeeded = wait_for("release succeeded", lambda: _first(stack, ".release.succeeded"), timeout=45)

        release = _release(stack)
        assert release.phase == Phase.SUCCEEDED and release.promoted
        assert stack.state().stable.version == "v2"
        assert stack.events(".release.rolledback") == [] and release.failures == 0
        verdicts = [e.data["verdict"] for _, e in stack.events(".analysis.verdict")]
        assert "fail" not in verdicts and verdicts.count("pass") >= 2
        _assert_verdicts_recorded(stack, release)
        assert ("promote_stable", f"{REPOSITORY}:v2") in [
            (v, i) for v, _, i in stack.providers.workloads_.log.calls
        ]

        # the weights were really live: ~20 % then ~50 % of real requests reached the canary
        stepped = stack.events(".release.step.advanced")[0][0]
        promoted = stack.events(".release.promoted")[0][0]
        for moved in (stepped, promoted):  # each move came right after a passing verdict, never without one
            before = [e.data["verdict"] for at, e in stack.events(".analysis.verdict") if at <= moved]
            assert before and before[-1] == "pass"
        for since, until, share in ((started + 1, stepped, 0.2), (stepped + 1, promoted, 0.5)):
            total = sum(1 for c in stack.clients for h in c.since(since) if h.at < until)
            canary = len(_canary_hits(stack, since, until))
            assert total > 200 and abs(canary / total - share) < 0.1, (share, canary, total)
        _assert_back_on_stable(stack)  # after the promote stage the (new) stable takes everything
        print(
            f"\nhealthy canary: promoted {promoted - started:.1f} s, succeeded {succeeded - started:.1f} s "
            f"after the start; verdicts {verdicts.count('pass')} pass, {verdicts.count('inconclusive')} "
            "inconclusive"
        )


def test_prometheus_down_never_promotes_pauses_and_resume_continues(tmp_path: Path) -> None:
    with running(tmp_path, (ERRORS, SUCCESS), pause=8.0, inconclusive_limit=4) as stack:
        for name in ("stable", "canary"):
            stack.set_backend(name, error_rate=BASELINE)
        _start_release(stack)
        passed = lambda: [at for at, e in stack.events(".analysis.verdict") if e.data["verdict"] == "pass"]  # noqa: E731
        wait_for("a passing verdict", passed, timeout=15)
        stack.stop_prometheus()
        stopped = time.monotonic()

        paused = wait_for("release paused", lambda: _first(stack, ".release.paused"), timeout=15)
        release = _release(stack)
        assert release.phase == Phase.PAUSED and "inconclusive verdicts in a row" in release.reason
        blind = [(at, e.data) for at, e in stack.events(".analysis.verdict") if at > stopped + 0.5]
        assert len(blind) >= 3 and all(d["verdict"] == "inconclusive" for _, d in blind)
        assert all("unavailable" in m["reason"] for _, d in blind for m in d["metrics"])
        assert all(m.verdict == "inconclusive" for v in release.verdicts[-4:] for m in v.metrics)
        weight = release.weight
        assert stack.routes() == RoutePlan.canary_at(weight) and weight in (20, 50)

        time.sleep(3.0)  # paused: ticks go on, nothing moves and nothing is promoted
        assert _release(stack).phase == Phase.PAUSED and stack.routes() == RoutePlan.canary_at(weight)
        assert [at for at, _ in stack.events(".analysis.verdict") if at > paused + 0.1] == []
        assert stack.events(".release.promoted") == []
        assert all(
            v != "promote_stable" or i.endswith(":v1") for v, _, i in stack.providers.workloads_.log.calls
        )

        stack.start_prometheus()
        stack.wait_scraping()  # back means scraping again: resuming earlier only pauses again on no-data
        resumed = time.monotonic()
        rel = _release(stack)
        stack.runner.handle(
            Command(
                id=f"resume-{time.monotonic_ns()}",
                app=APP,
                action="resume",
                actor=Actor(user="oncall", via="cli"),
                release=rel.id,
                version=rel.target.version,
            )
        )
        succeeded = wait_for(
            "release succeeded after resume", lambda: _first(stack, ".release.succeeded"), timeout=30
        )
        promoted = stack.events(".release.promoted")[0][0]
        after = [e.data["verdict"] for at, e in stack.events(".analysis.verdict") if resumed < at < promoted]
        assert "pass" in after and "fail" not in after  # promoted on fresh passing verdicts only
        assert stack.state().stable.version == "v2" and _release(stack).phase == Phase.SUCCEEDED
        print(
            f"\nprometheus down: paused {paused - stopped:.1f} s after the stop; resumed -> succeeded "
            f"{succeeded - resumed:.1f} s"
        )


def test_a_slower_canary_is_rolled_back_by_the_latency_comparison(tmp_path: Path) -> None:
    with running(tmp_path, (ERRORS, LATENCY)) as stack:
        for name in ("stable", "canary"):
            stack.set_backend(name, error_rate=BASELINE)
        stack.set_backend("canary", delay=0.1)
        started = _start_release(stack, clients=8, rps=25.0)
        rolled_back = wait_for(
            "release rolled back", lambda: _first(stack, ".release.rolledback"), timeout=25
        )

        release = _release(stack)
        assert release.phase == Phase.ROLLED_BACK
        _assert_back_on_stable(stack)
        _assert_verdicts_recorded(stack, release)
        results = _results(release)
        latency = results["latency"]
        assert release.verdicts[-1].verdict == "fail" and latency.verdict == "fail"
        assert results["errors"].verdict != "fail"  # the errors are alike: only the latency regressed
        assert "haproxy_server_response_time_average_seconds" in latency.query
        assert latency.value is not None and latency.stable_value is not None and latency.stable_value < 40
        assert (
            50 < latency.value - latency.stable_value <= 110
        )  # ms: the 100 ms delay, as the gauge ramps to it
        print(
            f"\nslow canary: rolled back {rolled_back - started:.2f} s after the start "
            f"(canary {latency.value:.0f} ms vs stable {latency.stable_value:.0f} ms)"
        )
        assert rolled_back - started < 25.0


def test_the_post_promotion_watch_judges_the_promoted_version_and_finishes(tmp_path: Path) -> None:
    """During the watch the new version is the stable server and the warm previous one gets no traffic:
    the watch must measure stable with its threshold checks, not wait for canary traffic that never comes."""
    from dataclasses import replace

    from functions.core.policy import CanaryStage, CanaryStep, PromoteStage

    def policy(socket: Path) -> Any:
        p = canary_policy(socket, (ERRORS, SUCCESS), pause=4.0)
        return replace(p, stages=(CanaryStage(steps=(CanaryStep(20, 4.0),)), PromoteStage(keep_previous=8.0)))

    with AnalysisStack(tmp_path, policy) as stack:
        for name in ("stable", "canary"):
            stack.set_backend(name, error_rate=BASELINE)
        _start_release(stack)
        wait_for("release succeeded", lambda: _first(stack, ".release.succeeded"), timeout=45)
        release = _release(stack)
        promoted = stack.events(".release.promoted")[0][0]
        watch = [e.data for at, e in stack.events(".analysis.verdict") if at > promoted]
        assert watch and all(v["verdict"] == "pass" for v in watch), watch  # judged on the promoted version
        assert {m["name"] for v in watch for m in v["metrics"]} == {"success-rate"}  # thresholds only
        assert release.phase == Phase.SUCCEEDED and stack.state().warm is None


def test_the_guard_rolls_back_a_bad_canary_before_start_step_on_real_counters(tmp_path: Path) -> None:
    """The user's metric only runs from step 2; the guard reads HAProxy's raw counters from the first request
    of step 1 (probe weight 5 %) and rolls back within about a scrape and a tick."""
    with running(tmp_path, (SUCCESS,), guard=True, exposure_budget=5.0, start_step=2, pause=30.0) as stack:
        stack.set_backend("stable", error_rate=BASELINE)
        stack.set_backend("canary", error_rate=0.5)
        started = _start_release(stack, first=5)
        rolled_back = wait_for(
            "release rolled back", lambda: _first(stack, ".release.rolledback"), timeout=20
        )
        release = _release(stack)
        assert release.phase == Phase.ROLLED_BACK and release.step == 0 and not release.analysing
        assert release.reason.startswith("guard: canary errors")
        guard = _results(release)["guard"]
        assert guard.verdict == "fail" and "haproxy_server_http_responses_total" in guard.query
        assert "increase" not in guard.query  # raw counters
        _assert_back_on_stable(stack)
        hits = _canary_hits(stack, started, rolled_back)
        print(
            f"\nguard: rolled back {rolled_back - started:.2f} s after the start; {len(hits)} canary requests, "
            f"{sum(h.status == 500 for h in hits)} failed"
        )
        assert rolled_back - started < 6.0


def test_exposure_ramps_a_healthy_canary_from_the_probe_weight_on_real_counters(tmp_path: Path) -> None:
    with running(tmp_path, (SUCCESS,), guard=True, exposure_budget=5.0, pause=12.0) as stack:
        for name in ("stable", "canary"):
            stack.set_backend(name, error_rate=BASELINE)
        started = _start_release(stack, first=5)
        reached = wait_for(
            "the planned 20 % live",
            lambda: time.monotonic() if stack.routes() == RoutePlan.canary_at(20) else None,
            timeout=12,
            every=0.1,
        )
        succeeded = wait_for("release succeeded", lambda: _first(stack, ".release.succeeded"), timeout=45)
        release = _release(stack)
        assert release.phase == Phase.SUCCEEDED and release.failures == 0
        ramp = [h.weight for h in stack.state().history if h.reason.startswith("exposure:")]
        assert ramp and ramp == sorted(ramp) and max(ramp) <= 50
        print(
            f"\nexposure: 5 % -> 20 % in {reached - started:.1f} s (ramp {ramp}); "
            f"succeeded {succeeded - started:.1f} s after the start"
        )
