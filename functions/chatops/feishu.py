"""Feishu / Lark bot: commands in messages to the bot (`im.message.receive_v1`) and card button presses
(`card.action.trigger`), through the event subscription (schema 2.0).

Authentication (Feishu "event subscription" docs):
- the Verification Token in the body (`header.token`, or `token` for url_verification) must match;
- with an Encrypt Key, `X-Lark-Signature` = hex SHA-256 of timestamp + nonce + encrypt key + raw body,
  the timestamp within an hour of now, and `{"encrypt": ...}` bodies are AES-256-CBC with the key
  SHA-256(encrypt key) and the IV in the first 16 bytes (needs `cryptography`);
- `url_verification` is answered with its challenge once the token matches.
The signature is verified before anything is decrypted, and every authentication failure gets the same
answer (no padding oracle).
Replies are a message card (`msg_type: interactive`); a card press gets a toast.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from functions.chatops import crypto
from functions.chatops.authz import Requester
from functions.chatops.base import Headers, Inbound, Query, Reply, chat_status, fresh, text_of
from functions.core.values import value
from functions.errors import brief
from functions.providers.sources.base import Malformed, Unauthenticated, get_obj, get_str, load_json, obj

if TYPE_CHECKING:
    from functions.approvals import Result

REPLAY_WINDOW = 3600.0
SOURCE = "feishu"
NOT_AUTHENTIC = (
    "chat platform feishu: the delivery is not authentic (X-Lark-Signature, Encrypt Key or "
    "verification token); the gateway log says which"
)
log = logging.getLogger("graylane.chatops")


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def decrypt(encrypt_key: str, encrypted: str) -> bytes:
    """Feishu's event decryption: AES-256-CBC, key SHA-256(encrypt key), IV = the first 16 bytes."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("chat platform feishu: body.encrypt is not base64", 400) from None
    key = hashlib.sha256(encrypt_key.encode()).digest()
    try:
        return crypto.decrypt(key, raw[:16], raw[16:])
    except ValueError as err:
        raise Unauthenticated(
            f"chat platform feishu: body.encrypt does not decrypt with the Encrypt Key: {err}"
        ) from None


def encrypt(encrypt_key: str, plain: bytes, iv: bytes) -> str:
    """The inverse of `decrypt` (tests, and a local Feishu stand-in)."""
    key = hashlib.sha256(encrypt_key.encode()).digest()
    return base64.b64encode(iv + crypto.encrypt(key, iv, plain)).decode()


