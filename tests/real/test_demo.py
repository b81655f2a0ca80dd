"""`graylane demo --fast` end to end on the real local stack (HAProxy, Prometheus, Alertmanager, hey), as a user runs it.

The CLI runs in a subprocess; what it did is read back from the report it writes (HTML plus its .json data),
and every process it started (the PIDs are in that data) must be gone when it returns, also when it is
interrupted halfway.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
ROLLBACK_WITHIN = 10.0  # seconds from v3's first traffic to rolled-back


def demo(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions.cli",
            "demo",
            "--fast",
            "--no-live",
            "--report",
            str(tmp_path / "report.html"),
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def pid_alive(pid: int) -> bool:
    """Is `pid` a live process (not a zombie)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def left_running(data: dict[str, Any]) -> list[int]:
    return [pid for pid in data["pids"] if pid_alive(pid)]


def test_the_fast_demo_promotes_v2_rolls_back_v3_and_tightens_then_relaxes(tmp_path: Path) -> None:
    proc = demo(tmp_path)
    out, _ = proc.communicate(timeout=170)
    assert proc.returncode == 0, out[-4000:]
    assert "elapsed" in out and str(tmp_path / "report.html") in out
    data = json.loads((tmp_path / "report.json").read_text())
    result = data["result"]
    assert result["promoted_v2"] and result["rolled_back_v3"], result
    assert 0 < result["rollback_seconds"] <= ROLLBACK_WITHIN, result
    assert result["limit_tightened"] < result["limit_base"] == result["limit_relaxed"], result
    assert result["elapsed"] < 90, result

    history = data["history"]
    assert any(h["action"] == "promoted" and h["release"] == "shop-1" for h in history)
    assert any(h["phaseTo"] == "rolled-back" and h["release"] == "shop-2" for h in history)
    assert [(g["version"], g["gate"], g["user"]) for g in data["gates"]] == [
        ("v2.0.0", "ab-test", "demo-operator"),
        ("v2.0.0", "promote", "demo-operator"),
        ("v3.0.0", "ab-test", "demo-operator"),
    ]
    assert {v["verdict"] for v in data["verdicts"] if v["version"] == "v3.0.0"} >= {"fail"}
    canary_success = [m["canarySuccess"] for m in data["metrics"] if m.get("canarySuccess") is not None]
    assert min(canary_success) < 0.9 < max(canary_success)  # v3's errors were measured, v2's success too
    assert any(s["rateLimit"] == result["limit_tightened"] for s in data["states"])
    assert result["traffic"]["plain"].get("429", 0) > 0  # the tightened limit really answered 429

    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 5 and "<td>demo-operator</td>" in page and 'class="verdict fail"' in page
    assert len(data["pids"]) >= 9  # haproxy, prometheus, alertmanager, 2 hey, stable, canary, previews
    assert left_running(data) == []


def test_an_interrupted_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    proc = demo(tmp_path)
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "waits at gate ab-test" not in seen:  # halfway: stack, serve, hey and workloads are all running
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, f"the demo did not reach gate ab-test: {seen[-3000:]}"
        seen += line
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert "interrupted" in seen + out
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["pids"]) >= 6
    assert left_running(data) == []
