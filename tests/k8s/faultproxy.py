"""Fault-injection reverse proxy in front of the test kube-apiserver.

Plain HTTP on 127.0.0.1 towards the client, HTTPS (unverified) towards the apiserver. It runs an aiohttp
server in a background thread with its own event loop, so sync clients can call through it. Responses,
watch streams included, are passed through chunk by chunk.

Faults, per rule (first matching rule with hits left wins):
  status         answer this HTTP status with a Kubernetes Status body; the request is NOT forwarded,
                 so the state is unchanged (a refused write really is refused)
  delay          wait before forwarding (the body is read first, and the request is forwarded even if the
                 client gave up meanwhile: "the client timed out but the write happened")
  lose_response  forward, let the apiserver apply it, then drop the connection without an answer
                 (with `delay`: hang that long after applying, then drop)
  drop           hang `delay` seconds then drop the connection without forwarding (a request lost in transit)
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from tests.k8s.cluster import make_configuration, write_kubeconfig

if TYPE_CHECKING:
    from kubernetes import client as k8s

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
CHAOS_KINDS = ("500", "409", "429", "503", "timeout", "lost", "slow")


def status_body(
    code: int, message: str = "injected fault", retry_after: float | None = None
) -> dict[str, Any]:
    """A Status object as the apiserver sends it, with the reason the client maps to its exception."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "InternalError" if code >= 500 else "BadRequest"),
        "code": code,
    }
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": int(retry_after)}
    return body


@dataclass
class FaultRule:
    method: str | None = None  # None: any method
    path: str | None = None  # regex searched in the URL path (no query string); None: any path
    status: int | None = None
    delay: float = 0.0
    lose_response: bool = False
    drop: bool = False
    times: int | None = 1  # None: forever
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected fault"
    hits: int = 0

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path) if self.path else None

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return self._regex is None or self._regex.search(path) is not None

    @property
    def label(self) -> str:
        if self.status:
            return str(self.status)
        if self.lose_response:
            return "lost"
        if self.drop:
            return "timeout"
        return f"delay {self.delay:g}s"


@dataclass
class Chaos:
    rate: float
    kinds: tuple[str, ...]
    rng: random.Random
    method: str | None = None
    path: str | None = None
    timeout: float = 2.0  # how long a "timeout" / "slow" fault hangs
    include_watch: bool = False

    def pick(self, method: str, path: str, is_watch: bool) -> FaultRule | None:
        if is_watch and not self.include_watch:
            return None
        if self.method and self.method.upper() != method.upper():
            return None
        if self.path and re.search(self.path, path) is None:
            return None
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        if kind == "lost":
            return FaultRule(lose_response=True)
        if kind == "timeout":
            return FaultRule(drop=True, delay=self.timeout)
        if kind == "slow":
            return FaultRule(delay=self.timeout)
        code = int(kind)
        return FaultRule(status=code, headers={"Retry-After": "1"} if code == 429 else {})


@dataclass(frozen=True)
class LogEntry:
    method: str
    path: str
    query: str
    status: int | None  # None: no answer reached the client (lost / dropped)
    fault: str | None  # None: passed through untouched
    seconds: float
    content_type: str | None = None  # as the client sent it (None: no header)


