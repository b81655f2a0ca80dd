"""Router interface: one module per traffic provider implements it (Flagger's pkg/router shape)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any, Protocol

from functions.core.effects import Protection, RoutePlan
from functions.core.policy import SessionAffinity
from functions.core.slots import Routed
from functions.core.values import value
from functions.errors import ConfigError


@value
class RouteTarget:
    """Which app's traffic to move: the policy's router options plus the workload names."""

    namespace: str
    app: str
    stable: str  # stable Service/backend name
    canary: str  # canary Service/backend name
    cluster: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    versions: Routed | None = None  # per-version model: the subsets stable and canary are, the subsets kept
    affinity: SessionAffinity | None = None  # spec.sessionAffinity: clients pinned per weight
    baseline: str = ""  # the fresh baseline's Service/backend (functions/core/baseline.py), "" without one


@value
class Cluster:
    """Where a router is built (a module's `build(settings, cluster)`): the cluster's name, its ApiClient
    (built on first use) and router option defaults the deployment supplies (the local stack's HAProxy
    admin socket)."""

    name: str = ""
    client: Callable[[], Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)

    def api_client(self, provider: str) -> Any:
        if self.client is None:
            raise ConfigError(
                f"router {provider} talks to a Kubernetes cluster, and these providers have none "
                f"(cluster {self.name or 'current'}); use GRAYLANE_PROVIDERS=kubernetes"
            )
        return self.client()


class Router(Protocol):
    def reconcile(self, target: RouteTarget) -> None:
        """Check the objects it routes on exist, creating them only when router option `create` is true
        (a missing one is a NotFound naming it); never changes weights (idempotent). The runner calls it
        before every set-routes."""

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        """Write the plan with a compare-and-swap; raises ConflictError if the object moved on."""

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        """Read the live object back."""

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        """What of the user's graylane meets on the route, read only: a rate limiter or circuit breaker already
        there, and what router option userProtection (keep, wrap or replace) does with it. Called by the runner
        when a release starts (its history and a notification) and by `graylane validate --live`. An object
        that does not exist says nothing (reconcile names it)."""

    def set_protection(self, target: RouteTarget, protection: Protection) -> tuple[str, ...] | None:
        """Set (or clear, for None fields) rate limit and circuit breaker where the provider can; returns what
        it kept of the user's instead (a limiter already on the route), for the runner to notify."""

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        """A release ended (the runner's finalize-routes effect, after traffic is back on stable): remove
        what graylane added for it (match routes, a canary Ingress) and return what it saw but does not own
        and leaves alone (a user's route still sending traffic to the canary). Idempotent."""
