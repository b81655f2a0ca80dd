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

import sys
import threading
import time

from functions.demo_service import Behaviour, DemoServer


class Backend:
    """A running backend: `.port`, `.set(error_rate=..., delay=...)`, `.served`, `.stop()`."""

    def __init__(self, name: str, port: int = 0, error_rate: float = 0.0, delay: float = 0.0) -> None:
        self.name = name
        self._behaviour = Behaviour(error_rate=error_rate, delay=delay)
        self._server = DemoServer(name, "", port, self._behaviour)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"backend-{name}",
            daemon=True,
        )
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
