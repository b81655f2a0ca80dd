"""The runner on the in-memory store and recording providers: the full cycle, dedupe, CAS, crash healing."""

from __future__ import annotations

import threading

import pytest

from functions.core.effects import RoutePlan
from functions.core.events import MetricSample
from functions.core.state import AppState, Phase
from functions.errors import ConflictError, ProviderUnavailable, Retry
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, canary_policy, command, handle, push, tick

APP = "prod/web"


def make(measure=None) -> tuple[Runner, MemoryStore, RecordingProviders, Clock]:
    store, clock = MemoryStore(), Clock()
    providers = RecordingProviders(measure) if measure else RecordingProviders()
    runner = Runner(store, StaticPolicies([canary_policy()]), providers, clock=clock)
    return runner, store, providers, clock


def state_of(store: MemoryStore) -> AppState:
    doc, _ = store.load(APP)
    assert doc is not None
    return AppState.from_json(doc)


def routes(providers: RecordingProviders) -> RoutePlan:
    return providers.router_.routes["/prod/web"]


def start_release(runner: Runner, clock: Clock) -> None:
    runner.handle(push(APP, "v1"))
    runner.handle(push(APP, "v2"))


def test_full_release_moves_real_traffic_and_promotes() -> None:
    runner, store, providers, clock = make()
    start_release(runner, clock)
    assert routes(providers) == RoutePlan.canary_at(20)
    assert providers.workloads_.images["/prod/web-canary"] == "registry.example.com/web:v2"
    for _ in range(7):  # 60 s pause with analysis every 10 s
        clock.advance(10)
        runner.handle(tick())
    assert routes(providers) == RoutePlan.canary_at(50)
    for _ in range(7):
        clock.advance(10)
        runner.handle(tick())
    assert state_of(store).release.phase == Phase.WAITING
    handle(runner, command(APP, "approve", gate="promote"))
    s = state_of(store)
    assert s.release.phase == Phase.SUCCEEDED and s.stable.version == "v2" and s.pending == ()
    assert routes(providers) == RoutePlan()
    verbs = providers.log.verbs()
    # the stable workload runs v2 before traffic returns to it, and the canary goes only after
    promote = verbs.index("promote_stable", verbs.index("deploy_canary"))
    assert verbs.index("set_routes", promote) < verbs.index("scale_down_canary")


def test_same_event_delivered_five_times_is_one_transition() -> None:
    runner, store, providers, _ = make()
    runner.handle(push(APP, "v1"))
    event = push(APP, "v2")
    outcomes = [runner.handle(event)[0].status for _ in range(5)]
    assert outcomes == ["transitioned"] + ["duplicate"] * 4
    s = state_of(store)
    assert s.generation == 2 and sum(h.action == "started" for h in s.history) == 1
    assert providers.log.verbs().count("deploy_canary") == 1


def test_bad_canary_rolls_back_and_traffic_returns_first() -> None:
    bad = lambda p, r: (MetricSample(name="success-rate", value=0.5, canary_requests=500),)  # noqa: E731
    runner, store, providers, clock = make(bad)
    start_release(runner, clock)
    clock.advance(10)
    runner.handle(tick())
    s = state_of(store)
    assert s.release.phase == Phase.ROLLED_BACK and "0.5 < min 0.9" in s.release.reason
    assert routes(providers) == RoutePlan()
    verbs = providers.log.verbs()
    assert verbs.index("scale_down_canary") > len(verbs) - 1 - verbs[::-1].index("set_routes")


def test_prometheus_unreachable_is_inconclusive_and_never_promotes() -> None:
    def down(p, r):
        raise ProviderUnavailable("prometheus: connection refused")

    runner, store, providers, clock = make(down)
    start_release(runner, clock)
    for _ in range(20):
        clock.advance(10)
        runner.handle(tick())
    s = state_of(store)
    assert s.release.phase == Phase.PAUSED and s.release.step == 0
    assert {v.verdict for v in s.release.verdicts} == {"inconclusive"}
    assert "promote_stable" not in providers.log.verbs()[1:]


def test_effect_failure_stays_pending_and_the_next_tick_heals_it() -> None:
    runner, store, providers, clock = make()
    runner.handle(push(APP, "v1"))
    providers.log.fail("set_routes", times=2)
    outcome = runner.handle(push(APP, "v2"))[0]
    assert outcome.pending > 0 and state_of(store).pending
    assert runner.handle(tick())[0].pending > 0  # still failing
    assert runner.handle(tick())[0].pending == 0
    assert state_of(store).pending == () and routes(providers) == RoutePlan.canary_at(20)


