"""`graylane serve`: the gateway, every function and the analysis ticker in one process, on two listeners.

    public listener (--host/--port, default 127.0.0.1:8080):
      /hooks/{source}  /api/v1/...  /chatops/{platform}  /ui (web console)  /healthz  /metrics
        registry / Alertmanager / chat / API ──► gateway routes ──► MemoryBus ──► runner (the functions)
    internal listener (--internal-host/--internal-port, default 127.0.0.1:8081), never public:
      POST /functions/{target}   a Knative-style CloudEvent for one function ─────────────► runner
      POST /tick                 one analysis sweep (the CronJob's tick) ──────────────────► runner
      GET  /healthz
    ticker thread: dev.graylane.release.tick sweep every --tick ──► MemoryBus ──► runner

The bus dispatches each CloudEvent type to the runner exactly as the Knative Triggers do in
production: image.pushed -> release_start, release.tick -> release_tick, release.command ->
release_command, alert.* -> protection. Events the runner emits go on the same bus (observers may
subscribe). State is SQLite by default; `--context` uses a cluster's ConfigMaps (and its workloads
with `--providers kubernetes`).

Trust model (functions/internal_auth.py): the public routes authenticate the outside party themselves
(vendor tokens and signatures, the API token, the chat platform's signature) and set a command's actor
from it; what they publish stays in this process. The internal listener authenticates its caller with
`Authorization: Bearer <GRAYLANE_INTERNAL_TOKEN>` or an HMAC of the request made with it (none
configured: it refuses everything), and on top of that accepts image, command and alert events only with
an edge attestation (`graylaneedge`, keyed by GRAYLANE_EDGE_KEY, which only graylane's own edges hold),
so a caller holding the internal token (the tick CronJob) can tick but cannot impersonate a chat user,
start a release or fire an alert.

Every setting comes from the environment like the functions' (GRAYLANE_STORE, GRAYLANE_POLICIES,
GRAYLANE_PROVIDERS, GRAYLANE_PROMETHEUS, ...; `ServeOptions.from_env`), flags override.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from functions.bus import MemoryBus
from functions.core.events import (
    ALERT_FIRING,
    ALERT_RESOLVED,
    IMAGE_PUSHED,
    KNATIVE_PING,
    RELEASE_COMMAND,
    RELEASE_TICK,
)
from functions.core.values import value
from functions.errors import ConfigError, ProviderUnavailable, Retry, brief
from functions.runtime import policies_from

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

    from functions.approvals import Approvals
    from functions.internal_auth import InternalAuth
    from functions.providers.stores.base import StateStore
    from functions.runner import Outcome, PolicySource, Providers, Runner

log = logging.getLogger("graylane.serve")

SOURCE = "/graylane/serve"
# function target -> the CloudEvent types its Knative Trigger delivers (infra/k8s)
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "release_start": (IMAGE_PUSHED,),
    "release_tick": (RELEASE_TICK,),
    "release_command": (RELEASE_COMMAND,),
    "protection": (ALERT_FIRING, ALERT_RESOLVED),
}
TICK_TYPES = (RELEASE_TICK, KNATIVE_PING)
MAX_RECORDED = 10_000  # the MemoryBus keeps every event; a long-running serve drops them past this
MAX_INTERNAL_BODY = 1024 * 1024


def route_functions(bus: MemoryBus, runner: Runner) -> list[Callable[[], None]]:
    """Subscribe the runner to each consumed type, as the Triggers do; returns the unsubscribers."""
    out = []
    for types in FUNCTIONS.values():
        for event_type in types:
            out.append(bus.subscribe(event_type, _deliver(runner, types)))
    return out


def _deliver(runner: Runner, types: tuple[str, ...]) -> Callable[[CloudEvent], None]:
    def handle(event: CloudEvent) -> None:
        try:
            runner.handle_cloudevent(event, expect=types)
        except Retry as err:  # the publisher answers 503, so the sender (registry, Alertmanager) retries
            raise ProviderUnavailable(
                f"event {event['id']} ({event['type']}) must be redelivered: {err}"
            ) from err

    return handle


def _outcomes(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    return [
        {"app": o.app, "eventId": o.event_id, "status": o.status, "reason": brief(o.reason, 500)}
        for o in outcomes
    ]


def _refused(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="graylane-internal"'} if status == 401 else {}
    return JSONResponse({"error": brief(message)}, status_code=status, headers=headers)


def function_routes(
    runner: Runner, auth: InternalAuth, now: Callable[[], float] = time.time
) -> list[BaseRoute]:
    """The internal endpoints: POST /functions/{target} (a CloudEvent, binary or structured, for that function)
    and POST /tick (one sweep; a tick CloudEvent, or an empty body).

    401 without the internal credential, 403 for an image/command/alert event no edge attested, 400 for a body
    that is no CloudEvent, 404 for an unknown target, 200 with the outcomes, 503 when the runner asks for a
    redelivery (Retry), which is what a Knative broker retries on.
    """
    from functions.internal_auth import Forbidden, Unauthenticated, verify_origin

    async def authenticated(request: Request) -> tuple[bytes, Response | None]:
        body = await request.body()
        try:
            caller = auth.authenticate(dict(request.headers), body, now())
        except Unauthenticated as err:
            log.warning("internal %s refused: %s", request.url.path, brief(str(err), 300))
            return body, _refused(401, f"{request.url.path}: {err}")
        log.debug("internal %s called by %s", request.url.path, caller)
        return body, None

    def cloudevent(request: Request, body: bytes, what: str) -> CloudEvent | Response:
        from cloudevents.http import from_http

        try:
            return from_http(dict(request.headers), body)
        except Exception as err:  # cloudevents raises its own hierarchy for every malformed request
            return _refused(400, f"{what}: not a CloudEvent: {type(err).__name__}: {brief(str(err), 300)}")

    async def call(request: Request) -> Response:
        target = request.path_params["target"]
        body, refused = await authenticated(request)
        if refused is not None:
            return refused
        types = FUNCTIONS.get(target)
        if types is None:
            return _refused(404, f"unknown function {target[:40]!r}; known: {', '.join(FUNCTIONS)}")
        event = cloudevent(request, body, f"function {target}")
        if isinstance(event, Response):
            return event
        try:
            verify_origin(event, auth.edge_key)
        except Forbidden as err:
            log.warning("function %s refused event %s: %s", target, brief(str(event["id"]), 80), err)
            return _refused(403, f"function {target}: {err}")
        try:
            outcomes = await run_in_threadpool(runner.handle_cloudevent, event, types)
        except Retry as err:
            return JSONResponse(
                {"error": brief(f"function {target}: {err}")}, status_code=503, headers={"Retry-After": "1"}
            )
        return JSONResponse({"outcomes": _outcomes(outcomes)})

    async def tick(request: Request) -> Response:
        body, refused = await authenticated(request)
        if refused is not None:
            return refused
        if body.strip() or "ce-specversion" in request.headers:
            event = cloudevent(request, body, "tick")
            if isinstance(event, Response):
                return event
            if event["type"] not in TICK_TYPES:
                return _refused(
                    400,
                    f"tick: a {brief(str(event['type']), 80)} event is not a tick; expected "
                    f"{' or '.join(TICK_TYPES)} (or an empty body)",
                )
        else:
            from functions import catalog

            event = catalog.make_event(
                RELEASE_TICK, "", {}, id=f"tick-{uuid.uuid4().hex}", source=f"{SOURCE}/tick"
            )
        try:
            outcomes = await run_in_threadpool(runner.handle_cloudevent, event, TICK_TYPES)
        except Retry as err:
            return JSONResponse(
                {"error": brief(f"tick: {err}")}, status_code=503, headers={"Retry-After": "1"}
            )
        return JSONResponse({"tick": event["id"], "outcomes": _outcomes(outcomes)})

    return [Route("/functions/{target}", call, methods=["POST"]), Route("/tick", tick, methods=["POST"])]


def internal_app(runner: Runner, auth: InternalAuth) -> Starlette:
    """The internal listener's app: the function and tick endpoints and /healthz, nothing public."""
    from starlette.middleware import Middleware

    from functions.gateway import BodyLimit, _healthz

    routes: list[BaseRoute] = [Route("/healthz", _healthz, methods=["GET"]), *function_routes(runner, auth)]
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit, max_body=MAX_INTERNAL_BODY)])


