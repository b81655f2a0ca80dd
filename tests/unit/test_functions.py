"""Each function served by functions-framework, fed every catalog example in binary and structured mode;
and every event the functions emit validates against the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from functions_framework import create_app

from functions import catalog, runtime
from functions.bus import MemoryBus
from functions.core import events as ev
from functions.demo import APP, EXAMPLES, measure, script
from functions.internal_auth import attest
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "internal-token-0123456789"  # GRAYLANE_INTERNAL_TOKEN: the broker's (or a sender's) credential
EDGE_KEY = "edge-key-0123456789abcdef"  # GRAYLANE_EDGE_KEY: only graylane's edges hold it
TARGETS = {
    "release_start": (ev.IMAGE_PUSHED,),
    "release_tick": (ev.RELEASE_TICK,),
    "release_command": (ev.RELEASE_COMMAND,),
    "protection": (ev.ALERT_FIRING, ev.ALERT_RESOLVED),
}
CASES = [
    (t, typ, name) for t, types in TARGETS.items() for typ in types for name in catalog.examples_for(typ)
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRAYLANE_STORE", "memory://")
    monkeypatch.setenv("GRAYLANE_POLICIES", str(ROOT / "infra" / "examples"))
    monkeypatch.delenv("K_SINK", raising=False)
    monkeypatch.setenv("GRAYLANE_INTERNAL_TOKEN", TOKEN)
    monkeypatch.setenv("GRAYLANE_EDGE_KEY", EDGE_KEY)
    runtime.runner.cache_clear()
    yield
    runtime.runner.cache_clear()


def send(
    client: Any, ce: Any, mode: str = "binary", token: str | None = TOKEN, key: str | None = EDGE_KEY
) -> Any:
    """POST a CloudEvent as an edge made it (attested with `key`) over a caller holding `token`."""
    if key is not None:
        attest(ce, key)
    headers, body = (to_binary if mode == "binary" else to_structured)(ce)
    headers = dict(headers)
    if mode == "binary":
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/", headers=headers, data=body)


def function(target: str) -> Any:
    return create_app(target, str(ROOT / "functions" / f"{target}.py"), "cloudevent").test_client()


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize(("target", "type_", "example"), CASES)
def test_function_answers_every_catalog_example(
    env: None, target: str, type_: str, example: str, mode: str
) -> None:
    event = catalog.examples_for(type_)[example]
    ce = catalog.make_event(event["type"], event.get("subject", ""), event.get("data", {}), id=event["id"])
    response = send(function(target), ce, mode)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_function_acknowledges_but_ignores_a_type_it_does_not_handle(env: None) -> None:
    ce = catalog.make_event(ev.IMAGE_PUSHED, "", {"repository": "r/x", "tag": "v1", "source": "generic"})
    assert send(function("release_tick"), ce).status_code == 200
    assert runtime.runner().store.list_apps() == []


def test_malformed_event_is_acknowledged_and_changes_no_state(env: None) -> None:
    ce = catalog.make_event(
        ev.RELEASE_COMMAND,
        "pro/flask",
        {"action": "weight", "weight": 150, "actor": {"user": "mallory", "via": "api"}},
    )
    assert send(function("release_command"), ce, "structured").status_code == 200
    assert runtime.runner().store.list_apps() == []


def test_every_emitted_event_validates_against_the_catalog() -> None:
    bus = MemoryBus()
    clock = Clock()
    runner = Runner(
        MemoryStore(), DirectoryPolicies(str(EXAMPLES)), RecordingProviders(measure), bus=bus, clock=clock
    )
    for dt, event, _ in script():
        clock.advance(dt)
        runner.handle(event)
    published = bus.events
    types = {e["type"] for e in published}
    # the demo walks gates, A/B, canary, promotion, protection, a rollback and alert handling
    assert {
        ev.RELEASE_STARTED,
        ev.GATE_WAITING,
        ev.GATE_DECIDED,
        ev.RELEASE_PROMOTED,
        ev.RELEASE_SUCCEEDED,
        ev.RELEASE_ROLLED_BACK,
        ev.ANALYSIS_VERDICT,
        ev.PROTECTION_CHANGED,
    } <= types
    for event in published:
        catalog.validate(event)
        assert event["subject"] == APP
    assert len({e["id"] for e in published}) == len(published), "emitted ids are unique"


def test_emitted_events_of_commands_supersede_and_freeze_validate() -> None:
    from dataclasses import replace

    from functions.core.events import MetricSample
    from functions.core.policy import RollbackMode
    from tests.support import StaticPolicies, canary_policy, command, handle, push, tick

    bad = lambda p, r: (MetricSample(name="success-rate", value=0.1, canary_requests=900),)  # noqa: E731
    policy = replace(canary_policy(), rollback=RollbackMode.FREEZE)
    bus, clock = MemoryBus(), Clock()
    runner = Runner(MemoryStore(), StaticPolicies([policy]), RecordingProviders(), bus=bus, clock=clock)
    app = policy.app
    for event in [
        push(app, "v1"),
        push(app, "v2"),
        command(app, "pause"),
        command(app, "approve"),
        command(app, "resume"),
        command(app, "weight", weight=35),
        push(app, "v3"),
        command(app, "abort", reason="enough"),
        command(app, "rollback", version="v0"),
        push(app, "v4"),
    ]:
        clock.advance(5)
        handle(runner, event)
    runner.providers = RecordingProviders(bad)  # type: ignore[assignment]
    for _ in range(3):
        clock.advance(10)
        runner.handle(tick())
    types = {e["type"] for e in bus.events}
    assert {
        ev.RELEASE_PAUSED,
        ev.RELEASE_RESUMED,
        ev.WEIGHT_CHANGED,
        ev.RELEASE_SUPERSEDED,
        ev.RELEASE_ABORTED,
        ev.COMMAND_REJECTED,
        ev.RELEASE_FROZEN,
    } <= types
    for event in bus.events:
        catalog.validate(event)


def test_a_knative_ping_is_a_tick_sweep(env: None) -> None:
    client = function("release_tick")
    headers = {
        "ce-specversion": "1.0",
        "ce-type": ev.KNATIVE_PING,
        "ce-source": "/apis/v1/namespaces/graylane/pingsources/tick",
        "ce-id": "ping-1",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
    }
    assert client.post("/", headers=headers, data="{}").status_code == 200
    from cloudevents.http import CloudEvent

    from functions.core.events import Tick

    ping = CloudEvent(
        {"type": ev.KNATIVE_PING, "source": "/pingsources/tick", "id": "p2"}, {"any": "payload"}
    )
    assert catalog.to_domain(ping) == Tick(id="p2")


# ---------------------------------------------------------------------------------------------- [unauthenticated]
# The functions-framework entry points (Knative): the caller is authenticated before the body is read, and an
# image, command or alert event is handled only when one of graylane's edges attested it.

MALLORY_APPROVES = {"action": "approve", "gate": "promote", "actor": {"user": "mallory", "via": "slack"}}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_unauthenticated_calls_to_every_function_are_refused_before_the_body_is_read(
    env: None, target: str
) -> None:
    ce = catalog.make_event(ev.RELEASE_COMMAND, "pro/flask", MALLORY_APPROVES, id="cmd-mallory")
    anonymous = send(function(target), ce, token=None)
    wrong = send(function(target), ce, token="not-the-token-at-all")
    garbage = function(target).post(
        "/",
        data=b"x" * 200_000,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert "GRAYLANE_INTERNAL_TOKEN" in anonymous.get_json()["error"]
    assert garbage.status_code == 400 and len(garbage.data) < 1000  # answered, not echoed
    assert runtime.runner().store.list_apps() == []


def test_unauthenticated_nothing_configured_refuses_every_call(
    env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAYLANE_INTERNAL_TOKEN")
    ce = catalog.make_event(ev.RELEASE_TICK, "", {}, id="tick-1")
    response = send(function("release_tick"), ce, token="anything-at-all-here")

    assert response.status_code == 401 and "refuse every call" in response.get_json()["error"]


def test_unauthenticated_the_internal_token_alone_cannot_impersonate_a_chat_user(env: None) -> None:
    client = function("release_command")
    unattested = send(
        client, catalog.make_event(ev.RELEASE_COMMAND, "pro/flask", MALLORY_APPROVES, id="c1"), key=None
    )  # the tick CronJob's credential, no edge attestation
    forged = catalog.make_event(
        ev.RELEASE_COMMAND,
        "pro/flask",
        {**MALLORY_APPROVES, "actor": {"user": "ops-lead", "via": "slack"}},
        id="c2",
    )
    attest(forged, "some-other-key-0123456789")
    wrong_key = send(client, forged, key=None)
    tampered = catalog.make_event(
        ev.RELEASE_COMMAND,
        "pro/flask",
        {**MALLORY_APPROVES, "actor": {"user": "ops-lead", "via": "slack"}},
        id="c3",
    )
    attest(tampered, EDGE_KEY)
    tampered.data["actor"] = {"user": "mallory", "via": "slack"}  # changed after the edge attested it
    changed = send(client, tampered, key=None)
    push = send(
        function("release_start"),
        catalog.make_event(
            ev.IMAGE_PUSHED,
            "pro/flask",
            {"repository": "registry.example.com/team/flask", "tag": "v6.6.6", "source": "generic"},
            id="p-evil",
        ),
        key=None,
    )

    assert [r.status_code for r in (unattested, wrong_key, changed, push)] == [403, 403, 403, 403]
    assert "edge attestation" in unattested.get_json()["error"]
    assert runtime.runner().store.list_apps() == []


# --- Knative Eventing's OIDC sender identity (authentication-oidc): a JWT from the cluster's issuer


@pytest.fixture
def issuer(tmp_path: Path) -> Any:
    import base64
    import json as json_

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def uint(n: int) -> str:
        return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json_.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "kid": "k1",
                        "alg": "RS256",
                        "use": "sig",
                        "n": uint(numbers.n),
                        "e": uint(numbers.e),
                    }
                ]
            }
        )
    )

    def token(
        sub: str = SUBJECT, aud: str = AUDIENCE, iss: str = ISSUER, exp_in: float = 600, signer: Any = key
    ) -> str:
        import time

        now = int(time.time())
        head = b64(json_.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
        body = b64(
            json_.dumps(
                {"iss": iss, "aud": [aud], "sub": sub, "iat": now, "nbf": now, "exp": now + exp_in}
            ).encode()
        )
        sig = signer.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{b64(sig)}"

    token.jwks = f"file://{jwks}"  # type: ignore[attr-defined]
    return token


AUDIENCE = "graylane.dev/functions/release_command"
ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:graylane-system:graylane-release-commandoidc-eventing.knative.dev-trigger"


def test_unauthenticated_knative_oidc_delivery_is_verified_against_the_issuer(
    env: None, issuer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    monkeypatch.delenv("GRAYLANE_INTERNAL_TOKEN")
    monkeypatch.setenv("GRAYLANE_OIDC_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("GRAYLANE_OIDC_SUBJECTS", SUBJECT)
    monkeypatch.setenv("GRAYLANE_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("GRAYLANE_OIDC_JWKS_URL", issuer.jwks)
    client = function("release_command")

    def call(token: str) -> int:
        ce = catalog.make_event(
            ev.RELEASE_COMMAND, "pro/flask", {"action": "pause", "actor": {"user": "ops-lead", "via": "api"}}
        )
        return int(send(client, ce, token=token).status_code)

    assert call(issuer()) == 200  # the broker's token: handled
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (
        call(issuer(sub="system:serviceaccount:default:attacker")) == 401
    )  # any pod can get a token: not it
    assert call(issuer(aud="eventing.knative.dev/broker/graylane-system/default")) == 401
    assert call(issuer(iss="https://evil.example.com")) == 401
    assert call(issuer(exp_in=-3600)) == 401
    assert call(issuer(signer=other_key)) == 401
    assert call(TOKEN) == 401  # no internal token configured here: only OIDC
