"""Reliability of the runner on the real kube-apiserver (ConfigMapStore), with faults injected.

At-least-once delivery, racing commands, a 30 % failing apiserver, and a crash between save and apply.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from functions.core.effects import RoutePlan
from functions.core.events import MetricSample
from functions.core.policy import Policy
from functions.core.state import AppState, Phase, Release
from functions.errors import ConflictError, ProviderUnavailable, Retry
from functions.providers.recording import RecordingProviders, healthy
from functions.providers.stores.configmap import ConfigMapStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, canary_policy, command, handle, push, sent, tick

pytestmark = pytest.mark.k8s


def measure(policy: Policy, release: Release) -> tuple[MetricSample, ...]:
    """Versions ending in 'bad' fail analysis; everything else is healthy."""
    if release.target.version.endswith("bad"):
        return (MetricSample(name="success-rate", value=0.4, canary_requests=1000),)
    return healthy(policy, release)


@pytest.fixture
def store(kube, ns: str) -> Iterator[ConfigMapStore]:
    client = kube.api_client()
    yield ConfigMapStore(client, namespaces=[ns], timeout=5.0)
    client.close()


def runner_for(store, ns: str, clock: Clock) -> tuple[Runner, RecordingProviders]:
    providers = RecordingProviders(measure)
    return Runner(store, StaticPolicies([canary_policy(namespace=ns)]), providers, clock=clock), providers


def load(store, app: str, attempts: int = 20) -> AppState:
    """The app's state; a read the chaos proxy refused is made again, as any reader would."""
    for attempt in range(attempts):
        try:
            doc, _ = store.load(app)
            break
        except (ConflictError, ProviderUnavailable):
            if attempt == attempts - 1:
                raise
    assert doc is not None
    return AppState.from_json(doc)


def test_same_event_five_times_is_exactly_one_transition(store: ConfigMapStore, ns: str) -> None:
    app, clock = f"{ns}/web", Clock()
    runner, providers = runner_for(store, ns, clock)
    runner.handle(push(app, "v1"))
    event = push(app, "v2")
    statuses = [runner.handle(event)[0].status for _ in range(5)]
    assert statuses == ["transitioned"] + ["duplicate"] * 4
    state = load(store, app)
    assert [h.action for h in state.history].count("started") == 1
    assert providers.log.verbs().count("deploy_canary") == 1


