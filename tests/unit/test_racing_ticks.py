"""One verdict per analysis interval, however many ticks race (issue 11, item 3).

decide() owns the interval rule (from the release's last analysis time) and refuses an observation
measured before the latest verdict; the runner measures afresh after every CAS conflict. The races here are
real: two runners (two SQLite connections, as two processes have) tick one app at the same instant, and a
conflicting tick is injected between a runner's decision and its save.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from functions.core.events import MetricSample, Observation
from functions.core.policy import Analysis, MetricCheck
from functions.core.state import AppState, Phase, iso
from functions.providers.recording import RecordingProviders
from functions.providers.stores.sqlite import SqliteStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, canary_policy, push, tick
from tests.unit.machine_helpers import FAIL, PASS, Driver, analysis, make_policy

APP = "prod/web"


def _policy():  # steps 20/50 with 60 s pauses, analysis every 10 s, three failures roll back
    base = canary_policy()
    assert base.analysis is not None
    return replace(base, analysis=replace(base.analysis, failure_limit=3))


def _bad(value: float = 0.5) -> tuple[MetricSample, ...]:
    return (MetricSample(name="success-rate", value=value, canary_requests=500),)


def _state(store: SqliteStore) -> AppState:
    doc, _ = store.load(APP)
    assert doc is not None
    return AppState.from_json(doc)


def _started(path: Path, clock: Clock) -> None:
    runner = Runner(SqliteStore(path), StaticPolicies([_policy()]), RecordingProviders(), clock=clock)
    runner.handle(push(APP, "v1"))
    runner.handle(push(APP, "v2"))


# -- decide() owns the rule ------------------------------------------------------------------------------


def _analysed_canary() -> Driver:
    from functions.core.policy import CanaryStage, CanaryStep, PromoteStage

    d = Driver.with_stable(
        make_policy(
            CanaryStage(steps=(CanaryStep(20, 60.0),)), PromoteStage(), analysis=analysis(failure_limit=3)
        )
    )
    d.push("v2")
    return d


def test_racing_ticks_decide_records_one_verdict_per_interval() -> None:
    d = _analysed_canary()
    d.tick(10, FAIL)
    d.tick(1, FAIL)  # a second tick of the same interval, with its own measurement
    d.tick(0, FAIL)
    assert len(d.rel.verdicts) == 1 and d.rel.failures == 1
    d.tick(9, FAIL)  # the next interval
    assert len(d.rel.verdicts) == 2 and d.rel.failures == 2 and d.rel.phase == Phase.PROGRESSING


def test_racing_ticks_decide_refuses_an_observation_measured_before_the_latest_verdict() -> None:
    d = _analysed_canary()
    measured = iso(d.now + timedelta(seconds=5))
    d.tick(10, PASS)  # a verdict recorded at +10 s
    stale = Observation(metrics=FAIL.metrics, measured_at=measured, release=d.rel.id)
    d.tick(30, stale)  # an interval later, but what it carries was measured before that verdict
    assert [v.verdict for v in d.rel.verdicts] == ["pass"] and d.rel.failures == 0
    other = Observation(metrics=FAIL.metrics, measured_at=iso(d.now), release="web-99")
    d.tick(0, other)  # measured for another release
    assert len(d.rel.verdicts) == 1
    d.tick(0, Observation(metrics=FAIL.metrics, measured_at=iso(d.now), release=d.rel.id))
    assert [v.verdict for v in d.rel.verdicts] == ["pass", "fail"]


# -- real races through the runner ---------------------------------------------------------------------------


def test_racing_ticks_two_runners_on_one_sqlite_file_give_one_verdict_per_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "graylane.db", Clock()
    _started(path, clock)
    measured: list[str] = []
    lock = threading.Lock()
    meet = threading.Barrier(2, timeout=5)

    def measure(policy, release):
        with lock:
            measured.append(threading.current_thread().name)
            racing = len(measured) <= 2
        if racing:
            meet.wait()  # both ticks have loaded the same state and measured before either saves
        return _bad()

    runners = [
        Runner(SqliteStore(path), StaticPolicies([_policy()]), RecordingProviders(measure), clock=clock)
        for _ in range(2)
    ]
    for interval in (1, 2, 3):
        clock.advance(10)
        measured.clear()
        meet.reset()
        threads = [
            threading.Thread(target=r.handle, args=(tick(APP),), name=f"runner-{i}")
            for i, r in enumerate(runners)
        ]
        [t.start() for t in threads]
        [t.join(timeout=20) for t in threads]
        assert sorted(measured) == ["runner-0", "runner-1"], "both ticks measured the same interval"
        rel = _state(SqliteStore(path)).release
        assert rel is not None
        assert len(rel.verdicts) == interval and rel.failures == interval, (
            f"interval {interval}: {[(v.at, v.verdict) for v in rel.verdicts]}"
        )
        assert len({v.at for v in rel.verdicts}) == interval
        expected = Phase.ROLLED_BACK if interval == 3 else Phase.PROGRESSING
        assert rel.phase == expected, f"interval {interval}: {rel.phase} ({rel.reason})"


class _InjectingStore(SqliteStore):
    """Before its first save, lets `other` run a whole tick on the same file: a real CAS conflict follows."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.other: Runner | None = None
        self.inject: object = None

    def save(self, app: str, document: str, expected_version: str | None) -> str:
        if self.inject is not None:
            inject, self.inject = self.inject, None
            inject()  # type: ignore[operator]
        return super().save(app, document, expected_version)


