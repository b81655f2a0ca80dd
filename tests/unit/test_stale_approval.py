"""An approval belongs to one release (issue 11, item 2).

Every command names the release (and the target version) it is for: buttons carry it, a typed chat command
and the CLI resolve it when they are sent, and decide() refuses a command for any other release, with a
reason the sender sees and the history and audit keep. The scenario of the issue: `approve ns/app promote`
sent while web-1 (v2) waited at `promote` must not make web-2 (v3) stable when v3 reaches the same gate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from functions import catalog
from functions.bus import MemoryBus
from functions.chatops.parse import parse
from functions.chatops.routes import chatops_routes
from functions.chatops.slack import Slack
from functions.cli import main
from functions.core import events as ev
from functions.core.events import Command, ImagePushed
from functions.core.state import Actor, Phase, Version
from functions.errors import Reject
from functions.providers.notifiers.dingtalk import DingTalkNotifier
from functions.providers.notifiers.feishu import FeishuNotifier
from functions.providers.notifiers.slack import SlackNotifier
from functions.providers.notifiers.teams import TeamsNotifier
from functions.providers.notifiers.wecom import WeComNotifier
from tests.unit.chatops_helpers import APP, REPO, World, world
from tests.unit.machine_helpers import Driver, seed_flow, types
from tests.unit.test_chatops_slack import NOW, SECRET, signed, slash
from tests.unit.test_cli_commands import local_store

ALICE = Actor(user="alice", via="slack", channel="#releases")


# -- decide() -------------------------------------------------------------------------------------------


def _at_promote(d: Driver) -> None:
    """Drive the seed flow's current release to its promote gate (preview, canary gate, two steps)."""
    d.tick()  # preview deployed
    d.command("approve", gate="canary", params={"weight": 20})
    from tests.unit.machine_helpers import PASS

    for _ in range(20):
        if d.rel.phase == Phase.WAITING and d.rel.gate == "promote":
            return
        d.tick(10, PASS)
    raise AssertionError(f"{d.rel.id} did not reach gate promote: {d.rel.phase} {d.rel.gate}")


def test_stale_approval_a_delayed_approve_for_web_1_does_not_promote_web_2() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    _at_promote(d)
    late = Command(
        id="slack-late-1",
        app=d.state.app,
        action="approve",
        actor=ALICE,
        gate="promote",
        release="web-1",
        version="v2",
    )
    d.push("v3")  # web-1 is superseded before the approval arrives
    _at_promote(d)
    assert d.rel.id == "web-2" and d.rel.gate == "promote"

    out = d.send(late)

    assert d.rel.id == "web-2" and d.rel.phase == Phase.WAITING and d.rel.gate == "promote"
    assert d.state.stable.version == "v1" and out.effects == ()
    entry = d.state.history[-1]
    assert entry.action == "ignored" and entry.event_id == "slack-late-1" and entry.by == ALICE
    assert "release web-1" in entry.reason and "web-2 (v3)" in entry.reason
    assert types(out.events) == ["command.rejected"]
    rejected = out.events[0].data
    assert (
        rejected["release"] == "web-1"
        and rejected["actor"]["user"] == "alice"
        and "web-2" in rejected["reason"]
    )
    d.command("approve", gate="promote")  # the helper names the current release: that one passes
    assert d.state.stable.version == "v3" and d.rel.phase == Phase.SUCCEEDED


def test_stale_approval_the_version_must_be_the_releases_target_and_a_release_must_be_named() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.tick()
    wrong = d.command("approve", gate="canary", params={"weight": 20}, release="web-1", version="v9")
    assert d.rel.phase == Phase.WAITING and "version v9" in d.state.history[-1].reason
    assert types(wrong.events) == ["command.rejected"]
    unnamed = d.command("abort", release="")
    assert d.rel.phase == Phase.WAITING and "names no release" in d.state.history[-1].reason
    assert types(unnamed.events) == ["command.rejected"]
    d.command("approve", gate="canary", params={"weight": 20}, release="web-1", version="v2")
    assert d.rel.phase == Phase.PROGRESSING


def test_stale_approval_a_rollback_after_a_newer_release_started_is_refused() -> None:
    d = Driver.with_stable(seed_flow())
    d.push("v2")
    d.command("abort")
    d.push("v3")  # web-2 starts; a rollback typed against web-1 arrives now
    d.command("rollback", release="web-1", version="v1")
    assert d.rel.id == "web-2" and d.rel.active and "web-1" in d.state.history[-1].reason


# -- the catalog ----------------------------------------------------------------------------------------------


