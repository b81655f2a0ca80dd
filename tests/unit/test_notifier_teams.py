"""Microsoft Teams notifications: an Adaptive Card in the Workflows/connector message envelope, posted to a real
local HTTP server; a waiting gate shows the commands to type and, with an approval page, Approve / Reject links."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from functions.chatops.parse import parse
from functions.core import events as ev
from functions.core.policy import NotifySpec
from functions.errors import ProviderUnavailable
from functions.providers.notifiers import make_notifier
from functions.providers.notifiers._notice import gate_actions
from functions.providers.notifiers.teams import APPROVAL_URL_ENV, TeamsNotifier
from tests.unit.test_notifiers import FAST, GATE, Capture, capture, notice  # capture: a fixture

PAGE = "https://graylane.example.com/console/apps/{namespace}/{name}?gate={gate}&release={release}&action={action}"


def card_of(capture: Capture, index: int = 0) -> dict:
    body = capture.requests[index].json()
    assert body["type"] == "message" and len(body["attachments"]) == 1
    attachment = body["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    return card


def test_teams_card_for_a_rollback_has_title_facts_and_no_actions(capture: Capture) -> None:
    TeamsNotifier(capture.url(), delivery=FAST, approval_url="").send(notice())
    card = card_of(capture)
    title, headline, facts, footer = card["body"]
    assert title["text"] == "Rolled back: prod/web" and title["color"] == "Attention"
    assert headline["text"] == "prod/web v2 release rolledback at 20%: analysis failed"
    assert {f["title"]: f["value"] for f in facts["facts"]}["Version"] == "v1 → v2"
    assert footer["text"] == "graylane · web-7/12/3-notify" and "actions" not in card


def test_teams_gate_card_shows_the_commands_the_outgoing_webhook_runs(capture: Capture) -> None:
    TeamsNotifier(capture.url(), delivery=FAST, approval_url="").send(GATE)
    card = card_of(capture)
    commands = [b["text"] for b in card["body"] if b.get("fontType") == "Monospace"]
    assert commands == [
        value for _, value in gate_actions(GATE)
    ]  # the buttons' contract, release pin included
    assert commands[0].startswith("approve prod/web promote") and commands[1].startswith(
        "reject prod/web promote"
    )
    assert [(c.action, c.app, c.gate) for c in map(parse, commands)] == [
        ("approve", "prod/web", "promote"),
        ("reject", "prod/web", "promote"),
    ]
    assert "actions" not in card  # no approval page configured: no button pretends to work


def test_teams_gate_card_links_approve_and_reject_to_the_approval_page(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(APPROVAL_URL_ENV, PAGE)
    make_notifier((NotifySpec("teams", url=capture.url()),), delivery=FAST).send(GATE)
    actions = card_of(capture)["actions"]
    assert [(a["type"], a["title"], a["style"]) for a in actions] == [
        ("Action.OpenUrl", "Approve", "positive"),
        ("Action.OpenUrl", "Reject", "destructive"),
    ]
    approve = urlsplit(actions[0]["url"])
    assert approve.path == "/console/apps/prod/web"
    assert parse_qs(approve.query) == {"gate": ["promote"], "release": ["web-7"], "action": ["approve"]}
    assert parse_qs(urlsplit(actions[1]["url"]).query)["action"] == ["reject"]


def test_teams_link_fields_are_url_encoded(capture: Capture) -> None:
    odd = {**GATE, "gate": "a&b=c", "release": "web 7"}
    TeamsNotifier(capture.url(), delivery=FAST, approval_url=PAGE).send(odd)
    url = card_of(capture)["actions"][0]["url"]
    assert "gate=a%26b%3Dc" in url and "release=web%207" in url


def test_teams_connector_delivery_failure_text_is_a_failure_and_429_is_retried(capture: Capture) -> None:
    capture.script = [
        (
            200,
            b"Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP "
            b"error 429 with ContextId x",
        )
    ]
    TeamsNotifier(capture.url(), delivery=FAST, approval_url="").send(notice())
    assert len(capture.requests) == 2  # retried once, then delivered
    capture.requests.clear()
    capture.script = [(200, b"Webhook message delivery failed with error: Bad payload")]
    with pytest.raises(ProviderUnavailable, match="delivery failed"):
        TeamsNotifier(capture.url(), delivery=FAST, approval_url="").send(notice())
    assert len(capture.requests) == 1
    capture.script = [(202, b"")]  # Workflows answer 202 Accepted
    TeamsNotifier(capture.url(), delivery=FAST, approval_url="").send(notice(ev.RELEASE_SUCCEEDED))


def test_teams_is_a_notify_kind_of_the_policy() -> None:
    from functions.core.policy_parse import parse_policy

    doc = {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "image": {"repository": "r.example.com/web"},
            "router": {"provider": "recording"},
            "stages": [{"canary": {"steps": [{"weight": 10}]}}],
            "notify": [{"kind": "teams", "secret": "teams-releases"}],
        },
    }
    assert parse_policy(doc).notify == (NotifySpec("teams", secret="teams-releases"),)
