"""Istio: weights and A/B header rules on a VirtualService over DestinationRule subsets; circuit breaking
through the DestinationRule's outlier detection (and an optional connection pool). Written as
networking.istio.io/v1, served since Istio 1.22.

Options: `virtualService`, `destinationRule`, `host`, `stableSubset`, `canarySubset`, optional `gateways`,
`stableLabels` / `canaryLabels` (subset selectors when graylane creates the DestinationRule; default
`app: <workload>`) and `connectionPool` (written as is next to the outlier detection).

    http:
      - name: graylane-match            # only with A/B rules; a request matching any entry
        match: [{headers: {location: {exact: shenzhen}}}]
        route: [{destination: {host: reviews, subset: v2}, weight: 100}]
      - name: graylane-primary
        route: [{destination: {host: reviews, subset: v1}, weight: 80}, {... subset: v2}, weight: 20}]

What graylane copies from the options and the rules into these objects is held to Istio's own rules first
(istiod's webhook would refuse the write halfway through a release): subset names, the host, gateway
names and subset labels as Istio's validation spells them, a connection pool with tcp and/or http, and
header regexes in RE2 syntax (the policy's regexes are checked by Python's `re`, Envoy runs RE2).
tests/real/test_istioctl_validate.py holds each of these checks against `istioctl validate`.

A mirror stage sets `mirror: {host, subset: <canary>}` (the port of the stable's destination) and
`mirrorPercentage: {value: N}` on the managed route, with all of its traffic on the stable: Envoy sends the
copies to the canary (Host `<host>-shadow`) and drops their answers; the canary's sidecar reports them
(reporter destination), so the analysis sees them. A mirror of the user's own on that route is refused,
never replaced.

Istio ejects hosts after consecutive errors, not on ratios: a circuit breaker expression picks which
errors count (NetworkErrorRatio: gateway errors 502/503/504; ResponseCodeRatio: 5xx). Latency has no
outlier-detection equivalent and fails validation. Istio has no rate limit without an EnvoyFilter.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from functions.core.capabilities import MATCHING, latency_breakers
from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import Policy
from functions.core.routing import Need, Option, Owned, Problem, RouterMetrics, Versions
from functions.core.slots import Routed
from functions.core.values import value
from functions.errors import ConfigError, MissingObject
from functions.providers.routers._common import (
    PROTECTION_ANNOTATION,
    Kind,
    Objects,
    annotation_ops,
    apply_patch,
    backend_weight_ops,
    check_plan,
    choice_option,
    decode_plan,
    header_rule,
    live_plan,
    option,
    plan_note,
    re2_problem,
    relative,
)
from functions.providers.routers.base import Cluster, RouteTarget

NAME = "istio"
OPTIONS = (
    Option("virtualService", "name", "the VirtualService graylane weighs", "the app's name"),
    Option(
        "destinationRule",
        "name",
        "the DestinationRule with the subsets (and graylane's outlier detection)",
        "the app's name",
    ),
    Option("host", "text", "the destinations' host", "the app's name"),
    Option("stableSubset", "text", "the stable's subset", "stable"),
    Option("canarySubset", "text", "the canary's subset", "canary"),
    Option("gateways", "names", "gateways of a VirtualService graylane creates"),
    Option(
        "stableLabels",
        "mapping",
        "the stable subset's labels when graylane creates the DestinationRule",
        "app: <workload.name>",
    ),
    Option(
        "canaryLabels",
        "mapping",
        "the canary subset's labels when graylane creates the DestinationRule",
        "app: <workload.canary>",
    ),
    Option("connectionPool", "mapping", "a connectionPool written beside graylane's outlier detection"),
    Option(
        "route",
        "text",
        "the name (spec.http[].name) of the HTTP route graylane weighs, when several route to "
        "the stable subset",
        "the one route to stableSubset",
    ),
    Option(
        "create", "boolean", "create the VirtualService / DestinationRule when they do not exist", "false"
    ),
    Option(
        "userProtection",
        "choice",
        "what to do with an outlierDetection of the user's on the DestinationRule: "
        "keep it (graylane's circuit breaker is not written), or replace it with graylane's until the release "
        "ends (one outlierDetection per traffic policy: no wrap)",
        "keep",
        choices=("keep", "replace"),
    ),
)
# rate limits need an EnvoyFilter
CAPABILITIES = (MATCHING - {"source-ip"}) | {"weights", "circuit-breaker", "baseline", "mirror"}
WHY_NOT = {
    "session-affinity": "a DestinationRule's trafficPolicy.loadBalancer.consistentHash picks a pod inside the "
    "subset the VirtualService's weights already chose for each request: it pins no client "
    "to the stable or the canary"
}
VERSION_SUBSETS = True  # workload.model per-version: a subset per version (functions/core/slots.py)
METRICS = RouterMetrics(
    "istio_requests_total",
    ("destination_workload_namespace", "destination_workload"),
    "response_code",
    "5..",
    "istio_request_duration_milliseconds_bucket",
    to_ms=1.0,
    fixed='reporter="destination"',
)
OWNS = (
    Owned("VirtualService", "/spec/http/{managed}/route/{stable}/weight", "the stable destination's weight"),
    Owned(
        "VirtualService",
        "/spec/http/{managed}/route/{canary}",
        "the canary destination (added, weighed, removed)",
    ),
    Owned(
        "VirtualService",
        "/spec/http/{managed}/route/{baseline}",
        "the fresh baseline's destination, host <workload.name>-baseline (spec.baseline)",
    ),
    Owned(
        "VirtualService", "/spec/http/{graylane-match}", "the A/B route graylane adds before the managed one"
    ),
    Owned(
        "VirtualService", "/metadata/annotations/graylane.dev~1*", "the plan written, the user's canary entry"
    ),
    Owned("VirtualService", "/spec/http/{managed}/mirror", "the canary subset, while a mirror stage runs"),
    Owned(
        "VirtualService",
        "/spec/http/{managed}/mirrorPercentage",
        "the share mirrored, while a mirror stage runs",
    ),
    Owned(
        "DestinationRule",
        "/spec/trafficPolicy",
        "outlier detection (and connectionPool) while a breaker is set",
    ),
    Owned("DestinationRule", "/metadata/annotations/graylane.dev~1protection", "the breaker written"),
    Owned(
        "DestinationRule",
        "/metadata/annotations/graylane.dev~1replaced-traffic-policy",
        "userProtection replace: "
        "the user's outlierDetection (and connectionPool) graylane's stands in for, put back when the release ends",
    ),
    # workload.model per-version: which versions the managed route is between, and their subsets
    Owned(
        "VirtualService",
        "/spec/http/{managed}/route/{version}",
        "per-version: the destinations of the versions' "
        "subsets (added, weighed, removed; a new one copies the user's entry with its subset)",
    ),
    Owned("DestinationRule", "/spec/subsets/{added}", "per-version: the subsets graylane added for versions"),
    Owned(
        "DestinationRule", "/metadata/annotations/graylane.dev~1subsets", "per-version: the subsets it added"
    ),
)


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    return latency_breakers(needs, NAME, "outlier detection ejects on errors")


def measured_by(options: Mapping[str, Any]) -> str:
    return NAME


def versions(policy: Policy) -> Versions:
    """Istio labels its series by workload: the stable and canary Deployments, not the Services."""
    ns, e = re.escape(policy.namespace), re.escape
    stable, canary = policy.stable_workload, policy.canary_workload
    baseline = policy.baseline_workload
    return Versions(
        stable=(("destination_workload_namespace", ns), ("destination_workload", e(stable))),
        canary=(("destination_workload_namespace", ns), ("destination_workload", e(canary))),
        names={"stable": stable, "canary": canary, "baseline": baseline},
        baseline=(("destination_workload_namespace", ns), ("destination_workload", e(baseline))),
    )


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> IstioRouter:
    return IstioRouter(cluster.api_client(NAME))


VIRTUAL_SERVICE = Kind("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATION_RULE = Kind("networking.istio.io", "v1", "destinationrules", "DestinationRule")
MATCH_ROUTE, PRIMARY_ROUTE = "graylane-match", "graylane-primary"
CANARY_DESTINATION = (
    "graylane.dev/canary-destination"  # the user's canary destination, while graylane has it out
)
SUBSETS_ANNOTATION = "graylane.dev/subsets"  # per-version: the DestinationRule subsets graylane added
REPLACED = (
    "graylane.dev/replaced-traffic-policy"  # userProtection replace: the user's keys graylane's stands in for
)
_USER_PROTECTION = {
    "keep": "kept it, graylane's circuit breaker is not written over it (router option userProtection: replace "
    "writes graylane's in its place for the release)",
    "replace": "graylane's circuit breaker takes its place for the release (userProtection: replace); the user's "
    "is put back when the release ends",
}
EJECTION = {"interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}
CONSECUTIVE_ERRORS = 5
# Istio's names (istio.io/istio pkg/config/labels): a DNS-1123 label, upper case allowed as Istio allows it
_LABEL = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_QUALIFIED = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY = re.compile(f"(?:({_LABEL}(?:\\.{_LABEL})*)/)?({_QUALIFIED})")
_LABEL_VALUE = re.compile(f"(?:{_QUALIFIED})?")
_FIRST_HOST_LABEL = re.compile(f"\\*|(?:\\*|\\*-)?{_LABEL}")


@value
class _Setup:
    namespace: str
    virtual_service: str
    destination_rule: str
    host: str
    stable: str
    canary: str
    gateways: tuple[str, ...]
    stable_labels: dict[str, str]
    canary_labels: dict[str, str]
    connection_pool: dict[str, Any] | None
    route: str = ""  # http[].name of the managed route, when the policy names it
    create: bool = False
    user_protection: str = "keep"
    kept: tuple[tuple[str, dict[str, str]], ...] = ()  # per-version: every subset the DestinationRule keeps
    per_version: bool = False
    created: tuple[
        str, ...
    ] = ()  # per-version: the subsets of the versions whose Deployment graylane created
    baseline: str = ""  # the fresh baseline's Service, its own destination host (functions/core/baseline.py)

    @property
    def where(self) -> str:
        return f"istio router for {self.namespace}/{self.virtual_service}"


def _is_label(name: str) -> bool:
    return len(name) <= 63 and re.fullmatch(_LABEL, name) is not None


def _domain_problem(domain: str, wildcard: bool) -> str:
    """Istio's ValidateWildcardDomain (wildcard) or ValidateFQDN: what is wrong with domain, or ""."""
    if not domain or len(domain) > 255:
        return "expected a DNS name of 1 to 255 characters"
    first, dot, rest = domain.partition(".")
    if wildcard and len(first) <= 63 and _FIRST_HOST_LABEL.fullmatch(first):
        if not dot:
            return ""
        parts = rest.split(".")
    else:
        parts = domain.split(".")
    if parts[-1].isdigit():
        return f"the top-level label {parts[-1]!r} is all digits"
    bad = next(
        (p for i, p in enumerate(parts) if not _is_label(p) and not (p == "" and i == len(parts) - 1)), None
    )
    return f"label {bad!r} is not a DNS-1123 label" if bad is not None else ""


