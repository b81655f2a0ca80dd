"""HPA-aware canaries, the pure part: the bounds rule (functions/core/autoscale.py) and when decide() asks
for a `scale-canary` effect. The HPA objects themselves, on the real apiserver and under the real HPA
controller, are in tests/contract/test_hpa_kubernetes.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from functions.core.autoscale import canary_bounds
from functions.core.policy import ABTestStage, CanaryStage, CanaryStep, Match, PromoteStage
from functions.core.state import Phase
from tests.unit.machine_helpers import FAIL, PASS, Driver, analysis, kinds, make_policy

STEPS = CanaryStage(steps=(CanaryStep(10, 60.0), CanaryStep(50, 60.0)))


def scaled(effects: tuple) -> list[int | None]:  # type: ignore[type-arg]
    return [e.weight for e in effects if e.kind == "scale-canary"]


@given(st.integers(0, 50), st.integers(1, 500), st.integers(0, 100), st.integers(0, 100))
def test_hpa_bounds_are_at_least_one_ordered_and_grow_with_the_share(
    lo: int, extra: int, a: int, b: int
) -> None:
    hi = lo + extra
    small, large = sorted((a, b))
    low_a, high_a = canary_bounds(lo, hi, small)
    low_b, high_b = canary_bounds(lo, hi, large)
    assert 1 <= low_a <= high_a and 1 <= low_b <= high_b
    assert low_a <= low_b and high_a <= high_b  # more traffic never means a smaller canary
    assert low_a * 100 >= lo * small and high_a * 100 >= hi * small  # at least its share of each bound
    assert high_b <= max(1, hi)  # never more than the stable may have
    assert canary_bounds(lo, hi, 100) == (max(1, lo), hi)  # all the traffic: the stable's own bounds
    assert canary_bounds(lo, hi, None) == (1, hi)  # a match route: the share is unknown


def test_hpa_bounds_round_up() -> None:
    assert canary_bounds(4, 10, 10) == (1, 1)
    assert canary_bounds(4, 10, 50) == (2, 5)
    assert canary_bounds(3, 7, 20) == (1, 2)
    assert canary_bounds(3, 7, 50) == (2, 4)
    assert canary_bounds(2, 10, 0) == (1, 1)  # deployed, no traffic yet (a blue-green preview)


def test_hpa_each_weight_change_resizes_the_canary_once_and_a_rollback_scales_it_down_after_the_route() -> (
    None
):
    d = Driver.with_stable(make_policy(STEPS, PromoteStage(), analysis=analysis()))
    out = d.push("v2")
    assert kinds(out.effects) == ["deploy-canary", "scale-canary", "set-routes"]  # sized before its traffic
    assert scaled(out.effects) == [10]
    assert scaled(d.tick(10, PASS).effects) == []  # analysis only: the share did not change
    assert scaled(d.tick(60, PASS).effects) == [50]
    out = d.tick(10, FAIL)
    assert d.rel.phase == Phase.ROLLED_BACK and scaled(out.effects) == []
    assert kinds(out.effects).index("set-routes") < kinds(out.effects).index("scale-down-canary")


def test_hpa_a_match_route_sizes_the_canary_for_an_unknown_share_and_the_next_release_starts_afresh() -> None:
    header = Match(kind="header", name="x-canary", value="always")
    d = Driver.with_stable(
        make_policy(ABTestStage(match=(header,), duration=60, analysis=False), STEPS, PromoteStage())
    )
    assert scaled(d.push("v2").effects) == [None]
    assert scaled(d.tick(60).effects) == [10]  # the A/B test is over: a weighted step
    d.tick(60)
    d.tick(60)
    assert d.rel.phase == Phase.SUCCEEDED and not d.rel.canary_deployed
    assert scaled(d.push("v3").effects) == [None]  # a new canary, a new HPA


def test_hpa_blue_green_green_is_sized_for_everyone_before_the_switch_sends_everyone() -> None:
    from functions.core.policy import BlueGreenStage, PreviewTraffic

    for traffic in (None, PreviewTraffic()):  # previewed with no traffic, or with the preview header's
        d = Driver.with_stable(
            make_policy(BlueGreenStage(preview=60, analysis=False, preview_traffic=traffic), PromoteStage())
        )
        assert scaled(d.push("v2").effects) == [0 if traffic is None else None]
        out = d.tick(60)
        order = [
            (e.kind, e.weight if e.kind == "scale-canary" else e.routes.canary if e.routes else None)
            for e in out.effects
            if e.kind in ("scale-canary", "set-routes")
        ]
        assert order[:2] == [("scale-canary", 100), ("set-routes", 100)], order