def test_stale_approval_command_events_carry_the_release() -> None:
    cmd = Command(
        id="c1", app=APP, action="approve", actor=ALICE, gate="go", release="flask-3", version="v1.2.0"
    )
    event = catalog.from_domain(cmd, source="/graylane/approvals/slack")
    catalog.validate(event)
    assert event.data["release"] == "flask-3" and event.data["version"] == "v1.2.0"
    assert event["graylanerelease"] == "flask-3"
    assert catalog.to_domain(event) == cmd
    data = {"action": "approve", "actor": {"user": "a", "via": "api"}, "release": "flask-3"}
    clash = catalog.make_event(ev.RELEASE_COMMAND, APP, data, id="c2", release="flask-2")
    with pytest.raises(Reject, match="graylanerelease"):
        catalog.to_domain(clash)
    with pytest.raises(Reject, match="data.release"):
        catalog.to_domain(
            catalog.make_event(ev.RELEASE_COMMAND, APP, {**data, "release": "not a release"}, id="c3")
        )
    for name, example in catalog.examples_for(ev.RELEASE_COMMAND).items():
        parsed = catalog.to_domain(example)
        assert isinstance(parsed, Command) and parsed.release, f"example {name} names no release"


# -- buttons and typed commands --------------------------------------------------------------------------------


def _gate_notice(release: str, version: str, gate: str = "go") -> dict[str, Any]:
    return {
        "type": ev.GATE_WAITING,
        "release": release,
        "app": APP,
        "phase": "waiting",
        "gate": gate,
        "target": {"version": version, "image": f"{REPO}:{version}"},
        "origin": {"version": "v1.0.0"},
        "message": f"{APP} {version} waiting at gate {gate}",
        "id": f"{release}/3/0-notify",
    }


