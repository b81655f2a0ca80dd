"""What a notice says, independent of the chat service: a title, a tone, the facts, the gate buttons.

A notice is the `notify` effect's dict: the emitted event's data plus `type`, `message` (a one-line
headline) and `id` (the effect id, stable across redeliveries so receivers can dedupe).
"""

from __future__ import annotations

from typing import Any, Literal

from functions.core import events as ev

Tone = Literal["good", "info", "attention", "warning", "danger"]

_TITLES: dict[str, tuple[str, Tone]] = {
    ev.RELEASE_STARTED: ("Release started", "info"),
    ev.RELEASE_STEP: ("Step advanced", "info"),
    ev.GATE_WAITING: ("Waiting at a gate", "attention"),
    ev.RELEASE_PROMOTED: ("Promoted", "good"),
    ev.RELEASE_SUCCEEDED: ("Release succeeded", "good"),
    ev.RELEASE_ROLLED_BACK: ("Rolled back", "danger"),
    ev.RELEASE_FROZEN: ("Release frozen", "danger"),
    ev.RELEASE_FAILED: ("Release failed", "danger"),
    ev.RELEASE_PAUSED: ("Release paused", "warning"),
    ev.RELEASE_ABORTED: ("Release aborted", "danger"),
    ev.PROTECTION_CHANGED: ("Protection changed", "warning"),
}


def kind(notice: dict[str, Any]) -> str:
    return str(notice.get("type", ""))


def title(notice: dict[str, Any]) -> str:
    found = _TITLES.get(kind(notice))
    words = found[0] if found else kind(notice).removeprefix(f"{ev.PREFIX}.").replace(".", " ").capitalize()
    app = notice.get("app", "")
    return f"{words}: {app}" if app else words


def tone(notice: dict[str, Any]) -> Tone:
    found = _TITLES.get(kind(notice))
    return found[1] if found else "info"


def headline(notice: dict[str, Any]) -> str:
    return str(notice.get("message") or title(notice))


def facts(notice: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs worth showing, in reading order; absent values are left out."""
    out: list[tuple[str, str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            out.append((label, str(value)))

    add("App", notice.get("app"))
    add("Release", notice.get("release"))
    target, origin = notice.get("target") or {}, notice.get("origin") or {}
    if target.get("version"):
        add("Version", f"{origin.get('version') or '-'} → {target['version']}")
    add("Phase", notice.get("phase"))
    if notice.get("weight") is not None and "release" in notice:
        add("Canary weight", f"{notice['weight']}%")
    add("Gate", notice.get("gate"))
    rate = notice.get("rateLimit")
    if rate:
        add("Rate limit", f"{rate.get('average')}/{rate.get('period')}s (burst {rate.get('burst')})")
    elif kind(notice) == ev.PROTECTION_CHANGED:
        add("Rate limit", "none")
    breaker = notice.get("circuitBreaker")
    if breaker:
        add("Circuit breaker", breaker.get("expression"))
    alerts = notice.get("alerts")
    if alerts:
        add("Alerts", len(alerts))
    add("Reason", notice.get("reason"))
    by = notice.get("by") or {}
    if by.get("user"):
        add("By", f"{by['user']} via {by.get('via') or '?'}")
    return out


def gate_actions(notice: dict[str, Any]) -> list[tuple[str, str]]:
    """For a gate that waits: (label, value) of Approve and Reject; value is the ChatOps command text
    `approve <ns>/<app> <gate> release=<id> version=<target>` (and `reject ...`), pinned to the release
    the notice is about: pressed after another release reached the gate, it is refused, never applied to it.

    functions/chatops/slack.py runs a pressed button's value exactly like the slash command, so this
    format is the contract between the two (tests/unit/test_notifiers.py parses it with chatops' parser).
    """
    gate, app = notice.get("gate"), notice.get("app")
    if kind(notice) != ev.GATE_WAITING or not gate or not app:
        return []
    pin = ""
    if notice.get("release"):
        version = (notice.get("target") or {}).get("version")
        pin = f" release={notice['release']}" + (f" version={version}" if version else "")
    return [("Approve", f"approve {app} {gate}{pin}"), ("Reject", f"reject {app} {gate}{pin}")]


def markdown(notice: dict[str, Any], bullet: str = "- ") -> str:
    """A plain Markdown body (DingTalk, WeCom): headline, then one bold-labelled line per fact, and for a gate
    the exact commands to send the bot (pinned to this release, like the buttons of Slack and Feishu)."""
    lines = [f"**{escape_md(headline(notice))}**", ""]
    lines += [f"{bullet}**{label}**: {escape_md(value)}" for label, value in facts(notice)]
    actions = gate_actions(notice)
    if actions:
        lines += [
            "",
            f"Approve or reject gate **{escape_md(str(notice['gate']))}** of this release by sending:",
        ]
        lines += [f"{bullet}`{value}`" for _, value in actions]  # ids, names and tags never hold a backtick
    return "\n".join(lines)


def escape_md(text: str) -> str:
    return text.replace("*", "\\*").replace("_", "\\_").replace("`", "'")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
