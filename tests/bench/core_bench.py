"""decide() decisions per second on a realistic event mix (no I/O)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from functions.core.events import Observation
from functions.core.machine import decide
from functions.core.state import AppState
from functions.providers.recording import healthy
from tests.bench.registry import suite
from tests.support import T0, canary_policy, command, for_current, push, tick


@suite("decide")
def bench_decide(args: argparse.Namespace) -> dict[str, Any]:
    policy = canary_policy()
    app = policy.app
    cycle = [push(app, "v1"), push(app, "v2")] + [tick(app) for _ in range(14)]
    cycle += [command(app, "approve", gate="promote")]
    rounds = 30 if args.quick else 300
    decisions, now = 0, T0
    started = time.perf_counter()
    for r in range(rounds):
        state = AppState(app=app)
        for event in cycle:
            now += timedelta(seconds=10)
            rel = state.release
            obs = (
                Observation(metrics=healthy(policy, rel))
                if rel is not None and rel.analysing
                else Observation()
            )
            event = replace(for_current(state, event), id=f"{event.id}-{r}")
            state = replace(decide(policy, state, event, now, obs).state, pending=())
            decisions += 1
    elapsed = time.perf_counter() - started
    rate = decisions / elapsed
    return {
        "decisions": decisions,
        "seconds": elapsed,
        "decisions_per_s": rate,
        "rows": [("decide() decisions/s", f"{rate:,.0f}", "-", "-")],
    }
