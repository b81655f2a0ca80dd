"""Targeting helpers shared by the routers and the edge that assigns buckets. Pure.

Proxies cannot hash a user id with a per-release salt, so `user-hash` rules work in two halves: an
edge (or the app) puts `bucket(user_id, salt)` into the `x-graylane-bucket` header, and the router
matches that header with `bucket_regex(percent)`. `user-id-digit` rules become a regular expression
over the user-id header; cookie rules a regular expression over the `Cookie` header where the proxy
has no cookie matcher of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import mmh3

BUCKET_HEADER = "x-graylane-bucket"


def bucket(user_id: str, salt: str) -> int:
    """The user's bucket 0..99 for this release: MurmurHash3 (x86, 32 bit, unsigned) of "salt:user_id"."""
    return int(mmh3.hash(f"{salt}:{user_id}", signed=False)) % 100


def bucket_regex(percent: int) -> str:
    """An anchored regular expression matching exactly the decimal bucket numbers below `percent`."""
    if not 1 <= percent <= 100:
        raise ValueError(f"a user-hash percent must be 1..100, got {percent}")
    if percent <= 10:
        return f"^[0-{percent - 1}]$" if percent > 1 else "^0$"
    tens, units = divmod(percent, 10)
    parts = ["[0-9]"]
    if tens >= 2:
        parts.append(("1" if tens == 2 else f"[1-{tens - 1}]") + "[0-9]")
    if units:
        parts.append(f"{tens}" + ("0" if units == 1 else f"[0-{units - 1}]"))
    return "^(" + "|".join(parts) + ")$"


def digit_regex(digits: Iterable[int]) -> str:
    """An anchored regular expression matching user ids whose last character is one of `digits`."""
    chosen = sorted(set(digits))
    if not chosen or any(not 0 <= d <= 9 for d in chosen):
        raise ValueError(f"user-id digits must be a non-empty set of 0..9, got {list(digits)}")
    return "^.*[" + "".join(str(d) for d in chosen) + "]$"


def cookie_regex(name: str, value: str = "", regex: str = "") -> str:
    """A regular expression over the whole `Cookie` header: cookie `name` has `value` (or matches `regex`)."""
    if regex:
        inner = regex.removeprefix("^")
        if inner.endswith("$") and not inner.endswith("\\$"):  # keep an escaped dollar
            inner = inner[:-1]
    else:
        inner = re.escape(value)
    return f"^(.*?;\\s*)?{re.escape(name)}=(?:{inner})(;.*)?$"


FLAG_BUCKETS = 100.0


def flag_bucket(user_id: str, salt: str) -> float:
    """Where flagd's `fractional` puts the user of a graylane flag rollout: 0 <= bucket <= 100.

    graylane's targeting hashes the same text as a userHash rule, "salt:user_id" (MurmurHash3 x86 32-bit), as
    flagd's custom bucketing expression; flagd (v0.11, and the OpenFeature flagd providers of that generation)
    maps the signed hash h to |h| / (2^31 - 1) * 100 and gives the first variant (graylane's rolled-out one)
    to buckets below its percentage. So a user is in at `percent` iff flag_bucket < percent, and in at every
    larger percentage too: the buckets are nested.
    """
    h = int(mmh3.hash(f"{salt}:{user_id}", signed=True))
    return abs(h) / (2**31 - 1) * FLAG_BUCKETS


def flag_variant(user_id: str, salt: str, percent: int, variant: str, off: str) -> str:
    """The variant flagd serves `user_id` while `variant` is rolled out to `percent` % with `salt` (a user
    without an id gets `off` until the rollout reaches everyone)."""
    if percent >= 100:
        return variant
    return variant if percent > 0 and user_id and flag_bucket(user_id, salt) < percent else off
