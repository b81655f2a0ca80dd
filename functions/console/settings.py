"""The console's settings, from the environment (validated at startup; every problem names its variable).

GRAYLANE_CONSOLE                    on (default) | off: mount /ui or not
GRAYLANE_CONSOLE_SESSION_KEY        signs session cookies and CSRF tokens (16+ characters; the same on every
                                    replica). Unset: a random key per process (sessions end with a restart)
GRAYLANE_CONSOLE_SESSION_TTL        how long a sign-in lasts, e.g. 8h (default), 30m
GRAYLANE_CONSOLE_SECURE_COOKIE      auto (default: Secure when the request came over https, directly or as
                                    X-Forwarded-Proto from a trusted proxy) | true | false
GRAYLANE_CONSOLE_ORIGINS            origins a POST may come from, comma-separated (default: this request's host)
GRAYLANE_CONSOLE_IDENTITY_HEADER    a header naming the signed-in user, set by a trusted reverse proxy (off by
                                    default), e.g. X-Forwarded-User or X-Auth-Request-User (oauth2-proxy)
GRAYLANE_CONSOLE_TRUSTED_PROXIES    the proxies' source addresses or CIDRs, comma-separated
GRAYLANE_CONSOLE_PROXY_SECRET       and/or a shared secret the proxy sends in X-Graylane-Proxy-Secret (16+)
GRAYLANE_CONSOLE_POLL               how often live pages look at the state store, e.g. 1s (default)
GRAYLANE_CONSOLE_STREAM_LIFETIME    an event stream ends after this (the browser reconnects), default 5m
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections.abc import Callable, Mapping

from functions.core.values import value
from functions.errors import ConfigError

log = logging.getLogger("graylane.console")

PREFIX = "/ui"
MIN_SECRET = 16
PROXY_SECRET_HEADER = "x-graylane-proxy-secret"
SECURE_CHOICES = ("auto", "true", "false")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network  # a trusted proxy's address or CIDR


@value
class ConsoleSettings:
    enabled: bool = True
    session_key: bytes = b""  # empty: ConsoleSettings.from_env makes a random one
    session_ttl: float = 8 * 3600.0
    secure_cookie: str = "auto"  # auto | true | false
    origins: tuple[str, ...] = ()  # empty: the request's own host
    identity_header: str = ""  # lower case; empty: no proxy sign-in
    trusted_proxies: tuple[Network, ...] = ()
    proxy_secret: str = ""
    poll: float = 1.0
    stream_lifetime: float = 300.0
    heartbeat: float = 15.0
    prefix: str = PREFIX
    key_is_random: bool = False
    login_failures: int = 10  # failed sign-ins per client address and minute before 429

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip()

        switch = get("GRAYLANE_CONSOLE").lower() or "on"
        if switch not in ("on", "off", "true", "false", "1", "0"):
            raise ConfigError(f"GRAYLANE_CONSOLE={switch[:20]!r} is not allowed; expected on or off")
        key = get("GRAYLANE_CONSOLE_SESSION_KEY")
        if key and len(key) < MIN_SECRET:
            raise ConfigError(
                f"GRAYLANE_CONSOLE_SESSION_KEY must be at least {MIN_SECRET} characters "
                "(use e.g. `openssl rand -hex 32`)"
            )
        secure = get("GRAYLANE_CONSOLE_SECURE_COOKIE").lower() or "auto"
        if secure not in SECURE_CHOICES:
            raise ConfigError(
                f"GRAYLANE_CONSOLE_SECURE_COOKIE={secure[:20]!r} is not allowed; expected "
                f"{', '.join(SECURE_CHOICES)}"
            )
        origins = _origins(get("GRAYLANE_CONSOLE_ORIGINS"))
        header, proxies, proxy_secret = _proxy_sign_in(get)
        poll = seconds(get("GRAYLANE_CONSOLE_POLL") or "1s", "GRAYLANE_CONSOLE_POLL", 0.05, 60)
        lifetime = seconds(
            get("GRAYLANE_CONSOLE_STREAM_LIFETIME") or "5m", "GRAYLANE_CONSOLE_STREAM_LIFETIME", 1, 3600
        )
        ttl = seconds(
            get("GRAYLANE_CONSOLE_SESSION_TTL") or "8h", "GRAYLANE_CONSOLE_SESSION_TTL", 60, 30 * 86400
        )
        if not key:  # info, not a warning: serve's first line on stdout/stderr is its listening address
            log.info(
                "GRAYLANE_CONSOLE_SESSION_KEY is not set: console sessions are signed with a random key of "
                "this process (they end when it restarts, and other replicas do not accept them)"
            )
        return cls(
            enabled=switch in ("on", "true", "1"),
            session_key=key.encode() or secrets.token_bytes(32),
            session_ttl=ttl,
            secure_cookie=secure,
            origins=origins,
            identity_header=header,
            trusted_proxies=proxies,
            proxy_secret=proxy_secret,
            poll=poll,
            stream_lifetime=lifetime,
            key_is_random=not key,
        )


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/").lower() for o in text.split(",") if o.strip())
    for origin in origins:
        if not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]:
            raise ConfigError(
                f"GRAYLANE_CONSOLE_ORIGINS entry {origin[:80]!r} is not an origin such as "
                "https://graylane.example.com"
            )
    return origins


def _proxy_sign_in(get: Callable[[str], str]) -> tuple[str, tuple[Network, ...], str]:
    """The identity header a trusted proxy sets, the proxies' networks and their shared secret."""
    header = get("GRAYLANE_CONSOLE_IDENTITY_HEADER").lower()
    proxies = tuple(
        _network(p.strip()) for p in get("GRAYLANE_CONSOLE_TRUSTED_PROXIES").split(",") if p.strip()
    )
    proxy_secret = get("GRAYLANE_CONSOLE_PROXY_SECRET")
    if proxy_secret and len(proxy_secret) < MIN_SECRET:
        raise ConfigError(f"GRAYLANE_CONSOLE_PROXY_SECRET must be at least {MIN_SECRET} characters")
    if header and not (proxies or proxy_secret):
        raise ConfigError(
            "GRAYLANE_CONSOLE_IDENTITY_HEADER needs GRAYLANE_CONSOLE_TRUSTED_PROXIES and/or "
            "GRAYLANE_CONSOLE_PROXY_SECRET: anyone else could send the header"
        )
    if header and not all(c.isalnum() or c == "-" for c in header):
        raise ConfigError(f"GRAYLANE_CONSOLE_IDENTITY_HEADER={header[:40]!r} is not a header name")
    if header in ("cookie", "authorization", "host", "origin", PROXY_SECRET_HEADER):
        raise ConfigError(f"GRAYLANE_CONSOLE_IDENTITY_HEADER cannot be {header}")
    return header, proxies, proxy_secret


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as err:
        raise ConfigError(
            f"GRAYLANE_CONSOLE_TRUSTED_PROXIES entry {text[:60]!r} is not an address or CIDR"
        ) from err


def seconds(text: str, name: str, low: float, high: float) -> float:
    """'5s', '500ms', '30m', '8h' or a bare number of seconds, within [low, high]; ConfigError naming `name`."""
    t = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], factor
            break
    try:
        result = float(t) * scale
    except ValueError:
        raise ConfigError(f"{name}={text[:20]!r} is not a duration such as 500ms, 5s, 30m or 8h") from None
    if not low <= result <= high:
        raise ConfigError(f"{name}={text[:20]!r} must be between {low:g} and {high:g} seconds")
    return result
