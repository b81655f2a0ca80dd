"""Alert-driven protection: which rules an alert matches and the protection they add up to. Pure.

Several firing alerts compose: the rate-limit factors multiply (never below a rule's floor), and any
firing rule with a circuit breaker arms it. A resolved alert keeps its effect for the rule's hold-down,
so a flapping alert does not make the limit oscillate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from functions.core.effects import Protection
from functions.core.policy import Policy, ProtectionRule, RateLimit
from functions.core.state import ActiveAlert, parse_iso


def rule_matches(rule: ProtectionRule, alertname: str, labels: dict[str, str]) -> bool:
    return rule.alert == alertname and all(labels.get(k) == v for k, v in rule.match)


def base_rate_limit(policy: Policy, base: Protection) -> RateLimit | None:
    """The limit to tighten: the one in force, else the one the protect stage will set."""
    if base.rate_limit:
        return base.rate_limit
    from functions.core.policy import ProtectStage

    for stage in policy.stages:
        if isinstance(stage, ProtectStage) and stage.rate_limit:
            return stage.rate_limit
    return None


def effective_protection(policy: Policy, base: Protection, alerts: tuple[ActiveAlert, ...]) -> Protection:
    rules = [policy.protection[a.rule] for a in alerts if 0 <= a.rule < len(policy.protection)]
    if not rules:
        return base
    rate = base.rate_limit
    limit = base_rate_limit(policy, base)
    factor = 1.0
    for r in rules:
        factor *= r.rate_limit_factor
    if limit and factor < 1.0:
        floor = max(r.floor for r in rules)
        average = max(floor, int(limit.average * factor))
        rate = RateLimit(average=average, burst=max(average, int(limit.burst * factor)), period=limit.period)
    breaker = next((r.circuit_breaker for r in rules if r.circuit_breaker), None) or base.circuit_breaker
    return Protection(rate_limit=rate, circuit_breaker=breaker)


def expire(policy: Policy, alerts: tuple[ActiveAlert, ...], now: datetime) -> tuple[ActiveAlert, ...]:
    """Drop resolved alerts whose hold-down has passed."""

    def alive(a: ActiveAlert) -> bool:
        if not a.resolved_at:
            return True
        hold = policy.protection[a.rule].hold_down if a.rule < len(policy.protection) else 0.0
        return parse_iso(a.resolved_at) + timedelta(seconds=hold) > now

    return tuple(a for a in alerts if alive(a))
