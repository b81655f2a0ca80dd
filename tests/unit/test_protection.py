"""Alert-driven protection: rule matching, composed tightening with floors, breakers, and hold-down expiry."""

from __future__ import annotations

from datetime import timedelta

from functions.core.effects import Protection
from functions.core.policy import CircuitBreaker, ProtectionRule, ProtectStage, RateLimit
from functions.core.protection import base_rate_limit, effective_protection, expire, rule_matches
from functions.core.state import ActiveAlert, iso
from tests.unit.machine_helpers import T0, make_policy

BREAKER = CircuitBreaker("LatencyAtQuantileMS(50.0) > 100")
BASE_BREAKER = CircuitBreaker("NetworkErrorRatio() > 0.3")
LIMIT = RateLimit(average=100, burst=200, period=2.0)
POLICY = make_policy(
    ProtectStage(rate_limit=LIMIT),
    protection=(
        ProtectionRule(
            alert="HighLatency", rate_limit_factor=0.5, floor=10, hold_down=60, circuit_breaker=BREAKER
        ),
        ProtectionRule(
            alert="Overload", match=(("severity", "page"),), rate_limit_factor=0.1, floor=30, hold_down=0
        ),
        ProtectionRule(alert="Noisy"),  # factor 1: matches, tightens nothing
    ),
)


def firing(rule: int, fingerprint: str = "", resolved_at: str = "") -> ActiveAlert:
    return ActiveAlert(
        fingerprint=fingerprint or f"fp-{rule}", rule=rule, since=iso(T0), resolved_at=resolved_at
    )


def test_rule_matches_name_and_every_label() -> None:
    high, overload = POLICY.protection[0], POLICY.protection[1]

    assert rule_matches(high, "HighLatency", {})
    assert not rule_matches(high, "highlatency", {})
    assert rule_matches(overload, "Overload", {"severity": "page", "team": "a"})
    assert not rule_matches(overload, "Overload", {"severity": "ticket"})
    assert not rule_matches(overload, "Overload", {})


def test_no_alerts_leave_the_base_untouched() -> None:
    base = Protection(rate_limit=LIMIT, circuit_breaker=BASE_BREAKER)

    assert effective_protection(POLICY, base, ()) is base


def test_one_alert_scales_average_and_burst_and_arms_its_breaker() -> None:
    got = effective_protection(
        POLICY, Protection(rate_limit=LIMIT, circuit_breaker=BASE_BREAKER), (firing(0),)
    )

    assert got == Protection(rate_limit=RateLimit(50, 100, period=2.0), circuit_breaker=BREAKER)


def test_factors_multiply_and_the_highest_floor_holds() -> None:
    got = effective_protection(POLICY, Protection(rate_limit=LIMIT), (firing(0), firing(1)))

    assert got.rate_limit == RateLimit(average=30, burst=30, period=2.0)  # 100 * 0.05 = 5 < floor 30


def test_burst_never_drops_below_the_average() -> None:
    policy = make_policy(protection=(ProtectionRule(alert="A", rate_limit_factor=0.5, floor=80),))

    got = effective_protection(policy, Protection(rate_limit=RateLimit(100, 100)), (firing(0),))

    assert got.rate_limit == RateLimit(average=80, burst=80)


def test_a_rule_without_tightening_keeps_the_limit_and_the_base_breaker() -> None:
    base = Protection(rate_limit=LIMIT, circuit_breaker=BASE_BREAKER)

    assert effective_protection(POLICY, base, (firing(2),)) == base


def test_before_the_protect_stage_the_stage_limit_is_tightened() -> None:
    assert base_rate_limit(POLICY, Protection()) == LIMIT
    assert effective_protection(POLICY, Protection(), (firing(0),)).rate_limit == RateLimit(
        50, 100, period=2.0
    )


def test_without_any_limit_only_the_breaker_is_armed() -> None:
    policy = make_policy(protection=POLICY.protection)

    assert base_rate_limit(policy, Protection()) is None
    assert effective_protection(policy, Protection(), (firing(0),)) == Protection(circuit_breaker=BREAKER)


def test_alerts_naming_unknown_rules_are_ignored() -> None:
    assert effective_protection(POLICY, Protection(rate_limit=LIMIT), (firing(7),)) == Protection(
        rate_limit=LIMIT
    )


def test_resolved_alerts_expire_after_their_hold_down() -> None:
    resolved = iso(T0)
    alerts = (firing(0, "a", resolved), firing(1, "b", resolved), firing(0, "c"), firing(9, "d", resolved))

    assert expire(POLICY, alerts, T0 - timedelta(seconds=1)) == alerts
    assert expire(POLICY, alerts, T0) == (
        alerts[0],
        alerts[2],
    )  # zero hold-down (and unknown rules) end at once
    assert expire(POLICY, alerts, T0 + timedelta(seconds=59)) == (alerts[0], alerts[2])
    assert expire(POLICY, alerts, T0 + timedelta(seconds=60)) == (alerts[2],)
