"""What each traffic provider can do, and which parts of a policy ask for more. Pure data plus one check.

`graylane validate` (through policy_parse) reports every mismatch with its field path, so a policy
asking its router for something it cannot express fails before any release starts, never at run time.
The README's "Traffic providers" table is this data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

FEATURES = ("weights", "header", "header-regex", "cookie", "user-id-digit", "user-hash", "source-ip",
            "rate-limit", "circuit-breaker")
_ALL = frozenset(FEATURES)
_MATCHING = frozenset({"weights", "header", "header-regex", "cookie", "user-id-digit", "user-hash"})

CAPABILITIES: dict[str, frozenset[str]] = {
    "traefik": _ALL,  # source-ip only with the traefik.io group (ClientIP matcher)
    "istio": _MATCHING | {"circuit-breaker"},  # DestinationRule outlierDetection; rate limits need EnvoyFilter
    "gateway-api": _MATCHING,  # HTTPRoute has no standard rate limit or circuit breaker
    "nginx": _MATCHING | {"rate-limit"},  # one canary header rule and one cookie rule per Ingress
    "haproxy": _ALL,
    "recording": _ALL,
}

# Routers whose standard metrics the built-in templates (success-rate, error-rate, latency) read
# (functions/providers/metrics/templates.py); `recording` is the in-memory stand-in of the tests and the demo.
BUILTIN_METRICS = frozenset({"traefik", "istio", "nginx", "haproxy", "recording"})
# gateway-api is an API, not a proxy: the series come from its implementation, named by router option `metrics`
GATEWAY_METRICS = ("traefik",)

_WHAT = {
    "weights": "weighted routing", "header": "header matching", "header-regex": "header regex matching",
    "cookie": "cookie matching", "user-id-digit": "user-id-digit matching", "user-hash": "user-hash matching",
    "source-ip": "source-ip matching", "rate-limit": "rate limiting", "circuit-breaker": "circuit breaking",
}
_MATCH_FEATURE = {"userIdDigit": "user-id-digit", "userHash": "user-hash", "sourceIp": "source-ip"}
_HEADER_RULES = ("header", "userIdDigit", "userHash")  # all become one header matcher on NGINX
_LATENCY = re.compile(r"LatencyAtQuantileMS")
_ERROR_RATIOS_ONLY = {"istio": "outlier detection ejects on errors", "haproxy": "it keeps no latency distribution"}

Problem = tuple[str, str]


def match_feature(rule: Mapping[str, Any]) -> str:
    """The feature one match rule of the policy document needs ("" when the rule is malformed)."""
    for form in ("header", "cookie"):
        if form in rule:
            return f"{form}-regex" if form == "header" and "regex" in rule else form
    return next((feature for form, feature in _MATCH_FEATURE.items() if form in rule), "")


def _list(node: Any) -> list[Any]:
    return node if isinstance(node, list) else []


def _map(node: Any) -> Mapping[str, Any]:
    return node if isinstance(node, Mapping) else {}


def _needs(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(path, feature, node) for everything in the spec that needs a router feature."""
    for i, item in enumerate(_list(spec.get("stages"))):
        for kind, body in _map(item).items():
            path, body = f"spec.stages[{i}].{kind}", _map(body)
            if kind in ("canary", "bluegreen", "abtest"):
                yield path, "weights", body
            if kind == "bluegreen" and body.get("previewTraffic") is not None:  # a header route to the preview
                yield f"{path}.previewTraffic", "header", body["previewTraffic"]
            if kind == "abtest":
                for j, rule in enumerate(_list(body.get("match"))):
                    if feature := match_feature(_map(rule)):
                        yield f"{path}.match[{j}]", feature, rule
            if kind == "protect":
                if body.get("rateLimit") is not None:
                    yield f"{path}.rateLimit", "rate-limit", body["rateLimit"]
                if body.get("circuitBreaker") is not None:
                    yield f"{path}.circuitBreaker", "circuit-breaker", body["circuitBreaker"]
    for k, rule in enumerate(_list(spec.get("protection"))):
        rule = _map(rule)
        if rule.get("rateLimitFactor", 1) != 1:
            yield f"spec.protection[{k}].rateLimitFactor", "rate-limit", rule["rateLimitFactor"]
        if rule.get("circuitBreaker") is not None:
            yield f"spec.protection[{k}].circuitBreaker", "circuit-breaker", rule["circuitBreaker"]


def unsupported(provider: str, policy_like: Any) -> list[Problem]:
    """(field path, message) for every part of the policy its router `provider` cannot express.

    `policy_like` is the policy document (a mapping, paths as the user wrote them) or a parsed
    Policy (paths of its normalised document, where the implicit promote stage is explicit).
    """
    if provider not in CAPABILITIES:
        return []  # the parser reports an unknown provider itself
    doc = policy_like if isinstance(policy_like, Mapping) else _to_doc(policy_like)
    spec = _map(doc.get("spec"))
    options = _map(spec.get("router"))
    can = CAPABILITIES[provider]
    supported = ", ".join(f for f in FEATURES if f in can)
    problems: list[Problem] = []
    for path, feature, node in _needs(spec):
        if feature not in can:
            problems.append((path, f"{_WHAT[feature]} is not supported by router {provider}; supported: {supported}"))
        elif why := _constraint(provider, options, feature, node):
            problems.append((path, f"{_WHAT[feature]} {why}"))
    if provider == "nginx":
        problems += _nginx_one_rule_each(spec)
    return problems + unmeasurable(provider, spec)


