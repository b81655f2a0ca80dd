"""graylane's web console: a Starlette sub-app mounted at `/ui` by `graylane serve` and the Knative gateway.

    GET  /ui/                              every app: release, phase, stage, weights, protection (live)
    GET  /ui/apps/{ns}/{app}               one app: the release's live timeline (weights, canary vs stable
                                           success rate and latency from the recorded verdicts, gates and who
                                           decided), each verdict with its metric values and queries, the
                                           audit log, and the buttons the signed-in user may press
    POST /ui/apps/{ns}/{app}/actions       approve / reject / pause / resume / rollback (form or fetch)
    GET  /ui/events, /ui/apps/{ns}/{app}/events   server-sent events: the page's live parts re-rendered on change
    GET  /ui/login, POST /ui/login, POST /ui/logout   sign-in with an API token (GRAYLANE_API_TOKENS)
    GET  /ui/console.js                    the one small script (SSE + button posts), pinned by its hash

Security (README "Web console"):
- every page and stream needs a signed-in user: a session cookie (HMAC-signed, HttpOnly, SameSite=Strict,
  Secure behind TLS) made by `POST /ui/login` from an API token, or, when configured, an identity header set
  by a trusted reverse proxy (only from the trusted source addresses and/or with the proxy's shared secret);
- every POST is CSRF-checked: a per-session token (hidden field or X-CSRF-Token header) and the Origin (or
  Referer) must be this site's; the login form has its own double-submit token;
- an action runs through `Approvals.execute`, the approval API's own code path: the policy's per-app,
  per-action (per-gate) approvers decide, every decision is audited (via `console`), and the command names
  the release the page showed; the buttons shown are the ones the user may press, the server checks anyway;
- pages carry no secrets (never a token, a notifier URL or a key), a strict Content-Security-Policy, no
  framing; bad input is a 4xx naming the field.

Only `graylane serve` and the gateway import this package, when they mount it: nothing here is on a
function's cold path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["console_routes"]


def console_routes(
    approvals: Any, tokens: Mapping[str, str], env: Mapping[str, str] | None = None, settings: Any = None
) -> list[Any]:
    """[Mount("/ui", console)] wired to `approvals` (the approval API's) and its API `tokens` ({token: user});
    [] when GRAYLANE_CONSOLE=off. `settings` (ConsoleSettings) defaults to ConsoleSettings.from_env(env)."""
    from starlette.routing import Mount

    from functions.console.routes import console_app
    from functions.console.settings import ConsoleSettings

    settings = settings if settings is not None else ConsoleSettings.from_env(env)
    if not settings.enabled:
        return []
    return [Mount(settings.prefix, app=console_app(approvals, tokens, settings))]
