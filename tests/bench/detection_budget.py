"""How `analysis.exposureBudget`'s default was chosen: graylane-seed at several budgets, same runs (CRN).

    python -m tests.bench.detection_budget [--runs N] [--healthy N] [--budgets 2,3,5,7,10] [--scrape 15]

For each budget: the mild 2 % canary's mean canary-caused failed requests against twice the SPRT floor (the
tightest target, where a higher weight costs most), the 10 % and 50 % canaries' failed requests, and the
share of the planned canary exposure a healthy canary gets (canary requests / those of the uncapped
schedule: how much of the user's plan the cap takes away). The default is the largest budget whose 2 %
canary stays within twice the floor by more than one standard error of its mean: larger budgets only raise
a healthy canary's weight sooner. The sweep is printed and written to tests/bench/results/detection_budget.json.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from tests.bench.detection import SCENARIOS, _phase, floor_failed, run_policy
from tests.bench.detection_sim import Traffic
from tests.bench.registry import write


def _one(job: tuple[int, int, int, float]) -> dict[str, Any]:
    from tests.bench.detection_policies import Graylane, seed_policy

    si, scrape, seed, budget = job
    policy = seed_policy()
    assert policy.analysis is not None
    policy = replace(policy, analysis=replace(policy.analysis, exposure_budget=budget))
    return run_policy(
        Graylane("graylane-seed", policy), Traffic(seed, SCENARIOS[si]), scrape, _phase(seed, scrape)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.detection_budget")
    p.add_argument("--runs", type=int, default=300, help="runs per regression scenario")
    p.add_argument("--healthy", type=int, default=100, help="healthy runs (exposure only)")
    p.add_argument("--budgets", default="0,2,3,5,7,10,20")
    p.add_argument("--scrape", type=int, default=15)
    args = p.parse_args(argv)
    names = [s.name for s in SCENARIOS]
    healthy, mild, bad, worst = (
        names.index(n) for n in ("healthy", "mild 2%", "bad 10%", "catastrophic 50%")
    )
    limit = 2 * floor_failed(SCENARIOS[mild])
    print(f"scrape {args.scrape}s; mild 2% target: <= {limit:.1f} failed (2 x the SPRT floor)")
    print(
        f"{'budget':>6}  {'2% failed':>9}  {'10% failed':>10}  {'50% failed':>10}  {'healthy exposure':>16}"
    )
    sweep: list[dict[str, Any]] = []
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        planned = None
        for budget in [float(b) for b in args.budgets.split(",")]:
            row = {}
            for si, n in ((healthy, args.healthy), (mild, args.runs), (bad, args.runs), (worst, args.runs)):
                jobs = [(si, args.scrape, seed, budget) for seed in range(1, n + 1)]
                runs = list(pool.map(_one, jobs, chunksize=10))
                caused = np.array([r["caused"] for r in runs], dtype=float)
                sem = float(caused.std(ddof=1) / np.sqrt(len(caused))) if len(caused) > 1 else 0.0
                row[si] = (float(caused.mean()), float(np.mean([r["canary_requests"] for r in runs])), sem)
            if budget == 0:
                planned = row[healthy][1]
            share = row[healthy][1] / planned if planned else None
            print(
                f"{budget:>6g}  {row[mild][0]:>9.2f}  {row[bad][0]:>10.2f}  {row[worst][0]:>10.2f}  "
                f"{'-' if share is None else f'{share:.0%}':>16}",
                flush=True,
            )
            sweep.append(
                {
                    "budget": budget,
                    "mild_failed_mean": row[mild][0],
                    "mild_failed_sem": row[mild][2],
                    "bad_failed_mean": row[bad][0],
                    "catastrophic_failed_mean": row[worst][0],
                    "healthy_canary_requests_mean": row[healthy][1],
                    "healthy_exposure_share": share,
                }
            )
    fits = [
        r["budget"]
        for r in sweep
        if r["budget"] > 0 and r["mild_failed_mean"] + r["mild_failed_sem"] <= limit
    ]
    chosen = max(fits, default=None)
    print(f"largest budget with the 2% canary within 2x the floor by more than one standard error: {chosen}")
    path = write(
        "detection_budget",
        {
            "scrape_s": args.scrape,
            "runs": args.runs,
            "healthy_runs": args.healthy,
            "mild_limit": limit,
            "sweep": sweep,
            "chosen": chosen,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
