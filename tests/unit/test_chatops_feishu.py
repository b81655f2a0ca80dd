"""Feishu/Lark through the gateway: the documented decryption vector, X-Lark-Signature, the verification
token, url_verification, messages and card actions, message card replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.chatops.feishu import Feishu, decrypt, encrypt, signature
from functions.chatops.routes import chatops_routes
from tests.unit.chatops_helpers import APP, World, world

TOKEN = "verification-token-1"
KEY = "feishu-encrypt-key"
NOW = 1_700_000_000


def test_the_documented_decryption_vector() -> None:
    # Feishu's event subscription docs: encrypt key "test key" decrypts this to "hello world"
    assert decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=") == b"hello world"
    assert decrypt("test key", encrypt("test key", b'{"a": 1}', b"\x01" * 16)) == b'{"a": 1}'


def test_the_signature_matches_an_independently_computed_vector() -> None:
    # printf '1700000000nonce-1feishu-encrypt-key{"encrypt":"abc"}' | sha256sum
    assert (
        signature("1700000000", "nonce-1", KEY, b'{"encrypt":"abc"}')
        == "a375ed8fac2aceb458e73c2bddcf6905e8fbd6991463f4b0eed87ddc558e0e77"
    )


def event(
    text: str = "", user: str = "ou_ops", chat: str = "oc_releases", token: str = TOKEN, card: str = ""
) -> dict[str, Any]:
    header = {
        "event_id": "ev-1",
        "token": token,
        "create_time": "1700000000000",
        "app_id": "cli_x",
        "event_type": "card.action.trigger" if card else "im.message.receive_v1",
    }
    if card:
        body = {
            "operator": {"open_id": user},
            "action": {"tag": "button", "value": {"command": card}},
            "context": {"open_chat_id": chat},
        }
    else:
        body = {
            "sender": {"sender_id": {"open_id": user, "union_id": "on_x"}, "sender_type": "user"},
            "message": {
                "message_id": "om_1",
                "chat_id": chat,
                "chat_type": "group",
                "message_type": "text",
                "content": json.dumps({"text": f"@_user_1 {text}"}),
            },
        }
    return {"schema": "2.0", "header": header, "event": body}


def post(
    w: World, payload: dict[str, Any], key: str = KEY, encrypted: bool = True, sign_key: str | None = KEY
):  # type: ignore[no-untyped-def]
    raw = json.dumps(payload).encode()
    body = json.dumps({"encrypt": encrypt(key, raw, b"\x07" * 16)}).encode() if encrypted else raw
    headers = {"Content-Type": "application/json"}
    if sign_key is not None:  # Feishu's url_verification handshake may come unsigned
        headers |= {
            "X-Lark-Request-Timestamp": str(NOW),
            "X-Lark-Request-Nonce": "n-1",
            "X-Lark-Signature": signature(str(NOW), "n-1", sign_key, body),
        }
    app = w.client(*chatops_routes({"feishu": Feishu(TOKEN, KEY)}, w.approvals, now=lambda: NOW))
    return app.post("/chatops/feishu", content=body, headers=headers)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(tmp_path)


def test_url_verification_answers_the_challenge_only_with_the_token(w: World) -> None:
    ok = post(w, {"type": "url_verification", "challenge": "ch-123", "token": TOKEN}, sign_key=None)
    assert ok.status_code == 200 and ok.json() == {"challenge": "ch-123"}
    signed = post(w, {"type": "url_verification", "challenge": "ch-123", "token": TOKEN})
    assert signed.status_code == 200 and signed.json() == {"challenge": "ch-123"}
    bad = post(w, {"type": "url_verification", "challenge": "ch-123", "token": "wrong"})
    assert bad.status_code == 401
    forged = post(w, {"type": "url_verification", "challenge": "ch-123", "token": TOKEN}, sign_key="other")
    assert forged.status_code == 401  # a signature, if present, must be right
    unsigned_event = post(w, event("pause pro/flask"), sign_key=None)
    assert unsigned_event.status_code == 401 and w.commands() == []


def test_an_encrypted_signed_message_is_accepted_and_answered_with_a_card(w: World) -> None:
    response = post(w, event("pause pro/flask -- checking dashboards"))
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["msg_type"] == "interactive" and reply["card"]["header"]["template"] == "green"
    [cmd] = w.commands()
    assert cmd.data["action"] == "pause" and cmd.data["reason"] == "checking dashboards"
    assert cmd.data["actor"] == {"user": "ou_ops", "via": "feishu", "channel": "oc_releases"}


def test_a_card_button_gets_a_toast(w: World) -> None:
    response = post(w, event(card="approve pro/flask go"))
    assert response.status_code == 200 and response.json()["toast"]["type"] == "success"
    assert [c.data["gate"] for c in w.commands()] == ["go"]


@pytest.mark.parametrize("change", ["signature", "token", "key"])
def test_bad_credentials_are_401(w: World, change: str) -> None:
    if change == "signature":
        response = post(w, event("pause pro/flask"), sign_key="other")
    elif change == "token":
        response = post(w, event("pause pro/flask", token="wrong"))
    else:
        response = post(w, event("pause pro/flask"), key="another key")
    assert response.status_code == 401 and w.commands() == [] and w.audit.records == []


def test_an_unlisted_user_is_403_and_audited(w: World) -> None:
    response = post(w, event("abort pro/flask", user="ou_stranger"))
    assert response.status_code == 403 and response.json()["card"]["header"]["template"] == "red"
    [record] = w.audit.records
    assert (record.outcome, record.user, record.action, record.app) == ("denied", "ou_stranger", "abort", APP)


def raw_post(w: World, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    app = w.client(*chatops_routes({"feishu": Feishu(TOKEN, KEY)}, w.approvals, now=lambda: NOW))
    return app.post("/chatops/feishu", content=body, headers={"Content-Type": "application/json", **headers})


def test_action_id_feishu_gives_an_unsigned_caller_one_answer_whatever_the_padding(w: World) -> None:
    import base64

    from functions.chatops import crypto
    from functions.chatops.feishu import encrypt as feishu_encrypt

    key = __import__("hashlib").sha256(KEY.encode()).digest()
    iv = b"\x05" * 16
    bad_padding = base64.b64encode(
        iv + crypto.encrypt(key, iv, b"x" * 16)[:16]
    ).decode()  # valid AES, bad pad
    good_padding_not_json = feishu_encrypt(KEY, b"certainly not json", iv)
    not_base64 = "%%%"
    wrong_token = feishu_encrypt(
        KEY, json.dumps({"type": "url_verification", "challenge": "c", "token": "nope"}).encode(), iv
    )
    answers = [
        raw_post(w, json.dumps({"encrypt": e}).encode(), {})
        for e in (bad_padding, good_padding_not_json, not_base64, wrong_token)
    ]

    assert {a.status_code for a in answers} == {401}
    assert len({a.text for a in answers}) == 1, [a.text for a in answers]  # no padding oracle
    assert "padding" not in answers[0].text and "JSON" not in answers[0].text
    assert w.commands() == []


def test_action_id_feishu_checks_the_signature_before_decrypting(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.chatops import feishu

    calls: list[str] = []
    real = feishu.decrypt
    monkeypatch.setattr(feishu, "decrypt", lambda k, e: calls.append(e) or real(k, e))
    body = json.dumps(
        {"encrypt": encrypt(KEY, json.dumps(event("pause pro/flask")).encode(), b"\x07" * 16)}
    ).encode()
    forged = {
        "X-Lark-Request-Timestamp": str(NOW),
        "X-Lark-Request-Nonce": "n-1",
        "X-Lark-Signature": signature(str(NOW), "n-1", "not-the-key", body),
    }

    refused = raw_post(w, body, forged)

    assert refused.status_code == 401 and calls == []  # nothing was decrypted for a forged signature
    good = {**forged, "X-Lark-Signature": signature(str(NOW), "n-1", KEY, body)}
    assert raw_post(w, body, good).status_code == 200 and calls
    assert [c.data["action"] for c in w.commands()] == ["pause"]
