"""Real HTTP requests through Traefik: one keep-alive connection, a Host header, the answering version.

    client = Client(proxy.port, host="pro.coding")
    client.get(headers={"location": "shenzhen"})   # (200, "v2")
    client.split(5000)                             # Counter({"v1": 4000, "v2": 1000})

A response no backend answered (Traefik's own 404, 429, 502, 503) counts as "status <code>".
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass


class Client:
    def __init__(
        self, port: int, host: str = "pro.coding", source: str = "127.0.0.1", timeout: float = 5.0
    ) -> None:
        self.port, self.host, self.source, self.timeout = port, host, source, timeout
        self._conn: http.client.HTTPConnection | None = None
        self.backend = ""  # X-Backend of the last answer: the pod (<namespace>/<pod>) that served it

    def get(self, path: str = "/", headers: Mapping[str, str | bytes] | None = None) -> tuple[int, str]:
        """(status, X-Version) of one request; a transport failure raises (callers count it)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout, source_address=(self.source, 0)
            )
        try:
            self._conn.request("GET", path, headers={"Host": self.host, **(headers or {})})
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        self.backend = resp.getheader("X-Backend", "")
        return resp.status, resp.getheader("X-Version", "")

    def answer(self, headers: Mapping[str, str | bytes] | None = None) -> str:
        status, version = self.get(headers=headers)
        return version if status == 200 and version else f"status {status}"

    def split(self, n: int, headers: Mapping[str, str | bytes] | None = None) -> Counter[str]:
        """Counts of the answering version (or "status <code>") over n sequential requests."""
        seen: Counter[str] = Counter()
        for _ in range(n):
            seen[self.answer(headers)] += 1
        return seen

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Hit:
    at: float  # time.monotonic()
    status: int  # 0: a transport failure
    version: str


class Traffic:
    """A paced client loop (about `rps` requests per second, or as fast as it goes for rps=0) until stopped."""

    def __init__(
        self,
        port: int,
        host: str = "pro.coding",
        rps: float = 0.0,
        source: str = "127.0.0.1",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.client = Client(port, host, source, timeout=3.0)
        self.rps, self.headers = rps, dict(headers or {})
        self.hits: list[Hit] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{source}", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    def _run(self) -> None:
        gap = 1.0 / self.rps if self.rps else 0.0
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                status, version = self.client.get(headers=self.headers)
            except (OSError, http.client.HTTPException) as err:
                status, version = 0, ""
                self.failures.append(repr(err))
            with self._lock:
                self.hits.append(Hit(time.monotonic(), status, version))
            if gap:
                due = max(due + gap, time.monotonic() - 0.1)  # behind by more than 0.1 s: don't burst
                time.sleep(max(0.0, due - time.monotonic()))

    def since(self, t: float, until: float = float("inf")) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if t <= h.at < until]

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(
            h.version if h.status == 200 and h.version else f"status {h.status}"
            for h in self.since(since, until)
        )
