"""The always-on guard: anytime-valid error and latency tests on the canary from its first request, whatever
startStep says; switchable off; its false rollbacks stay under alpha however often it looks."""

from __future__ import annotations

import math
import random

from functions.core.counters import Evidence, Totals
from functions.core.evidence import log_evidence, update
from functions.core.state import Phase
from tests.unit.evidence_helpers import Counters, run, seed_like
from tests.unit.machine_helpers import T0, Driver


def started(policy) -> Driver:  # type: ignore[no-untyped-def]
    d = Driver.with_stable(policy)
    d.push("v2")
    return d


def test_guard_rolls_back_a_bad_canary_before_start_step() -> None:
    d = started(seed_like())  # the user's metric only runs from step 2
    run(d, Counters(canary_errors_rate=0.5), 60)
    assert d.rel.phase == Phase.ROLLED_BACK and d.rel.step == 0  # still in step 1
    assert d.rel.reason.startswith("guard: canary errors")
    assert d.rel.verdicts[-1].metrics[0].name == "guard"
    assert d.state.routes.canary == 0
    assert d.last is not None and any(e.type.endswith("analysis.verdict") for e in d.last.events)


def test_guard_off_leaves_step_one_to_the_schedule() -> None:
    d = started(seed_like(guard=False, exposure_budget=0))
    run(d, Counters(canary_errors_rate=0.5), 60)
    assert d.rel.phase == Phase.PROGRESSING and d.rel.evidence is None  # nothing watches step 1
    run(d, Counters(canary_errors_rate=0.5), 60)
    assert d.rel.step == 1  # the user's metric starts at step 2 and needs its failureLimit


def test_guard_lets_a_healthy_canary_through_and_keeps_counting_across_steps() -> None:
    d = started(seed_like())
    counters = Counters()
    run(d, counters, 130)
    assert d.rel.phase == Phase.PROGRESSING and d.rel.step == 1
    e = d.rel.evidence
    assert e is not None and e.canary_requests > 1000 and log_evidence(e.errors) < 0
    assert e.bound_ms == 100.0  # the bucket at the p95 of log-normal(50 ms, 0.5)


def test_guard_rolls_back_a_slower_canary() -> None:
    d = started(seed_like())
    run(d, Counters(canary_slow_ms=100.0), 60)
    assert d.rel.phase == Phase.ROLLED_BACK and "slower than 100 ms" in d.rel.reason


def test_guard_ignores_unavailable_counters_and_survives_a_counter_reset() -> None:
    base = Totals(canary_requests=100, canary_errors=1, stable_requests=900, stable_errors=5)
    e = update(None, base, T0)
    assert update(e, Totals(status="unavailable"), T0) is e
    assert update(e, base, T0) is e  # no new scrape: unchanged
    reset = update(e, Totals(canary_requests=3, canary_errors=0, stable_requests=1000, stable_errors=5), T0)
    assert reset.base is not None and reset.base.canary_requests == 3 and reset.canary_requests == 0
    assert reset.errors == ()


def test_guard_evidence_starts_again_in_a_new_wave() -> None:
    base = Totals(canary_requests=100, canary_errors=1, stable_requests=900, stable_errors=5)
    e = Evidence(wave=0, base=base, canary_requests=50.0)
    fresh = update(e, base, T0, wave=1)
    assert fresh.wave == 1 and fresh.canary_requests == 0


def test_guard_false_rollbacks_stay_under_alpha_however_often_it_looks() -> None:
    """Ville: under 'no regression' the error e-process ever reaches 1/alpha with probability <= alpha,
    even when it looks after every few requests and the canary's share changes between looks."""
    alpha, runs, looks = 0.05, 400, 200
    rng = random.Random(7)
    crossed = 0
    for _ in range(runs):
        total = Totals()
        e = update(None, total, T0)
        for _ in range(looks):
            share = rng.choice((0.05, 0.2, 0.5, 0.8))
            nc, ns = rng.randint(5, 40), rng.randint(5, 40)
            nc, ns = round(nc * share * 2), round(ns * (1 - share) * 2)
            ce = sum(rng.random() < 0.05 for _ in range(nc))
            se = sum(rng.random() < 0.05 for _ in range(ns))
            total = Totals(
                canary_requests=total.canary_requests + nc,
                canary_errors=total.canary_errors + ce,
                stable_requests=total.stable_requests + ns,
                stable_errors=total.stable_errors + se,
            )
            e = update(e, total, T0)
            if log_evidence(e.errors) >= math.log(1 / alpha):
                crossed += 1
                break
    assert crossed / runs <= alpha, crossed


def test_guard_ignores_a_reading_older_than_its_evidence() -> None:
    """Two ticks racing (or a sweep's batch reused after a conflict) must not count one interval twice."""
    first = Totals(canary_requests=100, canary_errors=1, stable_requests=900, stable_errors=5, read_at="t2")
    e = update(None, first, T0)
    stale = Totals(canary_requests=80, canary_errors=1, stable_requests=700, stable_errors=4, read_at="t1")
    assert update(e, stale, T0) is e
    newer = Totals(canary_requests=150, canary_errors=2, stable_requests=1300, stable_errors=7, read_at="t3")
    assert update(e, newer, T0).canary_requests == 50


def test_guard_baseline_is_read_before_the_canary_first_request() -> None:
    """The counters read with the push that deploys the canary are the baseline: the first tick's reading
    already counts the canary's first requests (a 1 s scrape and a 5 s tick: rolled back at the first tick)."""
    from functions.core.events import ImagePushed
    from tests.unit.machine_helpers import APP, version

    d = Driver.with_stable(seed_like())
    counters = Counters(canary_errors_rate=0.5)
    d.send(ImagePushed(id="push-v2", app=APP, target=version("v2"), tag="v2"), counters.observe())
    assert d.rel.evidence is not None and d.rel.evidence.base == counters.totals()
    counters.serve(5, d.state.routes.canary)
    d.tick(5, counters.observe())
    assert d.rel.phase == Phase.ROLLED_BACK and d.rel.reason.startswith("guard:")
