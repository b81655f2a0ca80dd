"""The runner every function shares: load -> decide -> CAS save -> apply effects -> emit.

Only this module handles dedupe, compare-and-swap retries, effect idempotency and the choice between
acknowledging an event and asking for redelivery (by raising Retry). Functions and providers never
loop or sleep to retry.

Crash safety: the desired state, with its pending effects, is saved before any effect is applied; an
ack write then moves applied effect ids out of `pending`. A crash between the two leaves effects
pending, and the next event or tick for the app applies them again (every effect is idempotent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from functions.core.baseline import uses as uses_baseline
from functions.core.counters import Totals
from functions.core.effects import Effect, FlagPlan, RoutePlan
from functions.core.events import (
    RELEASE_STARTED,
    Command,
    EffectFailure,
    HookResult,
    ImagePushed,
    MetricSample,
    Observation,
    Tick,
)
from functions.core.guard import wants_totals
from functions.core.hooks import HookCall, hook_calls
from functions.core.machine import decide, wants_analysis
from functions.core.policy import Policy
from functions.core.routing import text_option
from functions.core.slots import Routed, Slot
from functions.core.state import (
    MAX_APPLIED,
    MAX_HISTORY,
    AppState,
    HistoryEntry,
    Release,
    Version,
    bounded,
    iso,
)
from functions.errors import (
    ConflictError,
    EffectFailed,
    GraylaneError,
    NotFound,
    NotReady,
    ProviderUnavailable,
    Reject,
    Retry,
)
from functions.observability import logs, metrics
from functions.providers.routers.base import RouteTarget
from functions.providers.workloads.base import WorkloadTarget

if TYPE_CHECKING:  # only for the protocols: the notifier package is heavy and off the cold path
    from cloudevents.http import CloudEvent

    from functions.core.events import Emitted, Event
    from functions.providers.notifiers.base import Notifier
    from functions.providers.routers.base import Router
    from functions.providers.stores.base import StateStore
    from functions.providers.workloads.base import Workloads

log = logging.getLogger("graylane.runner")
Loaded = tuple[AppState, str | None]  # a state and the store's version of it


class PolicySource(Protocol):
    def get(self, app: str) -> Policy: ...
    def for_image(self, repository: str, tag: str) -> Policy | None: ...
    def all(self) -> list[Policy]: ...


class Providers(Protocol):
    def router(self, policy: Policy, cluster: str) -> Router: ...
    def workloads(self, policy: Policy, cluster: str) -> Workloads: ...
    def notifier(self, policy: Policy) -> Notifier: ...
    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]: ...


class Bus(Protocol):
    def publish(self, event: CloudEvent) -> None: ...


class EventsRecorder(Protocol):  # e.g. functions.observability.kube_events.KubeEventRecorder; never raises
    def record_emitted(self, policy: Policy, state: AppState, emitted: tuple[Emitted, ...]) -> object: ...


@dataclass
class Outcome:
    app: str
    event_id: str
    status: str  # transitioned | unchanged | duplicate | ignored | rejected
    applied: list[str] = field(default_factory=list)
    pending: int = 0
    emitted: list[str] = field(default_factory=list)
    reason: str = ""


def utcnow() -> datetime:
    return datetime.now(UTC)


def route_target(policy: Policy, cluster: str, versions: Routed | None = None) -> RouteTarget:
    """Where the policy's traffic goes; per-version model: between the Deployments and subsets of `versions`."""
    stable, canary = policy.stable_workload, policy.canary_workload
    if versions is not None and versions.stable is not None:
        stable, canary = versions.stable.workload, versions.canary.workload if versions.canary else ""
    return RouteTarget(
        namespace=policy.namespace,
        app=policy.name,
        stable=stable,
        canary=canary,
        cluster=cluster,
        options=policy.router.options,
        versions=versions,
        affinity=policy.session_affinity,
        baseline=policy.baseline_workload if uses_baseline(policy) else "",
    )


