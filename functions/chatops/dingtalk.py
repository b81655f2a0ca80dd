"""DingTalk outgoing robot (企业内部机器人, HTTP mode): a group member @-mentions the robot with a command.

Authentication (DingTalk "receive messages" docs): headers `timestamp` (milliseconds) and `sign` =
base64(HMAC-SHA256(key=appSecret, timestamp + "\\n" + appSecret)); a timestamp more than one hour from
now is refused. The sign does not cover the body (DingTalk's design): it proves the sender knows the
secret at that time, and TLS protects the body; the message id still dedupes a redelivery.

Authorisation matches stable ids only (senderStaffId / senderId, conversationId): nicknames and group
titles can be edited by their owners. Replies are `{"msgtype": "markdown", ...}` into the same group.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, ClassVar

from functions.chatops.authz import Requester
from functions.chatops.base import Headers, Inbound, Query, Reply, chat_status, fresh, require, text_of
from functions.core.values import value
from functions.providers.sources.base import Malformed, Unauthenticated, get_obj, get_str, load_json, obj

if TYPE_CHECKING:
    from functions.approvals import Result

REPLAY_WINDOW = 3600.0  # DingTalk: within one hour


def sign(app_secret: str, timestamp: str) -> str:
    """DingTalk's signature of a timestamp: base64(HMAC-SHA256(appSecret, f"{timestamp}\\n{appSecret}"))."""
    digest = hmac.new(app_secret.encode(), f"{timestamp}\n{app_secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@value
class DingTalk:
    app_secret: str = ""
    name: ClassVar[str] = "dingtalk"

    def authenticate(self, headers: Headers, query: Query, body: bytes, now: float) -> None:
        require(self.name, "app secret (GRAYLANE_DINGTALK_APP_SECRET)", self.app_secret)
        timestamp, signature = headers.get("timestamp", "").strip(), headers.get("sign", "").strip()
        if not timestamp or not signature:
            raise Unauthenticated("chat platform dingtalk: the timestamp and sign headers are required")
        fresh(self.name, "timestamp", timestamp, now, REPLAY_WINDOW, unit=1000.0)
        if not hmac.compare_digest(signature.encode(), sign(self.app_secret, timestamp).encode()):
            raise Unauthenticated("chat platform dingtalk: the sign header does not match the timestamp")

    def parse(self, headers: Headers, query: Query, body: bytes) -> Inbound:
        source = self.name
        data = obj(source, load_json(source, body), "body")
        if get_str(source, data, "msgtype", "body") != "text":
            raise Malformed(
                f"chat platform dingtalk: msgtype {data.get('msgtype')!r} is not text; send the "
                "command as a text message"
            )
        text = get_str(source, get_obj(source, data, "text", "body"), "content", "body.text")
        staff = get_str(source, data, "senderStaffId", "body", required=False)
        sender = get_str(source, data, "senderId", "body", required=False)
        if not staff and not sender:
            raise Malformed("chat platform dingtalk: body.senderStaffId or body.senderId is required")
        conversation = get_str(source, data, "conversationId", "body", required=False)
        requester = Requester(
            user=staff or sender,
            via="dingtalk",
            channel=conversation,
            user_ids=tuple(i for i in (sender,) if i and i != staff),
            display=get_str(source, data, "senderNick", "body", required=False) or staff or sender,
        )
        return Inbound(
            text=text,
            requester=requester,
            delivery=get_str(source, data, "msgId", "body", required=False),
            context={"staff": staff},
        )

    def render(self, result: Result, inbound: Inbound) -> Reply:
        text = text_of(result)
        first, _, rest = text.partition("\n")
        markdown = f"**{first}**" + (
            "\n\n" + "\n\n".join(f"- {line}" for line in rest.splitlines()) if rest else ""
        )
        body: dict[str, object] = {
            "msgtype": "markdown",
            "markdown": {"title": f"graylane {result.action}".strip(), "text": markdown[:4000]},
        }
        staff = (inbound.context or {}).get("staff")
        if staff:
            body["at"] = {"atUserIds": [staff], "isAtAll": False}
        return Reply(body, status=chat_status(result))
