"""Slack slash commands and buttons through the gateway: Slack's documented signature example, the
replay window, authorisation with an audit record, one catalog-valid command event, Block Kit replies."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from functions.chatops.routes import chatops_routes
from functions.chatops.slack import Slack
from functions.core.events import GATE_WAITING
from functions.providers.notifiers.slack import SlackNotifier
from functions.providers.sources.base import Unauthenticated
from tests.unit.chatops_helpers import APP, World, world

# https://api.slack.com/authentication/verifying-requests-from-slack (the worked example)
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
    b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
    b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F"
    b"96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SECRET = "test-signing-secret"
NOW = 1_772_366_400.0


def signed(body: bytes, ts: float = NOW, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(ts))
    mac = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash(
    text: str,
    user: str = "ops-lead",
    user_id: str = "U111",
    channel: str = "releases",
    trigger: str = "trig-1",
) -> bytes:
    return urlencode(
        {
            "command": "/graylane",
            "text": text,
            "user_id": user_id,
            "user_name": user,
            "channel_id": "C999",
            "channel_name": channel,
            "trigger_id": trigger,
        }
    ).encode()


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def client(w: World):  # type: ignore[no-untyped-def]
    return w.client(*chatops_routes({"slack": Slack(SECRET)}, w.approvals, now=lambda: NOW))


def test_the_documented_example_signature_verifies() -> None:
    Slack(DOC_SECRET).authenticate(
        {"x-slack-request-timestamp": DOC_TIMESTAMP, "x-slack-signature": DOC_SIGNATURE},
        {},
        DOC_BODY,
        float(DOC_TIMESTAMP),
    )
    with pytest.raises(Unauthenticated, match="does not match"):
        Slack(DOC_SECRET).authenticate(
            {"x-slack-request-timestamp": DOC_TIMESTAMP, "x-slack-signature": DOC_SIGNATURE},
            {},
            DOC_BODY + b"x",
            float(DOC_TIMESTAMP),
        )


@pytest.mark.parametrize("skew, ok", [(0, True), (299, True), (-299, True), (301, False), (-301, False)])
def test_the_replay_window_is_five_minutes(skew: int, ok: bool) -> None:
    headers = {"x-slack-request-timestamp": DOC_TIMESTAMP, "x-slack-signature": DOC_SIGNATURE}
    if ok:
        Slack(DOC_SECRET).authenticate(headers, {}, DOC_BODY, float(DOC_TIMESTAMP) + skew)
    else:
        with pytest.raises(Unauthenticated, match="replay"):
            Slack(DOC_SECRET).authenticate(headers, {}, DOC_BODY, float(DOC_TIMESTAMP) + skew)


def test_an_accepted_slash_command_publishes_one_command_event_and_replies_in_channel(w: World) -> None:
    body = slash("approve pro/flask go 30")
    response = client(w).post("/chatops/slack", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["response_type"] == "in_channel"
    assert reply["blocks"][0]["type"] == "section" and "accepted" in reply["blocks"][0]["text"]["text"]
    [event] = w.commands()
    assert event["subject"] == APP and event.data["action"] == "approve"
    assert event.data["gate"] == "go" and event.data["weight"] == 30
    assert event.data["actor"] == {"user": "ops-lead", "via": "slack", "channel": "#releases"}
    assert reply["blocks"][-1]["elements"][0]["text"] == f"event `{event['id']}`"
    [record] = w.audit.records
    assert (record.outcome, record.user, record.via, record.channel, record.event_id) == (
        "accepted",
        "ops-lead",
        "slack",
        "#releases",
        event["id"],
    )
    w.deliver()  # the release_command function records who/where in history and passes the gate
    state = w.approvals.state(APP)
    assert state.release is not None and state.release.gate == "promote" and state.release.weight == 30
    approved = [h for h in state.history if h.action == "approved"]
    assert (
        approved[-1].by is not None and approved[-1].by.user == "ops-lead" and approved[-1].by.via == "slack"
    )


def test_a_redelivered_slash_command_maps_to_the_same_event_id(w: World) -> None:
    body = slash("pause pro/flask", trigger="same-trigger")
    for _ in range(2):
        assert client(w).post("/chatops/slack", content=body, headers=signed(body)).status_code == 200
    first, second = w.commands()
    assert first["id"] == second["id"]


def test_a_bad_signature_is_401_and_publishes_nothing(w: World) -> None:
    body = slash("approve pro/flask go")
    headers = signed(body, secret="another-secret")
    response = client(w).post("/chatops/slack", content=body, headers=headers)
    assert response.status_code == 401 and "does not match" in response.json()["error"]
    stale = client(w).post("/chatops/slack", content=body, headers=signed(body, ts=NOW - 600))
    assert stale.status_code == 401 and "replay" in stale.json()["error"]
    assert w.commands() == [] and w.audit.records == []


@pytest.mark.parametrize(
    "user, channel, why",
    [
        ("mallory", "releases", "may not approve gate go"),
        ("ops-lead", "random", "not allowed from #random"),
    ],
)
def test_an_unauthorised_user_or_channel_gets_403_and_is_audited(
    w: World, user: str, channel: str, why: str
) -> None:
    body = slash("approve pro/flask go", user=user, channel=channel)
    response = client(w).post("/chatops/slack", content=body, headers=signed(body))
    assert response.status_code == 403
    assert why in response.json()["text"] and response.json()["response_type"] == "ephemeral"
    assert w.commands() == []
    [record] = w.audit.records
    assert record.outcome == "denied" and record.user == user and why in record.reason


def test_the_gate_rule_overrides_the_default(w: World) -> None:
    body = slash("approve pro/flask promote")  # ops-lead is in the default, not in gates.promote
    response = client(w).post("/chatops/slack", content=body, headers=signed(body))
    assert response.status_code == 403 and "approvers.gates.promote" in response.json()["text"]


def test_a_button_press_runs_its_value_as_the_command(w: World) -> None:
    # the buttons of the Slack notifier's gate notice, as a reviewer would press them
    notice = {
        "type": GATE_WAITING,
        "app": APP,
        "release": "flask-1",
        "gate": "go",
        "phase": "waiting",
        "target": {"version": "v1.1.0"},
    }
    message = SlackNotifier("https://hooks.slack.com/services/T0/B0/x").payload(notice)
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    button = actions["elements"][0]
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH", "username": "someone-renamed"},
        "channel": {"id": "C1", "name": "releases"},
        "trigger_id": "t-9",
        "actions": [{"action_id": button["action_id"], "value": button["value"], "action_ts": "171.2"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    response = client(w).post("/chatops/slack/interactive", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    [event] = w.commands()
    assert event.data["action"] == "approve" and event.data["gate"] == "go"
    assert actions["elements"][1]["value"] == "reject pro/flask go release=flask-1 version=v1.1.0"
    assert event.data["release"] == "flask-1" and event.data["version"] == "v1.1.0"


def test_status_and_usage_replies(w: World) -> None:
    body = slash("status pro/flask")
    reply = client(w).post("/chatops/slack", content=body, headers=signed(body)).json()
    assert "waiting at gate go" in reply["text"]
    body = slash("aprove pro/flask")
    response = client(w).post("/chatops/slack", content=body, headers=signed(body))
    assert response.status_code == 200 and "unknown command 'aprove'" in response.json()["text"]
    assert w.commands() == [] and w.audit.records == []


def test_unconfigured_slack_refuses_everything(w: World) -> None:
    body = slash("status pro/flask")
    app = w.client(*chatops_routes({"slack": Slack("")}, w.approvals, now=lambda: NOW))
    response = app.post("/chatops/slack", content=body, headers=signed(body))
    assert response.status_code == 401 and "no signing secret" in response.json()["error"]


def press(w: World, action_id: str, value: str, user: str = "U024BE7LH"):  # type: ignore[no-untyped-def]
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "ops-lead"},
        "channel": {"id": "C1", "name": "releases"},
        "trigger_id": "t-7",
        "actions": [{"action_id": action_id, "value": value, "action_ts": "171.3"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return client(w).post("/chatops/slack/interactive", content=body, headers=signed(body))


@pytest.mark.parametrize(
    ("action_id", "value"),
    [
        ("someone-elses-button", "abort pro/flask"),  # any button in a message the app can see
        ("", "abort pro/flask"),  # no action_id at all
        ("graylane-approve", "abort pro/flask"),  # graylane's approve button carrying another command
        ("graylane-reject", "approve pro/flask go"),
    ],
)
def test_action_id_only_graylanes_own_buttons_run_their_own_command(
    w: World, action_id: str, value: str
) -> None:
    response = press(w, action_id, value)

    assert response.status_code == 200, response.text  # acknowledged: Slack shows no error to the clicker
    assert response.json()["text"].startswith("ignored:") and "nothing was run" in response.json()["text"]
    assert w.commands() == [] and w.audit.records == []


def test_graylanes_reject_button_still_runs(w: World) -> None:
    response = press(w, "graylane-reject", "reject pro/flask go")

    assert response.status_code == 200, response.text
    assert [c.data["action"] for c in w.commands()] == ["reject"]
