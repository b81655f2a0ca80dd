"""Authorisation rules and chat command parsing (both pure)."""

from __future__ import annotations

import pytest

from functions.chatops.authz import Requester, authorize
from functions.chatops.parse import UsageError, parse
from functions.core.policy import Allow, Approvers

APPROVERS = Approvers(
    default=Allow(users=("ops-lead", "slack:U999"), channels=("#releases",)),
    gates=(("promote", Allow(users=("alice",))), ("canary-weight", Allow(channels=("#product",)))),
    actions=(("rollback", Allow(users=("oncall",))),),
)


def who(user: str, via: str = "slack", channel: str = "#releases", ids: tuple[str, ...] = ()) -> Requester:
    return Requester(user=user, via=via, channel=channel, user_ids=ids)


@pytest.mark.parametrize(
    "requester, action, gate, allowed, fragment",
    [
        (who("ops-lead"), "pause", "", True, "approvers.default"),
        (who("OPS-LEAD", channel="releases"), "pause", "", True, "approvers.default"),
        (who("mallory"), "pause", "", False, "may not pause"),
        (who("ops-lead", channel="#random"), "pause", "", False, "not allowed from #random"),
        (
            who("ops-lead", via="api", channel=""),
            "pause",
            "",
            True,
            "approvers.default",
        ),  # no channel outside chat
        (who("alice"), "approve", "promote", True, "approvers.gates.promote"),
        (who("ops-lead"), "approve", "promote", False, "approvers.gates.promote"),
        (
            who("anyone", channel="#product"),
            "approve",
            "canary-weight",
            True,
            "approvers.gates.canary-weight",
        ),
        (
            who("anyone", via="api", channel=""),
            "approve",
            "canary-weight",
            False,
            "only allowed from the channels",
        ),
        (who("ops-lead"), "rollback", "", False, "approvers.actions.rollback"),
        (who("oncall", channel="#anywhere"), "rollback", "", True, "approvers.actions.rollback"),
        (who("someone", ids=("U999",)), "abort", "", True, "approvers.default"),
        (who("someone", via="dingtalk", ids=("U999",)), "abort", "", False, "may not abort"),  # slack: prefix
        (who("mallory"), "status", "", True, "only reads"),
    ],
)
def test_rules(requester: Requester, action: str, gate: str, allowed: bool, fragment: str) -> None:
    verdict = authorize(APPROVERS, requester, action, gate)
    assert verdict.allowed is allowed and fragment in (verdict.rule + " " + verdict.reason)


def test_promote_needs_every_skipped_gate_with_its_own_rule() -> None:
    assert authorize(APPROVERS, who("ops-lead"), "promote").allowed
    verdict = authorize(APPROVERS, who("ops-lead"), "promote", skipped_gates=("ab-test", "promote"))
    assert not verdict.allowed and "promote past gate promote" in verdict.reason


def test_no_approvers_means_nobody() -> None:
    verdict = authorize(Approvers(), who("root", via="api", channel=""), "abort")
    assert not verdict.allowed and "nobody may abort" in verdict.reason


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/graylane approve pro/flask promote", ("approve", "pro/flask", "promote", None, {}, "", "")),
        ("approve pro/flask canary-weight 30", ("approve", "pro/flask", "canary-weight", 30, {}, "", "")),
        (
            "@graylane approve pro/flask weight=30 size=2",
            ("approve", "pro/flask", "", 30, {"size": 2}, "", ""),
        ),
        ("reject pro/flask ab-test not today", ("reject", "pro/flask", "ab-test", None, {}, "", "not today")),
        ("weight pro/flask 30%", ("weight", "pro/flask", "", 30, {}, "", "")),
        (
            "rollback pro/flask v1.2.0 -- bad build",
            ("rollback", "pro/flask", "", None, {}, "v1.2.0", "bad build"),
        ),
        (
            "pause pro/flask checking the dashboards",
            ("pause", "pro/flask", "", None, {}, "", "checking the dashboards"),
        ),
    ],
)
def test_parse(text: str, expected: tuple[object, ...]) -> None:
    c = parse(text)
    assert (c.action, c.app, c.gate, c.weight, c.params, c.version, c.reason) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "commands (APP is namespace/name)"),
        ("deploy pro/flask", "unknown command 'deploy'"),
        ("approve", "approve needs an app"),
        ("approve flask", "not an app; expected namespace/name"),
        ("weight pro/flask", "the weight is missing"),
        ("weight pro/flask 130", "weight 130 is not allowed; expected 0..100"),
        ("weight pro/flask lots", "is not a number"),
        ("rollback pro/flask v1 v2", "unexpected 'v2'"),
        ("promote pro/flask now please", "a reason goes after --"),
        ("history pro/flask 999", "count 999 is not allowed"),
    ],
)
def test_parse_errors_name_the_problem_and_the_usage(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse(text)
    assert parse("history pro/flask 5").limit == 5
