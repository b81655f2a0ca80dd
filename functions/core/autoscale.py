"""The canary's autoscaler follows its share of the traffic. Pure.

When the stable workload has a HorizontalPodAutoscaler, the Kubernetes workloads give the canary one too
(functions/providers/workloads/autoscaling.py): the stable's, pointed at the canary, with its bounds scaled
to the canary's share. decide() says when that share changes (a `scale-canary` effect with each weight
change: before the route when the canary's floor rises, after it otherwise); `canary_bounds` is the rule.
"""

from __future__ import annotations

import math
from typing import Any


def canary_bounds(min_replicas: int, max_replicas: int, share: int | None) -> tuple[int, int]:
    """(minReplicas, maxReplicas) of the canary's autoscaler for `share` % of the traffic.

    Both bounds of the stable's autoscaler scaled by the share, rounded up, at least 1 (an autoscaler needs
    minReplicas >= 1). `None` is a share nobody knows (a header, cookie or user-hash route sends whoever
    matches): the canary may then grow as far as the stable, from one replica.
    """
    lo, hi = max(1, min_replicas), max(1, max_replicas, min_replicas)
    if share is None:
        return 1, hi
    share = max(0, min(100, share))
    low = max(1, math.ceil(lo * share / 100))
    return low, max(low, math.ceil(hi * share / 100))


def _level(key: str) -> int:
    """How much of a floor a sized share puts under the canary: none yet (-1), a match route's (0), its share."""
    return -1 if key == "" else 0 if key == "match" else int(key)


def grows(sized: str, share: int | None) -> bool:
    """Does the canary's floor rise from what its autoscaler was last sized for (`sized`, Release.canary_share) to
    `share`? Then it is resized before the traffic moves (the scale-canary effect waits until the canary has
    the new minimum ready), else after the traffic moved away."""
    return (0 if share is None else share) > _level(sized)


def follow_share(tx: Any, share: int | None) -> None:
    """A scale-canary effect when the deployed canary's share of the traffic changed (`None`: a match route)."""
    rel = tx.release
    key = "match" if share is None else str(share)
    if not rel.canary_deployed or rel.canary_share == key or tx.policy.workload.per_version:
        return  # per-version: each version's Deployment is its own, no canary autoscaler follows a share
    tx.update(canary_share=key)
    tx.effect("scale-canary", weight=share)
