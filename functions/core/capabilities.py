"""What a policy asks of its traffic router, checked against what the router declares. Pure.

`graylane validate` (through policy_parse) reports every mismatch with its field path, so a policy
asking its router for something it cannot express fails before any release starts, never at run time.
What each router can do is its module's declaration (functions/providers/routers/<provider>.py:
CAPABILITIES and `check`, read through the catalog, see functions.core.routing); the README's "Traffic
providers" table is that data (`table`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from functions.core import routing
from functions.core.routing import Catalog, Need, Problem

FEATURES = (
    "weights",
    "header",
    "header-regex",
    "cookie",
    "user-id-digit",
    "user-hash",
    "source-ip",
    "rate-limit",
    "circuit-breaker",
    "session-affinity",
    "baseline",
    "mirror",
)
MATCHING = frozenset({"header", "header-regex", "cookie", "user-id-digit", "user-hash", "source-ip"})
WHAT = {
    "weights": "weighted routing",
    "header": "header matching",
    "header-regex": "header regex matching",
    "cookie": "cookie matching",
    "user-id-digit": "user-id-digit matching",
    "user-hash": "user-hash matching",
    "source-ip": "source-ip matching",
    "rate-limit": "rate limiting",
    "circuit-breaker": "circuit breaking",
    "session-affinity": "session affinity",
    "baseline": "a fresh baseline (a stable/baseline/canary three-way split)",
    "mirror": "traffic mirroring",
}
_MATCH_FEATURE = {"userIdDigit": "user-id-digit", "userHash": "user-hash", "sourceIp": "source-ip"}
_LATENCY = re.compile(r"LatencyAtQuantileMS")


def table(catalog: Catalog | None = None) -> dict[str, frozenset[str]]:
    """provider -> the features it can express (the README's table)."""
    found = routing.installed() if catalog is None else catalog
    return {name: found[name].CAPABILITIES for name in found}


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


def needs(spec: Mapping[str, Any]) -> Iterator[Need]:
    """(path, feature, node) for everything in the spec that needs a router feature."""
    for i, item in enumerate(_list(spec.get("stages"))):
        for kind, body in _map(item).items():
            path, body = f"spec.stages[{i}].{kind}", _map(body)
            if kind in ("canary", "bluegreen", "abtest"):
                yield path, "weights", body
            if kind == "canary" and body.get("baseline") is True:
                yield f"{path}.baseline", "baseline", body
            if kind == "mirror":  # copies of the live requests to the canary, its answers discarded
                yield path, "mirror", body
            if (
                kind == "bluegreen" and body.get("previewTraffic") is not None
            ):  # a header route to the preview
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
    if spec.get("baseline") is True:
        yield "spec.baseline", "baseline", spec["baseline"]
    for k, rule in enumerate(_list(spec.get("protection"))):
        rule = _map(rule)
        if rule.get("rateLimitFactor", 1) != 1:
            yield f"spec.protection[{k}].rateLimitFactor", "rate-limit", rule["rateLimitFactor"]
        if rule.get("circuitBreaker") is not None:
            yield f"spec.protection[{k}].circuitBreaker", "circuit-breaker", rule["circuitBreaker"]
    if spec.get("sessionAffinity") is not None:
        yield "spec.sessionAffinity", "session-affinity", spec["sessionAffinity"]


def unsupported(provider: str, policy_like: Any, catalog: Catalog | None = None) -> list[Problem]:
    """(field path, message) for every part of the policy its router `provider` cannot express.

    `policy_like` is the policy document (a mapping, paths as the user wrote them) or a parsed
    Policy (paths of its normalised document, where the implicit promote stage is explicit).
    """
    found = routing.installed() if catalog is None else catalog
    if provider not in found:
        return []  # the parser reports an unknown provider itself
    module = found[provider]
    doc = policy_like if isinstance(policy_like, Mapping) else _to_doc(policy_like)
    spec = _map(doc.get("spec"))
    options = {k: v for k, v in _map(spec.get("router")).items() if k != "provider"}
    can = module.CAPABILITIES
    supported = ", ".join(f for f in FEATURES if f in can)
    problems: list[Problem] = []
    usable: list[Need] = []
    why_not: Mapping[str, str] = getattr(
        module, "WHY_NOT", {}
    )  # a module's reason it cannot, where it says one
    for path, feature, node in needs(spec):
        if feature not in can:
            why = f" ({why_not[feature]})" if feature in why_not else ""
            problems.append(
                (path, f"{WHAT[feature]} is not supported by router {provider}{why}; supported: {supported}")
            )
        else:
            usable.append((path, feature, node))
    problems += module.check(options, usable)
    order = {path: i for i, (path, _, _) in enumerate(needs(spec))}
    problems.sort(key=lambda p: order.get(p[0], len(order)))
    return problems + unmeasurable(provider, spec, found) + _without_histogram(provider, spec, found)


def version_subsets(provider: str, catalog: Catalog | None = None) -> bool:
    """Whether a router routes to a subset per version (`VERSION_SUBSETS` of its module), as
    `workload.model: per-version` needs: each version's Deployment gets its own subset."""
    found = routing.installed() if catalog is None else catalog
    return provider in found and bool(getattr(found[provider], "VERSION_SUBSETS", False))


def metrics_source(provider: str, options: Mapping[str, Any], catalog: Catalog | None = None) -> str:
    """Whose standard metrics measure a router's versions ("" when no built-in template can)."""
    found = routing.installed() if catalog is None else catalog
    return found[provider].measured_by(options) if provider in found else ""


def unmeasurable(provider: str, spec: Mapping[str, Any], catalog: Catalog | None = None) -> list[Problem]:
    """Analysis no template can serve: a built-in template on a router whose metrics graylane cannot read.

    Such a metric would be "unavailable" at every tick: inconclusive forever, so the release could only pause.
    """
    found = routing.installed() if catalog is None else catalog
    options = {k: v for k, v in _map(spec.get("router")).items() if k != "provider"}
    if provider not in found or metrics_source(provider, options, found) or not _router_analysed(spec):
        return []
    chooser = next((o for o in found[provider].OPTIONS if o.name == "metrics" and o.choices), None)
    fix = (
        f"set spec.router.metrics to the implementation whose metrics graylane reads ({', '.join(chooser.choices)})"
        if chooser is not None
        else "no built-in template exists"
    )
    problems: list[Problem] = []
    for i, metric in enumerate(_list(_map(spec.get("analysis")).get("metrics"))):
        metric = _map(metric)
        if metric.get("template") and not metric.get("query"):
            problems.append(
                (
                    f"spec.analysis.metrics[{i}].template",
                    f"template {metric['template']} has no query for router {provider}: {fix}, or give "
                    "the metric a PromQL query",
                )
            )
    return problems


def _router_analysed(spec: Mapping[str, Any]) -> bool:
    """Does any analysed stage measure the router's traffic? A flag stage's analysis reads the app's metrics by
    variant (spec.flags.metrics) whatever the router."""
    kinds = {kind for item in _list(spec.get("stages")) for kind in _map(item)}
    return "flag" not in kinds or bool(kinds & {"abtest", "canary", "bluegreen", "mirror"})


def _to_doc(policy: Any) -> Mapping[str, Any]:
    from functions.core.policy_parse import to_doc  # policy_parse calls this module: import late

    return to_doc(policy)


# -- conditions router modules share (their `check` calls these) ------------------------------------------


def latency_breakers(needs: list[Need], provider: str, why: str) -> list[Problem]:
    """Circuit breakers on latency, for a router that can only break on error ratios."""
    return [
        (
            path,
            f"{WHAT[feature]} with LatencyAtQuantileMS is not supported by router {provider} ({why}); "
            "use NetworkErrorRatio() or ResponseCodeRatio(...)",
        )
        for path, feature, node in needs
        if feature == "circuit-breaker" and _LATENCY.search(str(_map(node).get("expression")))
    ]


def stage_of(path: str) -> str:
    """`spec.stages[2]` of a need's path (or the path itself outside the stages)."""
    found = re.match(r"spec\.stages\[\d+\]", path)
    return found.group(0) if found else path


def counted(source: str, catalog: Catalog | None = None) -> bool:
    """Whether a metrics source (the value of metrics_source) has request counters by status, for the guard
    and adaptive exposure: a router module that declares its own series (METRICS)."""
    found = routing.installed() if catalog is None else catalog
    return bool(source) and source in found and found[source].METRICS is not None


def histogrammed(source: str, catalog: Catalog | None = None) -> bool:
    """Whether a metrics source also has a latency histogram, for the latency judge (HAProxy exports averages)."""
    found = routing.installed() if catalog is None else catalog
    metrics = found[source].METRICS if counted(source, found) else None
    return metrics is not None and bool(metrics.duration_bucket)


def _without_histogram(provider: str, spec: Mapping[str, Any], catalog: Catalog) -> list[Problem]:
    """The latency judge (sequential) reads a latency histogram; HAProxy exports averages only."""
    options = {k: v for k, v in _map(spec.get("router")).items() if k != "provider"}
    source = metrics_source(provider, options, catalog)
    if not counted(source, catalog) or histogrammed(source, catalog):
        return []
    problems: list[Problem] = []
    for j, metric in enumerate(_list(_map(spec.get("analysis")).get("metrics"))):
        metric = _map(metric)
        bounded = "min" in metric or "max" in metric
        judge = metric.get("judge", "threshold" if bounded else "sequential")
        if metric.get("template") == "latency" and not metric.get("query") and judge == "sequential":
            problems.append(
                (
                    f"spec.analysis.metrics[{j}].judge",
                    f"the latency judge (sequential) needs a latency histogram; router {provider} "
                    "exports averages only: use judge comparison",
                )
            )
    return problems
