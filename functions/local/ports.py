"""Ports for the local stack and the tests, without losing to whoever binds first.

Choosing a "free" port means binding port 0, reading the number and closing the socket; the component binds
it later, and anything else on the machine may take it in between (the first `make demo` on a fresh machine
lost Prometheus that way). Two answers, used everywhere a port is picked:

- what graylane serves itself binds first and keeps the socket (`bind_listener`, `functions.serve.bind_socket`);
- a component that binds on its own (HAProxy, Prometheus, Alertmanager, a demo service process) is started by
  `retry_on_fresh_ports`: when it fails because its address is in use (`port_taken` on its log or error),
  the ports are chosen again and it is started again, a few times.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import TypeVar

from functions.errors import NotReady

T = TypeVar("T")
ATTEMPTS = 5
# HAProxy "cannot bind socket (Address already in use)", Go's "bind: address already in use", Python's
# "[Errno 98] Address already in use"
_TAKEN = re.compile(r"address already in use|cannot bind socket|eaddrinuse|errno 98\b", re.IGNORECASE)


class PortTaken(NotReady):
    """A component could not listen: its address was taken between choosing the port and binding it."""


def free_port() -> int:
    """A port nothing listens on right now (it may be taken before it is used: see the module docstring)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(text: str) -> bool:
    """Does this log or error say a listen address was already in use?"""
    return _TAKEN.search(text) is not None


def bind_listener(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on host:port (0: any free port); the caller serves on it, so nothing races."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def retry_on_fresh_ports(
    what: str, start: Callable[[], T], reroll: Callable[[], None], attempts: int = ATTEMPTS
) -> T:
    """`start()`; each time it raises PortTaken, `reroll()` (choose new ports, rewrite configs) and start again.

    Any other failure, or the last PortTaken, is raised as it is.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except PortTaken as err:
            if attempt == attempts:
                raise PortTaken(f"{what}: its ports were taken {attempts} times in a row: {err}") from err
            reroll()
    raise AssertionError("unreachable")  # pragma: no cover
