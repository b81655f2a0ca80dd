"""Who may run which command on an app: the policy's approvers against a requester. Pure, no I/O.

Rules (the policy model: `approvers.default`, `.gates`, `.actions`, each `{users, channels}`):
- approve/reject use the rule of the gate (named, or the one being waited on), else the action's rule,
  else the default; promote also needs the rule of every gate it would skip that has its own rule;
  every other action uses the action's rule, else the default;
- a rule with users lets those users in; with channels, only from those channels; a rule with neither
  lets nobody in (fail closed: an app without approvers takes no commands from chat or the API);
- channels only bind chat platforms: API and CLI requests carry no channel and are judged by user;
- an entry matches any of the requester's identities (`U024BE7LH`, `ops-lead`), with or without the
  platform prefix (`slack:U024BE7LH` matches on Slack only); channel names match with or without `#`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from functions.core.events import MUTATING_ACTIONS
from functions.core.policy import Allow, Approvers
from functions.core.state import Actor
from functions.core.values import value

CHAT_PLATFORMS = ("slack", "dingtalk", "feishu", "wecom", "teams")
GATED_ACTIONS = ("approve", "reject")


@value
class Requester:
    """Who asks, as a platform identified them."""

    user: str  # the identity recorded in history (a stable id, or the API token's user)
    via: str  # cli | api | console | slack | dingtalk | feishu | wecom | teams
    channel: str = ""  # the channel recorded in history
    user_ids: tuple[str, ...] = ()  # further identities of the same user (id and handle)
    channel_ids: tuple[str, ...] = ()  # further identities of the channel (id and name)
    display: str = ""  # a human name for replies; never used to authorise (it is user-editable)

    @property
    def actor(self) -> Actor:
        return Actor(user=self.user[:256], via=self.via, channel=self.channel[:256])

    @property
    def shown(self) -> str:
        return self.display or self.user


@value
class Verdict:
    allowed: bool
    reason: str  # why not, or which rule let the requester in
    rule: str = ""  # approvers.default | approvers.gates.<g> | approvers.actions.<a>


def rule_for(approvers: Approvers, action: str, gate: str = "") -> tuple[str, Allow]:
    """(path, rule) that governs `action` (on `gate` for approve/reject)."""
    gates, actions = dict(approvers.gates), dict(approvers.actions)
    if action in GATED_ACTIONS and gate in gates:
        return f"approvers.gates.{gate}", gates[gate]
    if action in actions:
        return f"approvers.actions.{action}", actions[action]
    return "approvers.default", approvers.default


def authorize(
    approvers: Approvers, requester: Requester, action: str, gate: str = "", skipped_gates: Sequence[str] = ()
) -> Verdict:
    """May `requester` run `action` (on `gate`)? `skipped_gates`: the gates a promote would pass."""
    if action not in MUTATING_ACTIONS:
        return Verdict(True, f"{action} only reads")
    path, rule = rule_for(approvers, action, gate)
    verdict = _check(path, rule, requester, _what(action, gate))
    if not verdict.allowed or action != "promote":
        return verdict
    gates = dict(approvers.gates)
    for skipped in skipped_gates:
        if skipped in gates:
            inner = _check(
                f"approvers.gates.{skipped}", gates[skipped], requester, f"promote past gate {skipped}"
            )
            if not inner.allowed:
                return inner
    return verdict


def _what(action: str, gate: str) -> str:
    return f"{action} gate {gate}" if action in GATED_ACTIONS and gate else action


def _check(path: str, rule: Allow, who: Requester, what: str) -> Verdict:
    if not rule.users and not rule.channels:
        return Verdict(False, f"nobody may {what}: {path} lists no users or channels", path)
    if rule.users and not _matches(rule.users, who.via, (who.user, *who.user_ids), _norm_user):
        return Verdict(
            False, f"{who.shown} may not {what}; allowed users ({path}): {', '.join(rule.users)}", path
        )
    if rule.channels and who.via in CHAT_PLATFORMS:
        if not _matches(rule.channels, who.via, (who.channel, *who.channel_ids), _norm_channel):
            where = who.channel or "this conversation"
            return Verdict(
                False,
                f"{what} is not allowed from {where}; allowed channels ({path}): {', '.join(rule.channels)}",
                path,
            )
    elif rule.channels and not rule.users:
        return Verdict(
            False, f"{what} is only allowed from the channels {', '.join(rule.channels)} ({path})", path
        )
    return Verdict(True, f"allowed by {path}", path)


def _norm_user(value: str) -> str:
    return value.strip().lstrip("@").lower()


def _norm_channel(value: str) -> str:
    return value.strip().lstrip("#").lower()


def _matches(
    entries: Sequence[str], via: str, identities: Sequence[str], normalise: Callable[[str], str]
) -> bool:
    mine = {normalise(i) for i in identities if i}
    for entry in entries:
        platform, sep, rest = entry.partition(":")
        if sep and platform in (*CHAT_PLATFORMS, "api", "cli", "console"):
            if platform == via and normalise(rest) in mine:
                return True
        elif normalise(entry) in mine:
            return True
    return False
