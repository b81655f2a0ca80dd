"""Release hooks over HTTP: signed JSON POSTs with a timeout and retries, answered 2xx (yes) or not (no).

Signed like the webhook notifier (functions/providers/notifiers/webhook.py): `X-Graylane-Event: hook.<type>`,
`X-Graylane-Delivery: <id>` (the same on every retry of one call, so a receiver can dedupe) and, with a
secret, `X-Graylane-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. Secrets come from the environment
(`GRAYLANE_SECRET_<NAME>`), never from the policy, and neither they nor a hook's URL path and query (which
may carry a credential) are logged. Each hook retries on its own (connection refused, timeout, 408/425/429/
5xx, exponential backoff with jitter) within `timeout * (retries + 1)` seconds; the hooks of one decision are
called in parallel, so one slow hook costs the tick its own budget, not the sum.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from functions.core.effects import Effect
from functions.core.events import HookResult
from functions.core.hooks import HookCall
from functions.core.policy import Hook, Policy
from functions.errors import ConfigError, ProviderUnavailable
from functions.providers.notifiers._http import Delivery, Prepared, check_url, dumps, post, where

log = logging.getLogger("graylane.hooks")
SIGNATURE_HEADER = "X-Graylane-Signature"


def signature(secret: str, body: bytes) -> str:
    from functions.providers.notifiers.webhook import webhook_signature

    return webhook_signature(secret, body)


def secret_of(hook: Hook, env: Mapping[str, str] | None = None) -> str:
    """The signing key a hook's `secret` names: the variable of that name, else GRAYLANE_SECRET_<NAME>."""
    if not hook.secret:
        return ""
    env = os.environ if env is None else env
    name = "GRAYLANE_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", hook.secret).upper()
    value = env.get(hook.secret) or env.get(name)
    if not value:
        raise ConfigError(f"hook {hook.name}: secret {hook.secret!r} is not set (nor {name})")
    return value


def delivery(hook: Hook) -> Delivery:
    attempts = hook.retries + 1
    return Delivery(
        timeout=hook.timeout,
        attempts=attempts,
        budget=hook.timeout * attempts + 0.25 * attempts,
        backoff=0.1,
        max_backoff=1.0,
    )


class HttpHooks:
    """Calls a policy's hooks. `env` holds the secrets (default: the process environment)."""

    def __init__(self, policy: Policy, env: Mapping[str, str] | None = None) -> None:
        self.hooks = {h.name: h for h in policy.hooks}
        self.app = policy.app
        self.env = env
        self.calls = 0  # HTTP calls made (observability, tests)

    # -- asking hooks: answers the runner hands to decide() ------------------------------------------------
    def ask(self, calls: tuple[HookCall, ...]) -> tuple[HookResult, ...]:
        results: list[HookResult | None] = [None] * len(calls)

        def one(i: int, call: HookCall) -> None:
            results[i] = self._ask(call)

        if len(calls) == 1:
            one(0, calls[0])
        else:
            threads = [
                threading.Thread(target=one, args=(i, c), daemon=True, name=f"hook-{c.name}")
                for i, c in enumerate(calls)
            ]
            for t in threads:
                t.start()
            for t, c in zip(threads, calls, strict=True):
                hook = self.hooks.get(c.name)
                t.join(delivery(hook).budget + 1.0 if hook is not None else 1.0)
        return tuple(
            r
            if r is not None
            else HookResult(
                name=c.name,
                type=c.type,
                point=c.point,
                ok=False,
                detail="no answer within its budget",
                id=c.id,
            )
            for r, c in zip(results, calls, strict=True)
        )

    def _ask(self, call: HookCall) -> HookResult:
        hook = self.hooks.get(call.name)
        if hook is None:
            return HookResult(
                call.name, call.type, call.point, False, detail="no such hook in the policy", id=call.id
            )
        try:
            status = self._post(hook, call.payload, call.id)  # attempts used
        except (ProviderUnavailable, ConfigError) as err:
            status_code = _status(str(err))
            log.info("hook %s of %s (%s) answered no: %s", hook.name, self.app, call.type, err)
            return HookResult(
                call.name,
                call.type,
                call.point,
                False,
                status=status_code,
                detail=_brief(str(err)),
                id=call.id,
            )
        return HookResult(
            call.name,
            call.type,
            call.point,
            True,
            status=200,
            detail=f"HTTP 2xx after {status} attempt(s)",
            id=call.id,
        )

    # -- telling hooks: the post-rollout effect -----------------------------------------------------------
    def tell(self, effect: Effect) -> None:
        """Call a post-rollout hook (raises ProviderUnavailable after its retries; the runner drops it then)."""
        hook = self.hooks.get(effect.hook)
        if hook is None:
            raise ConfigError(f"hook {effect.hook}: not in the policy of {self.app} any more")
        self._post(hook, effect.notice, effect.id)

    # -- the call -----------------------------------------------------------------------------------------
    def _post(self, hook: Hook, body_data: dict[str, Any], delivery_id: str) -> int:
        url = check_url(f"hook {hook.name}", hook.url)
        body = dumps(body_data)
        headers = {"X-Graylane-Event": f"hook.{hook.type}", "X-Graylane-Delivery": delivery_id}
        secret = secret_of(hook, self.env)
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, body)

        def prepare() -> Prepared:
            with self._lock:
                self.calls += 1
            return url, body, headers

        return post(f"hook {hook.name} ({hook.type}) {where(url)}", prepare, delivery(hook))

    _lock = threading.Lock()


def _status(message: str) -> int:
    found = re.findall(r"HTTP (\d{3})", message)
    return int(found[-1]) if found else 0


def _brief(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."
