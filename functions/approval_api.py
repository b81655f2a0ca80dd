"""The generic approval API, for CI pipelines, scripts and `graylane --server`:

    POST /api/v1/apps/{ns}/{app}/commands   {action, gate?, weight?, version?, reason?, params?, release?}
    GET  /api/v1/apps                       status rows of every app
    GET  /api/v1/apps/{ns}/{app}            status
    GET  /api/v1/apps/{ns}/{app}/history    ?limit=N
    GET  /api/v1/apps/{ns}/{app}/audit      ?limit=N: recent command decisions

Every call needs `Authorization: Bearer <token>`; tokens map to users (GRAYLANE_API_TOKENS="alice:tok1,
ci-bot:tok2") and the user is judged by the policy approvers like a chat user. An `Idempotency-Key`
header makes a retried POST publish the same command event (the runner dedupes it). Answers are JSON
with `error` or the result; 400/401/403/404/409 for the caller's mistakes, never a 5xx for bad input.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from functions import present
from functions.approvals import Approvals, CommandRequest, Result
from functions.chatops.authz import Requester
from functions.core.values import value
from functions.errors import ConfigError, GraylaneError, brief

if TYPE_CHECKING:
    from functions.runner import Bus, PolicySource

BODY_FIELDS = ("action", "gate", "weight", "version", "reason", "params", "release")


@value
class ApiSettings:
    tokens: Mapping[str, str] = field(default_factory=dict)  # token -> user

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        return cls(parse_tokens(env.get("GRAYLANE_API_TOKENS", "")))


def parse_tokens(raw: str) -> dict[str, str]:
    """ "alice:tok1,ci-bot:tok2" -> {"tok1": "alice", "tok2": "ci-bot"}; ConfigError naming a bad entry."""
    tokens: dict[str, str] = {}
    for i, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        user, sep, token = entry.partition(":")
        if not sep or not user.strip() or len(token.strip()) < 8:
            raise ConfigError(
                f"GRAYLANE_API_TOKENS entry {i + 1} must be user:token with a token of 8 or more "
                f"characters (got {user.strip()[:40] or '(no user)'}:...)"
            )
        if token.strip() in tokens:
            raise ConfigError(
                f"GRAYLANE_API_TOKENS entry {i + 1}: the token of {user.strip()} is already used"
            )
        tokens[token.strip()] = user.strip()
    return tokens


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": brief(message)}, status_code=status, headers=dict(headers or {}))


def _result(result: Result) -> JSONResponse:
    body = result.to_json()
    if result.status >= 400:
        body["error"] = result.message
    return JSONResponse(body, status_code=result.status)


def _user_of(settings: ApiSettings, request: Request) -> str | None:
    """The user whose bearer token the request carries, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    found = None
    for known, user in settings.tokens.items():  # no early exit: timing tells nothing
        if hmac.compare_digest(known.encode(), token.strip().encode()):
            found = user
    return found


def _authenticated(settings: ApiSettings, request: Request) -> Requester | Response:
    """The requester, or the 401 answer that refuses the call."""
    if not settings.tokens:
        return _error(
            401,
            "the approval API has no tokens configured (GRAYLANE_API_TOKENS); it refuses every call",
            {"WWW-Authenticate": 'Bearer realm="graylane"'},
        )
    user = _user_of(settings, request)
    if user is None:
        return _error(
            401,
            "a valid Authorization: Bearer <token> header is required",
            {"WWW-Authenticate": 'Bearer realm="graylane"'},
        )
    return Requester(user=user, via="api")


def _app_of(request: Request) -> str:
    return f"{request.path_params['ns']}/{request.path_params['app']}"


def _limit_of(request: Request) -> int | Response:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        return _error(400, f"limit {raw[:20]!r} is not allowed; expected 1..200")
    return int(raw)


