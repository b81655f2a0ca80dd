"""The web console in a real browser: Debian's Chromium driven by Playwright against a real `graylane serve`.

A release is pushed and waits at its promote gate; alice (allowed by the policy) signs in with her API token,
watches the timeline move to the gate live over server-sent events (the page is never reloaded), clicks Approve
and sees the release succeed; bob (not allowed) signs in, is offered no Approve button, and when he forces one
into the page anyway the server refuses it (403, audited). Screenshots go to $GRAYLANE_TEST_ARTIFACTS (default
tests/artifacts/)/console; with GRAYLANE_UPDATE_DOCS=1 the README's docs/console.png is refreshed from them.

Playwright is the PyPI package (its Node driver ships inside the wheel; no browser is ever downloaded): it
launches /usr/bin/chromium (infra/local/install-deps.sh installs Debian's chromium) with a new, empty profile.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.console_support import APP, fast_policy

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("GRAYLANE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALICE, BOB = f"alice-{secrets.token_hex(8)}", f"bob-{secrets.token_hex(8)}"
HOOK = secrets.token_hex(16)


def artifacts() -> Path:
    out = Path(os.environ.get("GRAYLANE_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "console"
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def push(self, tag: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/hooks/generic",
            method="POST",
            data=json.dumps({"repository": "docker.io/team/web", "tag": tag}).encode(),
            headers={"authorization": f"Bearer {HOOK}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202

    def api(self, path: str, token: str = "") -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"authorization": f"Bearer {token or ALICE}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def release(self) -> dict[str, Any]:
        return self.api(f"/api/v1/apps/{APP}")["data"]["release"] or {}

    def wait(self, predicate: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            release = self.release()
            if predicate(release):
                return release
            time.sleep(0.2)
        raise AssertionError(
            f"{what}: not within {timeout:.0f}s; release {self.release()}; log:\n"
            f"{self.log.read_text()[-3000:]}"
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("console-browser")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(fast_policy())
    env = {
        **os.environ,
        "GRAYLANE_STORE": f"sqlite:///{tmp / 'graylane.db'}",
        "GRAYLANE_POLICIES": str(policies),
        "GRAYLANE_PROVIDERS": "recording",
        "GRAYLANE_TICK_INTERVAL": "500ms",
        "GRAYLANE_API_TOKENS": f"alice:{ALICE},bob:{BOB}",
        "GRAYLANE_HOOK_TOKEN_GENERIC": HOOK,
        "GRAYLANE_CONSOLE_SESSION_KEY": secrets.token_hex(16),
        "GRAYLANE_CONSOLE_POLL": "250ms",
        "GRAYLANE_INTERNAL_TOKEN": secrets.token_hex(16),
    }
    log = tmp / "serve.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.console_server", "--port", "0", "--internal-port", "0"],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=out,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        found = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
        assert found, f"graylane serve did not start: {line}{log.read_text()}"
        yield Server(found.group(1), proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        out.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run `make deps` (infra/local/install-deps.sh installs Debian's chromium)",
            pytrace=False,
        )
    os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", tempfile.mkdtemp(prefix="no-downloaded-browsers-"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@dataclass
class Browser:
    context: Any
    page: Any
    errors: list[str]


@pytest.fixture
def browser(playwright: Any) -> Iterator[Any]:
    """A factory of fresh Chromium profiles (a new, empty --user-data-dir each), closed after the test."""
    opened: list[tuple[Any, str]] = []

    def new(viewport: dict[str, int] | None = None) -> Browser:
        profile = tempfile.mkdtemp(prefix="graylane-chromium-")
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport=viewport or {"width": 1280, "height": 900},
            device_scale_factor=1,
        )
        opened.append((context, profile))
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
        page.on(
            "console",
            lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
        )
        page.set_default_timeout(20_000)
        return Browser(context, page, errors)

    try:
        yield new
    finally:
        for context, profile in opened:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/ui/apps/{APP}")
    assert "/ui/login" in page.url  # not signed in yet: the sign-in form, which comes back here
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/ui/apps/{APP}")


def test_alice_watches_the_release_live_and_approves_it(server: Server, browser: Any) -> None:
    shots = artifacts()
    server.push("v1.0.0")
    server.push("v2.0.0")
    b = browser()
    page = b.page
    sign_in(page, server.url, ALICE)
    page.evaluate("window.__graylaneNoReload = true")  # gone if the page were ever reloaded
    live = page.locator("#live")
    # the timeline follows the release without a reload: canary steps, verdicts, then the gate
    page.wait_for_function("document.getElementById('live-dot').classList.contains('on')")
    page.locator("#live .phase.waiting").first.wait_for(timeout=30_000)
    assert page.evaluate("window.__graylaneNoReload") is True
    page.locator("#actions button[data-action=approve]").wait_for()
    assert "Success rate (%) from the verdicts" in live.inner_text()
    assert "Waiting at gate promote" in live.inner_text()
    page.screenshot(path=str(shots / "console-waiting.png"), full_page=True)
    page.screenshot(
        path=str(shots / "console-waiting-top.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": 1560},
    )  # the README's docs/console.png

    page.click("#actions button[data-action=approve]")
    page.locator("#flash.ok").wait_for()
    assert "accepted: approve gate promote" in page.locator("#flash").inner_text()
    page.locator("#live .phase.succeeded").first.wait_for(timeout=30_000)
    assert page.evaluate("window.__graylaneNoReload") is True
    gates = page.locator("#live table.gates").inner_text()
    assert "promote" in gates and "approved" in gates and "alice" in gates and "console" in gates
    assert page.locator("#actions button[data-action=approve]").count() == 0  # the buttons followed the state
    page.screenshot(path=str(shots / "console-approved.png"), full_page=True)
    release = server.release()
    assert release["phase"] == "succeeded" and release["gates"][-1]["by"] == "alice"
    assert release["gates"][-1]["via"] == "console"

    page.goto(f"{server.url}/ui/")
    page.locator("table.apps a", has_text=APP).wait_for()
    page.screenshot(path=str(shots / "console-apps.png"))
    phone = browser({"width": 390, "height": 844})
    sign_in(phone.page, server.url, ALICE)
    phone.page.screenshot(path=str(shots / "console-phone.png"), full_page=True)
    assert not b.errors and not phone.errors, b.errors + phone.errors  # no script error, no CSP violation
    if os.environ.get("GRAYLANE_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shots / "console-waiting-top.png", ROOT / "docs" / "console.png")


def test_bob_is_offered_no_approval_and_a_forced_one_is_refused(server: Server, browser: Any) -> None:
    shots = artifacts()
    before = server.release().get("id", "")
    server.push("v3.0.0")
    server.wait(
        lambda r: r.get("id") != before and r.get("phase") == "waiting", "the v3 release waits at its gate"
    )
    b = browser()
    page = b.page
    sign_in(page, server.url, BOB)
    page.locator("#live .phase.waiting").first.wait_for()
    assert page.locator("#actions button[data-action=approve]").count() == 0
    assert page.locator("#actions button[data-action=pause]").count() == 1  # what bob may do
    assert (
        "bob may not approve gate promote" in page.locator("#actions details").text_content()
    )  # folded: why not
    # force the button into the page: the server decides, not the page
    page.evaluate("""() => {
        const b = document.createElement('button');
        b.type = 'submit'; b.name = 'action'; b.value = 'approve'; b.dataset.action = 'approve';
        b.textContent = 'Approve promote (forced)';
        document.querySelector('#actions form').appendChild(b);
    }""")
    page.click("#actions button[data-action=approve]")
    page.locator("#flash.error").wait_for()
    assert "denied: bob may not approve gate promote" in page.locator("#flash").inner_text()
    page.screenshot(path=str(shots / "console-refused.png"), full_page=False)
    assert server.release()["phase"] == "waiting"
    forged = page.evaluate("""async () => {
        const r = await fetch(location.pathname + '/actions', {method: 'POST',
            headers: {'X-CSRF-Token': document.body.dataset.csrf, 'Accept': 'application/json',
                      'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'action=rollback&release=' + encodeURIComponent(document.querySelector('input[name=release]').value)});
        return [r.status, (await r.json()).outcome];
    }""")
    assert forged == [403, "denied"]
    audit = server.api(f"/api/v1/apps/{APP}/audit?limit=20")["items"]
    mine = [(r["user"], r["via"], r["action"], r["outcome"]) for r in audit if r["user"] == "bob"]
    assert mine == [("bob", "console", "approve", "denied"), ("bob", "console", "rollback", "denied")]
    assert server.release()["phase"] == "waiting"
    unexpected = [
        e for e in b.errors if "status of 403" not in e
    ]  # the two refusals are 403s, as they should be
    assert not unexpected, unexpected
