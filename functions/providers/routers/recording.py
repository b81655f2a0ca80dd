"""The recording router: routes kept in memory (functions.providers.recording.RecordingRouter), for the
tests, the demo and `graylane serve` before a real router is configured. It can express everything and
has no series of its own: its analysis comes from the recording metrics, never from a built-in query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from functions.core.capabilities import FEATURES
from functions.core.policy import Policy
from functions.core.routing import Need, Option, Owned, Problem, Versions
from functions.providers.routers.base import Cluster, Router

NAME = "recording"
OPTIONS: tuple[Option, ...] = ()
CAPABILITIES = frozenset(FEATURES)
VERSION_SUBSETS = True  # workload.model per-version: a subset per version (functions/core/slots.py)
METRICS = None
OWNS: tuple[Owned, ...] = ()  # it writes nothing anybody else owns


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    return []


def measured_by(options: Mapping[str, Any]) -> str:
    return NAME  # measured by the recording analysis (no PromQL), so its templates are not "unmeasurable"


def versions(policy: Policy) -> Versions:
    nothing = (("__name__", "(?!)"),)  # no series: matches nothing
    return Versions(
        stable=nothing,
        canary=nothing,
        names={"stable": policy.stable_workload, "canary": policy.canary_workload},
    )


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> Router:
    from functions.providers.recording import RecordingRouter

    router: Router = RecordingRouter()
    return router
