"""Prometheus analysis through prometheus-api-client: measure every active release in a few queries.

`PrometheusAnalysis.measure_many` groups releases by (Prometheus URL, router metrics) and runs, per group, at
most one query per metric kind:

- counts over the policy window (threshold / comparison judges, and the minimum-sample guard);
- counts since the release's stage started (the sequential judge needs cumulative counts);
- latency per version over the window;

plus one query per custom PromQL metric and release (those cannot be shared). `totals_many` reads, for the
guard, the request counters and latency buckets themselves (two instant queries per router, whatever the
number of releases). Every sample carries its
query and the raw series it was computed from. An unreachable Prometheus (after `retries` retries and
`timeout` seconds each) or an error answer gives status "unavailable"; no canary traffic gives
"no-data": both are inconclusive, never a pass.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from functions.core.baseline import compared
from functions.core.counters import Totals
from functions.core.events import MetricSample
from functions.core.policy import MetricCheck, Policy
from functions.core.state import Release
from functions.errors import ConfigError
from functions.providers.metrics import templates as tp
from functions.providers.metrics import variants

COUNT_TEMPLATES = frozenset({"success-rate", "error-rate"})


@dataclass
class Answer:
    query: str
    series: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""  # non-empty: Prometheus could not answer


@dataclass
class _Plan:
    """What one release needs from the group queries."""

    policy: Policy
    release: Release
    target: tp.Target
    window: int  # seconds
    since: int  # seconds since the stage started, at least the window


def _as_pair(policy: Policy, release: Release) -> Policy:
    """Per-version model: the release's origin and target Deployments stand where the pair's stable and canary
    workloads are, so the templates name each version's series by its own Deployment."""
    origin, target = release.origin_slot, release.target_slot
    if origin is None or target is None:
        return policy
    return replace(policy, workload=replace(policy.workload, name=origin.workload, canary=target.workload))


