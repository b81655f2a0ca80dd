"""What every chat platform module provides, and the helpers they share.

A platform authenticates a delivery over its raw bytes (raising the webhook sources' Unauthenticated /
Forbidden / Malformed), turns it into an `Inbound` (command text + who + where), and renders a command's
`Result` in its own reply format. It never authorises, publishes or touches state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from functions.chatops.authz import Requester
from functions.core.values import value
from functions.providers.sources.base import Unauthenticated

if TYPE_CHECKING:
    from functions.approvals import Result

Headers = Mapping[str, str]  # lower-case names
Query = Mapping[str, str]


@value
class Reply:
    """An HTTP answer in the platform's format."""

    body: Any  # dict (JSON) or str
    media_type: str = "application/json"
    status: int = 200


@value
class Inbound:
    """One parsed delivery: a command to run, or a handshake to answer, or nothing to do."""

    text: str = ""
    requester: Requester | None = None
    delivery: str = ""  # the platform's id of this message: a redelivery maps to the same command event
    handshake: Reply | None = None  # answer this and do nothing else (URL verification)
    context: Mapping[str, Any] | None = None  # what the reply needs (WeCom: the format to answer in)


class Platform(Protocol):
    name: ClassVar[str]

    def authenticate(self, headers: Headers, query: Query, body: bytes, now: float) -> None:
        """Raise Unauthenticated (401) or Forbidden (403); return when the delivery is genuine and fresh."""

    def parse(self, headers: Headers, query: Query, body: bytes) -> Inbound:
        """The command in the delivery; raise Malformed naming the field."""

    def render(self, result: Result, inbound: Inbound) -> Reply:
        """The platform's reply for a command result (usage help included)."""


def require(name: str, what: str, value: str) -> None:
    if not value:
        raise Unauthenticated(f"chat platform {name}: no {what} is configured; it refuses every delivery")


def fresh(name: str, header: str, raw: str, now: float, window: float, unit: float = 1.0) -> float:
    """The timestamp in `raw` (seconds, or milliseconds with unit=1000) if within `window` seconds of now."""
    try:
        stamp = int(raw.strip()) / unit
    except ValueError:
        raise Unauthenticated(
            f"chat platform {name}: the {header} header {raw[:40]!r} is not a timestamp"
        ) from None
    if abs(now - stamp) > window:
        raise Unauthenticated(
            f"chat platform {name}: the {header} {raw[:20]} is more than {int(window)} s from "
            "now; refusing a possible replay (check the clocks)"
        )
    return stamp


def text_of(result: Result) -> str:
    """The plain text of a result: the message, then the detail lines (status, history) if any."""
    lines = [line for line in result.lines if line]
    if result.action == "status" and lines:
        return "\n".join(lines)
    if lines:
        return result.message + "\n" + "\n".join(lines)
    return result.message


def chat_status(result: Result) -> int:
    """Chat platforms show only 200 replies: a mistake is answered 200 with help; a refusal stays 403."""
    return result.status if result.status in (403, 503) else 200