class Ticker:
    """Publishes a `dev.graylane.release.tick` sweep (every app) on the bus every `every` seconds."""

    def __init__(self, bus: MemoryBus, every: float, source: str = f"{SOURCE}/ticker") -> None:
        if every <= 0:
            raise ConfigError(f"--tick {every!r}: the tick interval must be positive seconds")
        self.bus = bus
        self.every = every
        self.source = source
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="graylane-ticker", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def tick(self) -> None:
        from functions import catalog

        event = catalog.make_event(RELEASE_TICK, "", {}, id=f"tick-{uuid.uuid4().hex}", source=self.source)
        self.bus.publish(event)
        self.ticks += 1
        if len(self.bus.events) > MAX_RECORDED:
            self.bus.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:  # a failed sweep is retried by the next one; never kill the ticker
                log.exception("tick sweep failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@dataclass
class Serve:
    """One process's worth of graylane: `app` (the public ASGI app), `internal` (the internal listener's), the
    runner behind both, the bus and the ticker."""

    app: Starlette
    runner: Any
    bus: MemoryBus
    ticker: Ticker
    approvals: Any = None
    internal: Starlette | None = None
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        self.ticker.stop()
        for undo in self.unsubscribe:
            undo()


def build_serve(
    store: StateStore,
    policies: PolicySource,
    providers: Providers,
    *,
    bus: MemoryBus | None = None,
    tick: float = 5.0,
    gateway_settings: Any = None,
    api_tokens: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], Any] | None = None,
    internal_auth: Any = None,
    console: Any = None,
) -> Serve:
    """Wire store + policies + providers into the two apps. Nothing runs until `ticker.start()` and a server.

    `gateway_settings` defaults to GatewaySettings.from_env(env); `api_tokens` ({token: user}) to
    GRAYLANE_API_TOKENS; `internal_auth` to InternalAuth.from_env(env) (GRAYLANE_INTERNAL_TOKEN,
    GRAYLANE_EDGE_KEY, GRAYLANE_OIDC_*); `env` also feeds the ChatOps settings; `console` (ConsoleSettings) to
    ConsoleSettings.from_env(env): the web console at /ui (GRAYLANE_CONSOLE=off leaves it out).
    """
    from functions.approval_api import ApiSettings, api_routes
    from functions.approvals import Approvals
    from functions.audit import StoreAuditLog
    from functions.gateway import GatewaySettings, build_app
    from functions.internal_auth import InternalAuth
    from functions.providers.sources import make_sources
    from functions.runner import Runner, utcnow

    bus = bus or MemoryBus()
    runner = Runner(store, policies, providers, bus, clock=clock or utcnow, source=SOURCE)
    unsubscribe = route_functions(bus, runner)
    approvals = Approvals(store, policies, bus, StoreAuditLog(store), clock=clock)
    api = ApiSettings(dict(api_tokens)) if api_tokens is not None else ApiSettings.from_env(env)
    routes: list[BaseRoute] = [
        *api_routes(approvals, api),
        *_chat_routes(approvals, env),
        *_console_routes(approvals, api.tokens, env, console),
    ]
    app = build_app(
        gateway_settings or GatewaySettings.from_env(env), make_sources(), bus, policies, extra_routes=routes
    )
    auth = internal_auth if internal_auth is not None else InternalAuth.from_env(env)
    return Serve(
        app=app,
        runner=runner,
        bus=bus,
        ticker=Ticker(bus, tick),
        approvals=approvals,
        internal=internal_app(runner, auth),
        unsubscribe=unsubscribe,
    )


