"""Which gates a `promote` command passes: one rule for the machine, which approves them, and for the front
doors (approvals, the console), which ask whether the requester may approve each of them."""

from __future__ import annotations

from collections.abc import Sequence

from functions.core.hooks import GATE_PREFIX
from functions.core.policy import ApprovalStage, FlagStage, PromoteStage, Stage
from functions.core.state import Release


def promote_target(stages: Sequence[Stage], rel: Release) -> int | None:
    """The index of the promote stage a `promote` jumps to: the first from the current stage on, if any."""
    return next((i for i in range(rel.stage, len(stages)) if isinstance(stages[i], PromoteStage)), None)


def skipped_by_promote(stages: Sequence[Stage], rel: Release | None) -> tuple[str, ...]:
    """The gates a `promote` of `rel` stands for: a wave gate being waited on (its `gate_next` is the current
    stage), then every approval stage up to the promote stage (none of them was passed yet). Empty when the
    promote skips nothing: no active release, a watch or a flag rollout ended early (the flag goes to every
    user), or no promote stage ahead."""
    if rel is None or not rel.active or rel.watching:
        return ()
    if rel.stage < len(stages) and isinstance(stages[rel.stage], FlagStage):
        if not rel.gate.startswith(GATE_PREFIX + "pre-rollout"):
            return ()
    target = promote_target(stages, rel)
    if target is None:
        return ()
    waited = (rel.gate,) if rel.gate and rel.gate_next == rel.stage else ()
    return waited + tuple(s.name for s in stages[rel.stage : target] if isinstance(s, ApprovalStage))