def test_racing_ticks_a_tick_that_loses_the_cas_to_another_tick_adds_no_second_verdict(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "graylane.db", Clock()
    _started(path, clock)
    calls: list[str] = []

    def measure(policy, release):
        calls.append(release.id)
        return _bad()

    store = _InjectingStore(path)
    runner = Runner(store, StaticPolicies([_policy()]), RecordingProviders(measure), clock=clock)
    other = Runner(SqliteStore(path), StaticPolicies([_policy()]), RecordingProviders(measure), clock=clock)
    clock.advance(10)
    store.inject = lambda: other.handle(tick(APP))
    assert runner.handle(tick(APP))[0].status in ("transitioned", "unchanged")
    rel = _state(store).release
    assert rel is not None and len(rel.verdicts) == 1 and rel.failures == 1, [v.at for v in rel.verdicts]
    assert calls == [
        "web-1",
        "web-1",
    ]  # each tick measured once; the loser did not measure the same interval again


def test_racing_ticks_after_an_unrelated_conflict_the_tick_measures_again(tmp_path: Path) -> None:
    """A conflict means the state moved on: what was measured against the old state is not applied."""
    path, clock = tmp_path / "graylane.db", Clock()
    _started(path, clock)
    values = iter((0.5, 0.97, 0.97))

    def measure(policy, release):
        return _bad(next(values))

    store = _InjectingStore(path)
    runner = Runner(store, StaticPolicies([_policy()]), RecordingProviders(measure), clock=clock)
    writer = SqliteStore(path)

    def unrelated_write() -> None:  # someone else's write that records no verdict (an ack, say)
        doc, version = writer.load(APP)
        assert doc is not None
        state = AppState.from_json(doc)
        writer.save(
            APP, replace(state, applied=state.applied + ("someone-else/1/0-notify",)).to_json(), version
        )

    clock.advance(10)
    store.inject = unrelated_write
    runner.handle(tick(APP))
    rel = _state(store).release
    assert rel is not None and [v.verdict for v in rel.verdicts] == ["pass"], [v.reason for v in rel.verdicts]
    assert (
        rel.verdicts[0].metrics[0].value == 0.97
    )  # the second measurement, taken on the state it decided on


def test_racing_ticks_a_sweep_retry_does_not_reuse_the_batched_measurement(tmp_path: Path) -> None:
    path, clock = tmp_path / "graylane.db", Clock()
    _started(path, clock)
    values = iter((0.5, 0.97, 0.97))
    store = _InjectingStore(path)
    providers = RecordingProviders(lambda p, r: _bad(next(values)))
    runner = Runner(store, StaticPolicies([_policy()]), providers, clock=clock)
    writer = SqliteStore(path)

    def unrelated_write() -> None:
        doc, version = writer.load(APP)
        assert doc is not None
        state = AppState.from_json(doc)
        writer.save(
            APP, replace(state, applied=state.applied + ("someone-else/1/0-notify",)).to_json(), version
        )

    clock.advance(10)
    store.inject = unrelated_write
    runner.handle(tick())  # a sweep: measured in one batch first
    rel = _state(store).release
    assert rel is not None and [v.metrics[0].value for v in rel.verdicts] == [0.97]
    assert providers.log.verbs().count("measure_many") == 1


def test_racing_ticks_the_interval_rule_holds_for_a_policy_without_the_runner(tmp_path: Path) -> None:
    """Whoever calls decide() (a test, a tool, another runner) gets the same rule: it is not the runner's."""
    from functions.core.machine import decide

    policy = replace(
        _policy(),
        analysis=Analysis(
            interval=30.0,
            metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),),
            failure_limit=2,
        ),
    )
    store, clock = SqliteStore(tmp_path / "g.db"), Clock()
    runner = Runner(store, StaticPolicies([policy]), RecordingProviders(), clock=clock)
    runner.handle(push(APP, "v1"))
    runner.handle(push(APP, "v2"))
    state = _state(store)
    obs = Observation(metrics=_bad())
    for seconds in (30, 10, 10):  # one look at +30 s, then two more inside the same 30 s interval
        clock.advance(seconds)
        state = decide(policy, state, tick(APP), clock(), obs).state
    assert (
        state.release is not None and state.release.failures == 1 and state.release.phase == Phase.PROGRESSING
    )
