"""WeCom callbacks through the gateway, on the official WXBizMsgCrypt sample vectors: URL verification,
an encrypted message, msg_signature, encrypted replies; group robot commands with authorisation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from functions.chatops.routes import chatops_routes
from functions.chatops.wecom import WeCom, WeComCipher, msg_signature
from tests.unit.chatops_helpers import APP, World, world

# WeCom's published sample (WXBizMsgCrypt Sample.cs / the callback docs)
TOKEN, AES_KEY, CORP = "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7"
VERIFY = {
    "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
    "timestamp": "1409659589",
    "nonce": "263014780",
    "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==",
}
REQ_SIG, REQ_TS, REQ_NONCE = "477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149"
REQ_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYv"
    "uJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+Lt"
    "wGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V"
    "2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptD"
    "AVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)
REQ_BODY = (
    f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{REQ_ENCRYPT}]]></Encrypt>"
    "<AgentID><![CDATA[218]]></AgentID></xml>"
).encode()


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def client(w: World, now: float, aes: str = AES_KEY):  # type: ignore[no-untyped-def]
    return w.client(*chatops_routes({"wecom": WeCom(TOKEN, aes, CORP)}, w.approvals, now=lambda: now))


def test_the_official_signature_and_decryption_vectors() -> None:
    assert msg_signature(TOKEN, REQ_TS, REQ_NONCE, REQ_ENCRYPT) == REQ_SIG
    message, receiver = WeComCipher(AES_KEY, CORP).decrypt(REQ_ENCRYPT)
    assert receiver == CORP and b"<Content><![CDATA[hello]]></Content>" in message
    with pytest.raises(Exception, match="addressed to"):
        WeComCipher(AES_KEY, "another-corp").decrypt(REQ_ENCRYPT)


def test_url_verification_answers_the_decrypted_echostr(w: World) -> None:
    response = client(w, 1409659589).get("/chatops/wecom", params=VERIFY)
    assert response.status_code == 200 and response.text == "1616140317555161061"
    forged = client(w, 1409659589).get("/chatops/wecom", params={**VERIFY, "nonce": "1"})
    assert forged.status_code == 401


def test_the_official_message_is_read_and_answered_encrypted(w: World) -> None:
    query = {"msg_signature": REQ_SIG, "timestamp": REQ_TS, "nonce": REQ_NONCE}
    response = client(w, float(REQ_TS) + 5).post("/chatops/wecom", params=query, content=REQ_BODY)
    assert response.status_code == 200, response.text
    reply = ET.fromstring(response.text)
    encrypted = reply.findtext("Encrypt") or ""
    assert reply.findtext("MsgSignature") == msg_signature(
        TOKEN, reply.findtext("TimeStamp") or "", reply.findtext("Nonce") or "", encrypted
    )
    inner, receiver = WeComCipher(AES_KEY).decrypt(encrypted)
    assert receiver == CORP
    content = ET.fromstring(inner)
    assert content.findtext("ToUserName") == "mycreate" and "unknown command 'hello'" in (
        content.findtext("Content") or ""
    )
    assert w.commands() == []


def robot_post(w: World, text: str, user: str, chat: str = "wr-releases", now: int = 1_700_000_000):  # type: ignore[no-untyped-def]
    inner = (
        f"<xml><ChatId>{chat}</ChatId><ChatType>group</ChatType><From><UserId>{user}</UserId><Name>Z</Name></From>"
        f"<MsgType>text</MsgType><Text><Content><![CDATA[@graylane {text}]]></Content></Text>"
        "<MsgId>m-77</MsgId></xml>"
    ).encode()
    encrypted = WeComCipher(AES_KEY).encrypt(inner, CORP)
    body = f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()
    query = {
        "msg_signature": msg_signature(TOKEN, str(now), "n1", encrypted),
        "timestamp": str(now),
        "nonce": "n1",
    }
    return client(w, now).post("/chatops/wecom", params=query, content=body)


def test_a_group_robot_command_is_accepted_with_a_markdown_reply(w: World) -> None:
    response = robot_post(w, "weight pro/flask 5", user="zhangsan")
    assert response.status_code == 200
    inner, _ = WeComCipher(AES_KEY).decrypt(ET.fromstring(response.text).findtext("Encrypt") or "")
    assert ET.fromstring(inner).findtext("MsgType") == "markdown"
    [event] = w.commands()
    assert event.data["actor"] == {"user": "zhangsan", "via": "wecom", "channel": "wr-releases"}
    assert event.data["weight"] == 5 and event["subject"] == APP


def test_a_group_robot_stranger_is_403_and_audited(w: World) -> None:
    response = robot_post(w, "abort pro/flask", user="lisi")
    assert response.status_code == 403 and w.commands() == []
    assert [(r.outcome, r.user, r.via) for r in w.audit.records] == [("denied", "lisi", "wecom")]


def test_a_stale_or_forged_delivery_is_401(w: World) -> None:
    query = {"msg_signature": REQ_SIG, "timestamp": REQ_TS, "nonce": REQ_NONCE}
    assert (
        client(w, float(REQ_TS) + 7200).post("/chatops/wecom", params=query, content=REQ_BODY).status_code
        == 401
    )
    forged = {**query, "msg_signature": "0" * 40}
    assert client(w, float(REQ_TS)).post("/chatops/wecom", params=forged, content=REQ_BODY).status_code == 401


def test_plaintext_mode_without_an_aes_key(w: World) -> None:
    body = (
        b"<xml><ToUserName>corp</ToUserName><FromUserName>zhangsan</FromUserName><MsgType>text</MsgType>"
        b"<Content>status pro/flask</Content><MsgId>1</MsgId></xml>"
    )
    query = {"signature": msg_signature(TOKEN, "1700000000", "n"), "timestamp": "1700000000", "nonce": "n"}
    response = client(w, 1_700_000_000, aes="").post("/chatops/wecom", params=query, content=body)
    assert response.status_code == 200 and "waiting at gate go" in (
        ET.fromstring(response.text).findtext("Content") or ""
    )
    query["signature"] = "f" * 40
    assert (
        client(w, 1_700_000_000, aes="").post("/chatops/wecom", params=query, content=body).status_code == 401
    )
