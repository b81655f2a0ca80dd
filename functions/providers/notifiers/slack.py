"""Slack incoming webhook (https://api.slack.com/messaging/webhooks): `text` as the fallback, Block Kit
`blocks` for the layout. A notice for a gate that waits carries Approve/Reject buttons (action ids
`graylane-approve` / `graylane-reject`) whose `value` is the command text `approve <ns>/<app> <gate>
release=<id> version=<target>` (and `reject ...`), pinned to the release it announces; functions/chatops/slack.py
runs it like the slash command when the app's interactivity endpoint receives the click. Slack answers `ok` or an HTTP error such as 404
`no_service` or 429 with Retry-After.
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
    where,
)

_EMOJI = {
    "good": ":white_check_mark:",
    "info": ":information_source:",
    "attention": ":raised_hand:",
    "warning": ":warning:",
    "danger": ":rotating_light:",
}


def _mrkdwn(text: str) -> str:
    # Slack's only required escapes in mrkdwn: &, <, >
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier:
    kind: ClassVar[str] = "slack"

    def __init__(self, url: str, secret: str = "", delivery: Delivery = DEFAULT_DELIVERY) -> None:
        self.url = check_url(self.kind, url)
        self.delivery = delivery  # `secret` is unused: the URL is the credential

    def payload(self, notice: dict[str, Any]) -> dict[str, Any]:
        head = f"{_EMOJI[n.tone(notice)]} {n.title(notice)}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": n.clip(n.title(notice), 150)}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": n.clip(_mrkdwn(n.headline(notice)), 3000)},
            },
        ]
        fields = [
            {"type": "mrkdwn", "text": n.clip(f"*{label}*\n{_mrkdwn(value)}", 2000)}
            for label, value in n.facts(notice)[:10]
        ]
        if fields:
            blocks.append({"type": "section", "fields": fields})
        buttons = [self._button(label, value) for label, value in n.gate_actions(notice)]
        if buttons:
            blocks.append({"type": "actions", "block_id": "graylane-gate", "elements": buttons})
        context = f"graylane · {notice.get('id', '')}".rstrip(" ·")
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn(context)}]})
        return {"text": n.clip(f"{head}: {n.headline(notice)}", 3000), "blocks": blocks}

    def send(self, notice: dict[str, Any]) -> None:
        body = dumps(self.payload(notice))

        def prepare() -> Prepared:
            return self.url, body, {}

        post(
            f"slack notifier {where(self.url)}: send {n.kind(notice)} of {notice.get('app', '')}",
            prepare,
            self.delivery,
        )

    @staticmethod
    def _button(label: str, value: str) -> dict[str, Any]:
        action = value.split(" ", 1)[0]
        button: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": label},
            "action_id": f"graylane-{action}",
            "value": value,
            "style": "primary" if action == "approve" else "danger",
        }
        if action == "reject":
            button["confirm"] = {
                "title": {"type": "plain_text", "text": "Reject?"},
                "text": {"type": "mrkdwn", "text": "The release rolls back to stable."},
                "confirm": {"type": "plain_text", "text": "Reject"},
                "deny": {"type": "plain_text", "text": "Cancel"},
            }
        return button
