"""Microsoft Teams outgoing webhook through the gateway: the HMAC of the body keyed by the base64-decoded
security token (Microsoft's documented test key), the replay window, authorisation by the stable Entra id
and channel per app and action, one audited catalog-valid command, replies in the thread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions.approvals import Approvals
from functions.audit import MemoryAuditLog
from functions.bus import MemoryBus
from functions.chatops.parse import parse
from functions.chatops.routes import ChatOpsSettings, chatops_routes
from functions.chatops.teams import REPLAY_WINDOW, Teams, command_text, keys
from functions.core.events import ImagePushed
from functions.core.state import Version
from functions.errors import ConfigError
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.sources.base import Unauthenticated
from functions.providers.stores import MemoryStore
from functions.runner import Runner
from tests.unit.chatops_helpers import APP, REPO, World


def authorization(security_token: str, body: bytes) -> str:
    """The Authorization header Teams sends with `body`: "HMAC " + base64(HMAC-SHA256(b64decode(token), body))."""
    digest = hmac.new(base64.b64decode(security_token), body, hashlib.sha256).digest()
    return "HMAC " + base64.b64encode(digest).decode()


# The security token of Microsoft's "Verify HMAC token" example (SigningKeyDictionary "contoso").
TEST_KEY = "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA="
OTHER_TEAM = "QgyNSToQjf4p6+YzDpjKks1/tXeJQ7FhVHqRwTnugVI="  # the same sample's second key ("fabrikam")
SAMPLE = (
    Path(__file__).resolve().parents[2] / "events" / "sources" / "teams" / "outgoing-webhook-message.json"
)
# computed independently of graylane: openssl dgst -sha256 -mac HMAC -macopt hexkey:$(base64 -d <<< KEY | xxd -p
# -c 64) -binary outgoing-webhook-message.json | base64
SAMPLE_SIGNATURE = "HMAC 3KFuDCuOHp42PE5FJJUdsB/f9S5KorzN0sWXo1WEZ9M="
MEGAN = "7faf8ab2-3d56-4244-b585-20c8a42ed2b8"  # from.aadObjectId of the sample
CHANNEL = "19:693ecdb923ac4458a5c23661b505fc84@thread.skype"
NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)  # 30 s after the sample's timestamp
POLICY = f"""\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: flask, namespace: pro}}
spec:
  image: {{repository: {REPO}}}
  router: {{provider: recording}}
  approvers:
    default: {{users: ["teams:{MEGAN}", ops-lead], channels: ["{CHANNEL}"]}}
    actions: {{rollback: {{users: [oncall]}}}}
  stages:
    - approval: {{name: promote}}
    - canary: {{steps: [{{weight: 50, pause: 10m}}]}}
