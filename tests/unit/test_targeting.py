"""Targeting helpers: the user-hash bucket, and the regular expressions routers write."""

from __future__ import annotations

import re

import mmh3
import pytest

from functions.core.targeting import bucket, bucket_regex, cookie_regex, digit_regex


def test_bucket_is_murmur3_of_salt_and_user_id_mod_100() -> None:
    # pinned so that an edge written in another language can check itself against it:
    # MurmurHash3_x86_32(seed 0) of "flask-7:10086" is 2778045273
    assert bucket("10086", "flask-7") == 2778045273 % 100 == 73
    assert bucket("10086", "flask-8") == mmh3.hash("flask-8:10086", signed=False) % 100


def test_bucket_matches_the_reference_murmur3_vectors() -> None:
    # published MurmurHash3_x86_32 test vectors (seed 0): "" -> 0, "hello" -> 0x248bfa47
    assert mmh3.hash("", signed=False) == 0
    assert mmh3.hash("hello", signed=False) == 0x248BFA47
    assert bucket("hello", "") == mmh3.hash(":hello", signed=False) % 100


def test_buckets_spread_evenly_and_the_salt_reshuffles_users() -> None:
    users = [str(n) for n in range(20_000)]
    first = [bucket(u, "app-1") for u in users]
    assert all(0 <= b < 100 for b in first)
    share = sum(b < 20 for b in first) / len(users)
    assert 0.18 < share < 0.22  # 20 % of users, give or take sampling noise
    second = [bucket(u, "app-2") for u in users]
    overlap = sum(a < 20 and b < 20 for a, b in zip(first, second, strict=True)) / len(users)
    assert overlap < 0.06  # another release picks (almost) independent users: ~4 % expected


@pytest.mark.parametrize("percent", [1, 2, 9, 10, 11, 19, 20, 21, 50, 55, 99, 100])
def test_bucket_regex_matches_exactly_the_buckets_below_percent(percent: int) -> None:
    pattern = re.compile(bucket_regex(percent))
    assert [b for b in range(100) if pattern.search(str(b))] == list(range(percent))
    assert not pattern.search("020") and not pattern.search("") and not pattern.search("1x")


def test_bucket_regex_has_the_documented_shape() -> None:
    assert bucket_regex(20) == "^([0-9]|1[0-9])$"
    with pytest.raises(ValueError, match="1..100"):
        bucket_regex(0)


def test_digit_regex_matches_ids_by_their_last_digit() -> None:
    odd = re.compile(digit_regex([9, 1, 3, 7, 5]))
    assert digit_regex([9, 1, 3, 7, 5]) == "^.*[13579]$"
    assert [u for u in ("10", "11", "7", "1002", "u-1003", "") if odd.search(u)] == ["11", "7", "u-1003"]
    with pytest.raises(ValueError):
        digit_regex([])
    with pytest.raises(ValueError):
        digit_regex([10])


@pytest.mark.parametrize(
    ("header", "hit"),
    [
        ("canary=always", True),
        ("a=1; canary=always", True),
        ("canary=always; b=2", True),
        ("a=1;canary=always;b=2", True),
        ("canary=alwaysx", False),
        ("xcanary=always", False),
        ("canary=never", False),
        ("", False),
    ],
)
def test_cookie_regex_finds_one_cookie_in_the_header(header: str, hit: bool) -> None:
    assert bool(re.fullmatch(cookie_regex("canary", value="always"), header)) is hit


def test_cookie_regex_embeds_an_anchored_regex_for_the_value() -> None:
    pattern = cookie_regex("beta", regex="^(on|yes)$")
    assert re.fullmatch(pattern, "x=1; beta=yes")
    assert not re.fullmatch(pattern, "beta=yesno")