def _labels(opts: dict[str, Any], key: str, default: str, where: str) -> dict[str, str]:
    labels = opts.get(key, {"app": default})
    if not isinstance(labels, dict) or not labels or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError(f"{where}: router option {key} is {labels!r}; expected a mapping of label to value")
    for k, v in labels.items():
        found = _LABEL_KEY.fullmatch(str(k))
        if found is None or len(found.group(1) or "") > 253 or len(found.group(2)) > 63:  # prefix, name
            raise ConfigError(
                f"{where}: router option {key} has the label key {k!r}; expected a Kubernetes label "
                "name (an optional DNS prefix and /, then letters, digits, '-', '_', '.')"
            )
        if not _LABEL_VALUE.fullmatch(v):
            raise ConfigError(
                f"{where}: router option {key} has the label value {v!r} for {k}; expected letters, "
                "digits, '-', '_' and '.', starting and ending with a letter or digit"
            )
    return {str(k): v for k, v in labels.items()}


def _subset(opts: dict[str, Any], key: str, default: str, where: str) -> str:
    name: str = option(opts, key, default, str, where)
    if not _is_label(name):
        raise ConfigError(
            f"{where}: router option {key} is {name!r}; Istio requires a subset name to be a DNS-1123 "
            "label (letters, digits and '-', at most 63)"
        )
    return name


