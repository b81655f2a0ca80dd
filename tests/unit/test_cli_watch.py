"""`graylane status -w`: a release followed live, locally and over the approval API, until it ends."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

from functions import cli_watch
from functions.cli import main
from functions.cli_release import Unreachable
from tests.unit.chatops_helpers import APP
from tests.unit.test_cli_commands import local, server  # fixtures


def driving(*steps: Callable[[], object]) -> Callable[[float], None]:
    """A `sleep` that runs the next step of the release each time the watch pauses."""
    todo = list(steps)

    def fake(seconds: float) -> None:
        assert seconds == 0.5
        if not todo:
            raise AssertionError("the watch went on after the release ended")
        todo.pop(0)()

    return fake


def test_watch_follows_the_release_until_it_succeeds(
    local: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        cli_watch,
        "sleep",
        driving(
            lambda: main(["approve", APP, "--gate", "go", "--weight", "20", *local]),
            lambda: main(["weight", APP, "35", *local]),
            lambda: main(["approve", APP, "--gate", "promote", *local]),
        ),
    )
    assert main(["status", APP, "-w", "--interval", "0.5", *local]) == 0
    out = capsys.readouterr().out
    lines = [
        line for line in out.splitlines() if "app=pro/flask" in line
    ]  # not a terminal: one line per change
    assert "phase=waiting" in lines[0] and "gate=go" in lines[0]
    assert any("gate=promote" in line and "weights=65/35" in line for line in lines), out
    assert "phase=succeeded" in lines[-1]
    assert "gate go approved" in out and "by dev-on-laptop via cli" in out  # history notes under the table


def test_watch_exits_1_when_the_release_is_aborted(
    local: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_watch, "sleep", driving(lambda: main(["abort", APP, *local])))
    assert main(["status", APP, "-w", "--interval", "0.5", "-o", "json", *local]) == 1
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"app"')
    ]
    assert [d["release"]["phase"] for d in documents] == ["waiting", "aborted"]


def test_watch_over_the_api(
    server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = ["--server", server, "--token", "tok-alice-123"]
    monkeypatch.setattr(
        cli_watch,
        "sleep",
        driving(
            lambda: main(["approve", APP, "--weight", "10", *remote]),
            lambda: main(["approve", APP, "--gate", "promote", *remote]),
        ),
    )
    assert main(["status", APP, "-w", "--interval", "0.5", *remote]) == 0
    assert "phase=succeeded" in capsys.readouterr().out


def test_watch_redraws_in_place_on_a_terminal_and_rides_out_an_outage() -> None:
    release = {
        "id": "flask-2",
        "version": "v1.1.0",
        "phase": "progressing",
        "stage": "canary",
        "step": 1,
        "weight": 40,
        "gate": "",
        "verdict": "inconclusive",
        "verdictReason": "4 canary requests < 20",
    }
    answers: list[object] = [
        {"app": APP, "routes": {"stable": 60, "canary": 40}, "release": release},
        Unreachable("graylane server http://x: connection refused"),
        {"app": APP, "routes": {"stable": 100, "canary": 0}, "release": {**release, "phase": "rolled-back"}},
    ]

    class Backend:
        def execute(self, app: str, action: str, fields: dict[str, object]) -> tuple[int, dict[str, object]]:
            if action == "history":
                return 200, {"data": []}
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return 200, {"data": answer}

    out = io.StringIO()
    args = type("Args", (), {"app": APP, "output": "table", "interval": 0.5})()
    old = cli_watch.sleep
    cli_watch.sleep = lambda s: None
    try:
        assert cli_watch.watch(args, Backend(), stream=out, tty=True) == 1  # rolled back
    finally:
        cli_watch.sleep = old
    text = out.getvalue()
    assert "\x1b[" in text and "canary step 2" in text and "inconclusive (4 canary requests < 20)" in text
    assert "unreachable, retrying" in text and "rolled-back" in text


def test_watch_of_an_unknown_app_is_1(local: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "pro/unknown", "-w", *local]) == 1
    assert "no ReleasePolicy for pro/unknown" in capsys.readouterr().err
    assert main(["status", APP, "-w", "--interval", "0", *local]) == 2
