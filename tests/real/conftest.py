"""Real HAProxy 2.6 with two real backends (stable and canary) on free loopback ports, per module.

`haproxy` is Debian's package (infra/local/install-deps.sh installs it); a missing binary fails the
tests with that hint rather than skipping them.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports
from functions.providers.routers.base import RouteTarget
from functions.providers.routers.haproxy import HAProxyRouter, install_config
from tests.real.backends import Backend, start_backend


class Client:
    """One keep-alive HTTP/1.1 connection to the proxy, from a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.port, self.source, self.timeout = port, source, timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str = "/", headers: dict[str, str | bytes] | None = None) -> tuple[int, str]:
        """(status, X-Backend) of one request; a transport failure raises (callers count it)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout, source_address=(self.source, 0)
            )
        try:
            self._conn.request("GET", path, headers=headers or {})
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return resp.status, resp.getheader("X-Backend", "")

    def split(self, n: int, headers: dict[str, str | bytes] | None = None) -> Counter[str]:
        """Counts of X-Backend (or 'status <code>' for a response no backend answered) over n requests."""
        seen: Counter[str] = Counter()
        for _ in range(n):
            status, backend = self.get(headers=headers)
            seen[backend if status == 200 else f"status {status}"] += 1
        return seen

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class HAProxyApp:
    """A running HAProxy in front of stable + canary, and the graylane router driving it."""

    port: int
    process: subprocess.Popen[bytes]
    router: HAProxyRouter
    stable: Backend
    canary: Backend
    directory: Path
    target: RouteTarget = field(
        default_factory=lambda: RouteTarget(namespace="real", app="web", stable="stable", canary="canary")
    )

    def client(self, source: str = "127.0.0.1") -> Client:
        return Client(self.port, source)


def _wait_ready(app: HAProxyApp, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            if port_taken(log.read_text(errors="replace")):
                raise PortTaken(f"haproxy: 127.0.0.1:{app.port} was taken before it could bind it")
            pytest.fail(f"haproxy exited with {app.process.returncode}: {log.read_text()}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", app.port), timeout=0.2):
                app.router.pid()
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"haproxy not ready on 127.0.0.1:{app.port} within 10 s: {log.read_text()}", pytrace=False)


@pytest.fixture(scope="module")
def haproxy_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxyApp]:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.fail(
            "haproxy is not installed: run infra/local/install-deps.sh (Debian package haproxy)",
            pytrace=False,
        )
    directory = tmp_path_factory.mktemp("haproxy")
    stable, canary = start_backend("stable"), start_backend("canary")  # on ports they bound themselves
    started: list[HAProxyApp] = []

    def start() -> HAProxyApp:
        port = free_port()
        cfg = install_config(
            directory,
            bind=f"127.0.0.1:{port}",
            stable=f"127.0.0.1:{stable.port}",
            canary=f"127.0.0.1:{canary.port}",
        )
        log = directory / "haproxy.log"
        with log.open("wb") as out:
            process = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
        app = HAProxyApp(port, process, HAProxyRouter(directory / "admin.sock"), stable, canary, directory)
        started.append(app)
        _wait_ready(app, log, time.monotonic() + 10)
        return app

    try:
        app = retry_on_fresh_ports("haproxy", start, lambda: None)  # start() picks its port afresh
        yield app
    finally:
        for each in started:
            each.process.terminate()
            try:
                each.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                each.process.kill()
                each.process.wait()
        stable.stop()
        canary.stop()
