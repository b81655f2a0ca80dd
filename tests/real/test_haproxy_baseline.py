"""[baseline] A fresh baseline on real HAProxy 2.6: the config's third server (`baseline`, weight 0 until a
release runs one) is re-addressed to the baseline's process over the admin socket and weighed with stable and
canary; 5,000 real requests split within ±2 points of the plan, HAProxy's server series name it apart."""

from __future__ import annotations

from dataclasses import replace

import pytest

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import ImageRule, Policy, RouterSpec
from functions.errors import ConfigError
from functions.providers.metrics import templates as tp
from tests.real.backends import start_backend
from tests.real.conftest import HAProxyApp

pytestmark = pytest.mark.real


@pytest.mark.parametrize(
    "plan",
    [
        RoutePlan(stable=60, canary=20, baseline=20),
        RoutePlan(stable=90, canary=5, baseline=5),
        RoutePlan(stable=0, canary=50, baseline=50),
    ],
    ids=str,
)
def test_baseline_haproxy_splits_5000_requests_three_ways(haproxy_app: HAProxyApp, plan: RoutePlan) -> None:
    app = haproxy_app
    fresh = start_backend("baseline")
    t = replace(app.target, baseline="baseline")
    try:
        app.router.cli.check(f"set server be_app/baseline addr 127.0.0.1 port {fresh.port}")
        app.router.set_routes(t, plan)
        assert app.router.get_routes(t) == plan
        seen = app.client().split(5000)
        shares = {k: 100 * seen[k] / 5000 for k in ("stable", "canary", "baseline")}
        print(f"\nhaproxy split {plan.stable}/{plan.canary}/{plan.baseline}: {dict(seen)} -> {shares}")
        assert sum(seen.values()) == 5000 and set(seen) <= {"stable", "canary", "baseline"}, seen
        for name, planned in (("stable", plan.stable), ("canary", plan.canary), ("baseline", plan.baseline)):
            assert abs(shares[name] - planned) <= 2, (plan, seen)
        app.router.set_routes(t, STABLE_ONLY)
        assert app.router.get_routes(t) == STABLE_ONLY and set(app.client().split(200)) == {"stable"}
    finally:
        app.router.set_routes(t, STABLE_ONLY)
        fresh.stop()


def test_baseline_haproxy_needs_the_policy_to_ask_for_one(haproxy_app: HAProxyApp) -> None:
    with pytest.raises(ConfigError, match="spec.baseline"):
        haproxy_app.router.set_routes(haproxy_app.target, RoutePlan(stable=60, canary=20, baseline=20))
    assert haproxy_app.router.get_routes(haproxy_app.target) == STABLE_ONLY


def test_baseline_haproxy_series_is_the_baseline_server() -> None:
    policy = Policy(
        name="web", namespace="real", image=ImageRule("r/x"), router=RouterSpec("haproxy", {}), stages=()
    )
    fresh = tp.target(policy, "w", baseline=True)
    assert fresh.stable.matches({"proxy": "real-web", "server": "baseline"})
    assert not fresh.stable.matches({"proxy": "real-web", "server": "stable"})
