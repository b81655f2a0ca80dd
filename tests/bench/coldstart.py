"""Cold start: process spawn -> first CloudEvent answered 200, per function, next to hello-world.

Each run spawns `functions-framework --target T --source FILE` on a free port and POSTs a binary-mode
CloudEvent every 5 ms until one is answered 200. Runs are interleaved (hello, f1, f2, ..., hello, ...)
so machine noise hits all of them alike; the verdict compares medians measured in this same run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.registry import suite

ROOT = Path(__file__).resolve().parents[2]
FF = str(Path(sys.executable).parent / "functions-framework")
TARGET_RATIO = 1.3

FUNCTIONS: dict[str, tuple[str, str, str]] = {  # name -> (source, CloudEvent type, JSON data)
    "hello-world": (str(Path(__file__).with_name("hello.py")), "dev.example.hello", "{}"),
    "release_tick": (str(ROOT / "functions/release_tick.py"), "dev.graylane.release.tick", "{}"),
    "release_start": (str(ROOT / "functions/release_start.py"), "dev.graylane.image.pushed",
                      '{"repository": "registry.example.com/unknown", "tag": "v1", "source": "generic"}'),
    "release_command": (str(ROOT / "functions/release_command.py"), "dev.graylane.release.command",
                        '{"action": "pause", "actor": {"user": "alice", "via": "cli"}}'),
    "protection": (str(ROOT / "functions/protection.py"), "dev.graylane.alert.firing",
                   '{"fingerprint": "abc", "alertname": "HighErrorRate", "status": "firing", "labels": {}, '
                   '"annotations": {}, "startsAt": "2026-11-23T08:00:00Z"}'),
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cold_start(name: str, env: dict[str, str]) -> float:
    source, ce_type, data = FUNCTIONS[name]
    port = _free_port()
    headers = {"ce-specversion": "1.0", "ce-type": ce_type, "ce-source": "/bench", "ce-id": f"bench-{port}",
               "ce-subject": "prod/nope" if name != "hello-world" else "x", "Content-Type": "application/json"}
    started = time.perf_counter()
    target = "hello" if name == "hello-world" else name
    proc = subprocess.Popen([FF, "--target", target, "--source", source, "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while time.perf_counter() - started < 30:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/", body=data, headers=headers)
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.perf_counter() - started
                raise RuntimeError(f"{name} answered {status}")
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                time.sleep(0.005)
        raise RuntimeError(f"{name} did not answer within 30 s")
    finally:
        proc.terminate()
        proc.wait(10)


@suite("coldstart")
def bench_coldstart(args: argparse.Namespace) -> dict[str, Any]:
    runs = 3 if args.quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GRAYLANE_STORE": f"sqlite:///{tmp}/state.db",
               "GRAYLANE_POLICIES": str(ROOT / "infra/examples")}  # fmt: skip
        # byte-compiled like an installed image (pip compiles site-packages; our sources need it too)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "functions")], check=True)
        for name in FUNCTIONS:  # warm-up: byte-code caches and the page cache
            cold_start(name, env)
        samples: dict[str, list[float]] = {n: [] for n in FUNCTIONS}
        for _ in range(runs):
            for name in FUNCTIONS:
                samples[name].append(cold_start(name, env))
    medians = {n: statistics.median(v) for n, v in samples.items()}
    base = medians["hello-world"]
    rows = []
    for name, med in medians.items():
        ratio = med / base
        verdict = "-" if name == "hello-world" else ("ok" if ratio <= TARGET_RATIO else "MISS")
        rows.append((f"cold start {name} (median of {runs})", f"{med * 1000:.0f} ms ({ratio:.2f}x)",
                     "baseline" if name == "hello-world" else f"<= {TARGET_RATIO}x", verdict))  # fmt: skip
    return {"runs": runs, "samples_s": samples, "median_s": medians,
            "ratio": {n: m / base for n, m in medians.items()}, "rows": rows}  # fmt: skip
