"""Who is signed in to the console, and whether a POST really comes from its own pages. Standard library only.

- **Session cookie** (`graylane_session`, Path=/ui, HttpOnly, SameSite=Strict, Secure behind TLS):
  base64url(JSON {u: user, s: session id, t: token id, e: expiry}) "." base64url(HMAC-SHA256(key, payload)).
  `t` is an HMAC of the API token the user signed in with: a session ends as soon as that token is no longer
  configured, not only when it expires. Made by `POST /ui/login` from an API token (GRAYLANE_API_TOKENS).
- **Trusted proxy**: with GRAYLANE_CONSOLE_IDENTITY_HEADER, a request whose direct peer is one of
  GRAYLANE_CONSOLE_TRUSTED_PROXIES and/or that carries GRAYLANE_CONSOLE_PROXY_SECRET is signed in as the
  header's user; from anyone else the header is ignored.
- **CSRF**: every POST needs the session's token (HMAC of its id; a hidden form field or the X-CSRF-Token
  header) and an Origin (or, without one, a Referer) of this site. The login form, before any session, carries
  a double-submit token: a random cookie and an HMAC of it in the form.
All comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from functions.core.values import value

SESSION_COOKIE = "graylane_session"
LOGIN_COOKIE = "graylane_login"
FLASH_COOKIE = "graylane_flash"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_USER = 256


@value
class Signed:
    """A signed-in user of the console."""

    user: str
    method: str  # token | proxy
    sid: str  # session id (proxy: derived from the user)
    expires: float = 0.0  # Unix seconds; 0 for proxy identities (per request)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, *parts: str) -> bytes:
    return hmac.new(key, "\x1f".join(parts).encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


def sign(key: bytes, purpose: str, payload: Mapping[str, Any]) -> str:
    """`payload` as a cookie value only this key can make, for `purpose` (a session is no flash message)."""
    body = _b64(json.dumps(dict(payload), separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_mac(key, purpose, body))}"


def unsign(key: bytes, purpose: str, text: str) -> dict[str, Any] | None:
    """The payload of a value `sign` made with this key and purpose; None for anything else."""
    body, sep, mac = (text or "").partition(".")
    if not sep or len(text) > 4096:
        return None
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _mac(key, purpose, body)):
        return None
    try:
        data = json.loads(_unb64(body))
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None


def token_user(tokens: Mapping[str, str], token: str) -> str | None:
    """The user of API token `token`, comparing against every configured token (no early exit)."""
    found = None
    given = token.strip().encode("utf-8", "surrogateescape")
    for known, user in tokens.items():
        if hmac.compare_digest(known.encode(), given):
            found = user
    return found if given else None


def token_id(key: bytes, token: str) -> str:
    return _b64(_mac(key, "token", token))[:22]


def new_session(key: bytes, user: str, token: str, ttl: float, now: float) -> tuple[Signed, str]:
    """(the session, its cookie value) for `user` signed in with `token`."""
    sid = secrets.token_urlsafe(18)
    expires = now + ttl
    cookie = sign(key, "session", {"u": user, "s": sid, "t": token_id(key, token), "e": int(expires)})
    return Signed(user=user, method="token", sid=sid, expires=expires), cookie


def session_from(key: bytes, cookie: str, tokens: Mapping[str, str], now: float) -> Signed | None:
    """The session a cookie holds, if it is ours, unexpired, and its token still names its user."""
    data = unsign(key, "session", cookie)
    if data is None:
        return None
    user, sid, tid, expires = data.get("u"), data.get("s"), data.get("t"), data.get("e")
    if not (
        isinstance(user, str) and isinstance(sid, str) and isinstance(tid, str) and isinstance(expires, int)
    ):
        return None
    if expires <= now:
        return None
    still = False
    for token, owner in tokens.items():  # revoked or reassigned tokens end their sessions
        if hmac.compare_digest(token_id(key, token), tid) and owner == user:
            still = True
    return Signed(user=user, method="token", sid=sid, expires=float(expires)) if still else None


def csrf_token(key: bytes, who: Signed) -> str:
    return _b64(_mac(key, "csrf", who.method, who.sid))[:32]


def csrf_ok(key: bytes, who: Signed, given: str) -> bool:
    return bool(given) and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), csrf_token(key, who).encode()
    )


def login_nonce() -> str:
    return secrets.token_urlsafe(18)


def login_token(key: bytes, nonce: str) -> str:
    return _b64(_mac(key, "login", nonce))[:32]


def login_ok(key: bytes, nonce: str, given: str) -> bool:
    return bool(nonce and given) and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), login_token(key, nonce).encode()
    )


def clean_user(raw: str) -> str:
    """A proxy's user name as given, or '' when it is empty, too long or holds control characters."""
    user = raw.strip()
    if not user or len(user) > MAX_USER or any(ord(c) < 32 or ord(c) == 127 for c in user):
        return ""
    return user


def trusted_peer(client: str, networks: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in net for net in networks)


def proxy_identity(
    headers: Mapping[str, str],
    client: str,
    header: str,
    networks: tuple[Any, ...],
    secret: str,
    secret_header: str,
) -> Signed | None:
    """The user a trusted proxy names in `header`; None when the header is off, absent, or not from the proxy."""
    if not header:
        return None
    raw = headers.get(header, "")
    if not raw:
        return None
    if networks and not trusted_peer(client, networks):
        return None
    if secret and not hmac.compare_digest(
        headers.get(secret_header, "").encode("utf-8", "surrogateescape"), secret.encode()
    ):
        return None
    user = clean_user(raw)
    if not user:
        return None
    return Signed(user=user, method="proxy", sid=hashlib.sha256(user.encode()).hexdigest()[:24])


def origin_ok(headers: Mapping[str, str], host: str, allowed: tuple[str, ...]) -> bool:
    """A POST's Origin (or, when a browser sent none, its Referer) is this site: one of `allowed`, or without
    them the same host[:port] the request was sent to. Neither header: refused."""
    origin = headers.get("origin", "")
    if not origin or origin == "null":
        referer = headers.get("referer", "")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
        if not origin:
            return False
    origin = origin.strip().rstrip("/").lower()
    if allowed:
        return origin in allowed
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host.strip().lower()


class Throttle:
    """Failed sign-ins per client address in a sliding minute; past `limit` the address waits (429)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Any = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str) -> bool:
        with self._lock:
            recent = self._recent(client)
            return len(recent) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())
            if len(self._failures) > 10_000:  # bounded: forget addresses whose failures have aged out
                cutoff = self.clock() - self.window
                for stale in [c for c, q in self._failures.items() if not q or q[-1] < cutoff]:
                    del self._failures[stale]

    def _recent(self, client: str) -> deque[float]:
        queue = self._failures.setdefault(client, deque())
        cutoff = self.clock() - self.window
        while queue and queue[0] < cutoff:
            queue.popleft()
        return queue
