"""Gateway API: weights and A/B header rules on an HTTPRoute (gateway.networking.k8s.io/v1).

Options: `httpRoute`, `stableService`, `canaryService`, `port`, optional `parentRef` (a Gateway name,
or a mapping with name/namespace/sectionName) and `host` (the route's hostname); both only matter when
graylane creates the route.

    rules:
      - matches: [{path: {type: PathPrefix, value: /}, headers: [{type: Exact, name: location, value: shenzhen}]}]
        backendRefs: [{group: '', kind: Service, name: canary, port: 80, weight: 100}]   # only with A/B rules
      - matches: [{path: {type: PathPrefix, value: /}}]
        backendRefs: [{... stable, weight: 80}, {... canary, weight: 20}]

A mirror stage adds one RequestMirror filter to the managed rule, `{type: RequestMirror, requestMirror:
{backendRef: <the canary Service, port>, percent: N}}` (`percent` is in the standard channel since v1.3),
after the user's filters, and removes it when the stage ends; the canary's backendRef stays at weight 0.

Among rules with the same path, Gateway API gives precedence to the one with more header matches, so
the A/B rule is tried first. Fields the CRD defaults (path, header type, backend group and kind) are written
explicitly, so what is read back is exactly what was written. The standard HTTPRoute has no rate limit
or circuit breaker.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from functions.core.capabilities import MATCHING
from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import Policy
from functions.core.routing import Need, Option, Owned, Problem, Versions, text_option
from functions.core.values import value
from functions.errors import ConfigError, MissingObject
from functions.providers.routers._common import (
    Kind,
    Objects,
    annotation_ops,
    apply_patch,
    backend_weight_ops,
    baseline_ops,
    check_plan,
    decode_plan,
    header_rule,
    live_plan,
    option,
    plan_note,
    relative,
)
from functions.providers.routers.base import Cluster, RouteTarget

NAME = "gateway-api"
IMPLEMENTATIONS = ("traefik",)  # Gateway implementations whose metrics the built-in templates read
OPTIONS = (
    Option("httpRoute", "name", "the HTTPRoute graylane weighs", "the app's name"),
    Option("stableService", "name", "the stable's Service", "workload.name"),
    Option("canaryService", "name", "the canary's Service", "workload.canary"),
    Option("port", "integer", "the Services' port", "80"),
    Option("parentRef", "object-ref", "the Gateway of an HTTPRoute graylane creates"),
    Option("host", "text", "the hostname of an HTTPRoute graylane creates"),
    Option(
        "rule",
        "text",
        "the name (spec.rules[].name) of the rule graylane weighs, when several route to the stable Service",
        "the one rule naming stableService",
    ),
    Option("create", "boolean", "create the HTTPRoute when it does not exist", "false"),
    Option(
        "metrics",
        "choice",
        "the Gateway implementation whose metrics the built-in templates read (an API has none of its own)",
        choices=IMPLEMENTATIONS,
    ),
)
CAPABILITIES = (MATCHING - {"source-ip"}) | {
    "weights",
    "baseline",
    "mirror",
}  # HTTPRoute has no standard rate limit or circuit breaker
WHY_NOT = {
    "session-affinity": "HTTPRoute spec.rules[].sessionPersistence is in Gateway API's experimental channel "
    "only; the standard-channel CRDs graylane writes (v1.4.1) have no such field"
}
METRICS = None  # an API, not a proxy: the series are the implementation's (measured_by)
OWNS = (
    Owned("HTTPRoute", "/spec/rules/{managed}/backendRefs/{stable}/weight", "the stable backend's weight"),
    Owned(
        "HTTPRoute",
        "/spec/rules/{managed}/backendRefs/{canary}",
        "the canary backend (added, weighed, removed)",
    ),
    Owned(
        "HTTPRoute",
        "/spec/rules/{managed}/backendRefs/{baseline}",
        "the fresh baseline's backend (spec.baseline)",
    ),
    Owned(
        "HTTPRoute", "/spec/rules/{match}", "the A/B rule graylane adds (annotation graylane.dev/match-rule)"
    ),
    Owned(
        "HTTPRoute",
        "/metadata/annotations/graylane.dev~1*",
        "the plan written, the A/B rule, the user's canary",
    ),
    Owned(
        "HTTPRoute",
        "/spec/rules/{managed}/filters/{mirror}",
        "a RequestMirror filter to the canary Service (with percent), while a mirror stage runs",
    ),
)
MATCH_RULE = "graylane.dev/match-rule"
CANARY_BACKEND = "graylane.dev/canary-backend"


# Gateway implementations known to refuse the RequestMirror filter (Extended support): Traefik v3.6's Gateway
# provider logs "unsupported filter RequestMirror", keeps the route Accepted and answers 500 to every request of the
# rule (pkg/provider/kubernetes/gateway; tests/traefik/test_traefik_mirror.py)
NO_MIRROR = {
    "traefik": "Traefik's Gateway provider refuses the RequestMirror filter (unsupported filter: every "
    "request of the rule is answered 500); use router traefik, whose mirroring TraefikService "
    "does it"
}


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    why = NO_MIRROR.get(str(options.get("metrics")))
    return [
        (path, f"traffic mirroring is not supported by router gateway-api on {options.get('metrics')}: {why}")
        for path, feature, _ in needs
        if feature == "mirror" and why
    ]


def measured_by(options: Mapping[str, Any]) -> str:
    """The implementation named by option `metrics` (Traefik's Gateway provider exports traefik_service_*)."""
    implementation = options.get("metrics")
    return str(implementation) if implementation in IMPLEMENTATIONS else ""


def versions(policy: Policy) -> Versions:
    """On Traefik's Gateway provider a backend is `<ns>-<svc>-http-<port>@kubernetesgateway`."""
    from functions.providers.routers.traefik import service_label

    opts = policy.router.options
    stable = text_option(opts, "stableService", policy.stable_workload)
    canary = text_option(opts, "canaryService", policy.canary_workload)
    port = opts.get("port", 80)

    def label(service: str) -> tuple[tuple[str, str], ...]:
        return (("service", re.escape(service_label(policy.namespace, service, port, "kubernetesgateway"))),)

    baseline = policy.baseline_workload
    return Versions(
        stable=label(stable),
        canary=label(canary),
        names={"stable": stable, "canary": canary, "baseline": baseline},
        baseline=label(baseline),
    )


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> GatewayAPIRouter:
    return GatewayAPIRouter(cluster.api_client(NAME))


HTTP_ROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
EVERY_PATH = {"type": "PathPrefix", "value": "/"}


@value
class _Setup:
    namespace: str
    http_route: str
    stable: str
    canary: str
    port: int
    parent: dict[str, Any] | None
    host: str
    rule: str = ""  # rules[].name of the managed rule, when the policy names it
    create: bool = False
    baseline: str = ""  # the fresh baseline's Service (functions/core/baseline.py), "" without one

    @property
    def where(self) -> str:
        return f"gateway-api router for {self.namespace}/{self.http_route}"


def _setup(target: RouteTarget) -> _Setup:
    opts, where = target.options, f"gateway-api router for {target.namespace}/{target.app}"
    parent = opts.get("parentRef")
    if isinstance(parent, str) and parent:
        parent = {"name": parent}
    if parent is not None and not (isinstance(parent, dict) and isinstance(parent.get("name"), str)):
        raise ConfigError(
            f"{where}: router option parentRef is {parent!r}; expected a Gateway name or "
            "a mapping with name (and namespace, sectionName)"
        )
    return _Setup(
        namespace=target.namespace,
        http_route=option(opts, "httpRoute", target.app, str, where),
        stable=option(opts, "stableService", target.stable, str, where),
        canary=option(opts, "canaryService", target.canary, str, where),
        port=option(opts, "port", 80, int, where),
        parent=parent,
        host=option(opts, "host", "", str, where) if "host" in opts else "",
        rule=option(opts, "rule", "", str, where) if "rule" in opts else "",
        create=opts.get("create") is True,
        baseline=target.baseline,
    )


# --- rendering (pure) ------------------------------------------------------------------------------------


def _backend(s: _Setup, service: str, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": service, "port": s.port, "weight": weight}


def _rules(s: _Setup, plan: RoutePlan) -> list[dict[str, Any]]:
    rules = []
    if plan.match:
        matches = []
        for m in plan.match:
            name, value, regex = header_rule(m)
            header = {"type": "RegularExpression" if regex else "Exact", "name": name, "value": value}
            matches.append({"path": dict(EVERY_PATH), "headers": [header]})
        rules.append({"matches": matches, "backendRefs": [_backend(s, s.canary, 100)]})
    weighted = [_backend(s, s.stable, plan.stable), _backend(s, s.canary, plan.canary)]
    rules.append({"matches": [{"path": dict(EVERY_PATH)}], "backendRefs": weighted})
    return rules


def _is_backend(ref: Any, name: str) -> bool:
    return (
        isinstance(ref, Mapping)
        and ref.get("name") == name
        and ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
    )


def _note(obj: Mapping[str, Any] | None, key: str) -> Any:
    text = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(key)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _match_index(rules: list[dict[str, Any]], matches: Any) -> int | None:
    return next((i for i, r in enumerate(rules) if matches is not None and r.get("matches") == matches), None)


def managed_index(rules: list[dict[str, Any]], s: _Setup, ab: Any = None) -> int:
    """The rule graylane weighs: the one named by option `rule`, else the one naming the stable Service."""
    where = f"{s.where}: HTTPRoute {s.namespace}/{s.http_route}"
    candidates = [i for i, r in enumerate(rules) if not (ab is not None and r.get("matches") == ab)]
    if s.rule:
        found = [i for i in candidates if rules[i].get("name") == s.rule]
        if not found:
            names = ", ".join(repr(rules[i].get("name")) for i in candidates)
            raise ConfigError(
                f"{where} has no rule named {s.rule!r} (router option rule); its names: {names}"
            )
        return found[0]
    found = [
        i for i in candidates if any(_is_backend(r, s.stable) for r in rules[i].get("backendRefs") or [])
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"{where}: no rule sends traffic to Service {s.stable} (spec.rules[*].backendRefs); set "
            "router option stableService"
        )
    named = " and ".join(
        f"spec.rules[{i}]" + (f" ({rules[i]['name']})" if rules[i].get("name") else "") for i in found
    )
    raise ConfigError(
        f"{where}: {named} all send traffic to Service {s.stable}; set router option rule to the name "
        "(spec.rules[].name) of the one graylane weighs"
    )


def weight_ops(
    entries: list[Any],
    base: str,
    s: _Setup,
    plan: RoutePlan,
    kept: Mapping[str, Any] | None,
    drop: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The stable's weight and the canary's backendRef (a copy of the stable's: port, filters), nothing else of
    the rule. The canary stays listed at weight 0 during a release (a Gateway serves a weight-0 backend
    without endpoints, and Traefik keeps its `service` series); `drop` (finalize) removes it, kept aside."""
    ops, removed = backend_weight_ops(
        entries,
        base,
        plan,
        is_stable=lambda e: _is_backend(e, s.stable),
        is_canary=lambda e: _is_backend(e, s.canary),
        canary_of=lambda stable: {**{k: v for k, v in stable.items() if k != "weight"}, "name": s.canary},
        kept=kept,
        what=f"{s.where}: {base} lists Service {s.stable}",
        drop=drop,
    )
    if s.baseline:  # the fresh baseline's backend, on the list as the operations above leave it
        ops += baseline_ops(
            apply_patch(entries, relative(ops, base)),
            base,
            plan,
            s.baseline,
            lambda e: _is_backend(e, s.stable),
            lambda e: _is_backend(e, s.baseline),
        )
    return ops, removed


def _is_mirror(f: Any, s: _Setup) -> bool:
    return (
        isinstance(f, Mapping)
        and f.get("type") == "RequestMirror"
        and _is_backend((f.get("requestMirror") or {}).get("backendRef"), s.canary)
    )


def mirror_filter(s: _Setup, percent: int) -> dict[str, Any]:
    ref = {"group": "", "kind": "Service", "name": s.canary, "port": s.port}
    return {"type": "RequestMirror", "requestMirror": {"backendRef": ref, "percent": percent}}


def mirror_ops(rule: Mapping[str, Any], base: str, s: _Setup, plan: RoutePlan) -> list[dict[str, Any]]:
    """graylane's RequestMirror filter on the managed rule: added after the user's filters, its percent moved,
    removed when the plan mirrors nothing (a user's own mirror filter, to anything else, is not touched)."""
    filters = rule.get("filters")
    listed: list[Any] = filters or []
    mine = [i for i, f in enumerate(listed) if _is_mirror(f, s)]
    wanted = mirror_filter(s, plan.mirror)
    if plan.mirror and mine:
        return (
            []
            if listed[mine[0]] == wanted
            else [{"op": "replace", "path": f"{base}/{mine[0]}", "value": wanted}]
        )
    if plan.mirror:
        return (
            [{"op": "add", "path": f"{base}/-", "value": wanted}]
            if filters is not None
            else [{"op": "add", "path": base, "value": [wanted]}]
        )
    if mine and len(mine) == len(listed):
        return [{"op": "remove", "path": base}]  # graylane added the list
    return [{"op": "remove", "path": f"{base}/{i}"} for i in sorted(mine, reverse=True)]


def live_mirror(rule: Mapping[str, Any], s: _Setup) -> int:
    found = next((f for f in rule.get("filters") or [] if _is_mirror(f, s)), None)
    percent = (found or {}).get("requestMirror", {}).get("percent", 100 if found else 0)
    return (
        percent if isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 100 else 0
    )


def match_rule(
    managed: Mapping[str, Any], plan: RoutePlan, s: _Setup, kept: Mapping[str, Any] | None
) -> dict[str, Any]:
    """graylane's A/B rule: each of the managed rule's matches AND the plan's header (more specific, so it
    wins), its filters and timeouts, and the canary alone."""
    headers = []
    for m in plan.match:
        name, value, regex = header_rule(m)
        headers.append({"type": "RegularExpression" if regex else "Exact", "name": name, "value": value})
    matches = []
    for own in managed.get("matches") or [{"path": dict(EVERY_PATH)}]:
        for header in headers:
            matches.append(
                {**copy.deepcopy(own), "headers": [*copy.deepcopy(own.get("headers") or []), header]}
            )
    stable = next((r for r in managed.get("backendRefs") or [] if _is_backend(r, s.stable)), None)
    canary = (
        dict(kept)
        if kept
        else (
            {**{k: v for k, v in stable.items() if k != "weight"}, "name": s.canary}
            if stable
            else _backend(s, s.canary, 100)
        )
    )
    rule = {k: copy.deepcopy(v) for k, v in managed.items() if k not in ("name", "matches", "backendRefs")}
    return {"matches": matches, "backendRefs": [{**canary, "weight": 100}], **rule}


def _weights(rules: list[dict[str, Any]], s: _Setup) -> tuple[int, int]:
    refs = rules[-1].get("backendRefs", []) if rules else []

    def weight(name: str) -> int:  # Gateway API's default weight is 1
        return sum(
            int(r.get("weight", 1))
            for r in refs
            if r.get("name") == name and r.get("kind", "Service") == "Service"
        )

    return weight(s.stable), weight(s.canary)


class GatewayAPIRouter:
    """Router over a Gateway API HTTPRoute."""

    provider = NAME

    def __init__(self, api_client: Any) -> None:
        self.routes = Objects(api_client, HTTP_ROUTE)

    def reconcile(self, target: RouteTarget) -> None:
        self._ensure(_setup(target))

    def _ensure(self, s: _Setup) -> dict[str, Any]:
        route = self.routes.get(s.namespace, s.http_route)
        if route is None and not s.create:
            raise MissingObject(
                f"{s.where}: HTTPRoute {s.namespace}/{s.http_route} does not exist: graylane routes on the "
                "user's object; create it, or set router option create: true"
            )
        if route is None:
            spec: dict[str, Any] = {"rules": _rules(s, STABLE_ONLY)}
            if s.parent:
                spec["parentRefs"] = [s.parent]
            if s.host:
                spec["hostnames"] = [s.host]
            route = self.routes.create(s.namespace, s.http_route, spec)
        return route

    def set_routes(self, target: RouteTarget, plan: RoutePlan, drop: bool = False) -> None:
        s = _setup(target)
        check_plan(plan, self.provider, CAPABILITIES, s.where)
        route = self._ensure(s)
        rules = route["spec"].get("rules") or []
        ab = _note(route, MATCH_RULE)
        m = managed_index(rules, s, ab)
        kept = _note(route, CANARY_BACKEND)
        ops, removed = weight_ops(
            rules[m].get("backendRefs") or [], f"/spec/rules/{m}/backendRefs", s, plan, kept, drop
        )
        ops += mirror_ops(rules[m], f"/spec/rules/{m}/filters", s, plan)
        wanted = match_rule(rules[m], plan, s, kept if removed is None else removed) if plan.match else None
        a = _match_index(rules, ab)
        if wanted is not None and a is None:
            ops.append({"op": "add", "path": f"/spec/rules/{m}", "value": wanted})
        elif wanted is not None and a is not None and rules[a] != wanted:
            ops.append({"op": "replace", "path": f"/spec/rules/{a}", "value": wanted})
        elif wanted is None and a is not None:
            ops.append({"op": "remove", "path": f"/spec/rules/{a}"})
        notes: dict[str, str | None] = {
            **plan_note(plan),
            MATCH_RULE: json.dumps(wanted["matches"]) if wanted else None,
        }
        if removed is not None:
            notes[CANARY_BACKEND] = json.dumps(removed, sort_keys=True)
        elif kept is not None and plan.canary > 0:
            notes[CANARY_BACKEND] = None
        self.routes.write(route, ops + annotation_ops(route, notes), "set routes")

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        s = _setup(target)
        route = self.routes.read(s.namespace, s.http_route)
        rules = route["spec"].get("rules") or []
        ab = _note(route, MATCH_RULE)
        managed, kept = rules[managed_index(rules, s, ab)], _note(route, CANARY_BACKEND)
        a = _match_index(rules, ab)
        live = rules[a] if a is not None else None
        render = lambda plan: match_rule(managed, plan, s, kept) if plan.match else None  # noqa: E731
        baseline = sum(
            int(r.get("weight", 1))
            for r in managed.get("backendRefs") or []
            if s.baseline and _is_backend(r, s.baseline)
        )
        plan = live_plan(
            decode_plan(route), *_weights([managed], s), live, render, s.where, baseline=baseline
        )
        mirror = live_mirror(managed, s)
        return replace(plan, mirror=mirror) if mirror and plan.stable == 100 and not plan.match else plan

    def set_protection(self, target: RouteTarget, protection: Protection) -> None:
        if protection.rate_limit is not None or protection.circuit_breaker is not None:
            raise ConfigError(
                f"{_setup(target).where}: rate limiting and circuit breaking are not supported "
                "by router gateway-api"
            )

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        """Nothing to say: the standard HTTPRoute has no rate limit or circuit breaker (an implementation's own
        policy attachment is not graylane's to read)."""
        return ()

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        """All traffic back to stable, graylane's A/B rule and canary backend gone (the route stays: it carries
        the stable's traffic); returns the user's rules that still send traffic to the canary Service."""
        self.set_routes(target, STABLE_ONLY, drop=True)
        s = _setup(target)
        route = self.routes.read(s.namespace, s.http_route)
        return tuple(
            f"HTTPRoute {s.namespace}/{s.http_route} spec.rules[{i}]"
            + (f" ({r['name']})" if r.get("name") else "")
            + f" still sends traffic to Service {s.canary}: it is the user's rule, graylane left it as it is"
            for i, r in enumerate(route["spec"].get("rules") or [])
            if any(_is_backend(b, s.canary) and b.get("weight", 1) for b in r.get("backendRefs") or [])
        )
