"""[mirror] Properties of the mirror stage: decide() under random event sequences (with every invariant of
tests/property/test_machine_properties.py), and Traefik's element-wise patches over random user entries.

- The desired routes mirror only while the release is active in a mirror stage (or waits at a gate right after
  one: a gate holds the traffic as it is), with no live traffic on the canary (weight 0, no rules); once the
  release ends, or moves on to another stage, nothing is mirrored.
- Whatever the user's backend entries hold, a sequence of plans (mirror, weights, stable only) changes only
  the stable's weight, the canary's entry and graylane's mirroring entry, and the weights read back are the
  plan's; every plan applied twice writes nothing the second time.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import (
    ApprovalStage,
    CanaryStage,
    CanaryStep,
    MirrorStage,
    Policy,
    PromoteStage,
    RollbackMode,
)
from functions.providers.routers import traefik
from functions.providers.routers._common import apply_patch
from functions.providers.routers.base import RouteTarget
from tests.property.test_machine_properties import PHASES, Run, draw_step, happy_path, start, step
from tests.unit.machine_helpers import analysis, make_policy

SHAPES: dict[str, Policy] = {
    "mirror-then-canary": make_policy(
        MirrorStage(percent=50, duration=30),
        CanaryStage(steps=(CanaryStep(20, 30), CanaryStep(60, 30))),
        PromoteStage(keep_previous=60),
        analysis=analysis(failure_limit=2),
    ),
    "gate-mirror-open-ended": make_policy(
        ApprovalStage(name="go", timeout=60),
        MirrorStage(percent=100),
        ApprovalStage(name="promote"),
        PromoteStage(),
        analysis=analysis(),
        rollback=RollbackMode.ROLL_FORWARD,
    ),
    "mirror-unanalysed": make_policy(MirrorStage(percent=5, duration=10, analysis=False), PromoteStage()),
}


def _check_mirror(run: Run) -> None:
    state, rel = run.state, run.state.release
    routes = state.routes
    if not routes.mirror:
        return
    assert routes.canary == 0 and not routes.match, routes
    assert rel is not None and rel.active and rel.weight == 0, (rel, routes)
    # the stage routing now: the current one, or the last traffic stage before the gates it waits at (a gate holds
    # the traffic as the stage before it left it: a canary's weight, or the mirror)
    routing = [st_ for st_ in run.policy.stages[: rel.stage + 1] if not isinstance(st_, ApprovalStage)]
    stage = routing[-1] if routing else None
    assert isinstance(stage, MirrorStage) and routes.mirror == stage.percent, (stage, routes)


def _play(run: Run, data: st.DataObject, biased: bool) -> None:
    for _ in range(data.draw(st.integers(min_value=5, max_value=50))):
        event, obs = happy_path(data, run) if biased else draw_step(data, run)
        step(run, event, obs, apply=True if biased else data.draw(st.sampled_from((True, True, False))))
        _check_mirror(run)
        set_routes = [e.routes for e in run.state.pending if e.kind == "set-routes" and e.routes is not None]
        for plan in set_routes:
            assert not plan.mirror or (plan.canary == 0 and not plan.match), plan


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("biased", [False, True])
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_mirror_only_while_a_mirror_stage_runs(shape: str, biased: bool, data: st.DataObject) -> None:
    policy = SHAPES[shape]
    run = Run(policy, start(policy, data.draw(st.booleans())))
    _play(run, data, biased)


def test_mirror_happy_paths_reach_the_mirror_and_leave_it() -> None:
    """The sequences above do reach a mirror and a promotion after it (so the property is not vacuous)."""
    reached: set[str] = set()

    @settings(
        max_examples=30,
        derandomize=True,
        database=None,
        deadline=None,
        phases=PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def play(data: st.DataObject) -> None:
        run = Run(SHAPES["mirror-then-canary"], start(SHAPES["mirror-then-canary"], True))
        for _ in range(40):
            event, obs = happy_path(data, run)
            step(run, event, obs, apply=True)
            if run.state.routes.mirror:
                reached.add("mirror")
            if run.promotions:
                reached.add("promoted")

    play()
    assert reached == {"mirror", "promoted"}


# --- Traefik's patches over random user entries -----------------------------------------------------------------

NAMES = st.sampled_from(["web", "web-canary", "audit", "web-mirror"])
ENTRY = st.fixed_dictionaries(
    {"name": NAMES, "port": st.sampled_from([80, 8080, "http"])},
    optional={
        "weight": st.integers(0, 100),
        "passHostHeader": st.booleans(),
        "namespace": st.sampled_from(["shop", "other"]),
        "kind": st.sampled_from(["Service", "TraefikService"]),
        "scheme": st.sampled_from(["h2c"]),
    },
)
PLANS = st.lists(
    st.sampled_from(
        [
            STABLE_ONLY,
            RoutePlan.mirrored(50),
            RoutePlan.mirrored(1),
            RoutePlan.mirrored(100),
            RoutePlan.canary_at(20),
            RoutePlan.canary_at(100),
        ]
    ),
    min_size=1,
    max_size=8,
)


def _user_part(entries: list[Any], s: Any) -> list[Any]:
    """The entries graylane does not own, and the stable's without its weight."""
    mine = [e for e in entries if not (traefik._is_backend(e, s.canary) or traefik._is_mirror(e, s))]
    return [
        {k: v for k, v in e.items() if k != "weight"} if traefik._is_backend(e, s.stable) else e for e in mine
    ]


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(others=st.lists(ENTRY, max_size=3), stable=ENTRY, plans=PLANS)
def test_mirror_traefik_patches_touch_only_owned_entries(
    others: list[Any], stable: dict[str, Any], plans: list[RoutePlan]
) -> None:
    s = traefik._setup(RouteTarget("shop", "web", "web", "web-canary", options={"ingressRoute": "web-route"}))
    stable = {**stable, "name": "web", "kind": "Service"}
    others = [
        e
        for e in others
        if not (
            traefik._is_backend(e, "web")
            or traefik._is_backend(e, "web-canary")
            or traefik._is_mirror(e, s)
            or e.get("name") == "web-route-mirror"
        )
    ]
    entries: list[Any] = [stable, *others]
    before = _user_part(entries, s)
    for plan in plans:
        note(f"{plan} on {entries}")
        ops, _ = traefik.weight_ops(entries, "/s", s, plan, None)
        entries = apply_patch({"s": entries}, ops)["s"]
        assert _user_part(entries, s) == before
        assert traefik._weights(entries, s) == (plan.stable, plan.canary) or (
            plan == STABLE_ONLY and "weight" not in stable and traefik._weights(entries, s)[1] == 0
        )
        assert [e for e in entries if traefik._is_mirror(e, s)] == (
            [{"kind": "TraefikService", "name": "web-route-mirror", "weight": 100}] if plan.mirror else []
        )
        assert traefik.weight_ops(entries, "/s", s, plan, None)[0] == []
