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
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.sources.base import Credentials
from functions.providers.stores.sqlite import SqliteStore
from functions.serve import FUNCTIONS, ServeOptions, Ticker, build_serve, parse_duration, store_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)  # TestClient prefers httpx2; httpx works the same
    from starlette.testclient import TestClient

APP = "team/web"
HOOK_TOKEN, API_TOKEN = "hook-token-123", "api-token-12345"
POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: web, namespace: team}
spec:
  image: {repository: docker.io/team/web}
  router: {provider: recording}
  approvers: {default: {users: [alice]}}
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
    serve = build_serve(store, DirectoryPolicies(policies), providers, tick=0.05, clock=clock,
                        gateway_settings=GatewaySettings(credentials={"dockerhub": Credentials(token=HOOK_TOKEN)}),
                        api_tokens={API_TOKEN: "alice"}, env={})  # fmt: skip
    with TestClient(serve.app) as client:
        yield Served(client, store, providers, clock, serve)
    serve.stop()


def push(client: TestClient, tag: str, pushed_at: int = 1_700_000_000) -> Any:
    body = {"push_data": {"pushed_at": pushed_at, "pusher": "ci", "tag": tag},
            "repository": {"repo_name": "team/web", "name": "web", "namespace": "team"}}  # fmt: skip
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
    assert state.release is not None and state.release.phase is Phase.WAITING and state.release.gate == "promote"
    assert served.serve.ticker.ticks >= 1
    assert any(e["type"] == RELEASE_TICK for e in served.serve.bus.events)


def test_the_approval_api_opens_the_gate_as_the_token_user(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    served.clock.now += timedelta(seconds=31)
    served.serve.ticker.tick()
    answer = served.client.post(f"/api/v1/apps/{APP}/commands", json={"action": "approve", "gate": "promote"},
                                headers={"Authorization": f"Bearer {API_TOKEN}"})  # fmt: skip
    assert answer.status_code == 202, answer.text
    state = served.state()
    assert state.stable.version == "v2.0.0"
    approved = [h for h in state.history if h.action == "approved"]
    assert approved and approved[-1].by is not None and approved[-1].by.user == "alice"
    denied = served.client.post(f"/api/v1/apps/{APP}/commands", json={"action": "approve"},
                                headers={"Authorization": "Bearer wrong-token-000"})  # fmt: skip
    assert denied.status_code == 401


def test_function_endpoints_take_knative_style_cloudevents(served: Served) -> None:
    push(served.client, "v1.0.0")
    push(served.client, "v2.0.0", 1_700_000_100)
    event = catalog.make_event(RELEASE_COMMAND, APP, {"action": "abort", "app": APP, "reason": "test",
                                                      "actor": {"user": "bob", "via": "cli"}}, id="cmd-1")  # fmt: skip
    from cloudevents.conversion import to_binary

    headers, body = to_binary(event)
    answer = served.client.post("/functions/release_command", content=body,
                                headers={**headers, "content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcomes"][0]["status"] == "transitioned"
    assert served.state().release.phase is Phase.ABORTED  # type: ignore[union-attr]

    wrong = served.client.post("/functions/release_tick", content=body,
                               headers={**headers, "content-type": "application/json"})  # fmt: skip
    assert wrong.json()["outcomes"][0]["status"] == "rejected"  # a command is not the tick function's type
    assert served.client.post("/functions/nope", content=b"{}").status_code == 404
    assert served.client.post("/functions/release_tick", content=b"not an event").status_code == 400


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
    assert store_url(ServeOptions(context="kind-a", store="sqlite:///x.db", store_given=True)) == "sqlite:///x.db"
    assert store_url(ServeOptions()) == "sqlite:///graylane.db"
    with pytest.raises(ConfigError, match="positive"):
        Ticker(None, 0)  # type: ignore[arg-type]


def test_local_providers_read_the_stack_file_and_name_a_bad_one(tmp_path: Path) -> None:
    from functions.local.providers import Behaviour, LocalConfig, LocalProviders

    config = LocalConfig(workdir=str(tmp_path), socket=str(tmp_path / "admin.sock"), stable_port=1, canary_port=2,
                         behaviours={"v3": Behaviour(error_rate=0.5)})  # fmt: skip
    (tmp_path / "stack.json").write_text(config.to_json())
    opts = ServeOptions(providers="local", local_stack=str(tmp_path / "stack.json"))
    from functions.serve import make_providers

    providers = make_providers(opts)
    assert isinstance(providers, LocalProviders) and providers.config == config
    assert providers.config.behaviour("v3").error_rate == 0.5 and providers.config.behaviour("v9") == Behaviour()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        make_providers(ServeOptions(providers="local", local_stack=str(tmp_path / "bad.json")))
    assert json.dumps(FUNCTIONS)  # the routing table is plain data (used by docs and infra)
