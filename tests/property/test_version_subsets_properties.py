"""Property tests of the per-version model (`-k version_subsets`): random event sequences (the drawing of
test_machine_properties: pushes, ticks with verdicts and route drift, every command, alerts, redeliveries)
against policies with one Deployment per version, the effects played on a simulated cluster after every
decision. Whatever happens:

1. no pair-model workload effect is ever asked for (no re-image of a stable, no canary workload);
2. a Deployment is never re-imaged: a deploy-version of one that exists names the image it runs (only a
   Deployment deleted first may come back with another image);
3. traffic only goes to subsets whose Deployment exists and runs, and every routed subset is kept;
4. a Deployment is scaled down or deleted only when the route gives its subset nothing;
5. the user's first Deployment is never deleted; only Deployments graylane created are;
6. the state's slots are the Deployments that exist, the stable version has one, and the state survives
   the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from functions.core.effects import STABLE_ONLY, Effect, RoutePlan
from functions.core.events import Event, Observation
from functions.core.machine import decide
from functions.core.policy import (
    ABTestStage,
    ApprovalStage,
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    GateParam,
    Match,
    Policy,
    PromoteStage,
    RollbackMode,
    WorkloadSpec,
)
from functions.core.slots import Routed
from functions.core.state import AppState
from tests.property.test_machine_properties import PHASES, Run, draw_step, happy_path, start
from tests.unit.machine_helpers import analysis, make_policy

FIRST = "reviews-v1"
MODEL = WorkloadSpec(
    name=FIRST, model="per-version", name_template="reviews-{version}", subset="v1", keep_retired=1
)
PAIR_EFFECTS = {"promote-stable", "deploy-canary", "keep-warm", "scale-down-canary", "scale-canary"}

SHAPES: dict[str, Policy] = {
    "bookinfo": make_policy(
        ApprovalStage(
            name="canary-ratio", params=(GateParam(name="canary-ratio", default=50, min=0, max=100),)
        ),
        CanaryStage(mode="manual", weight_param="canary-ratio"),
        ApprovalStage(name="full-switch"),
        PromoteStage(keep_previous=60),
        analysis=analysis(failure_limit=2),
        workload=MODEL,
    ),
    "steps-abtest": make_policy(
        ABTestStage(match=(Match(kind="header", name="end-user", value="jason"),), duration=30),
        CanaryStage(steps=(CanaryStep(20, 30), CanaryStep(50, 30))),
        PromoteStage(),
        analysis=analysis(),
        rollback=RollbackMode.ROLL_FORWARD,
        workload=replace(MODEL, keep_retired=0),
    ),
    "bluegreen-freeze": make_policy(
        BlueGreenStage(preview=30),
        PromoteStage(keep_previous=120),
        analysis=analysis(),
        rollback=RollbackMode.FREEZE,
        workload=replace(MODEL, keep_retired=2),
    ),
}


@dataclass
class Cluster:
    """The Deployments the effects made: name -> (image, running), and the route they give traffic to."""

    deployments: dict[str, tuple[str, bool]] = field(default_factory=dict)
    routes: RoutePlan = STABLE_ONLY
    versions: Routed | None = None

    def weight(self, workload: str) -> int:
        v, r = self.versions, self.routes
        if v is None or v.stable is None:
            return 100 if workload == FIRST else 0
        canary = r.canary + (100 if r.match else 0)
        return (r.stable if v.stable.workload == workload else 0) + (
            canary if v.canary is not None and v.canary.workload == workload else 0
        )

    def apply(self, effect: Effect) -> None:
        assert effect.kind not in PAIR_EFFECTS, f"1. pair-model effect {effect.kind} in the per-version model"
        slot = effect.slot
        if effect.kind == "deploy-version":
            assert slot is not None
            image, _ = self.deployments.get(slot.workload, (slot.image, False))
            assert image == slot.image, f"2. {slot.workload} runs {image}: re-imaged to {slot.image}"
            self.deployments[slot.workload] = (image, True)
        elif effect.kind in ("scale-down-version", "delete-version"):
            assert slot is not None
            assert self.weight(slot.workload) == 0, (
                f"4. {effect.kind} of {slot.workload} while it takes traffic"
            )
            if effect.kind == "delete-version":
                assert slot.owned and slot.workload != FIRST, f"5. deleted {slot.workload}, not graylane's"
                self.deployments.pop(slot.workload, None)
            elif slot.workload in self.deployments:
                self.deployments[slot.workload] = (self.deployments[slot.workload][0], False)
        elif effect.kind == "set-routes":
            assert (
                effect.routes is not None
                and effect.versions is not None
                and effect.versions.stable is not None
            )
            v, r = effect.versions, effect.routes
            kept = {s.subset for s in v.subsets}
            for slot, weight in ((v.stable, r.stable), (v.canary, r.canary + (100 if r.match else 0))):
                if slot is None:
                    assert weight == 0, f"3. {weight} % to no canary subset"
                    continue
                assert slot.subset in kept, f"3. subset {slot.subset} routed but not kept"
                if weight:
                    running = self.deployments.get(slot.workload, ("", False))[1]
                    assert running, f"3. {weight} % to {slot.workload}, which does not run"
            self.routes, self.versions = r, v


def check_state(state: AppState, cluster: Cluster) -> None:
    workloads = [s.workload for s in state.slots]
    assert len(set(workloads)) == len(workloads), f"6. a Deployment twice in the slots: {workloads}"
    if state.stable.image and state.slots:  # a state from the pair model has none until its first release
        assert FIRST in workloads, "6. the first Deployment left the slots"
        assert any(s.version == state.stable.version for s in state.slots), (
            "6. the stable version has no slot"
        )
    assert set(workloads) <= set(cluster.deployments), (
        f"6. slots {workloads}, cluster {set(cluster.deployments)}"
    )
    assert AppState.from_json(state.to_json()) == state


def _describe(e: Effect) -> str:
    if e.kind == "set-routes" and e.versions is not None and e.routes is not None:
        stable, canary = e.versions.stable, e.versions.canary
        return (
            f"routes {stable.subset if stable else '-'}:{e.routes.stable} {canary.subset if canary else '-'}:"
            f"{e.routes.canary}{' +match' if e.routes.match else ''}"
        )
    return f"{e.kind} {e.slot.workload if e.slot else ''}"


def play(run: Run, cluster: Cluster, event: Event, obs: Observation, apply: bool) -> None:
    out = decide(run.policy, run.state, event, run.now, obs)
    note(
        f"{type(event).__name__} {getattr(event, 'action', '')} {getattr(event, 'version', '')} -> "
        f"{[_describe(e) for e in out.effects]}; release {out.state.release and out.state.release.phase}"
    )
    for effect in out.effects:
        cluster.apply(effect)
    check_state(out.state, cluster)
    run.state = replace(out.state, pending=()) if apply else out.state


def begin(policy: Policy, stable: bool) -> tuple[Run, Cluster]:
    run = Run(policy, start(policy, stable))
    cluster = Cluster()
    if stable:  # a pair-model state before: the first Deployment runs the stable version
        cluster.deployments[FIRST] = (run.state.stable.image, True)
    else:  # the user's first Deployment runs what the first push will name
        from tests.unit.machine_helpers import version

        cluster.deployments[FIRST] = (version("v1").image, True)
    return run, cluster


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_version_subsets_invariants_hold_after_every_event(shape: str, data: st.DataObject) -> None:
    run, cluster = begin(SHAPES[shape], data.draw(st.booleans()))
    if not run.state.stable.image:
        from functions.core.events import ImagePushed
        from tests.unit.machine_helpers import APP, version

        play(
            run,
            cluster,
            ImagePushed(id="first", app=APP, target=version("v1"), tag="v1"),
            Observation(),
            True,
        )
    for _ in range(data.draw(st.integers(min_value=1, max_value=50))):
        event, obs = draw_step(data, run)
        play(run, cluster, event, obs, apply=data.draw(st.sampled_from((True, True, True, False))))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(
    max_examples=14,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=PHASES,
)
@given(data=st.data())
def test_version_subsets_releases_reach_the_end_under_the_invariants(shape: str, data: st.DataObject) -> None:
    run, cluster = begin(SHAPES[shape], True)
    for _ in range(data.draw(st.integers(min_value=5, max_value=60))):
        event, obs = happy_path(data, run)
        play(run, cluster, event, obs, apply=True)
    assert run.state.seq >= 1
