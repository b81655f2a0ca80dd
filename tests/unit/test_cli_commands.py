"""`graylane` release commands: a release driven from the CLI on a local SQLite store, exit codes,
-o json / yaml, and the same commands against the approval API served by uvicorn on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from functions.cli import main
from functions.core.events import ImagePushed
from functions.core.state import Version
from functions.providers.recording import RecordingProviders
from functions.providers.stores import SqliteStore
from functions.runner import Runner
from tests.unit.chatops_helpers import APP, POLICY, REPO


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return local_store(tmp_path, monkeypatch)


def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A SQLite store where flask-1 (v1.1.0) waits at gate go; the CLI arguments that use it."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "flask.yaml").write_text(POLICY)
    db = tmp_path / "state.db"
    from functions.policies import DirectoryPolicies

    runner = Runner(SqliteStore(db), DirectoryPolicies(str(tmp_path / "policies")), RecordingProviders())
    for i, tag in enumerate(("v1.0.0", "v1.1.0")):
        runner.handle(
            ImagePushed(
                id=f"push-{i}", app=APP, target=Version(tag, f"{REPO}:{tag}"), repository=REPO, tag=tag
            )
        )
    monkeypatch.setenv("USER", "dev-on-laptop")
    monkeypatch.delenv("GRAYLANE_SERVER", raising=False)
    return ["--store", f"sqlite:///{db}", "--policies", str(tmp_path / "policies")]


def test_drive_a_release_from_the_cli(local: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", APP, *local]) == 0
    assert "waiting at gate go" in capsys.readouterr().out
    assert main(["approve", APP, "--gate", "promote", *local]) == 1  # not the open gate: refused, and why
    assert "gate promote is not open; waiting at go" in capsys.readouterr().err
    assert main(["approve", APP, "--gate", "go", "--weight", "20", "--wait", *local]) == 0
    out, err = capsys.readouterr()
    assert "approve pro/flask" in out and "waiting" in err  # progress line: it left gate go for the next one
    assert main(["weight", APP, "35", "-o", "json", *local]) == 0  # the canary still takes traffic at promote
    assert json.loads(capsys.readouterr().out)["data"]["release"]["weight"] == 35
    assert main(["approve", APP, "-o", "json", *local]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["outcome"] == "accepted" and body["data"]["release"]["phase"] == "succeeded"
    assert main(["rollback", APP, "v1.0.0", "--reason", "bad", *local]) == 0
    capsys.readouterr()
    assert main(["status", APP, "-o", "yaml", *local]) == 0
    status = yaml.safe_load(capsys.readouterr().out)
    assert status["stable"] == "v1.0.0" and status["release"]["kind"] == "rollback"
    assert main(["history", APP, "--limit", "50", *local]) == 0
    history = capsys.readouterr().out
    assert "gate go approved" in history and "by dev-on-laptop via cli" in history
    assert main(["list", *local]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAMESPACE", "APP", "RELEASE", "PHASE", "STAGE", "WEIGHT", "VERDICT", "AGE"]
    assert table[1].split()[:2] == ["pro", "flask"] and len(table) == 2  # the audit document is not an app


def test_exit_codes(local: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "pro/unknown", *local]) == 1
    assert "no ReleasePolicy for pro/unknown" in capsys.readouterr().err
    assert main(["weight", APP, "150", *local]) == 2
    assert main(["approve", APP, "--param", "oops", *local]) == 2
    assert main(["status"]) == 2
    assert main(["status", APP, "--server", f"http://127.0.0.1:{free_port()}", "--token", "t"]) == 3
    assert "unreachable" in capsys.readouterr().err
    assert main(["status", APP, "--server", "http://127.0.0.1:1"]) == 2  # --server without a token


def test_pause_resume_abort(local: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pause", APP, "--reason", "lunch", *local]) == 0
    assert main(["resume", APP, *local]) == 0
    assert main(["abort", APP, *local]) == 0
    assert main(["status", APP, "-o", "json", *local]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n") :])["release"]["phase"] == "aborted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    import uvicorn

    from functions.approval_api import ApiSettings, api_routes
    from tests.unit.chatops_helpers import world

    w = world(tmp_path)
    w.bus.subscribe("dev.graylane.release.command", w.runner.handle_cloudevent)  # the broker, in process
    app = w.client(*api_routes(w.approvals, ApiSettings({"tok-alice-123": "alice"}))).app
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)


def test_the_same_commands_over_the_api(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    remote = ["--server", server, "--token", "tok-alice-123"]
    assert main(["approve", APP, "--weight", "10", "--wait", *remote]) == 0
    assert "accepted: approve gate go" in capsys.readouterr().out
    assert main(["status", APP, "-o", "json", *remote]) == 0
    assert json.loads(capsys.readouterr().out)["release"]["gate"] == "promote"
    assert main(["list", *remote]) == 0
    assert "pro         flask" in capsys.readouterr().out
    assert main(["rollback", APP, *remote]) == 1  # alice is not in approvers.actions.rollback
    assert "alice may not rollback" in capsys.readouterr().err
    assert main(["history", APP, "-o", "yaml", *remote]) == 0
    assert yaml.safe_load(capsys.readouterr().out)[-1]["action"] == "gate-waiting"
    assert main(["status", APP, "--server", server, "--token", "wrong-token"]) == 1
