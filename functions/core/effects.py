"""Effects: what decide() asks the outside world to do. Frozen values with deterministic ids.

The runner applies them in order through the provider interfaces; each is idempotent, so a redelivered
event or a repeated tick may apply one again without harm. Ordering matters (traffic back to stable
before the canary scales down), so the runner stops at the first effect that is not done yet.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.core.slots import Routed, Slot
from functions.core.values import value

EffectKind = Literal[
    "deploy-preview",
    "run-migration",
    "deploy-canary",
    "set-routes",
    "promote-stable",
    "scale-down-canary",
    "keep-warm",
    "set-protection",
    "notify",
    "load-test",
    "set-flag",
    "scale-canary",
    "hook",
    "git-write-back",
    "finalize-routes",  # a release ended: the router removes what it added for it (functions.runner)
    "deploy-version",  # per-version model: the version's own Deployment runs (created from `source`'s spec)
    "scale-down-version",  # per-version model: a retired version's Deployment at zero replicas
    "delete-version",  # per-version model: a Deployment graylane created, retired long enough, removed
    "deploy-baseline",  # a fresh baseline: the stable's image in a Deployment (and Service) of its own
    "remove-baseline",  # the baseline's Deployment and Service deleted (it left the route already)
]


@value
class RoutePlan:
    """Desired traffic: stable + canary (+ baseline) weights (sum 100) and the A/B rules sending matches to the
    canary. `baseline`: the fresh baseline's weight (functions/core/baseline.py), 0 without one. `mirror`: the
    share (percent) of the live requests also copied to the canary, its answers discarded (a mirror stage):
    only with all answered traffic on stable."""

    stable: int = 100
    canary: int = 0
    match: tuple[Match, ...] = ()
    salt: str = ""  # user-hash salt for this release
    baseline: int = 0
    mirror: int = 0

    def __post_init__(self) -> None:
        weights = (self.stable, self.canary, self.baseline)
        if not (all(0 <= w <= 100 for w in weights) and sum(weights) == 100):
            shown = "/".join(map(str, weights if self.baseline else weights[:2]))
            raise ValueError(f"route weights must be 0..100 and sum to 100, got {shown}")
        if not 0 <= self.mirror <= 100 or (self.mirror and (self.stable != 100 or self.match)):
            raise ValueError(
                f"a mirror share must be 0..100, with no live traffic on the canary, got mirror "
                f"{self.mirror} with {self.stable}/{self.canary} and {len(self.match)} rules"
            )

    @classmethod
    def mirrored(cls, percent: int) -> RoutePlan:
        """Every answer from stable, `percent` % of the requests copied to the canary."""
        return cls(mirror=percent)

    @classmethod
    def canary_at(cls, weight: int, match: tuple[Match, ...] = (), salt: str = "") -> RoutePlan:
        return cls(stable=100 - weight, canary=weight, match=match, salt=salt)

    def to_dict(self) -> dict[str, Any]:
        from functions.core.codec import to_plain

        return to_plain(self)


STABLE_ONLY = RoutePlan()


@value
class FlagPlan:
    """Desired exposure of one feature flag: `variant` for `percent` % of users, `off` for the others.

    A user is in when flagd's `fractional` puts MurmurHash3("<salt>:<targetingKey>") below `percent`
    (functions.core.targeting.flag_bucket); buckets are nested, so a user in at 5 % stays in at 25 %.
    """

    key: str
    variant: str = "on"
    off: str = "off"
    percent: int = 0
    salt: str = ""
    release: str = ""  # the release that set it
    cluster: str = ""  # the wave's cluster whose flag document holds it
    variants: tuple[tuple[str, Any], ...] = ()  # the variants of a flag graylane creates

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ValueError(f"a flag's percentage must be 0..100, got {self.percent}")


@value
class Protection:
    """Desired production protection on the app's route."""

    rate_limit: RateLimit | None = None
    circuit_breaker: CircuitBreaker | None = None


@value
class Effect:
    id: str  # "<release id>/<generation>/<index>-<kind>": deterministic, so replays are recognised
    kind: EffectKind
    cluster: str = ""  # wave's kube context; empty means the current one
    image: str = ""  # deploy-*, promote-stable, keep-warm; load-test: the image running hey
    version: str = ""
    routes: RoutePlan | None = None  # set-routes
    protection: Protection | None = None  # set-protection
    job: str = ""  # run-migration, load-test: Job name
    command: tuple[str, ...] = ()  # run-migration; load-test: the arguments of hey
    environment: str = ""  # deploy-preview
    namespace: str = ""  # deploy-preview: target namespace if not the app's
    workload: str = ""  # deploy-preview: target workload
    message: str = ""  # notify
    notice: dict[str, Any] = field(
        default_factory=dict
    )  # notify, hook: structured payload (transition, gate, ...)
    flag: FlagPlan | None = None  # set-flag
    weight: int | None = (
        None  # scale-canary: the canary's share of the traffic (None: unknown, a match route)
    )
    hook: str = ""  # hook: the name of the post-rollout hook called
    slot: Slot | None = None  # deploy-, scale-down-, delete-version: the version's Deployment
    source: str = ""  # deploy-version, deploy-preview, run-migration (per-version): the Deployment copied
    versions: Routed | None = None  # set-routes, set-protection (per-version): the subsets routed and kept
