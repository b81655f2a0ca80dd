"""The webhook gateway: a Starlette app turning registry pushes and Alertmanager alerts into catalog CloudEvents.

Every delivery is authenticated over its raw bytes first (401 unauthenticated, 403 not allowed), then parsed
(400 bad JSON, 422 a body that is not the vendor's format, always naming the field), then turned into events:
one `dev.graylane.image.pushed` per policy the pushed image matches, one `dev.graylane.alert.*` per alert and
app it is for (each policy whose `protection` rule matches the alert's labels, and the app its labels name).
Every event is built and checked before the first is published, so a rejected request publishes nothing. The
answer is 202 `{"ids": [...], "ignored": [...]}`; event ids are deterministic, so a redelivery dedupes
downstream.

Once a delivery is authenticated and in the vendor's format, it is never refused for what it contains: a push
graylane will not act on (no policy, outside the source's repository allowlist, no tag, an odd repository, an
unreadable event inside a batch) is answered 2xx and listed in `ignored` with its reason, logged and counted
(`graylane_webhook_ignored_total`). 4xx is kept for bad credentials and bodies that are not the vendor's
format, because some senders retry anything else forever (CNCF Distribution sends its events one at a time
and retries a refused one until it is restarted). 503 asks for a redelivery when the broker is down. What
each sender does with each answer is tabled in the README ("Webhook senders and answers").

`build_app` composes declared routes; other modules add theirs through `extra_routes`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions import catalog
from functions.bus import Bus
from functions.core import events as ev
from functions.core import images
from functions.core.policy import Policy
from functions.core.protection import rule_matches
from functions.core.values import value
from functions.errors import ConfigError, ProviderUnavailable, Reject, brief
from functions.observability import metrics
from functions.observability.asgi import ObserveRequests
from functions.providers.sources import ALIASES, SOURCES
from functions.providers.sources.base import (
    PATH_TOKEN_HEADER,
    AlertNotice,
    Credentials,
    Forbidden,
    Malformed,
    Push,
    Source,
    Unauthenticated,
    rfc3339_or_empty,
)

log = logging.getLogger("graylane.gateway")

DEFAULT_MAX_BODY = 1024 * 1024
SOURCE_PREFIX = "/graylane/gateway"

# environment names per source: the route name, plus the vendor's spelling where it differs
_ENV_NAMES: dict[str, tuple[str, ...]] = {"ghcr": ("GHCR", "GITHUB"), "acr": ("ACR", "ALIYUN")}


class Policies(Protocol):
    def all(self) -> list[Policy]: ...


# ---------------------------------------------------------------------------------------------- settings


@value
class GatewaySettings:
    credentials: Mapping[str, Credentials] = field(default_factory=dict)  # by source name
    max_body: int = DEFAULT_MAX_BODY  # bytes; larger bodies get 413
    source_prefix: str = SOURCE_PREFIX  # CloudEvent `source` is <prefix>/<source name>

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """GRAYLANE_HOOK_{TOKEN,SECRET,USER,PASSWORD,REPOSITORIES}_<SOURCE>, GRAYLANE_ALERTMANAGER_{TOKEN,USER,
        PASSWORD}, GRAYLANE_GATEWAY_MAX_BODY. A source without any credential refuses every delivery."""
        env = os.environ if env is None else env
        raw = env.get("GRAYLANE_GATEWAY_MAX_BODY", str(DEFAULT_MAX_BODY))
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError(f"GRAYLANE_GATEWAY_MAX_BODY={raw!r} is not a positive number of bytes")
        return cls(credentials={name: _credentials(env, name) for name in SOURCES}, max_body=int(raw))


def _credentials(env: Mapping[str, str], source: str) -> Credentials:
    prefixes = [f"GRAYLANE_HOOK_{{}}_{n}" for n in _ENV_NAMES.get(source, (source.upper(),))]
    if source == "alertmanager":
        prefixes.append("GRAYLANE_ALERTMANAGER_{}")

    def pick(kind: str) -> str:
        return next((env[p.format(kind)] for p in prefixes if env.get(p.format(kind))), "")

    repositories = tuple(images.normalize_repository(r) for r in pick("REPOSITORIES").split(",") if r.strip())
    return Credentials(
        token=pick("TOKEN"),
        secret=pick("SECRET"),
        user=pick("USER"),
        password=pick("PASSWORD"),
        repositories=repositories,
    )


# ---------------------------------------------------------------------------------------------- body limit


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 to a request body above `max_body` bytes, by Content-Length or while it streams."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        if max_body <= 0:
            raise ConfigError(f"GRAYLANE_GATEWAY_MAX_BODY={max_body!r} must be a positive number of bytes")
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"error": f"request body is larger than {self.max_body} bytes"}, status_code=413
        )
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------- events


def _id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def matching_policies(policies: Iterable[Policy], repository: str, tag: str) -> list[Policy]:
    """Every policy whose image rule accepts repository:tag (one image may feed staging and prod apps).

    tag '' is a push by digest only: it reaches only the policies that release by digest (`byDigest`)."""
    wanted = images.normalize_repository(repository)
    return [
        p
        for p in policies
        if images.normalize_repository(p.image.repository) == wanted and images.push_matches(p.image, tag)
    ]


def _ignore(ignored: list[dict[str, str]], source: str, push: Push, code: str, reason: str) -> None:
    entry = {"repository": push.repository[:255], "tag": push.tag[:128], "reason": reason}
    if push.digest:
        entry["digest"] = push.digest
    ignored.append(entry)
    metrics.webhook_ignored(source, code)
    log.info(
        "webhook source %s: ignored %s%s: %s",
        source,
        push.repository[:255] or "(no repository)",
        f":{push.tag[:128]}" if push.tag else (f"@{push.digest}" if push.digest else ""),
        reason,
        extra={"source": source, "ignored": code},
    )


def push_events(
    source: str,
    pushes: Sequence[Push],
    policies: Policies,
    settings: GatewaySettings,
    credentials: Credentials,
) -> tuple[list[Any], list[dict[str, str]]]:
    """(CloudEvents, ignored pushes). Every push graylane will not act on is ignored with its reason, never
    refused: the delivery itself was genuine and in the vendor's format, and a refusal would make senders
    such as Distribution retry it forever (blocking every later notification)."""
    out: list[Any] = []
    ignored: list[dict[str, str]] = []
    known = policies.all()
    for i, push in enumerate(pushes):
        if push.problem:
            _ignore(ignored, source, push, "unreadable", f"push {i} could not be read: {push.problem}"[:300])
            continue
        if not catalog.is_repository(push.repository):
            _ignore(
                ignored,
                source,
                push,
                "bad-repository",
                f"push {i}: repository {push.repository[:80]!r} is not "
                "an image repository such as registry.example.com/team/web",
            )
            continue
        allowed = credentials.repositories
        name = images.normalize_repository(push.repository)
        if allowed and not any(name == p or name.startswith(p + "/") for p in allowed):
            _ignore(
                ignored,
                source,
                push,
                "not-allowed",
                f"webhook source {source} may not announce repository "
                f"{push.repository}; allowed: " + ", ".join(allowed),
            )
            continue
        if push.tag and not catalog.is_tag(push.tag):
            _ignore(ignored, source, push, "bad-tag", f"tag {push.tag[:80]!r} is not an image tag")
            continue
        if not push.tag and not push.digest:
            _ignore(ignored, source, push, "no-tag", "pushed without a tag")
            continue
        matched = matching_policies(known, push.repository, push.tag)
        if not matched:
            if not push.tag:
                _ignore(ignored, source, push, "no-tag", "pushed without a tag")
            else:
                _ignore(ignored, source, push, "no-policy", "no policy matches this repository and tag")
            continue
        for policy in matched:
            event = _push_event(source, push, policy.app, settings)
            try:
                catalog.to_domain(event)  # the consumer's own checks: ignore here, not downstream
            except Reject as err:
                _ignore(ignored, source, push, "unreadable", str(err)[:300])
                continue
            out.append(event)
    return out, ignored


def _push_event(source: str, push: Push, app: str, settings: GatewaySettings) -> Any:
    image = f"{push.repository}@{push.digest}" if push.digest else f"{push.repository}:{push.tag}"
    data: dict[str, Any] = {"app": app, "repository": push.repository, "image": image, "source": source}
    if push.tag:  # a push by digest only has none: the release is of repository@digest
        data["tag"] = push.tag
    if push.digest:
        data["digest"] = push.digest
    if push.pushed_at:
        data["pushedAt"] = push.pushed_at
    if push.pusher:
        data["pusher"] = push.pusher[:256]
    # without a digest the push time (or the delivery id) tells two pushes of one tag apart
    what = push.digest or push.pushed_at or push.delivery
    event_id = _id("push-", source, app, push.repository, push.tag, what)
    return catalog.make_event(
        ev.IMAGE_PUSHED, app, data, id=event_id, source=f"{settings.source_prefix}/{source}"
    )


def alert_app(labels: Mapping[str, str]) -> str:
    """The app an alert names: label graylane_app (ns/name), else namespace + app; '' when neither fits."""
    app = labels.get("graylane_app", "")
    if not app and labels.get("namespace") and labels.get("app"):
        app = f"{labels['namespace']}/{labels['app']}"
    return app if catalog.is_app(app) else ""


def alert_apps(labels: Mapping[str, str], known: Iterable[Policy]) -> list[str]:
    """Every app an alert is for: each policy with a `protection` rule matching its alertname and labels, and
    the app its labels name (graylane_app, or namespace + app: a shortcut that needs no rule, e.g. for an
    alert about a canary). Sorted, without repeats."""
    alertname = labels.get("alertname", "")
    apps = {
        p.app
        for p in known
        if catalog.is_app(p.app) and any(rule_matches(r, alertname, dict(labels)) for r in p.protection)
    }
    named = alert_app(labels)
    if named:
        apps.add(named)
    return sorted(apps)


def alert_events(
    source: str, notices: Sequence[AlertNotice], settings: GatewaySettings, policies: Policies | None = None
) -> tuple[list[Any], list[dict[str, str]]]:
    """One event per alert and app it is for, deduplicated by fingerprint and status within the delivery."""
    out: list[Any] = []
    ignored: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    known = policies.all() if policies is not None else []
    for i, notice in enumerate(notices):
        where = f"webhook source {source}: body.alerts[{i}]"
        if len(notice.fingerprint) > 128:
            raise Malformed(f"{where}.fingerprint is longer than 128 characters")
        starts_at = rfc3339_or_empty(notice.starts_at)
        if not starts_at:
            raise Malformed(f"{where}.startsAt {notice.starts_at[:40]!r} is not an RFC 3339 time")
        if (notice.fingerprint, notice.status) in seen:
            continue
        seen.add((notice.fingerprint, notice.status))
        alertname = notice.labels.get("alertname", "")
        apps = alert_apps(notice.labels, known) if 1 <= len(alertname) <= 256 else []
        if not apps:
            code, reason = (
                (
                    "no-app",
                    "no policy's protection rule matches its labels, and they name no app "
                    "(graylane_app, or namespace and app)",
                )
                if 1 <= len(alertname) <= 256
                else ("no-alertname", "no alertname label")
            )
            ignored.append({"fingerprint": notice.fingerprint, "status": notice.status, "reason": reason})
            metrics.webhook_ignored(source, code)
            continue
        for app in apps:
            data: dict[str, Any] = {
                "fingerprint": notice.fingerprint,
                "alertname": alertname,
                "status": notice.status,
                "labels": dict(notice.labels),
                "annotations": dict(notice.annotations),
                "startsAt": starts_at,
                "app": app,
            }
            if rfc3339_or_empty(notice.ends_at):
                data["endsAt"] = notice.ends_at
            if notice.generator_url and len(notice.generator_url) <= 2048:
                data["generatorURL"] = notice.generator_url
            event_type = ev.ALERT_FIRING if notice.status == "firing" else ev.ALERT_RESOLVED
            event_id = _id("am-", notice.fingerprint, notice.status, starts_at, app)
            out.append(
                catalog.make_event(
                    event_type, app, data, id=event_id, source=f"{settings.source_prefix}/{source}"
                )
            )
    return out, ignored


# ---------------------------------------------------------------------------------------------- routes


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": brief(message)}, status_code=status, headers=dict(headers or {}))


def _headers(request: Request) -> dict[str, str]:
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != PATH_TOKEN_HEADER}
    token = request.path_params.get("token")
    if token:
        headers[PATH_TOKEN_HEADER] = token
    return headers


_SAFE_NAME = re.compile(r"[a-z0-9-]{1,40}")


def hook_routes(
    settings: GatewaySettings, sources: Mapping[str, Source], bus: Bus, policies: Policies
) -> list[BaseRoute]:
    """POST /hooks/{source} and /hooks/{source}/{token} (for senders that cannot set headers)."""

    async def hook(request: Request) -> Response:
        name = request.path_params["source"]
        source = sources.get(ALIASES.get(name, name))
        if source is None:
            shown = name if _SAFE_NAME.fullmatch(name) else "(unprintable)"
            return _error(404, f"unknown webhook source {shown}; known: {', '.join(sources)}")
        body = await request.body()
        headers = _headers(request)
        credentials = settings.credentials.get(source.name, Credentials())
        try:
            source.authenticate(headers, body, credentials)
        except Unauthenticated as err:
            return _error(401, str(err), {"WWW-Authenticate": 'Bearer realm="graylane"'})
        except Forbidden as err:
            return _error(403, str(err))
        try:
            parsed = source.parse(headers, body)
            if source.kind == "alert":
                events, ignored = alert_events(
                    source.name, [n for n in parsed if isinstance(n, AlertNotice)], settings, policies
                )
            else:
                pushes = [p for p in parsed if isinstance(p, Push)]
                events, ignored = push_events(source.name, pushes, policies, settings, credentials)
            for event in events:
                catalog.to_domain(event)  # the consumer's own checks: reject here, not downstream
        except Forbidden as err:
            return _error(403, str(err))
        except (Malformed, Reject) as err:
            return _error(getattr(err, "status", 422), str(err))
        except Exception:  # a body no parser foresaw must still get a 4xx, never a 500 the sender retries
            log.exception("webhook source %s: unreadable delivery", source.name)
            return _error(
                422,
                f"webhook source {source.name}: the body is not a {source.name} delivery graylane can read",
            )
        try:
            for event in events:
                await run_in_threadpool(bus.publish, event)
        except ProviderUnavailable as err:  # the broker, not the sender, failed: ask for a redelivery
            log.warning("webhook source %s: %s", source.name, err)
            return _error(503, f"events could not be handed to the broker: {err}", {"Retry-After": "5"})
        return JSONResponse({"ids": [e["id"] for e in events], "ignored": ignored}, status_code=202)

    return [
        Route("/hooks/{source}", hook, methods=["POST"]),
        Route("/hooks/{source}/{token}", hook, methods=["POST"]),
    ]


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    detail = exc.detail if isinstance(exc, HTTPException) else "bad request"
    return _error(status, str(detail))


def build_app(
    settings: GatewaySettings,
    sources: Mapping[str, Source],
    bus: Bus,
    policies: Policies,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The gateway app: hook routes, /healthz, and whatever routes other modules contribute."""
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        *hook_routes(settings, sources, bus, policies),
        *extra_routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(ObserveRequests, sources=sources, aliases=ALIASES),  # outermost: sees 413s too
            Middleware(BodyLimit, max_body=settings.max_body),
        ],
        exception_handlers={HTTPException: _http_error},
    )


def create_app() -> Starlette:
    """The app from the environment (`uvicorn --factory functions.gateway:create_app`)."""
    from functions.bus import bus_from_env
    from functions.observability.logs import configure_from_env
    from functions.providers.sources import make_sources
    from functions.runtime import policies_from
    from functions.settings import Settings

    configure_from_env()
    base = Settings.from_env()
    policies = policies_from(base.policies, cache=base.policy_cache)
    from functions.approval_api import extra_routes
    from functions.internal_auth import EDGE_KEY_ENV, AttestingBus, InternalAuth

    # this gateway is an edge publishing to a broker: it attests what it creates, so the functions can tell
    # its events (and the actors it authenticated) from anything else posted to the broker
    edge_key = InternalAuth.from_env().edge_key
    if not edge_key:
        log.warning(
            "%s is not set: the functions will refuse the image, command and alert events this gateway "
            "publishes",
            EDGE_KEY_ENV,
        )
    bus = AttestingBus(bus_from_env(), edge_key)
    return build_app(
        GatewaySettings.from_env(),
        make_sources(),
        bus,
        policies,
        extra_routes=extra_routes(base.store, bus, policies),
    )  # approval API + ChatOps