def _chat_routes(approvals: Approvals, env: Mapping[str, str] | None) -> list[BaseRoute]:
    from functions.chatops.routes import ChatOpsSettings, chatops_routes

    return list(chatops_routes(ChatOpsSettings.from_env(env).platforms(), approvals))


def _console_routes(
    approvals: Approvals, tokens: Mapping[str, str], env: Mapping[str, str] | None, settings: Any
) -> list[BaseRoute]:
    from functions.console import console_routes

    return console_routes(approvals, tokens, env, settings)


# ---------------------------------------------------------------------------------------------- the command

PROVIDERS = ("local", "recording", "kubernetes")


@value
class ServeOptions:
    store: str = "sqlite:///graylane.db"
    policies: str = "infra/examples"
    context: str = ""  # kubeconfig context: ConfigMap store (unless --store says otherwise) and cluster
    providers: str = "recording"  # local | recording | kubernetes
    host: str = "127.0.0.1"
    port: int = 8080
    tick: float = 5.0
    prometheus: str = "http://127.0.0.1:9090"
    local_stack: str = ""  # LocalConfig JSON for --providers local
    store_given: bool = False
    internal_host: str = "127.0.0.1"
    internal_port: int = 8081

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags: Any) -> ServeOptions:
        """The options from the environment (ENV below), each overridden by a flag given (not None).

        GRAYLANE_STORE, GRAYLANE_POLICIES, GRAYLANE_CONTEXT, GRAYLANE_PROVIDERS, GRAYLANE_HOST, GRAYLANE_PORT,
        GRAYLANE_INTERNAL_HOST, GRAYLANE_INTERNAL_PORT, GRAYLANE_TICK_INTERVAL, GRAYLANE_PROMETHEUS,
        GRAYLANE_LOCAL_STACK.
        """
        env = os.environ if env is None else env
        d = cls()
        raw: dict[str, Any] = {}
        for name, key in ENV.items():
            if flags.get(name) is not None:
                raw[name] = flags[name]
            elif env.get(key, "").strip():
                raw[name] = env[key].strip()
        unknown = set(flags) - set(ENV)
        if unknown:
            raise ConfigError(f"unknown serve option(s) {', '.join(sorted(unknown))}")

        def port(name: str) -> int:
            text = str(raw.get(name, getattr(d, name)))
            where = f"--{name.replace('_', '-')} / {ENV[name]}"
            if not text.isdigit() or not 0 <= int(text) <= 65535:
                raise ConfigError(f"{where} {text[:20]!r} is not a port number 0..65535 (0: any free port)")
            return int(text)

        tick = raw.get("tick", d.tick)
        opts = cls(
            store=str(raw.get("store", d.store)),
            policies=str(raw.get("policies", d.policies)),
            context=str(raw.get("context", d.context)),
            providers=str(raw.get("providers", d.providers)),
            host=str(raw.get("host", d.host)),
            port=port("port"),
            tick=tick if isinstance(tick, float) else parse_duration(str(tick)),
            prometheus=str(raw.get("prometheus", d.prometheus)),
            local_stack=str(raw.get("local_stack", d.local_stack)),
            store_given="store" in raw,
            internal_host=str(raw.get("internal_host", d.internal_host)),
            internal_port=port("internal_port"),
        )
        if opts.providers not in PROVIDERS:
            raise ConfigError(
                f"--providers / GRAYLANE_PROVIDERS {opts.providers!r} is not allowed; expected "
                f"{', '.join(PROVIDERS)}"
            )
        if opts.port and opts.port == opts.internal_port:
            raise ConfigError(
                f"the internal listener needs its own port: --port and --internal-port are both {opts.port}"
            )
        return opts


