"""Built-in PromQL templates per router, batched over releases, and custom-query templating. No I/O.

Which series a router has and which labels name a version are its module's declaration
(functions/providers/routers/<provider>.py: METRICS, measured_by, versions); this module only builds and
splits the queries. Every router exports a request counter with a status-code label and (except HAProxy) a duration
histogram. One counts query per router answers requests AND 5xx of every release at once: it sums the
counter `by` the labels that identify a version (service, workload, backend server) and the code label;
Python then splits the series per release and version. Releases whose count range differs (cumulative
counts since each release's analysis started) become `or`-joined terms of the same query, so a tick
costs one HTTP query per metric kind per router, whatever the number of releases.

Latency is in milliseconds: the 95th percentile from the histogram (Traefik, Istio, NGINX), or
HAProxy's average response time over the last 1024 requests (it has no histograms).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import field
from typing import Any

from functions.core.events import MetricSample
from functions.core.policy import MetricCheck, Policy
from functions.core.routing import RouterMetrics, RouterModule
from functions.core.values import value
from functions.errors import ConfigError

LATENCY_QUANTILE = 0.95
STABLE, CANARY, BASELINE = "stable", "canary", "baseline"
CUSTOM_VARS = ("namespace", "app", "stable", "canary", "baseline", "window", "interval", "target")


def _series() -> Mapping[str, RouterMetrics]:
    from functions.providers.routers import REGISTRY

    return REGISTRY.series


class _Series(Mapping[str, RouterMetrics]):
    """source -> its standard series, as the router modules declare them (METRICS); read on first use."""

    def __getitem__(self, name: str) -> RouterMetrics:
        return _series()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_series())

    def __len__(self) -> int:
        return len(_series())


ROUTERS: Mapping[str, RouterMetrics] = _Series()


_compiled = functools.cache(re.compile)  # one lookup per label and series, without re's own cache overhead


@value
class Matcher:
    """Label values (exact, or a regular expression) that pick one version of one release."""

    labels: tuple[tuple[str, str], ...]  # (label, regex); exact names are escaped

    def matches(self, series: Mapping[str, str]) -> bool:
        return all(_compiled(rx).fullmatch(series.get(label, "")) is not None for label, rx in self.labels)


@value
class Target:
    """One release as the templates see it: who it is and which series are its stable and canary."""

    key: str  # release id
    router: str
    stable: Matcher  # the reference the canary is compared with: the stable, or the fresh baseline
    canary: Matcher
    names: dict[str, str] = field(default_factory=dict)  # template variables for custom queries
    reference: str = (
        STABLE  # whose series `stable` matches: "stable", or "baseline" (functions/core/baseline.py)
    )


def _module(policy: Policy) -> RouterModule | None:
    from functions.providers.routers import REGISTRY

    return REGISTRY.get(policy.router.provider)


def metrics_source(policy: Policy) -> str:
    """Whose standard metrics measure `policy`: its router's own, or another's (a gateway-api route served by
    Traefik's Gateway provider is measured in traefik_service_*), as its router module says (measured_by);
    the router's name when no built-in series measure it."""
    module = _module(policy)
    source = module.measured_by(policy.router.options) if module is not None else ""
    return source or policy.router.provider


def target(policy: Policy, key: str, baseline: bool = False) -> Target:
    """Which series belong to `policy`'s stable and canary, for its router's standard metrics (the router
    module's `versions`). `baseline`: the canary is compared with the fresh baseline (baseline.compared), so the
    reference side of every query (`Target.stable`) is the baseline's series; a custom query's reference
    ({{target}} of the stable side) is the baseline's name."""
    module = _module(policy)
    names = {
        "namespace": policy.namespace,
        "app": policy.name,
        "stable": policy.stable_workload,
        "canary": policy.canary_workload,
        "baseline": policy.baseline_workload,
    }
    reference = BASELINE if baseline else STABLE
    if module is None or not module.measured_by(policy.router.options):
        versions = module.versions(policy) if module is not None else None
        nothing = Matcher((("__name__", "(?!)"),))  # no built-in metrics: matches nothing
        return Target(
            key,
            policy.router.provider,
            nothing,
            nothing,
            {**names, **(versions.names if versions else {})},
            reference,
        )
    versions = module.versions(policy)
    if baseline and not versions.baseline:
        raise ConfigError(
            f"router {policy.router.provider} names no baseline series: spec.baseline cannot be measured"
        )
    stable = versions.baseline if baseline else versions.stable
    return Target(
        key,
        policy.router.provider,
        Matcher(stable),
        Matcher(versions.canary),
        {**names, **versions.names},
        reference,
    )


def has_builtin(router: str) -> bool:
    return router in ROUTERS


def _selector(router: RouterMetrics, targets: Iterable[Target], extra: str = "") -> str:
    """One selector covering every version of every target: a regex union per identity label."""
    values: dict[str, list[str]] = {label: [] for label in router.identity}
    for t in targets:
        for m in (t.stable, t.canary):
            for label, rx in m.labels:
                if rx not in values[label]:
                    values[label].append(rx)
    parts = [router.fixed] if router.fixed else []
    parts += [f'{label}=~"{_quote("|".join(rxs))}"' for label, rxs in values.items()]
    if extra:
        parts.append(extra)
    return "{" + ", ".join(parts) + "}"


def _quote(regex: str) -> str:
    return regex.replace("\\", "\\\\").replace('"', '\\"')


def _by_range(targets: Iterable[tuple[Target, int]]) -> dict[int, list[Target]]:
    groups: dict[int, list[Target]] = {}
    for t, seconds in targets:
        groups.setdefault(max(1, int(seconds)), []).append(t)
    return dict(sorted(groups.items()))


def counts_query(router: str, targets: Iterable[tuple[Target, int]]) -> str:
    """Requests per (version, status code) over each target's range (seconds), for all targets at once."""
    r = ROUTERS[router]
    by = ", ".join((*r.identity, r.code_label))
    terms = [
        f"sum by ({by}) (increase({r.requests}{_selector(r, ts)}[{seconds}s]))"
        for seconds, ts in _by_range(targets).items()
    ]
    return " or ".join(terms)


def latency_query(router: str, targets: Iterable[tuple[Target, int]]) -> str:
    """Latency in ms per version: p95 from the histogram, or HAProxy's rolling average."""
    r = ROUTERS[router]
    by = ", ".join(r.identity)
    if not r.duration_bucket:
        ts = [t for t, _ in targets]
        return f"avg by ({by}) ({r.duration_average}{_selector(r, ts)}) * 1000"
    terms = [
        f"histogram_quantile({LATENCY_QUANTILE}, sum by ({by}, le) "
        f"(rate({r.duration_bucket}{_selector(r, ts)}[{seconds}s]))) * {r.to_ms:g}"
        for seconds, ts in _by_range(targets).items()
    ]
    return " or ".join(terms)


def totals_query(router: str, targets: Iterable[Target]) -> str:
    """The request counters themselves (as last scraped) per (version, status code), for all targets at once:
    the guard takes differences of consecutive readings (exact counts, no extrapolation)."""
    r = ROUTERS[router]
    by = ", ".join((*r.identity, r.code_label))
    return f"sum by ({by}) ({r.requests}{_selector(r, targets)})"


def buckets_query(router: str, targets: Iterable[Target]) -> str:
    """The latency histogram's cumulative buckets (as last scraped) per version; "" without a histogram."""
    r = ROUTERS[router]
    if not r.duration_bucket:
        return ""
    return f"sum by ({', '.join(r.identity)}, le) ({r.duration_bucket}{_selector(r, targets)})"


def split_buckets(
    router: str, targets: Iterable[Target], series: list[dict[str, Any]]
) -> dict[str, dict[str, dict[float, float]]]:
    """Raw `buckets_query` result -> {release id: {stable|canary: {upper bound in ms: cumulative count}}}."""
    r = ROUTERS[router]
    out: dict[str, dict[str, dict[float, float]]] = {}
    tlist = list(targets)
    for s in series:
        labels = s.get("metric", {})
        try:
            le = float(labels.get("le", ""))
        except ValueError:
            continue
        bound = le * r.to_ms if le != float("inf") else le
        for t in tlist:
            for version, m in ((STABLE, t.stable), (CANARY, t.canary)):
                if m.matches(labels):
                    version_buckets = out.setdefault(t.key, {}).setdefault(version, {})
                    version_buckets[bound] = version_buckets.get(bound, 0.0) + _value(s)
    return out


@value
class Counts:
    requests: float = 0.0
    errors: float = 0.0
    seen: bool = False  # at least one series matched


def ratio_sample(
    m: MetricCheck,
    canary: Counts,
    stable: Counts,
    query: str,
    detail: str = "",
    reference: str = "stable",
) -> MetricSample:
    """An error-rate (or success-rate) sample of the canary beside its reference (the stable or a fresh
    baseline), from their request counts."""

    def rate(c: Counts) -> float:
        return c.errors / c.requests if c.requests > 0 else math.nan

    value, stable_value = rate(canary), rate(stable)
    if m.template == "success-rate":
        value, stable_value = 1 - value, 1 - stable_value
    return MetricSample(
        m.name,
        reference=reference,
        value=value,
        stable_value=stable_value,
        canary_requests=canary.requests,
        canary_errors=canary.errors,
        stable_requests=stable.requests,
        stable_errors=stable.errors,
        query=query,
        detail=detail,
    )


def split_counts(
    router: str, targets: Iterable[Target], series: list[dict[str, Any]]
) -> dict[str, dict[str, Counts]]:
    """Raw `counts_query` result -> {release id: {stable|canary: Counts}}."""
    r = ROUTERS[router]
    out: dict[str, dict[str, Counts]] = {}
    tlist = list(targets)
    for s in series:
        labels, value = s.get("metric", {}), _value(s)
        for t in tlist:
            for version, m in ((STABLE, t.stable), (CANARY, t.canary)):
                if m.matches(labels):
                    c = out.setdefault(t.key, {}).get(version, Counts())
                    bad = value if r.code_is_error(labels.get(r.code_label, "")) else 0.0
                    out[t.key][version] = Counts(c.requests + value, c.errors + bad, True)
    return out


def split_values(targets: Iterable[Target], series: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Raw per-version instant vector -> {release id: {stable|canary: value}} (NaN kept: no traffic).

    A version may have several series (Traefik: its Service as a weighted backend and, for the stable, the
    default route's own load balancer): a series without traffic (NaN) never hides one with traffic, and
    of several with traffic the highest (the slowest, for latency) is kept.
    """
    out: dict[str, dict[str, float]] = {}
    tlist = list(targets)
    for s in series:
        labels, v = s.get("metric", {}), _value(s)
        for t in tlist:
            for version, m in ((STABLE, t.stable), (CANARY, t.canary)):
                if m.matches(labels):
                    seen = out.setdefault(t.key, {}).get(version)
                    if seen is None or math.isnan(seen) or (not math.isnan(v) and v > seen):
                        out[t.key][version] = v
    return out


def _value(series: Mapping[str, Any]) -> float:
    try:
        return float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return float("nan")


def render(query: str, variables: Mapping[str, str]) -> str:
    """Substitute {{namespace}} {{app}} {{stable}} {{canary}} {{window}} {{interval}} {{target}}."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise ConfigError(
                f"custom query: unknown variable {{{{{name}}}}}; known: {', '.join(CUSTOM_VARS)}"
            )
        return variables[name]

    return re.sub(r"\{\{\s*([A-Za-z_]+)\s*\}\}", sub, query)


def duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"
