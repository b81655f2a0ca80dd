"""Recording providers: in-memory routers, workloads, notifiers and metrics that remember every call.

Used by tests and by `graylane serve` without a cluster until a real provider is configured. They
obey the same contracts as the real ones: set_routes can be read back, a workload can report NotReady,
and any call can be told to fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions.core.counters import Totals
from functions.core.effects import STABLE_ONLY, FlagPlan, Protection, RoutePlan
from functions.core.events import MetricSample
from functions.core.policy import Policy
from functions.core.slots import Routed, Slot
from functions.core.state import Release
from functions.errors import EffectFailed, NotReady, ProviderUnavailable
from functions.providers.routers.base import RouteTarget
from functions.providers.workloads.base import WorkloadTarget


@dataclass
class CallLog:
    calls: list[tuple[str, str, Any]] = field(default_factory=list)  # (verb, "cluster/ns/name", argument)
    failures: dict[str, int] = field(default_factory=dict)  # verb -> how many next calls fail
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, verb: str, key: str, arg: Any = None) -> None:
        with self.lock:
            if self.failures.get(verb, 0) > 0:
                self.failures[verb] -= 1
                raise ProviderUnavailable(f"injected failure: {verb} {key}")
            self.calls.append((verb, key, arg))

    def fail(self, verb: str, times: int = 1) -> None:
        with self.lock:
            self.failures[verb] = self.failures.get(verb, 0) + times

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]


def _key(cluster: str, namespace: str, name: str) -> str:
    return f"{cluster}/{namespace}/{name}"


class RecordingRouter:
    def __init__(self, log: CallLog | None = None) -> None:
        self.log = log or CallLog()
        self.routes: dict[str, RoutePlan] = {}
        self.protection: dict[str, Protection] = {}
        self.versions: dict[str, Routed] = {}  # per-version model: the subsets the routes are between
        self.said: dict[str, tuple[str, ...]] = {}  # verb (survey, set_protection, finalize) -> what it says

    def reconcile(self, target: RouteTarget) -> None:
        self.routes.setdefault(_key(target.cluster, target.namespace, target.app), STABLE_ONLY)

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        key = _key(target.cluster, target.namespace, target.app)
        self.log.call("set_routes", key, plan)
        self.routes[key] = plan
        if target.versions is not None:
            self.versions[key] = target.versions

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        key = _key(target.cluster, target.namespace, target.app)
        self.log.call("get_routes", key)
        return self.routes.get(key, STABLE_ONLY)

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        self.log.call("survey", _key(target.cluster, target.namespace, target.app))
        return self.said.get("survey", ())

    def set_protection(self, target: RouteTarget, protection: Protection) -> tuple[str, ...]:
        key = _key(target.cluster, target.namespace, target.app)
        self.log.call("set_protection", key, protection)
        self.protection[key] = protection
        return self.said.get("set_protection", ())

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        key = _key(target.cluster, target.namespace, target.app)
        self.log.call("finalize", key)
        self.routes[key] = STABLE_ONLY
        return self.said.get("finalize", ())


class RecordingWorkloads:
    """Deployments as a dict; `not_ready` names images that report NotReady `n` more times."""

    def __init__(self, log: CallLog | None = None) -> None:
        self.log = log or CallLog()
        self.images: dict[str, str] = {}  # key -> image ("" = scaled to zero)
        self.not_ready: dict[str, int] = {}
        self.load_tests: dict[str, tuple[str, ...]] = {}  # key -> hey arguments, in the order started
        self.shares: dict[str, int | None] = {}  # canary key -> the share its autoscaler was sized for
        self.running: dict[str, str] = {}  # per-version model: key -> the image a version's Deployment runs

    def _run(self, verb: str, key: str, image: str) -> None:
        self.log.call(verb, key, image)
        self.images[key] = image
        if self.not_ready.get(image, 0) > 0:
            self.not_ready[image] -= 1
            raise NotReady(f"{key} is rolling out {image}")

    def deploy_canary(self, target: WorkloadTarget, image: str) -> None:
        self._run("deploy_canary", _key(target.cluster, target.namespace, target.canary), image)

    def promote_stable(self, target: WorkloadTarget, image: str) -> None:
        self._run("promote_stable", _key(target.cluster, target.namespace, target.stable), image)

    def scale_down_canary(self, target: WorkloadTarget) -> None:
        self._run("scale_down_canary", _key(target.cluster, target.namespace, target.canary), "")

    def deploy_baseline(self, target: WorkloadTarget, image: str) -> None:
        self._run("deploy_baseline", _key(target.cluster, target.namespace, target.baseline), image)

    def remove_baseline(self, target: WorkloadTarget) -> None:
        key = _key(target.cluster, target.namespace, target.baseline)
        self.log.call("remove_baseline", key, "")
        self.images.pop(key, None)

    def scale_canary(self, target: WorkloadTarget, share: int | None) -> None:
        key = _key(target.cluster, target.namespace, target.canary)
        self.log.call("scale_canary", key, share)
        self.shares[key] = share

    def deploy_preview(
        self, target: WorkloadTarget, image: str, environment: str, namespace: str, workload: str
    ) -> None:
        name = workload or f"{target.app}-{environment}"
        self._run("deploy_preview", _key(target.cluster, namespace or target.namespace, name), image)

    def run_job(self, target: WorkloadTarget, name: str, image: str, command: tuple[str, ...]) -> None:
        self._run("run_job", _key(target.cluster, target.namespace, name), image)

    def start_load_test(self, target: WorkloadTarget, name: str, image: str, args: tuple[str, ...]) -> None:
        key = _key(target.cluster, target.namespace, name)
        if key not in self.load_tests:
            self.load_tests[key] = tuple(args)
            self.log.call("start_load_test", key, tuple(args))

    # per-version model: `images` holds every version's Deployment ("" = scaled to zero, absent = deleted)
    def deploy_version(self, target: WorkloadTarget, slot: Slot, source: str) -> None:
        key = _key(target.cluster, target.namespace, slot.workload)
        spec = self.running.get(key, slot.image)  # a Deployment keeps its image; the user's is never changed
        if slot.owned and spec != slot.image:
            raise EffectFailed(f"{key} runs {spec}, not {slot.image}: a version's Deployment keeps its image")
        self.running[key] = spec
        self._run("deploy_version", key, spec)

    def scale_down_version(self, target: WorkloadTarget, slot: Slot) -> None:
        self._run("scale_down_version", _key(target.cluster, target.namespace, slot.workload), "")

    def delete_version(self, target: WorkloadTarget, slot: Slot) -> None:
        key = _key(target.cluster, target.namespace, slot.workload)
        self.log.call("delete_version", key, slot.image)
        if slot.owned:
            self.images.pop(key, None)
            self.running.pop(key, None)


class RecordingFlags:
    """Flag documents in memory (a policy whose spec.flags names a file gets the real file store instead)."""

    def __init__(self, log: CallLog | None = None) -> None:
        self.log = log or CallLog()
        self.plans: dict[tuple[str, str], FlagPlan] = {}  # (cluster, key) -> what the document serves

    def set_flag(self, plan: FlagPlan) -> None:
        self.log.call("set_flag", f"{plan.cluster}/{plan.key}", plan.percent)
        self.plans[(plan.cluster, plan.key)] = plan

    def live(self, plans: tuple[FlagPlan, ...]) -> tuple[FlagPlan, ...]:
        return tuple(p for p in plans if self.plans.get((p.cluster, p.key)) == p)


class RecordingNotifier:
    def __init__(self, log: CallLog | None = None) -> None:
        self.log = log or CallLog()
        self.notices: list[dict[str, Any]] = []

    def send(self, notice: dict[str, Any]) -> None:
        self.log.call("notify", str(notice.get("app", "")), notice.get("type"))
        self.notices.append(notice)


Measure = Callable[[Policy, Release], tuple[MetricSample, ...]]


def healthy(policy: Policy, _: Release) -> tuple[MetricSample, ...]:
    """Every analysis metric passes its own threshold with plenty of traffic."""
    assert policy.analysis is not None
    out = []
    for m in policy.analysis.metrics:
        value = m.min if m.min is not None else (m.max if m.max is not None else 1.0)
        out.append(
            MetricSample(
                name=m.name,
                value=value,
                stable_value=value,
                canary_requests=10_000,
                canary_errors=0,
                stable_requests=10_000,
                stable_errors=0,
            )
        )
    return tuple(out)


class RecordingProviders:
    """One router, workloads, notifier and measure function shared by every app (see runner.Providers)."""

    def __init__(
        self, measure: Measure = healthy, totals: Callable[[Policy, Release], Totals] | None = None
    ) -> None:
        self.log = CallLog()
        self.router_ = RecordingRouter(self.log)
        self.workloads_ = RecordingWorkloads(self.log)
        self.notifier_ = RecordingNotifier(self.log)
        self.flags_ = RecordingFlags(self.log)
        self.measure_fn = measure
        self.totals_fn = totals  # the guard's raw counters; None: this provider cannot read them

    def router(self, policy: Policy, cluster: str) -> RecordingRouter:
        return self.router_

    def workloads(self, policy: Policy, cluster: str) -> RecordingWorkloads:
        return self.workloads_

    def notifier(self, policy: Policy) -> RecordingNotifier:
        return self.notifier_

    def flags(self, policy: Policy, cluster: str) -> Any:
        if policy.flags is not None and policy.flags.file:
            from functions.providers.flags import flag_store

            return flag_store(policy.flags, policy.namespace)
        return self.flags_

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        self.log.call("measure", policy.app, release.id)
        return self.measure_fn(policy, release)

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        """The batched form a tick sweep uses: one call for every release that wants analysis."""
        self.log.call("measure_many", "", [r.id for _, r in pairs])
        return {r.id: self.measure_fn(p, r) for p, r in pairs}

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Totals]:
        if self.totals_fn is None:
            return {}
        self.log.call("totals_many", "", [r.id for _, r in pairs])
        return {r.id: self.totals_fn(p, r) for p, r in pairs}