class PrometheusAnalysis:
    """The measuring part of the runtime's Providers: Prometheus at `url` (a policy may name its own)."""

    def __init__(
        self, url: str, timeout: float = 5.0, retries: int = 2, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.clock = clock
        self.queries: list[str] = []  # every query sent, in order (observability and tests)
        self._clients: dict[str, PrometheusConnect] = {}
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------------------
    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.measure_many([(policy, release)]).get(release.id, ())

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        now = self.clock()
        flagged = [
            (p, r) for p, r in pairs if p.analysis is not None and variants.flag_stage(p, r) is not None
        ]
        if flagged:  # a flag stage is measured on the app's metrics by variant (metrics/variants.py)
            done = {r.id for _, r in flagged}
            return {
                **variants.measure_many(self, flagged, now),
                **self.measure_many([(p, r) for p, r in pairs if r.id not in done]),
            }
        plans = [self._plan(p, r, now) for p, r in pairs if p.analysis is not None]
        groups: dict[tuple[str, str], list[_Plan]] = {}
        for plan in plans:
            assert plan.policy.analysis is not None
            url = (plan.policy.analysis.prometheus or self.url).rstrip("/")
            groups.setdefault((url, tp.metrics_source(plan.policy)), []).append(plan)
        out: dict[str, tuple[MetricSample, ...]] = {}
        for (url, router), group in groups.items():
            out.update(self._measure_group(url, router, group, now))
        return out

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Totals]:
        """The raw counters of every release's stable and canary (functions/core/counters.py)."""
        now = self.clock()
        groups: dict[tuple[str, str], list[tuple[Policy, Release, tp.Target]]] = {}
        for policy, release in pairs:
            source = tp.metrics_source(policy)
            if policy.analysis is None or not tp.has_builtin(source):
                continue
            url = (policy.analysis.prometheus or self.url).rstrip("/")
            target = tp.target(policy, release.id, baseline=compared(policy, release))
            groups.setdefault((url, source), []).append((policy, release, target))
        out: dict[str, Totals] = {}
        for (url, router), group in groups.items():
            targets = [t for _, _, t in group]
            counts = self._query(url, tp.totals_query(router, targets), now)
            queries = counts.query
            if counts.error:
                out.update({r.id: Totals(status="unavailable", detail=counts.error) for _, r, _ in group})
                continue
            split = tp.split_counts(router, targets, counts.series)
            buckets: dict[str, dict[str, dict[float, float]]] = {}
            if query := tp.buckets_query(router, targets):
                answer = self._query(url, query, now)
                if answer.error:
                    out.update({r.id: Totals(status="unavailable", detail=answer.error) for _, r, _ in group})
                    continue
                buckets = tp.split_buckets(router, targets, answer.series)
                queries += f"; {query}"
            for _, release, target in group:
                versions = split.get(release.id, {})
                canary, stable = versions.get(tp.CANARY, tp.Counts()), versions.get(tp.STABLE, tp.Counts())
                hist = buckets.get(release.id, {})
                c, s = hist.get(tp.CANARY, {}), hist.get(tp.STABLE, {})
                bounds = sorted(set(c) | set(s))
                out[release.id] = Totals(
                    status="ok" if canary.seen or stable.seen else "no-data",
                    canary_requests=canary.requests,
                    canary_errors=canary.errors,
                    stable_requests=stable.requests,
                    stable_errors=stable.errors,
                    buckets=tuple((b, c.get(b, 0.0), s.get(b, 0.0)) for b in bounds)
                    if bounds and math.isinf(bounds[-1])
                    else (),
                    query=queries,
                    reference=target.reference,
                )
        return out

    # -- planning -----------------------------------------------------------------------------------
    def _plan(self, policy: Policy, release: Release, now: float) -> _Plan:
        analysis = policy.analysis
        assert analysis is not None
        window = max(1, round(analysis.window))
        started = _epoch(release.stage_started_at or release.started_at)
        elapsed = now - started if started is not None else window
        step = max(1, round(analysis.interval))
        since = max(window, math.ceil(elapsed / step) * step)  # rounded up so releases share range terms
        target = tp.target(_as_pair(policy, release), release.id, baseline=compared(policy, release))
        if release.watching and release.target_slot is None:
            # pair model, promoted: the new version is the stable workload, the warm previous the canary
            target = replace(target, stable=target.canary, canary=target.stable)
        return _Plan(policy, release, target, window, since)

    def _measure_group(
        self, url: str, router: str, group: list[_Plan], now: float
    ) -> dict[str, tuple[MetricSample, ...]]:
        """The samples of every release of `group` (one Prometheus, one router): the built-in templates'
        from a few queries the whole group shares, each custom query on its own."""
        builtin = tp.has_builtin(router)
        answers = self._group_answers(url, router, group, now) if builtin else {}
        targets = [p.target for p in group]
        split = {
            kind: tp.split_counts(router, targets, a.series)
            for kind, a in answers.items()
            if kind != "latency"
        }
        latency = tp.split_values(targets, answers["latency"].series) if "latency" in answers else {}
        out: dict[str, tuple[MetricSample, ...]] = {}
        for plan in group:
            out[plan.release.id] = tuple(
                self._custom(url, plan, m, now)
                if m.query
                else self._builtin(plan, m, answers, split, latency)
                if builtin
                else _no_template(m, router)
                for m in _metrics(plan)
            )
        return out

    def _group_answers(self, url: str, router: str, group: list[_Plan], now: float) -> dict[str, Answer]:
        """The queries the group's built-in metrics share, only those they need: the requests in each
        release's window ("window"), since its stage started for the sequential judges but latency's
        ("since"), and the latency quantiles ("latency")."""
        checks = [(plan, m) for plan in group for m in _metrics(plan) if not m.query]
        needs = {m.template for _, m in checks}
        if not needs:
            return {}
        wants_since = {
            plan.release.id for plan, m in checks if m.judge == "sequential" and m.template != "latency"
        }
        answers = {
            "window": self._query(url, tp.counts_query(router, [(p.target, p.window) for p in group]), now)
        }
        since = [(p.target, p.since) for p in group if p.release.id in wants_since]
        if since:
            answers["since"] = self._query(url, tp.counts_query(router, since), now)
        if "latency" in needs:
            lat = [(p.target, p.window) for p in group]
            answers["latency"] = self._query(url, tp.latency_query(router, lat), now)
        return answers

    # -- samples ------------------------------------------------------------------------------------
    def _builtin(
        self,
        plan: _Plan,
        m: MetricCheck,
        answers: dict[str, Answer],
        split: dict[str, dict[str, dict[str, tp.Counts]]],
        latency: dict[str, dict[str, float]],
    ) -> MetricSample:
        rid = plan.release.id
        kind = "since" if m.judge == "sequential" else "window"
        source = answers["latency" if m.template == "latency" else kind]
        if source.error or (m.template == "latency" and answers["window"].error):
            error = source.error or answers["window"].error
            return MetricSample(m.name, status="unavailable", query=source.query, detail=error)
        counts = split[kind].get(rid, {}) if m.template in COUNT_TEMPLATES else split["window"].get(rid, {})
        canary, stable = counts.get(tp.CANARY, tp.Counts()), counts.get(tp.STABLE, tp.Counts())
        raw = _raw(source.series, plan.target)
        if m.template == "latency":
            values = latency.get(rid, {})
            value, stable_value = values.get(tp.CANARY, math.nan), values.get(tp.STABLE, math.nan)
            if math.isnan(value):
                return MetricSample(
                    m.name,
                    status="no-data",
                    query=source.query,
                    detail=f"no canary latency for {plan.policy.app} {raw}",
                )
            return MetricSample(
                m.name,
                reference=plan.target.reference,
                value=value,
                stable_value=stable_value,
                canary_requests=canary.requests,
                stable_requests=stable.requests,
                query=source.query,
                detail=raw,
            )
        if not canary.seen or canary.requests <= 0:
            span = plan.since if kind == "since" else plan.window
            return MetricSample(
                m.name,
                status="no-data",
                query=source.query,
                detail=f"no canary requests for {plan.policy.app} in the last {span}s",
            )
        return tp.ratio_sample(m, canary, stable, source.query, raw, plan.target.reference)

    def _custom(self, url: str, plan: _Plan, m: MetricCheck, now: float) -> MetricSample:
        analysis = plan.policy.analysis
        assert analysis is not None
        variables = {
            **plan.target.names,
            "window": tp.duration(analysis.window),
            "interval": tp.duration(analysis.interval),
            "target": plan.target.names["canary"],
        }
        try:
            query = tp.render(m.query, variables)
            stable_query = tp.render(
                m.query, {**variables, "target": plan.target.names[plan.target.reference]}
            )
        except ConfigError as err:
            return MetricSample(
                m.name, status="unavailable", query=m.query, detail=f"{plan.policy.app}: {err}"
            )
        answer = self._query(url, query, now)
        if answer.error:
            return MetricSample(m.name, status="unavailable", query=query, detail=answer.error)
        if not answer.series:
            return MetricSample(
                m.name, status="no-data", query=query, detail=f"empty result for {plan.policy.app}"
            )
        stable_value = None
        if m.judge == "comparison" and stable_query != query:
            stable = self._query(url, stable_query, now)
            if stable.error:
                return MetricSample(m.name, status="unavailable", query=stable_query, detail=stable.error)
            stable_value = tp._value(stable.series[0]) if stable.series else None
        value = tp._value(answer.series[0])
        return MetricSample(
            m.name,
            reference=plan.target.reference,
            value=value,
            stable_value=stable_value,
            query=query,
            detail=_compact(answer.series),
        )

    # -- I/O ----------------------------------------------------------------------------------------
    def _client(self, url: str) -> PrometheusConnect:
        with self._lock:
            if url not in self._clients:
                retry = Retry(
                    total=self.retries,
                    connect=self.retries,
                    read=self.retries,
                    backoff_factor=0.1,
                    status_forcelist=(429, 500, 502, 503, 504),
                    allowed_methods=("GET",),
                    raise_on_status=False,
                )
                self._clients[url] = PrometheusConnect(url, retry=retry, timeout=self.timeout)
            return self._clients[url]

    def _query(self, url: str, query: str, now: float) -> Answer:
        with self._lock:
            self.queries.append(query)
        try:
            series = self._client(url).custom_query(query, params={"time": f"{now:.3f}"})
        except (RequestException, PrometheusApiClientException) as err:
            return Answer(query, error=f"querying Prometheus {url} failed: {type(err).__name__}: {err}"[:600])
        return Answer(query, list(series or []))


def _metrics(plan: _Plan) -> tuple[MetricCheck, ...]:
    assert plan.policy.analysis is not None  # only analysed releases are planned
    return plan.policy.analysis.metrics


def _no_template(m: MetricCheck, router: str) -> MetricSample:
    return MetricSample(
        m.name,
        status="unavailable",
        detail=f"no built-in {m.template} template for router {router}; give the metric a query",
    )


def _epoch(iso: str) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _raw(series: Iterable[dict[str, Any]], target: tp.Target) -> str:
    mine = [
        s
        for s in series
        if target.stable.matches(s.get("metric", {})) or target.canary.matches(s.get("metric", {}))
    ]
    return _compact(mine)


def _compact(series: Iterable[dict[str, Any]]) -> str:
    """The raw vector as short JSON: [[labels, value], ...]."""
    return json.dumps(
        [[s.get("metric", {}), (s.get("value") or [None, None])[1]] for s in series],
        separators=(",", ":"),
        sort_keys=True,
    )
