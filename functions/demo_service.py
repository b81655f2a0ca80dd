"""The small service the local demo releases: one process per version, stable or canary, behind HAProxy.

    python -m functions.demo_service --name canary --version v2.0.0 --port 18082 [--error-rate 0.3] [--delay 0.02]

Every answer carries `X-Backend: <name>` and `X-Version: <version>`, so a client can count the split.
Its behaviour (error rate, added delay) is set at start and can change while it runs over
`GET /_ctl?error_rate=0.5&delay=0.03`; `GET /healthz` always answers 200 (not counted).

Threaded, keep-alive HTTP/1.1 with Nagle off (without it the header and body writes meet delayed ACKs
and a proxy gets ~28 rps). The listening socket sets SO_REUSEPORT, so a new version can start on the
same port before the old one stops: a promotion swaps the stable process without refusing connections.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlsplit


@dataclass
class Behaviour:
    error_rate: float = 0.0
    delay: float = 0.0  # seconds added to every answer
    served: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: DemoServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/_ctl":
            self._control(parse_qs(url.query))
            return
        if url.path == "/healthz":
            self._reply(200, f"{self.server.name} {self.server.version} ready\n")
            return
        b = self.server.behaviour
        if b.delay > 0:
            time.sleep(b.delay)
        fail = b.error_rate > 0 and random.random() < b.error_rate
        with b.lock:
            b.served += 1
            b.failed += fail
        self._reply(
            500 if fail else 200, f"{self.server.name} {self.server.version} {'error' if fail else 'ok'}\n"
        )

    do_POST = do_GET

    def _control(self, query: dict[str, list[str]]) -> None:
        b = self.server.behaviour
        try:
            if "error_rate" in query or "err" in query:
                b.error_rate = min(1.0, max(0.0, float((query.get("error_rate") or query["err"])[0])))
            if "delay" in query:
                b.delay = max(0.0, float(query["delay"][0]))
        except ValueError:
            self._reply(400, "error_rate and delay must be numbers\n")
            return
        self._reply(200, f"error_rate={b.error_rate} delay={b.delay} served={b.served} failed={b.failed}\n")

    def _reply(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("X-Backend", self.server.name)
        self.send_header("X-Version", self.server.version)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        if self.server.draining:
            self.send_header("Connection", "close")  # a retiring version hands its clients over
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        pass  # one line per request would drown everything else


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    allow_reuse_port = True

    def __init__(
        self, name: str, version: str, port: int, behaviour: Behaviour, host: str = "127.0.0.1"
    ) -> None:
        self.name = name
        self.version = version
        self.behaviour = behaviour
        self.draining = False
        super().__init__((host, port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A proxy dropping its idle keep-alive connection is normal; anything else is still reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve(
    name: str, version: str, port: int, error_rate: float = 0.0, delay: float = 0.0, host: str = "127.0.0.1"
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting, close keep-alive connections, exit."""
    server = DemoServer(name, version, port, Behaviour(error_rate=error_rate, delay=delay), host)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    print(f"{name} {version} on http://{host}:{server.server_address[1]}", flush=True)
    stop.wait()
    server.draining = True
    server.shutdown()
    server.server_close()  # the new version (SO_REUSEPORT) now gets every new connection
    time.sleep(0.3)  # answers in flight finish with Connection: close


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m functions.demo_service", description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="stable, canary or a preview name (X-Backend)")
    p.add_argument("--version", required=True, help="the version this process runs (X-Version)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    p.add_argument("--delay", type=float, default=0.0, help="seconds added to every answer")
    args = p.parse_args(argv)
    serve(args.name, args.version, args.port, args.error_rate, args.delay, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
