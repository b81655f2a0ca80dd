"""`graylane serve`: the gateway, every function and the analysis ticker in one process.

    registry / Alertmanager / chat / API ──► gateway routes ──► MemoryBus ──► runner (the functions)
    POST /functions/{target} (Knative-style CloudEvents) ──────────────────► runner
    ticker thread: dev.graylane.release.tick sweep every --tick ──► MemoryBus ──► runner

The bus dispatches each CloudEvent type to the runner exactly as the Knative Triggers do in
production: image.pushed -> release_start, release.tick -> release_tick, release.command ->
release_command, alert.* -> protection. Events the runner emits go on the same bus (observers may
subscribe). State is SQLite by default; `--context` uses a cluster's ConfigMaps (and its workloads
with `--providers kubernetes`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from functions.bus import MemoryBus
from functions.core.events import ALERT_FIRING, ALERT_RESOLVED, IMAGE_PUSHED, RELEASE_COMMAND, RELEASE_TICK
from functions.core.values import value
from functions.errors import ConfigError, ProviderUnavailable, Retry
from functions.runtime import policies_from

log = logging.getLogger("graylane.serve")

SOURCE = "/graylane/serve"
# function target -> the CloudEvent types its Knative Trigger delivers (infra/k8s)
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "release_start": (IMAGE_PUSHED,),
    "release_tick": (RELEASE_TICK,),
    "release_command": (RELEASE_COMMAND,),
    "protection": (ALERT_FIRING, ALERT_RESOLVED),
}
MAX_RECORDED = 10_000  # the MemoryBus keeps every event; a long-running serve drops them past this


def route_functions(bus: MemoryBus, runner: Any) -> list[Callable[[], None]]:
    """Subscribe the runner to each consumed type, as the Triggers do; returns the unsubscribers."""
    out = []
    for types in FUNCTIONS.values():
        for event_type in types:
            out.append(bus.subscribe(event_type, _deliver(runner, types)))
    return out


def _deliver(runner: Any, types: tuple[str, ...]) -> Callable[[Any], None]:
    def handle(event: Any) -> None:
        try:
            runner.handle_cloudevent(event, expect=types)
        except Retry as err:  # the publisher answers 503, so the sender (registry, Alertmanager) retries
            raise ProviderUnavailable(f"event {event['id']} ({event['type']}) must be redelivered: {err}") from err

    return handle


def function_routes(runner: Any) -> list[BaseRoute]:
    """POST /functions/{target}: a CloudEvent (binary or structured) handled by that function.

    200 with the outcomes; 400 for a body that is no CloudEvent; 404 for an unknown target; 503 when the
    runner asks for a redelivery (Retry), which is what a Knative broker retries on.
    """

    async def call(request: Request) -> Response:
        target = request.path_params["target"]
        types = FUNCTIONS.get(target)
        if types is None:
            return JSONResponse({"error": f"unknown function {target[:40]!r}; known: {', '.join(FUNCTIONS)}"},
                                status_code=404)  # fmt: skip
        from cloudevents.http import from_http

        body = await request.body()
        try:
            event = from_http(dict(request.headers), body)
        except Exception as err:  # cloudevents raises its own hierarchy for every malformed request
            return JSONResponse({"error": f"function {target}: not a CloudEvent: {type(err).__name__}: {err}"},
                                status_code=400)  # fmt: skip
        try:
            outcomes = await run_in_threadpool(runner.handle_cloudevent, event, types)
        except Retry as err:
            return JSONResponse({"error": f"function {target}: {err}"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"outcomes": [{"app": o.app, "eventId": o.event_id, "status": o.status,
                                           "reason": o.reason} for o in outcomes]})  # fmt: skip

    return [Route("/functions/{target}", call, methods=["POST"])]


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
    """One process's worth of graylane: `app` (ASGI), the runner behind it, the bus and the ticker."""

    app: Starlette
    runner: Any
    bus: MemoryBus
    ticker: Ticker
    approvals: Any = None
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        self.ticker.stop()
        for undo in self.unsubscribe:
            undo()


