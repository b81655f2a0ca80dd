"""[port_race] A port chosen as free but taken before its component binds it: the component starts again on a
fresh port, and its peers are told (real HAProxy, Prometheus, Alertmanager and demo service processes).

The first `make demo` on a fresh machine died after 0.3 s with Prometheus' "bind: address already in use";
here the "someone else" is a plain listening socket held on the very port the stack chose.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.local import ports
from functions.local.providers import LocalProviders
from functions.local.stack import LocalStack
from functions.providers.workloads.base import WorkloadTarget

pytestmark = pytest.mark.real


def squat(port: int) -> socket.socket:
    """Someone else listening on 127.0.0.1:port (no SO_REUSEPORT, so nobody can share it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path, "alert-token-0123456789")
    yield stack
    stack.stop()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_port_race_the_local_stack_moves_every_component_whose_port_was_taken(stack: LocalStack) -> None:
    taken = {
        name: getattr(stack.ports, name) for name in ("haproxy", "metrics", "prometheus", "alertmanager")
    }
    squatters = [squat(port) for port in taken.values()]
    try:
        stack.start()
    finally:
        for s in squatters:
            s.close()

    for name, port in taken.items():
        assert getattr(stack.ports, name) != port, name
    assert get(f"{stack.prometheus}/-/ready")[0] == 200
    assert get(f"http://127.0.0.1:{stack.ports.alertmanager}/-/ready")[0] == 200
    # Prometheus was configured with the ports its peers finally got
    config = (stack.dir / "prometheus.yml").read_text()
    assert f"127.0.0.1:{stack.ports.alertmanager}" in config and f"127.0.0.1:{stack.ports.metrics}" in config
    from tests.real.protection_stack import wait_for

    wait_for(
        "Prometheus scraping HAProxy's exporter",
        lambda: f"127.0.0.1:{stack.ports.metrics}" in get(f"{stack.prometheus}/api/v1/targets")[1],
        timeout=10,
        every=0.2,
    )


def test_port_race_a_demo_service_whose_port_was_taken_starts_elsewhere_and_haproxy_follows(
    stack: LocalStack,
) -> None:
    stack.start()
    taken = stack.ports.stable
    squatter = squat(taken)
    providers = LocalProviders(stack.config({}), analysis=object())
    target = WorkloadTarget(namespace="demo", app="shop", stable="shop", canary="shop-canary")
    try:
        providers.workloads_.promote_stable(target, "docker.io/graylane/shop:v1.0.0")
        running = providers.workloads_.running["stable"]
        assert running.port != taken and providers.workloads_.config.stable_port == running.port
        status, body = get(f"{stack.url}/")  # through HAProxy: its stable server was re-addressed
        assert status == 200 and "v1.0.0" in body
    finally:
        squatter.close()
        providers.close()


def test_port_race_the_test_stacks_retry_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/real's ProtectionStack (and so AnalysisStack): the first port each component is given is taken."""
    from tests.real import protection_stack

    held: list[socket.socket] = []

    def first_one_taken() -> int:
        port = ports.free_port()
        if len(held) < 4:  # haproxy, metrics, alertmanager, prometheus: each gets a taken port first
            held.append(squat(port))
        return port

    monkeypatch.setattr(protection_stack, "free_port", first_one_taken)
    stack = protection_stack.ProtectionStack(tmp_path)
    try:
        stack.start()
        assert get(f"http://127.0.0.1:{stack.prometheus_port}/-/ready")[0] == 200
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {
            stack.haproxy_port,
            stack.metrics_port,
            stack.prometheus_port,
            stack.alertmanager_port,
        }
        status, body = get(f"http://127.0.0.1:{stack.alertmanager_port}/api/v2/status")
        assert status == 200 and json.loads(body)["config"]["original"]
    finally:
        stack.stop()
        for s in held:
            s.close()