def workload_target(policy: Policy, cluster: str, stable: str = "") -> WorkloadTarget:
    """The policy's workloads; `stable` names the Deployment copied from instead (per-version model)."""
    w = policy.workload
    return WorkloadTarget(
        namespace=policy.namespace,
        app=policy.name,
        stable=stable or policy.stable_workload,
        canary=policy.canary_workload,
        container=w.container,
        replicas=w.replicas,
        cluster=cluster,
        version_label=w.version_label if w.per_version else "",
        baseline=policy.baseline_workload if uses_baseline(policy) else "",
        service=text_option(policy.router.options, "stableService", policy.stable_workload),
    )


class _Sweep(threading.local):
    """Per thread, during one sweep (a Tick for every app): the states loaded for it and the samples and
    counters measured in one batch, each used once by its app's first attempt; empty outside a sweep."""

    def __init__(self) -> None:
        self.states: dict[str, Loaded] = {}
        self.samples: dict[str, tuple[MetricSample, ...]] = {}
        self.totals: dict[str, Totals] = {}
        self.measured_at = datetime.min.replace(tzinfo=UTC)


class Runner:
    def __init__(
        self,
        store: StateStore,
        policies: PolicySource,
        providers: Providers,
        bus: Bus | None = None,
        clock: Callable[[], datetime] = utcnow,
        attempts: int = 12,
        source: str = "/graylane/runner",
        events_recorder: EventsRecorder | None = None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.providers = providers
        self.bus = bus
        self.clock = clock
        self.attempts = attempts
        self.source = source
        self._sweep = _Sweep()
        self._heard = threading.local()  # per cycle: what the routers said, for the release's history
        self.events_recorder = events_recorder

    # -- entry points ------------------------------------------------------------------------------
    def handle_cloudevent(self, cloud_event: CloudEvent, expect: tuple[str, ...] = ()) -> list[Outcome]:
        """Parse and handle one CloudEvent. A malformed event is acknowledged (logged), never retried."""
        from functions.catalog import to_domain

        try:
            if expect and cloud_event["type"] not in expect:
                raise Reject(f"type {cloud_event['type']} is not handled here; expected {', '.join(expect)}")
            event = to_domain(cloud_event)
        except Reject as err:
            log.warning("rejected event %s: %s", _attr(cloud_event, "id"), err)
            return [
                Outcome(
                    app=_attr(cloud_event, "subject"),
                    event_id=_attr(cloud_event, "id"),
                    status="rejected",
                    reason=str(err),
                )
            ]
        return self.handle(event)

    def handle(self, event: Event) -> list[Outcome]:
        if isinstance(event, Tick) and not event.app:
            apps = self._apps_with_state()
            self._sweep.states, self._sweep.samples, self._sweep.totals = self._premeasure(apps)
            try:
                return [self.handle(replace(event, app=app))[0] for app in apps]
            finally:
                self._sweep.states, self._sweep.samples, self._sweep.totals = {}, {}, {}
        policy = self._policy_for(event)
        if policy is None:
            return [
                Outcome(
                    app=getattr(event, "app", ""),
                    event_id=event.id,
                    status="ignored",
                    reason="no policy matches this event",
                )
            ]
        if isinstance(event, ImagePushed) and event.app != policy.app:
            event = replace(event, app=policy.app)
        with logs.log_context(event_id=event.id, app=policy.app, event_type=event.type), metrics.CYCLE.time():
            outcome = self._process(policy, event)
            log.info(
                "%s %s: %s",
                event.type,
                policy.app,
                outcome.status,
                extra={"status": outcome.status, "emitted": outcome.emitted, "pending": outcome.pending},
            )
        return [outcome]

    # -- the cycle --------------------------------------------------------------------------------
    def _process(self, policy: Policy, event: Event) -> Outcome:
        app = policy.app
        for _ in range(self.attempts):
            state, version = self._load(app)
            logs.bind(correlation_id=state.release.id if state.release else None)
            metrics.release_seen(app, state.release)
            if event.id in state.seen:
                outcome = Outcome(app=app, event_id=event.id, status="duplicate")
                return self._apply_pending(
                    policy, state, outcome, version
                )  # heal a crash after the first save
            now = self.clock()
            # observed afresh on every attempt: after a conflict the state moved on (another tick may have
            # judged this interval already), and what was measured against the old state is stale
            observation = self._observe(policy, state, event, now)
            started = time.perf_counter()
            decision = decide(policy, state, event, now, observation)
            metrics.observe_decision(time.perf_counter() - started)
            if decision.state is state:
                outcome = Outcome(app=app, event_id=event.id, status="unchanged")
                self._emit(policy, state, decision.events, f"{event.id}/{app}")
                return self._apply_pending(policy, state, outcome, version)
            try:
                saved_version: str | None = self.store.save(app, decision.state.to_json(), version)
            except ConflictError:
                continue  # someone else moved the state on: reload and decide again
            except ProviderUnavailable as err:
                if not self._landed(app, event.id):
                    log.warning("saving %s failed (%s); retrying", app, err)
                    continue
                saved_version = None  # landed, but its version is unknown
            logs.bind(correlation_id=decision.state.release.id if decision.state.release else None)
            metrics.observe_saved(policy, state, decision.state)
            outcome = Outcome(app=app, event_id=event.id, status="transitioned")
            outcome.emitted = self._emit(
                policy,
                decision.state,
                decision.events,
                f"{decision.state.release.id if decision.state.release else app}/{decision.state.generation}",
            )
            if self.events_recorder is not None:
                self.events_recorder.record_emitted(policy, decision.state, decision.events)
            if RELEASE_STARTED in outcome.emitted and decision.state.release is not None:
                self._survey(policy, decision.state, decision.state.release)
            return self._apply_pending(policy, decision.state, outcome, saved_version)
        raise Retry(f"state of {app} kept changing under {self.attempts} attempts; redeliver {event.id}")

    def _premeasure(
        self, apps: list[str]
    ) -> tuple[dict[str, Loaded], dict[str, tuple[MetricSample, ...]], dict[str, Totals]]:
        """One batched measurement for every release of the sweep that wants analysis (one query per metric
        and router, not one per release), and the states loaded for it, reused by each app's first attempt."""
        measure_many = getattr(self.providers, "measure_many", None)
        if measure_many is None:
            return {}, {}, {}
        states: dict[str, Loaded] = {}
        pairs: list[tuple[Policy, Release]] = []
        guarded: list[tuple[Policy, Release]] = []
        now = self.clock()
        self._sweep.measured_at = now
        for app in apps:
            try:
                policy = self.policies.get(app)
                states[app] = self._load(app)
            except (NotFound, Retry, GraylaneError):
                continue
            state = states[app][0]
            if state.release is not None and wants_analysis(policy, state, now):
                pairs.append((policy, state.release))
            if state.release is not None and wants_totals(policy, state):
                guarded.append((policy, state.release))
        totals: dict[str, Totals] = {}
        totals_many = getattr(self.providers, "totals_many", None)
        if guarded and totals_many is not None:
            try:
                totals = totals_many(guarded)
            except GraylaneError as err:  # each release then reads its own (or sees them unavailable)
                log.warning("batched counters of %d releases failed: %s", len(guarded), err)
        if not pairs:
            return states, {}, totals
        try:
            return states, measure_many(pairs), totals
        except GraylaneError as err:  # each release then measures (and fails) on its own: inconclusive
            log.warning("batched measurement of %d releases failed: %s", len(pairs), err)
            return states, {}, totals

    def _load(self, app: str) -> Loaded:
        preloaded = self._sweep.states.pop(app, None)
        if preloaded is not None:  # loaded moments ago by the sweep; a stale version only costs a CAS retry
            return preloaded
        try:
            doc, version = self.store.load(app)
        except (ProviderUnavailable, ConflictError) as err:  # transient: let the broker redeliver
            raise Retry(f"cannot load state of {app}: {err}") from err
        return (AppState.from_json(doc) if doc else AppState(app=app)), version

    def _landed(self, app: str, event_id: str) -> bool:
        """After an unknown write outcome: did our decision (or a twin's) reach the store?"""
        try:
            state, _ = self._load(app)
        except Retry:
            return False
        return event_id in state.seen

    def _observe(self, policy: Policy, state: AppState, event: Event, now: datetime) -> Observation:
        """What the runner looks at before deciding. On a tick: the metrics an analysis is due for, the guard's
        counters, the live routes and flags of an active release and the answers of the hooks it asks; on an
        event that may start a canary, the counters only (the guard's baseline); else nothing."""
        if not isinstance(event, Tick):
            return self._baseline(policy, state, event, now)
        rel = state.release
        metrics, measured_at = None, ""
        if rel is not None and wants_analysis(policy, state, now):
            metrics, measured_at = self._measure(policy, rel, now)
        totals = self._totals(policy, rel, now) if rel is not None and wants_totals(policy, state) else None
        cluster = (
            policy.waves[rel.wave].cluster
            if rel is not None and policy.waves and rel.wave < len(policy.waves)
            else ""
        )
        active = rel is not None and rel.active
        routes = self._live_routes(policy, state, cluster) if active else None
        calls = hook_calls(policy, state, now, event.id)
        hooks = self._ask_hooks(policy, calls) if calls else None
        flags = self._live_flags(policy, state, rel, cluster) if rel is not None and rel.active else None
        return Observation(
            metrics=metrics,
            routes=routes,
            measured_at=measured_at,
            release=rel.id if metrics is not None and rel is not None else "",
            totals=totals,
            hooks=hooks,
            flags=flags,
        )

    def _baseline(self, policy: Policy, state: AppState, event: Event, now: datetime) -> Observation:
        """An event that may start a canary (a push, an approve, a resume): its counters are the guard's
        baseline, read with the event, so the first tick already counts the canary's first requests."""
        starts = (
            isinstance(event, ImagePushed)
            or isinstance(event, Command)
            and event.action in ("approve", "resume")
        )
        if not starts or not wants_totals(policy, state, tick=False):
            return Observation()
        key = state.release or Release(
            id=f"{policy.name}-next", seq=0, target=Version(), origin=Version(), started_at=""
        )
        return Observation(totals=self._totals(policy, key, now))

    def _live_routes(self, policy: Policy, state: AppState, cluster: str) -> RoutePlan | None:
        """The routes read back from the router; None while a write of them is pending, or when unreadable."""
        if any(e.kind == "set-routes" for e in state.pending):
            return None
        try:
            target = route_target(policy, cluster, state.routed if policy.workload.per_version else None)
            return self.providers.router(policy, cluster).get_routes(target)
        except GraylaneError as err:
            log.warning("reading routes of %s failed: %s", policy.app, err)
            return None

    def _live_flags(
        self, policy: Policy, state: AppState, rel: Release, cluster: str
    ) -> tuple[FlagPlan, ...] | None:
        """The release's flags in `cluster` as read back from their documents; None when it has none there,
        while a write of them is pending, or when unreadable."""
        mine = tuple(p for p in state.flags if p.release == rel.id and p.cluster == cluster)
        if not mine or any(e.kind == "set-flag" for e in state.pending):
            return None
        try:
            live: tuple[FlagPlan, ...] = self._flags(policy, cluster).live(mine)
            return live
        except GraylaneError as err:
            log.warning("reading flags of %s failed: %s", policy.app, err)
            return None

    def _totals(self, policy: Policy, rel: Release, now: datetime) -> Totals | None:
        """The canary's raw counters for the guard, stamped with when they were read (the sweep's batch is used
        once, like its samples); None when no provider can read them."""
        batched = self._sweep.totals.pop(rel.id, None)
        if batched is not None:
            return replace(batched, read_at=iso(self._sweep.measured_at))
        read = getattr(self.providers, "totals_many", None)
        if read is None:
            return None
        try:
            totals = read([(policy, rel)]).get(rel.id)
        except GraylaneError as err:  # unreachable metrics: the guard learns nothing this tick
            return Totals(status="unavailable", detail=str(err))
        return replace(totals, read_at=iso(now)) if totals is not None else None

    def _ask_hooks(self, policy: Policy, calls: tuple[HookCall, ...]) -> tuple[HookResult, ...]:
        """The hooks decide() asks about (answered no when they cannot be called at all)."""
        try:
            return tuple(self._hooks(policy).ask(calls))
        except GraylaneError as err:
            return tuple(
                HookResult(name=c.name, type=c.type, point=c.point, ok=False, detail=str(err), id=c.id)
                for c in calls
            )

    # -- the release's other providers: from the providers when they offer them, else the defaults ----------
    def _flags(self, policy: Policy, cluster: str) -> Any:
        get = getattr(self.providers, "flags", None)
        if get is not None:
            return get(policy, cluster)
        from functions.providers.flags import flag_store

        return flag_store(policy.flags, policy.namespace)

    def _hooks(self, policy: Policy) -> Any:
        get = getattr(self.providers, "hooks", None)
        if get is not None:
            return get(policy)
        from functions.providers.hooks import HttpHooks

        return HttpHooks(policy)

    def _gitops(self, policy: Policy) -> Any:
        get = getattr(self.providers, "gitops", None)
        if get is not None:
            return get(policy)
        from functions.providers.gitops.git import GitWriter

        return GitWriter(policy)

    def _measure(self, policy: Policy, rel: Release, now: datetime) -> tuple[tuple[MetricSample, ...], str]:
        """The samples of `rel` and when they were measured: the sweep's batch (used once: a retry after a
        conflict measures again), or one measurement now."""
        batched = self._sweep.samples.pop(rel.id, None)
        if batched is not None:
            return batched, iso(self._sweep.measured_at)
        try:
            return self.providers.measure(policy, rel), iso(now)
        except GraylaneError as err:  # unreachable metrics are inconclusive, never a pass
            assert policy.analysis is not None
            return tuple(
                MetricSample(name=m.name, status="unavailable", detail=str(err))
                for m in policy.analysis.metrics
            ), iso(now)

    # -- effects ------------------------------------------------------------------------------------
    def _apply_pending(
        self, policy: Policy, state: AppState, outcome: Outcome, version: str | None
    ) -> Outcome:
        heard: list[HistoryEntry] = self._heard.__dict__.pop("entries", [])  # the release start's survey
        self._heard.entries = heard
        try:
            return self._apply_effects(policy, state, outcome, version, heard)
        finally:
            self._heard.entries = []

    def _apply_effects(self, policy: Policy, state: AppState, outcome: Outcome, version: str | None,
                       heard: list[HistoryEntry]) -> Outcome:  # fmt: skip
        done: list[str] = []
        failures: list[EffectFailure] = []
        git_waits = (
            False  # a write-back that is not done holds the later ones (Git must end at the last version)
        )
        for effect in state.pending:
            if effect.kind == "git-write-back" and git_waits:
                continue
            try:
                self.apply(policy, effect)
            except (NotReady, ProviderUnavailable, ConflictError, GraylaneError) as err:
                metrics.effect(effect.kind, "not-ready" if isinstance(err, NotReady) else "failed")
                if effect.kind in (
                    "notify",
                    "hook",
                ):  # a notifier or post-rollout hook that is down blocks nothing
                    log.warning(
                        "%s %s dropped: %s",
                        "notification" if effect.kind == "notify" else "post-rollout hook",
                        effect.id,
                        err,
                    )
                    done.append(effect.id)
                    continue
                if isinstance(err, EffectFailed):
                    failures.append(
                        EffectFailure(
                            id=f"{effect.id}/failed",
                            app=policy.app,
                            effect=effect.id,
                            kind=effect.kind,
                            reason=str(err),
                        )
                    )
                log.info("effect %s not done: %s", effect.id, err)
                if (
                    effect.kind == "git-write-back"
                ):  # Git being down never holds a release up: later ticks retry
                    git_waits = True
                    continue
                break  # order matters: later effects wait for this one
            metrics.effect(effect.kind, "applied")
            done.append(effect.id)
        outcome.applied = done
        outcome.pending = len(state.pending) - len(done)
        if done or heard:
            self._ack(policy.app, done, state if version is not None else None, version, heard)
        for failed in failures:  # retrying cannot help: let the machine fail the release (its own cycle)
            self._process(policy, failed)
            outcome.reason = f"{failed.kind} failed for good: {failed.reason}"
        return outcome

    def apply(self, policy: Policy, effect: Effect) -> None:
        """Apply one effect (idempotent) and verify it where it can be read back."""
        cluster = effect.cluster
        if effect.kind == "set-routes":
            assert effect.routes is not None
            router, target = (
                self.providers.router(policy, cluster),
                route_target(policy, cluster, effect.versions),
            )
            router.reconcile(target)  # the objects it routes on exist (or are created: option create)
            router.set_routes(target, effect.routes)
            live = router.get_routes(target)
            if live != effect.routes:
                raise NotReady(f"routes of {policy.app} read back as {live}, expected {effect.routes}")
        elif effect.kind == "set-protection":
            assert effect.protection is not None
            said = self.providers.router(policy, cluster).set_protection(
                route_target(policy, cluster, effect.versions), effect.protection
            )
            self._say(policy, effect, "protection-kept", tuple(said or ()))
        elif effect.kind == "finalize-routes":
            self._finalize(policy, effect)
        elif effect.kind == "notify":
            self.providers.notifier(policy).send(
                {**effect.notice, "message": effect.message, "id": effect.id}
            )
        elif effect.kind == "set-flag":
            assert effect.flag is not None
            self._flags(policy, cluster).set_flag(effect.flag)
        elif effect.kind == "hook":
            self._hooks(policy).tell(effect)
        elif effect.kind == "git-write-back":
            self._gitops(policy).write_back(effect)
        else:
            self._apply_workload(policy, effect)

    def _finalize(self, policy: Policy, effect: Effect) -> None:
        """A release ended: its router removes what it added (all traffic is on stable already) and says
        what it saw and left alone, such as a route of the user's still sending traffic to the canary."""
        router, target = (
            self.providers.router(policy, effect.cluster),
            route_target(policy, effect.cluster, effect.versions),
        )
        self._say(policy, effect, "routes-finalized", tuple(router.finalize(target) or ()))

    def _survey(self, policy: Policy, state: AppState, rel: Release) -> None:
        """A release started: its router says what of the user's it meets on the route (a rate limiter or
        circuit breaker, and what router option userProtection does with it). Never blocks the release: an
        object not there yet (router option create) or an unreachable cluster says nothing here."""
        cluster = policy.waves[0].cluster if policy.waves else ""
        versions = state.routed if policy.workload.per_version else None
        try:
            notes = tuple(
                self.providers.router(policy, cluster).survey(route_target(policy, cluster, versions)) or ()
            )
        except GraylaneError as err:
            log.info("surveying the routes of %s at the start of %s: %s", policy.app, rel.id, err)
            return
        self._say(
            policy,
            Effect(id=f"{rel.id}/started", kind="set-routes", cluster=cluster),
            "routes-surveyed",
            notes,
        )

    def _say(self, policy: Policy, effect: Effect, kind: str, notes: tuple[str, ...]) -> None:
        """What a router saw in the user's objects and left alone: logged, notified (never blocking) and put in
        the release's history, one entry per note (action `kind`, the note as its reason), by the ack write."""
        for note in notes:
            log.warning("%s of %s: %s", kind, policy.app, note)
        if not notes:
            return
        release = effect.id.split("/", 1)[0]  # the effect's owner: its release (or the app, between releases)
        heard = self._heard.__dict__.setdefault("entries", [])
        heard += [HistoryEntry(at=iso(self.clock()), event="router", event_id=effect.id, release=release, action=kind,
                               reason=note) for note in notes]  # fmt: skip
        message = f"{policy.app}: " + "; ".join(notes)
        try:
            self.providers.notifier(policy).send(
                {
                    "id": f"{effect.id}/notes",
                    "type": kind,
                    "app": policy.app,
                    "release": release,
                    "notes": list(notes),
                    "message": message,
                }
            )
        except GraylaneError as err:  # a notifier that is down never blocks a release
            log.warning("notification %s/notes dropped: %s", effect.id, err)

    def _apply_workload(self, policy: Policy, effect: Effect) -> None:
        workloads = self.providers.workloads(policy, effect.cluster)
        target = workload_target(policy, effect.cluster, effect.source)
        if effect.slot is not None and effect.kind in VERSION_EFFECTS:
            VERSION_EFFECTS[effect.kind](workloads, target, effect.slot, effect.source)
        elif effect.kind in ("deploy-canary", "keep-warm"):
            workloads.deploy_canary(target, effect.image)
        elif effect.kind == "promote-stable":
            workloads.promote_stable(target, effect.image)
        elif effect.kind == "scale-down-canary":
            workloads.scale_down_canary(target)
        elif effect.kind == "scale-canary":
            workloads.scale_canary(target, effect.weight)
        elif effect.kind == "deploy-baseline":
            workloads.deploy_baseline(target, effect.image)
        elif effect.kind == "remove-baseline":
            workloads.remove_baseline(target)
        elif effect.kind == "deploy-preview":
            workloads.deploy_preview(
                target, effect.image, effect.environment, effect.namespace, effect.workload
            )
        elif effect.kind == "run-migration":
            workloads.run_job(target, effect.job, effect.image, effect.command)
        elif effect.kind == "load-test":
            workloads.start_load_test(target, effect.job, effect.image, effect.command)
        else:
            raise GraylaneError(f"unknown effect kind {effect.kind} ({effect.id})")

    def _ack(self, app: str, done: list[str], state: AppState | None, version: str | None,
             heard: Sequence[HistoryEntry] = ()) -> None:  # fmt: skip
        """Move applied effects out of `pending`, and put what the routers said while applying them in the
        history. Losing this write is harmless: effects are idempotent (and say it again when re-applied).

        The first try uses the state just saved (no reload); a conflict means reload and try again.
        """
        ids = set(done)
        for _ in range(self.attempts):
            if state is None:
                try:
                    state, version = self._load(app)
                except Retry:
                    return
            said = {(h.event_id, h.action, h.reason) for h in state.history}
            new = tuple(_in_release(h, state) for h in heard if (h.event_id, h.action, h.reason) not in said)
            if not any(e.id in ids for e in state.pending) and not new:
                return
            acked = replace(state, pending=tuple(e for e in state.pending if e.id not in ids),
                            applied=bounded(state.applied + tuple(done), MAX_APPLIED),
                            history=bounded(state.history + new, MAX_HISTORY))  # fmt: skip
            try:
                self.store.save(app, acked.to_json(), version)
                return
            except (ConflictError, ProviderUnavailable):
                state = None

    # -- events -------------------------------------------------------------------------------------
    def _emit(
        self, policy: Policy, state: AppState, emitted: tuple[Emitted, ...], id_prefix: str
    ) -> list[str]:
        if not emitted:
            return []
        types = [e.type for e in emitted]
        for t in types:
            metrics.transition(t)
        if self.bus is None:
            return types
        from functions.catalog import to_cloudevent

        release_id = state.release.id if state.release else ""
        for i, e in enumerate(emitted):
            try:
                self.bus.publish(to_cloudevent(e, policy.app, release_id, self.source, id=f"{id_prefix}/{i}"))
            except GraylaneError as err:  # events are derived from state: losing one never loses state
                log.warning("publishing %s failed: %s", e.type, err)
        return types

    # -- lookups ------------------------------------------------------------------------------------
    def _policy_for(self, event: Event) -> Policy | None:
        if isinstance(event, ImagePushed) and not event.app:
            return self.policies.for_image(event.repository, event.tag)
        try:
            return self.policies.get(event.app)
        except NotFound:
            return None

    def _apps_with_state(self) -> list[str]:
        try:
            return self.store.list_apps()
        except (ProviderUnavailable, ConflictError) as err:
            raise Retry(f"cannot list apps: {err}") from err


def _in_release(entry: HistoryEntry, state: AppState) -> HistoryEntry:
    """A router's note as a history entry of its release (with the release's phase), or of none when the
    effect was the app's own (protection between releases)."""
    rel = state.release
    if rel is not None and entry.release == rel.id:
        return replace(entry, phase_to=rel.phase.value, stage=rel.stage, step=rel.step, weight=rel.weight)
    known = any(h.release == entry.release for h in state.history if h.release)
    return entry if known else replace(entry, release="")


# per-version model: each version's own Deployment (functions/core/per_version.py)
VERSION_EFFECTS: dict[str, Callable[[Any, WorkloadTarget, Slot, str], None]] = {
    "deploy-version": lambda w, target, slot, source: w.deploy_version(target, slot, source),
    "scale-down-version": lambda w, target, slot, _: w.scale_down_version(target, slot),
    "delete-version": lambda w, target, slot, _: w.delete_version(target, slot),
}


def _attr(cloud_event: Any, name: str) -> str:
    try:
        return str(cloud_event[name])
    except (KeyError, TypeError):
        return ""