def api_routes(approvals: Approvals, settings: ApiSettings) -> list[BaseRoute]:
    """The approval API: list the apps, read one (status, history, audit), send it a command."""

    def authenticated(request: Request) -> Requester | Response:
        return _authenticated(settings, request)

    async def command(request: Request) -> Response:
        who = authenticated(request)
        if isinstance(who, Response):
            return who
        try:
            body = await request.json()
        except ValueError:
            return _error(
                400, "the body is not JSON; expected {action, gate?, weight?, version?, reason?, params?}"
            )
        problem = _check_body(body)
        if problem:
            return _error(400, problem)
        req = CommandRequest(
            app=_app_of(request),
            action=body["action"],
            requester=who,
            gate=body.get("gate", ""),
            weight=body.get("weight"),
            params=dict(body.get("params") or {}),
            version=body.get("version", ""),
            reason=body.get("reason", ""),
            delivery=request.headers.get("idempotency-key", "")[:128],
            release=body.get("release", ""),
        )
        return _result(await run_in_threadpool(approvals.execute, req))

    async def read(request: Request) -> Response:
        who = authenticated(request)
        if isinstance(who, Response):
            return who
        kind = request.path_params.get("kind", "status")
        if kind not in ("status", "history", "audit"):  # a GET never runs a command
            return _error(404, f"unknown resource {kind[:40]!r}; expected history or audit")
        limit = _limit_of(request)
        if isinstance(limit, Response):
            return limit
        if kind == "audit":
            return await run_in_threadpool(_audit, approvals, _app_of(request), limit)
        req = CommandRequest(app=_app_of(request), action=kind, requester=who, limit=limit)
        return _result(await run_in_threadpool(approvals.execute, req))

    async def listing(request: Request) -> Response:
        who = authenticated(request)
        if isinstance(who, Response):
            return who
        return await run_in_threadpool(_list, approvals)

    return [
        Route("/api/v1/apps", listing, methods=["GET"]),
        Route("/api/v1/apps/{ns}/{app}", read, methods=["GET"]),
        Route("/api/v1/apps/{ns}/{app}/commands", command, methods=["POST"]),
        Route("/api/v1/apps/{ns}/{app}/{kind:str}", read, methods=["GET"]),
    ]


def _check_body(body: Any) -> str:
    if not isinstance(body, dict):
        return "the body must be a JSON object {action, gate?, weight?, version?, reason?, params?}"
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)[:200]}; allowed: {', '.join(BODY_FIELDS)}"
    if not isinstance(body.get("action"), str):
        return "action is required: one of approve, reject, weight, promote, pause, resume, abort, rollback"
    for key in ("gate", "version", "reason", "release"):
        if key in body and not isinstance(body[key], str):
            return f"{key} must be a string, got {type(body[key]).__name__}"
    weight = body.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)):
        return f"weight must be an integer 0..100, got {type(weight).__name__}"
    params = body.get("params")
    if params is not None and not (
        isinstance(params, dict)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in params.values())
    ):
        return 'params must be an object of integers, e.g. {"weight": 30}'
    return ""


def _list(approvals: Approvals) -> JSONResponse:
    try:
        states = approvals.apps()
    except GraylaneError as err:
        return _error(503, f"the state store could not be listed: {err}")
    now = approvals.clock()
    rows = [present.row(s, approvals.policy(s.app), now) for s in states]
    return JSONResponse({"items": rows})


def _audit(approvals: Approvals, app: str, limit: int) -> JSONResponse:
    if approvals.policy(app) is None:
        return _error(404, f"no ReleasePolicy for {app}")
    try:
        records = approvals.audit.recent(app, limit)
    except GraylaneError as err:
        return _error(503, f"the audit log of {app} could not be read: {err}")
    return JSONResponse({"app": app, "items": [r.to_dict() for r in records]})


def extra_routes(
    store_url: str, bus: Bus, policies: PolicySource, env: Mapping[str, str] | None = None
) -> list[BaseRoute]:
    """The approval API, chat routes and the web console (/ui), wired from the environment (gateway.create_app)."""
    from functions.audit import StoreAuditLog
    from functions.chatops.routes import ChatOpsSettings, chatops_routes
    from functions.console import console_routes
    from functions.providers.stores import make_store

    store = make_store(store_url)
    approvals = Approvals(store, policies, bus, StoreAuditLog(store))
    api = ApiSettings.from_env(env)
    return [
        *api_routes(approvals, api),
        *chatops_routes(ChatOpsSettings.from_env(env).platforms(), approvals),
        *console_routes(approvals, api.tokens, env),
    ]
