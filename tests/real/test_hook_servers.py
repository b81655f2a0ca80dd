"""Release hooks against real HTTP servers, through graylane's real runner (issue 14, item 4).

Each hook server is a real threaded HTTP server on loopback scripted to say yes (200), no (403), fail (500),
fail then recover, or not answer in time. The runner asks them exactly as it does in production (signed
POSTs, timeouts, retries), hands their answers to decide(), and the release waits, moves on, counts a
failure or rolls back. The load hook runs Debian's hey (the local load test) against a canary that gets no
other traffic, and its analysis passes only because of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from functions.core.events import ImagePushed, MetricSample, Tick
from functions.core.policy import (
    Analysis,
    CanaryStage,
    CanaryStep,
    Hook,
    ImageRule,
    LoadTest,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
)
from functions.core.state import AppState, Phase, Release, Version
from functions.local.providers import LocalConfig, ProcessWorkloads
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import StaticPolicies

pytestmark = pytest.mark.real
SECRET = "s3cret-hook-key"
APP = "shop/web"


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HookServer:
    """`script[path]` answers each call: a status, ("sleep", seconds) or a function of the call number."""

    script: dict[str, Callable[[int], Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def of(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    def start(self) -> HookServer:
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hooks.lock:
                    hooks.calls.append(
                        Call(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    n = len([c for c in hooks.calls if c.path == self.path])
                answer = hooks.script.get(self.path, lambda n: 200)(n)
                if isinstance(answer, tuple):  # ("sleep", seconds): too slow to be waited for
                    time.sleep(answer[1])
                    answer = 200
                try:
                    self.send_response(answer)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok" if answer < 300 else b"no")
                except OSError:
                    pass  # the caller gave up waiting

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(name="hooks")
def hooks_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[HookServer]:
    monkeypatch.setenv("GRAYLANE_SECRET_HOOKS", SECRET)
    server = HookServer().start()
    yield server
    server.stop()


def policy(*hooks: Hook, pause: float = 60.0, **changes: Any) -> Policy:
    return Policy(
        name="web",
        namespace="shop",
        image=ImageRule(repository="registry.example.com/shop/web"),
        router=RouterSpec(provider="recording"),
        stages=(CanaryStage(steps=(CanaryStep(20, pause), CanaryStep(50, pause))), PromoteStage()),
        hooks=hooks,
        **{
            "analysis": Analysis(
                interval=10.0, metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),)
            ),
            **changes,
        },
    )


def hook(server: HookServer, kind: str, name: str, **kw: Any) -> Hook:
    return Hook(name=name, type=kind, url=server.url(f"/{name}"), secret="hooks", **kw)  # type: ignore[arg-type]


@dataclass
class Run:
    runner: Runner
    store: MemoryStore
    clock: list[datetime]
    providers: RecordingProviders
    n: int = 0

    def state(self) -> AppState:
        doc, _ = self.store.load(APP)
        assert doc is not None
        return AppState.from_json(doc)

    def push(self, tag: str) -> None:
        repo = "registry.example.com/shop/web"
        self.runner.handle(
            ImagePushed(
                id=f"push-{tag}", app=APP, target=Version(tag, f"{repo}:{tag}"), repository=repo, tag=tag
            )
        )

    def tick(self, seconds: float = 10.0, event_id: str = "") -> Any:
        self.clock[0] += timedelta(seconds=seconds)
        self.n += 1
        return self.runner.handle(Tick(id=event_id or f"tick-{self.n}", app=APP))[0]


def run(p: Policy, providers: RecordingProviders | None = None) -> Run:
    clock = [datetime(2026, 12, 1, 9, 0, tzinfo=UTC)]
    store = MemoryStore()
    providers = providers or RecordingProviders()
    r = Run(Runner(store, StaticPolicies([p]), providers, clock=lambda: clock[0]), store, clock, providers)
    r.push("v1")
    return r


def signed(call: Call) -> bool:
    want = "sha256=" + hmac.new(SECRET.encode(), call.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(call.headers.get("x-graylane-signature", ""), want)


def test_hook_confirm_rollout_server_says_no_then_yes_and_every_tick_asks_again(hooks: HookServer) -> None:
    hooks.script["/freeze"] = lambda n: 403 if n <= 3 else 200
    r = run(policy(hook(hooks, "confirm-rollout", "freeze")))
    r.push("v2")
    assert r.state().release.gate == "hook:confirm-rollout"  # type: ignore[union-attr]
    for _ in range(3):
        r.tick()
        assert r.state().release.phase == Phase.WAITING  # type: ignore[union-attr]
    r.tick()
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.PROGRESSING and rel.weight == 20
    calls = hooks.of("/freeze")
    assert len(calls) == 4 and all(signed(c) for c in calls)
    assert [c.headers["x-graylane-delivery"] for c in calls] == [f"tick-{i}/freeze" for i in (1, 2, 3, 4)]
    assert {c.headers["x-graylane-event"] for c in calls} == {"hook.confirm-rollout"}
    body = calls[0].json()
    assert (body["release"], body["type"], body["target"]["version"], body["app"]) == (
        "web-1",
        "confirm-rollout",
        "v2",
        APP,
    )
    held = [h for h in r.state().history if h.action == "hook-held"]
    assert len(held) == 1 and "HTTP 403" in held[0].reason  # the same "no" is recorded once


def test_hook_retries_a_failing_call_within_one_tick_and_a_redelivered_tick_asks_nothing(
    hooks: HookServer,
) -> None:
    hooks.script["/smoke"] = lambda n: 503 if n <= 2 else 200
    r = run(policy(hook(hooks, "pre-rollout", "smoke", retries=2, timeout=2.0)))
    r.push("v2")
    r.tick(event_id="tick-a")
    rel = r.state().release
    assert (
        rel is not None and rel.phase == Phase.PROGRESSING and rel.failures == 0
    )  # yes at the third attempt
    calls = hooks.of("/smoke")
    assert len(calls) == 3 and {c.headers["x-graylane-delivery"] for c in calls} == {"tick-a/smoke"}
    outcome = r.tick(0, event_id="tick-a")  # the broker delivers the same tick again
    assert outcome.status == "duplicate" and len(hooks.of("/smoke")) == 3


def test_hook_that_times_out_fails_the_pre_rollout_and_the_release_rolls_back(hooks: HookServer) -> None:
    hooks.script["/slow"] = lambda n: ("sleep", 2.0)
    r = run(
        policy(
            hook(hooks, "pre-rollout", "slow", retries=1, timeout=0.3),
            analysis=Analysis(
                interval=10.0,
                failure_limit=2,
                metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),),
            ),
        )
    )
    r.push("v2")
    started = time.monotonic()
    r.tick()
    spent = time.monotonic() - started
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.WAITING and rel.failures == 1 and spent < 1.5
    assert "timed out" in rel.hook_answer or "TimeoutError" in rel.hook_answer, rel.hook_answer
    r.tick()
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.ROLLED_BACK and "pre-rollout hook failed" in rel.reason
    assert r.providers.router_.routes[f"/{APP}"].canary == 0  # no traffic ever reached the canary


def test_hook_rollout_failure_fails_the_analysis_and_post_rollout_is_told(hooks: HookServer) -> None:
    hooks.script["/checks"] = lambda n: 200 if n == 1 else 500
    r = run(policy(hook(hooks, "rollout", "checks", retries=0), hook(hooks, "post-rollout", "report")))
    r.push("v2")
    r.tick()
    assert r.state().release.phase == Phase.PROGRESSING  # type: ignore[union-attr]
    r.tick()
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.ROLLED_BACK and "rollout hook checks failed: " in rel.reason
    assert [m.name for m in rel.verdicts[-1].metrics] == ["success-rate", "hook:checks"]
    (told,) = hooks.of("/report")
    assert signed(told) and told.json()["outcome"] == "rolled-back" and told.json()["release"] == "web-1"
    assert told.headers["x-graylane-event"] == "hook.post-rollout"


def test_hook_rollback_server_saying_yes_rolls_back(hooks: HookServer) -> None:
    hooks.script["/kill"] = lambda n: 404 if n == 1 else 200
    r = run(policy(hook(hooks, "rollback", "kill", retries=0)))
    r.push("v2")
    r.tick()
    assert r.state().release.phase == Phase.PROGRESSING  # type: ignore[union-attr]
    r.tick()
    assert r.state().release.reason == "rollback hook kill asked for a rollback"  # type: ignore[union-attr]


def test_hook_secret_missing_answers_no_and_never_leaks(
    hooks: HookServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("GRAYLANE_SECRET_HOOKS")
    r = run(policy(replace(hook(hooks, "confirm-rollout", "freeze"), url=hooks.url("/freeze?token=abc123"))))
    r.push("v2")
    r.tick()
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.WAITING and "secret 'hooks' is not set" in rel.hook_answer
    assert hooks.of("/freeze?token=abc123") == []  # an unsigned call is never made
    monkeypatch.setenv("GRAYLANE_SECRET_HOOKS", SECRET)
    hooks.script["/freeze?token=abc123"] = lambda n: 500
    r.tick()
    assert "abc123" not in caplog.text and SECRET not in caplog.text
    assert "abc123" not in r.state().to_json()


# -- the load hook -----------------------------------------------------------------------------------------


class CanaryServer:
    """The canary's own Service: answers 200 and counts requests (by header), which the analysis reads."""

    def __init__(self) -> None:
        self.times: list[tuple[float, dict[str, str]]] = []
        seen = self.times

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self, window: float) -> int:
        now = time.monotonic()
        return sum(1 for t, _ in list(self.times) if now - t <= window)