class FaultProxy:
    """`FaultProxy(upstream).start()`; `.url` is the address clients use; `.stop()` ends it."""

    def __init__(self, upstream: str, verify_ssl: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.verify_ssl = verify_ssl
        self.url = ""
        self._rules: list[FaultRule] = []
        self._chaos: Chaos | None = None
        self._log: list[LogEntry] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _start(self) -> int:
        self._session = ClientSession(
            connector=TCPConnector(ssl=self.verify_ssl, limit=0),
            timeout=ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.5)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # aiohttp exposes no public accessor for the port
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rules ---------------------------------------------------------------------------------------------

    def add(
        self,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        delay: float = 0.0,
        times: int | None = 1,
        lose_response: bool = False,
        drop: bool = False,
        headers: dict[str, str] | None = None,
        message: str = "injected fault",
    ) -> FaultRule:
        """Add a rule; 429 gets `Retry-After: 1` unless headers say otherwise. Returns it (see `.hits`)."""
        if status is None and not delay and not lose_response and not drop:
            raise ValueError("a fault rule needs status, delay, lose_response or drop")
        hdrs = dict(headers or {})
        if status == 429:
            hdrs.setdefault("Retry-After", "1")
        rule = FaultRule(method, path, status, delay, lose_response, drop, times, hdrs, message)
        with self._lock:
            self._rules.append(rule)
        return rule

    def chaos(
        self,
        rate: float = 0.3,
        kinds: Iterable[str | int] = ("500", "409", "timeout", "lost"),
        seed: int | None = None,
        method: str | None = None,
        path: str | None = None,
        timeout: float = 2.0,
        include_watch: bool = False,
    ) -> None:
        """Fault a `rate` fraction of matching requests with a random kind from `kinds`.

        Kinds: "500" "409" "429" "503" (answered, not forwarded), "timeout" (hang `timeout` s, drop, not
        forwarded), "lost" (applied, answer lost), "slow" (forwarded after `timeout` s). Explicit rules win.
        Watch requests are spared unless include_watch. Seeded, so a failing run can be replayed.
        """
        names = tuple(str(k) for k in kinds)
        unknown = set(names) - set(CHAOS_KINDS)
        if unknown or not names:
            raise ValueError(f"chaos kinds must be among {CHAOS_KINDS}, got {sorted(unknown) or 'none'}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"chaos rate must be in [0, 1], got {rate}")
        with self._lock:
            self._chaos = Chaos(rate, names, random.Random(seed), method, path, timeout, include_watch)

    def clear(self) -> None:
        """Remove all rules and chaos (the log is kept)."""
        with self._lock:
            self._rules.clear()
            self._chaos = None

    @property
    def log(self) -> list[LogEntry]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def faults(self) -> list[LogEntry]:
        return [e for e in self.log if e.fault is not None]

    def _pick(self, method: str, path: str, is_watch: bool) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
            return self._chaos.pick(method, path, is_watch) if self._chaos else None

    def _record(self, request: web.Request, status: int | None, fault: str | None, started: float) -> None:
        entry = LogEntry(
            request.method,
            request.path,
            request.query_string,
            status,
            fault,
            time.monotonic() - started,
            request.headers.get("Content-Type"),
        )
        with self._lock:
            self._log.append(entry)

    # -- request handling ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await request.read()  # before any delay: the write is "sent" even if the client gives up
        is_watch = request.query.get("watch", "").lower() in ("1", "true")
        rule = self._pick(request.method, request.path, is_watch)
        fault = rule.label if rule else None
        if rule and rule.delay and not rule.lose_response:
            await asyncio.sleep(rule.delay)
        if rule and rule.drop:
            self._record(request, None, fault, started)
            return self._drop(request)
        if rule and rule.status:
            self._record(request, rule.status, fault, started)
            return web.json_response(
                status_body(rule.status, rule.message, _retry_after(rule.headers)),
                status=rule.status,
                headers=rule.headers,
            )
        if rule and rule.lose_response:
            # shielded: the write must reach the apiserver even if the client hangs up meanwhile
            status = await asyncio.shield(self._forward_and_discard(request, body))
            if rule.delay:
                await asyncio.sleep(rule.delay)
            self._record(request, None, f"{fault} (applied: {status})", started)
            return self._drop(request)
        return await self._forward(request, body, fault, started)

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}

    async def _forward_and_discard(self, request: web.Request, body: bytes) -> int:
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=self._upstream_headers(request),
            data=body or None,
            skip_auto_headers=["Content-Type", "Accept-Encoding"],
        ) as resp:
            await resp.read()
            return resp.status

    async def _forward(
        self, request: web.Request, body: bytes, fault: str | None, started: float
    ) -> web.StreamResponse:
        assert self._session is not None
        # skip_auto_headers: the client sends creates without Content-Type and the apiserver reads that
        # as JSON; aiohttp would add application/octet-stream and get a 415 (research §5).
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=self._upstream_headers(request),
                data=body or None,
                skip_auto_headers=["Content-Type", "Accept-Encoding"],
            ) as resp:
                self._record(request, resp.status, fault, started)
                headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
                out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
                if resp.headers.get("Content-Length") is not None:
                    out.content_length = int(resp.headers["Content-Length"])
                try:
                    await out.prepare(request)
                    async for chunk in resp.content.iter_any():
                        await out.write(chunk)  # watch events flow as they come
                    await out.write_eof()
                except ConnectionError:
                    # the client went away (gave up waiting, or ended its watch): nothing left to deliver
                    raise asyncio.CancelledError from None
                return out
        except ClientError as exc:
            self._record(request, 503, f"upstream unreachable: {exc}", started)
            return web.json_response(
                status_body(503, f"fault proxy: apiserver unreachable: {exc}"), status=503
            )

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the connection without a response line: the client sees a disconnect, not an HTTP error."""
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats a cancelled handler on a dead connection quietly


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def describe(entries: Iterable[LogEntry]) -> str:
    """Readable log for assertion messages."""
    return json.dumps([f"{e.method} {e.path} -> {e.status} [{e.fault or '-'}]" for e in entries], indent=1)


class Faults(FaultProxy):
    """A FaultProxy in front of the test apiserver, with client settings that go through it.

    `.configuration` / `.kubeconfig` / `.api_client()` talk to the proxy with the cluster's token;
    `.add()`, `.chaos()`, `.clear()` and `.log` drive and inspect it.
    """

    def __init__(self, upstream: str, token: str, workdir: Path) -> None:
        super().__init__(upstream)
        self.token = token
        self._workdir = workdir
        self.kubeconfig = workdir / "kubeconfig-faults"

    def start(self) -> Faults:
        super().start()
        self.configuration = make_configuration(self.url, self.token)
        write_kubeconfig(self.kubeconfig, self.url, self.token)
        return self

    @property
    def host(self) -> str:
        return self.url

    def new_configuration(self) -> k8s.Configuration:
        return make_configuration(self.url, self.token)

    def api_client(self) -> k8s.ApiClient:
        from kubernetes import client

        return client.ApiClient(self.new_configuration())
