"""`graylane serve` in-process: gateway -> MemoryBus -> runner on SQLite, the ticker, the function and API routes.

Recording providers keep it unit-level; the store, policies (YAML files), gateway, bus and runner are real.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from functions import catalog
from functions.core.events import IMAGE_PUSHED, RELEASE_COMMAND, RELEASE_TICK
from functions.core.state import AppState, Phase
from functions.errors import ConfigError
from functions.gateway import GatewaySettings
from functions.internal_auth import InternalAuth
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.sources.base import Credentials
from functions.providers.stores.sqlite import SqliteStore
from functions.serve import FUNCTIONS, ServeOptions, Ticker, build_serve, parse_duration, store_url

with warnings.catch_warnings():
    warnings.simplefilter(
        "ignore", StarletteDeprecationWarning
    )  # TestClient prefers httpx2; httpx works the same
    from starlette.testclient import TestClient

APP = "team/web"
HOOK_TOKEN, API_TOKEN = "hook-token-123", "api-token-12345"
INTERNAL_TOKEN, EDGE_KEY = "internal-token-0123456789", "edge-key-0123456789abcdef"
POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: web, namespace: team}
spec:
  image: {repository: docker.io/team/web}
  router: {provider: recording}
  approvers: {default: {users: [alice]}, gates: {promote: {users: [ops-lead, alice]}}}
  stages:
    - canary: {steps: [{weight: 30, pause: 30s}]}
    - approval: {name: promote}
    - promote: {}
"""


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Served:
    client: TestClient
    store: SqliteStore
    providers: RecordingProviders
    clock: Clock
    serve: Any
    internal: TestClient

    def state(self) -> AppState:
        doc, _ = self.store.load(APP)
        assert doc is not None, "no state stored"
        return AppState.from_json(doc)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(POLICY)
    store = SqliteStore(str(tmp_path / "graylane.db"))
    providers = RecordingProviders()
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    serve = build_serve(
        store,
        DirectoryPolicies(policies),
        providers,
        tick=0.05,
        clock=clock,
        gateway_settings=GatewaySettings(credentials={"dockerhub": Credentials(token=HOOK_TOKEN)}),
        api_tokens={API_TOKEN: "alice"},
        env={},
        internal_auth=InternalAuth(token=INTERNAL_TOKEN, edge_key=EDGE_KEY),
    )
    with TestClient(serve.app) as client, TestClient(serve.internal) as internal:
        yield Served(client, store, providers, clock, serve, internal)
    serve.stop()


def push(client: TestClient, tag: str, pushed_at: int = 1_700_000_000) -> Any:
    body = {
        "push_data": {"pushed_at": pushed_at, "pusher": "ci", "tag": tag},
        "repository": {"repo_name": "team/web", "name": "web", "namespace": "team"},
    }
    return client.post(f"/hooks/dockerhub/{HOOK_TOKEN}", json=body)


def test_a_docker_hub_push_reaches_the_runner_and_sqlite(served: Served) -> None:
    answer = push(served.client, "v1.0.0")
    assert answer.status_code == 202, answer.text
    assert answer.json()["ids"]
    assert served.state().stable.version == "v1.0.0"  # the first image becomes stable

    assert push(served.client, "v2.0.0", 1_700_000_100).status_code == 202
    state = served.state()
    assert state.release is not None and state.release.target.version == "v2.0.0"
    assert (state.routes.stable, state.routes.canary) == (70, 30)
    router = served.providers.router_
    assert any(plan.canary == 30 for plan in router.routes.values())  # the effect reached the provider


