"""The console's Starlette app (mounted at /ui): sign-in, pages, event streams and the actions endpoint.

Reads go to the same store, policies and audit log as the approval API (through its `Approvals`), cached for
half a poll interval so many open pages cost the store no more than one. Actions go through
`Approvals.execute`, exactly as `POST /api/v1/apps/{ns}/{app}/commands` does: authorised per app, action and
gate by the policy's approvers, audited, published as one command event naming its release.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions import catalog
from functions.approvals import Approvals, CommandRequest
from functions.audit import audit_key
from functions.console import auth, static, views
from functions.console.actions import offer, read_form, requester
from functions.console.html import EMPTY, Safe
from functions.console.settings import PROXY_SECRET_HEADER, ConsoleSettings
from functions.core.state import AppState
from functions.errors import GraylaneError, brief

log = logging.getLogger("graylane.console")

MAX_FORM = 16 * 1024


def security_headers(csp_style: str) -> list[tuple[bytes, bytes]]:
    csp = (
        "default-src 'none'; script-src 'self'; style-src '" + csp_style + "'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]


class SecurityHeaders:
    """CSP, no framing, no sniffing, no referrer outside; pages are never cached (the script is, by its hash)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = security_headers(views.CSS_HASH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in self.headers if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)


class Reads:
    """Store reads shared by every open page: each key is read at most once per `ttl` seconds."""

    def __init__(self, store: Any, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _get(self, key: str, read: Callable[[], Any]) -> Any:
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        result = read()
        with self._lock:
            self._cache[key] = (now, result)
            if len(self._cache) > 5000:
                self._cache.clear()
        return result

    def load(self, key: str) -> tuple[str | None, str | None]:
        result: tuple[str | None, str | None] = self._get("load:" + key, lambda: self.store.load(key))
        return result

    def apps(self) -> list[str]:
        from functions.audit import is_audit_key

        keys: list[str] = self._get("list", self.store.list_apps)
        return [k for k in keys if not is_audit_key(k)]

    def forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop("load:" + key, None)
            self._cache.pop("list", None)


def console_app(approvals: Approvals, tokens: Mapping[str, str], settings: ConsoleSettings) -> Starlette:
    prefix = settings.prefix
    key = settings.session_key
    reads = Reads(approvals.store, ttl=settings.poll / 2)
    throttle = auth.Throttle(settings.login_failures)
    script = f"{prefix}/console.js?v={static.VERSION}"

    # -- who is asking --------------------------------------------------------------------------------------
    def client(request: Request) -> str:
        return request.client.host if request.client else ""

    def signed(request: Request) -> auth.Signed | None:
        proxy = auth.proxy_identity(
            request.headers,
            client(request),
            settings.identity_header,
            settings.trusted_proxies,
            settings.proxy_secret,
            PROXY_SECRET_HEADER,
        )
        if proxy is not None:
            return proxy
        cookie = request.cookies.get(auth.SESSION_COOKIE, "")
        return auth.session_from(key, cookie, tokens, time.time()) if cookie else None

    def secure(request: Request) -> bool:
        if settings.secure_cookie != "auto":
            return settings.secure_cookie == "true"
        if request.url.scheme == "https":
            return True
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return forwarded == "https" and (
            not settings.trusted_proxies or auth.trusted_peer(client(request), settings.trusted_proxies)
        )

    def cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=prefix,
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def html(
        content: Safe,
        title: str,
        request: Request,
        who: auth.Signed | None = None,
        status: int = 200,
        stream: str = "",
        flash: Safe = EMPTY,
    ) -> HTMLResponse:
        csrf = auth.csrf_token(key, who) if who is not None else ""
        body = views.page(
            title,
            content,
            prefix=prefix,
            script=script,
            integrity=static.INTEGRITY,
            who=who.user if who else "",
            csrf=csrf,
            flash=flash,
            stream=stream,
        )
        return HTMLResponse(body, status_code=status)

    def refuse(
        request: Request, status: int, text: str, who: auth.Signed | None = None, back: str = ""
    ) -> Response:
        text = brief(text)
        if wants_json(request) or request.url.path.endswith("/events"):
            return JSONResponse({"error": text}, status_code=status)
        return html(
            views.message("Refused" if status in (401, 403) else "Not done", text, back or f"{prefix}/"),
            "refused",
            request,
            who,
            status,
        )

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("sec-fetch-site") == "cross-site":
            # a link from chat or mail: the SameSite=Strict session cookie is not sent on a navigation from another
            # site, so look again from this page (a same-origin navigation sends it) before asking to sign in
            return HTMLResponse(views.bounce(target))
        return RedirectResponse(f"{prefix}/login?{urlencode({'next': target})}", status_code=303)

    def safe_next(raw: str) -> str:
        if raw.startswith(prefix + "/") and not raw.startswith("//") and "\\" not in raw and len(raw) < 1000:
            return raw
        return f"{prefix}/"

    async def form_of(request: Request) -> dict[str, str] | str:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return "the body must be a form (application/x-www-form-urlencoded)"
        raw = await request.body()
        if len(raw) > MAX_FORM:
            return f"the form is larger than {MAX_FORM} bytes"
        try:
            pairs = parse_qsl(
                raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=64
            )
        except (UnicodeDecodeError, ValueError) as err:
            return f"the form could not be read: {brief(str(err), 200)}"
        form: dict[str, str] = {}
        for name, v in pairs:
            if name in form:
                return f"{name[:40]}: given more than once"
            form[name] = v
        return form

    def post_checks(request: Request, who: auth.Signed | None, form: Mapping[str, str]) -> str:
        """Why a POST is refused as cross-site ('' when it comes from our own page)."""
        if not auth.origin_ok(request.headers, request.headers.get("host", ""), settings.origins):
            return "cross-site request refused: the Origin (or Referer) is not this console's"
        if who is not None:
            given = request.headers.get(auth.CSRF_HEADER, "") or form.get(auth.CSRF_FIELD, "")
            if not auth.csrf_ok(key, who, given):
                return "the CSRF token is missing or wrong: reload the page and try again"
        return ""

    # -- sign-in --------------------------------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        if signed(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next", "")), status_code=303)
        return _login_form(request, "", 200)

    def _login_form(request: Request, error: str, status: int, next_: str = "") -> Response:
        nonce = auth.login_nonce()
        content = views.login(
            prefix,
            auth.login_token(key, nonce),
            next_ or safe_next(request.query_params.get("next", "")),
            error,
            tokens=bool(tokens),
            proxy=settings.identity_header,
        )
        response = html(content, "sign in", request, status=status)
        cookie(response, request, auth.LOGIN_COOKIE, nonce, 900)
        return response

    async def login(request: Request) -> Response:
        form = await form_of(request)
        if isinstance(form, str):
            return refuse(request, 400, form)
        problem = post_checks(request, None, form)
        if problem:
            return refuse(request, 403, problem)
        if not auth.login_ok(key, request.cookies.get(auth.LOGIN_COOKIE, ""), form.get("login", "")):
            return _login_form(request, "The sign-in form expired; please sign in again.", 403)
        peer = client(request)
        if throttle.blocked(peer):
            return _login_form(request, "Too many failed sign-ins from here; wait a minute.", 429)
        token = form.get("token", "")
        if len(token) > 512:
            return _login_form(request, "token: longer than 512 characters", 400)
        user = auth.token_user(tokens, token) if tokens else None
        if user is None:
            throttle.failed(peer)
            log.warning("console sign-in refused from %s", peer)
            return _login_form(request, "That token is not valid.", 401, safe_next(form.get("next", "")))
        who, value = auth.new_session(key, user, token, settings.session_ttl, time.time())
        log.info("console sign-in: %s from %s", user, peer)
        response = RedirectResponse(safe_next(form.get("next", "")), status_code=303)
        cookie(response, request, auth.SESSION_COOKIE, value, int(settings.session_ttl))
        response.delete_cookie(auth.LOGIN_COOKIE, path=prefix)
        return response

    async def logout(request: Request) -> Response:
        who = signed(request)
        form = await form_of(request)
        if isinstance(form, str):
            return refuse(request, 400, form)
        problem = post_checks(request, who, form)
        if problem:
            return refuse(request, 403, problem, who)
        response = RedirectResponse(f"{prefix}/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE, path=prefix)
        return response

    # -- pages ----------------------------------------------------------------------------------------------
    def states() -> list[AppState]:
        keys = set(reads.apps())
        try:
            keys |= {p.app for p in approvals.policies.all()}
        except GraylaneError as err:
            log.warning("console: policies could not be listed: %s", err)
        out = []
        for app in sorted(keys):
            doc, _ = reads.load(app)
            out.append(AppState.from_json(doc) if doc else AppState(app=app))
        return out

    def index_parts() -> tuple[str, Safe]:
        found = states()
        version = "|".join(
            f"{s.app}:{s.generation}:{s.release.phase.value if s.release else ''}" for s in found
        )
        policies = {s.app: approvals.policy(s.app) for s in found}
        return version, views.index_live(found, policies, approvals.clock(), prefix)

    async def index(request: Request) -> Response:
        who = signed(request)
        if who is None:
            return to_login(request)
        try:
            _, live = await run_in_threadpool(index_parts)
        except GraylaneError as err:
            return refuse(request, 503, f"the state store could not be read: {err}", who)
        content = Safe(f'<div id="live">{live}</div>')
        return shown(
            html(content, "apps", request, who, stream=f"{prefix}/events", flash=take_flash(request)), request
        )

    def app_id(request: Request) -> str:
        return f"{request.path_params['ns']}/{request.path_params['app']}"

    def app_parts(app: str, user: str) -> tuple[str, Safe, AppState, Any] | None:
        """(version, the live part, state, offer) of an app's page; None for an app graylane does not know."""
        doc, version = reads.load(app)
        _, audit_version = reads.load(audit_key(app))
        state = AppState.from_json(doc) if doc else AppState(app=app)
        policy = approvals.policy(app)
        if policy is None and not doc:
            return None
        try:
            records = approvals.audit.recent(app, 20)
        except GraylaneError:
            records = []
        now = approvals.clock()
        what = offer(state, policy, user)
        return f"{version}:{audit_version}", views.app_live(state, policy, now, records), state, what

    def actions_html(what: Any, who: auth.Signed, app: str) -> Safe:
        return views.actions(what, auth.csrf_token(key, who), prefix, app)

    async def app_page(request: Request) -> Response:
        app = app_id(request)
        if not catalog.is_app(app):
            return refuse(request, 404, f"app {app[:80]!r} is not {catalog.APP_EXPECTED}")
        who = signed(request)
        if who is None:
            return to_login(request)
        try:
            parts = await run_in_threadpool(app_parts, app, who.user)
        except GraylaneError as err:
            return refuse(request, 503, f"the state of {app} could not be read: {err}", who)
        if parts is None:
            return refuse(request, 404, f"no ReleasePolicy and no state for {app}", who)
        _, live, state, what = parts
        query = {k: v for k, v in request.query_params.items()}
        content = Safe(
            f"{views.app_head(app, state)}{views.intent(query, what)}{actions_html(what, who, app)}"
            f'<div id="live">{live}</div>'
        )
        page = html(
            content, app, request, who, stream=f"{prefix}/apps/{app}/events", flash=take_flash(request)
        )
        return shown(page, request)

    # -- flash messages (after a form post without the script) ------------------------------------------------
    def shown(response: Response, request: Request) -> Response:
        if auth.FLASH_COOKIE in request.cookies:  # a flash message is shown once
            response.delete_cookie(auth.FLASH_COOKIE, path=prefix)
        return response

    def take_flash(request: Request) -> Safe:
        raw = request.cookies.get(auth.FLASH_COOKIE, "")
        data = auth.unsign(key, "flash", raw) if raw else None
        if not data or not isinstance(data.get("m"), str) or data.get("e", 0) < time.time():
            return Safe("")
        return views.flash(str(data.get("k", "info")), data["m"])

    # -- live updates -----------------------------------------------------------------------------------------
    async def events(request: Request) -> Response:
        who = signed(request)
        if who is None:
            return refuse(request, 401, "sign in first")
        app = ""
        if "ns" in request.path_params:
            app = app_id(request)
            if not catalog.is_app(app):
                return refuse(request, 404, f"app {app[:80]!r} is not {catalog.APP_EXPECTED}")
            try:
                known = await run_in_threadpool(app_parts, app, who.user)
            except GraylaneError as err:
                return refuse(request, 503, f"the state of {app} could not be read: {err}")
            if known is None:
                return refuse(request, 404, f"no ReleasePolicy and no state for {app}")
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(request, who, app), media_type="text/event-stream", headers=headers)

    async def stream(request: Request, who: auth.Signed, app: str) -> AsyncIterator[str]:
        started = time.monotonic()
        beat = started
        last = ""
        last_key = ""
        yield "retry: 2000\n\n"
        while True:
            if signed(request) is None:  # the session expired, or its token was revoked
                yield "event: signed-out\ndata: {}\n\n"
                return
            try:
                what = None
                if app:
                    parts = await run_in_threadpool(app_parts, app, who.user)
                    if parts is None:
                        yield "event: gone\ndata: {}\n\n"
                        return
                    version, live, _, what = parts
                else:
                    version, live = await run_in_threadpool(index_parts)
            except GraylaneError as err:
                yield f"event: unavailable\ndata: {json.dumps({'error': brief(str(err), 300)})}\n\n"
                version = last
            else:
                if version != last:
                    payload: dict[str, Any] = {"version": version, "live": str(live)}
                    if what is not None and what.key() != last_key:
                        last_key = what.key()
                        payload["actions"] = str(actions_html(what, who, app))
                        payload["actionsKey"] = _short(last_key)
                    yield f"event: state\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
                    last = version
                    beat = time.monotonic()
            now = time.monotonic()
            if now - started >= settings.stream_lifetime:
                return  # the browser reconnects (retry: 2000), signed in or not
            if now - beat >= settings.heartbeat:
                yield ": keep-alive\n\n"
                beat = now
            await asyncio.sleep(settings.poll)

    # -- actions ----------------------------------------------------------------------------------------------
    async def act(request: Request) -> Response:
        app = app_id(request)
        back = f"{prefix}/apps/{app}" if catalog.is_app(app) else f"{prefix}/"
        who = signed(request)
        if who is None:
            return refuse(request, 401, "sign in first", back=f"{prefix}/login")
        form = await form_of(request)
        if isinstance(form, str):
            return refuse(request, 400, form, who, back)
        problem = post_checks(request, who, form)
        if problem:
            log.warning(
                "console: %s %s refused for %s: %s", request.method, request.url.path, who.user, problem
            )
            return refuse(request, 403, problem, who, back)
        pressed = read_form(form)
        if isinstance(pressed, str):
            return refuse(request, 400, pressed, who, back)
        # the command names the release the page showed: Approvals refuses it (409, audited) for any other one
        req = CommandRequest(
            app=app,
            action=pressed.action,
            requester=requester(who.user),
            gate=pressed.gate,
            params=pressed.params,
            version=pressed.version,
            reason=pressed.reason,
            release=pressed.release,
        )
        result = await run_in_threadpool(approvals.execute, req)
        reads.forget(app)
        reads.forget(audit_key(app))
        if wants_json(request):
            body = result.to_json()
            if result.status >= 400:
                body["error"] = result.message
            return JSONResponse(body, status_code=result.status)
        if result.status >= 400:
            return refuse(request, result.status, result.message, who, back)
        response = RedirectResponse(back, status_code=303)
        cookie(
            response,
            request,
            auth.FLASH_COOKIE,
            auth.sign(key, "flash", {"k": "ok", "m": result.message[:500], "e": int(time.time()) + 30}),
            30,
        )
        return response

    async def script_file(request: Request) -> Response:
        return Response(
            static.SCRIPT,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/console.js", script_file, methods=["GET"]),
        Route("/apps/{ns}/{app}", app_page, methods=["GET"]),
        Route("/apps/{ns}/{app}/events", events, methods=["GET"]),
        Route("/apps/{ns}/{app}/actions", act, methods=["POST"]),
    ]
    from starlette.middleware import Middleware

    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])


def _short(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]
