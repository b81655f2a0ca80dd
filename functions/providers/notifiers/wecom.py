"""WeCom (企业微信) group robot webhook (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`), msgtype
markdown (content at most 4096 bytes). The key in the URL is the only credential: there is no signing.
WeCom answers `{"errcode": 0, "errmsg": "ok"}`; 45009 (over the rate limit) is retried.
"""

from __future__ import annotations

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

_CHECK = vendor_code("errcode", retry=frozenset({-1, 45009}))
_COLOR = {
    "good": "info",
    "info": "comment",
    "attention": "warning",
    "warning": "warning",
    "danger": "warning",
}


def _clip_bytes(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "…"


class WeComNotifier:
    kind: ClassVar[str] = "wecom"

    def __init__(self, url: str, secret: str = "", delivery: Delivery = DEFAULT_DELIVERY) -> None:
        self.url = check_url(self.kind, url)
        self.delivery = delivery

    def payload(self, notice: dict[str, Any]) -> dict[str, Any]:
        head = f'<font color="{_COLOR[n.tone(notice)]}">{n.escape_md(n.title(notice))}</font>'
        content = f"### {head}\n{n.markdown(notice, bullet='> ')}"
        return {"msgtype": "markdown", "markdown": {"content": _clip_bytes(content, 4096)}}

    def send(self, notice: dict[str, Any]) -> None:
        body = dumps(self.payload(notice))

        def prepare() -> Prepared:
            return self.url, body, {}

        post(
            f"wecom notifier {where(self.url)}: send {n.kind(notice)} of {notice.get('app', '')}",
            prepare,
            self.delivery,
            _CHECK,
        )