def build_serve(store: Any, policies: Any, providers: Any, *, bus: MemoryBus | None = None, tick: float = 5.0,
                gateway_settings: Any = None, api_tokens: Mapping[str, str] | None = None,
                env: Mapping[str, str] | None = None, clock: Callable[[], Any] | None = None) -> Serve:  # fmt: skip
    """Wire store + policies + providers into one app. Nothing runs until `ticker.start()` and a server.

    `gateway_settings` defaults to GatewaySettings.from_env(env); `api_tokens` ({token: user}) to
    GRAYLANE_API_TOKENS; `env` also feeds the ChatOps settings.
    """
    from functions.approval_api import ApiSettings, api_routes
    from functions.approvals import Approvals
    from functions.audit import StoreAuditLog
    from functions.gateway import GatewaySettings, build_app
    from functions.providers.sources import make_sources
    from functions.runner import Runner

    bus = bus or MemoryBus()
    runner = Runner(store, policies, providers, bus, source=SOURCE, **({"clock": clock} if clock else {}))
    unsubscribe = route_functions(bus, runner)
    approvals = Approvals(store, policies, bus, StoreAuditLog(store), clock=clock)
    api = ApiSettings(dict(api_tokens)) if api_tokens is not None else ApiSettings.from_env(env)
    routes: list[BaseRoute] = [*function_routes(runner), *api_routes(approvals, api), *_chat_routes(approvals, env)]
    app = build_app(gateway_settings or GatewaySettings.from_env(env), make_sources(), bus, policies,
                    extra_routes=routes)  # fmt: skip
    return Serve(app=app, runner=runner, bus=bus, ticker=Ticker(bus, tick), approvals=approvals,
                 unsubscribe=unsubscribe)  # fmt: skip


def _chat_routes(approvals: Any, env: Mapping[str, str] | None) -> list[BaseRoute]:
    from functions.chatops.routes import ChatOpsSettings, chatops_routes

    return list(chatops_routes(ChatOpsSettings.from_env(env).platforms(), approvals))


# ---------------------------------------------------------------------------------------------- the command


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


def store_url(opts: ServeOptions) -> str:
    if opts.context and not opts.store_given:
        return f"configmap://?context={opts.context}"
    return opts.store


def make_providers(opts: ServeOptions, out: Callable[[str], None] = print) -> Any:
    if opts.providers == "recording":
        from functions.providers.recording import RecordingProviders

        return RecordingProviders()
    if opts.providers == "local":
        import os

        from functions.local.providers import LocalConfig, LocalProviders

        path = opts.local_stack or os.environ.get("GRAYLANE_LOCAL_STACK", "")
        if not path:
            raise ConfigError("--providers local needs --local-stack FILE (or GRAYLANE_LOCAL_STACK), or a stack "
                              "started by `graylane serve --providers local` itself")
        return LocalProviders(LocalConfig.from_file(path), out=out)
    if opts.providers == "kubernetes":
        return _kubernetes_providers(opts)
    raise ConfigError(f"--providers {opts.providers!r} is not allowed; expected local, recording or kubernetes")


def _kubernetes_providers(opts: ServeOptions) -> Any:
    from functions.providers.kube import client_from
    from functions.settings import Settings

    try:
        from functions.providers.kubernetes import KubernetesProviders  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from functions.providers.factory import KubernetesProviders
    settings = Settings(store=store_url(opts), policies=opts.policies, providers="kubernetes",
                        prometheus=opts.prometheus, source=SOURCE)  # fmt: skip
    context = opts.context
    return KubernetesProviders(settings, client_for=lambda cluster: client_from(context=cluster or context or None))


def run(opts: ServeOptions, out: Callable[[str], None] = print) -> int:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM); the ticker stops with it.

    `--providers local` without a stack file starts the local stack (HAProxy, Prometheus, Alertmanager
    wired to this gateway) in a temporary directory and stops it on the way out.
    """
    import os

    import uvicorn

    from functions.gateway import GatewaySettings
    from functions.providers.stores import make_store

    url = store_url(opts)
    store = make_store(url)
    policies = policies_from(opts.policies, opts.context)
    gateway = GatewaySettings.from_env()
    stack = None
    if opts.providers == "local" and not (opts.local_stack or os.environ.get("GRAYLANE_LOCAL_STACK")):
        stack, opts, gateway = _start_local_stack(opts, gateway, out)
    try:
        providers = make_providers(opts, out)
        serve = build_serve(store, policies, providers, tick=opts.tick, gateway_settings=gateway)
        serve.ticker.start()
        out(f"graylane serve on http://{opts.host}:{opts.port} (store {url}, policies {opts.policies}, "
            f"providers {opts.providers}, tick {opts.tick:g}s)")
        try:
            uvicorn.run(serve.app, host=opts.host, port=opts.port, log_level="warning", lifespan="off")
        finally:
            serve.stop()
            close = getattr(providers, "close", None)
            if close is not None:
                close()
    finally:
        if stack is not None:
            import shutil

            stack.stop()
            shutil.rmtree(stack.dir, ignore_errors=True)
    return 0


def _start_local_stack(opts: ServeOptions, gateway: Any, out: Callable[[str], None]) -> tuple[Any, ServeOptions, Any]:
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
