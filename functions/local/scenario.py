"""`graylane demo`: the main job end to end on real local components, in about three minutes.

Everything runs on 127.0.0.1 on free ports: two versions of the shop service (functions.demo_service)
behind HAProxy, Prometheus scraping HAProxy's exporter, Alertmanager with a rule, traffic from hey,
and `graylane serve` (gateway + functions + ticker, SQLite state) in this process. The scenario goes
through the real gateway over HTTP:

1. a Docker Hub push of v1 makes it stable; hey starts (plain traffic and a `x-shop-beta: yes` stream);
2. a push of v2: preview + migration -> demo-operator approves gate ab-test over the approval API ->
   A/B by header -> canary 20 % and 50 % under Prometheus analysis -> approves gate promote -> promoted
   and protected (rate limit);
3. a push of a bad v3 (35 % errors, slower): approved into its A/B test, where analysis rolls it back
   within seconds;
4. an error burst on stable: Prometheus fires ShopHighErrorRate -> Alertmanager -> the gateway -> the
   rate limit is tightened tenfold; after recovery and the hold-down it is relaxed.

A live view shows the release as it moves; an HTML report is written at the end. Every process started
here is stopped on the way out, on success, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from functions.core.policy import Policy
from functions.core.state import AppState, Phase
from functions.core.values import value
from functions.errors import GraylaneError
from functions.local import procs, report
from functions.local.live import LiveView, describe, row_of
from functions.local.ports import bind_listener
from functions.local.providers import Behaviour, LocalProviders
from functions.local.stack import LocalStack, ensure_packages

APP = "demo/shop"
REPOSITORY = "graylane/shop"  # Docker Hub name; the gateway announces docker.io/graylane/shop
OPERATOR = "demo-operator"
POLICY = Path(__file__).resolve().parents[2] / "infra" / "local" / "demo-policy.yaml"
BEHAVIOURS = {  # what each version does once deployed: v3 is the bad one
    "v1.0.0": Behaviour(error_rate=0.0, delay=0.004),
    "v2.0.0": Behaviour(error_rate=0.0, delay=0.003),
    "v3.0.0": Behaviour(error_rate=0.35, delay=0.03),
}
BETA_HEADER = ("x-shop-beta", "yes")


class DemoFailed(GraylaneError):
    """A scenario step did not happen in time; the message says which and what the state was."""


@value
class Timing:
    tick: float  # seconds between tick sweeps
    warmup: float  # traffic before the first release
    look: float  # the operator "looks" before approving
    settle: float  # pause between acts
    abtest: str  # policy durations, rendered into the run's copy of demo-policy.yaml
    pauses: tuple[str, str]
    hold_down: str
    rps: int = 100  # plain traffic; the beta stream is a fifth of it


NORMAL = Timing(tick=1.0, warmup=10, look=5, settle=10, abtest="30s", pauses=("30s", "30s"), hold_down="15s")
FAST = Timing(tick=0.5, warmup=3, look=1, settle=3, abtest="5s", pauses=("6s", "6s"), hold_down="4s")


@dataclass
class DemoResult:
    ok: bool = False
    report: str = ""
    elapsed: float = 0.0
    error: str = ""
    promoted_v2: bool = False
    rolled_back_v3: bool = False
    rollback_seconds: float | None = None  # from v3's first traffic (A/B start) to rolled-back
    limit_base: int | None = None
    limit_tightened: int | None = None
    limit_relaxed: int | None = None
    pids: list[int] = field(default_factory=list)
    workdir: str = ""
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)  # hey stream -> {status code: responses}


def policy_text(timing: Timing) -> str:
    """demo-policy.yaml with the run's durations (the file itself holds the normal ones)."""
    doc = yaml.safe_load(POLICY.read_text())
    for stage in doc["spec"]["stages"]:
        if "abtest" in stage:
            stage["abtest"]["duration"] = timing.abtest
        if "canary" in stage:
            for step, pause in zip(stage["canary"]["steps"], timing.pauses, strict=True):
                step["pause"] = pause
    for rule in doc["spec"]["protection"]:
        rule["holdDown"] = timing.hold_down
    return yaml.safe_dump(doc, sort_keys=False)


