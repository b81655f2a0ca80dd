"""DingTalk group robot webhook (`https://oapi.dingtalk.com/robot/send?access_token=...`), msgtype markdown.

With a signing secret ("加签", the SEC... string), every attempt adds `timestamp` (ms) and `sign` =
urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))) to the query. DingTalk answers
HTTP 200 with `{"errcode": 0, "errmsg": "ok"}`; a non-zero errcode is a failure (130101, sending too
fast, is worth a retry; a bad signature, 310000, is not).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, ClassVar
from urllib.parse import quote_plus

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

_CHECK = vendor_code("errcode", retry=frozenset({-1, 130101}))


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The `sign` query value (already url-encoded)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


class DingTalkNotifier:
    kind: ClassVar[str] = "dingtalk"

    def __init__(self, url: str, secret: str = "", delivery: Delivery = DEFAULT_DELIVERY) -> None:
        self.url = check_url(self.kind, url)
        self.secret = secret
        self.delivery = delivery

    def payload(self, notice: dict[str, Any]) -> dict[str, Any]:
        title = n.title(notice)
        return {
            "msgtype": "markdown",
            "markdown": {
                "title": n.clip(title, 64),
                "text": f"### {n.escape_md(title)}\n\n{n.markdown(notice)}",
            },
        }

    def signed_url(self, now_ms: int | None = None) -> str:
        if not self.secret:
            return self.url
        ts = int(time.time() * 1000) if now_ms is None else now_ms
        joiner = "&" if "?" in self.url else "?"
        return f"{self.url}{joiner}timestamp={ts}&sign={dingtalk_sign(self.secret, ts)}"

    def send(self, notice: dict[str, Any]) -> None:
        body = dumps(self.payload(notice))

        def prepare() -> Prepared:
            return self.signed_url(), body, {}

        post(
            f"dingtalk notifier {where(self.url)}: send {n.kind(notice)} of {notice.get('app', '')}",
            prepare,
            self.delivery,
            _CHECK,
        )