def metrics_source(provider: str, options: Mapping[str, Any]) -> str:
    """Whose standard metrics measure a router's versions ("" when no built-in template can)."""
    if provider == "gateway-api":
        implementation = options.get("metrics")
        return str(implementation) if implementation in GATEWAY_METRICS else ""
    return provider if provider in BUILTIN_METRICS else ""


def unmeasurable(provider: str, spec: Mapping[str, Any]) -> list[Problem]:
    """Analysis no template can serve: a built-in template on a router whose metrics graylane cannot read.

    Such a metric would be "unavailable" at every tick: inconclusive forever, so the release could only pause.
    """
    options = _map(spec.get("router"))
    problems: list[Problem] = []
    if provider == "gateway-api" and "metrics" in options and options["metrics"] not in GATEWAY_METRICS:
        problems.append(("spec.router.metrics", f"{options['metrics']!r} is not allowed; expected "
                         f"{', '.join(GATEWAY_METRICS)} (the Gateway implementation whose metrics graylane reads)"))
    if metrics_source(provider, options) or not _router_analysed(spec):
        return problems
    for i, metric in enumerate(_list(_map(spec.get("analysis")).get("metrics"))):
        metric = _map(metric)
        if metric.get("template") and not metric.get("query"):
            fix = (f"set spec.router.metrics to the Gateway implementation that serves the route "
                   f"({', '.join(GATEWAY_METRICS)})" if provider == "gateway-api" else "no built-in template exists")
            problems.append((f"spec.analysis.metrics[{i}].template",
                             f"template {metric['template']} has no query for router {provider}: {fix}, or give "
                             "the metric a PromQL query"))
    return problems


def _router_analysed(spec: Mapping[str, Any]) -> bool:
    """Does any analysed stage measure the router's traffic? A flag stage's analysis reads the app's metrics by
    variant (spec.flags.metrics) whatever the router."""
    kinds = {kind for item in _list(spec.get("stages")) for kind in _map(item)}
    return "flag" not in kinds or bool(kinds & {"abtest", "canary", "bluegreen"})


def _to_doc(policy: Any) -> Mapping[str, Any]:
    from functions.core.policy_parse import to_doc  # policy_parse calls this module: import late

    return to_doc(policy)


def _constraint(provider: str, options: Mapping[str, Any], feature: str, node: Any) -> str:
    """Why a feature the provider has cannot be used here ("" when it can)."""
    if provider == "traefik":
        legacy = options.get("group") == "traefik.containo.us"
        if feature == "source-ip" and legacy:
            return "is not supported by router traefik with group traefik.containo.us; use group traefik.io"
        if feature not in ("weights",) and not options.get("ingressRoute"):
            return "needs router option ingressRoute with router traefik (a TraefikService alone only weighs)"
    if provider in _ERROR_RATIOS_ONLY and feature == "circuit-breaker" and _LATENCY.search(
            str(_map(node).get("expression"))):
        return (f"with LatencyAtQuantileMS is not supported by router {provider} ({_ERROR_RATIOS_ONLY[provider]}); "
                "use NetworkErrorRatio() or ResponseCodeRatio(...)")
    if provider == "nginx" and feature == "cookie":
        rule = _map(node)
        if rule.get("value") != "always":
            return "with router nginx needs value: always (canary-by-cookie routes a cookie set to 'always')"
    if provider == "nginx" and feature == "rate-limit" and isinstance(node, Mapping):
        from functions.core.policy_parse import parse_duration  # policy_parse calls this module

        if parse_duration(node.get("period", 1)) not in (None, 1.0, 60.0):
            return "with router nginx needs period 1s or 1m (limit-rps / limit-rpm)"
    return ""


def _nginx_one_rule_each(spec: Mapping[str, Any]) -> list[Problem]:
    """NGINX's canary Ingress carries one header rule and one cookie rule."""
    problems: list[Problem] = []
    for i, item in enumerate(_list(spec.get("stages"))):
        rules = _list(_map(_map(item).get("abtest")).get("match"))
        for forms, what in ((_HEADER_RULES, "header, userIdDigit or userHash rule"), (("cookie",), "cookie rule")):
            hits = [j for j, rule in enumerate(rules) if any(f in _map(rule) for f in forms)]
            for j in hits[1:]:
                problems.append((f"spec.stages[{i}].abtest.match[{j}]",
                                 f"is not supported by router nginx: at most one {what} per stage "
                                 f"(match[{hits[0]}] is one)"))
    return problems