def _gateway_problem(name: str) -> str:
    """Istio's validateGatewayNames for one name ("mesh", a gateway, or namespace/gateway), or ""."""
    if "/" in name:
        namespace, _, gateway = name.partition("/")
        return (
            ""
            if _is_label(namespace) and _is_label(gateway)
            else "expected namespace/name, both DNS-1123 labels"
        )
    return _domain_problem(name, wildcard=False)


def _per_version(s: _Setup, versions: Routed) -> _Setup:
    """Per-version model: stable and canary are the subsets of the versions routed (canary "" when only one
    version takes traffic); every subset of an existing version's Deployment is kept."""
    from dataclasses import replace

    stable, canary = versions.stable, versions.canary
    assert stable is not None
    kept: dict[str, dict[str, str]] = {}
    for slot in (stable, canary, *versions.subsets):
        if slot is None or slot.subset in kept:
            continue
        if not _is_label(slot.subset):
            raise ConfigError(
                f"{s.where}: the subset {slot.subset!r} of version {slot.version} is not a DNS-1123 label"
            )
        kept[slot.subset] = _labels({"subset": {versions.label: slot.label}}, "subset", "", s.where)
    return replace(
        s,
        stable=stable.subset,
        canary=canary.subset if canary else "",
        stable_labels=kept[stable.subset],
        canary_labels=kept[canary.subset] if canary else {},
        kept=tuple(kept.items()),
        per_version=True,
        created=tuple(x.subset for x in (stable, canary, *versions.subsets) if x is not None and x.owned),
    )


def _setup(target: RouteTarget) -> _Setup:
    setup = _pair_setup(target)
    if target.versions is not None and target.versions.stable is not None:
        return _per_version(setup, target.versions)
    return setup


def _pair_setup(target: RouteTarget) -> _Setup:
    opts, where = target.options, f"istio router for {target.namespace}/{target.app}"
    gateways = opts.get("gateways", [])
    if not isinstance(gateways, list) or not all(isinstance(g, str) and g for g in gateways):
        raise ConfigError(
            f"{where}: router option gateways is {gateways!r}; expected a list of gateway names"
        )
    for gateway in gateways:
        if why := _gateway_problem(gateway):
            raise ConfigError(
                f"{where}: router option gateways has {gateway!r}, not a gateway name Istio accepts: {why}"
            )
    pool = opts.get("connectionPool")
    if pool is not None and not (isinstance(pool, dict) and pool and set(pool) <= {"tcp", "http"}):
        raise ConfigError(
            f"{where}: router option connectionPool is {pool!r}; expected a connectionPool mapping "
            "with tcp and/or http settings"
        )
    host = option(opts, "host", target.app, str, where)
    why = "a destination needs one service, not *" if host == "*" else _domain_problem(host, wildcard=True)
    if why:
        raise ConfigError(f"{where}: router option host is {host!r}, not a host Istio accepts: {why}")
    stable, canary = (
        _subset(opts, "stableSubset", "stable", where),
        _subset(opts, "canarySubset", "canary", where),
    )
    if stable == canary:
        raise ConfigError(
            f"{where}: router options stableSubset and canarySubset are both {stable!r}; expected two subsets"
        )
    return _Setup(
        namespace=target.namespace,
        virtual_service=option(opts, "virtualService", target.app, str, where),
        destination_rule=option(opts, "destinationRule", target.app, str, where),
        host=host,
        stable=stable,
        canary=canary,
        gateways=tuple(gateways),
        stable_labels=_labels(opts, "stableLabels", target.stable, where),
        canary_labels=_labels(opts, "canaryLabels", target.canary, where),
        connection_pool=pool,
        route=option(opts, "route", "", str, where) if "route" in opts else "",
        create=opts.get("create") is True,
        user_protection=choice_option(opts, "userProtection", _USER_PROTECTION, where),
        baseline=target.baseline,
    )


