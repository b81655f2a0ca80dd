"""A fresh baseline (Argo Rollouts' Experiments, Kayenta): the stable's image in a Deployment of its own, created
when the canary is, routed at the canary's weight, and what the comparison judges and the guard compare the
canary with. Pure; decide() calls these.

A long-running stable differs from any new pod in ways that have nothing to do with the release: warm caches,
JIT-compiled code, connection pools, a heap that has settled, days of uptime. Comparing a fresh canary with it
blames the canary for being fresh. The baseline is equally fresh, runs the stable's image at the canary's size
and takes the canary's share of the traffic, so canary vs baseline differs by the release only.

- `spec.baseline: true` turns it on for every canary stage, a canary stage's `baseline` for that stage;
- the release's first canary deploy also deploys the baseline (`deploy-baseline`: the stable's image, the
  canary Deployment's labels scheme with track `baseline`, a Service of its own; functions.providers.workloads);
- in a canary stage with a baseline the route splits three ways: the canary at its weight `w` (capped by
  adaptive exposure like any other), the baseline at `min(w, 100 - w)`, the stable the rest; an A/B test's
  match route, a blue-green preview and a step at 100 % carry no baseline;
- while the baseline is routed, the standard metric templates read the baseline's series where they read the
  stable's (functions.providers.metrics.templates.target): comparison judges, the sequential judges and the
  always-on guard compare canary vs baseline;
- promotion, rollback, abort and a superseding release take the baseline out of the route first and then remove
  its Deployment and Service (`remove-baseline`, idempotent); finalize-routes removes any baseline entry left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.core.effects import RoutePlan
from functions.core.policy import CanaryStage, Match, Policy
from functions.core.state import Release

if TYPE_CHECKING:
    from functions.core.tx import Tx


def stage_has(policy: Policy, index: int) -> bool:
    """Whether stage `index` is a canary stage that runs with a baseline."""
    if not 0 <= index < len(policy.stages):
        return False
    stage = policy.stages[index]
    if not isinstance(stage, CanaryStage):
        return False
    return policy.baseline if stage.baseline is None else stage.baseline


def uses(policy: Policy) -> bool:
    """Whether any stage of the policy runs with a baseline (then the release deploys one)."""
    return any(stage_has(policy, i) for i in range(len(policy.stages)))


def weight_for(canary: int) -> int:
    """The baseline's weight beside a canary at `canary` %: the same, as far as the stable's share allows."""
    return max(0, min(canary, 100 - canary))


def plan(policy: Policy, rel: Release, weight: int, match: tuple[Match, ...], salt: str) -> RoutePlan:
    """The route for a canary at `weight`: three ways while the release's baseline is routed in this stage."""
    if not (rel.baseline_deployed and not match and stage_has(policy, rel.stage)):
        return RoutePlan.canary_at(weight, match, salt=salt)
    b = weight_for(weight)
    return RoutePlan(stable=100 - weight - b, canary=weight, baseline=b, match=match, salt=salt)


def compared(policy: Policy, rel: Release | None) -> bool:
    """Whether the canary is compared with the baseline (not the stable) now: the baseline runs, the current
    stage routes it, the release is not promoted (after promotion there is no canary to compare)."""
    return (
        rel is not None
        and rel.baseline_deployed
        and not rel.promoted
        and not rel.watching
        and stage_has(policy, rel.stage)
    )


def deploy(tx: Tx) -> None:
    """With the canary: the baseline's Deployment (stable image, canary's size) and Service, fresh."""
    rel = tx.release
    if rel.baseline_deployed or not uses(tx.policy) or not rel.origin.image:
        return
    tx.effect("deploy-baseline", image=rel.origin.image, version=rel.origin.version)
    tx.update(baseline_deployed=True, baseline_weight=0)
    tx.record(
        "baseline",
        reason=f"baseline {tx.policy.baseline_workload} deployed fresh with the stable's image "
        f"{rel.origin.image}: the canary is compared with it",
    )


def remove(tx: Tx) -> None:
    """After traffic left it (the caller routed the stable first): the baseline's Deployment and Service go."""
    rel = tx.release
    if not rel.baseline_deployed:
        return
    tx.effect("remove-baseline", version=rel.origin.version)
    tx.update(baseline_deployed=False, baseline_weight=0)
    tx.record("baseline", reason=f"baseline {tx.policy.baseline_workload} removed")
