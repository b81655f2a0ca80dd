"""The analysis of a flag stage: the app's own request metrics, split by the flag variant each request got.

A flag stage's users are not a workload or a route: the stable and the canary are the same pods, and the
only thing that tells them apart is the variant the flag served. So the app counts its requests with the flag
and the variant as labels (spec.flags.metrics; OpenTelemetry's feature-flag attributes by default):

    http_requests_total{feature_flag_key="new-checkout", feature_flag_result_variant="on", code="500"}
    http_request_duration_seconds_bucket{feature_flag_key="new-checkout", feature_flag_result_variant="on", le=...}

and the built-in templates read them: the canary is the rolled-out variant, the stable the off variant
(success-rate, error-rate: requests and errors by variant; latency: the p95 of the histogram). A custom query
gets `{{flag}}` and `{{variant}}` (the rolled-out variant, and for a comparison's stable side the off one).
"""

from __future__ import annotations

import math
import re
from typing import Any

from functions.core.events import MetricSample
from functions.core.policy import FlagStage, MetricCheck, Policy, VariantMetrics
from functions.core.state import Release
from functions.errors import ConfigError
from functions.providers.metrics import templates as tp

COUNT_TEMPLATES = frozenset({"success-rate", "error-rate"})


def flag_stage(policy: Policy, release: Release) -> FlagStage | None:
    stage = policy.stages[release.stage] if 0 <= release.stage < len(policy.stages) else None
    return stage if isinstance(stage, FlagStage) and policy.flags is not None else None


def _selector(vm: VariantMetrics, key: str, variants: tuple[str, ...]) -> str:
    parts = [
        f'{vm.flag_label}="{_q(key)}"',
        f'{vm.variant_label}=~"{_q("|".join(re.escape(v) for v in variants))}"',
    ]
    if vm.selector:
        parts.append(vm.selector)
    return "{" + ", ".join(parts) + "}"


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def counts_query(vm: VariantMetrics, stage: FlagStage, seconds: int) -> str:
    sel = _selector(vm, stage.key, (stage.variant, stage.off))
    return f"sum by ({vm.variant_label}, {vm.code}) (increase({vm.requests}{sel}[{max(1, seconds)}s]))"


def latency_query(vm: VariantMetrics, stage: FlagStage, seconds: int) -> str:
    sel = _selector(vm, stage.key, (stage.variant, stage.off))
    return (
        f"histogram_quantile({tp.LATENCY_QUANTILE}, sum by ({vm.variant_label}, le) "
        f"(rate({vm.duration}{sel}[{max(1, seconds)}s]))) * {vm.to_ms:g}"
    )


def split(vm: VariantMetrics, stage: FlagStage, series: list[dict[str, Any]]) -> dict[str, tp.Counts]:
    """{canary|stable: Counts} of a counts query's series."""
    out: dict[str, tp.Counts] = {}
    for s in series:
        labels = s.get("metric", {})
        version = {stage.variant: tp.CANARY, stage.off: tp.STABLE}.get(labels.get(vm.variant_label, ""))
        if version is None:
            continue
        value = tp._value(s)
        if math.isnan(value):
            continue
        c = out.get(version, tp.Counts())
        bad = value if re.fullmatch(vm.errors, labels.get(vm.code, "")) else 0.0
        out[version] = tp.Counts(c.requests + value, c.errors + bad, True)
    return out


def measure_many(
    analysis: Any, pairs: list[tuple[Policy, Release]], now: float
) -> dict[str, tuple[MetricSample, ...]]:
    """Samples of every release in a flag stage (`analysis` is the PrometheusAnalysis: its clients and log)."""
    out: dict[str, tuple[MetricSample, ...]] = {}
    for policy, release in pairs:
        stage = flag_stage(policy, release)
        assert stage is not None and policy.analysis is not None and policy.flags is not None
        url = (policy.analysis.prometheus or analysis.url).rstrip("/")
        out[release.id] = tuple(
            _sample(analysis, url, policy, release, stage, m, now) for m in policy.analysis.metrics
        )
    return out