def test_emitted_events_go_on_the_bus_but_only_consumed_types_reach_the_runner(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    types = [e["type"] for e in served.serve.bus.events]
    assert IMAGE_PUSHED in types and "dev.graylane.release.started" in types
    # a release.started handled by the runner would be rejected and recorded nowhere; nothing was ignored
    assert not [h for h in served.state().history if h.action == "ignored"]


def test_a_tick_sweep_fires_the_due_timer_and_the_ticker_thread_publishes_ticks(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    served.serve.ticker.tick()
    assert served.state().release.phase is Phase.PROGRESSING  # type: ignore[union-attr]  # pause not over
    served.clock.now += timedelta(seconds=31)
    served.serve.ticker.start()
    deadline = time.monotonic() + 5
    while served.state().release.phase is not Phase.WAITING and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    state = served.state()
    assert (
        state.release is not None and state.release.phase is Phase.WAITING and state.release.gate == "promote"
    )
    assert served.serve.ticker.ticks >= 1
    assert any(e["type"] == RELEASE_TICK for e in served.serve.bus.events)


def test_the_approval_api_opens_the_gate_as_the_token_user(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    served.clock.now += timedelta(seconds=31)
    served.serve.ticker.tick()
    answer = served.client.post(
        f"/api/v1/apps/{APP}/commands",
        json={"action": "approve", "gate": "promote"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert answer.status_code == 202, answer.text
    state = served.state()
    assert state.stable.version == "v2.0.0"
    approved = [h for h in state.history if h.action == "approved"]
    assert approved and approved[-1].by is not None and approved[-1].by.user == "alice"
    denied = served.client.post(
        f"/api/v1/apps/{APP}/commands",
        json={"action": "approve"},
        headers={"Authorization": "Bearer wrong-token-000"},
    )
    assert denied.status_code == 401


def call_function(
    client: TestClient,
    target: str,
    event: Any,
    token: str | None = INTERNAL_TOKEN,
    key: str | None = EDGE_KEY,
    signed: bool = False,
) -> Any:
    """POST a binary CloudEvent to the internal listener, as an edge (attested with `key`) holding `token`."""
    from cloudevents.conversion import to_binary

    from functions.internal_auth import attest, signed_headers

    if key is not None:
        attest(event, key)
    headers, body = to_binary(event)
    headers = {**headers, "content-type": "application/json"}
    if token is not None and signed:
        headers |= signed_headers(token, headers, body)
    elif token is not None:
        headers["authorization"] = f"Bearer {token}"
    return client.post(f"/functions/{target}", content=body, headers=headers)


def test_function_endpoints_take_knative_style_cloudevents(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    event = catalog.make_event(
        RELEASE_COMMAND,
        APP,
        {
            "action": "abort",
            "app": APP,
            "reason": "test",
            "release": "web-1",
            "actor": {"user": "alice", "via": "cli"},
        },
        id="cmd-1",
    )
    answer = call_function(served.internal, "release_command", event)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcomes"][0]["status"] == "transitioned"
    assert served.state().release.phase is Phase.ABORTED  # type: ignore[union-attr]

    wrong = call_function(served.internal, "release_tick", event)
    assert wrong.json()["outcomes"][0]["status"] == "rejected"  # a command is not the tick function's type
    auth = {"authorization": f"Bearer {INTERNAL_TOKEN}"}
    assert served.internal.post("/functions/nope", content=b"{}", headers=auth).status_code == 404
    assert (
        served.internal.post("/functions/release_tick", content=b"not an event", headers=auth).status_code
        == 400
    )


def test_every_consumed_type_has_a_function() -> None:
    routed = {t for types in FUNCTIONS.values() for t in types}
    from functions.core.events import CONSUMED

    assert routed == set(CONSUMED)


def test_options_and_durations() -> None:
    assert parse_duration("5s") == 5.0 and parse_duration("500ms") == 0.5 and parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5
    with pytest.raises(ConfigError, match="duration 'soon'"):
        parse_duration("soon")
    assert store_url(ServeOptions(context="kind-a")) == "configmap://?context=kind-a"
    assert (
        store_url(ServeOptions(context="kind-a", store="sqlite:///x.db", store_given=True))
        == "sqlite:///x.db"
    )
    assert store_url(ServeOptions()) == "sqlite:///graylane.db"
    with pytest.raises(ConfigError, match="positive"):
        Ticker(None, 0)  # type: ignore[arg-type]


def test_local_providers_read_the_stack_file_and_name_a_bad_one(tmp_path: Path) -> None:
    from functions.local.providers import Behaviour, LocalConfig, LocalProviders

    config = LocalConfig(
        workdir=str(tmp_path),
        socket=str(tmp_path / "admin.sock"),
        stable_port=1,
        canary_port=2,
        behaviours={"v3": Behaviour(error_rate=0.5)},
    )
    (tmp_path / "stack.json").write_text(config.to_json())
    opts = ServeOptions(providers="local", local_stack=str(tmp_path / "stack.json"))
    from functions.serve import make_providers

    providers = make_providers(opts)
    assert isinstance(providers, LocalProviders) and providers.config == config
    assert (
        providers.config.behaviour("v3").error_rate == 0.5 and providers.config.behaviour("v9") == Behaviour()
    )
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        make_providers(ServeOptions(providers="local", local_stack=str(tmp_path / "bad.json")))
    assert json.dumps(FUNCTIONS)  # the routing table is plain data (used by docs and infra)


# ---------------------------------------------------------------------------------------------- [unauthenticated]

MALLORY = {"action": "approve", "app": APP, "gate": "promote", "actor": {"user": "mallory", "via": "slack"}}


def waiting_at_promote(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    served.clock.now += timedelta(seconds=31)
    served.serve.ticker.tick()
    state = served.state()
    assert state.release is not None and state.release.gate == "promote"


def test_unauthenticated_the_public_listener_has_no_function_or_tick_endpoint(served: Served) -> None:
    event = catalog.make_event(RELEASE_COMMAND, APP, MALLORY, id="cmd-public")
    assert call_function(served.client, "release_command", event).status_code == 404
    assert (
        served.client.post("/tick", headers={"authorization": f"Bearer {INTERNAL_TOKEN}"}).status_code == 404
    )


def test_unauthenticated_mallory_cannot_approve_over_the_internal_listener(served: Served) -> None:
    waiting_at_promote(served)

    anonymous = call_function(
        served.internal,
        "release_command",
        catalog.make_event(RELEASE_COMMAND, APP, MALLORY, id="cmd-m1"),
        token=None,
        key=None,
    )
    with_token = call_function(
        served.internal,
        "release_command",
        catalog.make_event(RELEASE_COMMAND, APP, MALLORY, id="cmd-m2"),
        key=None,
    )
    guessed = call_function(
        served.internal,
        "release_command",
        catalog.make_event(RELEASE_COMMAND, APP, MALLORY, id="cmd-m3"),
        token="guess-guess-guess",
    )

    assert (anonymous.status_code, with_token.status_code, guessed.status_code) == (401, 403, 401)
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "edge attestation" in with_token.json()["error"]
    state = served.state()
    assert state.release is not None and state.release.gate == "promote" and state.stable.version == "v1.0.0"
    assert not [h for h in state.history if h.action == "approved"]
    # the approval API is the edge: the actor is the token's user, whatever anyone sends
    answer = served.client.post(
        f"/api/v1/apps/{APP}/commands",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        json={"action": "approve", "gate": "promote"},
    )
    assert answer.status_code == 202, answer.text
    (approved,) = [h for h in served.state().history if h.action == "approved"]
    assert approved.by is not None and approved.by.user == "alice" and approved.by.via == "api"


def test_unauthenticated_an_anonymous_push_cannot_supersede_a_release(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    evil = {
        "app": APP,
        "repository": "docker.io/team/web",
        "tag": "v6.6.6",
        "source": "dockerhub",
        "image": "evil.example.com/miner:latest",
    }
    anonymous = call_function(
        served.internal,
        "release_start",
        catalog.make_event(IMAGE_PUSHED, APP, evil, id="p1"),
        token=None,
        key=None,
    )
    with_token = call_function(
        served.internal, "release_start", catalog.make_event(IMAGE_PUSHED, APP, evil, id="p2"), key=None
    )

    assert (anonymous.status_code, with_token.status_code) == (401, 403)
    state = served.state()
    assert state.release is not None and state.release.target.version == "v2.0.0"
    assert "evil.example.com" not in state.to_json()


def test_unauthenticated_without_a_token_the_internal_listener_refuses_everything(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(POLICY)
    serve = build_serve(
        SqliteStore(str(tmp_path / "g.db")), DirectoryPolicies(tmp_path), RecordingProviders(), env={}
    )  # no GRAYLANE_INTERNAL_TOKEN in the environment
    with TestClient(serve.internal) as internal:
        tick = internal.post("/tick", headers={"authorization": "Bearer "})
        anything = internal.post("/tick", headers={"authorization": "Bearer anything-at-all-12345"})
    serve.stop()
    assert (tick.status_code, anything.status_code) == (401, 401)
    assert "refuse every call" in anything.json()["error"]


def test_unauthenticated_the_tick_endpoint_takes_a_token_or_a_signed_request(served: Served) -> None:
    from functions.internal_auth import signed_headers

    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    served.clock.now += timedelta(seconds=31)
    headers = {
        "ce-specversion": "1.0",
        "ce-type": RELEASE_TICK,
        "ce-source": "/test",
        "ce-id": "tick-minute-1",
        "content-type": "application/json",
    }
    body = b"{}"
    now = time.time()
    stale = served.internal.post(
        "/tick",
        content=body,
        headers={**headers, **signed_headers(INTERNAL_TOKEN, headers, body, now=now - 3600)},
    )
    forged = served.internal.post(
        "/tick", content=body, headers={**headers, **signed_headers("not-the-internal-token", headers, body)}
    )
    changed = served.internal.post(
        "/tick",
        content=body,
        headers={**signed_headers(INTERNAL_TOKEN, headers, body), **headers, "ce-id": "tick-minute-2"},
    )
    assert (stale.status_code, forged.status_code, changed.status_code) == (401, 401, 401)

    signed = served.internal.post(
        "/tick", content=body, headers={**headers, **signed_headers(INTERNAL_TOKEN, headers, body)}
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["tick"] == "tick-minute-1" and signed.json()["outcomes"][0]["app"] == APP
    assert served.state().release.gate == "promote"  # type: ignore[union-attr]  # the tick was handled
    again = served.internal.post("/tick", headers={"authorization": f"Bearer {INTERNAL_TOKEN}"})  # empty body
    assert again.status_code == 200 and again.json()["tick"].startswith("tick-")
    not_a_tick = served.internal.post(
        "/tick",
        content=body,
        headers={**headers, "ce-type": RELEASE_COMMAND, "authorization": f"Bearer {INTERNAL_TOKEN}"},
    )
    assert not_a_tick.status_code == 400


# ---------------------------------------------------------------------------------------------- serve_env


def test_serve_env_options_come_from_the_environment_and_flags_override() -> None:
    env = {
        "GRAYLANE_STORE": "configmap://",
        "GRAYLANE_POLICIES": "configmap://",
        "GRAYLANE_PROVIDERS": "kubernetes",
        "GRAYLANE_PROMETHEUS": "http://prometheus.monitoring:9090",
        "GRAYLANE_HOST": "0.0.0.0",
        "GRAYLANE_PORT": "9000",
        "GRAYLANE_INTERNAL_HOST": "0.0.0.0",
        "GRAYLANE_INTERNAL_PORT": "9001",
        "GRAYLANE_TICK_INTERVAL": "2s",
        "GRAYLANE_CONTEXT": "prod",
    }
    opts = ServeOptions.from_env(env)
    assert (opts.store, opts.policies, opts.providers, opts.prometheus) == (
        "configmap://",
        "configmap://",
        "kubernetes",
        "http://prometheus.monitoring:9090",
    )
    assert (opts.host, opts.port, opts.internal_host, opts.internal_port, opts.tick) == (
        "0.0.0.0",
        9000,
        "0.0.0.0",
        9001,
        2.0,
    )
    assert (
        store_url(opts) == "configmap://" and opts.store_given
    )  # GRAYLANE_STORE wins over --context's default
    flagged = ServeOptions.from_env(env, providers="recording", port=7000, tick="500ms", store=None)
    assert (flagged.providers, flagged.port, flagged.tick, flagged.store) == (
        "recording",
        7000,
        0.5,
        "configmap://",
    )
    defaults = ServeOptions.from_env({})
    assert (defaults.providers, defaults.port, defaults.internal_host, defaults.internal_port) == (
        "recording",
        8080,
        "127.0.0.1",
        8081,
    )
    with pytest.raises(ConfigError, match="GRAYLANE_PROVIDERS"):
        ServeOptions.from_env({"GRAYLANE_PROVIDERS": "cloud"})
    with pytest.raises(ConfigError, match="GRAYLANE_INTERNAL_PORT"):
        ServeOptions.from_env({"GRAYLANE_INTERNAL_PORT": "lots"})
    with pytest.raises(ConfigError, match="its own port"):
        ServeOptions.from_env({"GRAYLANE_PORT": "9000", "GRAYLANE_INTERNAL_PORT": "9000"})


def test_serve_env_the_cli_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import cli, serve

    seen: list[ServeOptions] = []
    monkeypatch.setattr(serve, "run", lambda opts, out=print: seen.append(opts) or 0)
    monkeypatch.setenv("GRAYLANE_PROVIDERS", "kubernetes")
    monkeypatch.setenv("GRAYLANE_PROMETHEUS", "http://prom:9090")
    monkeypatch.setenv("GRAYLANE_STORE", "configmap://")

    assert cli.main(["serve", "--host", "0.0.0.0"]) == 0
    assert (seen[0].providers, seen[0].prometheus, seen[0].store, seen[0].host) == (
        "kubernetes",
        "http://prom:9090",
        "configmap://",
        "0.0.0.0",
    )
    assert cli.main(["serve", "--providers", "recording"]) == 0 and seen[1].providers == "recording"


# ---------------------------------------------------------------------------------------------- [action_id]


def test_action_id_a_rejected_body_is_never_echoed_whole(served: Served) -> None:
    """539 KB in must not be 539 KB out, on any route of either listener, authenticated or not."""
    big = "A" * 539_000
    bodies = [
        big.encode(),
        json.dumps(big).encode(),
        json.dumps({big: 1}).encode(),
        ("text=" + big).encode(),
        json.dumps(
            {
                "specversion": "1.0",
                "type": RELEASE_COMMAND,
                "source": "/x",
                "id": "big",
                "subject": APP,
                "data": {big: 1, "action": "pause", "actor": {"user": "a", "via": "api"}},
            }
        ).encode(),
    ]
    auth = {"authorization": f"Bearer {INTERNAL_TOKEN}", "content-type": "application/json"}
    apps = [
        (
            served.client,
            [
                "/hooks/dockerhub",
                f"/hooks/dockerhub/{HOOK_TOKEN}",
                "/hooks/generic",
                "/chatops/slack",
                f"/api/v1/apps/{APP}/commands",
                "/functions/release_command",
            ],
        )
    ]
    internal = getattr(served.serve, "internal", None)
    if internal is not None:
        apps.append((served.internal, ["/functions/release_command", "/functions/release_tick", "/tick"]))
    for client, paths in apps:
        for path in paths:
            for body in bodies:
                for headers in (
                    auth,
                    {**auth, "authorization": f"Bearer {API_TOKEN}"},
                    {"content-type": "application/cloudevents+json", **auth},
                ):
                    answer = client.post(path, content=body, headers=headers)
                    assert len(answer.content) < 4096, (path, answer.status_code, answer.text[:200])