def test_racing_commands_serialise_and_are_both_audited(kube, ns: str) -> None:
    app, clock = f"{ns}/web", Clock()
    clients = [kube.api_client() for _ in range(2)]
    stores = [ConfigMapStore(c, namespaces=[ns]) for c in clients]
    providers = RecordingProviders(measure)
    runners = [
        Runner(s, StaticPolicies([canary_policy(namespace=ns)]), providers, clock=clock) for s in stores
    ]
    runners[0].handle(push(app, "v1"))
    runners[0].handle(push(app, "v2"))
    barrier = threading.Barrier(2)
    cmds = [command(app, "abort", user="bob"), command(app, "weight", user="carol", weight=40)]

    def send(i: int) -> None:
        barrier.wait()
        handle(runners[i], cmds[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    state = load(stores[0], app)
    audited = {h.by.user for h in state.history if h.by is not None}
    assert {"bob", "carol"} <= audited
    assert state.release.phase == Phase.ABORTED and state.routes == RoutePlan() and state.release.weight == 0
    [c.close() for c in clients]


def scenario(app: str) -> list[tuple[float, object]]:
    """About 200 events: a release promoted by approval, one superseded, one bad one rolled back."""
    steps: list[tuple[float, object]] = [(0, push(app, "v1")), (1, push(app, "v2"))]
    steps += [(10, tick()) for _ in range(14)]
    steps += [(1, command(app, "approve", gate="promote")), (1, push(app, "v3")), (5, tick())]
    steps += [(1, command(app, "weight", weight=35)), (1, push(app, "v4bad"))]
    steps += [(10, tick()) for _ in range(3)]
    steps += [(1, push(app, "v5")), (1, command(app, "pause")), (5, tick()), (1, command(app, "resume"))]
    while len(steps) < 196:
        steps.append((10, tick()))
        if len(steps) % 40 == 0:
            steps.append((1, command(app, "approve", gate="promote")))
    steps += [(1, command(app, "rollback", version="v2")), (10, tick())]
    return steps


def deliver(runner: Runner, event: object, attempts: int = 60) -> None:
    for _ in range(attempts):  # the broker redelivers until the function acknowledges
        try:  # the edge names a command for the current release, reading it through the same faulty apiserver
            named = sent(runner.store, event)
        except (ConflictError, ProviderUnavailable):  # the sender's read failed: it sends again
            continue
        try:
            runner.handle(named)
            return
        except (Retry, ProviderUnavailable):
            continue
    raise AssertionError(f"event {event} never acknowledged")


def fingerprint(state: AppState) -> dict[str, object]:
    rel = state.release
    return {
        "stable": state.stable,
        "revisions": state.revisions,
        "routes": state.routes,
        "seq": state.seq,
        "release": (rel.id, rel.phase, rel.stage, rel.step, rel.weight, rel.target) if rel else None,
        "history": [(h.action, h.release, h.phase_to, h.weight) for h in state.history],
        "seen": len(state.seen),
    }


def run_scenario(store, ns: str) -> tuple[AppState, RecordingProviders]:
    app, clock = f"{ns}/web", Clock()
    runner, providers = runner_for(store, ns, clock)
    for dt, event in scenario(app):
        clock.advance(dt)
        deliver(runner, event)
    deliver(runner, tick())  # let anything still pending be applied
    return load(store, app), providers


def test_thirty_percent_apiserver_faults_reach_the_same_final_state(kube, faults, ns: str) -> None:
    clean_state, clean_providers = run_scenario(ConfigMapStore(kube.api_client(), namespaces=[ns]), ns)

    other_ns = f"{ns}-x"
    from kubernetes import client

    client.CoreV1Api(kube.api_client()).create_namespace({"metadata": {"name": other_ns}})
    faults.chaos(rate=0.3, kinds=("500", "409", "timeout", "lost"), seed=7, timeout=0.6)
    faulty_store = ConfigMapStore(faults.api_client(), namespaces=[other_ns], timeout=0.3)
    faulty_state, faulty_providers = run_scenario(faulty_store, other_ns)
    faults.clear()

    assert len(faults.faults()) > 50, "the chaos proxy should have injected many faults"
    kinds = {str(e.fault).split()[0] for e in faults.faults()}  # e.g. "lost (applied 200)" -> "lost"
    assert {"500", "409", "timeout", "lost"} <= kinds
    assert fingerprint(faulty_state) == fingerprint(clean_state)
    assert clean_state.release is not None and clean_state.release.kind == "rollback"
    key = lambda ns_: f"/{ns_}/web"  # noqa: E731
    assert faulty_providers.router_.routes[key(other_ns)] == clean_providers.router_.routes[key(ns)]


def test_exception_between_save_and_apply_is_healed_by_next_tick(store: ConfigMapStore, ns: str) -> None:
    app, clock = f"{ns}/web", Clock()
    runner, providers = runner_for(store, ns, clock)
    runner.handle(push(app, "v1"))
    real_apply = runner.apply

    def crash(policy, effect):
        raise RuntimeError("killed between save and apply")

    runner.apply = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        runner.handle(push(app, "v2"))
    assert load(store, app).pending, "the desired state, with its effects, was saved first"
    runner.apply = real_apply  # type: ignore[method-assign]
    runner.handle(tick())
    state = load(store, app)
    assert state.pending == () and providers.router_.routes[f"/{ns}/web"] == RoutePlan.canary_at(20)
