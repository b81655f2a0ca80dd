"""Microsoft Teams outgoing webhook: a team member @-mentions the webhook with a command.

    @graylane approve pro/flask promote

Authentication (https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/
add-outgoing-webhook, "Verify HMAC token"): `Authorization: HMAC <base64 HMAC-SHA256 of the raw body>`,
keyed by the base64-decoded security token Teams shows once when the webhook is created. Each team has
its own webhook and token: GRAYLANE_TEAMS_SECURITY_TOKEN holds one, or several separated by commas, all
compared in constant time. The HMAC covers no header, so a captured delivery could be replayed: the
activity's own `timestamp` (inside the signed body) must be within 10 minutes of now, and its `id`
makes a redelivery publish the same command event (deduplicated downstream).

The body is a Bot Framework message activity: `text` carries the mention (`<at>graylane</at> approve ...`),
`from.aadObjectId` the user's stable Microsoft Entra id (authorised against the approvers; the display name
in `from.name` only shows in replies), `channelData.channel.id` / `conversation.id` the channel. Teams waits
five seconds for the answer, a `{"type": "message", "text": ...}` shown in the same thread, and shows only
a generic error for any status but 200: refusals are answered 200 with their reason.

Outgoing webhooks cannot receive card button clicks (only `openUrl` actions work on their cards), so
approving from Teams is typing the command; notifications (functions/providers/notifiers/teams.py) show it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import re
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from functions.chatops.authz import Requester
from functions.chatops.base import Headers, Inbound, Query, Reply, require, text_of
from functions.core.values import value
from functions.errors import ConfigError
from functions.providers.sources.base import Malformed, Unauthenticated, get_obj, get_str, load_json, obj

if TYPE_CHECKING:
    from functions.approvals import Result

REPLAY_WINDOW = 600.0  # seconds between the activity's timestamp and now
SOURCE = "teams"
_MENTION = re.compile(r"<at\b[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]{0,200}>")


def keys(security_tokens: str) -> tuple[bytes, ...]:
    """The HMAC keys of comma-separated security tokens; ConfigError naming a token that is not base64."""
    out = []
    for i, token in enumerate(t.strip() for t in security_tokens.split(",")):
        if not token:
            continue
        try:
            key = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < 16:
            raise ConfigError(
                f"GRAYLANE_TEAMS_SECURITY_TOKEN entry {i + 1} is not the base64 security token Teams "
                "showed when the outgoing webhook was created"
            )
        out.append(key)
    return tuple(out)


def command_text(text: str) -> str:
    """The command in a Teams message: mentions removed, HTML tags dropped, entities decoded."""
    return html.unescape(_TAG.sub(" ", _MENTION.sub(" ", text))).replace("\u00a0", " ").strip()


@value
class Teams:
    security_tokens: str = (
        ""  # GRAYLANE_TEAMS_SECURITY_TOKEN: one per team's outgoing webhook, comma-separated
    )
    name: ClassVar[str] = "teams"

    def authenticate(self, headers: Headers, query: Query, body: bytes, now: float) -> None:
        require(self.name, "security token (GRAYLANE_TEAMS_SECURITY_TOKEN)", self.security_tokens)
        scheme, _, presented = headers.get("authorization", "").strip().partition(" ")
        if scheme.upper() != "HMAC" or not presented.strip():
            raise Unauthenticated(
                "chat platform teams: the Authorization: HMAC <signature> header is required"
            )
        signature = presented.strip().encode("utf-8", "surrogateescape")
        matched = False
        for key in keys(self.security_tokens):  # no early exit: timing tells nothing about which team
            expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
            matched |= hmac.compare_digest(signature, expected)
        if not matched:
            raise Unauthenticated(
                "chat platform teams: the HMAC signature does not match the body for any "
                "configured security token"
            )
        data = obj(SOURCE, load_json(SOURCE, body), "body")
        stamp = _epoch(get_str(SOURCE, data, "timestamp", "body", required=False))
        if stamp is None:
            raise Unauthenticated(
                "chat platform teams: body.timestamp is missing or not a time; refusing a delivery "
                "that cannot be checked for replay"
            )
        if abs(now - stamp) > REPLAY_WINDOW:
            raise Unauthenticated(
                f"chat platform teams: body.timestamp is more than {int(REPLAY_WINDOW)} s from now; "
                "refusing a possible replay (check the clocks)"
            )

    def parse(self, headers: Headers, query: Query, body: bytes) -> Inbound:
        data = obj(SOURCE, load_json(SOURCE, body), "body")
        kind = get_str(SOURCE, data, "type", "body")
        if kind != "message":
            raise Malformed(f"chat platform teams: body.type {kind[:40]!r} is not message")
        sender = get_obj(SOURCE, data, "from", "body")
        aad = get_str(SOURCE, sender, "aadObjectId", "body.from", required=False)
        account = get_str(SOURCE, sender, "id", "body.from", required=False)
        if not aad and not account:
            raise Malformed("chat platform teams: body.from.aadObjectId or body.from.id is required")
        channel_data = get_obj(SOURCE, data, "channelData", "body", required=False)
        channel = get_str(
            SOURCE,
            get_obj(SOURCE, channel_data, "channel", "body.channelData", required=False),
            "id",
            "body.channelData.channel",
            required=False,
        )
        conversation = get_str(
            SOURCE,
            get_obj(SOURCE, data, "conversation", "body", required=False),
            "id",
            "body.conversation",
            required=False,
        ).split(";", 1)[0]
        requester = Requester(
            user=aad or account,
            via="teams",
            channel=(channel or conversation)[:256],
            user_ids=tuple(i for i in (account,) if i and i != (aad or account)),
            channel_ids=tuple(i for i in (conversation,) if i and i != channel),
            display=get_str(SOURCE, sender, "name", "body.from", required=False) or aad or account,
        )
        text = command_text(get_str(SOURCE, data, "text", "body"))
        return Inbound(
            text=text, requester=requester, delivery=get_str(SOURCE, data, "id", "body", required=False)
        )

    def render(self, result: Result, inbound: Inbound) -> Reply:
        text = text_of(result)
        first, _, rest = text.partition("\n")
        shown = f"**{_escape(first)}**"
        if rest:
            shown += "\n\n" + "\n\n".join(_escape(line) for line in rest.splitlines() if line)
        # Teams shows only a generic "problem with your request" for anything but 200, so a refusal (audited
        # like everywhere) is answered 200 with its reason: the reply is the only way back to the person
        return Reply({"type": "message", "text": shown[:20000]})


def _escape(text: str) -> str:
    """Teams renders message text as markdown with HTML: keep <, > and * literal."""
    return html.escape(text, quote=False).replace("*", "\\*")


def _epoch(raw: str) -> float | None:
    """Seconds of an activity timestamp such as 2017-02-01T21:10:07.437Z (up to 7 fraction digits)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", raw.strip())
    if not match:
        return None
    head, fraction, zone = match.groups()
    try:
        stamp = datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone)).timestamp()
    except ValueError:
        return None
    return stamp + (float("0." + fraction) if fraction else 0.0)