# --- rendering (pure) ------------------------------------------------------------------------------------


def _destination(s: _Setup, subset: str, weight: int) -> dict[str, Any]:
    return {"destination": {"host": s.host, "subset": subset}, "weight": weight}


def _http(s: _Setup, plan: RoutePlan) -> list[dict[str, Any]]:
    routes = []
    if plan.match:
        matches: list[dict[str, Any]] = []
        for m in plan.match:
            name, value, regex = header_rule(m)
            match = {"headers": {name.lower(): {"regex" if regex else "exact": value}}}  # Istio: lower case
            if match not in matches:  # a repeated match is "not used": Istio warns
                matches.append(match)
        routes.append({"name": MATCH_ROUTE, "match": matches, "route": [_destination(s, s.canary, 100)]})
    primary = [_destination(s, s.stable, plan.stable)]
    primary += [_destination(s, s.canary, plan.canary)] if plan.canary else []
    routes.append({"name": PRIMARY_ROUTE, "route": primary})
    return routes


def _check_plan(s: _Setup, plan: RoutePlan) -> None:
    """Refuse rules Istio cannot carry: source IPs (capabilities) and regexes outside RE2's syntax."""
    check_plan(plan, NAME, CAPABILITIES, s.where)
    for m in plan.match:
        _, pattern, regex = header_rule(m)
        if regex and (why := re2_problem(pattern)):
            raise ConfigError(
                f"{s.where}: the {m.kind} rule on {m.name} has the regular expression {pattern!r}, "
                f"which Envoy's RE2 refuses: {why}"
            )


def _owned_subsets(dr: dict[str, Any]) -> list[str]:
    text = (dr["metadata"].get("annotations") or {}).get(SUBSETS_ANNOTATION, "")
    return [name for name in text.split(",") if name]


def _subset_ops(dr: dict[str, Any], s: _Setup, add: bool) -> list[dict[str, Any]]:
    """Per-version: JSON patch operations adding the subsets of s.kept the DestinationRule lacks (add), or
    removing those graylane added (listed in its graylane.dev/subsets annotation) that s.kept no longer has.
    The user's subsets are never touched, and a subset of the user's name is never replaced by graylane's."""
    subsets, owned = list(dr["spec"].get("subsets") or []), _owned_subsets(dr)
    have = [x.get("name") for x in subsets]
    if add:
        _users_subsets_fit(subsets, owned, have, s)
        ops, owned = _adding_subsets(dr, len(subsets), have, owned, s)
    else:
        ops, owned = _removing_subsets(have, owned, dict(s.kept))
    if not ops:
        return []
    return ops + annotation_ops(dr, {SUBSETS_ANNOTATION: ",".join(owned) or None})


def _users_subsets_fit(subsets: list[Any], owned: list[str], have: list[Any], s: _Setup) -> None:
    """A subset of the user's under a version's name must select that version's pods."""
    wanted = dict(s.kept)
    for x in subsets:
        name, labels = x.get("name"), x.get("labels") or {}
        if (
            name in wanted
            and name in s.created
            and name not in owned
            and not wanted[name].items() <= labels.items()
        ):
            raise ConfigError(
                f"{s.where}: the DestinationRule's own subset {name} selects {labels}, but the pods "
                f"graylane runs for it are labelled {wanted[name]}; fix or remove the subset "
                f"(spec.subsets[{have.index(name)}]), or release under another tag"
            )


def _adding_subsets(
    dr: dict[str, Any], count: int, have: list[Any], owned: list[str], s: _Setup
) -> tuple[list[dict[str, Any]], list[str]]:
    """The operations adding the subsets of s.kept the DestinationRule lacks, and the subsets graylane owns then."""
    new: list[dict[str, Any]] = [
        {"name": name, "labels": labels} for name, labels in s.kept if name not in have
    ]
    if not new:
        return [], owned
    ops: list[dict[str, Any]]
    if "subsets" not in dr["spec"]:
        ops = [{"op": "add", "path": "/spec/subsets", "value": new}]
    else:
        ops = [{"op": "add", "path": f"/spec/subsets/{count + i}", "value": x} for i, x in enumerate(new)]
    return ops, owned + [x["name"] for x in new if x["name"] not in owned]


