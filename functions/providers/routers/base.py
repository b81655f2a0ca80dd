"""Router interface: one module per traffic provider implements it (Flagger's pkg/router shape)."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Protocol

from functions.core.effects import Protection, RoutePlan
from functions.core.values import value


@value
class RouteTarget:
    """Which app's traffic to move: the policy's router options plus the workload names."""

    namespace: str
    app: str
    stable: str  # stable Service/backend name
    canary: str  # canary Service/backend name
    cluster: str = ""
    options: dict[str, Any] = field(default_factory=dict)


class Router(Protocol):
    def reconcile(self, target: RouteTarget) -> None:
        """Create the route objects if missing; never changes weights (idempotent)."""

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        """Write the plan with a compare-and-swap; raises ConflictError if the object moved on."""

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        """Read the live object back."""

    def set_protection(self, target: RouteTarget, protection: Protection) -> None:
        """Set (or clear, for None fields) rate limit and circuit breaker where the provider can."""

    def finalize(self, target: RouteTarget) -> None:
        """Return all traffic to stable and remove what reconcile created."""
