"""DingTalk outgoing robot through the gateway: the sign header, its one-hour window, authorisation by
stable ids, one catalog-valid command event, markdown replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.chatops.dingtalk import DingTalk, sign
from functions.chatops.routes import chatops_routes
from functions.providers.sources.base import Unauthenticated
from tests.unit.chatops_helpers import APP, World, world

SECRET = "SECtest-app-secret"
NOW_MS = 1_700_000_000_000
# computed independently: printf '1700000000000\nSECtest-app-secret' | openssl dgst -sha256 -hmac ... | base64
FROZEN = "gTIawqMB51Bm7MxV4NoB4+D8VFKqDAh2kIJCSfYrlUc="


def message(
    text: str,
    staff: str = "manager4567",
    nick: str = "Ops Lead",
    conversation: str = "cid-releases",
    msg_id: str = "msg-1",
) -> bytes:
    body: dict[str, Any] = {
        "msgtype": "text",
        "text": {"content": f" {text}"},
        "msgId": msg_id,
        "createAt": NOW_MS,
        "conversationType": "2",
        "conversationId": conversation,
        "conversationTitle": "releases",
        "senderId": "$:LWCP_v1:$abc",
        "senderNick": nick,
        "senderStaffId": staff,
        "chatbotUserId": "bot",
        "isAdmin": False,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=x",
    }
    return json.dumps(body).encode()


def headers(ts: int = NOW_MS, secret: str = SECRET) -> dict[str, str]:
    return {"timestamp": str(ts), "sign": sign(secret, str(ts)), "Content-Type": "application/json"}


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def client(w: World):  # type: ignore[no-untyped-def]
    return w.client(*chatops_routes({"dingtalk": DingTalk(SECRET)}, w.approvals, now=lambda: NOW_MS / 1000))


def test_sign_matches_an_independently_computed_vector() -> None:
    assert sign(SECRET, str(NOW_MS)) == FROZEN
    DingTalk(SECRET).authenticate({"timestamp": str(NOW_MS), "sign": FROZEN}, {}, b"{}", NOW_MS / 1000)


@pytest.mark.parametrize("skew_s, ok", [(3599, True), (-3599, True), (3601, False), (-3601, False)])
def test_the_window_is_one_hour(skew_s: int, ok: bool) -> None:
    h = {"timestamp": str(NOW_MS), "sign": FROZEN}
    if ok:
        DingTalk(SECRET).authenticate(h, {}, b"{}", NOW_MS / 1000 + skew_s)
    else:
        with pytest.raises(Unauthenticated, match="replay"):
            DingTalk(SECRET).authenticate(h, {}, b"{}", NOW_MS / 1000 + skew_s)


def test_an_accepted_command_publishes_one_event_and_replies_in_markdown(w: World) -> None:
    response = client(w).post(
        "/chatops/dingtalk", content=message("approve pro/flask go weight=20"), headers=headers()
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["msgtype"] == "markdown" and reply["markdown"]["text"].startswith("**accepted")
    assert reply["at"] == {"atUserIds": ["manager4567"], "isAtAll": False}
    [event] = w.commands()
    assert event.data["actor"] == {"user": "manager4567", "via": "dingtalk", "channel": "cid-releases"}
    assert event.data["weight"] == 20 and event["subject"] == APP


def test_a_bad_sign_is_401(w: World) -> None:
    response = client(w).post(
        "/chatops/dingtalk", content=message("pause pro/flask"), headers=headers(secret="SECother")
    )
    assert response.status_code == 401 and w.commands() == [] and w.audit.records == []


def test_a_nickname_never_authorises(w: World) -> None:
    # the nick says ops-lead, but the stable staff id is not on the list
    body = message("pause pro/flask", staff="intruder", nick="ops-lead")
    response = client(w).post("/chatops/dingtalk", content=body, headers=headers())
    assert response.status_code == 403 and "ops-lead may not pause" in response.json()["markdown"]["text"]
    [record] = w.audit.records
    assert record.outcome == "denied" and record.user == "intruder" and w.commands() == []


def test_the_wrong_group_is_403(w: World) -> None:
    body = message("pause pro/flask", conversation="cid-other")
    response = client(w).post("/chatops/dingtalk", content=body, headers=headers())
    assert response.status_code == 403 and "cid-other" in response.json()["markdown"]["text"]
    assert w.audit.records[0].channel == "cid-other"


def test_non_text_messages_are_422(w: World) -> None:
    body = json.dumps({"msgtype": "picture", "senderStaffId": "x"}).encode()
    response = client(w).post("/chatops/dingtalk", content=body, headers=headers())
    assert response.status_code == 422 and "msgtype" in response.json()["error"]
