"""Feishu/Lark custom bot webhook (`https://open.feishu.cn/open-apis/bot/v2/hook/...`): an interactive card.
A waiting gate gets Approve/Reject buttons whose value is `{"command": "<the pinned command text>"}`.

With a signing secret ("签名校验"), the body carries `timestamp` (seconds, a string) and `sign` =
base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")): Feishu's documented algorithm uses the
joined string as the key and signs nothing. Feishu answers `{"code": 0, "msg": "success"}` (older bots:
`{"StatusCode": 0}`); a non-zero code is a failure (9499 and 11232, too many requests, are retried).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, ClassVar

from functions.providers.notifiers import _notice as n
from functions.providers.notifiers._http import (
    DEFAULT_DELIVERY,
    Delivery,
    Prepared,
    check_url,
    dumps,
    post,
    vendor_code,
    where,
)

_CHECK = vendor_code("code", "StatusCode", retry=frozenset({9499, 11232}))
_TEMPLATE = {"good": "green", "info": "blue", "attention": "orange", "warning": "orange", "danger": "red"}


def feishu_sign(secret: str, timestamp_s: int) -> str:
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class FeishuNotifier:
    kind: ClassVar[str] = "feishu"

    def __init__(self, url: str, secret: str = "", delivery: Delivery = DEFAULT_DELIVERY) -> None:
        self.url = check_url(self.kind, url)
        self.secret = secret
        self.delivery = delivery

    def payload(self, notice: dict[str, Any], now_s: int | None = None) -> dict[str, Any]:
        fields = [
            {"is_short": True, "text": {"tag": "lark_md", "content": f"**{label}**\n{value}"}}
            for label, value in n.facts(notice)
        ]
        elements: list[dict[str, Any]] = [
            {"tag": "div", "text": {"tag": "lark_md", "content": n.headline(notice)}}
        ]
        if fields:
            elements.append({"tag": "div", "fields": fields})
        actions = n.gate_actions(notice)
        if actions:
            # each button's value is the pinned command text; functions/chatops/feishu.py runs a press
            # (card.action.trigger, value.command) like a message to the bot
            elements.append(
                {
                    "tag": "div",
                    "text": {
                        "tag": "lark_md",
                        "content": f"Approve or reject gate **{notice['gate']}** to continue.",
                    },
                }
            )
            elements.append(
                {
                    "tag": "action",
                    "actions": [
                        {
                            "tag": "button",
                            "text": {"tag": "plain_text", "content": label},
                            "type": "primary" if value.startswith("approve") else "danger",
                            "value": {"command": value},
                        }
                        for label, value in actions
                    ],
                }
            )
        elements.append(
            {
                "tag": "note",
                "elements": [{"tag": "plain_text", "content": f"graylane · {notice.get('id', '')}"}],
            }
        )
        out: dict[str, Any] = {
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": True},
                "header": {
                    "title": {"tag": "plain_text", "content": n.title(notice)},
                    "template": _TEMPLATE[n.tone(notice)],
                },
                "elements": elements,
            },
        }
        if self.secret:
            ts = int(time.time()) if now_s is None else now_s
            out = {"timestamp": str(ts), "sign": feishu_sign(self.secret, ts), **out}
        return out

    def send(self, notice: dict[str, Any]) -> None:
        def prepare() -> Prepared:
            return self.url, dumps(self.payload(notice)), {}  # signed afresh on every attempt

        post(
            f"feishu notifier {where(self.url)}: send {n.kind(notice)} of {notice.get('app', '')}",
            prepare,
            self.delivery,
            _CHECK,
        )