@value
class Feishu:
    verification_token: str = ""
    encrypt_key: str = ""
    name: ClassVar[str] = "feishu"

    def payload(self, body: bytes) -> dict[str, Any]:
        data = obj(SOURCE, load_json(SOURCE, body), "body")
        if "encrypt" not in data:
            return data
        if not self.encrypt_key:
            raise Unauthenticated(
                "chat platform feishu: the body is encrypted but no Encrypt Key is configured "
                "(GRAYLANE_FEISHU_ENCRYPT_KEY)"
            )
        return obj(
            SOURCE,
            load_json(SOURCE, decrypt(self.encrypt_key, get_str(SOURCE, data, "encrypt", "body"))),
            "body.encrypt (decrypted)",
        )

    def authenticate(self, headers: Headers, query: Query, body: bytes, now: float) -> None:
        """Verify first, then decrypt, and give one answer for every failure.

        With an Encrypt Key, a signed delivery's X-Lark-Signature is checked over the raw body before anything is
        decrypted; only an unsigned url_verification handshake is decrypted to be recognised. Whatever fails
        (signature, freshness, base64, AES padding, JSON, verification token), the caller gets the same 401, so
        an unsigned caller cannot use the answers as a padding oracle. The reason is logged for the operator.
        """
        if not self.verification_token and not self.encrypt_key:
            raise Unauthenticated(
                "chat platform feishu: neither a Verification Token nor an Encrypt Key is "
                "configured; it refuses every delivery"
            )
        try:
            self._authenticate(headers, body, now)
        except (Unauthenticated, Malformed) as err:
            log.info("chat platform feishu: refused a delivery: %s", brief(str(err), 300))
            raise Unauthenticated(NOT_AUTHENTIC) from None

    def _authenticate(self, headers: Headers, body: bytes, now: float) -> None:
        signed = bool(headers.get("x-lark-signature", "").strip())
        if self.encrypt_key and signed:
            self._check_signature(headers, body, now)  # over the raw bytes: nothing is decrypted before this
        data = self.payload(body)
        handshake = data.get("type") == "url_verification"
        if self.encrypt_key and not signed and not handshake:
            raise Unauthenticated(
                "chat platform feishu: X-Lark-Request-Timestamp and X-Lark-Signature are required"
            )
        if self.verification_token:
            header = h if isinstance(h := data.get("header"), dict) else {}
            token = str(header.get("token") or data.get("token") or "")
            if not hmac.compare_digest(token.encode(), self.verification_token.encode()):
                raise Unauthenticated("chat platform feishu: the verification token in the body is not valid")

    def _check_signature(self, headers: Headers, body: bytes, now: float) -> None:
        timestamp = headers.get("x-lark-request-timestamp", "").strip()
        nonce = headers.get("x-lark-request-nonce", "")
        given = headers.get("x-lark-signature", "").strip().lower()
        if not timestamp or not given:
            raise Unauthenticated(
                "chat platform feishu: X-Lark-Request-Timestamp and X-Lark-Signature are required"
            )
        fresh(self.name, "X-Lark-Request-Timestamp", timestamp, now, REPLAY_WINDOW)
        if not hmac.compare_digest(
            given.encode(), signature(timestamp, nonce, self.encrypt_key, body).encode()
        ):
            raise Unauthenticated("chat platform feishu: X-Lark-Signature does not match the body")

    def parse(self, headers: Headers, query: Query, body: bytes) -> Inbound:
        data = self.payload(body)
        if data.get("type") == "url_verification":
            return Inbound(handshake=Reply({"challenge": get_str(SOURCE, data, "challenge", "body")}))
        header = get_obj(SOURCE, data, "header", "body")
        kind = get_str(SOURCE, header, "event_type", "body.header")
        event = get_obj(SOURCE, data, "event", "body")
        delivery = get_str(SOURCE, header, "event_id", "body.header", required=False)
        if kind == "im.message.receive_v1":
            return _message(event, delivery)
        if kind == "card.action.trigger":
            return _card_action(event, delivery)
        raise Malformed(
            f"chat platform feishu: event type {kind[:80]!r} is not a message or a card action; "
            "subscribe only to im.message.receive_v1 and card.action.trigger"
        )

    def render(self, result: Result, inbound: Inbound) -> Reply:
        text = text_of(result)
        if (inbound.context or {}).get("card"):
            kind = "success" if result.outcome in ("ok", "accepted") else "error"
            return Reply(
                {"toast": {"type": kind, "content": result.message[:500]}}, status=chat_status(result)
            )
        template = {"accepted": "green", "ok": "blue", "denied": "red"}.get(result.outcome, "orange")
        card = {
            "config": {"wide_screen_mode": True},
            "header": {
                "template": template,
                "title": {"tag": "plain_text", "content": f"graylane {result.action}"},
            },
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text[:4000]}}],
        }
        return Reply({"msg_type": "interactive", "card": card}, status=chat_status(result))


def _requester(ids: dict[str, Any], chat: str, where: str) -> Requester:
    user_id, open_id, union_id = (str(ids.get(k) or "") for k in ("user_id", "open_id", "union_id"))
    if not (user_id or open_id):
        raise Malformed(f"chat platform feishu: {where} has neither user_id nor open_id")
    return Requester(
        user=user_id or open_id,
        via="feishu",
        channel=chat,
        user_ids=tuple(i for i in (open_id, union_id) if i and i != (user_id or open_id)),
    )


def _message(event: dict[str, Any], delivery: str) -> Inbound:
    sender = get_obj(SOURCE, get_obj(SOURCE, event, "sender", "body.event"), "sender_id", "body.event.sender")
    message = get_obj(SOURCE, event, "message", "body.event")
    if get_str(SOURCE, message, "message_type", "body.event.message") != "text":
        raise Malformed("chat platform feishu: only text messages carry commands")
    try:
        content = json.loads(get_str(SOURCE, message, "content", "body.event.message"))
    except ValueError:
        raise Malformed("chat platform feishu: body.event.message.content is not JSON") from None
    text = get_str(
        SOURCE, obj(SOURCE, content, "body.event.message.content"), "text", "body.event.message.content"
    )
    chat = get_str(SOURCE, message, "chat_id", "body.event.message", required=False)
    return Inbound(
        text=text, requester=_requester(sender, chat, "body.event.sender.sender_id"), delivery=delivery
    )


def _card_action(event: dict[str, Any], delivery: str) -> Inbound:
    operator = get_obj(SOURCE, event, "operator", "body.event")
    action = get_obj(SOURCE, event, "action", "body.event")
    value = action.get("value")
    text = value.get("command") if isinstance(value, dict) else value
    if not isinstance(text, str) or not text.strip():
        raise Malformed(
            "chat platform feishu: body.event.action.value must be a command text or {command: ...}"
        )
    context = get_obj(SOURCE, event, "context", "body.event", required=False)
    chat = get_str(SOURCE, context, "open_chat_id", "body.event.context", required=False)
    return Inbound(
        text=text,
        requester=_requester(operator, chat, "body.event.operator"),
        delivery=delivery,
        context={"card": True},
    )