def test_crash_between_save_and_apply_heals_on_next_tick() -> None:
    runner, store, providers, clock = make()
    runner.handle(push(APP, "v1"))
    original = runner.apply
    runner.apply = lambda policy, effect: (_ for _ in ()).throw(RuntimeError("process killed"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        runner.handle(push(APP, "v2"))
    assert state_of(store).release.target.version == "v2" and state_of(store).pending
    runner.apply = original  # type: ignore[method-assign]
    runner.handle(tick())
    assert state_of(store).pending == () and routes(providers) == RoutePlan.canary_at(20)


class FlakyStore(MemoryStore):
    """Fails the next saves: 'conflict' (someone else wrote first) or 'lost' (applied, answer lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[str] = []

    def save(self, app: str, document: str, expected_version: str | None) -> str:
        fault = self.script.pop(0) if self.script else ""
        if fault == "conflict":
            raise ConflictError("injected conflict")
        version = super().save(app, document, expected_version)
        if fault == "lost":
            raise ProviderUnavailable("injected: response lost after the write")
        return version


@pytest.mark.parametrize("fault", ["conflict", "lost"])
def test_cas_faults_are_retried_without_double_transition(fault: str) -> None:
    store, clock, providers = FlakyStore(), Clock(), RecordingProviders()
    runner = Runner(store, StaticPolicies([canary_policy()]), providers, clock=clock)
    runner.handle(push(APP, "v1"))
    store.script = [fault, fault]
    assert runner.handle(push(APP, "v2"))[0].status == "transitioned"
    s = AppState.from_json(store.load(APP)[0])
    assert s.release.target.version == "v2" and sum(h.action == "started" for h in s.history) == 1


def test_endless_conflicts_ask_for_redelivery() -> None:
    store, providers = FlakyStore(), RecordingProviders()
    runner = Runner(store, StaticPolicies([canary_policy()]), providers, clock=Clock(), attempts=3)
    store.script = ["conflict"] * 3
    with pytest.raises(Retry):
        runner.handle(push(APP, "v1"))


def test_racing_commands_are_serialised_and_both_audited() -> None:
    runner, store, providers, clock = make()
    start_release(runner, clock)
    barrier = threading.Barrier(2)
    cmds = [command(APP, "abort", user="bob"), command(APP, "weight", user="carol", weight=40)]

    def send(c):
        barrier.wait()
        handle(runner, c)

    threads = [threading.Thread(target=send, args=(c,)) for c in cmds]
    [t.start() for t in threads]
    [t.join() for t in threads]
    s = state_of(store)
    users = {h.by.user for h in s.history if h.by is not None}
    assert {"bob", "carol"} <= users
    assert s.release.phase == Phase.ABORTED and s.routes == RoutePlan() and routes(providers) == RoutePlan()


def test_unknown_app_and_unmatched_push_are_acknowledged() -> None:
    runner, store, _, _ = make()
    assert runner.handle(push("prod/nope", "v1", repo="registry.example.com/nope"))[0].status == "ignored"
    assert store.list_apps() == []


def test_tick_sweep_visits_every_app_with_state() -> None:
    store, clock, providers = MemoryStore(), Clock(), RecordingProviders()
    policies = StaticPolicies([canary_policy(name=f"app{i}") for i in range(3)])
    runner = Runner(store, policies, providers, clock=clock)
    for i in range(3):
        runner.handle(push(f"prod/app{i}", "v1"))
        runner.handle(push(f"prod/app{i}", "v2"))
    clock.advance(10)
    outcomes = runner.handle(tick())
    assert sorted(o.app for o in outcomes) == ["prod/app0", "prod/app1", "prod/app2"]
    assert all(o.status == "transitioned" for o in outcomes)  # each recorded a verdict


def test_an_effect_that_failed_for_good_fails_the_release_instead_of_blocking_it() -> None:
    from functions.core.policy import CanaryStage, CanaryStep, MigrationJob, PreviewStage
    from functions.errors import EffectFailed

    policy = canary_policy(
        stages=(
            PreviewStage(migration=MigrationJob(name="migrate")),
            CanaryStage(steps=(CanaryStep(20, 60.0),)),
        )
    )
    store, clock, providers = MemoryStore(), Clock(), RecordingProviders()
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)
    runner.handle(push(APP, "v1"))
    real_run_job = providers.workloads_.run_job

    def failing_job(target, name, image, command):
        real_run_job(target, name, image, command)
        raise EffectFailed(f"Job {name} run: failed: BackoffLimitExceeded")

    providers.workloads_.run_job = failing_job  # type: ignore[method-assign]
    outcome = runner.handle(push(APP, "v2"))[0]
    s = state_of(store)
    assert s.release.phase == Phase.FAILED and "BackoffLimitExceeded" in s.release.reason
    assert "failed for good" in outcome.reason and s.pending == () and s.routes == RoutePlan()
    assert "deploy_preview" not in providers.log.verbs()  # nothing after the failed migration ran


def test_a_tick_sweep_measures_every_analysing_release_in_one_batch() -> None:
    store, clock, providers = MemoryStore(), Clock(), RecordingProviders()
    policies = StaticPolicies([canary_policy(name=f"app{i}") for i in range(4)])
    runner = Runner(store, policies, providers, clock=clock)
    for i in range(4):
        runner.handle(push(f"prod/app{i}", "v1"))
        if i < 3:  # app3 stays without a release: nothing to measure
            runner.handle(push(f"prod/app{i}", "v2"))
    clock.advance(10)
    outcomes = runner.handle(tick())
    batches = [c for c in providers.log.calls if c[0] == "measure_many"]
    assert len(batches) == 1 and sorted(batches[0][2]) == ["app0-1", "app1-1", "app2-1"]
    assert "measure" not in providers.log.verbs()  # no release measured on its own
    verdicts = [AppState.from_json(store.load(f"prod/app{i}")[0]).release.verdicts for i in range(3)]
    assert all(len(v) == 1 and v[0].verdict == "pass" for v in verdicts)
    assert sum(o.status == "transitioned" for o in outcomes) == 3


def test_the_function_path_keeps_heavy_modules_off_cold_start() -> None:
    """What a function imports before its first event is answered: none of these may be on it."""
    import subprocess
    import sys

    heavy = [
        "kubernetes",
        "prometheus_api_client",
        "starlette",
        "jsonschema",
        "cryptography",
        "functions.providers.notifiers",
        "urllib.request",
        "yaml",
        "functions.core.policy_parse",
    ]
    code = (
        "import sys; import functions.runner, functions.runtime, functions.catalog, "
        "functions.providers.stores.sqlite, functions.policies; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_runner_reads_the_guard_counters_on_ticks_and_the_guard_rolls_back() -> None:
    from dataclasses import replace

    from functions.core.counters import Totals
    from functions.core.policy import RouterSpec

    served = {"t": 0}

    def totals(policy, release):  # type: ignore[no-untyped-def]
        served["t"] += 10
        n = 100.0 * served["t"]
        return Totals(
            canary_requests=n * 0.05,
            canary_errors=n * 0.05 * 0.5,
            stable_requests=n * 0.95,
            stable_errors=n * 0.95 * 0.005,
        )

    store, clock = MemoryStore(), Clock()
    providers = RecordingProviders(totals=totals)
    policy = replace(canary_policy(), router=RouterSpec(provider="nginx"))
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)
    start_release(runner, clock)
    assert routes(providers) == RoutePlan.canary_at(5)  # the probe weight before any evidence
    for _ in range(3):
        clock.advance(10)
        runner.handle(tick())
    s = state_of(store)
    assert "totals_many" in providers.log.verbs()
    assert s.release.phase == Phase.ROLLED_BACK and s.release.reason.startswith("guard:")
    assert routes(providers) == RoutePlan()


def test_what_the_router_says_at_release_start_and_end_is_in_the_release_history_and_notified() -> None:
    """Issue 12 item 4: a limiter of the user's on the route (said when the release starts) and a user's route
    still sending traffic to the canary (said when it ends) are history entries of the release, and notices."""
    runner, store, providers, clock = make()
    runner.handle(push(APP, "v1"))
    limiter = (
        "route 'Host(`web`)' of IngressRoute prod/web has the user's rateLimit Middleware prod/rl: kept it"
    )
    still = "IngressRoute prod/web-abtest spec.routes[0] still sends traffic to Service web-canary"
    providers.router_.said = {"survey": (limiter,), "finalize": (still,)}
    runner.handle(push(APP, "v2"))
    rel = state_of(store).release
    started = [h for h in state_of(store).history if h.action == "routes-surveyed"]
    assert [(h.release, h.reason, h.event_id) for h in started] == [(rel.id, limiter, f"{rel.id}/started")]
    for _ in range(14):
        clock.advance(10)
        runner.handle(tick())
    handle(runner, command(APP, "approve", gate="promote"))
    s = state_of(store)
    assert s.release.phase == Phase.SUCCEEDED and s.pending == ()
    ended = [h for h in s.history if h.action == "routes-finalized"]
    assert [(h.release, h.reason, h.phase_to) for h in ended] == [(rel.id, still, "succeeded")]
    assert [h.action for h in s.history].index("routes-finalized") > [h.action for h in s.history].index(
        "promoted"
    )
    notices = {n["type"]: n for n in providers.notifier_.notices if n.get("notes")}
    assert (
        notices["routes-surveyed"]["notes"] == [limiter] and notices["routes-surveyed"]["release"] == rel.id
    )
    assert notices["routes-finalized"]["notes"] == [still] and still in notices["routes-finalized"]["message"]
    runner.handle(tick())  # nothing said again: the notes are not repeated
    assert sum(h.action == "routes-finalized" for h in state_of(store).history) == 1