def test_stale_approval_every_notifier_button_names_its_release() -> None:
    notice = _gate_notice("flask-4", "v1.3.0")
    slack = SlackNotifier("https://hooks.slack.com/services/T/B/x").payload(notice)
    [actions] = [b for b in slack["blocks"] if b["type"] == "actions"]
    values = [b["value"] for b in actions["elements"]]
    assert values == [
        "approve pro/flask go release=flask-4 version=v1.3.0",
        "reject pro/flask go release=flask-4 version=v1.3.0",
    ]
    assert [(p.action, p.gate, p.release, p.version) for p in map(parse, values)] == [
        ("approve", "go", "flask-4", "v1.3.0"),
        ("reject", "go", "flask-4", "v1.3.0"),
    ]
    card = FeishuNotifier("https://open.feishu.cn/open-apis/bot/v2/hook/x").payload(notice)["card"]
    buttons = [a for e in card["elements"] if e.get("tag") == "action" for a in e["actions"]]
    assert [b["value"]["command"] for b in buttons] == values
    for notifier in (
        DingTalkNotifier("https://oapi.dingtalk.com/robot/send?access_token=t"),
        WeComNotifier("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
        TeamsNotifier("https://example.webhook.office.com/workflows/x", approval_url=""),
    ):
        text = json.dumps(notifier.payload(notice), ensure_ascii=False)
        assert all(v in text for v in values), text


def _waiting_world(tmp: Path) -> tuple[World, MemoryBus]:
    """flask-1 (v1.1.0) waits at gate go; the runner publishes what it emits on `emitted`."""
    w = world(tmp)
    emitted = MemoryBus()
    w.runner.bus = emitted
    return w, emitted


def _press(w: World, value: str, action_ts: str) -> Any:
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH", "username": "ops-lead"},
        "channel": {"id": "C1", "name": "releases"},
        "trigger_id": f"t-{action_ts}",
        "actions": [{"action_id": "graylane-approve", "value": value, "action_ts": action_ts}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    app = w.client(*chatops_routes({"slack": Slack(SECRET)}, w.approvals, now=lambda: NOW))
    return app.post("/chatops/slack/interactive", content=body, headers=signed(body))


def test_stale_approval_an_old_slack_button_cannot_ship_the_next_version(tmp_path: Path) -> None:
    w, _ = _waiting_world(tmp_path)
    old = SlackNotifier("https://hooks.slack.com/services/T/B/x").payload(_gate_notice("flask-1", "v1.1.0"))
    [old_approve, _reject] = [b for b in old["blocks"] if b["type"] == "actions"][0]["elements"]
    w.runner.handle(
        ImagePushed(
            id="push-2", app=APP, target=Version("v1.2.0", f"{REPO}:v1.2.0"), repository=REPO, tag="v1.2.0"
        )
    )  # flask-2 supersedes flask-1, waits at go too
    state = w.approvals.state(APP)
    assert state.release is not None and state.release.id == "flask-2" and state.release.gate == "go"

    response = _press(w, old_approve["value"], "171.1")

    assert response.status_code == 200 and response.json()["response_type"] == "ephemeral"
    text = response.json()["text"]
    assert "refused" in text and "flask-1" in text and "flask-2 (v1.2.0)" in text
    w.deliver()  # whatever was published reaches the runner
    state = w.approvals.state(APP)
    assert state.release is not None and state.release.id == "flask-2" and state.release.gate == "go"
    assert state.release.phase == Phase.WAITING and not state.release.gates
    [record] = w.audit.records
    assert (
        record.outcome == "refused"
        and record.detail.get("release") == "flask-1"
        and "flask-2" in record.reason
    )

    fresh = SlackNotifier("https://hooks.slack.com/services/T/B/x").payload(_gate_notice("flask-2", "v1.2.0"))
    new_approve = [b for b in fresh["blocks"] if b["type"] == "actions"][0]["elements"][0]
    assert _press(w, new_approve["value"], "171.2").status_code == 200
    [event] = w.commands()
    assert event.data["release"] == "flask-2" and event.data["version"] == "v1.2.0"
    w.deliver()
    state = w.approvals.state(APP)
    assert state.release is not None and state.release.gate == "promote"


def test_stale_approval_a_typed_command_is_pinned_when_sent_and_echoed(tmp_path: Path) -> None:
    w, _ = _waiting_world(tmp_path)
    body = slash("approve pro/flask go 30")
    app = w.client(*chatops_routes({"slack": Slack(SECRET)}, w.approvals, now=lambda: NOW))
    reply = app.post("/chatops/slack", content=body, headers=signed(body)).json()
    assert "release flask-1 (v1.1.0)" in reply["text"], reply["text"]
    [event] = w.commands()
    assert event.data["release"] == "flask-1" and event.data["version"] == "v1.1.0"
    w.runner.handle(
        ImagePushed(
            id="push-2", app=APP, target=Version("v1.2.0", f"{REPO}:v1.2.0"), repository=REPO, tag="v1.2.0"
        )
    )  # flask-2 arrives before the broker delivers it
    w.deliver()
    state = w.approvals.state(APP)
    assert state.release is not None and state.release.id == "flask-2" and state.release.gate == "go"
    ignored = [h for h in state.history if h.event_id == event["id"]]
    assert [h.action for h in ignored] == ["ignored"] and "flask-1" in ignored[0].reason


def test_stale_approval_the_api_resolves_the_release_and_refuses_another(tmp_path: Path) -> None:
    from functions.approval_api import ApiSettings, api_routes

    w, _ = _waiting_world(tmp_path)
    api = w.client(*api_routes(w.approvals, ApiSettings({"tok-alice-123": "alice"})))
    headers = {"Authorization": "Bearer tok-alice-123"}
    stale = api.post(
        f"/api/v1/apps/{APP}/commands",
        headers=headers,
        json={"action": "approve", "gate": "go", "release": "flask-0"},
    )
    assert (
        stale.status_code == 409 and "flask-0" in stale.json()["error"] and "flask-1" in stale.json()["error"]
    )
    assert w.commands() == [] and w.audit.records[-1].outcome == "refused"
    ok = api.post(f"/api/v1/apps/{APP}/commands", headers=headers, json={"action": "approve", "gate": "go"})
    assert (
        ok.status_code == 202
        and ok.json()["release"] == "flask-1"
        and "flask-1 (v1.1.0)" in ok.json()["message"]
    )
    [event] = w.commands()
    assert event.data["release"] == "flask-1"


# -- the CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return local_store(tmp_path, monkeypatch)


def test_stale_approval_the_cli_resolves_prints_and_sends_the_release(
    local: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["approve", APP, "--gate", "go", "--release", "flask-9", *local]) == 1
    err = capsys.readouterr().err
    assert "flask-9" in err and "flask-1 (v1.1.0)" in err, err
    assert main(["approve", APP, "--gate", "go", "-o", "json", *local]) == 0
    out, err = capsys.readouterr()
    assert "release flask-1 (v1.1.0)" in err, err  # resolved and printed before it is sent
    body = json.loads(out)
    assert body["outcome"] == "accepted" and body["data"]["release"]["gate"] == "promote"
    assert main(["history", APP, "-o", "json", *local]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [h["release"] for h in history if h["action"] == "approved"] == ["flask-1"]
