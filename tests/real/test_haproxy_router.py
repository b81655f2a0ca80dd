"""HAProxyRouter against a real HAProxy 2.6 and two real backends, with real requests.

Everything goes through the admin socket while HAProxy keeps running: the last test checks that the
process that served the first request is the one that served the last (no reload, no restart).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.core.targeting import bucket
from functions.errors import ConfigError
from tests.real.conftest import HAProxyApp

pytestmark = pytest.mark.real

SALT = "web-42"
RULES = (
    Match(kind="header", name="location", value="shenzhen"),
    Match(kind="cookie", name="gray", regex="tr(ue|y)"),
    Match(kind="user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
    Match(kind="user-hash", name="x-uid", percent=20),
    Match(kind="source-ip", cidrs=("127.0.0.2/32",)),
)


@pytest.fixture(scope="module")
def first_pid(haproxy_app: HAProxyApp) -> int:
    return haproxy_app.router.pid()


@pytest.fixture(autouse=True)
def back_to_stable(haproxy_app: HAProxyApp, first_pid: int) -> None:
    haproxy_app.router.set_routes(haproxy_app.target, STABLE_ONLY)
    haproxy_app.router.set_protection(haproxy_app.target, Protection())


@pytest.mark.parametrize("canary", [20, 50, 5])
def test_weighted_split_over_5000_requests_is_within_two_points(haproxy_app: HAProxyApp, canary: int) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(canary))
    seen = app.client().split(5000)
    share = 100 * seen["canary"] / 5000
    print(
        f"\nsplit {100 - canary}/{canary}: stable {seen['stable']} canary {seen['canary']} -> {share:.2f} %"
    )
    assert seen["stable"] + seen["canary"] == 5000, seen
    assert abs(share - canary) <= 2, seen


def test_header_rule_sends_every_matching_request_to_the_canary(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(0, match=RULES[:1]))
    client = app.client()
    assert client.split(1000, {"Location": "shenzhen"}) == Counter(canary=1000)
    assert client.split(300, {"location": "beijing"}) == Counter(stable=300)
    assert client.split(300) == Counter(stable=300)


def test_header_rule_keeps_the_weighted_split_for_everyone_else(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(50, match=RULES[:1]))
    client = app.client()
    assert client.split(500, {"location": "shenzhen"}) == Counter(canary=500)
    others = client.split(1000, {"location": "beijing"})
    assert abs(others["canary"] - 500) <= 20, others


def test_cookie_rule_matches_the_cookie_value_by_regex(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(0, match=RULES[1:2]))
    client = app.client()
    assert client.split(200, {"Cookie": "session=abc; gray=true"}) == Counter(canary=200)
    assert client.split(200, {"Cookie": "gray=try"}) == Counter(canary=200)
    for cookie in ("gray=false", "gray=trueish", "notgray=true", "session=gray=true"):
        assert client.split(50, {"Cookie": cookie}) == Counter(stable=50), cookie


def test_user_id_tail_digit_sends_odd_ids_only_to_the_canary(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(0, match=RULES[2:3]))
    client = app.client()
    for uid in range(1000, 1100):
        _, backend = client.get(headers={"x-user-id": str(uid)})
        assert backend == ("canary" if uid % 2 else "stable"), uid
    assert client.split(50, {"x-user-id": "12a"}) == Counter(stable=50)


def test_user_hash_routes_exactly_the_users_whose_murmur3_bucket_is_below_the_percent(
    haproxy_app: HAProxyApp,
) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(0, match=RULES[3:4], salt=SALT))
    client = app.client()
    users = [f"u{i}" for i in range(240)] + [f"user-{i:05d}" for i in range(250)]  # every length mod 4
    users += ["用户-7", "josé", "ünïcode-42", "Ωmega", "ä", "日本", "x" * 300, "a b", "a,b|c", "%41"]
    routed = {u for u in users if client.get(headers={"x-uid": u.encode()})[1] == "canary"}
    expected = {u for u in users if bucket(u, SALT) < 20}
    assert routed == expected
    assert 60 < len(expected) < 140  # the salt really spreads users (about 20 % of 500)


def test_user_hash_uses_the_rules_own_salt_before_the_release_salt(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    rule = Match(kind="user-hash", name="x-uid", percent=50, salt="own")
    app.router.set_routes(app.target, RoutePlan.canary_at(0, match=(rule,), salt=SALT))
    client = app.client()
    users = [f"user-{i}" for i in range(200)]
    routed = {u for u in users if client.get(headers={"x-uid": u})[1] == "canary"}
    assert routed == {u for u in users if bucket(u, "own") < 50}
    assert routed != {u for u in users if bucket(u, SALT) < 50}


def test_source_ip_range_sends_that_client_to_the_canary(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(0, match=RULES[4:]))
    assert app.client("127.0.0.2").split(200) == Counter(canary=200)
    assert app.client("127.0.0.1").split(200) == Counter(stable=200)


def test_get_routes_round_trips_the_plan_and_shows_drift(haproxy_app: HAProxyApp) -> None:
    app, router = haproxy_app, haproxy_app.router
    plan = RoutePlan.canary_at(30, match=RULES, salt=SALT)
    router.set_routes(app.target, plan)
    assert router.get_routes(app.target) == plan
    router.cli.check("set server be_app/canary weight 90")  # someone edits HAProxy by hand
    assert router.get_routes(app.target).canary == 56  # 90 of 160
    router.set_routes(app.target, plan)
    router.cli.check(f"clear acl {app.directory / 'sources.acl'}")
    drifted = router.get_routes(app.target)
    assert drifted != plan and not any(m.kind == "source-ip" for m in drifted.match)
    router.set_routes(app.target, plan)
    assert router.get_routes(app.target) == plan
    router.set_routes(app.target, STABLE_ONLY)
    assert router.get_routes(app.target) == STABLE_ONLY
    assert app.client("127.0.0.2").split(100, {"location": "shenzhen"}) == Counter(stable=100)


def test_rate_limit_answers_429_above_the_limit_only_and_clearing_lifts_it(haproxy_app: HAProxyApp) -> None:
    app, router = haproxy_app, haproxy_app.router
    router.set_protection(app.target, Protection(rate_limit=RateLimit(average=50, burst=100)))
    assert router.get_protection(app.target) == {"rate": 50}
    client = app.client("127.0.0.5")
    below = client.split(40)
    above = client.split(60)
    assert below == Counter(stable=40)
    assert above["status 429"] >= 40 and 10 <= above["stable"] <= 20, above
    assert app.client("127.0.0.6").split(30) == Counter(stable=30)  # the limit is per client address
    router.set_protection(app.target, Protection())
    assert router.get_protection(app.target) == {}
    assert client.split(200) == Counter(stable=200)


def test_a_client_over_the_limit_keeps_getting_the_limit_instead_of_nothing(haproxy_app: HAProxyApp) -> None:
    """Refused requests do not count: a client hammering at several times the limit is limited, not shut out."""
    import time

    app, router = haproxy_app, haproxy_app.router
    router.set_protection(app.target, Protection(rate_limit=RateLimit(average=30, burst=30)))
    client = app.client("127.0.0.7")
    seen: Counter[str] = Counter()
    started = time.monotonic()
    while time.monotonic() - started < 3.0 and sum(seen.values()) < 20_000:  # bounded in time and count
        seen += client.split(20)
    elapsed = time.monotonic() - started
    assert seen["status 429"] > seen["stable"], seen  # well over the limit
    # about 30 admitted per second for the whole run, not just the first second
    assert 30 * (elapsed - 1) <= seen["stable"] <= 30 * (elapsed + 1), (seen, elapsed)


def test_circuit_breaker_opens_on_canary_errors_and_closes_when_they_stop(haproxy_app: HAProxyApp) -> None:
    app, router = haproxy_app, haproxy_app.router
    router.set_routes(app.target, RoutePlan.canary_at(100))
    breaker = CircuitBreaker("ResponseCodeRatio(500, 600, 0, 600) > 0.5")
    router.set_protection(app.target, Protection(circuit_breaker=breaker))
    assert router.get_protection(app.target) == {"breaker": 500}
    client = app.client()
    app.canary.set(error_rate=1.0)
    try:
        served_before = app.canary.served
        seen = client.split(400)
        assert seen["status 503"] > 250, seen  # open: HAProxy answers, only probes reach the canary
        assert app.canary.served - served_before < 150
    finally:
        app.canary.set(error_rate=0.0)
    for _ in range(100):  # probes succeed now; the failures leave the 1 s window within ~2 s
        if client.split(50) == Counter(canary=50):
            break
        threading.Event().wait(0.05)
    assert client.split(200) == Counter(canary=200)


def test_a_latency_breaker_is_refused_before_anything_changes(haproxy_app: HAProxyApp) -> None:
    app, router = haproxy_app, haproxy_app.router
    router.set_protection(app.target, Protection(rate_limit=RateLimit(average=10, burst=10)))
    latency = Protection(
        rate_limit=RateLimit(average=500, burst=1000),
        circuit_breaker=CircuitBreaker("LatencyAtQuantileMS(50.0) > 100"),
    )
    with pytest.raises(ConfigError, match="LatencyAtQuantileMS"):
        router.set_protection(app.target, latency)
    assert router.get_protection(app.target) == {"rate": 10}


def test_weights_change_under_load_without_a_single_failed_request(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    stop, results, errors = threading.Event(), Counter[str](), []

    def load() -> None:
        client = app.client()
        while not stop.is_set() and sum(results.values()) < 200_000:
            try:
                status, backend = client.get()
                results[backend if status == 200 else f"status {status}"] += 1
            except Exception as err:  # noqa: BLE001 (any failure is what the test counts)
                errors.append(repr(err))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        for weight in (0, 20, 50, 100, 0, 95, 5, 100, 50, 0) * 2:
            app.router.set_routes(app.target, RoutePlan.canary_at(weight))
            threading.Event().wait(0.1)
    finally:
        stop.set()
        worker.join(timeout=10)
    print(f"\nunder load: {dict(results)}, errors {len(errors)}")
    assert not errors, errors[:5]
    assert set(results) == {"stable", "canary"}, results
    assert results["canary"] > 500 and results["stable"] > 500


def test_reconcile_finds_the_config_and_changes_no_weight(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(35))
    app.router.reconcile(app.target)
    assert app.router.get_routes(app.target) == RoutePlan.canary_at(35)
    app.router.finalize(app.target)
    assert app.router.get_routes(app.target) == STABLE_ONLY


def test_haproxy_was_never_reloaded(haproxy_app: HAProxyApp, first_pid: int) -> None:
    assert haproxy_app.process.poll() is None
    assert haproxy_app.router.pid() == first_pid == haproxy_app.process.pid
    assert "reload" not in (haproxy_app.directory / "haproxy.log").read_text().lower()
