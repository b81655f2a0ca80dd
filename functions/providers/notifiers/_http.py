"""One bounded, retried JSON POST, shared by every notifier.

urllib only: a notifier is built on a function's cold path, where requests/httpx would cost 100+ ms.
Each attempt re-runs `prepare()` so a signature carrying a timestamp is fresh on every try. Failures that
may pass (connection refused, timeout, HTTP 408/425/429/5xx, a vendor's own "too fast" code) are
retried with exponential backoff and full jitter; anything else fails at once. The whole send never
takes longer than `Delivery.budget` seconds: a chat service that is down delays a release by a bounded,
small amount and never fails it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from functions.core.values import value
from functions.errors import ConfigError, ProviderUnavailable

USER_AGENT = "graylane-notifier/1"
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# (url, body, headers) of one attempt
Prepared = tuple[str, bytes, dict[str, str]]
# the vendor's verdict on a 2xx answer: None when delivered, else (message, worth retrying)
Check = Callable[[bytes], "tuple[str, bool] | None"]


@value
class Delivery:
    """How hard to try: per-attempt timeout, attempts, and a total budget that bounds everything."""

    timeout: float = 3.0  # seconds per attempt
    attempts: int = 3
    budget: float = 5.0  # seconds for all attempts and the waits between them
    backoff: float = 0.25  # first wait; doubles per retry (with full jitter), capped by max_backoff
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.budget <= 0 or self.attempts < 1 or self.backoff < 0:
            raise ConfigError(f"notifier delivery {self}: timeout and budget must be positive, attempts >= 1")


DEFAULT_DELIVERY = Delivery()


class _Failed(Exception):
    def __init__(self, message: str, retry: bool, after: float = 0.0) -> None:
        super().__init__(message)
        self.retry = retry
        self.after = after  # Retry-After, seconds


def where(url: str) -> str:
    """scheme://host of a webhook URL: its path and query carry the credential, so never log them."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"


def check_url(kind: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{kind} notifier: url {where(url)!r} is not an http(s) URL")
    return url


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def vendor_code(*keys: str, retry: frozenset[int] = frozenset()) -> Check:
    """A Check for vendors answering HTTP 200 with {"errcode": N, "errmsg": ...} (0 means delivered)."""

    def check(body: bytes) -> tuple[str, bool] | None:
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            return None  # not JSON: the HTTP status already said 2xx
        if not isinstance(answer, dict):
            return None
        for key in keys:
            code = answer.get(key)
            if isinstance(code, int) and code != 0:
                msg = answer.get("errmsg") or answer.get("msg") or answer.get("StatusMessage") or ""
                return f"{key} {code} {str(msg)[:200]}".strip(), code in retry
        return None

    return check


def post(
    what: str,
    prepare: Callable[[], Prepared],
    delivery: Delivery,
    check: Check | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """POST until delivered or out of attempts/budget; returns the attempts used, else ProviderUnavailable."""
    started = time.monotonic()
    deadline = started + delivery.budget
    errors: list[str] = []
    last: _Failed | None = None
    for attempt in range(1, delivery.attempts + 1):
        left = deadline - time.monotonic()
        if left <= 0.01:
            break
        try:
            _once(prepare(), min(delivery.timeout, left), check)
            return attempt
        except _Failed as err:
            errors.append(str(err))
            last = err
            if not err.retry or attempt == delivery.attempts:
                break
            cap = min(delivery.max_backoff, delivery.backoff * 2 ** (attempt - 1))
            wait = max(err.after, random.uniform(0, cap))  # full jitter: a burst of retries spreads out
            if time.monotonic() + wait >= deadline - 0.01:
                break
            sleep(wait)
    spent = time.monotonic() - started
    raise ProviderUnavailable(
        f"{what} failed after {len(errors)} attempt(s) in {spent:.1f} s: " + "; ".join(errors)
    ) from last


def _once(prepared: Prepared, timeout: float, check: Check | None) -> None:
    import urllib.error
    import urllib.request

    url, body, headers = prepared
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with _opener().open(request, timeout=timeout) as response:
            answer = response.read(64 * 1024)
    except urllib.error.HTTPError as err:
        detail = err.read(300).decode(errors="replace").strip() if err.fp is not None else ""
        after = _retry_after(err.headers.get("Retry-After", "") if err.headers else "")
        err.close()
        raise _Failed(f"HTTP {err.code} {detail}".strip(), err.code in RETRY_STATUS, after) from err
    except (urllib.error.URLError, OSError, ValueError) as err:  # refused, DNS, timeout, reset
        reason = getattr(err, "reason", err)
        raise _Failed(f"{type(reason).__name__}: {reason}", True) from err
    verdict = check(answer) if check else None
    if verdict is not None:
        raise _Failed(verdict[0], verdict[1])


@cache
def _opener() -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # urllib would turn a redirected POST into a GET without the body; a webhook never redirects.
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    return urllib.request.build_opener(NoRedirect)


def _retry_after(value: str) -> float:
    try:
        return min(max(float(value), 0.0), 5.0)
    except ValueError:
        return 0.0