ENV = {  # ServeOptions field -> environment variable
    "store": "GRAYLANE_STORE",
    "policies": "GRAYLANE_POLICIES",
    "context": "GRAYLANE_CONTEXT",
    "providers": "GRAYLANE_PROVIDERS",
    "host": "GRAYLANE_HOST",
    "port": "GRAYLANE_PORT",
    "internal_host": "GRAYLANE_INTERNAL_HOST",
    "internal_port": "GRAYLANE_INTERNAL_PORT",
    "tick": "GRAYLANE_TICK_INTERVAL",
    "prometheus": "GRAYLANE_PROMETHEUS",
    "local_stack": "GRAYLANE_LOCAL_STACK",
}


def store_url(opts: ServeOptions) -> str:
    if opts.context and not opts.store_given:
        return f"configmap://?context={opts.context}"
    return opts.store


def make_providers(opts: ServeOptions, out: Callable[[str], None] = print) -> Providers:
    if opts.providers == "recording":
        from functions.providers.recording import RecordingProviders

        return RecordingProviders()
    if opts.providers == "local":
        import os

        from functions.local.providers import LocalConfig, LocalProviders

        path = opts.local_stack or os.environ.get("GRAYLANE_LOCAL_STACK", "")
        if not path:
            raise ConfigError(
                "--providers local needs --local-stack FILE (or GRAYLANE_LOCAL_STACK), or a stack "
                "started by `graylane serve --providers local` itself"
            )
        return LocalProviders(LocalConfig.from_file(path), out=out)
    if opts.providers == "kubernetes":
        return _kubernetes_providers(opts)
    raise ConfigError(
        f"--providers {opts.providers!r} is not allowed; expected local, recording or kubernetes"
    )


def _kubernetes_providers(opts: ServeOptions) -> Providers:
    from functions.providers.factory import KubernetesProviders
    from functions.providers.kube import client_from
    from functions.settings import Settings

    settings = Settings(
        store=store_url(opts),
        policies=opts.policies,
        providers="kubernetes",
        prometheus=opts.prometheus,
        source=SOURCE,
    )
    context = opts.context
    return KubernetesProviders(
        settings, client_for=lambda cluster: client_from(context=cluster or context or None)
    )


