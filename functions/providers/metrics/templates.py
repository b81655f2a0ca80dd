"""Built-in PromQL templates per router, batched over releases, and custom-query templating. No I/O.

Every router exports a request counter with a status-code label and (except HAProxy) a duration
histogram. One counts query per router answers requests AND 5xx of every release at once: it sums the
counter `by` the labels that identify a version (service, workload, backend server) and the code label;
Python then splits the series per release and version. Releases whose count range differs (cumulative
counts since each release's analysis started) become `or`-joined terms of the same query, so a tick
costs one HTTP query per metric kind per router, whatever the number of releases.

Latency is in milliseconds: the 95th percentile from the histogram (Traefik, Istio, NGINX), or
HAProxy's average response time over the last 1024 requests (it has no histograms).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import field

from functions.core.policy import Policy
from functions.core.values import value
from functions.errors import ConfigError

LATENCY_QUANTILE = 0.95
STABLE, CANARY = "stable", "canary"
CUSTOM_VARS = ("namespace", "app", "stable", "canary", "window", "interval", "target")


@value
class RouterMetrics:
    """Where one router keeps its standard metrics."""

    requests: str  # request counter
    identity: tuple[str, ...]  # labels that tell one version's series apart
    code_label: str  # status label of the counter
    error_codes: str  # regex over code_label values counted as errors (server side)
    duration_bucket: str = ""  # histogram buckets, if any
    to_ms: float = 1000.0  # multiply the duration unit by this to get milliseconds
    duration_average: str = ""  # gauge of the average duration (seconds), when there is no histogram
    fixed: str = ""  # matchers every query carries

    def code_is_error(self, code: str) -> bool:
        return re.fullmatch(self.error_codes, code) is not None


ROUTERS: dict[str, RouterMetrics] = {
    # service="<namespace>-<service>-<port>@kubernetescrd" (IngressRoute / TraefikService backends), or
    # "<namespace>-<service>-http-<port>@kubernetesgateway" (HTTPRoute backends of Traefik's Gateway provider)
    "traefik": RouterMetrics("traefik_service_requests_total", ("service",), "code", "5..",
                             "traefik_service_request_duration_seconds_bucket"),
    "istio": RouterMetrics("istio_requests_total", ("destination_workload_namespace", "destination_workload"),
                           "response_code", "5..", "istio_request_duration_milliseconds_bucket", to_ms=1.0,
                           fixed='reporter="destination"'),
    "nginx": RouterMetrics("nginx_ingress_controller_requests", ("namespace", "service"), "status", "5..",
                           "nginx_ingress_controller_request_duration_seconds_bucket"),
    "haproxy": RouterMetrics("haproxy_server_http_responses_total", ("proxy", "server"), "code", "5xx",
                             duration_average="haproxy_server_response_time_average_seconds"),
}  # fmt: skip


@value
class Matcher:
    """Label values (exact, or a regular expression) that pick one version of one release."""

    labels: tuple[tuple[str, str], ...]  # (label, regex); exact names are escaped

    def matches(self, series: Mapping[str, str]) -> bool:
        return all(re.fullmatch(rx, series.get(label, "")) is not None for label, rx in self.labels)


@value
class Target:
    """One release as the templates see it: who it is and which series are its stable and canary."""

    key: str  # release id
    router: str
    stable: Matcher
    canary: Matcher
    names: dict[str, str] = field(default_factory=dict)  # template variables for custom queries


def _opt(policy: Policy, *keys: str, default: str) -> str:
    for k in keys:
        v = policy.router.options.get(k)
        if isinstance(v, str) and v:
            return v
    return default


GATEWAY_METRICS = ("traefik",)  # gateway-api router option `metrics`: whose standard metrics the Gateway has


def metrics_source(policy: Policy) -> str:
    """Whose standard metrics measure `policy`: its router's, or for gateway-api the Gateway implementation's
    named by router option `metrics` (Traefik's Gateway provider exports traefik_service_*)."""
    kind = policy.router.provider
    implementation = policy.router.options.get("metrics") if kind == "gateway-api" else None
    return str(implementation) if implementation in GATEWAY_METRICS else kind


def traefik_service(namespace: str, service: str, port: object, provider: str = "kubernetescrd") -> str:
    """Traefik's name of a Kubernetes Service backend, as its `service` metric label shows it.

    The CRD provider names it `<namespace>-<service>-<port>`, the Gateway provider
    `<namespace>-<service>-http-<port>`; both pass it through provider.Normalize (every run of characters
    other than letters and digits becomes one '-') and qualify it with `@<provider>`.
    """
    middle = "http-" if provider == "kubernetesgateway" else ""
    name = "-".join(p for p in re.split(r"[\W_]+", f"{namespace}-{service}-{middle}{port}") if p)
    return f"{name}@{provider}"


def traefik_route_service(namespace: str, ingress_route: str, rule: str) -> str:
    """Traefik's name of the load balancer of an IngressRoute route with a single Service backend: the CRD
    provider names it after the route, `<namespace>-<ingressRoute>-<first 10 bytes of sha256(rule), hex>`
    (v2.11 and v3 alike), not after the Service. graylane's default route is one when the canary has no
    traffic (the stable alone), e.g. during an A/B test or a post-promotion watch."""
    digest = hashlib.sha256(rule.encode()).hexdigest()[:20]
    name = "-".join(p for p in re.split(r"[\W_]+", f"{namespace}-{ingress_route}-{digest}") if p)
    return f"{name}@kubernetescrd"


def traefik_default_rule(host: str) -> str:
    """The rule of the traefik router's default route (functions.providers.routers.traefik.default_rule)."""
    return f"Host(`{host}`)" if host else "PathPrefix(`/`)"


def _traefik_names(policy: Policy, service: str, stable: bool) -> str:
    """The `service` label values (a regex) of one version behind the traefik router: its Service as a
    weighted backend, and for the stable also the default route's own load balancer (the stable alone)."""
    names = [re.escape(traefik_service(policy.namespace, service, _port(policy)))]
    route = _opt(policy, "ingressRoute", default="")
    if stable and route:
        rule = traefik_default_rule(_opt(policy, "host", default=""))
        names.append(re.escape(traefik_route_service(policy.namespace, route, rule)))
    return "|".join(names)


def _port(policy: Policy) -> object:
    port = policy.router.options.get("port", 80)  # the routers' default
    return port if isinstance(port, (int, str)) and not isinstance(port, bool) else 80


def target(policy: Policy, key: str) -> Target:
    """Which series belong to `policy`'s stable and canary, for its router's standard metrics."""
    kind = policy.router.provider
    ns = policy.namespace
    stable_svc = _opt(policy, "stableService", default=policy.stable_workload)
    canary_svc = _opt(policy, "canaryService", default=policy.canary_workload)
    e = re.escape
    if kind == "traefik":  # exact names: "app" never matches "app-canary", nor a weighted parent service
        pick = lambda svc: Matcher((("service", _traefik_names(policy, svc, svc == stable_svc)),))  # noqa: E731
    elif kind == "gateway-api" and metrics_source(policy) == "traefik":
        pick = lambda svc: Matcher(  # noqa: E731
            (("service", e(traefik_service(ns, svc, _port(policy), "kubernetesgateway"))),))
    elif kind == "istio":
        pick = lambda w: Matcher((("destination_workload_namespace", e(ns)), ("destination_workload", e(w))))  # noqa: E731
        stable_svc, canary_svc = policy.stable_workload, policy.canary_workload
    elif kind == "nginx":
        pick = lambda svc: Matcher((("namespace", e(ns)), ("service", e(svc))))  # noqa: E731
    elif kind == "haproxy":
        backend = _opt(policy, "backend", default=f"{ns}-{policy.name}")
        stable_svc = _opt(policy, "stableServer", default=STABLE)
        canary_svc = _opt(policy, "canaryServer", default=CANARY)
        pick = lambda srv: Matcher((("proxy", e(backend)), ("server", e(srv))))  # noqa: E731
    else:
        pick = lambda _: Matcher((("__name__", "(?!)"),))  # noqa: E731  (no built-in metrics: matches nothing)
    names = {"namespace": ns, "app": policy.name, "stable": stable_svc, "canary": canary_svc}
    return Target(key, kind, pick(stable_svc), pick(canary_svc), names)


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
    terms = [f"sum by ({by}) (increase({r.requests}{_selector(r, ts)}[{seconds}s]))"
             for seconds, ts in _by_range(targets).items()]  # fmt: skip
    return " or ".join(terms)


def latency_query(router: str, targets: Iterable[tuple[Target, int]]) -> str:
    """Latency in ms per version: p95 from the histogram, or HAProxy's rolling average."""
    r = ROUTERS[router]
    by = ", ".join(r.identity)
    if not r.duration_bucket:
        ts = [t for t, _ in targets]
        return f"avg by ({by}) ({r.duration_average}{_selector(r, ts)}) * 1000"
    terms = [f"histogram_quantile({LATENCY_QUANTILE}, sum by ({by}, le) "
             f"(rate({r.duration_bucket}{_selector(r, ts)}[{seconds}s]))) * {r.to_ms:g}"
             for seconds, ts in _by_range(targets).items()]  # fmt: skip
    return " or ".join(terms)


@value
class Counts:
    requests: float = 0.0
    errors: float = 0.0
    seen: bool = False  # at least one series matched


def split_counts(router: str, targets: Iterable[Target], series: list[dict]) -> dict[str, dict[str, Counts]]:
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


def split_values(targets: Iterable[Target], series: list[dict]) -> dict[str, dict[str, float]]:
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


def _value(series: Mapping) -> float:
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