def dockerhub_push(tag: str) -> dict[str, Any]:
    """A Docker Hub repository webhook body, as Docker Hub sends it."""
    namespace, name = REPOSITORY.split("/")
    return {
        "callback_url": f"https://registry.hub.docker.com/u/{REPOSITORY}/hook/demo/",
        "push_data": {"pushed_at": int(time.time()), "pusher": "demo-ci", "tag": tag},
        "repository": {
            "repo_name": REPOSITORY,
            "name": name,
            "namespace": namespace,
            "owner": namespace,
            "repo_url": f"https://hub.docker.com/r/{REPOSITORY}",
            "is_private": False,
            "status": "Active",
            "star_count": 0,
            "comment_count": 0,
            "date_created": 1700000000,
        },
    }


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
        err.close()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def prometheus_vector(base: str, query: str) -> dict[str, float]:
    """{server (or ''): value} of an instant query; {} when Prometheus does not answer."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            result = json.loads(r.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return {}
    return {s["metric"].get("server", ""): float(s["value"][1]) for s in result}


def traffic_sample(base: str, backend: str = "be_app", frontend: str = "fe_app") -> dict[str, float | None]:
    """Canary vs stable success rate and latency, requests and 429s per second, as Prometheus sees them."""
    total = prometheus_vector(
        base, f'sum by (server) (rate(haproxy_server_http_responses_total{{proxy="{backend}"}}[5s]))'
    )
    errors = prometheus_vector(
        base,
        f'sum by (server) (rate(haproxy_server_http_responses_total{{proxy="{backend}",code="5xx"}}[5s]))',
    )
    latency = prometheus_vector(base, f'haproxy_server_response_time_average_seconds{{proxy="{backend}"}}')
    denied = prometheus_vector(
        base, f'sum(rate(haproxy_frontend_requests_denied_total{{proxy="{frontend}"}}[5s]))'
    )
    rps = prometheus_vector(
        base, f'sum(rate(haproxy_frontend_http_requests_total{{proxy="{frontend}"}}[5s]))'
    )
    out: dict[str, float | None] = {}
    for server in ("stable", "canary"):
        n = total.get(server, 0.0)
        live = n > 0.5  # a server without traffic has no success rate; its latency gauge is stale
        out[f"{server}Success"] = round(1 - errors.get(server, 0.0) / n, 4) if live else None
        out[f"{server}Ms"] = round(latency[server] * 1000, 2) if live and server in latency else None
        out[f"{server}Rps"] = round(n, 1)
    out["denied"] = round(denied.get("", 0.0), 1) if denied else None
    out["rps"] = round(rps.get("", 0.0), 1) if rps else None
    return out


class Demo:
    def __init__(
        self,
        fast: bool = False,
        report_path: str = "graylane-demo-report.html",
        keep: bool = False,
        tty: bool | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self.timing = FAST if fast else NORMAL
        self.fast = fast
        self.report_path = Path(report_path).resolve()
        self.keep = keep
        self.out = out
        self.view = LiveView(tty=tty, title=f"graylane demo{' --fast' if fast else ''}: {APP}")
        self.result = DemoResult()
        self.workdir = Path(tempfile.mkdtemp(prefix="graylane-demo-"))
        self.hook_token, self.alert_token, self.api_token = (secrets.token_hex(16) for _ in range(3))
        self.stack = LocalStack(self.workdir, self.alert_token)
        self.t0 = time.monotonic()
        self.recorder = report.Recorder(report.empty(f"graylane demo: {APP}", APP, report.now_iso()))
        self.policy: Policy | None = None
        self.store: Any = None
        self.providers: LocalProviders | None = None
        self.step = "starting"
        self._stoppers: list[Callable[[], None]] = []
        self._rec_lock = threading.Lock()

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> DemoResult:
        previous = (
            signal.signal(signal.SIGTERM, _interrupt)
            if threading.current_thread() is threading.main_thread()
            else None
        )
        final: AppState | None = None
        try:
            self._start()
            self._scenario()
            self.result.ok = True
        except (GraylaneError, KeyboardInterrupt) as err:
            self.result.error = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
            self.view.note(f"demo stopped: {self.result.error}")
        finally:
            final = self._state_or_none()
            self._stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.result.elapsed = round(self.t(), 1)
            self.result.pids = procs.started_pids()
            self._write_report(final)
            self.view.close()
            if not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return self.result

    def t(self) -> float:
        return time.monotonic() - self.t0

    def _start(self) -> None:
        import uvicorn

        from functions.gateway import GatewaySettings
        from functions.policies import DirectoryPolicies
        from functions.providers.sources.base import Credentials
        from functions.providers.stores.sqlite import SqliteStore
        from functions.serve import build_serve

        self.view.note("checking Debian packages (prometheus, prometheus-alertmanager, haproxy, hey)")
        ensure_packages(self.view.note)
        # the gateway's socket first, kept open: Alertmanager is configured with a port nobody else can take
        listener = bind_listener("127.0.0.1", 0)
        self._stoppers.append(listener.close)
        self.stack.ports.gateway = listener.getsockname()[1]
        self.view.note(f"starting HAProxy, Prometheus and Alertmanager in {self.workdir}")
        self.stack.start()
        self._stoppers.append(self.stack.stop)
        config = self.stack.config(BEHAVIOURS)
        (self.workdir / "stack.json").write_text(config.to_json())
        policies_dir = self.workdir / "policies"
        policies_dir.mkdir()
        (policies_dir / "shop.yaml").write_text(policy_text(self.timing))
        policies = DirectoryPolicies(policies_dir)
        self.policy = policies.get(APP)
        self.store = SqliteStore(str(self.workdir / "graylane.db"))
        self.providers = LocalProviders(config, out=self.view.note)
        self._stoppers.append(self.providers.close)
        settings = GatewaySettings(
            credentials={
                "dockerhub": Credentials(token=self.hook_token),
                "alertmanager": Credentials(token=self.alert_token),
            }
        )
        serve = build_serve(
            self.store,
            policies,
            self.providers,
            tick=self.timing.tick,
            gateway_settings=settings,
            api_tokens={self.api_token: OPERATOR},
            env={},
        )
        serve.bus.subscribe("dev.graylane.", self._on_event)
        server = uvicorn.Server(
            uvicorn.Config(serve.app, log_level="warning", access_log=False, lifespan="off")
        )
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="graylane-serve", daemon=True
        )
        thread.start()

        def stop_server() -> None:
            serve.stop()
            server.should_exit = True
            thread.join(timeout=10)

        self._stoppers.append(stop_server)
        self._wait("graylane serve answering", lambda: server.started, 15)
        serve.ticker.start()
        self._start_sampler()
        self.view.note(
            f"graylane serve on {self.stack.gateway} (SQLite state, tick {self.timing.tick:g}s); "
            f"traffic enters HAProxy at {self.stack.url}"
        )

    def _scenario(self) -> None:
        tm = self.timing
        self._act("push v1.0.0: the first image becomes stable")
        self._push("v1.0.0")
        self._wait_state("v1.0.0 stable", lambda s: s.stable.version == "v1.0.0", 30)
        traffic_seconds = 600
        self.stack.start_traffic("plain", tm.rps, traffic_seconds, workers=4)
        self.stack.start_traffic("beta", tm.rps // 5, traffic_seconds, headers=dict([BETA_HEADER]), workers=2)
        self._act(f"hey: ~{tm.rps} rps plain + ~{tm.rps // 5} rps with {BETA_HEADER[0]}: {BETA_HEADER[1]}")
        self._sleep(tm.warmup)

        # -- v2: the full pipeline --------------------------------------------------------------------
        self._act("push v2.0.0 (Docker Hub webhook): preview + DB migration")
        self._push("v2.0.0")
        self._wait_gate("v2.0.0", "ab-test", 60)
        self._check_preview("v2.0.0")
        self._sleep(tm.look)
        self._approve("ab-test")
        self._wait_gate("v2.0.0", "promote", 60 + _secs(tm.abtest) + sum(_secs(p) for p in tm.pauses) * 2)
        self._sleep(tm.look)
        self._approve("promote")
        self._wait_state(
            "v2.0.0 promoted and protected",
            lambda s: s.release is not None and s.release.phase is Phase.SUCCEEDED,
            60,
        )
        self.result.promoted_v2 = True
        self._act("v2.0.0 is stable: promoted and protected")
        self._sleep(tm.settle)

        # -- v3: bad, rolled back by analysis --------------------------------------------------------
        self._act("push v3.0.0 (bad: 35% errors, slower)")
        self._push("v3.0.0")
        self._wait_gate("v3.0.0", "ab-test", 60)
        self._approve("ab-test")
        self._wait_state("v3.0.0 receiving A/B traffic", lambda s: bool(s.routes.match), 30)
        bad_from = self.t()
        self._act("v3.0.0 gets the beta traffic")
        state = self._wait_state(
            "v3.0.0 rolled back", lambda s: s.release is not None and not s.release.active, 60
        )
        assert state.release is not None
        self.result.rolled_back_v3 = state.release.phase is Phase.ROLLED_BACK
        self.result.rollback_seconds = round(self.t() - bad_from, 1)
        if not self.result.rolled_back_v3:
            raise DemoFailed(
                f"v3.0.0 ended {state.release.phase.value}, not rolled back: {state.release.reason}"
            )
        self._act(
            f"v3.0.0 rolled back automatically {self.result.rollback_seconds:.1f} s after its first traffic"
        )
        self._sleep(tm.settle / 2)

        # -- error burst: alert -> protection ---------------------------------------------------------
        base = self._state().base_protection.rate_limit
        self.result.limit_base = base.average if base else None
        self._act("error burst on stable (50% errors): Prometheus -> Alertmanager -> gateway")
        self._control_stable(0.5)
        state = self._wait_state(
            "rate limit tightened",
            lambda s: (limit := _limit(s)) is not None and base is not None and limit < base.average,
            30,
        )
        self.result.limit_tightened = _limit(state)
        self._act(f"rate limit tightened to {self.result.limit_tightened}/s by alert ShopHighErrorRate")
        self._sleep(2)
        self._control_stable(0.0)
        self._act("stable recovered; the alert resolves, then the hold-down passes")
        state = self._wait_state(
            "rate limit relaxed",
            lambda s: base is not None and _limit(s) == base.average,
            60 + _secs(tm.hold_down),
        )
        self.result.limit_relaxed = _limit(state)
        self._act(f"rate limit relaxed to {self.result.limit_relaxed}/s")
        self._sleep(2)
        self.result.traffic = self.stack.stop_traffic()
        self._act(
            "traffic stopped: "
            + "; ".join(
                f"{name} " + ", ".join(f"{n}x{code}" for code, n in sorted(codes.items()))
                for name, codes in self.result.traffic.items()
            )
        )

    # -- steps ------------------------------------------------------------------------------------
    def _act(self, text: str) -> None:
        self.step = text
        with self._rec_lock:
            self.recorder.milestone(self.t(), text)
        self.view.note(text)

    def _push(self, tag: str) -> None:
        status, body = http(
            "POST", f"{self.stack.gateway}/hooks/dockerhub/{self.hook_token}", dockerhub_push(tag)
        )
        if status != 202 or not (isinstance(body, dict) and body.get("ids")):
            raise DemoFailed(f"push of {tag}: the gateway answered {status} {body}")

    def _approve(self, gate: str) -> None:
        self._act(f"{OPERATOR} approves gate {gate} over the approval API")
        status, body = http(
            "POST",
            f"{self.stack.gateway}/api/v1/apps/{APP}/commands",
            {"action": "approve", "gate": gate, "reason": "looks good"},
            {"Authorization": f"Bearer {self.api_token}"},
        )
        if status != 202:
            raise DemoFailed(
                f"approve gate {gate} of {APP} as {OPERATOR}: the approval API answered {status} {body}"
            )

    def _check_preview(self, version: str) -> None:
        assert self.providers is not None
        url = self.providers.workloads_.url(f"preview/{self.policy.name if self.policy else 'shop'}-preview")
        try:
            with urllib.request.urlopen(f"{url}/", timeout=2) as r:
                seen = r.headers.get("X-Version", "")
        except OSError as err:
            raise DemoFailed(f"preview of {version} at {url} does not answer: {err}") from err
        if seen != version:
            raise DemoFailed(f"preview at {url} runs {seen!r}, expected {version}")
        self._act(f"preview {url} answers {seen}; migration ran")

    def _control_stable(self, error_rate: float) -> None:
        url = f"http://127.0.0.1:{self.stack.ports.stable}/_ctl?error_rate={error_rate}"
        with urllib.request.urlopen(url, timeout=2) as r:
            r.read()

    # -- waiting ------------------------------------------------------------------------------------
    def _state(self) -> AppState:
        doc, _ = self.store.load(APP)
        return AppState.from_json(doc) if doc else AppState(app=APP)

    def _state_or_none(self) -> AppState | None:
        try:
            return self._state() if self.store is not None else None
        except GraylaneError:
            return None

    def _wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoFailed(f"{what}: not within {timeout:g} s")
            time.sleep(0.1)

    def _wait_state(self, what: str, check: Callable[[AppState], bool], timeout: float) -> AppState:
        last: list[AppState] = []

        def probe() -> AppState | None:
            state = self._state()
            last[:] = [state]
            return state if check(state) else None

        try:
            return self._wait(what, probe, timeout)  # type: ignore[no-any-return]
        except DemoFailed as err:
            rel = last[0].release if last else None
            seen = f"; release {rel.id} {rel.target.version} {rel.phase.value} {rel.reason}" if rel else ""
            raise DemoFailed(f"{err}{seen}") from None

    def _wait_gate(self, version: str, gate: str, timeout: float) -> None:
        def at_gate(s: AppState) -> bool:
            rel = s.release
            if rel is not None and rel.target.version == version and not rel.active:
                raise DemoFailed(
                    f"{rel.id} {version} ended {rel.phase.value} before gate {gate}: {rel.reason}"
                )
            return (
                rel is not None
                and rel.target.version == version
                and rel.phase is Phase.WAITING
                and rel.gate == gate
            )

        self._wait_state(f"{version} waiting at gate {gate}", at_gate, timeout)
        self._act(f"{version} waits at gate {gate}")

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- observing ----------------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        """Emitted events worth a line under the table (verdicts only when they are not a pass)."""
        kind = event["type"]
        data = event.data if isinstance(event.data, dict) else {}
        if kind.startswith(
            (
                "dev.graylane.image.",
                "dev.graylane.release.command",
                "dev.graylane.release.tick",
                "dev.graylane.event.ignored",
            )
        ):
            return
        if kind == "dev.graylane.analysis.verdict" and data.get("verdict") == "pass":
            return
        self.view.note(describe(kind, data, self.policy))

    def _start_sampler(self) -> None:
        stop = threading.Event()

        def loop() -> None:
            last_metrics = 0.0
            while not stop.wait(0.25):
                try:
                    state = self._state()
                    t = self.t()
                    with self._rec_lock:
                        self.recorder.state(t, state, self.policy)
                        if t - last_metrics >= 1.0:
                            last_metrics = t
                            self.recorder.metrics(t, traffic_sample(self.stack.prometheus))
                    self.view.update([row_of(state, self.policy)], status=self.step)
                except GraylaneError:
                    continue  # a busy store: the next sample catches up

        thread = threading.Thread(target=loop, name="demo-sampler", daemon=True)
        thread.start()

        def stop_sampler() -> None:
            stop.set()
            thread.join(timeout=5)

        self._stoppers.append(stop_sampler)

    # -- the end ------------------------------------------------------------------------------------
    def _stop(self) -> None:
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception as err:  # stop everything else regardless
                self.view.note(f"stopping: {err}")
        self._stoppers.clear()
        procs.stop_all()

    def _write_report(self, final: AppState | None) -> None:
        r = self.result
        summary = {
            "outcome": "completed" if r.ok else f"stopped: {r.error}",
            "v2.0.0": "promoted through A/B, canary 20% / 50% and gate promote"
            if r.promoted_v2
            else "not promoted",
            "v3.0.0": (
                f"rolled back automatically {r.rollback_seconds:.1f} s after its first traffic"
                if r.rolled_back_v3 and r.rollback_seconds is not None
                else "not rolled back"
            ),
            "rate limit": (
                f"{r.limit_base}/s, tightened to {r.limit_tightened}/s by the alert, relaxed to "
                f"{r.limit_relaxed}/s"
                if r.limit_relaxed is not None
                else "not exercised"
            ),
            "approved by": OPERATOR,
            "traffic (hey)": "; ".join(
                f"{name}: " + ", ".join(f"{n} x {code}" for code, n in sorted(codes.items()))
                for name, codes in r.traffic.items()
            )
            or "-",
            "elapsed": f"{r.elapsed:.1f} s",
            "processes started": len(r.pids),
        }
        with self._rec_lock:
            data = self.recorder.finish(final, r.elapsed, summary)
        data["pids"] = r.pids
        data["result"] = {k: v for k, v in r.__dict__.items() if k != "pids"}
        try:
            r.report = str(report.write_report(self.report_path, data))
        except OSError as err:
            r.error = r.error or f"report {self.report_path}: {err}"
            r.ok = False


def _limit(state: AppState) -> int | None:
    rl = state.protection.rate_limit
    return rl.average if rl is not None else None


def _secs(duration: str) -> float:
    from functions.serve import parse_duration

    return parse_duration(duration)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def run(
    fast: bool = False,
    report_path: str = "graylane-demo-report.html",
    keep: bool = False,
    tty: bool | None = None,
    out: Callable[[str], None] = print,
) -> DemoResult:
    demo = Demo(fast=fast, report_path=report_path, keep=keep, tty=tty, out=out)
    result = demo.run()
    result.workdir = str(demo.workdir) if keep else ""
    return result
