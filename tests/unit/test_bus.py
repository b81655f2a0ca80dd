"""MemoryBus in process, HttpBus against a real local HTTP server standing in for a Knative Broker."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cloudevents.http import CloudEvent, from_http

from functions import catalog
from functions.bus import Bus, HttpBus, MemoryBus, bus_from_env
from functions.core import events as ev
from functions.core.events import Emitted
from functions.errors import ConfigError, ProviderUnavailable


def command(i: int = 0, **attrs: Any) -> CloudEvent:
    return catalog.make_event(
        ev.RELEASE_COMMAND,
        "shop/web",
        {"action": "pause", "actor": {"user": "bob", "via": "cli"}},
        id=f"cli-{i}",
        source="/graylane/cli",
        **attrs,
    )


def emitted(type_: str = ev.RELEASE_PAUSED) -> CloudEvent:
    data = {
        "phase": "paused",
        "target": {"version": "v2", "image": "r/w:v2"},
        "origin": {"version": "v1", "image": "r/w:v1"},
    }
    return catalog.to_cloudevent(
        Emitted(type_, data), "shop/web", "web-3", "/graylane/functions/release_command", id="web-3/7/paused"
    )


# ---------------------------------------------------------------------------------------------- MemoryBus


def test_memory_bus_records_in_order_and_filters_by_type() -> None:
    bus = MemoryBus()

    bus.publish(command(1))
    bus.publish(emitted())
    bus.publish(command(2))

    assert [e["id"] for e in bus.events] == ["cli-1", "web-3/7/paused", "cli-2"]
    assert [e["id"] for e in bus.of_type(ev.RELEASE_COMMAND)] == ["cli-1", "cli-2"]
    bus.clear()
    assert bus.events == ()


def test_memory_bus_calls_subscribers_by_type_prefix() -> None:
    bus = MemoryBus()
    released: list[str] = []
    everything: list[str] = []
    bus.subscribe(f"{ev.PREFIX}.release.", lambda e: released.append(e["type"]))
    bus.subscribe("", lambda e: everything.append(e["type"]))

    bus.publish(emitted())
    bus.publish(
        catalog.make_event(
            ev.PROTECTION_CHANGED, "shop/web", {"app": "shop/web", "reason": "x", "alerts": []}
        )
    )

    assert released == [ev.RELEASE_PAUSED]
    assert everything == [ev.RELEASE_PAUSED, ev.PROTECTION_CHANGED]


def test_memory_bus_unsubscribe() -> None:
    bus = MemoryBus()
    seen: list[str] = []
    unsubscribe = bus.subscribe("", lambda e: seen.append(e["id"]))

    bus.publish(command(1))
    unsubscribe()
    unsubscribe()  # twice is harmless
    bus.publish(command(2))

    assert seen == ["cli-1"] and len(bus.events) == 2


def test_a_handler_may_publish_in_turn() -> None:
    bus = MemoryBus()

    def on_command(event: CloudEvent) -> None:  # a function emitting its follow-up event
        bus.publish(emitted())

    bus.subscribe(ev.RELEASE_COMMAND, on_command)
    bus.publish(command(1))

    assert [e["type"] for e in bus.events] == [ev.RELEASE_COMMAND, ev.RELEASE_PAUSED]


def test_a_failing_handler_fails_the_publish() -> None:
    bus = MemoryBus()

    def broken(event: CloudEvent) -> None:
        raise RuntimeError("handler broke")

    bus.subscribe("", broken)
    with pytest.raises(RuntimeError, match="handler broke"):
        bus.publish(command(1))
    assert len(bus.events) == 1  # recorded before delivery


def test_memory_bus_is_thread_safe() -> None:
    bus = MemoryBus()
    delivered: list[str] = []
    lock = threading.Lock()

    def count(event: CloudEvent) -> None:
        with lock:
            delivered.append(event["id"])

    bus.subscribe("", count)
    threads = [
        threading.Thread(target=lambda t=t: [bus.publish(command(t * 1000 + i)) for i in range(200)])
        for t in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(bus.events) == 1600 and len({e["id"] for e in bus.events}) == 1600
    assert sorted(delivered) == sorted(e["id"] for e in bus.events)


def test_buses_satisfy_the_protocol() -> None:
    buses: list[Bus] = [MemoryBus(), HttpBus("http://127.0.0.1:1/")]
    assert all(callable(b.publish) for b in buses)


# ---------------------------------------------------------------------------------------------- HttpBus


@dataclass
class Broker:
    """A real HTTP server that records what it receives and answers with `status`."""

    url: str
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    status: int = 202
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def broker() -> Iterator[Broker]:
    state: dict[str, Broker] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            b = state["broker"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            b.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(b.delay)
            payload = b"broker says no" if b.status >= 300 else b""
            try:
                self.send_response(b.status)
                for k, v in b.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the timeout test's client has given up already

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["broker"] = Broker(url=f"http://127.0.0.1:{server.server_address[1]}/default/broker")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state["broker"]
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_bus_posts_a_binary_cloudevent(broker: Broker) -> None:
    event = emitted()

    HttpBus(broker.url, timeout=2).publish(event)

    [(path, headers, body)] = broker.received
    assert path == "/default/broker"
    assert headers["content-type"] == "application/json"
    assert headers["ce-type"] == ev.RELEASE_PAUSED and headers["ce-id"] == "web-3/7/paused"
    assert headers["ce-graylanerelease"] == "web-3" and headers["ce-subject"] == "shop/web"
    parsed = from_http(headers, body)
    assert parsed.get_attributes() == event.get_attributes()
    assert parsed.data == event.data
    catalog.validate(parsed)


def test_http_bus_events_reach_the_domain(broker: Broker) -> None:
    HttpBus(broker.url).publish(command(7))

    [(_, headers, body)] = broker.received
    domain = catalog.to_domain(from_http(headers, body))
    assert (domain.id, domain.app, domain.action) == ("cli-7", "shop/web", "pause")  # type: ignore[union-attr]


def test_http_bus_sends_an_empty_tick(broker: Broker) -> None:
    HttpBus(broker.url).publish(catalog.make_event(ev.RELEASE_TICK, "", {}, id="tick-1"))

    [(_, headers, body)] = broker.received
    assert catalog.to_domain(from_http(headers, body)).id == "tick-1"


def test_http_bus_falls_back_to_structured_mode_for_non_ascii_attributes(broker: Broker) -> None:
    event = command(0)
    event["id"] = "钉钉-42 %"  # would need percent-encoding as a header

    HttpBus(broker.url).publish(event)

    [(_, headers, body)] = broker.received
    assert headers["content-type"].startswith("application/cloudevents+json") and "ce-id" not in headers
    parsed = from_http(headers, body)
    assert parsed["id"] == "钉钉-42 %" and parsed.data == event.data


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_http_bus_non_2xx_is_provider_unavailable(broker: Broker, status: int) -> None:
    broker.status = status

    with pytest.raises(
        ProviderUnavailable, match=rf"publish {ev.RELEASE_PAUSED} .*HTTP {status} broker says no"
    ):
        HttpBus(broker.url).publish(emitted())


def test_http_bus_does_not_follow_redirects(broker: Broker) -> None:
    broker.status = 302
    broker.headers = {"Location": "/elsewhere"}

    with pytest.raises(ProviderUnavailable, match="HTTP 302"):
        HttpBus(broker.url).publish(emitted())
    assert [r[0] for r in broker.received] == ["/default/broker"]  # no GET to /elsewhere


def test_http_bus_timeout_is_provider_unavailable(broker: Broker) -> None:
    broker.delay = 1.0

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        HttpBus(broker.url, timeout=0.2).publish(emitted())
    assert time.monotonic() - started < 0.9


def test_http_bus_connection_refused_is_provider_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    with pytest.raises(ProviderUnavailable, match=f"broker http://127.0.0.1:{port}/"):
        HttpBus(f"http://127.0.0.1:{port}/").publish(emitted())


@pytest.mark.parametrize("url", ["", "ftp://broker/", "broker.default.svc", "http://"])
def test_http_bus_wants_an_http_url(url: str) -> None:
    with pytest.raises(ConfigError, match="K_SINK"):
        HttpBus(url)


def test_bus_from_env() -> None:
    http = bus_from_env(
        {
            "K_SINK": "http://broker-ingress.knative-eventing.svc/graylane/default",
            "GRAYLANE_BUS_TIMEOUT": "2.5",
        }
    )

    assert isinstance(http, HttpBus) and http.timeout == 2.5 and http.url.endswith("/graylane/default")
    assert isinstance(bus_from_env({}), MemoryBus)
    with pytest.raises(ConfigError, match="GRAYLANE_BUS_TIMEOUT"):
        bus_from_env({"K_SINK": "http://b/", "GRAYLANE_BUS_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="GRAYLANE_BUS_TIMEOUT"):
        bus_from_env({"K_SINK": "http://b/", "GRAYLANE_BUS_TIMEOUT": "0"})