def run(opts: ServeOptions, out: Callable[[str], None] = print) -> int:
    """Serve both listeners until SIGINT/SIGTERM; the ticker stops with them.

    Both sockets are bound before anything starts (port 0 picks a free port; the line printed names the ports
    actually bound), so a port taken by someone else fails at once with a ConfigError naming it, and nothing
    races between choosing a port and binding it. `--providers local` without a stack file starts the local
    stack (HAProxy, Prometheus, Alertmanager wired to this gateway) in a temporary directory and stops it on
    the way out.
    """
    from functions.gateway import GatewaySettings
    from functions.providers.stores import make_store

    url = store_url(opts)
    store = make_store(url)
    policies = policies_from(opts.policies, opts.context)
    gateway = GatewaySettings.from_env()
    public = bind_socket(opts.host, opts.port, "--host/--port (public listener)")
    try:
        internal = bind_socket(opts.internal_host, opts.internal_port, "--internal-host/--internal-port")
    except BaseException:
        public.close()
        raise
    stack = None
    try:
        opts = _replace(opts, port=public.getsockname()[1], internal_port=internal.getsockname()[1])
        if opts.providers == "local" and not (opts.local_stack or os.environ.get("GRAYLANE_LOCAL_STACK")):
            stack, opts, gateway = _start_local_stack(opts, gateway, out)
        providers = make_providers(opts, out)
        serve = build_serve(store, policies, providers, tick=opts.tick, gateway_settings=gateway)
        serve.ticker.start()
        out(
            f"graylane serve on http://{_url_host(opts.host)}:{opts.port} (internal "
            f"http://{_url_host(opts.internal_host)}:{opts.internal_port}; store {url}, policies {opts.policies}, "
            f"providers {opts.providers}, tick {opts.tick:g}s)"
        )
        try:
            serve_listeners([(serve.app, public), (serve.internal, internal)])
        finally:
            serve.stop()
            close = getattr(providers, "close", None)
            if close is not None:
                close()
    finally:
        public.close()
        internal.close()
        if stack is not None:
            import shutil

            stack.stop()
            shutil.rmtree(stack.dir, ignore_errors=True)
    return 0


def _replace(opts: ServeOptions, **changes: Any) -> ServeOptions:
    from dataclasses import replace

    return replace(opts, **changes)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind_socket(host: str, port: int, what: str) -> Any:
    """A TCP socket bound to host:port (0: a free port), ready for uvicorn; ConfigError naming `what` if taken."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on, even before the server loop takes them
    except OSError as err:
        sock.close()
        raise ConfigError(f"{what} {host}:{port}: cannot listen: {err.strerror or err}") from err
    return sock


def serve_listeners(apps: list[tuple[Any, Any]]) -> None:
    """Run one uvicorn server per (app, bound socket) in this thread's event loop until SIGINT/SIGTERM (or one of
    them stops); one signal handler stops them all."""
    import asyncio
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]  # the handler below serves every listener
            yield

    # timeout_graceful_shutdown: open event streams (the console's live pages) never finish by themselves
    servers = [
        (
            Server(
                uvicorn.Config(
                    app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5
                )
            ),
            sock,
        )
        for app, sock in apps
    ]

    def stop(*_: Any) -> None:
        for server, _sock in servers:
            server.should_exit = True

    async def main() -> None:
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    )
    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_local_stack(
    opts: ServeOptions, gateway: Any, out: Callable[[str], None]
) -> tuple[Any, ServeOptions, Any]:
    import secrets
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from functions.local.stack import LocalStack, ensure_packages
    from functions.providers.sources.base import Credentials

    token = gateway.credentials.get("alertmanager", Credentials()).token or secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="graylane-serve-"))
    ensure_packages(out)
    stack = LocalStack(workdir, token)
    stack.ports.gateway = opts.port  # Alertmanager posts to this process
    stack.start()
    config_file = workdir / "stack.json"
    config_file.write_text(stack.config({}).to_json())
    credentials = {**gateway.credentials, "alertmanager": Credentials(token=token)}
    out(f"local stack in {workdir}: traffic to {stack.url}, Prometheus {stack.prometheus}")
    return stack, replace(opts, local_stack=str(config_file)), replace(gateway, credentials=credentials)


def parse_duration(text: str) -> float:
    """'5s', '500ms', '1m' or a bare number of seconds."""
    t = text.strip().lower()
    try:
        for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
            if t.endswith(suffix):
                return float(t[: -len(suffix)]) * scale
        return float(t)
    except ValueError as err:
        raise ConfigError(f"duration {text!r}: expected e.g. 5s, 500ms or 1m") from err