def _removing_subsets(
    have: list[Any], owned: list[str], wanted: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The operations removing graylane's subsets no version needs any more, and the subsets it owns then."""
    gone = [i for i, name in enumerate(have) if name in owned and name not in wanted]
    ops: list[dict[str, Any]] = []
    for i in reversed(gone):  # from the end, so each index still names the entry tested
        ops += [
            {"op": "test", "path": f"/spec/subsets/{i}/name", "value": have[i]},
            {"op": "remove", "path": f"/spec/subsets/{i}"},
        ]
    return ops, [name for name in owned if name not in {have[i] for i in gone}]


def _outlier_detection(expression: str) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    if "NetworkErrorRatio" in expression:
        counts["consecutiveGatewayErrors"] = CONSECUTIVE_ERRORS
    if "ResponseCodeRatio" in expression:
        counts["consecutive5xxErrors"] = CONSECUTIVE_ERRORS
    if not counts:
        raise ConfigError(
            f"circuit breaker {expression!r} has no Istio outlier-detection equivalent; "
            "use NetworkErrorRatio() or ResponseCodeRatio(...)"
        )
    return {**counts, **EJECTION}


def _dest_of(entry: Any, s: _Setup, subset: str) -> bool:
    d = entry.get("destination") if isinstance(entry, Mapping) else None
    return isinstance(d, Mapping) and d.get("subset") == subset and d.get("host", s.host) == s.host


def _note(obj: Mapping[str, Any] | None, key: str) -> Any:
    text = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(key)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def managed_index(http: list[dict[str, Any]], s: _Setup) -> int:
    """The HTTP route graylane weighs: the one named by option `route`, else the one routing to the stable
    subset (per-version: to a version's subset; of several, the one without a match, else the one to the
    stable's); none or several is a ConfigError naming them and the option to set."""
    where = f"{s.where}: VirtualService {s.namespace}/{s.virtual_service}"
    candidates = [i for i, r in enumerate(http) if r.get("name") != MATCH_ROUTE]
    if s.route:
        found = [i for i in candidates if http[i].get("name") == s.route]
        if not found:
            names = ", ".join(repr(http[i].get("name")) for i in candidates)
            raise ConfigError(
                f"{where} has no http route named {s.route!r} (router option route); its names: {names}"
            )
        return found[0]
    subsets = [name for name, _ in s.kept] if s.per_version else [s.stable]  # per-version: any version's
    found = _routing_to(http, candidates, s, subsets)
    if len(found) == 1:
        return found[0]
    which = ", ".join(subsets)
    if not found:
        raise ConfigError(
            f"{where}: no http route sends traffic to subset {which} of {s.host} "
            "(spec.http[*].route[*].destination); set router option stableSubset or host"
        )
    named = " and ".join(
        f"spec.http[{i}]" + (f" ({http[i]['name']})" if http[i].get("name") else "") for i in found
    )
    raise ConfigError(
        f"{where}: {named} all send traffic to subset {which}; set router option route to the "
        "name (spec.http[].name) of the one graylane weighs"
    )


def _routing_to(
    http: list[dict[str, Any]], candidates: list[int], s: _Setup, subsets: list[str]
) -> list[int]:
    """The candidate routes with a destination in one of `subsets`; per-version, of several, the catch-all
    route (no match), else the one to the stable's subset, when that singles one out."""
    found = [
        i for i in candidates if any(_dest_of(d, s, x) for d in http[i].get("route") or [] for x in subsets)
    ]
    if not s.per_version or len(found) <= 1:
        return found
    catch_all = [i for i in found if not http[i].get("match")]
    to_stable = [i for i in found if any(_dest_of(d, s, s.stable) for d in http[i].get("route") or [])]
    return next((f for f in (catch_all, to_stable) if len(f) == 1), found)


def weight_ops(
    entries: list[Any], base: str, s: _Setup, plan: RoutePlan, kept: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Patch operations for plan's weights on the managed route's destinations: the stable's weight and the
    canary's entry (a copy of the stable's with the canary subset, added while it gets traffic, removed at 0
    and kept aside). A lone stable without a weight is left without one (Istio gives it everything)."""
    ops, removed = backend_weight_ops(
        entries,
        base,
        plan,
        is_stable=lambda e: _dest_of(e, s, s.stable),
        is_canary=lambda e: _dest_of(e, s, s.canary),
        canary_of=lambda stable: _canary_copy(stable, s),
        kept=kept,
        what=f"{s.where}: {base} routes to subset {s.stable}",
    )
    if s.baseline:  # the fresh baseline's destination, on the list as the operations above leave it
        ops += baseline_ops(apply_patch(entries, relative(ops, base)), base, s, plan)
    return ops, removed


def _is_baseline(entry: Any, s: _Setup) -> bool:
    d = entry.get("destination") if isinstance(entry, Mapping) else None
    return bool(s.baseline) and isinstance(d, Mapping) and d.get("host") == s.baseline and "subset" not in d


def baseline_ops(entries: list[Any], base: str, s: _Setup, plan: RoutePlan) -> list[dict[str, Any]]:
    """The fresh baseline as a third destination: its own Service (graylane's, in the VirtualService's namespace)
    as the host, no subset, the stable entry's other fields (port, headers) copied; removed at weight 0."""
    found = [i for i, e in enumerate(entries) if _is_baseline(e, s)]
    stable = next((e for e in entries if _dest_of(e, s, s.stable)), None)
    if plan.baseline > 0 and found:
        i = found[0]
        return (
            []
            if entries[i].get("weight") == plan.baseline
            else [{"op": "add", "path": f"{base}/{i}/weight", "value": plan.baseline}]
        )
    if plan.baseline > 0 and stable is not None:
        entry = {k: copy.deepcopy(v) for k, v in stable.items() if k != "weight"}
        destination = {k: v for k, v in entry["destination"].items() if k != "subset"}
        entry["destination"] = {**destination, "host": s.baseline}
        return [{"op": "add", "path": f"{base}/-", "value": {**entry, "weight": plan.baseline}}]
    return [{"op": "remove", "path": f"{base}/{i}"} for i in sorted(found, reverse=True)]


def version_ops(
    entries: list[Any], base: str, s: _Setup, plan: RoutePlan, added: list[str]
) -> list[dict[str, Any]]:
    """Per-version: patch operations putting the managed route's destinations of the versions' subsets at
    plan's weights: the stable's and (while it gets traffic) the canary's, added as a copy of the user's entry
    with the version's subset when missing; the destinations of other versions removed (weight 0 by now). A
    lone stable without a weight is left without one (Istio gives it everything); other destinations (other
    hosts, the user's own subsets) are not touched. `added`: the subsets graylane added to the DestinationRule
    (a version's, even one whose Deployment is gone)."""
    versions = {name for name, _ in s.kept} | set(added)
    mine = [i for i, e in enumerate(entries) if any(_dest_of(e, s, v) for v in versions)]
    if not mine:
        raise ConfigError(f"{s.where}: {base} routes to none of the subsets {', '.join(sorted(versions))}")
    wanted = {s.stable: plan.stable, **({s.canary: plan.canary} if s.canary and plan.canary else {})}
    at = {str(entries[i]["destination"]["subset"]): i for i in reversed(mine)}  # the first entry per subset
    gone = [
        i
        for i in mine
        if entries[i]["destination"]["subset"] not in wanted or at[entries[i]["destination"]["subset"]] != i
    ]
    alone = len(entries) - len(gone) == 1 and len(wanted) == 1 and s.stable in at
    ops: list[dict[str, Any]] = []
    for subset, weight in wanted.items():
        i = at.get(subset)
        if (
            i is not None
            and entries[i].get("weight") != weight
            and not (alone and "weight" not in entries[i])
        ):
            ops.append({"op": "add", "path": f"{base}/{i}/weight", "value": weight})
    for i in sorted(gone, reverse=True):  # from the end, so each index still names the entry tested
        ops += [
            {
                "op": "test",
                "path": f"{base}/{i}/destination/subset",
                "value": entries[i]["destination"]["subset"],
            },
            {"op": "remove", "path": f"{base}/{i}"},
        ]
    template = entries[at[s.stable] if s.stable in at else mine[0]]
    for subset, weight in wanted.items():
        if subset not in at:
            entry = {k: copy.deepcopy(v) for k, v in template.items() if k != "weight"}
            entry["destination"] = {**entry["destination"], "subset": subset}
            ops.append({"op": "add", "path": f"{base}/-", "value": {**entry, "weight": weight}})
    return ops


def mirror_ops(
    route: Mapping[str, Any], base: str, s: _Setup, plan: RoutePlan, kept: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Patch operations putting plan's mirror on the managed route (`mirror` to the canary subset and
    `mirrorPercentage`), or taking graylane's away; a mirror of the user's there is refused by name."""
    live = route.get("mirror")
    ours = live is None or _dest_of({"destination": live}, s, s.canary)
    if not plan.mirror and not ours:
        return []  # the user's mirror, outside a mirror stage: left as it is
    if not ours or (plan.mirror and route.get("mirrors")):
        raise ConfigError(
            f"{s.where}: {base.rsplit('/', 1)[0]} already mirrors to "
            f"{json.dumps(live or route.get('mirrors'))}: it is the user's mirror, graylane does not "
            "replace it; remove it for the mirror stage, or use another route (router option route)"
        )
    ops: list[dict[str, Any]] = []
    at = base.rsplit("/", 1)[0]  # the route itself
    if plan.mirror:
        stable = next((e for e in route.get("route") or [] if _dest_of(e, s, s.stable)), None)
        source = dict(kept) if kept else (_canary_copy(stable, s) if stable else _destination(s, s.canary, 0))
        wanted, share = source["destination"], {"value": float(plan.mirror)}
        if live != wanted:
            ops.append({"op": "add", "path": f"{at}/mirror", "value": wanted})
        if route.get("mirrorPercentage") != share:
            ops.append({"op": "add", "path": f"{at}/mirrorPercentage", "value": share})
    elif live is not None:
        ops.append({"op": "remove", "path": f"{at}/mirror"})
        if "mirrorPercentage" in route:
            ops.append({"op": "remove", "path": f"{at}/mirrorPercentage"})
    return ops


def live_mirror(route: Mapping[str, Any], s: _Setup) -> int:
    """The share the managed route mirrors to the canary (0: none)."""
    live = route.get("mirror")
    if live is None or not _dest_of({"destination": live}, s, s.canary):
        return 0
    share = (route.get("mirrorPercentage") or {}).get("value", 100)  # Istio: no percentage mirrors everything
    return (
        round(share)
        if isinstance(share, int | float) and not isinstance(share, bool) and 0 <= share <= 100
        else 0
    )


def _canary_copy(stable: Mapping[str, Any], s: _Setup) -> dict[str, Any]:
    entry = {k: copy.deepcopy(v) for k, v in stable.items() if k != "weight"}
    entry["destination"] = {**entry["destination"], "subset": s.canary}
    return entry


def match_route(
    managed: Mapping[str, Any], plan: RoutePlan, s: _Setup, kept: Mapping[str, Any] | None
) -> dict[str, Any]:
    """graylane's A/B route: the managed route's own conditions AND the plan's rules, its other settings
    (retries, timeout, headers...) and the canary alone."""
    rules: list[dict[str, Any]] = []
    for m in plan.match:
        name, value, regex = header_rule(m)
        rule = {name.lower(): {"regex" if regex else "exact": value}}  # Istio: lower case
        if rule not in rules:  # a repeated match is "not used": Istio warns
            rules.append(rule)
    own = managed.get("match") or [{}]
    matches = []
    for condition in own:
        for rule in rules:
            merged = {**copy.deepcopy(condition), "headers": {**(condition.get("headers") or {}), **rule}}
            if merged not in matches:
                matches.append(merged)
    stable = next((d for d in managed.get("route") or [] if _dest_of(d, s, s.stable)), None)
    canary = dict(kept) if kept else (_canary_copy(stable, s) if stable else _destination(s, s.canary, 100))
    route = {
        k: copy.deepcopy(v)
        for k, v in managed.items()
        if k not in ("name", "match", "route", "mirror", "mirrorPercentage", "mirrors")
    }
    return {"name": MATCH_ROUTE, "match": matches, "route": [{**canary, "weight": 100}], **route}


def _replaced(notes: Mapping[str, str]) -> dict[str, Any]:
    """The user's trafficPolicy keys graylane's breaker stood in for (userProtection replace), or {}."""
    try:
        found = json.loads(notes.get(REPLACED) or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _weights(route: list[dict[str, Any]], s: _Setup) -> tuple[int, int]:
    def weight(subset: str) -> int:
        dests = [d for d in route if _dest_of(d, s, subset)]
        # Istio: a lone destination without a weight takes everything
        return sum(int(d.get("weight", 100 if len(route) == 1 else 0)) for d in dests)

    return weight(s.stable), weight(s.canary)


class IstioRouter:
    """Router over Istio's VirtualService and DestinationRule."""

    provider = NAME

    def __init__(self, api_client: Any) -> None:
        self.services = Objects(api_client, VIRTUAL_SERVICE)
        self.rules = Objects(api_client, DESTINATION_RULE)

    def reconcile(self, target: RouteTarget) -> None:
        self._ensure(_setup(target))

    def _ensure(self, s: _Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        """(VirtualService, DestinationRule), created with all traffic on stable if missing."""
        dr = self.rules.get(s.namespace, s.destination_rule)
        if dr is None and not s.create:
            raise MissingObject(
                f"{s.where}: DestinationRule {s.namespace}/{s.destination_rule} does not exist: graylane "
                "routes on the user's subsets; create it, or set router option create: true"
            )
        if dr is None and s.per_version:
            subsets = [{"name": name, "labels": labels} for name, labels in s.kept]
            dr = self.rules.create(
                s.namespace,
                s.destination_rule,
                {"host": s.host, "subsets": subsets},
                annotations={SUBSETS_ANNOTATION: ",".join(name for name, _ in s.kept)},
            )
        elif dr is None:
            subsets = [
                {"name": s.stable, "labels": s.stable_labels},
                {"name": s.canary, "labels": s.canary_labels},
            ]
            dr = self.rules.create(s.namespace, s.destination_rule, {"host": s.host, "subsets": subsets})
        vs = self.services.get(s.namespace, s.virtual_service)
        if vs is None and not s.create:
            raise MissingObject(
                f"{s.where}: VirtualService {s.namespace}/{s.virtual_service} does not exist: graylane "
                "routes on the user's object; create it, or set router option create: true"
            )
        if vs is None:
            spec: dict[str, Any] = {"hosts": [s.host], "http": _http(s, STABLE_ONLY)}
            if s.gateways:
                spec["gateways"] = list(s.gateways)
            vs = self.services.create(s.namespace, s.virtual_service, spec)
        return vs, dr

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        s = _setup(target)
        _check_plan(s, plan)
        vs, dr = self._ensure(s)
        http = vs["spec"].get("http") or []
        m = managed_index(http, s)
        if s.per_version:  # the subsets routed to exist before the route names them
            if adding := _subset_ops(dr, s, add=True):
                dr = self.rules.patch(dr, adding, "add subsets")
            kept, removed = None, None
            ops = version_ops(
                http[m].get("route") or [], f"/spec/http/{m}/route", s, plan, _owned_subsets(dr)
            )
        else:
            kept = _note(vs, CANARY_DESTINATION)
            ops, removed = weight_ops(http[m].get("route") or [], f"/spec/http/{m}/route", s, plan, kept)
        if plan.mirror or "mirror" in http[m]:
            ops += mirror_ops(http[m], f"/spec/http/{m}/route", s, plan, kept if removed is None else removed)
        wanted = match_route(http[m], plan, s, kept if removed is None else removed) if plan.match else None
        a = next((i for i, r in enumerate(http) if r.get("name") == MATCH_ROUTE), None)
        if wanted is not None and a is None:
            ops.append(
                {"op": "add", "path": f"/spec/http/{m}", "value": wanted}
            )  # just before the managed route
        elif wanted is not None and a is not None and http[a] != wanted:
            ops.append({"op": "replace", "path": f"/spec/http/{a}", "value": wanted})
        elif wanted is None and a is not None:
            ops.append({"op": "remove", "path": f"/spec/http/{a}"})
        notes: dict[str, str | None] = dict(plan_note(plan))
        if removed is not None:
            notes[CANARY_DESTINATION] = json.dumps(removed, sort_keys=True)
        elif kept is not None and plan.canary > 0:
            notes[CANARY_DESTINATION] = None
        self.services.write(vs, ops + annotation_ops(vs, notes), "set routes")
        if s.per_version:  # and the subsets graylane added for versions that are gone leave after it
            self.rules.write(dr, _subset_ops(dr, s, add=False), "remove subsets")

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        s = _setup(target)
        vs = self.services.read(s.namespace, s.virtual_service)
        http = vs["spec"].get("http") or []
        managed = http[managed_index(http, s)]
        kept = None if s.per_version else _note(vs, CANARY_DESTINATION)
        live = next((r for r in http if r.get("name") == MATCH_ROUTE), None)
        render = lambda plan: match_route(managed, plan, s, kept) if plan.match else None  # noqa: E731
        route = managed.get("route") or []
        baseline = sum(int(d.get("weight", 0)) for d in route if _is_baseline(d, s))
        plan = live_plan(decode_plan(vs), *_weights(route, s), live, render, s.where, baseline=baseline)
        mirror = live_mirror(managed, s)
        return replace(plan, mirror=mirror) if mirror and plan.stable == 100 and not plan.match else plan

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        """The user's outlierDetection on the DestinationRule and what userProtection does with it."""
        s = _setup(target)
        dr = self.rules.get(s.namespace, s.destination_rule)
        if dr is None or PROTECTION_ANNOTATION in (dr["metadata"].get("annotations") or {}):
            return ()
        if "outlierDetection" not in (dr["spec"].get("trafficPolicy") or {}):
            return ()
        return (
            f"DestinationRule {s.namespace}/{s.destination_rule} has the user's outlierDetection: "
            f"{_USER_PROTECTION[s.user_protection]}",
        )

    def set_protection(self, target: RouteTarget, protection: Protection) -> tuple[str, ...]:
        """Outlier detection on the DestinationRule, key by key (the user's trafficPolicy stays). A user's own
        outlierDetection is kept and said, never overwritten (userProtection keep); or graylane's written in
        its place, the user's keys kept in graylane.dev/replaced-traffic-policy and put back as they were when
        graylane's is cleared or the release ends (replace)."""
        s = _setup(target)
        if protection.rate_limit is not None:
            raise ConfigError(
                f"{s.where}: rate limiting is not supported by router istio (it needs an EnvoyFilter)"
            )
        _, dr = self._ensure(s)
        live = dr["spec"].get("trafficPolicy")
        policy = dict(live or {})
        notes = dr["metadata"].get("annotations") or {}
        ours = PROTECTION_ANNOTATION in notes
        keys = ("outlierDetection",) + (("connectionPool",) if s.connection_pool is not None else ())
        said: tuple[str, ...] = ()
        replaced: str | None = notes.get(REPLACED)
        if protection.circuit_breaker is not None:
            if not ours and "outlierDetection" in policy:
                said = (f"DestinationRule {s.namespace}/{s.destination_rule} already has the user's outlierDetection: "
                        f"{_USER_PROTECTION[s.user_protection]}",)  # fmt: skip
                if s.user_protection == "keep":
                    return said
                replaced = json.dumps({k: policy[k] for k in keys if k in policy}, sort_keys=True)
            expression = protection.circuit_breaker.expression
            try:
                wanted: dict[str, Any] = {"outlierDetection": _outlier_detection(expression)}
            except ConfigError as err:
                raise ConfigError(f"{s.where}: {err}") from err
            if s.connection_pool is not None:
                wanted["connectionPool"] = s.connection_pool
            note: str | None = expression
        elif ours:  # clear only what graylane wrote; a user's own outlier detection stays (or comes back)
            wanted, note, replaced = _replaced(notes), None, None
        else:
            return ()
        ops: list[dict[str, Any]] = []
        if live is None and wanted:
            ops.append({"op": "add", "path": "/spec/trafficPolicy", "value": wanted})
        elif live is not None:
            for key in keys + tuple(k for k in wanted if k not in keys):
                if key in wanted and policy.get(key) != wanted[key]:
                    ops.append({"op": "add", "path": f"/spec/trafficPolicy/{key}", "value": wanted[key]})
                elif key not in wanted and key in policy:
                    ops.append({"op": "remove", "path": f"/spec/trafficPolicy/{key}"})
            if not wanted and set(policy) <= set(keys) and ours:  # graylane added the whole trafficPolicy
                ops = [{"op": "remove", "path": "/spec/trafficPolicy"}]
        ops += annotation_ops(dr, {PROTECTION_ANNOTATION: note, REPLACED: replaced})
        self.rules.write(dr, ops, "set protection")
        return said

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        """All traffic back to stable, graylane's A/B route and canary destination gone (the objects stay: they
        carry the stable's traffic); returns the user's routes that still send traffic to the canary subset."""
        self.set_routes(target, STABLE_ONLY)
        s = _setup(target)
        dr = self.rules.get(s.namespace, s.destination_rule)
        if dr is not None and REPLACED in (dr["metadata"].get("annotations") or {}):  # userProtection replace
            self.set_protection(target, Protection())  # graylane's breaker off, the user's back as it was
        vs = self.services.read(s.namespace, s.virtual_service)
        if s.per_version:  # the user's routes to a version that is not the stable one
            http = vs["spec"].get("http") or []
            m, others = managed_index(http, s), [name for name, _ in s.kept if name != s.stable]
            return tuple(
                f"VirtualService {s.namespace}/{s.virtual_service} spec.http[{i}]"
                + (f" ({r['name']})" if r.get("name") else "")
                + f" still sends traffic to subset {x}, not the stable version's ({s.stable}): it is the "
                "user's route, graylane left it as it is"
                for i, r in enumerate(http)
                if i != m and r.get("name") != MATCH_ROUTE
                for x in others
                if any(_dest_of(d, s, x) for d in r.get("route") or [])
            )
        return tuple(
            f"VirtualService {s.namespace}/{s.virtual_service} spec.http[{i}]"
            + (f" ({r['name']})" if r.get("name") else "")
            + f" still sends traffic to subset {s.canary}: it is the user's route, graylane left it as it is"
            for i, r in enumerate(vs["spec"].get("http") or [])
            if r.get("name") != MATCH_ROUTE and any(_dest_of(d, s, s.canary) for d in r.get("route") or [])
        )
