"""The authenticated approval API through the gateway, and the store-backed audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.approval_api import ApiSettings, api_routes, parse_tokens
from functions.audit import AuditRecord, StoreAuditLog, audit_key, is_audit_key
from functions.errors import ConfigError
from functions.providers.stores import MemoryStore
from tests.unit.chatops_helpers import APP, World, world

TOKENS = {"tok-alice-123": "alice", "tok-ci-bot-456": "ci-bot"}
ALICE = {"Authorization": "Bearer tok-alice-123"}


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def client(w: World):  # type: ignore[no-untyped-def]
    return w.client(*api_routes(w.approvals, ApiSettings(TOKENS)))


def test_tokens_from_the_environment() -> None:
    assert parse_tokens("alice:tok-alice-123, ci-bot:tok-ci-bot-456") == TOKENS
    with pytest.raises(ConfigError, match="entry 2 must be user:token"):
        parse_tokens("alice:tok-alice-123,broken")


def test_an_allowed_command_is_accepted_and_published(w: World) -> None:
    response = client(w).post(
        f"/api/v1/apps/{APP}/commands",
        headers={**ALICE, "Idempotency-Key": "ci-42"},
        json={"action": "approve", "gate": "go", "weight": 15, "reason": "ci green"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    [event] = w.commands()
    assert body["outcome"] == "accepted" and body["eventId"] == event["id"]
    assert event.data["actor"] == {"user": "alice", "via": "api"} and event.data["reason"] == "ci green"
    again = client(w).post(
        f"/api/v1/apps/{APP}/commands",
        headers={**ALICE, "Idempotency-Key": "ci-42"},
        json={"action": "approve", "gate": "go", "weight": 15, "reason": "ci green"},
    )
    assert again.json()["eventId"] == event["id"]  # a retried call names the same event: the runner dedupes


@pytest.mark.parametrize(
    "headers, status, fragment",
    [
        ({}, 401, "Bearer"),
        ({"Authorization": "Bearer nope"}, 401, "valid Authorization"),
        ({"Authorization": "Bearer tok-ci-bot-456"}, 403, "ci-bot may not pause"),
    ],
)
def test_authentication_and_authorisation(
    w: World, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = client(w).post(f"/api/v1/apps/{APP}/commands", headers=headers, json={"action": "pause"})
    assert response.status_code == status and fragment in response.json()["error"]
    assert w.commands() == []
    if status == 403:
        [record] = w.audit.records
        assert (record.user, record.via, record.outcome, record.action) == (
            "ci-bot",
            "api",
            "denied",
            "pause",
        )


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        (
            f"/api/v1/apps/{APP}/commands",
            {"action": "approve", "weight": "30"},
            400,
            "weight must be an integer",
        ),
        (f"/api/v1/apps/{APP}/commands", {"action": "deploy"}, 400, "unknown action 'deploy'"),
        (f"/api/v1/apps/{APP}/commands", {"action": "weight"}, 400, "data.weight"),
        (f"/api/v1/apps/{APP}/commands", {"action": "pause", "extra": 1}, 400, "unknown field(s) extra"),
        (f"/api/v1/apps/{APP}/commands", ["pause"], 400, "JSON object"),
        (f"/api/v1/apps/{APP}/commands", {"action": "rollback", "version": "not a tag"}, 400, "version"),
        ("/api/v1/apps/pro/nothing/commands", {"action": "pause"}, 404, "no ReleasePolicy for pro/nothing"),
        ("/api/v1/apps/Pro/Flask/commands", {"action": "pause"}, 400, "is not namespace/name"),
    ],
)
def test_bad_input_is_4xx_with_a_message(
    w: World, path: str, body: object, status: int, fragment: str
) -> None:
    response = client(w).post(path, headers=ALICE, json=body)
    assert response.status_code == status and fragment in response.json()["error"], response.text
    assert w.commands() == []


def test_non_json_is_400(w: World) -> None:
    response = client(w).post(f"/api/v1/apps/{APP}/commands", headers=ALICE, content=b"{nope")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]


def test_approve_without_a_waiting_gate_is_409(tmp_path: Path) -> None:
    w = world(tmp_path, waiting=False)
    response = client(w).post(f"/api/v1/apps/{APP}/commands", headers=ALICE, json={"action": "approve"})
    assert response.status_code == 409 and "not waiting at a gate" in response.json()["error"]


def test_status_history_list_and_audit(w: World) -> None:
    c = client(w)
    status = c.get(f"/api/v1/apps/{APP}", headers=ALICE).json()
    assert status["data"]["release"]["gate"] == "go" and status["data"]["row"]["phase"] == "waiting"
    history = c.get(f"/api/v1/apps/{APP}/history?limit=3", headers=ALICE).json()["data"]
    assert len(history) == 3 and history[-1]["action"] == "gate-waiting"
    assert c.get(f"/api/v1/apps/{APP}/history?limit=0", headers=ALICE).status_code == 400
    assert c.get(f"/api/v1/apps/{APP}/approve", headers=ALICE).status_code == 404  # GET never runs a command
    items = c.get("/api/v1/apps", headers=ALICE).json()["items"]
    assert [(i["namespace"], i["app"], i["phase"]) for i in items] == [("pro", "flask", "waiting")]
    c.post(f"/api/v1/apps/{APP}/commands", headers=ALICE, json={"action": "pause"})
    audit = c.get(f"/api/v1/apps/{APP}/audit", headers=ALICE).json()["items"]
    assert [(a["user"], a["action"], a["outcome"]) for a in audit] == [("alice", "pause", "accepted")]
    assert c.get(f"/api/v1/apps/{APP}", headers={}).status_code == 401


def test_the_store_audit_log_is_bounded_and_kept_apart_from_state() -> None:
    store = MemoryStore()
    log = StoreAuditLog(store, limit=3)
    for i in range(5):
        log.record(
            AuditRecord(
                at=f"2026-01-01T00:00:0{i}Z",
                app=APP,
                action="pause",
                outcome="denied",
                user=f"u{i}",
                via="api",
            )
        )
    assert [r.user for r in log.recent(APP)] == ["u2", "u3", "u4"]
    assert audit_key(APP) == "pro/audit.flask" and is_audit_key("pro/audit.flask") and not is_audit_key(APP)
    assert store.load(APP) == (None, None)  # the release state document is untouched


def test_without_a_broker_an_accepted_command_is_503_and_audited_as_failed(w: World) -> None:
    from functions.approvals import Approvals, CommandRequest
    from functions.chatops.authz import Requester

    reader = Approvals(w.store, w.policies, None, w.audit, clock=w.approvals.clock)  # the CLI's: no broker
    result = reader.execute(
        CommandRequest(app=APP, action="approve", gate="go", requester=Requester("alice", "api"))
    )
    assert (result.status, result.outcome) == (503, "unavailable")
    assert "no broker is configured" in result.message
    assert [(r.action, r.outcome) for r in w.audit.records][-1] == ("approve", "failed")
    assert not w.bus.of_type("")  # nothing was published
