"""Where emitted CloudEvents go: a Knative Broker over HTTP in production, an in-process bus locally.

HttpBus uses urllib only (no httpx/requests) because it is imported on every function's cold start.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from functions.errors import ConfigError, ProviderUnavailable

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

Handler = Callable[["CloudEvent"], None]


class Bus(Protocol):
    def publish(self, event: CloudEvent) -> None: ...


class MemoryBus:
    """In-process bus: records every event and calls the handlers subscribed to a type prefix.

    Handlers run in the publishing thread, outside the lock, so a handler may publish in turn.
    A handler's exception reaches the publisher, as a failed delivery would.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[CloudEvent] = []
        self._subscribers: list[tuple[str, Handler]] = []

    def subscribe(self, prefix: str, handler: Handler) -> Callable[[], None]:
        """Call `handler` for every event whose type starts with `prefix` ("" for all); returns unsubscribe."""
        entry = (prefix, handler)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def publish(self, event: CloudEvent) -> None:
        event_type = event["type"]
        with self._lock:
            self._events.append(event)
            handlers = [h for prefix, h in self._subscribers if event_type.startswith(prefix)]
        for handler in handlers:
            handler(event)

    @property
    def events(self) -> tuple[CloudEvent, ...]:
        with self._lock:
            return tuple(self._events)

    def of_type(self, prefix: str) -> list[CloudEvent]:
        return [e for e in self.events if e["type"].startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the event; a broker never redirects.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _header_safe(value: str) -> bool:
    # CloudEvents' HTTP binding would percent-encode other characters; cloudevents 1.12 does not decode them.
    return all(" " <= ch <= "~" and ch not in '"%' for ch in value)


class HttpBus:
    """Posts each event to a Knative Broker (K_SINK) in binary mode; non-2xx raises ProviderUnavailable.

    An event whose attributes cannot travel as plain HTTP headers is sent in structured mode instead. With
    `token_file` (GRAYLANE_SINK_TOKEN_FILE: e.g. a projected ServiceAccount token for the Broker's OIDC
    audience), each request carries `Authorization: Bearer <the file's current content>`, which a Broker with
    Knative's `authentication-oidc` feature requires.
    """

    def __init__(self, url: str, timeout: float = 5.0, token_file: str = "") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"K_SINK: {url!r} is not an http(s) URL")
        if timeout <= 0:
            raise ConfigError(f"GRAYLANE_BUS_TIMEOUT: {timeout!r} seconds must be positive")
        self.url = url
        self.timeout = timeout
        self.token_file = token_file
        self._opener = urllib.request.build_opener(_NoRedirect)

    def publish(self, event: CloudEvent) -> None:
        from cloudevents.conversion import to_binary, to_structured

        attrs = event.get_attributes()
        binary = all(_header_safe(str(v)) for v in attrs.values())
        headers, body = (to_binary if binary else to_structured)(event)
        headers = dict(headers)
        if binary:
            headers["content-type"] = attrs.get("datacontenttype") or "application/json"
        what = f"publish {attrs.get('type')} event {attrs.get('id')!r} to broker {self.url}"
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as f:  # re-read: the kubelet rotates it
                    headers["Authorization"] = "Bearer " + f.read().strip()
            except OSError as err:
                raise ProviderUnavailable(
                    f"{what}: the sink token {self.token_file} cannot be read: {err}"
                ) from err
        request = urllib.request.Request(self.url, data=body or b"", headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                detail = response.read(512)
        except urllib.error.HTTPError as err:
            detail = err.read(512) if err.fp is not None else b""
            err.close()
            raise ProviderUnavailable(
                f"{what}: HTTP {err.code} {detail.decode(errors='replace')}".rstrip()
            ) from err
        except (urllib.error.URLError, OSError) as err:  # refused, DNS, timeout
            raise ProviderUnavailable(f"{what}: {err}") from err
        if not 200 <= status < 300:
            raise ProviderUnavailable(f"{what}: HTTP {status} {detail.decode(errors='replace')}".rstrip())


def bus_from_env(environ: Mapping[str, str] | None = None) -> Bus:
    """HttpBus to $K_SINK (set by a Knative SinkBinding/ContainerSource), else an in-process MemoryBus."""
    env = os.environ if environ is None else environ
    sink = env.get("K_SINK", "")
    if not sink:
        return MemoryBus()
    raw_timeout = env.get("GRAYLANE_BUS_TIMEOUT", "5")
    try:
        timeout = float(raw_timeout)
    except ValueError as err:
        raise ConfigError(f"GRAYLANE_BUS_TIMEOUT: {raw_timeout!r} is not a number of seconds") from err
    return HttpBus(sink, timeout=timeout, token_file=env.get("GRAYLANE_SINK_TOKEN_FILE", ""))
