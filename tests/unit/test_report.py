"""The HTML release report, the live view and their data: built from real runner transitions (recording providers)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from functions.core.events import Command, ImagePushed, MetricSample, Tick
from functions.core.policy import Analysis, ApprovalStage, CanaryStage, CanaryStep, MetricCheck, PromoteStage
from functions.core.state import Actor, AppState, Version
from functions.errors import ConfigError
from functions.local import report
from functions.local.live import LiveView, describe, row_of, short
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import StaticPolicies, canary_policy

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
POLICY = canary_policy(
    stages=(
        CanaryStage(steps=(CanaryStep(20, 10.0), CanaryStep(50, 10.0))),
        ApprovalStage(name="promote"),
        PromoteStage(),
    )
)
POLICY = type(POLICY)(
    **{
        **{f: getattr(POLICY, f) for f in POLICY.__dataclass_fields__},
        "analysis": Analysis(interval=2.0, metrics=(MetricCheck("success-rate", "success-rate", min=0.95),)),
    }
)


def measure(policy: object, release: object) -> tuple[MetricSample, ...]:
    return (MetricSample(name="success-rate", value=0.99, canary_requests=500),)


def run_release() -> tuple[AppState, report.Recorder]:
    """v1 stable, v2 through two steps with verdicts and gate promote approved by alice, sampled as it goes."""
    clock = [T0]
    store = MemoryStore()
    runner = Runner(store, StaticPolicies([POLICY]), RecordingProviders(measure), clock=lambda: clock[0])
    data = report.empty("test", POLICY.app, "2026-11-23T09:00:00.000000Z")
    rec = report.Recorder(data)

    def step(event: object, seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)
        runner.handle(event)
        doc, _ = store.load(POLICY.app)
        rec.state((clock[0] - T0).total_seconds(), AppState.from_json(doc), POLICY)

    repo = POLICY.image.repository
    step(
        ImagePushed(id="p1", app=POLICY.app, target=Version("v1", f"{repo}:v1"), repository=repo, tag="v1"), 1
    )
    step(
        ImagePushed(id="p2", app=POLICY.app, target=Version("v2", f"{repo}:v2"), repository=repo, tag="v2"), 2
    )
    for i in range(14):
        step(Tick(id=f"t{i}", app=POLICY.app), 2)
    step(
        Command(
            id="c1",
            app=POLICY.app,
            action="approve",
            gate="promote",
            actor=Actor("alice", "slack"),
            release="web-1",
            version="v2",
        ),
        1,
    )  # what the button of web-1's gate notice sends
    doc, _ = store.load(POLICY.app)
    return AppState.from_json(doc), rec


def test_the_recorder_keeps_changes_verdicts_and_who_approved() -> None:
    state, rec = run_release()
    data = rec.finish(state, 40.0, {"outcome": "ok"})
    assert state.stable.version == "v2"
    weights = [(s["stable"], s["canary"]) for s in data["states"]]
    assert (80, 20) in weights and (50, 50) in weights and weights[-1] == (100, 0)
    assert len(weights) == len(
        set(map(tuple, [tuple(sorted(s.items())) for s in data["states"]]))
    )  # no repeats
    assert data["verdicts"] and {v["verdict"] for v in data["verdicts"]} == {"pass"}
    assert [(g["gate"], g["decision"], g["user"], g["via"]) for g in data["gates"]] == [
        ("promote", "approved", "alice", "slack")
    ]
    assert any(h["action"] == "approved" and "alice" in h["by"] for h in data["history"])


def test_the_html_has_the_plots_the_verdicts_and_the_approver(tmp_path: Path) -> None:
    state, rec = run_release()
    rec.metrics(
        5.0, {"stableSuccess": 1.0, "canarySuccess": 0.9, "stableMs": 4.0, "canaryMs": 9.0, "denied": 0.0}
    )
    rec.metrics(
        6.0, {"stableSuccess": 1.0, "canarySuccess": None, "stableMs": 4.0, "canaryMs": None, "denied": 3.0}
    )
    rec.milestone(3.0, "push <v2> & co")
    path = report.write_report(
        tmp_path / "r" / "report.html", rec.finish(state, 40.0, {"approved by": "alice"})
    )
    page = path.read_text()
    assert (
        page.startswith("<!doctype html>") and page.count("<svg") == 5
    )  # weights, success, latency, limit, verdicts
    for title in ("Traffic weights", "Success rate", "Latency", "rate limit", "Analysis verdicts"):
        assert title in page
    assert page.count('class="verdict pass"') == len(rec.data["verdicts"]) > 0
    assert "<td>alice</td>" in page and "<td>promote</td>" in page
    assert "push &lt;v2&gt; &amp; co" in page and "<v2>" not in page  # text is escaped
    assert "nan" not in " ".join(re.findall(r'd="([^"]*)"', page)).lower()  # missing samples are gaps
    assert json.loads(path.with_suffix(".json").read_text())["gates"][0]["user"] == "alice"


def test_report_from_stored_state_and_from_saved_data(tmp_path: Path) -> None:
    state, rec = run_release()
    data = report.from_state(state, POLICY)
    assert [(g["gate"], g["user"]) for g in data["gates"]] == [("promote", "alice")]
    assert any(s["canary"] == 50 for s in data["states"])
    saved = report.write_report(tmp_path / "a.html", rec.finish(state, 40.0, {}))
    again = report.report_command(str(saved.with_suffix(".json")), "", "", "", str(tmp_path / "b.html"))
    assert again.read_text().count("<svg") == saved.read_text().count("<svg")
    with pytest.raises(ConfigError, match="--store"):
        report.report_command(None, "", "", "", str(tmp_path / "c.html"))


def test_cli_report_from_a_sqlite_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from functions.cli import main
    from functions.providers.stores.sqlite import SqliteStore

    state, _ = run_release()
    SqliteStore(str(tmp_path / "s.db")).save(POLICY.app, state.to_json(), None)
    out = tmp_path / "from-store.html"
    assert (
        main(["report", "--store", f"sqlite:///{tmp_path / 's.db'}", "--app", POLICY.app, "-o", str(out)])
        == 0
    )
    assert "<td>alice</td>" in out.read_text()
    assert (
        main(["report", "--store", f"sqlite:///{tmp_path / 's.db'}", "--app", "prod/none", "-o", str(out)])
        == 1
    )
    assert "prod/none" in capsys.readouterr().err


def test_the_live_view_prints_changes_when_not_a_tty_and_redraws_in_place_on_one() -> None:
    state, _ = run_release()
    row = row_of(state, POLICY)
    assert (row.stable, row.canary, row.phase) == (100, 0, "succeeded")
    log = io.StringIO()
    view = LiveView(stream=log, tty=False, clock=lambda: 0.0)
    assert view.update([row]) and not view.update([row])  # unchanged: nothing printed
    view.note("hello")
    assert log.getvalue().count("phase=succeeded") == 1 and "hello" in log.getvalue()
    assert "\x1b[" not in log.getvalue()

    screen = io.StringIO()
    tty = LiveView(stream=screen, tty=True, clock=lambda: 0.0)
    tty.update([row], status="step one")
    first = screen.getvalue()
    assert "step one" in first and "\x1b[" in first and "F\x1b[J" not in first
    tty.note("promoted")
    redraw = screen.getvalue()[len(first) :]
    assert redraw.startswith(f"\x1b[{first.count(chr(10))}F\x1b[J") and "promoted" in redraw


def test_describe_and_short_reasons() -> None:
    line = describe(
        "dev.graylane.release.stage.entered",
        {"release": "web-2", "target": {"version": "v2"}, "stage": 1},
        POLICY,
    )
    assert line == "release.stage.entered web-2 v2 -> approval:promote"
    assert short("success-rate: 0.91 < min 0.95 [raw [[...]]]") == "success-rate: 0.91 < min 0.95"
    assert (
        describe("dev.graylane.protection.changed", {"rateLimit": {"average": 40}, "reason": "x"}, None)
        == "protection.changed rate limit 40/s (x)"
    )
