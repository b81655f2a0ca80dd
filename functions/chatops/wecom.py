"""WeCom (企业微信) callbacks: app messages, group robot callbacks and smart robot messages carrying commands.

Authentication (WeCom "callback encryption" docs): `msg_signature` = hex SHA-1 of the sorted, joined
[token, timestamp, nonce, encrypted message]; the GET URL verification signs `echostr` the same way and
is answered with the decrypted echostr. Messages are AES-256-CBC: key = base64(EncodingAESKey + "="),
IV = its first 16 bytes, PKCS#7 padding to 32 bytes; the plaintext is 16 random bytes, a 4-byte
big-endian length, the message, then the receive id (the corp id), which is checked when configured.
Without an EncodingAESKey (or without `cryptography`) only plaintext mode works: `signature` = SHA-1 of
the sorted [token, timestamp, nonce] and a plain XML body. A timestamp over an hour from now is refused.

Bodies are XML (apps, group robots) or JSON `{"encrypt": ...}` (smart robots); replies are encrypted back
in the same shape: markdown for robots, text for apps.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import struct
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, ClassVar

from functions.chatops import crypto
from functions.chatops.authz import Requester
from functions.chatops.base import Headers, Inbound, Query, Reply, chat_status, fresh, require, text_of
from functions.core.values import value
from functions.errors import ConfigError
from functions.providers.sources.base import Malformed, Unauthenticated

if TYPE_CHECKING:
    from functions.approvals import Result

REPLAY_WINDOW = 3600.0
SOURCE = "wecom"


def msg_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.strip().lower().encode(), b.encode())


@value
class WeComCipher:
    """WXBizMsgCrypt's message format with an EncodingAESKey (43 characters of base64)."""

    encoding_aes_key: str
    receive_id: str = ""  # the corp id (or bot id) the messages must be addressed to; empty: not checked

    @property
    def key(self) -> bytes:
        try:
            key = base64.b64decode(self.encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(self.encoding_aes_key) != 43 or len(key) != 32:
            raise ConfigError("GRAYLANE_WECOM_AES_KEY must be the 43-character EncodingAESKey")
        return key

    def decrypt(self, encrypted: str) -> tuple[bytes, str]:
        """(message, receive id) of an encrypted message; Unauthenticated when it is not ours."""
        key = self.key
        try:
            plain = crypto.decrypt(key, key[:16], base64.b64decode(encrypted, validate=True), block=32)
            (length,) = struct.unpack(">I", plain[16:20])
        except (binascii.Error, ValueError, struct.error) as err:
            raise Unauthenticated(
                f"chat platform wecom: the message does not decrypt with the EncodingAESKey: {err}"
            ) from None
        if 20 + length > len(plain):
            raise Unauthenticated("chat platform wecom: the decrypted message length is wrong")
        message, receiver = plain[20 : 20 + length], plain[20 + length :].decode("utf-8", "replace")
        if self.receive_id and not hmac.compare_digest(receiver.encode(), self.receive_id.encode()):
            raise Unauthenticated(
                f"chat platform wecom: the message is addressed to {receiver[:64]!r}, not to "
                "GRAYLANE_WECOM_RECEIVE_ID"
            )
        return message, receiver

    def encrypt(self, message: bytes, receiver: str, random: bytes | None = None) -> str:
        key = self.key
        plain = (random or os.urandom(16)) + struct.pack(">I", len(message)) + message + receiver.encode()
        return base64.b64encode(crypto.encrypt(key, key[:16], plain, block=32)).decode()


@value
class WeCom:
    token: str = ""
    encoding_aes_key: str = ""
    receive_id: str = ""
    name: ClassVar[str] = "wecom"

    @property
    def cipher(self) -> WeComCipher | None:
        return WeComCipher(self.encoding_aes_key, self.receive_id) if self.encoding_aes_key else None

    def handshake(self, query: Query, now: float) -> Reply:
        """GET URL verification: check the signature over echostr and answer it decrypted."""
        require(self.name, "token (GRAYLANE_WECOM_TOKEN)", self.token)
        timestamp, nonce, echo = query.get("timestamp", ""), query.get("nonce", ""), query.get("echostr", "")
        if not timestamp or not echo:
            raise Unauthenticated("chat platform wecom: URL verification needs timestamp, nonce and echostr")
        fresh(self.name, "timestamp", timestamp, now, REPLAY_WINDOW)
        cipher = self.cipher
        if cipher is None:
            if not _same(query.get("signature", ""), msg_signature(self.token, timestamp, nonce)):
                raise Unauthenticated("chat platform wecom: the signature does not match")
            return Reply(echo, media_type="text/plain")
        if not _same(query.get("msg_signature", ""), msg_signature(self.token, timestamp, nonce, echo)):
            raise Unauthenticated("chat platform wecom: msg_signature does not match echostr")
        return Reply(cipher.decrypt(echo)[0].decode("utf-8", "replace"), media_type="text/plain")

    def authenticate(self, headers: Headers, query: Query, body: bytes, now: float) -> None:
        require(self.name, "token (GRAYLANE_WECOM_TOKEN)", self.token)
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not timestamp:
            raise Unauthenticated("chat platform wecom: the timestamp query parameter is required")
        fresh(self.name, "timestamp", timestamp, now, REPLAY_WINDOW)
        encrypted, _ = _envelope(body)
        if encrypted:
            if self.cipher is None:
                raise Unauthenticated(
                    "chat platform wecom: the message is encrypted but no EncodingAESKey is "
                    "configured (GRAYLANE_WECOM_AES_KEY)"
                )
            if not crypto.available():
                raise Unauthenticated("chat platform wecom: encrypted messages need the cryptography package")
            if not _same(
                query.get("msg_signature", ""), msg_signature(self.token, timestamp, nonce, encrypted)
            ):
                raise Unauthenticated("chat platform wecom: msg_signature does not match the message")
        elif self.cipher is not None:
            raise Unauthenticated(
                "chat platform wecom: a plaintext message while an EncodingAESKey is configured"
            )
        elif not _same(query.get("signature", ""), msg_signature(self.token, timestamp, nonce)):
            raise Unauthenticated("chat platform wecom: the signature does not match (plaintext mode)")

    def parse(self, headers: Headers, query: Query, body: bytes) -> Inbound:
        encrypted, shape = _envelope(body)
        message = body
        if encrypted:
            assert self.cipher is not None  # authenticate refused it otherwise
            message, _ = self.cipher.decrypt(encrypted)
        fields = _json_message(message) if shape == "json" else _xml_message(message)
        user, text = fields.get("user", ""), fields.get("text", "")
        if not user:
            raise Malformed("chat platform wecom: the message names no sender")
        if fields.get("type") != "text":
            raise Malformed(f"chat platform wecom: message type {fields.get('type', '')[:40]!r} is not text")
        requester = Requester(
            user=user, via="wecom", channel=fields.get("chat", ""), display=fields.get("name", "")
        )
        return Inbound(
            text=text,
            requester=requester,
            delivery=fields.get("id", ""),
            context={
                "shape": shape,
                "kind": fields.get("kind", ""),
                "user": user,
                "to": fields.get("to", ""),
                "encrypted": bool(encrypted),
                "nonce": query.get("nonce", ""),
            },
        )

    def render(self, result: Result, inbound: Inbound) -> Reply:
        ctx = dict(inbound.context or {})
        text = text_of(result)
        if ctx.get("shape") == "json":
            inner = json.dumps(
                {"msgtype": "markdown", "markdown": {"content": text[:4000]}}, ensure_ascii=False
            )
        elif ctx.get("kind") == "app":
            inner = (
                f"<xml><ToUserName>{_cdata(ctx['user'])}</ToUserName><FromUserName>{_cdata(ctx['to'])}"
                f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                f"<Content>{_cdata(text[:2000])}</Content></xml>"
            )
        else:
            inner = f"<xml><MsgType>markdown</MsgType><Markdown><Content>{_cdata(text[:4000])}</Content></Markdown></xml>"
        status = chat_status(result)
        if not ctx.get("encrypted") or self.cipher is None:
            return Reply(
                json.loads(inner) if ctx.get("shape") == "json" else inner,
                media_type="application/json" if ctx.get("shape") == "json" else "application/xml",
                status=status,
            )
        cipher = self.cipher
        encrypted = cipher.encrypt(inner.encode(), cipher.receive_id or ctx.get("to", ""))
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        sig = msg_signature(self.token, timestamp, nonce, encrypted)
        if ctx.get("shape") == "json":
            return Reply(
                {"encrypt": encrypted, "msgsignature": sig, "timestamp": int(timestamp), "nonce": nonce},
                status=status,
            )
        xml = (
            f"<xml><Encrypt>{_cdata(encrypted)}</Encrypt><MsgSignature>{_cdata(sig)}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{_cdata(nonce)}</Nonce></xml>"
        )
        return Reply(xml, media_type="application/xml", status=status)


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml(body: bytes) -> ET.Element:
    head = body[:2048].lower()
    if b"<!doctype" in head or b"<!entity" in head:
        raise Malformed("chat platform wecom: XML with a DOCTYPE or entities is not accepted", 400)
    try:
        return ET.fromstring(body)
    except ET.ParseError as err:
        raise Malformed(f"chat platform wecom: the body is not XML: {err}", 400) from None


def _envelope(body: bytes) -> tuple[str, str]:
    """(encrypted message or '', 'json' | 'xml') of a callback body."""
    if body.lstrip()[:1] == b"{":
        try:
            data = json.loads(body)
        except ValueError:
            raise Malformed("chat platform wecom: the body is not JSON", 400) from None
        value = data.get("encrypt", "") if isinstance(data, dict) else ""
        return (value if isinstance(value, str) else ""), "json"
    return (_xml(body).findtext("Encrypt") or "").strip(), "xml"


def _xml_message(message: bytes) -> dict[str, str]:
    root = _xml(message)
    text = (root.findtext("Content") or root.findtext("Text/Content") or "").strip()
    fields = {
        "type": (root.findtext("MsgType") or "").strip(),
        "text": text,
        "id": (root.findtext("MsgId") or "").strip(),
        "chat": (root.findtext("ChatId") or "").strip(),
    }
    if root.find("From") is not None:  # group robot callback
        fields.update(
            kind="robot",
            user=(root.findtext("From/UserId") or "").strip(),
            name=(root.findtext("From/Name") or "").strip(),
        )
    else:  # app message
        fields.update(
            kind="app",
            user=(root.findtext("FromUserName") or "").strip(),
            to=(root.findtext("ToUserName") or "").strip(),
        )
    return fields


def _json_message(message: bytes) -> dict[str, str]:
    try:
        data = json.loads(message)
    except ValueError:
        raise Malformed("chat platform wecom: the decrypted message is not JSON", 400) from None
    if not isinstance(data, dict):
        raise Malformed("chat platform wecom: the decrypted message is not a JSON object")
    sender = s if isinstance(s := data.get("from"), dict) else {}
    text = t if isinstance(t := data.get("text"), dict) else {}
    return {
        "kind": "smart-robot",
        "type": str(data.get("msgtype", "")),
        "text": str(text.get("content", "")).strip(),
        "user": str(sender.get("userid", "")),
        "chat": str(data.get("chatid", "")),
        "id": str(data.get("msgid", "")),
    }