class LoadProviders(RecordingProviders):
    """Recording providers whose load tests are real (Debian's hey), measured on the canary's real requests."""

    def __init__(self, workdir: Path, canary: CanaryServer) -> None:
        super().__init__(measure=self._measure)
        self.local = ProcessWorkloads(
            LocalConfig(workdir=str(workdir), socket="", stable_port=0, canary_port=0)
        )
        self.canary = canary
        self.workloads_.start_load_test = self.local.start_load_test  # type: ignore[method-assign]

    def _measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        n = self.canary.requests(window=5.0)
        return (
            MetricSample(
                name="success-rate",
                value=1.0,
                stable_value=1.0,
                canary_requests=n,
                canary_errors=0,
                stable_requests=n,
                stable_errors=0,
            ),
        )


@pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed: run `make deps`")
def test_hook_load_gives_an_idle_canary_the_traffic_its_analysis_needs(tmp_path: Path) -> None:
    canary = CanaryServer()
    load = Hook(
        name="load",
        type="rollout",
        load_test=LoadTest(
            url=f"http://127.0.0.1:{canary.server.server_address[1]}/",
            rps=40,
            duration=3.0,
            headers=(("x-load", "graylane"),),
        ),
    )
    p = policy(
        load,
        pause=2.0,
        analysis=Analysis(
            interval=1.0,
            window=5.0,
            min_requests=50,
            metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),),
        ),
    )
    providers = LoadProviders(tmp_path, canary)
    clock = [datetime.now(UTC)]
    store = MemoryStore()
    runner = Runner(store, StaticPolicies([p]), providers, clock=lambda: datetime.now(UTC))
    r = Run(runner, store, clock, providers)
    r.push("v1")
    r.push("v2")
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            rel = r.state().release
            assert rel is not None
            if rel.phase == Phase.SUCCEEDED:
                break
            assert rel.phase == Phase.PROGRESSING, (rel.phase, rel.reason)
            time.sleep(0.5)
            r.tick(0)
        rel = r.state().release
        assert rel is not None and rel.phase == Phase.SUCCEEDED, [v.reason for v in rel.verdicts][-3:]
        assert any(v.verdict == "inconclusive" for v in rel.verdicts[:3]) or rel.verdicts[0].verdict == "pass"
        assert len(canary.times) >= 50 and all(h.get("x-load") == "graylane" for _, h in canary.times)
        assert sorted(providers.local.load_tests) == [f"web-1-load-{i}" for i in range(1, rel.loads + 1)]
        assert rel.loads >= 2  # one stopped (3 s) while the release was still analysed: another one started
    finally:
        providers.local.stop_all()
        canary.server.shutdown()
        canary.server.server_close()


def test_hook_load_absent_the_idle_canary_is_never_judged_and_the_release_pauses(tmp_path: Path) -> None:
    canary = CanaryServer()
    p = policy(
        pause=2.0,
        analysis=Analysis(
            interval=1.0,
            window=5.0,
            min_requests=50,
            inconclusive_limit=3,
            metrics=(MetricCheck(name="success-rate", template="success-rate", min=0.9),),
        ),
    )
    providers = LoadProviders(tmp_path, canary)
    store = MemoryStore()
    r = Run(
        Runner(store, StaticPolicies([p]), providers, clock=lambda: datetime.now(UTC)),
        store,
        [datetime.now(UTC)],
        providers,
    )
    r.push("v1")
    r.push("v2")
    try:
        for _ in range(12):
            time.sleep(0.4)
            r.tick(0)
        rel = r.state().release
        assert rel is not None and rel.phase == Phase.PAUSED and "canary requests < 50" in rel.reason
        assert canary.times == []
    finally:
        canary.server.shutdown()
        canary.server.server_close()