def _sample(
    analysis: Any, url: str, policy: Policy, release: Release, stage: FlagStage, m: MetricCheck, now: float
) -> MetricSample:
    assert policy.analysis is not None and policy.flags is not None
    vm = policy.flags.metrics
    window = max(1, round(policy.analysis.window))
    if m.query:
        return _custom(analysis, url, policy, release, stage, m, now)
    if m.template == "latency":
        if not vm.duration:
            return MetricSample(
                m.name,
                status="unavailable",
                detail="spec.flags.metrics.duration is empty: no latency histogram by variant",
            )
        answer = analysis._query(url, latency_query(vm, stage, window), now)
        if answer.error:
            return MetricSample(m.name, status="unavailable", query=answer.query, detail=answer.error)
        values = {
            labels.get(vm.variant_label): tp._value(s)
            for s in answer.series
            if (labels := s.get("metric", {}))
        }
        value, stable_value = values.get(stage.variant, math.nan), values.get(stage.off, math.nan)
        if math.isnan(value):
            return MetricSample(
                m.name,
                status="no-data",
                query=answer.query,
                detail=f"no latency of variant {stage.variant} of flag {stage.key}",
            )
        counts = analysis._query(url, counts_query(vm, stage, window), now)  # for the minimum-sample guard
        if counts.error:
            return MetricSample(m.name, status="unavailable", query=counts.query, detail=counts.error)
        split_ = split(vm, stage, counts.series)
        return MetricSample(
            m.name,
            value=value,
            stable_value=stable_value,
            query=answer.query,
            canary_requests=split_.get(tp.CANARY, tp.Counts()).requests,
            stable_requests=split_.get(tp.STABLE, tp.Counts()).requests,
        )
    seconds = window
    if m.judge == "sequential":  # counts since the stage started
        started = _epoch(release.stage_started_at or release.started_at)
        step = max(1, round(policy.analysis.interval))
        elapsed = now - started if started is not None else window
        seconds = max(window, math.ceil(elapsed / step) * step)
    answer = analysis._query(url, counts_query(vm, stage, seconds), now)
    if answer.error:
        return MetricSample(m.name, status="unavailable", query=answer.query, detail=answer.error)
    counts = split(vm, stage, answer.series)
    canary, stable = counts.get(tp.CANARY, tp.Counts()), counts.get(tp.STABLE, tp.Counts())
    if not canary.seen or canary.requests <= 0:
        return MetricSample(
            m.name,
            status="no-data",
            query=answer.query,
            detail=f"no requests served variant {stage.variant} of flag {stage.key} in {seconds}s",
        )
    return tp.ratio_sample(m, canary, stable, answer.query)


def _custom(
    analysis: Any, url: str, policy: Policy, release: Release, stage: FlagStage, m: MetricCheck, now: float
) -> MetricSample:
    assert policy.analysis is not None
    names = tp.target(policy, release.id).names
    variables = {
        **names,
        "window": tp.duration(policy.analysis.window),
        "interval": tp.duration(policy.analysis.interval),
        "target": names["canary"],
        "flag": stage.key,
        "variant": stage.variant,
    }
    try:
        query = tp.render(m.query, variables)
        stable_query = tp.render(m.query, {**variables, "target": names["stable"], "variant": stage.off})
    except ConfigError as err:
        return MetricSample(m.name, status="unavailable", query=m.query, detail=f"{policy.app}: {err}")
    answer = analysis._query(url, query, now)
    if answer.error:
        return MetricSample(m.name, status="unavailable", query=query, detail=answer.error)
    if not answer.series:
        return MetricSample(m.name, status="no-data", query=query, detail=f"empty result for {policy.app}")
    stable_value = None
    if m.judge == "comparison" and stable_query != query:
        stable = analysis._query(url, stable_query, now)
        if stable.error:
            return MetricSample(m.name, status="unavailable", query=stable_query, detail=stable.error)
        stable_value = tp._value(stable.series[0]) if stable.series else None
    return MetricSample(m.name, value=tp._value(answer.series[0]), stable_value=stable_value, query=query)


def _epoch(iso: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None
    except ValueError:
        return None
