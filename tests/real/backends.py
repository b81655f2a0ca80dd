"""A tiny HTTP backend standing in for the stable or canary version behind a real proxy.

Every response carries `X-Backend: <name>`, so a client can count the split. The error rate and an
added delay can change while it runs, either from Python (`backend.set(...)`) or over HTTP
(`GET /_ctl?error_rate=0.5&delay=0.03`). Threaded, keep-alive (HTTP/1.1) and with Nagle off: without
`disable_nagle_algorithm` the header and body writes meet delayed ACKs and a proxy gets ~28 rps.

    backend = start_backend("canary", error_rate=0.2)
    ...  # proxy to 127.0.0.1:{backend.port}
    backend.stop()
"""

from __future__ import annotations

import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class _Behaviour:
    error_rate: float = 0.0
    delay: float = 0.0
    served: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/_ctl":
            self._control(parse_qs(url.query))
            return
        behaviour = self.server.behaviour
        if behaviour.delay > 0:
            time.sleep(behaviour.delay)
        fail = behaviour.error_rate > 0 and random.random() < behaviour.error_rate
        with behaviour.lock:
            behaviour.served += 1
            behaviour.failed += fail
        self._reply(500 if fail else 200, f"{self.server.name} {'error' if fail else 'ok'}\n")

    do_POST = do_GET

    def _control(self, query: dict[str, list[str]]) -> None:
        behaviour = self.server.behaviour
        if "error_rate" in query or "err" in query:
            behaviour.error_rate = float((query.get("error_rate") or query["err"])[0])
        if "delay" in query:
            behaviour.delay = float(query["delay"][0])
        self._reply(200, f"error_rate={behaviour.error_rate} delay={behaviour.delay}\n")

    def _reply(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("X-Backend", self.server.name)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        pass  # one line per request would drown test output


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, port: int, behaviour: _Behaviour) -> None:
        self.name = name
        self.behaviour = behaviour
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A proxy dropping its idle keep-alive connection is normal; anything else is still reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Backend:
    """A running backend: `.port`, `.set(error_rate=..., delay=...)`, `.served`, `.stop()`."""

    def __init__(self, name: str, port: int = 0, error_rate: float = 0.0, delay: float = 0.0) -> None:
        self.name = name
        self._behaviour = _Behaviour(error_rate=error_rate, delay=delay)
        self._server = _Server(name, port, self._behaviour)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"backend-{name}", daemon=True)  # fmt: skip
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def served(self) -> int:
        return self._behaviour.served

    @property
    def failed(self) -> int:
        return self._behaviour.failed

    def set(self, error_rate: float | None = None, delay: float | None = None) -> None:
        if error_rate is not None:
            self._behaviour.error_rate = error_rate
        if delay is not None:
            self._behaviour.delay = delay

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_backend(name: str, port: int | None = None, error_rate: float = 0.0, delay: float = 0.0) -> Backend:
    """Start a backend on 127.0.0.1 (a free port unless `port` is given) in a daemon thread."""
    return Backend(name, port or 0, error_rate=error_rate, delay=delay)


if __name__ == "__main__":  # standalone: python -m tests.real.backends NAME PORT
    b = start_backend(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(f"{b.name} on {b.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        b.stop()
