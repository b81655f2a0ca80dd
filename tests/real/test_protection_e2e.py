"""Alert-driven protection end to end on real components (see tests/real/protection_stack.py):

real Prometheus rule -> real Alertmanager -> gateway -> protection function (runner) -> real HAProxy.

1. An error burst on the stable backend fires WebHighErrorRate: the client sending ~150 rps from one
   address gets 429s at the tightened limit (1000 x 0.1 = 100/s) while a slow client is untouched;
   when errors stop the alert resolves, a tick after the hold-down relaxes the limit and the 429s stop.
   Every change is recorded in the state and notified through a real webhook notifier.
2. An alert labelled track=canary during an active release rolls the release back: HAProxy sends
   everything to stable again.
Every wait is bounded (<= 20 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from functions.core import events as ev
from functions.core.effects import RoutePlan
from functions.core.events import ImagePushed
from functions.core.state import AppState, Phase, Version
from tests.real.protection_stack import APP, PROTECT_ALERT, ProtectionStack, wait_for

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtectionStack]:
    with ProtectionStack(tmp_path_factory.mktemp("protection"), hold_down=2.0) as s:
        yield s


@pytest.fixture(autouse=True)
def healthy_backends(stack: ProtectionStack) -> Iterator[None]:
    for name in stack.backends:
        stack.errors(name, 0)
    yield
    for name in stack.backends:
        stack.errors(name, 0)


def _push(version: str) -> ImagePushed:
    repository = "registry.example.com/web"
    return ImagePushed(
        id=f"push-{version}-{time.monotonic_ns()}",
        app=APP,
        repository=repository,
        tag=version,
        target=Version(version, f"{repository}:{version}"),
    )


def _state(stack: ProtectionStack) -> AppState:
    doc, _ = stack.store.load(APP)
    assert doc is not None
    return AppState.from_json(doc)


def test_an_error_burst_tightens_the_rate_limit_and_recovery_relaxes_it(stack: ProtectionStack) -> None:
    assert stack.protection() == {}  # no limit before any alert
    heavy, light = stack.traffic("127.0.0.3", rps=150), stack.traffic("127.0.0.4", rps=20)
    try:
        time.sleep(6.0)  # a full [5s] rate window of healthy traffic before the burst
        assert not [h for h in heavy.since(0) if h.status != 200], "healthy traffic must all pass"

        burst = time.monotonic()
        stack.errors("stable", 1.0)
        first_500 = wait_for("first 500 seen by the client", lambda: heavy.first(500, burst), timeout=5)
        limited = wait_for(
            "rate limit tightened in HAProxy", lambda: stack.protection().get("rate"), timeout=20
        )
        tightened_at = time.monotonic()
        print(f"\nburst -> limit {limited}/s in HAProxy {tightened_at - first_500:.2f} s after the first 500")
        assert limited == 100  # 1000/s x 0.1, above the floor of 5
        wait_for("429s for the client above the limit", lambda: heavy.first(429, tightened_at), timeout=5)
        assert not [h for h in light.since(tightened_at) if h.status == 429], "the slow client is not limited"

        stack.errors("stable", 0.0)
        recovered = time.monotonic()
        wait_for(
            "alert resolved in the state", lambda: any(a.resolved_at for a in stack.alert_state()), timeout=20
        )
        resolved_at = time.monotonic()
        assert stack.protection().get("rate") == 100, "the limit holds during the hold-down"
        wait_for("limit relaxed after the hold-down", lambda: stack.protection() == {}, timeout=20)
        relaxed_at = time.monotonic()
        print(
            f"errors stopped -> resolved {resolved_at - recovered:.2f} s -> relaxed {relaxed_at - resolved_at:.2f} s"
        )
        assert relaxed_at - resolved_at >= stack.hold_down - 0.6  # the hold-down was honoured (tick jitter)
        time.sleep(1.0)
        after = heavy.since(relaxed_at + 0.2)
        assert after and not [h for h in after if h.status == 429], "429s stop once the limit is relaxed"
    finally:
        heavy.stop()
        light.stop()

    state = _state(stack)
    reasons = [h.reason for h in state.history if h.action == "protection"]
    assert reasons[-2:] == [f"alert {PROTECT_ALERT} firing", "alert hold-down over"]
    changed = stack.bus.of_type(ev.PROTECTION_CHANGED)
    assert [c.data.get("rateLimit", {}).get("average") for c in changed[-2:]] == [100, None]
    notified = wait_for(
        "protection notices", lambda: len(stack.notices.of_type("protection.changed")) >= 2, 5
    )
    assert notified and stack.notices.of_type("protection.changed")[0]["rateLimit"]["average"] == 100


def test_a_canary_alert_during_a_release_rolls_it_back_in_haproxy(stack: ProtectionStack) -> None:
    stack.runner.handle(_push("v1"))  # the first version becomes stable
    stack.runner.handle(_push("v2"))
    assert stack.routes() == RoutePlan.canary_at(20)
    traffic = stack.traffic("127.0.0.5", rps=100)
    try:
        wait_for("canary serving", lambda: any(h.backend == "canary" for h in traffic.since(0)), timeout=5)
        burst = time.monotonic()
        stack.errors("canary", 1.0)
        wait_for("routes back on stable", lambda: stack.routes() == RoutePlan.canary_at(0), timeout=20)
        print(f"\ncanary burst -> rolled back in HAProxy {time.monotonic() - burst:.2f} s later")
        back = time.monotonic()
        time.sleep(1.0)
        after = traffic.since(back + 0.1)
        assert after and {h.backend for h in after} == {"stable"}
    finally:
        traffic.stop()
    state = _state(stack)
    assert state.release is not None and state.release.phase is Phase.ROLLED_BACK
    assert "canary" in state.release.reason and state.stable.version == "v1"
    assert "scale_down_canary" in stack.providers.workloads_.log.verbs()
    wait_for("rolled-back notice", lambda: stack.notices.of_type("release.rolledback"), timeout=5)
