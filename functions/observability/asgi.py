"""ASGI middleware for the gateway: count and time webhook deliveries, and answer `GET /metrics`.

Plain ASGI (no Starlette import) so it wraps any app. The `source` label is the route's source name,
canonicalised through the aliases; anything else becomes `unknown`, so a sender probing random paths
cannot grow the number of series.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from functions.observability import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HOOKS_PREFIX = "/hooks/"
METRICS_PATH = "/metrics"


class ObserveRequests:
    def __init__(
        self,
        app: ASGIApp,
        sources: Iterable[str] = (),
        aliases: Mapping[str, str] | None = None,
        metrics_path: str = METRICS_PATH,
    ) -> None:
        self.app = app
        known = set(sources)
        self.names = {name: name for name in known}
        self.names.update({alias: name for alias, name in (aliases or {}).items() if name in known})
        self.metrics_path = metrics_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self.metrics_path and scope["method"] in ("GET", "HEAD"):
            await self._metrics(scope, send)
            return
        if not path.startswith(HOOKS_PREFIX):
            await self.app(scope, receive, send)
            return
        source = self.names.get(path[len(HOOKS_PREFIX) :].split("/", 1)[0], "unknown")
        status = 500  # what the server answers if the app raises before responding
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            metrics.webhook(source, status, time.perf_counter() - started)

    async def _metrics(self, scope: Scope, send: Send) -> None:
        body = metrics.render().encode()
        headers = [
            (b"content-type", metrics.CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
