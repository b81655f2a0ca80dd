"""The guard and adaptive exposure (issue 13) together with hook gates and HPA-aware canaries (issue 14): the
canary's autoscaler is sized for the weight exposure actually routes, exposure raising the routed weight up to
a step's planned weight asks no confirm-traffic-increase hook (the next step's plan does), and the guard still
watches, and rolls back, a release held at a hook gate."""

from __future__ import annotations

from dataclasses import replace

from functions.core.policy import Hook
from functions.core.state import Phase
from tests.unit.evidence_helpers import Counters, seed_like
from tests.unit.machine_helpers import Driver


def test_exposure_sizes_the_canary_for_the_weight_it_routes() -> None:
    d = Driver.with_stable(seed_like())
    out = d.push("v2")
    sized = [
        (e.kind, e.weight if e.kind == "scale-canary" else e.routes.canary if e.routes else None)
        for e in out.effects
        if e.kind in ("scale-canary", "set-routes")
    ]
    assert sized == [("scale-canary", 5), ("set-routes", 5)]  # the probe weight, not the planned 20
    assert d.rel.planned_weight == 20 and d.rel.canary_share == "5"
    counters = Counters()
    shares = []
    for _ in range(23):  # ~2 minutes of healthy traffic: the weight ramps to the planned 20
        counters.serve(5.0, d.state.routes.canary)
        out = d.tick(5.0, counters.observe())
        for e in out.effects:
            if e.kind == "scale-canary":
                shares.append(e.weight)
                assert e.weight == d.state.routes.canary  # each resize is for the weight this tick routes
    assert shares and shares == sorted(shares) and shares[-1] == 20 and d.rel.canary_share == "20"


def test_exposure_ramp_asks_no_hook_the_next_step_does_and_the_guard_watches_at_the_gate() -> None:
    capacity = Hook(name="capacity", type="confirm-traffic-increase", url="http://hooks.test/capacity")
    d = Driver.with_stable(replace(seed_like(), hooks=(capacity,)))
    d.push("v2")
    counters = Counters()
    for _ in range(23):
        counters.serve(5.0, d.state.routes.canary)
        d.tick(5.0, counters.observe())
        assert d.rel.phase == Phase.PROGRESSING and not d.rel.gate  # exposure's ramp holds at no gate
    assert d.state.routes.canary == 20
    counters.serve(5.0, 20)
    d.tick(5.0, counters.observe())  # 120 s: step 2 plans 40 %: the hook is asked first
    assert d.rel.phase == Phase.WAITING and d.rel.gate == "hook:confirm-traffic-increase"
    assert d.rel.step == 0 and d.rel.planned_weight == 20
    counters.canary_errors_rate = 0.5  # the canary breaks while the hook has not answered
    for _ in range(12):
        if not d.rel.active:
            break
        counters.serve(5.0, d.state.routes.canary)
        d.tick(5.0, counters.observe())
    assert d.rel.phase == Phase.ROLLED_BACK and d.rel.reason.startswith("guard: ")
    assert d.state.routes.canary == 0
