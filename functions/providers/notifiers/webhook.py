"""Generic webhook: the notice itself as JSON, for any receiver (an incident tool, an audit log, a bot).

Headers: `X-Graylane-Event` (the notice type), `X-Graylane-Delivery` (the notice id: the same on a
redelivery, so a receiver can dedupe) and, with a signing secret, `X-Graylane-Signature:
sha256=<hex HMAC-SHA256 of the raw body>` (GitHub's scheme: verify it over the exact bytes received,
with a constant-time compare). Any 2xx is delivered.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

from functions.providers.notifiers import _notice as n
from functions.providers.notifiers._http import (
    DEFAULT_DELIVERY,
    Delivery,
    Prepared,
    check_url,
    dumps,
    post,
    where,
)

SIGNATURE_HEADER = "X-Graylane-Signature"


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    kind: ClassVar[str] = "webhook"

    def __init__(self, url: str, secret: str = "", delivery: Delivery = DEFAULT_DELIVERY) -> None:
        self.url = check_url(self.kind, url)
        self.secret = secret
        self.delivery = delivery

    def payload(self, notice: dict[str, Any]) -> dict[str, Any]:
        return {"title": n.title(notice), **notice}

    def send(self, notice: dict[str, Any]) -> None:
        body = dumps(self.payload(notice))
        headers = {"X-Graylane-Event": n.kind(notice), "X-Graylane-Delivery": str(notice.get("id", ""))}
        if self.secret:
            headers[SIGNATURE_HEADER] = webhook_signature(self.secret, body)

        def prepare() -> Prepared:
            return self.url, body, headers

        post(
            f"webhook notifier {where(self.url)}: send {n.kind(notice)} of {notice.get('app', '')}",
            prepare,
            self.delivery,
        )
