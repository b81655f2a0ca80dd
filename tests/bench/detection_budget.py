"""How `analysis.exposureBudget`'s default was chosen: graylane-seed at several budgets, same runs (CRN).

    python -m tests.bench.detection_budget [--runs N] [--healthy N] [--budgets 2,3,5,7,10] [--scrape 15]

For each budget: the mild 2 % canary's mean canary-caused failed requests against twice the SPRT floor (the
tightest target, where a higher weight costs most), the 10 % and 50 % canaries' failed requests, and the
share of the planned canary exposure a healthy canary gets (canary requests / those of the uncapped
schedule: how much of the user's plan the cap takes away). The default is the largest budget whose 2 %
canary stays within twice the floor: larger budgets only raise a healthy canary's weight sooner.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from tests.bench.detection import SCENARIOS, _phase, floor_failed, run_policy
from tests.bench.detection_sim import Traffic


def _one(job: tuple[int, int, int, float]) -> dict[str, Any]:
    from tests.bench.detection_policies import Graylane, seed_policy

    si, scrape, seed, budget = job
    policy = seed_policy()
    assert policy.analysis is not None
    policy = replace(policy, analysis=replace(policy.analysis, exposure_budget=budget))
    return run_policy(Graylane("graylane-seed", policy), Traffic(seed, SCENARIOS[si]), scrape, _phase(seed, scrape))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.detection_budget")
    p.add_argument("--runs", type=int, default=300, help="runs per regression scenario")
    p.add_argument("--healthy", type=int, default=100, help="healthy runs (exposure only)")
    p.add_argument("--budgets", default="0,2,3,5,7,10,20")
    p.add_argument("--scrape", type=int, default=15)
    args = p.parse_args(argv)
    names = [s.name for s in SCENARIOS]
    healthy, mild, bad, worst = (names.index(n) for n in ("healthy", "mild 2%", "bad 10%", "catastrophic 50%"))
    limit = 2 * floor_failed(SCENARIOS[mild])
    print(f"scrape {args.scrape}s; mild 2% target: <= {limit:.1f} failed (2 x the SPRT floor)")
    print(f"{'budget':>6}  {'2% failed':>9}  {'10% failed':>10}  {'50% failed':>10}  {'healthy exposure':>16}")
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        planned = None
        for budget in [float(b) for b in args.budgets.split(",")]:
            row = {}
            for si, n in ((healthy, args.healthy), (mild, args.runs), (bad, args.runs), (worst, args.runs)):
                jobs = [(si, args.scrape, seed, budget) for seed in range(1, n + 1)]
                runs = list(pool.map(_one, jobs, chunksize=10))
                row[si] = (np.mean([r["caused"] for r in runs]), np.mean([r["canary_requests"] for r in runs]))
            if budget == 0:
                planned = row[healthy][1]
            share = f"{row[healthy][1] / planned:.0%}" if planned else "-"
            print(f"{budget:>6g}  {row[mild][0]:>9.2f}  {row[bad][0]:>10.2f}  {row[worst][0]:>10.2f}  {share:>16}",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
