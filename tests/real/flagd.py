"""A real flagd (v0.11.2, built from its Go module by tests/k8s/tools/build.sh flagd) watching a flag file, and
the real OpenFeature Python SDK with its flagd provider reading the same file in-process.

`Flagd.variants(users)` asks flagd's evaluation API (Connect's HTTP/JSON protocol, on one keep-alive
connection) for each user; `Sdk.variants(users)` asks the SDK. Both answer what a running app would get.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports

ROOT = Path(__file__).resolve().parents[2]


def flagd_binary() -> Path:
    """flagd from the tools cache (built on first use; `make flagd` builds it ahead)."""
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "tests/k8s/tools/build.sh"), "flagd"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"building flagd failed: {err}; run `make flagd`") from err
    if done.returncode != 0:
        raise RuntimeError(f"building flagd failed (run `make flagd`, it needs Go): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "flagd"


@dataclass
class Flagd:
    binary: Path
    flags: Path
    log: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _conn: http.client.HTTPConnection | None = None

    def start(self) -> Flagd:
        def launch() -> Flagd:
            self.ports = {k: free_port() for k in ("port", "management-port", "ofrep-port", "sync-port")}
            args = [
                str(self.binary),
                "start",
                "--uri",
                f"file:{self.flags}",
                *(f"--{k}={v}" for k, v in self.ports.items()),
            ]
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-3000:]
                    if port_taken(tail):
                        raise PortTaken(tail)
                    raise RuntimeError(f"flagd exited {self.process.returncode}: {tail}")
                try:
                    self.evaluate("__ready__", "nobody")
                    return self
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError(f"flagd did not answer within 20 s: {self.log.read_text()[-3000:]}")

        return retry_on_fresh_ports("flagd", launch, self.stop)

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def evaluate(self, key: str, user: str | None, kind: str = "Boolean") -> dict[str, Any]:
        """flagd's answer for `key` and the user (None: a context without targetingKey)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.ports["port"], timeout=5)
        context = {} if user is None else {"targetingKey": user}
        body = json.dumps({"flagKey": key, "context": context})
        try:
            self._conn.request(
                "POST",
                f"/flagd.evaluation.v1.Service/Resolve{kind}",
                body,
                {"Content-Type": "application/json"},
            )
            answer = self._conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            raise
        result: dict[str, Any] = json.loads(data or b"{}")
        return result

    def variants(self, key: str, users: Iterable[str]) -> dict[str, str]:
        return {u: str(self.evaluate(key, u).get("variant", "")) for u in users}


class Sdk:
    """The OpenFeature SDK with the flagd provider in-process on a file (its watcher polls every `poll_ms`)."""

    def __init__(self, flags: Path, poll_ms: int = 100) -> None:
        from openfeature import api
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType

        self.api = api
        api.set_provider(
            FlagdProvider(
                resolver_type=ResolverType.IN_PROCESS,
                offline_flag_source_path=str(flags),
                deadline_ms=poll_ms,
            )
        )
        self.client = api.get_client()
        until(
            lambda: (
                self.details("__ready__", "x").error_code is None
                or str(self.details("__ready__", "x").error_code) != "ErrorCode.PROVIDER_NOT_READY"
            ),
            10,
            "SDK ready",
        )

    def details(self, key: str, user: str | None) -> Any:
        from openfeature.evaluation_context import EvaluationContext

        context = EvaluationContext(targeting_key=user) if user is not None else EvaluationContext()
        return self.client.get_boolean_details(key, False, context)

    def variants(self, key: str, users: Iterable[str]) -> dict[str, str]:
        return {u: str(self.details(key, u).variant) for u in users}

    def close(self) -> None:
        self.api.shutdown()


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