"""


@pytest.fixture
def w(tmp_path: Path) -> World:
    (tmp_path / "flask.yaml").write_text(POLICY)
    store, policies, bus, audit = (
        MemoryStore(),
        DirectoryPolicies(str(tmp_path)),
        MemoryBus(),
        MemoryAuditLog(),
    )
    runner = Runner(store, policies, RecordingProviders(), clock=lambda: NOW)
    for i, tag in enumerate(("v1.0.0", "v1.1.0")):
        runner.handle(
            ImagePushed(
                id=f"push-{i}", app=APP, target=Version(tag, f"{REPO}:{tag}"), repository=REPO, tag=tag
            )
        )
    return World(
        store, policies, bus, audit, Approvals(store, policies, bus, audit, clock=lambda: NOW), runner
    )


def activity(text: str = "<at>graylane</at>&nbsp;approve pro/flask promote\n", **changes: Any) -> bytes:
    data = json.loads(SAMPLE.read_text())
    data["text"] = text
    for key, value in changes.items():
        data[key] = value
    return json.dumps(data).encode()


def post(
    w: World,
    body: bytes,
    token: str = TEST_KEY,
    signature: str | None = None,
    tokens: str = TEST_KEY,
    now: datetime = NOW,
) -> Any:
    client = w.client(*chatops_routes({"teams": Teams(tokens)}, w.approvals, now=now.timestamp))
    auth = signature if signature is not None else authorization(token, body)
    return client.post(
        "/chatops/teams", content=body, headers={"Authorization": auth, "Content-Type": "application/json"}
    )


def test_teams_signature_of_the_documented_test_key_matches_openssl() -> None:
    body = SAMPLE.read_bytes()
    assert authorization(TEST_KEY, body) == SAMPLE_SIGNATURE
    Teams(TEST_KEY).authenticate({"authorization": SAMPLE_SIGNATURE}, {}, body, NOW.timestamp())
    with pytest.raises(Unauthenticated, match="does not match"):
        Teams(OTHER_TEAM).authenticate({"authorization": SAMPLE_SIGNATURE}, {}, body, NOW.timestamp())


def test_teams_documented_message_approves_and_replies_in_the_thread(w: World) -> None:
    response = post(w, SAMPLE.read_bytes(), signature=SAMPLE_SIGNATURE)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["type"] == "message" and reply["text"].startswith(
        "**accepted: approve gate promote on pro/flask"
    )
    assert "by Megan Bowen" in reply["text"]  # the display name, in the reply only
    [event] = w.commands()
    assert event.data["actor"] == {"user": MEGAN, "via": "teams", "channel": CHANNEL}
    assert event.data["action"] == "approve" and event.data["gate"] == "promote" and event["subject"] == APP
    [record] = w.audit.records
    assert (record.outcome, record.user, record.via, record.channel) == ("accepted", MEGAN, "teams", CHANNEL)
    w.deliver()
    assert w.approvals.state(APP).release.gate == ""  # the release moved on past the gate


def test_teams_redelivery_publishes_the_same_event_id(w: World) -> None:
    body = SAMPLE.read_bytes()
    post(w, body, signature=SAMPLE_SIGNATURE)
    post(w, body, signature=SAMPLE_SIGNATURE)
    first, second = w.commands()
    assert first["id"] == second["id"]


def test_teams_wrong_or_missing_signature_is_401_and_changes_nothing(w: World) -> None:
    body = activity()
    for auth in (authorization(OTHER_TEAM, body), "", "Bearer x", "HMAC ", "HMAC " + "A" * 44):
        response = post(w, body, signature=auth)
        assert response.status_code == 401, (auth, response.text)
    tampered = activity(text="<at>graylane</at> abort pro/flask")
    assert post(w, tampered, signature=authorization(TEST_KEY, body)).status_code == 401
    assert w.commands() == [] and w.audit.records == []


def test_teams_several_teams_each_with_its_token(w: World) -> None:
    body = activity()
    response = post(w, body, token=OTHER_TEAM, tokens=f"{TEST_KEY}, {OTHER_TEAM}")
    assert response.status_code == 200 and response.json()["text"].startswith("**accepted")


@pytest.mark.parametrize(
    ("skew", "ok"),
    [
        (REPLAY_WINDOW - 5, True),
        (-(REPLAY_WINDOW - 5), True),
        (REPLAY_WINDOW + 5, False),
        (-(REPLAY_WINDOW + 5), False),
    ],
)
def test_teams_replay_window_on_the_signed_timestamp(skew: float, ok: bool) -> None:
    body = SAMPLE.read_bytes()
    stamp = datetime(2026, 3, 1, 12, 0, 0, 437000, tzinfo=UTC).timestamp()
    headers = {"authorization": SAMPLE_SIGNATURE}
    if ok:
        Teams(TEST_KEY).authenticate(headers, {}, body, stamp + skew)
    else:
        with pytest.raises(Unauthenticated, match="replay"):
            Teams(TEST_KEY).authenticate(headers, {}, body, stamp + skew)


def test_teams_a_delivery_without_a_timestamp_is_refused(w: World) -> None:
    data = json.loads(activity())
    del data["timestamp"]
    response = post(w, json.dumps(data).encode())
    assert response.status_code == 401 and "timestamp" in response.json()["error"]


def test_teams_display_name_never_authorises(w: World) -> None:
    body = activity(**{"from": {"id": "29:intruder", "name": "ops-lead", "aadObjectId": "00000000-bad0"}})
    response = post(w, body)
    assert response.status_code == 200 and "ops-lead may not approve gate promote" in response.json()["text"]
    [record] = w.audit.records
    assert (record.outcome, record.user, record.via) == ("denied", "00000000-bad0", "teams")
    assert w.commands() == []


def test_teams_authorised_per_action_and_channel(w: World) -> None:
    response = post(w, activity(text="<at>graylane</at> rollback pro/flask"))
    assert "may not rollback" in response.json()["text"] and "oncall" in response.json()["text"]
    other = {"id": "19:other@thread.skype"}
    body = activity(
        text="<at>graylane</at> pause pro/flask",
        channelData={"channel": other, "team": other},
        conversation={"id": "19:other@thread.skype;messageid=1", "conversationType": "channel"},
    )
    response = post(w, body)
    assert "is not allowed from 19:other@thread.skype" in response.json()["text"]
    assert [r.outcome for r in w.audit.records] == ["denied", "denied"] and w.commands() == []


def test_teams_status_needs_no_approval_and_help_on_mistakes(w: World) -> None:
    status = post(w, activity(text="<at>graylane</at> status pro/flask")).json()["text"]
    assert status.startswith("**pro/flask: stable v1.0.0**") and "waiting at gate promote" in status
    help_text = post(w, activity(text="<at>graylane</at> launch pro/flask")).json()["text"]
    assert "unknown command" in help_text and "approve APP" in help_text
    assert w.commands() == []


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"type": "conversationUpdate"}, 422, "body.type"),
        ({"text": None}, 422, "body.text is required"),
        ({"from": {"name": "x"}}, 422, "body.from.aadObjectId or body.from.id"),
        ({"from": "megan"}, 422, "body.from must be an object"),
        ({"timestamp": 1700000000}, 422, "body.timestamp must be a string"),
    ],
)
def test_teams_bad_fields_are_4xx_naming_them(
    w: World, change: dict[str, Any], status: int, field: str
) -> None:
    data = {k: v for k, v in {**json.loads(activity()), **change}.items() if v is not None}
    response = post(w, json.dumps(data).encode())
    assert response.status_code == status and field in response.json()["error"], response.text
    assert w.commands() == []
    assert post(w, b"{not json").status_code == 400


def test_teams_command_text_drops_the_mention_and_markup() -> None:
    assert command_text("<at>graylane</at>&nbsp;approve pro/flask promote\n") == "approve pro/flask promote"
    assert (
        command_text('<div><at id="0">Graylane Bot</at> weight pro/flask 30</div>') == "weight pro/flask 30"
    )
    cmd = parse(command_text("<at>graylane</at> reject pro/flask promote -- not &amp; today"))
    assert (cmd.action, cmd.gate, cmd.reason) == ("reject", "promote", "not & today")


def test_teams_security_token_must_be_the_base64_token() -> None:
    assert len(keys(f"{TEST_KEY},{OTHER_TEAM}")) == 2
    for bad in ("not base64!", "c2hvcnQ="):
        with pytest.raises(ConfigError, match="GRAYLANE_TEAMS_SECURITY_TOKEN entry 1"):
            ChatOpsSettings(teams_security_token=bad).platforms()
    settings = ChatOpsSettings.from_env({"GRAYLANE_TEAMS_SECURITY_TOKEN": TEST_KEY})
    assert settings.platforms()["teams"] == Teams(TEST_KEY)
    with pytest.raises(Unauthenticated, match="no security token"):
        Teams().authenticate({"authorization": SAMPLE_SIGNATURE}, {}, SAMPLE.read_bytes(), NOW.timestamp())
