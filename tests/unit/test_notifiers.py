"""Notifiers against a real local HTTP server that records every request and answers from a script.

Payload shapes and signatures are checked by recomputing them here from the vendors' documented
algorithms, over the exact bytes the server received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from functions.core import events as ev
from functions.core.policy import NotifySpec
from functions.core.state import AppState
from functions.errors import ConfigError, ProviderUnavailable
from functions.providers.notifiers import Delivery, make_notifier, resolve
from functions.providers.notifiers.dingtalk import DingTalkNotifier
from functions.providers.notifiers.feishu import FeishuNotifier
from functions.providers.notifiers.slack import SlackNotifier
from functions.providers.notifiers.webhook import SIGNATURE_HEADER, WebhookNotifier
from functions.providers.notifiers.wecom import WeComNotifier
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, canary_policy, push

FAST = Delivery(timeout=1.0, attempts=3, budget=3.0, backoff=0.05, max_backoff=0.2)


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Capture:
    """A real HTTP server: `script` holds (status, body) answers used in order, then `default`."""

    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    script: list[tuple[int, bytes]] = field(default_factory=list)
    default: tuple[int, bytes] = (200, b"ok")
    hang: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self) -> tuple[int, bytes]:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


@pytest.fixture
def capture() -> Iterator[Capture]:
    cap = Capture()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            url = urlsplit(self.path)
            with cap.lock:
                cap.requests.append(
                    Seen(url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body)
                )
            if cap.hang:
                time.sleep(cap.hang)
            status, answer = cap.answer()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    cap.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield cap
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notice(type_: str = ev.RELEASE_ROLLED_BACK, **extra: Any) -> dict[str, Any]:
    base = {
        "type": type_,
        "release": "web-7",
        "app": "prod/web",
        "phase": "rolled-back",
        "stage": 0,
        "step": 1,
        "weight": 20,
        "wave": 0,
        "target": {"version": "v2", "image": "r/web:v2"},
        "origin": {"version": "v1", "image": "r/web:v1"},
        "reason": "analysis failed: success-rate 0.80 < 0.99",
        "message": "prod/web v2 release rolledback at 20%: analysis failed",
        "id": "web-7/12/3-notify",
    }
    return {**base, **extra}


GATE = notice(ev.GATE_WAITING, phase="waiting", gate="promote", reason="waiting for approval at gate promote")


# -- payloads and signatures -----------------------------------------------------------------------------


def test_slack_posts_block_kit_with_approve_and_reject_buttons_for_a_waiting_gate(capture: Capture) -> None:
    SlackNotifier(capture.url(), delivery=FAST).send(GATE)
    body = capture.requests[0].json()
    assert capture.requests[0].headers["content-type"].startswith("application/json")
    assert "prod/web" in body["text"]
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "actions", "context"]
    buttons = body["blocks"][3]["elements"]
    assert [(b["text"]["text"], b["value"], b["style"], b["action_id"]) for b in buttons] == [
        ("Approve", "approve prod/web promote release=web-7 version=v2", "primary", "graylane-approve"),
        ("Reject", "reject prod/web promote release=web-7 version=v2", "danger", "graylane-reject"),
    ]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in body["blocks"][2]["fields"]}
    assert fields["*Gate*"] == "promote" and fields["*Version*"] == "v1 → v2"


def test_slack_button_values_are_commands_the_chatops_parser_runs(capture: Capture) -> None:
    from functions.chatops.parse import parse

    SlackNotifier(capture.url(), delivery=FAST).send(GATE)
    buttons = capture.requests[0].json()["blocks"][3]["elements"]
    parsed = [parse(b["value"]) for b in buttons]
    assert [(p.action, p.app, p.gate, p.release, p.version) for p in parsed] == [
        ("approve", "prod/web", "promote", "web-7", "v2"),
        ("reject", "prod/web", "promote", "web-7", "v2"),
    ]


def test_slack_has_no_buttons_outside_a_gate_and_escapes_markup(capture: Capture) -> None:
    SlackNotifier(capture.url(), delivery=FAST).send(notice(message="p99 <500ms & rising"))
    body = capture.requests[0].json()
    assert "actions" not in [b["type"] for b in body["blocks"]]
    assert body["blocks"][1]["text"]["text"] == "p99 &lt;500ms &amp; rising"


def test_dingtalk_signs_the_query_with_timestamp_and_hmac_of_timestamp_newline_secret(
    capture: Capture,
) -> None:
    secret = "SECabc123"
    DingTalkNotifier(capture.url("/robot/send?access_token=tok"), secret, FAST).send(GATE)
    seen = capture.requests[0]
    assert seen.query["access_token"] == ["tok"]
    ts = seen.query["timestamp"][0]
    assert abs(int(ts) - time.time() * 1000) < 60_000  # milliseconds
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    )
    assert seen.query["sign"] == [expected.decode()]  # parse_qs undid the url-encoding
    body = seen.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"].startswith("Waiting at a gate")
    assert "**Gate**: promote" in body["markdown"]["text"]


def test_dingtalk_without_secret_leaves_the_url_alone(capture: Capture) -> None:
    DingTalkNotifier(capture.url("/robot/send?access_token=tok"), "", FAST).send(notice())
    assert set(capture.requests[0].query) == {"access_token"}


def test_feishu_card_carries_timestamp_and_sign_keyed_by_timestamp_newline_secret(capture: Capture) -> None:
    secret = "feishu-secret"
    FeishuNotifier(capture.url("/open-apis/bot/v2/hook/x"), secret, FAST).send(notice())
    body = capture.requests[0].json()
    ts = body["timestamp"]
    assert isinstance(ts, str) and abs(int(ts) - time.time()) < 60  # seconds
    expected = base64.b64encode(hmac.new(f"{ts}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected
    assert body["msg_type"] == "interactive"
    card = body["card"]
    assert (
        card["header"]["template"] == "red" and card["header"]["title"]["content"] == "Rolled back: prod/web"
    )
    assert card["elements"][0] == {"tag": "div", "text": {"tag": "lark_md", "content": notice()["message"]}}


def test_wecom_sends_markdown_within_4096_bytes(capture: Capture) -> None:
    WeComNotifier(capture.url("/cgi-bin/webhook/send?key=k"), delivery=FAST).send(notice(reason="x" * 9000))
    body = capture.requests[0].json()
    assert body["msgtype"] == "markdown"
    assert len(body["markdown"]["content"].encode()) <= 4096
    assert '<font color="warning">Rolled back: prod/web</font>' in body["markdown"]["content"]


def test_webhook_posts_the_notice_with_an_hmac_signature_over_the_raw_body(capture: Capture) -> None:
    WebhookNotifier(capture.url(), "s3cret", FAST).send(notice())
    seen = capture.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", seen.body, hashlib.sha256).hexdigest()
    assert seen.headers[SIGNATURE_HEADER.lower()] == expected
    assert seen.headers["x-graylane-event"] == ev.RELEASE_ROLLED_BACK
    assert seen.headers["x-graylane-delivery"] == "web-7/12/3-notify"
    assert {k: v for k, v in seen.json().items() if k != "title"} == notice()


# -- retries and bounds ----------------------------------------------------------------------------------


def test_a_server_that_fails_twice_then_succeeds_gets_the_notice_on_the_third_try(capture: Capture) -> None:
    capture.script = [(503, b"busy"), (500, b"oops")]
    WebhookNotifier(capture.url(), "", FAST).send(notice())
    assert len(capture.requests) == 3
    assert capture.requests[0].body == capture.requests[2].body


def test_a_vendor_rate_limit_code_is_retried_and_a_bad_signature_is_not(capture: Capture) -> None:
    capture.script = [(200, b'{"errcode":130101,"errmsg":"send too fast"}')]
    capture.default = (200, b'{"errcode":0,"errmsg":"ok"}')
    DingTalkNotifier(capture.url(), "SEC", FAST).send(notice())
    assert len(capture.requests) == 2
    capture.script = [(200, b'{"errcode":310000,"errmsg":"sign not match"}')]
    with pytest.raises(ProviderUnavailable, match="errcode 310000 sign not match"):
        DingTalkNotifier(capture.url(), "SEC", FAST).send(notice())
    assert len(capture.requests) == 3


def test_feishu_nonzero_code_is_a_failure(capture: Capture) -> None:
    capture.default = (200, b'{"code":19021,"msg":"sign match fail or timestamp is not within one hour"}')
    with pytest.raises(ProviderUnavailable, match="code 19021"):
        FeishuNotifier(capture.url(), "s", FAST).send(notice())
    assert len(capture.requests) == 1


def test_a_client_error_is_not_retried_and_the_error_hides_the_url_path(capture: Capture) -> None:
    capture.default = (404, b"no_service")
    with pytest.raises(ProviderUnavailable) as err:
        SlackNotifier(capture.url("/services/T0/B0/SECRETTOKEN"), delivery=FAST).send(notice())
    assert len(capture.requests) == 1
    assert "HTTP 404 no_service" in str(err.value) and "SECRETTOKEN" not in str(err.value)


def test_a_server_that_is_down_fails_after_three_tries_within_the_budget() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="after 3 attempt") as err:
        WebhookNotifier(url, "", FAST).send(notice())
    assert time.monotonic() - started < FAST.budget
    assert isinstance(err.value.__cause__, Exception)


def test_a_server_that_never_answers_is_cut_off_by_the_budget(capture: Capture) -> None:
    capture.hang = 5.0
    delivery = Delivery(timeout=0.4, attempts=5, budget=1.0, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        WebhookNotifier(capture.url(), "", delivery).send(notice())
    assert time.monotonic() - started < 1.5
    assert 2 <= len(capture.requests) <= 3


# -- fan-out ---------------------------------------------------------------------------------------------


def test_fan_out_never_raises_and_delivers_to_the_channels_that_are_up(capture: Capture) -> None:
    down = f"http://127.0.0.1:{closed_port()}/hook"
    specs = (
        NotifySpec(kind="slack", url=down),
        NotifySpec(kind="webhook", url=capture.url()),
        NotifySpec(kind="wecom", secret="missing"),
    )
    notifier = make_notifier(specs, {}, FAST)
    started = time.monotonic()
    notifier.send(notice())
    assert time.monotonic() - started < FAST.budget + 0.5
    assert len(capture.requests) == 1
    assert list(notifier.delivered) == [("1:webhook", "web-7/12/3-notify")]
    failed = {f.channel: f.error for f in notifier.failures}
    assert set(failed) == {"0:slack", "2:wecom"}
    assert "after 3 attempt" in failed["0:slack"] and "secret 'missing' is not set" in failed["2:wecom"]


def test_secrets_resolve_to_the_url_and_the_signing_key(capture: Capture) -> None:
    secrets = {"GRAYLANE_SECRET_DING_ROBOT": f"{capture.url('/robot/send?access_token=t')} SECkey"}
    spec = NotifySpec(kind="dingtalk", secret="ding-robot")
    assert resolve(spec, secrets) == (capture.url("/robot/send?access_token=t"), "SECkey")
    make_notifier((spec,), secrets, FAST).send(notice())
    assert "sign" in capture.requests[0].query
    assert resolve(NotifySpec(kind="feishu", url="https://x/h", secret="k"), {"k": "only-a-key"}) == (
        "https://x/h",
        "only-a-key",
    )


def test_an_unknown_kind_is_a_config_error_listing_the_known() -> None:
    with pytest.raises(ConfigError, match="known: slack, dingtalk, feishu, wecom, webhook"):
        make_notifier((NotifySpec(kind="irc", url="https://x"),), {})


# -- through the runner ----------------------------------------------------------------------------------


class NotifyingProviders(RecordingProviders):
    def __init__(self) -> None:
        super().__init__()
        self.notifiers: list[Any] = []

    def notifier(self, policy: Any) -> Any:
        n = make_notifier(policy.notify, {}, FAST)
        self.notifiers.append(n)
        return n


def _runner(url: str) -> tuple[Runner, NotifyingProviders]:
    from dataclasses import replace

    policy = replace(canary_policy(), notify=(NotifySpec(kind="webhook", url=url),))
    providers = NotifyingProviders()
    return Runner(MemoryStore(), StaticPolicies([policy]), providers, clock=Clock()), providers


def test_the_runner_delivers_a_release_started_notice(capture: Capture) -> None:
    runner, _ = _runner(capture.url())
    runner.handle(push("prod/web", "v1"))
    out = runner.handle(push("prod/web", "v2"))[0]
    assert out.status == "transitioned" and out.pending == 0
    types = [r.json()["type"] for r in capture.requests]
    assert types[0] == ev.RELEASE_STARTED
    assert capture.requests[0].json()["target"]["version"] == "v2"


def test_a_notifier_that_is_down_does_not_hold_up_the_release() -> None:
    runner, providers = _runner(f"http://127.0.0.1:{closed_port()}/hook")
    runner.handle(push("prod/web", "v1"))
    out = runner.handle(push("prod/web", "v2"))[0]
    assert out.status == "transitioned" and out.pending == 0  # every effect applied, notices dropped
    assert any(n.failures for n in providers.notifiers)
    state = AppState.from_json(runner.store.load("prod/web")[0])
    assert state.pending == () and state.release is not None and state.release.weight == 20
