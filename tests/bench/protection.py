"""Alert-driven protection: error burst -> rate limit tightened in HAProxy, on real components.

The stack of tests/real/protection_stack.py (Prometheus with 1 s scrape and evaluation, Alertmanager
with group_wait 0 s, the gateway, the protection runner, HAProxy). Each run: ~150 rps from one client,
the stable backend starts failing every request (`/_ctl?error_rate=1`), and the clock runs from the
first 500 the client sees to the moment a 10 ms poll of the admin socket finds the tightened limit in
`limits.map`. Then errors stop and the run waits for the limit to relax before the next one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.registry import suite

TARGET_S = 2.0
WARM_UP_S = 6.0  # Prometheus needs a full [5s] rate window of traffic before the ratio is meaningful


def _one(stack: Any, heavy: Any) -> float:
    from tests.real.protection_stack import wait_for

    burst = time.monotonic()
    stack.errors("stable", 1.0)
    first_500 = wait_for("first 500", lambda: heavy.first(500, burst), timeout=5)
    wait_for("limit tightened", lambda: stack.protection().get("rate"), timeout=20)
    tightened = time.monotonic()
    stack.errors("stable", 0.0)
    wait_for("limit relaxed", lambda: stack.protection() == {}, timeout=20)
    time.sleep(1.0)  # let the 5 s rate window forget part of the burst before the next one
    return tightened - first_500


@suite("protection")
def bench_protection(args: argparse.Namespace) -> dict[str, Any]:
    from tests.real.protection_stack import ProtectionStack

    runs = 2 if args.quick else 5
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="graylane-protection-") as tmp:
        with ProtectionStack(Path(tmp), hold_down=1.0) as stack:
            heavy, light = stack.traffic("127.0.0.3", rps=150), stack.traffic("127.0.0.4", rps=20)
            try:
                time.sleep(WARM_UP_S)
                samples = [_one(stack, heavy) for _ in range(runs)]
            finally:
                heavy.stop()
                light.stop()
    med, worst = statistics.median(samples), max(samples)
    rows = [
        (
            f"error burst -> HAProxy limit tightened (median of {runs})",
            f"{med:.2f} s",
            f"<= {TARGET_S:.0f} s",
            "ok" if med <= TARGET_S else "SLOW",
        ),
        (
            f"error burst -> HAProxy limit tightened (max of {runs})",
            f"{worst:.2f} s",
            f"<= {TARGET_S:.0f} s",
            "ok" if worst <= TARGET_S else "SLOW",
        ),
    ]
    return {
        "runs": runs,
        "samples_s": samples,
        "median_s": med,
        "max_s": worst,
        "target_s": TARGET_S,
        "scrape_interval_s": 1.0,
        "evaluation_interval_s": 1.0,
        "rows": rows,
    }
