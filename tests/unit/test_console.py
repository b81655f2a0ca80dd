"""The web console (/ui) in-process: sign-in, CSRF and Origin checks, per-app per-action authorisation with its audit
entry, live updates over server-sent events, and what a page may and may not contain.

`graylane serve`'s own wiring (build_serve) on SQLite with recording providers; TestClient drives the ASGI app.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from functions.approvals import CommandRequest
from functions.chatops.authz import Requester
from functions.console import auth
from functions.console.settings import ConsoleSettings
from functions.core.events import RELEASE_COMMAND
from functions.core.state import AppState, Phase
from functions.errors import ConfigError
from functions.gateway import GatewaySettings
from functions.internal_auth import InternalAuth
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.sources.base import Credentials
from functions.providers.stores.sqlite import SqliteStore
from functions.serve import build_serve
from tests.console_support import APP, POLICY, measure

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

HOOK = "hook-token-123"
ALICE, BOB = "alice-token-0123", "bob-token-01234"
ORIGIN = {"Origin": "http://testserver"}
KEY = b"console-test-key-0123456789abcdef"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Console:
    client: TestClient
    store: SqliteStore
    serve: Any
    clock: Clock
    tmp: Path

    def state(self) -> AppState:
        doc, _ = self.store.load(APP)
        assert doc is not None
        return AppState.from_json(doc)

    def push(self, tag: str, at: int) -> None:
        body = {
            "push_data": {"pushed_at": at, "pusher": "ci", "tag": tag},
            "repository": {"repo_name": "team/web", "name": "web", "namespace": "team"},
        }
        assert self.client.post(f"/hooks/dockerhub/{HOOK}", json=body).status_code == 202

    def to_gate(self) -> AppState:
        """v1 stable, v2 released and ticked through its canary steps until it waits at gate promote."""
        self.push("v1.0.0", 1_700_000_000)
        self.push("v2.0.0", 1_700_000_100)
        for _ in range(20):
            self.clock.now += timedelta(seconds=10)
            self.serve.ticker.tick()
            if self.state().release.phase is Phase.WAITING:  # type: ignore[union-attr]
                break
        state = self.state()
        assert state.release is not None and state.release.gate == "promote", state.release
        return state

    def commands(self) -> list[Any]:
        return self.serve.bus.of_type(RELEASE_COMMAND)


def settings(**changes: Any) -> ConsoleSettings:
    return replace(ConsoleSettings(session_key=KEY, poll=0.05, stream_lifetime=1.5, heartbeat=0.5), **changes)


def make(tmp: Path, console: ConsoleSettings | None = None, tokens: dict[str, str] | None = None) -> Console:
    policies = tmp / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "web.yaml").write_text(POLICY)
    store = SqliteStore(str(tmp / "graylane.db"))
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    serve = build_serve(
        store,
        DirectoryPolicies(policies),
        RecordingProviders(measure=measure),
        tick=0.05,
        clock=clock,
        gateway_settings=GatewaySettings(credentials={"dockerhub": Credentials(token=HOOK)}),
        api_tokens=tokens if tokens is not None else {ALICE: "alice", BOB: "bob"},
        env={},
        internal_auth=InternalAuth(token="internal-token-0123456789", edge_key="edge-key-0123456789abc"),
        console=console or settings(),
    )
    return Console(TestClient(serve.app), store, serve, clock, tmp)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    c = make(tmp_path)
    with c.client:
        yield c
    c.serve.stop()


def sign_in(client: TestClient, token: str, next_: str = "/ui/") -> Any:
    form = client.get("/ui/login")
    assert form.status_code == 200
    login = re.search(r'name="login" value="([^"]+)"', form.text)
    assert login, form.text
    return client.post(
        "/ui/login",
        data={"token": token, "login": login.group(1), "next": next_},
        headers=ORIGIN,
        follow_redirects=False,
    )


def csrf_of(page: str) -> str:
    found = re.search(r'data-csrf="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def act(
    client: TestClient,
    csrf: str,
    action: str,
    release: str,
    gate: str = "",
    headers: Any = None,
    **extra: str,
) -> Any:
    data = {"csrf": csrf, "action": action, "release": release, "gate": gate, **extra}
    return client.post(
        f"/ui/apps/{APP}/actions",
        data=data,
        headers=ORIGIN if headers is None else headers,
        follow_redirects=False,
    )


# ---------------------------------------------------------------------------------------------- sign-in


def test_auth_every_page_stream_and_action_needs_a_signed_in_user(console: Console) -> None:
    console.to_gate()
    page = console.client.get("/ui/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=%2Fui%2F"
    assert console.client.get(f"/ui/apps/{APP}", follow_redirects=False).status_code == 303
    assert console.client.get(f"/ui/apps/{APP}/events").status_code == 401
    assert console.client.get("/ui/events").status_code == 401
    refused = console.client.post(
        f"/ui/apps/{APP}/actions", data={"action": "approve"}, headers=ORIGIN, follow_redirects=False
    )
    assert refused.status_code == 401
    assert not console.commands()


def test_auth_a_token_signs_in_with_a_strict_http_only_cookie_for_ui_only(console: Console) -> None:
    answer = sign_in(console.client, ALICE, "/ui/apps/team/web")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/apps/team/web"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(auth.SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here; behind TLS it is Secure (next test)
    assert ALICE not in cookie
    page = console.client.get("/ui/")
    assert page.status_code == 200 and "signed in as <b>alice</b>" in page.text


def test_auth_the_cookie_is_secure_behind_tls_or_when_told(tmp_path: Path) -> None:
    for secure, headers, expected in (
        ("auto", {"X-Forwarded-Proto": "https"}, True),
        ("true", {}, True),
        ("false", {"X-Forwarded-Proto": "https"}, False),
    ):
        c = make(tmp_path / secure, settings(secure_cookie=secure))
        scheme = "https" if secure == "true" else "http"  # a Secure cookie only comes back over https
        client = TestClient(c.serve.app, base_url=f"{scheme}://testserver")
        form = client.get("/ui/login")
        login = re.search(r'name="login" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        answer = client.post(
            "/ui/login",
            data={"token": ALICE, "login": login},
            follow_redirects=False,
            headers={"Origin": f"{scheme}://testserver", **headers},
        )
        cookie = next(v for v in answer.headers.get_list("set-cookie") if v.startswith(auth.SESSION_COOKIE))
        assert ("Secure" in cookie) is expected, (secure, cookie)
        c.serve.stop()


def test_auth_a_wrong_token_a_foreign_origin_or_a_stale_form_signs_nobody_in(console: Console) -> None:
    wrong = sign_in(console.client, "not-a-token-at-all")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert auth.SESSION_COOKIE not in console.client.cookies
    form = console.client.get("/ui/login")
    login = re.search(r'name="login" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    foreign = console.client.post(
        "/ui/login",
        data={"token": ALICE, "login": login},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403 and "cross-site" in foreign.text
    stale = console.client.post(
        "/ui/login", data={"token": ALICE, "login": "forged"}, headers=ORIGIN, follow_redirects=False
    )
    assert stale.status_code == 403 and "expired" in stale.text
    assert auth.SESSION_COOKIE not in console.client.cookies


def test_auth_failed_sign_ins_are_throttled_per_address(tmp_path: Path) -> None:
    c = make(tmp_path, settings(login_failures=3))
    for _ in range(3):
        assert sign_in(c.client, "wrong-token-0000").status_code == 401
    assert sign_in(c.client, ALICE).status_code == 429  # even the right token waits
    c.serve.stop()


def test_auth_a_session_ends_with_its_token_and_a_tampered_cookie_is_nobody(tmp_path: Path) -> None:
    c = make(tmp_path)
    sign_in(c.client, ALICE)
    value = c.client.cookies[auth.SESSION_COOKIE]
    now = time.time()
    assert auth.session_from(KEY, value, {ALICE: "alice"}, now) is not None
    assert auth.session_from(KEY, value, {"another-token-1": "alice"}, now) is None  # revoked
    assert auth.session_from(KEY, value, {ALICE: "mallory"}, now) is None  # reassigned
    assert auth.session_from(KEY, value, {ALICE: "alice"}, now + 9 * 3600) is None  # expired (8 h)
    assert auth.session_from(b"another-key-0123456789", value, {ALICE: "alice"}, now) is None
    body, _, mac = value.partition(".")
    forged = auth.unsign(KEY, "session", value)
    assert forged is not None
    assert auth.session_from(KEY, body[:-2] + "xx." + mac, {ALICE: "alice"}, now) is None
    c.serve.stop()
    # a console whose tokens no longer include alice's sends her back to sign in
    d = make(tmp_path / "later", tokens={BOB: "bob"})
    d.client.cookies.set(auth.SESSION_COOKIE, value, path="/ui")
    assert d.client.get("/ui/", follow_redirects=False).status_code == 303
    d.serve.stop()


def test_auth_a_trusted_proxy_names_the_user_and_nobody_else_can(tmp_path: Path) -> None:
    secret = "proxy-shared-secret-0123"
    c = make(tmp_path, settings(identity_header="x-forwarded-user", proxy_secret=secret))
    c.to_gate()
    as_proxy = {"X-Forwarded-User": "alice", "X-Graylane-Proxy-Secret": secret}
    page = c.client.get(f"/ui/apps/{APP}", headers=as_proxy)
    assert page.status_code == 200 and "signed in as <b>alice</b>" in page.text
    assert (
        c.client.get("/ui/", headers={"X-Forwarded-User": "alice"}, follow_redirects=False).status_code == 303
    )
    wrong = {"X-Forwarded-User": "alice", "X-Graylane-Proxy-Secret": "not-the-secret-0000"}
    assert c.client.get("/ui/", headers=wrong, follow_redirects=False).status_code == 303
    # the proxy's user acts like a token's: CSRF-checked, authorised and audited
    answer = act(
        c.client,
        csrf_of(page.text),
        "approve",
        c.state().release.id,
        "promote",  # type: ignore[union-attr]
        headers={**ORIGIN, **as_proxy},
    )
    assert answer.status_code == 303, answer.text
    assert c.state().release.phase is Phase.SUCCEEDED  # type: ignore[union-attr]
    c.serve.stop()
    # by address: only the listed peers (TestClient's peer is "testclient", no address at all)
    assert (
        auth.proxy_identity(
            {"x-forwarded-user": "bob"},
            "10.0.0.7",
            "x-forwarded-user",
            ConsoleSettings.from_env({**PROXY_ENV}).trusted_proxies,
            "",
            "",
        )
        is not None
    )
    assert (
        auth.proxy_identity(
            {"x-forwarded-user": "bob"},
            "10.9.0.7",
            "x-forwarded-user",
            ConsoleSettings.from_env({**PROXY_ENV}).trusted_proxies,
            "",
            "",
        )
        is None
    )
    assert (
        auth.proxy_identity(
            {"x-forwarded-user": "bob\n"},
            "10.0.0.7",
            "x-forwarded-user",
            ConsoleSettings.from_env({**PROXY_ENV}).trusted_proxies,
            "",
            "",
        )
        is not None
    )
    assert (
        auth.proxy_identity(
            {"x-forwarded-user": "b\x00b"},
            "10.0.0.7",
            "x-forwarded-user",
            ConsoleSettings.from_env({**PROXY_ENV}).trusted_proxies,
            "",
            "",
        )
        is None
    )


PROXY_ENV = {
    "GRAYLANE_CONSOLE_IDENTITY_HEADER": "X-Forwarded-User",
    "GRAYLANE_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/24",
    "GRAYLANE_CONSOLE_SESSION_KEY": "s" * 32,
}


def test_settings_name_the_variable_and_refuse_an_untrusted_identity_header() -> None:
    with pytest.raises(ConfigError, match="GRAYLANE_CONSOLE_IDENTITY_HEADER needs"):
        ConsoleSettings.from_env({"GRAYLANE_CONSOLE_IDENTITY_HEADER": "X-Forwarded-User"})
    with pytest.raises(ConfigError, match="GRAYLANE_CONSOLE_SESSION_KEY must be at least 16"):
        ConsoleSettings.from_env({"GRAYLANE_CONSOLE_SESSION_KEY": "short"})
    with pytest.raises(ConfigError, match="GRAYLANE_CONSOLE_TRUSTED_PROXIES entry 'nowhere'"):
        ConsoleSettings.from_env({**PROXY_ENV, "GRAYLANE_CONSOLE_TRUSTED_PROXIES": "nowhere"})
    with pytest.raises(ConfigError, match="GRAYLANE_CONSOLE_POLL"):
        ConsoleSettings.from_env({"GRAYLANE_CONSOLE_POLL": "soon"})
    with pytest.raises(ConfigError, match="GRAYLANE_CONSOLE_ORIGINS entry"):
        ConsoleSettings.from_env({"GRAYLANE_CONSOLE_ORIGINS": "graylane.example.com"})
    with pytest.raises(ConfigError, match="GRAYLANE_CONSOLE_SECURE_COOKIE"):
        ConsoleSettings.from_env({"GRAYLANE_CONSOLE_SECURE_COOKIE": "maybe"})
    s = ConsoleSettings.from_env(
        {
            **PROXY_ENV,
            "GRAYLANE_CONSOLE_ORIGINS": "https://graylane.example.com/",
            "GRAYLANE_CONSOLE_SESSION_TTL": "30m",
        }
    )
    assert (s.identity_header, s.origins, s.session_ttl, s.key_is_random) == (
        "x-forwarded-user",
        ("https://graylane.example.com",),
        1800.0,
        False,
    )
    assert ConsoleSettings.from_env({}).key_is_random and len(ConsoleSettings.from_env({}).session_key) == 32


def test_settings_graylane_console_off_mounts_nothing(tmp_path: Path) -> None:
    c = make(tmp_path, ConsoleSettings.from_env({"GRAYLANE_CONSOLE": "off"}))
    assert c.client.get("/ui/login").status_code == 404
    c.serve.stop()


# ---------------------------------------------------------------------------------------------- CSRF


def test_csrf_an_action_without_the_token_or_from_another_origin_is_refused(console: Console) -> None:
    release = console.to_gate().release.id  # type: ignore[union-attr]
    page = sign_in(console.client, ALICE, f"/ui/apps/{APP}")
    csrf = csrf_of(console.client.get(f"/ui/apps/{APP}").text)
    assert page.status_code == 303
    for name, answer in (
        ("no token", act(console.client, "", "approve", release, "promote")),
        ("wrong token", act(console.client, "x" * 32, "approve", release, "promote")),
        (
            "foreign origin",
            act(
                console.client,
                csrf,
                "approve",
                release,
                "promote",
                headers={"Origin": "https://evil.example"},
            ),
        ),
        ("no origin, no referer", act(console.client, csrf, "approve", release, "promote", headers={})),
        (
            "foreign referer",
            act(
                console.client,
                csrf,
                "approve",
                release,
                "promote",
                headers={"Referer": "https://evil.example/ui/apps/team/web"},
            ),
        ),
    ):
        assert answer.status_code == 403, (name, answer.status_code, answer.text)
    assert console.state().release.phase is Phase.WAITING  # type: ignore[union-attr]
    assert not console.commands()
    # the same request from our own page (a same-origin Referer also does) goes through
    ok = act(
        console.client,
        csrf,
        "approve",
        release,
        "promote",
        headers={"Referer": f"http://testserver/ui/apps/{APP}"},
    )
    assert ok.status_code == 303, ok.text
    assert console.state().release.phase is Phase.SUCCEEDED  # type: ignore[union-attr]


def test_csrf_tokens_belong_to_one_session(tmp_path: Path) -> None:
    c = make(tmp_path)
    release = c.to_gate().release.id  # type: ignore[union-attr]
    sign_in(c.client, ALICE)
    old = csrf_of(c.client.get("/ui/").text)
    c.client.cookies.clear()
    sign_in(c.client, ALICE)  # a new session: the old page's token is no longer valid
    assert act(c.client, old, "approve", release, "promote").status_code == 403
    c.serve.stop()


# ---------------------------------------------------------------------------------------------- authorisation


def test_authz_an_authorised_user_approves_and_it_is_recorded_and_audited_via_console(
    console: Console,
) -> None:
    release = console.to_gate().release.id  # type: ignore[union-attr]
    sign_in(console.client, ALICE)
    page = console.client.get(f"/ui/apps/{APP}")
    assert 'value="approve"' in page.text and "Approve promote" in page.text
    answer = act(console.client, csrf_of(page.text), "approve", release, "promote", reason="looks good")
    assert answer.status_code == 303 and answer.headers["location"] == f"/ui/apps/{APP}"
    state = console.state()
    assert state.release.phase is Phase.SUCCEEDED and state.stable.version == "v2.0.0"  # type: ignore[union-attr]
    approved = [h for h in state.history if h.action == "approved"][-1]
    assert approved.by is not None and (approved.by.user, approved.by.via) == ("alice", "console")
    [record] = console.serve.approvals.audit.recent(APP, 10)
    assert (record.user, record.via, record.action, record.gate, record.outcome) == (
        "alice",
        "console",
        "approve",
        "promote",
        "accepted",
    )
    after = console.client.get(f"/ui/apps/{APP}")  # the redirect shows what was done
    assert "accepted: approve gate promote" in after.text and "succeeded" in after.text


def test_authz_an_unauthorised_user_sees_no_button_and_a_forged_post_is_refused_403_and_audited(
    console: Console,
) -> None:
    release = console.to_gate().release.id  # type: ignore[union-attr]
    sign_in(console.client, BOB)
    page = console.client.get(f"/ui/apps/{APP}")
    assert page.status_code == 200
    assert 'value="approve"' not in page.text and 'value="rollback"' not in page.text
    assert 'value="pause"' in page.text  # bob may pause, and only that
    assert "bob may not approve gate promote" in page.text  # and is told why not
    answer = act(console.client, csrf_of(page.text), "approve", release, "promote")
    assert answer.status_code == 403 and "bob may not approve gate promote" in answer.text
    as_json = act(
        console.client,
        csrf_of(page.text),
        "rollback",
        release,
        headers={**ORIGIN, "Accept": "application/json"},
    )
    assert as_json.status_code == 403 and as_json.json()["outcome"] == "denied"
    assert console.state().release.phase is Phase.WAITING  # type: ignore[union-attr]
    assert not console.commands()  # nothing was published
    records = console.serve.approvals.audit.recent(APP, 10)
    assert [(r.user, r.via, r.action, r.outcome) for r in records] == [
        ("bob", "console", "approve", "denied"),
        ("bob", "console", "rollback", "denied"),
    ]
    assert "bob may not approve gate promote" in records[0].reason
    shown = console.client.get(f"/ui/apps/{APP}").text  # the audit log on the page shows the refusals
    assert shown.count(">denied<") == 2


def test_authz_a_button_of_an_earlier_release_is_refused_409_and_audited(console: Console) -> None:
    console.to_gate()
    sign_in(console.client, ALICE)
    csrf = csrf_of(console.client.get(f"/ui/apps/{APP}").text)
    answer = act(
        console.client, csrf, "approve", "web-0", "promote", headers={**ORIGIN, "Accept": "application/json"}
    )
    assert answer.status_code == 409 and "web-0" in answer.json()["error"]
    assert console.state().release.phase is Phase.WAITING  # type: ignore[union-attr]
    assert not console.commands()
    [record] = console.serve.approvals.audit.recent(APP, 10)
    assert (record.user, record.action, record.outcome) == ("alice", "approve", "refused")


def test_authz_json_answers_for_the_script(console: Console) -> None:
    release = console.to_gate().release.id  # type: ignore[union-attr]
    sign_in(console.client, ALICE)
    csrf = csrf_of(console.client.get(f"/ui/apps/{APP}").text)
    answer = console.client.post(
        f"/ui/apps/{APP}/actions",
        data={"action": "pause", "release": release},
        headers={**ORIGIN, "Accept": "application/json", "X-CSRF-Token": csrf},
    )
    assert answer.status_code == 202 and answer.json()["outcome"] == "accepted", answer.text
    assert console.state().release.phase is Phase.PAUSED  # type: ignore[union-attr]
    page = console.client.get(f"/ui/apps/{APP}").text
    assert 'value="resume"' in page and 'value="pause"' not in page and 'value="approve"' not in page


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"action": "explode"}, "action 'explode' is not allowed"),
        ({"action": "approve", "gate": "g" * 200}, "gate is longer than 128"),
        ({"action": "approve", "param.weight": "lots"}, "param.weight: 'lots' is not a whole number"),
        ({"action": "approve", "param.we ight": "3"}, "param.we ight: a gate parameter name"),
        ({"action": "pause", "param.weight": "3"}, "param.weight: gate parameters go with approve only"),
        ({"action": "approve", "sudo": "1"}, "unknown field(s) sudo"),
        ({"action": "rollback", "version": "not a version!"}, "version"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(console: Console, data: dict[str, str], field: str) -> None:
    console.to_gate()
    sign_in(console.client, ALICE)
    csrf = csrf_of(console.client.get(f"/ui/apps/{APP}").text)
    answer = console.client.post(
        f"/ui/apps/{APP}/actions",
        data={"csrf": csrf, **data},
        headers={**ORIGIN, "Accept": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]


def test_bad_input_bodies_and_apps_are_4xx(console: Console) -> None:
    console.to_gate()
    sign_in(console.client, ALICE)
    csrf = csrf_of(console.client.get(f"/ui/apps/{APP}").text)
    headers = {**ORIGIN, "Accept": "application/json", "X-CSRF-Token": csrf}
    as_json = console.client.post(f"/ui/apps/{APP}/actions", json={"action": "approve"}, headers=headers)
    assert as_json.status_code == 400 and "application/x-www-form-urlencoded" in as_json.json()["error"]
    twice = console.client.post(
        f"/ui/apps/{APP}/actions",
        content=b"action=pause&action=approve",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert twice.status_code == 400 and "action: given more than once" in twice.json()["error"]
    binary = console.client.post(
        f"/ui/apps/{APP}/actions",
        content=b"action=\xff\xfe",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert binary.status_code == 400
    assert console.client.get("/ui/apps/team/nobody").status_code == 404
    assert console.client.get("/ui/apps/team/nobody/events").status_code == 404
    assert console.client.get("/ui/apps/Team_X/web").status_code == 404
    unknown = console.client.post("/ui/apps/team/nobody/actions", data={"action": "pause"}, headers=headers)
    assert unknown.status_code == 404


# ---------------------------------------------------------------------------------------------- pages


def test_pages_show_every_app_and_the_release_timeline_with_values_queries_and_gates(
    console: Console,
) -> None:
    console.to_gate()
    sign_in(console.client, ALICE)
    index = console.client.get("/ui/").text
    assert f'href="/ui/apps/{APP}"' in index and "waiting" in index and "50/50" in index
    page = console.client.get(f"/ui/apps/{APP}").text
    for part in (
        "Timeline of web-1",
        "Success rate (%) from the verdicts",
        "Latency (ms) from the verdicts",
        "Waiting at gate <b>promote</b>",
        "haproxy_server_http_responses_total",
        "<svg",
        "desired 50 %",
    ):
        assert part in page, part
    release = console.state().release.id  # type: ignore[union-attr]
    act(console.client, csrf_of(page), "approve", release, "promote")
    page = console.client.get(f"/ui/apps/{APP}").text
    gates = page.split("Gates: who decided", 1)[1].split("</table>", 1)[0]
    assert "promote" in gates and "approved" in gates and "alice" in gates and "console" in gates


def test_pages_carry_security_headers_and_no_secrets(console: Console) -> None:
    console.to_gate()
    sign_in(console.client, ALICE)
    for path in ("/ui/", f"/ui/apps/{APP}", "/ui/login"):
        answer = console.client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
        for secret in (ALICE, BOB, HOOK, "internal-token-0123456789", "edge-key", KEY.decode()):
            assert secret not in answer.text, (path, secret)


def test_pages_the_script_is_pinned_by_its_hash(console: Console) -> None:
    import base64
    import hashlib

    sign_in(console.client, ALICE)
    page = console.client.get("/ui/").text
    src, integrity = re.search(r'<script src="([^"]+)" integrity="([^"]+)"', page).groups()  # type: ignore[union-attr]
    script = console.client.get(src)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert integrity == "sha384-" + base64.b64encode(hashlib.sha384(script.content).digest()).decode()
    assert "immutable" in script.headers["cache-control"]


def test_pages_a_notifier_link_asks_to_confirm_and_never_acts_by_itself(console: Console) -> None:
    release = console.to_gate().release.id  # type: ignore[union-attr]
    link = f"/ui/apps/{APP}?gate=promote&release={release}&action=approve"
    assert console.client.get(link, follow_redirects=False).headers["location"].startswith("/ui/login?next=")
    sign_in(console.client, ALICE, link)
    page = console.client.get(link).text
    assert "press the button below to confirm" in page
    assert console.state().release.phase is Phase.WAITING  # type: ignore[union-attr]
    stale = console.client.get(f"/ui/apps/{APP}?gate=promote&release=web-0&action=approve").text
    assert "the current release is web-1" in stale


def test_pages_sign_out_needs_the_csrf_token(console: Console) -> None:
    sign_in(console.client, ALICE)
    csrf = csrf_of(console.client.get("/ui/").text)
    assert console.client.post("/ui/logout", data={"csrf": "nope"}, headers=ORIGIN).status_code == 403
    out = console.client.post("/ui/logout", data={"csrf": csrf}, headers=ORIGIN, follow_redirects=False)
    assert out.status_code == 303
    assert console.client.get("/ui/", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------------------------------------- live updates


def frames(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        event = next((line[7:] for line in lines if line.startswith("event: ")), "")
        data = "".join(line[6:] for line in lines if line.startswith("data: "))
        if event:
            out.append((event, data))
    return out


def test_sse_the_stream_sends_the_page_and_again_on_every_state_change(console: Console) -> None:
    import json

    release = console.to_gate().release.id  # type: ignore[union-attr]
    sign_in(console.client, ALICE)

    def approve_later() -> None:
        time.sleep(0.4)
        console.serve.approvals.execute(
            CommandRequest(
                app=APP, action="approve", gate="promote", requester=Requester(user="alice", via="api")
            )
        )

    worker = threading.Thread(target=approve_later)
    worker.start()
    started = time.monotonic()
    answer = console.client.get(f"/ui/apps/{APP}/events")  # ends after the stream lifetime (1.5 s here)
    worker.join()
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert time.monotonic() - started >= 1.4
    states = [json.loads(d) for e, d in frames(answer.text) if e == "state"]
    assert len(states) >= 2, answer.text[:500]
    assert "waiting" in states[0]["live"] and "Approve promote" in states[0]["actions"]
    assert "succeeded" in states[-1]["live"] and release in states[-1]["live"]
    assert any("actions" in s and 'value="approve"' not in s["actions"] for s in states[1:])  # buttons follow
    assert answer.text.startswith("retry: 2000")


def test_sse_the_apps_stream_and_the_end_of_a_session(tmp_path: Path) -> None:
    import json

    c = make(tmp_path, settings(stream_lifetime=0.3))
    c.to_gate()
    sign_in(c.client, ALICE)
    answer = c.client.get("/ui/events")
    [(event, data), *_] = [f for f in frames(answer.text) if f[0] == "state"]
    assert f"/ui/apps/{APP}" in json.loads(data)["live"]
    c.serve.stop()
    d = make(tmp_path / "revoked", settings(stream_lifetime=5.0), tokens={ALICE: "alice"})
    sign_in(d.client, ALICE)
    cookie = d.client.cookies[auth.SESSION_COOKIE]
    d.serve.stop()
    e = make(tmp_path / "revoked2", settings(stream_lifetime=5.0), tokens={BOB: "bob"})
    e.client.cookies.set(auth.SESSION_COOKIE, cookie, path="/ui")
    assert e.client.get("/ui/events").status_code == 401  # a revoked token's session streams nothing
    e.serve.stop()


def test_cold_path_no_function_imports_the_console() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import functions.release_start, functions.release_tick, functions.release_command, "
        "functions.protection, functions.runtime; print([m for m in sys.modules if m.startswith('functions.console')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_knative_gateway_serves_the_console_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.gateway import create_app

    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(POLICY)
    for name, value in {
        "GRAYLANE_STORE": f"sqlite:///{tmp_path / 'g.db'}",
        "GRAYLANE_POLICIES": str(policies),
        "GRAYLANE_API_TOKENS": f"alice:{ALICE}",
        "GRAYLANE_CONSOLE_SESSION_KEY": KEY.decode(),
        "GRAYLANE_EDGE_KEY": "edge-key-0123456789abcdef",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("K_SINK", raising=False)
    client = TestClient(create_app())
    assert sign_in(client, ALICE).status_code == 303
    index = client.get("/ui/")
    assert (
        index.status_code == 200 and f'href="/ui/apps/{APP}"' in index.text
    )  # the policy's app, no state yet
    assert client.get(f"/ui/apps/{APP}").status_code == 200


def test_auth_a_link_from_another_site_looks_again_from_this_one(console: Console) -> None:
    sign_in(console.client, ALICE)
    cookie = console.client.cookies[auth.SESSION_COOKIE]
    console.client.cookies.clear()  # as a browser does for a SameSite=Strict cookie on a cross-site navigation
    link = f"/ui/apps/{APP}?gate=promote&action=approve"
    first = console.client.get(link, headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert first.status_code == 200 and 'http-equiv="refresh"' in first.text
    assert f"url=/ui/apps/{APP}?gate=promote&amp;action=approve" in first.text
    console.client.cookies.set(auth.SESSION_COOKIE, cookie, path="/ui")  # the same-origin refresh sends it
    again = console.client.get(link, headers={"Sec-Fetch-Site": "same-origin"}, follow_redirects=False)
    assert again.status_code == 200 and "signed in as <b>alice</b>" in again.text


def test_pages_a_flash_message_is_shown_once(console: Console) -> None:
    release = console.to_gate().release.id  # type: ignore[union-attr]
    sign_in(console.client, ALICE)
    act(console.client, csrf_of(console.client.get(f"/ui/apps/{APP}").text), "pause", release)
    assert "accepted: pause" in console.client.get(f"/ui/apps/{APP}").text
    assert (
        "accepted: pause"
        not in console.client.get(f"/ui/apps/{APP}").text.split("<main>", 1)[1].split("<h1>")[0]
    )
