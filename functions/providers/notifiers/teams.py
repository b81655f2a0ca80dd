"""Microsoft Teams: an Adaptive Card posted to a channel's webhook URL.

The URL is a Workflows webhook ("Post to a channel when a webhook request is received", the replacement
for Microsoft 365 Connectors, which accept the same body): https://learn.microsoft.com/microsoftteams/
platform/webhooks-and-connectors/how-to/connectors-using. The body is a message with one attachment of
content type `application/vnd.microsoft.card.adaptive` (Workflows take Adaptive Cards only). The URL is
the credential: keep it in a secret.

A card for a gate that waits has Approve and Reject. Teams delivers a card button's click
(`Action.Submit`, `Action.Execute`) only to a bot, which graylane is not, so the card says what to type
for the outgoing webhook (functions/chatops/teams.py runs it, authorised and audited like every chat
command) and, when GRAYLANE_APPROVAL_URL is set, adds `Action.OpenUrl` buttons to that page: an
authenticated approval page (graylane's web console) where the click is confirmed as the signed-in user.
The template may use {app} {namespace} {name} {gate} {release} {action}, each URL-encoded, e.g.
`https://graylane.example.com/ui/apps/{namespace}/{name}?gate={gate}&release={release}&action={action}`.
A link never changes anything by itself: the page it opens must authenticate and confirm.

Workflows answer 202; the older connector URLs answer 200 "1", or 200 with a "Webhook message delivery
failed" text (its HTTP 429 inside is retried).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote

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

APPROVAL_URL_ENV = "GRAYLANE_APPROVAL_URL"
CARD_VERSION = "1.4"
_COLOUR = {
    "good": "Good",
    "info": "Default",
    "attention": "Accent",
    "warning": "Warning",
    "danger": "Attention",
}


def _check(answer: bytes) -> tuple[str, bool] | None:
    text = answer.decode("utf-8", "replace")
    if "delivery failed" in text.lower():
        return text[:300], "429" in text
    return None


class TeamsNotifier:
    kind: ClassVar[str] = "teams"

    def __init__(
        self,
        url: str,
        secret: str = "",
        delivery: Delivery = DEFAULT_DELIVERY,
        approval_url: str | None = None,
    ) -> None:
        self.url = check_url(self.kind, url)
        self.delivery = delivery  # `secret` is unused: the URL is the credential
        self.approval_url = os.environ.get(APPROVAL_URL_ENV, "") if approval_url is None else approval_url

    def card(self, notice: dict[str, Any]) -> dict[str, Any]:
        body: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": n.clip(n.title(notice), 200),
                "weight": "Bolder",
                "size": "Medium",
                "color": _COLOUR[n.tone(notice)],
                "wrap": True,
            },
            {"type": "TextBlock", "text": n.clip(n.headline(notice), 2000), "wrap": True},
        ]
        facts = [{"title": label, "value": n.clip(value, 500)} for label, value in n.facts(notice)]
        if facts:
            body.append({"type": "FactSet", "facts": facts})
        actions = n.gate_actions(notice)
        buttons: list[dict[str, Any]] = []
        if actions:
            body.append(
                {
                    "type": "TextBlock",
                    "wrap": True,
                    "spacing": "Medium",
                    "text": "To decide, @mention graylane's outgoing webhook in this team with:",
                }
            )
            body += [
                {"type": "TextBlock", "text": command, "fontType": "Monospace", "wrap": True}
                for _, command in actions
            ]
            if self.approval_url:
                buttons = [
                    {
                        "type": "Action.OpenUrl",
                        "title": label,
                        "url": self._link(notice, command),
                        "style": "positive" if label == "Approve" else "destructive",
                    }
                    for label, command in actions
                ]
        body.append(
            {
                "type": "TextBlock",
                "text": f"graylane · {notice.get('id', '')}".rstrip(" ·"),
                "size": "Small",
                "isSubtle": True,
                "wrap": True,
            }
        )
        card: dict[str, Any] = {
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": CARD_VERSION,
            "body": body,
            "msteams": {"width": "Full"},
        }
        if buttons:
            card["actions"] = buttons
        return card

    def payload(self, notice: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": self.card(notice),
                },
            ],
        }

    def send(self, notice: dict[str, Any]) -> None:
        body = dumps(self.payload(notice))

        def prepare() -> Prepared:
            return self.url, body, {}

        post(
            f"teams notifier {where(self.url)}: send {n.kind(notice)} of {notice.get('app', '')}",
            prepare,
            self.delivery,
            _check,
        )

    def _link(self, notice: dict[str, Any], command: str) -> str:
        app = str(notice.get("app", ""))
        namespace, _, name = app.partition("/")
        fields = {
            "app": app,
            "namespace": namespace,
            "name": name,
            "gate": str(notice.get("gate", "")),
            "release": str(notice.get("release", "")),
            "action": command.split(" ", 1)[0],
        }
        link = self.approval_url
        for key, val in fields.items():
            link = link.replace("{" + key + "}", quote(val, safe=""))
        return link
