"""Slack: slash commands (`/graylane approve pro/flask promote`) and interactive approve/reject buttons.

Authentication (https://api.slack.com/authentication/verifying-requests-from-slack): `X-Slack-Signature`
is `v0=` + hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` keyed by the app's signing
secret; a timestamp more than 5 minutes from now is refused as a possible replay.

A slash command is a form body (`command`, `text`, `user_id`, `user_name`, `channel_id`, ...); a button
press is a form body with one `payload` field of JSON whose `actions[0].value` holds the command text
(the Slack notifier's gate notices carry such buttons). Only graylane's own buttons run anything: the
`action_id` must be `graylane-approve` (its value an `approve ...` command) or `graylane-reject` (a
`reject ...`); any other button is acknowledged and nothing runs. Replies are Block Kit messages.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs

from functions.chatops.authz import Requester
from functions.chatops.base import Headers, Inbound, Query, Reply, chat_status, fresh, require, text_of
from functions.core.values import value
from functions.providers.sources.base import (
    Malformed,
    Unauthenticated,
    check_hmac,
    get_list,
    get_obj,
    get_str,
    obj,
)

if TYPE_CHECKING:
    from functions.approvals import Result

REPLAY_WINDOW = 300.0  # seconds, as Slack recommends
SIGNATURE = "x-slack-signature"
TIMESTAMP = "x-slack-request-timestamp"
ACTION_IDS = ("graylane-approve", "graylane-reject")
ACTION_VERBS = {"graylane-approve": "approve", "graylane-reject": "reject"}  # what each button may run


@value
class Slack:
    signing_secret: str = ""
    name: ClassVar[str] = "slack"

    def authenticate(self, headers: Headers, query: Query, body: bytes, now: float) -> None:
        require(self.name, "signing secret (GRAYLANE_SLACK_SIGNING_SECRET)", self.signing_secret)
        raw_ts, signature = headers.get(TIMESTAMP, ""), headers.get(SIGNATURE, "").strip()
        if not raw_ts or not signature:
            raise Unauthenticated(
                "chat platform slack: the X-Slack-Request-Timestamp and X-Slack-Signature "
                "headers are required"
            )
        fresh(self.name, "X-Slack-Request-Timestamp", raw_ts, now, REPLAY_WINDOW)
        if not signature.startswith("v0="):
            raise Unauthenticated("chat platform slack: only v0 signatures are understood")
        signed = f"v0:{raw_ts.strip()}:".encode() + body
        check_hmac(
            self.name, "X-Slack-Signature", "sha256=" + signature[3:], signed, self.signing_secret, "sha256"
        )

    def parse(self, headers: Headers, query: Query, body: bytes) -> Inbound:
        try:
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise Malformed("chat platform slack: the body is not UTF-8 form data", 400) from None
        if "payload" in form:
            return _interactive(form["payload"])
        if "command" not in form:
            raise Malformed(
                "chat platform slack: neither a slash command (command=) nor an interaction (payload=)"
            )
        requester = _requester(
            form.get("user_id", ""),
            form.get("user_name", ""),
            form.get("channel_id", ""),
            form.get("channel_name", ""),
        )
        return Inbound(text=form.get("text", ""), requester=requester, delivery=form.get("trigger_id", ""))

    def render(self, result: Result, inbound: Inbound) -> Reply:
        accepted = result.outcome == "accepted"
        text = text_of(result)
        first, _, rest = text.partition("\n")
        shown = _escape(first) if result.outcome in ("ok", "accepted") else f"*{_escape(first)}*"
        if rest:
            shown += "\n```" + _escape(rest) + "```"
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": shown[:3000]}}]
        if result.event_id:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"event `{result.event_id}`"}]}
            )
        body = {
            "response_type": "in_channel" if accepted else "ephemeral",
            "replace_original": False,
            "text": text[:3000],
            "blocks": blocks,
        }
        return Reply(body, status=chat_status(result))


def _requester(user_id: str, user_name: str, channel_id: str, channel_name: str) -> Requester:
    if not user_id and not user_name:
        raise Malformed("chat platform slack: the request names no user (user_id)")
    channel = f"#{channel_name}" if channel_name and not channel_name.startswith("#") else channel_name
    return Requester(
        user=user_name or user_id,
        via="slack",
        channel=(channel or channel_id)[:256],
        user_ids=tuple(i for i in (user_id,) if i),
        channel_ids=tuple(i for i in (channel_id,) if i),
        display=f"@{user_name}" if user_name else user_id,
    )


def _interactive(raw: str) -> Inbound:
    source = "slack"
    try:
        payload = obj(source, json.loads(raw), "payload")
    except ValueError:
        raise Malformed("chat platform slack: payload is not JSON", 400) from None
    if get_str(source, payload, "type", "payload") != "block_actions":
        raise Malformed(f"chat platform slack: payload.type {payload.get('type')!r} is not block_actions")
    actions = get_list(source, payload, "actions", "payload")
    if not actions:
        raise Malformed("chat platform slack: payload.actions is empty")
    action = obj(source, actions[0], "payload.actions[0]")
    action_id = get_str(source, action, "action_id", "payload.actions[0]", required=False)
    text = get_str(source, action, "value", "payload.actions[0]", required=False)
    verb = ACTION_VERBS.get(action_id)
    if verb is None or text.split(maxsplit=1)[:1] != [verb]:
        # another app's (or a hand-made) button: acknowledged, so Slack shows no error, and nothing runs
        shown = action_id[:64] if action_id else "(none)"
        why = (
            f"the button {shown!r} is not one of graylane's ({', '.join(ACTION_IDS)})"
            if verb is None
            else f"the button {action_id} may only run {verb}"
        )
        return Inbound(
            handshake=Reply(
                {
                    "response_type": "ephemeral",
                    "replace_original": False,
                    "text": f"ignored: {why}; nothing was run",
                }
            )
        )
    user = get_obj(source, payload, "user", "payload")
    channel = get_obj(source, payload, "channel", "payload", required=False)
    requester = _requester(
        get_str(source, user, "id", "payload.user"),
        get_str(source, user, "username", "payload.user", required=False),
        get_str(source, channel, "id", "payload.channel", required=False),
        get_str(source, channel, "name", "payload.channel", required=False),
    )
    delivery = get_str(source, action, "action_ts", "payload.actions[0]", required=False) or get_str(
        source, payload, "trigger_id", "payload", required=False
    )
    return Inbound(text=text, requester=requester, delivery=delivery)


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
