"""Traefik: weights and A/B rules on an IngressRoute (optionally through a weighted TraefikService), rate
limit and circuit breaker as Middlewares.

Ownership (OWNS): graylane points at the user's IngressRoute and touches only
- the weights of the stable and canary backends of the *managed route*: the one route whose services
  name the stable Service (or the route whose `match` is router option `route`, like Argo's
  managedRoutes); the canary's entry is added (a copy of the stable's entry: port, namespace,
  passHostHeader... with the canary's name) while it gets traffic and removed at weight 0, the user's own
  canary entry kept aside in annotation graylane.dev/canary-backend and put back as it was;
- the A/B route it adds (recorded by its match in annotation graylane.dev/match-route), inserted before
  the managed route with the managed route's match, middlewares and syntax (and its priority + 1);
- references to its own Middlewares `<ingressRoute>-rate-limit`/`-circuit-breaker`, one list element each;
- with spec.sessionAffinity, the sticky cookie of the weighted TraefikService (`spec.weighted.sticky`, recorded
  in annotation graylane.dev/sticky) while the split is weighted; a sticky of the user's there is refused;
- its annotations graylane.dev/*, and the objects it creates (router option `create: true`), labelled.
Every other route, priority, passHostHeader, services[].namespace, middleware, entry point, TLS,
annotation and label stays byte for byte: writes are JSON patches of single elements with the
resourceVersion test. Two routes to the stable Service and no `route` option is refused, naming both.
A user's own rate limiter or circuit breaker on the managed route is kept and graylane's is not chained
after it (router option `userProtection: keep`, the default; `wrap` chains both; `replace` swaps the
user's reference for graylane's in the route's middlewares until the release ends, the user's Middleware
object untouched and its reference put back in place by finalize) and said, at release start (survey) and
whenever protection is set.

Layout graylane writes (options `ingressRoute`, `host`, `entryPoints`, `stableService`, `canaryService`,
`port`, `traefikService`, `group`, `ruleSyntax`):

    routes:
      - match: Host(`pro.coding`) && (Header(`location`, `shenzhen`))   # only with A/B rules
        services: [canary weight 100, stable weight 0]
      - match: Host(`pro.coding`)
        services: [stable weight 80, canary weight 20]   # or [TraefikService <traefikService>]

A mirror stage (RoutePlan.mirror) routes through a TraefikService graylane creates, `<ingressRoute>-mirror`
(`<traefikService>-mirror` with that option), of kind mirroring: its main service is the stable's entry,
its one mirror the canary's with `percent`; the managed backend list gets an entry naming it (weight 100) and
the stable's weight 0, so every answer comes from the stable and Traefik discards the canary's:

    services: [stable weight 0, {kind: TraefikService, name: <ingressRoute>-mirror, weight: 100}]
    TraefikService <ingressRoute>-mirror: {mirroring: {name: stable, port, mirrors: [{name: canary, port, percent: 50}]}}

The mirroring service is written before the entry naming it and deleted after the entry is gone (Traefik
refuses a route naming a missing service). Traefik counts the copies on the canary's own service series,
`<ns>-<canary>-<port>`, so the analysis reads them like weighted traffic.

The A/B route's rule contains the default rule plus more, so Traefik's default priority (rule length)
always tries it first. With `traefikService` the weights live in that TraefikService; without
`ingressRoute` graylane only weighs it (no rules, no protection). Both API groups are served: traefik.io
(rule syntax v3 by default) and the legacy traefik.containo.us (v2 syntax, `Headers(...)`, never a
`syntax` field, which Traefik v2.11 does not know).

Session affinity (spec.sessionAffinity) is Traefik's sticky cookie on the weighted TraefikService: its
weighted round robin sets `<cookie>=<hash of the child's name>` on a client's first answer and sends every
request carrying it to that child, whatever the weights (v2.11 and v3 alike: pkg/server/service/loadbalancer/
wrr). The children are the stable and canary Services, whose names never change, so a cookie would keep a
client on its version across every weight change; graylane re-rolls at a weight change instead by naming the
cookie after the weight, `<cookie>-<weight>` (a client's older cookie names no balancer and is ignored). An
IngressRoute route's own list of services has no sticky option (`services[].sticky` pins pods inside one
Service), so affinity needs option traefikService. Traefik v2.11's cookie has no maxAge (a session cookie).

What real Traefik (v2.11 and v3, tests/traefik) does with these lists decides their shape:
- A canary at weight 0 is left out (`[stable weight 100]`): Traefik drops a whole route when one of its
  Services has no endpoints (unless the proxy runs with allowEmptyServices), and the canary has none before
  its first deploy and after graylane scales it down: listing it would answer 404 to everyone.
- The A/B route lists the stable at weight 0 beside the canary: Traefik names the backends of a route
  with several services `<ns>-<svc>-<port>`, the `service` label of its metrics, but the load balancer of
  a route with one service after the route (`<ns>-<ingressRoute>-<hash of the rule>`), so a lone canary
  there would be invisible to the analysis. The stable always has endpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from functions.core.capabilities import FEATURES, WHAT
from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, Policy, RateLimit
from functions.core.routing import Need, Option, Owned, Problem, RouterMetrics, Versions, text_option
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
    choice_option,
    decode_plan,
    header_rule,
    live_plan,
    option,
    plan_note,
    relative,
)
from functions.providers.routers.base import Cluster, RouteTarget

NAME = "traefik"
GROUPS = ("traefik.io", "traefik.containo.us")
OPTIONS = (
    Option(
        "ingressRoute",
        "name",
        "the IngressRoute whose route graylane weighs (and where A/B routes and protection go)",
    ),
    Option(
        "traefikService",
        "name",
        "a weighted TraefikService holding the weights instead (with ingressRoute: the route's backend)",
    ),
    Option("host", "text", "the host of the default route graylane writes: Host(`<host>`)", "every path"),
    Option("entryPoints", "names", "entry points of an IngressRoute graylane creates"),
    Option("stableService", "name", "the stable's Service", "workload.name"),
    Option("canaryService", "name", "the canary's Service", "workload.canary"),
    Option("port", "port", "the Services' port", "80"),
    Option(
        "group",
        "choice",
        "the IngressRoute API group (traefik.containo.us: Traefik v2)",
        "traefik.io",
        choices=GROUPS,
    ),
    Option(
        "ruleSyntax",
        "choice",
        "Traefik's rule syntax",
        "v3 on traefik.io, v2 on traefik.containo.us",
        choices=("v2", "v3"),
    ),
    Option(
        "route",
        "text",
        "the match of the route graylane weighs (when several route to the stable Service)",
        "the one route naming stableService",
    ),
    Option("create", "boolean", "create the IngressRoute / TraefikService when it does not exist", "false"),
    Option(
        "userProtection",
        "choice",
        "what to do with a rate limiter or circuit breaker of the user's on the "
        "route: keep it (graylane's is not chained after it), wrap (both) or replace (graylane's takes its place "
        "in the route's middlewares until the release ends)",
        "keep",
        choices=("keep", "wrap", "replace"),
    ),
)
CAPABILITIES = frozenset(FEATURES)
# service="<namespace>-<service>-<port>@kubernetescrd" (IngressRoute / TraefikService backends), or
# "<namespace>-<service>-http-<port>@kubernetesgateway" (HTTPRoute backends of Traefik's Gateway provider)
METRICS = RouterMetrics(
    "traefik_service_requests_total",
    ("service",),
    "code",
    "5..",
    "traefik_service_request_duration_seconds_bucket",
)
OWNS = (
    Owned("IngressRoute", "/spec/routes/{managed}/services/{stable}/weight", "the stable's weight"),
    Owned(
        "IngressRoute",
        "/spec/routes/{managed}/services/{canary}",
        "the canary's entry (added, weighed, removed)",
    ),
    Owned(
        "IngressRoute",
        "/spec/routes/{match}",
        "the A/B route graylane adds (annotation graylane.dev/match-route)",
    ),
    Owned(
        "IngressRoute", "/spec/routes/{managed,match}/middlewares/{graylane}", "references to its Middlewares"
    ),
    Owned(
        "IngressRoute",
        "/metadata/annotations/graylane.dev~1*",
        "the plan, the A/B route, the user's canary entry",
    ),
    Owned("TraefikService", "/spec/weighted/services/{stable,canary}", "the weights (option traefikService)"),
    Owned(
        "IngressRoute",
        "/spec/routes/{managed,match}/middlewares/{user's limiter}",
        "userProtection replace: "
        "the user's reference, swapped for graylane's until the release ends (kept in graylane.dev/replaced-"
        "middlewares)",
    ),
    Owned(
        "TraefikService", "/spec/weighted/sticky", "the sticky cookie while weighted (spec.sessionAffinity)"
    ),
    Owned("TraefikService", "/metadata/annotations/graylane.dev~1*", "the plan, the sticky cookie it wrote"),
    Owned(
        "IngressRoute",
        "/spec/routes/{managed}/services/{baseline}",
        "the fresh baseline's entry (spec.baseline)",
    ),
    Owned(
        "TraefikService", "/spec/weighted/services/{baseline}", "the fresh baseline's entry (spec.baseline)"
    ),
    Owned(
        "IngressRoute",
        "/spec/routes/{managed}/services/{mirror}",
        "the entry naming graylane's mirroring "
        "TraefikService, while a mirror stage runs (the stable's weight is then 0)",
    ),
    Owned("TraefikService", "/spec/weighted/services/{mirror}", "the same entry (option traefikService)"),
    Owned(
        "TraefikService",
        "<ingressRoute|traefikService>-mirror",
        "created by graylane (kind mirroring: the "
        "stable, copies to the canary), deleted when the mirror stage ends",
    ),
    Owned("Middleware", "<ingressRoute>-rate-limit, <ingressRoute>-circuit-breaker", "created by graylane"),
)
MATCH_ROUTE = "graylane.dev/match-route"
STICKY = "graylane.dev/sticky"  # the sticky graylane wrote on the TraefikService (sessionAffinity)
MIRROR_SUFFIX = "-mirror"  # graylane's mirroring TraefikService: <ingressRoute or traefikService>-mirror
CANARY_BACKEND = "graylane.dev/canary-backend"
REPLACED = (
    "graylane.dev/replaced-middlewares"  # userProtection replace: graylane's name -> the user's reference
)
_PROTECTIONS = (("rate-limit", "rateLimit"), ("circuit-breaker", "circuitBreaker"))
_USER_PROTECTION = {
    "keep": "kept it, graylane's is not chained after it (router option userProtection: wrap chains both, "
    "replace puts graylane's in its place for the release)",
    "wrap": "graylane's is chained after it (userProtection: wrap)",
    "replace": "graylane's takes its place in the route's middlewares for the release (userProtection: "
    "replace); the user's Middleware is not changed and its reference is put back when the release ends",
}


@value
class _Setup:
    namespace: str
    ingress_route: str
    traefik_service: str
    host: str
    entry_points: tuple[str, ...]
    stable: str
    canary: str
    port: int | str
    group: str
    syntax: str  # Traefik rule syntax: v2 (Headers, HeadersRegexp) or v3 (Header, HeaderRegexp)
    route: str = ""  # the managed route's match, when the policy names it
    create: bool = False
    user_protection: str = "keep"
    group_given: bool = True  # false: taken from the user's live object (or what the cluster serves)
    baseline: str = ""  # the fresh baseline's Service (functions/core/baseline.py), "" without one

    @property
    def where(self) -> str:
        return f"traefik router for {self.namespace}/{self.ingress_route or self.traefik_service}"


def _setup(target: RouteTarget, discovered: str = "") -> _Setup:
    opts, where = target.options, f"traefik router for {target.namespace}/{target.app}"
    group = opts.get("group", discovered) if discovered else opts.get("group", "traefik.io")
    if group not in GROUPS:
        raise ConfigError(f"{where}: router option group is {group!r}; expected one of {', '.join(GROUPS)}")
    syntax = opts.get("ruleSyntax", "v3" if group == "traefik.io" else "v2")
    if syntax not in ("v2", "v3") or (group == "traefik.containo.us" and syntax == "v3"):
        raise ConfigError(
            f"{where}: router option ruleSyntax is {syntax!r}; expected v2 or v3 (v3 needs traefik.io)"
        )
    ingress_route = option(opts, "ingressRoute", "", str, where) if "ingressRoute" in opts else ""
    traefik_service = option(opts, "traefikService", "", str, where) if "traefikService" in opts else ""
    if not ingress_route and not traefik_service:
        raise ConfigError(f"{where}: router option ingressRoute or traefikService is required")
    entry_points = opts.get("entryPoints", [])
    if not isinstance(entry_points, list) or not all(isinstance(e, str) and e for e in entry_points):
        raise ConfigError(f"{where}: router option entryPoints is {entry_points!r}; expected a list of names")
    return _Setup(
        namespace=target.namespace,
        ingress_route=ingress_route,
        traefik_service=traefik_service,
        host=option(opts, "host", "", str, where) if "host" in opts else "",
        entry_points=tuple(entry_points),
        stable=option(opts, "stableService", target.stable, str, where),
        canary=option(opts, "canaryService", target.canary, str, where),
        port=option(opts, "port", 80, (int, str), where),
        group=group,
        syntax=syntax,
        route=option(opts, "route", "", str, where) if "route" in opts else "",
        create=option(opts, "create", False, bool, where),
        user_protection=choice_option(opts, "userProtection", _USER_PROTECTION, where),
        group_given="group" in opts,
        baseline=target.baseline,
    )


# --- rendering (pure) ------------------------------------------------------------------------------------


def _quote(text: str, s: _Setup) -> str:
    if "`" in text:
        raise ConfigError(f"{s.where}: {text!r} cannot be written into a Traefik rule (it holds a backtick)")
    return f"`{text}`"


def _matcher(m: Match, s: _Setup) -> str:
    v2 = s.syntax == "v2"
    if m.kind == "source-ip":
        if v2:
            return "ClientIP(" + ", ".join(_quote(c, s) for c in m.cidrs) + ")"
        return "(" + " || ".join(f"ClientIP({_quote(c, s)})" for c in m.cidrs) + ")"
    name, value, regex = header_rule(m)
    func = ("HeadersRegexp" if v2 else "HeaderRegexp") if regex else ("Headers" if v2 else "Header")
    return f"{func}({_quote(name, s)}, {_quote(value, s)})"


def _service(name: str, s: _Setup, weight: int | None = None) -> dict[str, Any]:
    svc: dict[str, Any] = {"kind": "Service", "name": name, "port": s.port}
    return svc if weight is None else {**svc, "weight": weight}


def _weighted(s: _Setup, plan: RoutePlan) -> list[dict[str, Any]]:
    """The default route's backends: the stable always (it has endpoints), the canary while it gets traffic."""
    stable = [_service(s.stable, s, plan.stable)]
    return stable + [_service(s.canary, s, plan.canary)] if plan.canary > 0 else stable


def default_rule(host: str) -> str:
    """The rule of the route every request without an A/B match takes (Host, or every path)."""
    return f"Host(`{host}`)" if host else "PathPrefix(`/`)"


def _route(rule: str, services: list[dict[str, Any]], middlewares: list[Any], s: _Setup) -> dict[str, Any]:
    route: dict[str, Any] = {"kind": "Rule", "match": rule, "services": services}
    if middlewares:
        route["middlewares"] = middlewares
    if s.group == "traefik.io" and s.syntax == "v2":
        route["syntax"] = "v2"
    return route


def _routes(s: _Setup, plan: RoutePlan, middlewares: list[Any]) -> list[dict[str, Any]]:
    default = default_rule(_quote(s.host, s)[1:-1]) if s.host else default_rule("")
    backend = (
        [{"kind": "TraefikService", "name": s.traefik_service}] if s.traefik_service else _weighted(s, plan)
    )
    routes = []
    if plan.match:
        rules = " || ".join(_matcher(m, s) for m in plan.match)
        ab = [_service(s.canary, s, 100), _service(s.stable, s, 0)]  # weighted: see the module docstring
        routes.append(_route(f"{default} && ({rules})", ab, middlewares, s))
    routes.append(_route(default, backend, middlewares, s))
    return routes


def _period(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"


def _protection_spec(key: str, p: Protection) -> dict[str, Any] | None:
    if key == "rateLimit" and isinstance(p.rate_limit, RateLimit):
        rl = p.rate_limit
        return {"rateLimit": {"average": rl.average, "burst": rl.burst, "period": _period(rl.period)}}
    if key == "circuitBreaker" and isinstance(p.circuit_breaker, CircuitBreaker):
        return {"circuitBreaker": {"expression": p.circuit_breaker.expression}}
    return None


def _weights(services: list[dict[str, Any]], s: _Setup) -> tuple[int, int]:
    def weight(name: str) -> int:  # Traefik's default weight is 1
        return sum(
            int(x.get("weight", 1))
            for x in services
            if x.get("name") == name and x.get("kind") != "TraefikService"
        )

    # graylane's mirroring service answers with the stable's answers: its weight is the stable's
    mirrored = sum(int(x.get("weight", 1)) for x in services if _is_mirror(x, s))
    return weight(s.stable) + mirrored, weight(s.canary)


def mirror_name(s: _Setup) -> str:
    """graylane's mirroring TraefikService: named after the object holding the weights."""
    return f"{s.traefik_service or s.ingress_route}{MIRROR_SUFFIX}"


def _is_mirror(entry: Any, s: _Setup) -> bool:
    return (
        isinstance(entry, Mapping)
        and entry.get("kind") == "TraefikService"
        and entry.get("name") == mirror_name(s)
    )


def mirror_spec(
    entries: list[Any], s: _Setup, percent: int, kept: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The mirroring TraefikService's spec: the stable's entry (its port, namespace, passHostHeader...) as the
    main service, the canary's (the user's own entry when kept aside, else a copy of the stable's with the
    canary's name) as its one mirror."""
    stable = next((e for e in entries if _is_backend(e, s.stable)), None)
    if stable is None:
        raise ConfigError(f"{s.where}: no backend entry names Service {s.stable}: nothing to mirror")
    main = {k: v for k, v in stable.items() if k != "weight"}
    canary = {k: v for k, v in (dict(kept) if kept else {**main, "name": s.canary}).items() if k != "weight"}
    return {"mirroring": {**main, "mirrors": [{**canary, "percent": percent}]}}


def mirror_percent(spec: Mapping[str, Any] | None, s: _Setup) -> int:
    """The share a live mirroring spec copies to the canary (0 when it does not mirror the stable to it)."""
    mirroring = (spec or {}).get("mirroring") or {}
    mirrors = mirroring.get("mirrors") or []
    if not _is_backend(mirroring, s.stable) or len(mirrors) != 1 or not _is_backend(mirrors[0], s.canary):
        return 0
    percent = mirrors[0].get("percent", 0)
    return (
        percent if isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 100 else 0
    )


def _baseline_weight(services: list[dict[str, Any]], s: _Setup) -> int:
    if not s.baseline:
        return 0
    return sum(int(x.get("weight", 1)) for x in services if _is_backend(x, s.baseline))


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    """source-ip needs the traefik.io group (ClientIP); session affinity a weighted TraefikService; anything
    else but weights needs an IngressRoute."""
    problems: list[Problem] = []
    for path, feature, node in needs:
        if feature == "session-affinity":
            problems += _affinity_problems(options, path, node)
        elif feature == "source-ip" and options.get("group") == "traefik.containo.us":
            problems.append(
                (
                    path,
                    f"{WHAT[feature]} is not supported by router traefik with group "
                    "traefik.containo.us; use group traefik.io",
                )
            )
        elif feature not in ("weights", "baseline", "mirror") and not options.get(
            "ingressRoute"
        ):  # a TraefikService weighs
            problems.append(
                (
                    path,
                    f"{WHAT[feature]} needs router option ingressRoute with router traefik (a "
                    "TraefikService alone only weighs)",
                )
            )
    return problems


def _affinity_problems(options: Mapping[str, Any], path: str, node: Any) -> list[Problem]:
    problems: list[Problem] = []
    if not options.get("traefikService"):
        problems.append(
            (
                path,
                "session affinity needs router option traefikService with router traefik: Traefik's "
                "sticky cookie is the weighted TraefikService's (spec.weighted.sticky.cookie); an "
                "IngressRoute route's services[].sticky pins pods inside one Service, not a version",
            )
        )
    cookie = node.get("cookie") if isinstance(node, Mapping) else None
    if isinstance(cookie, Mapping) and "maxAge" in cookie and options.get("group") == "traefik.containo.us":
        problems.append(
            (
                f"{path}.cookie.maxAge",
                "is not supported by router traefik with group traefik.containo.us "
                "(Traefik v2.11's sticky cookie has no maxAge: a session cookie); "
                "leave it out or use group traefik.io with Traefik v3",
            )
        )
    return problems


def sticky(target: RouteTarget, plan: RoutePlan) -> dict[str, Any] | None:
    """The TraefikService's sticky while the split is weighted (module docstring): the cookie is named after the
    weight, so a weight change re-rolls every client."""
    a = target.affinity
    if a is None or not 0 < plan.canary < 100:
        return None
    cookie: dict[str, Any] = {"name": f"{a.cookie}-{plan.canary}", "httpOnly": True}
    if a.max_age is not None:
        cookie["maxAge"] = a.max_age
    return {"cookie": cookie}


def sticky_ops(
    ts: Mapping[str, Any], wanted: dict[str, Any] | None, where: str
) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """Patch operations and annotation putting graylane's sticky on a TraefikService (or taking it off); a
    sticky there that graylane did not write is the user's: kept when affinity is off, refused when on."""
    live = (ts.get("spec", {}).get("weighted") or {}).get("sticky")
    written = _note(ts, STICKY)
    name = f"TraefikService {ts['metadata'].get('namespace')}/{ts['metadata']['name']}"
    if live is not None and live != written:
        if wanted is None:
            return [], {}
        raise ConfigError(
            f"{where}: {name} spec.weighted.sticky {json.dumps(live, sort_keys=True)} is the user's; "
            "spec.sessionAffinity would replace it: remove one of them"
        )
    if wanted is None:
        return (
            [{"op": "remove", "path": "/spec/weighted/sticky"}] if live is not None else [],
            {STICKY: None} if written is not None else {},
        )
    if live == wanted:
        return [], {}
    return [{"op": "add", "path": "/spec/weighted/sticky", "value": wanted}], {
        STICKY: json.dumps(wanted, sort_keys=True)
    }


def measured_by(options: Mapping[str, Any]) -> str:
    return NAME


def service_label(namespace: str, service: str, port: object, provider: str = "kubernetescrd") -> str:
    """Traefik's name of a Kubernetes Service backend, as its `service` metric label shows it.

    The CRD provider names it `<namespace>-<service>-<port>`, the Gateway provider
    `<namespace>-<service>-http-<port>`; both pass it through provider.Normalize (every run of characters
    other than letters and digits becomes one '-') and qualify it with `@<provider>`.
    """
    middle = "http-" if provider == "kubernetesgateway" else ""
    name = "-".join(p for p in re.split(r"[\W_]+", f"{namespace}-{service}-{middle}{port}") if p)
    return f"{name}@{provider}"


def route_service_label(namespace: str, ingress_route: str, rule: str) -> str:
    """Traefik's name of the load balancer of an IngressRoute route with a single Service backend: the CRD
    provider names it after the route, `<namespace>-<ingressRoute>-<first 10 bytes of sha256(rule), hex>`
    (v2.11 and v3 alike), not after the Service. graylane's default route is one when the canary has no
    traffic (the stable alone), e.g. during an A/B test or a post-promotion watch."""
    digest = hashlib.sha256(rule.encode()).hexdigest()[:20]
    name = "-".join(p for p in re.split(r"[\W_]+", f"{namespace}-{ingress_route}-{digest}") if p)
    return f"{name}@kubernetescrd"


def port_of(options: Mapping[str, Any]) -> object:
    port = options.get("port", 80)  # the router's default
    return port if isinstance(port, (int, str)) and not isinstance(port, bool) else 80


def versions(policy: Policy) -> Versions:
    """Exact `service` names: "app" never matches "app-canary", nor a weighted parent service. The stable is
    also the default route's own load balancer while it is alone there."""
    opts, ns = policy.router.options, policy.namespace
    stable = text_option(opts, "stableService", policy.stable_workload)
    canary = text_option(opts, "canaryService", policy.canary_workload)

    def names(service: str, is_stable: bool) -> str:
        found = [re.escape(service_label(ns, service, port_of(opts)))]
        route = text_option(opts, "ingressRoute", "")
        if is_stable and route:
            found.append(
                re.escape(route_service_label(ns, route, default_rule(text_option(opts, "host", ""))))
            )
        return "|".join(found)

    baseline = policy.baseline_workload  # a Service graylane creates beside the stable's: the same port
    return Versions(
        stable=(("service", names(stable, True)),),
        canary=(("service", names(canary, False)),),
        names={"stable": stable, "canary": canary, "baseline": baseline},
        baseline=(("service", re.escape(service_label(ns, baseline, port_of(opts)))),),
    )


# --- ownership (pure): which route is the user's managed one, and the element-wise patches ------------------


def _is_backend(entry: Any, name: str) -> bool:
    return (
        isinstance(entry, Mapping) and entry.get("name") == name and entry.get("kind", "Service") == "Service"
    )


def _note(obj: Mapping[str, Any] | None, key: str) -> Any:
    text = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(key)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _match_index(routes: list[dict[str, Any]], match: Any) -> int | None:
    return next((i for i, r in enumerate(routes) if match and r.get("match") == match), None)


def managed_index(routes: list[dict[str, Any]], s: _Setup, name: str, ab_match: Any = None) -> int:
    """The route graylane weighs: the one whose match is option `route`, else the one naming the stable
    Service (or the TraefikService); none or several is a ConfigError naming them and the option to set."""
    where = f"{s.where}: IngressRoute {s.namespace}/{name}"
    candidates = [i for i, r in enumerate(routes) if not (ab_match and r.get("match") == ab_match)]
    if s.route:
        found = [i for i in candidates if routes[i].get("match") == s.route]
        if not found:
            have = (
                "; ".join(f"spec.routes[{i}].match {routes[i].get('match')!r}" for i in candidates) or "none"
            )
            raise ConfigError(
                f"{where} has no route whose match is {s.route!r} (router option route); it has {have}"
            )
        return found[0]
    found, backend = _sending_to_backend(routes, candidates, s)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"{where}: no route sends traffic to {backend} (spec.routes[*].services); set router "
            "option stableService (or traefikService) to its backend, or route to its match"
        )
    named = " and ".join(f"spec.routes[{i}] (match {routes[i].get('match')!r})" for i in found)
    raise ConfigError(
        f"{where}: {named} all send traffic to {backend}; set router option route to the match of "
        "the one graylane weighs"
    )


def _sending_to_backend(
    routes: list[dict[str, Any]], candidates: list[int], s: _Setup
) -> tuple[list[int], str]:
    """The candidate routes that send traffic to the TraefikService (option traefikService), else to the stable
    Service (the one weighing it above 0, when only an A/B route also names it); and that backend, named."""
    if s.traefik_service:
        found = [
            i
            for i in candidates
            if any(
                isinstance(e, Mapping)
                and e.get("kind") == "TraefikService"
                and e.get("name") == s.traefik_service
                for e in routes[i].get("services") or []
            )
        ]
        return found, f"TraefikService {s.traefik_service}"
    found = [i for i in candidates if any(_is_backend(e, s.stable) for e in routes[i].get("services") or [])]
    weighed = [
        i
        for i in found
        if not any(_is_backend(e, s.stable) and e.get("weight") == 0 for e in routes[i].get("services") or [])
    ]
    found = weighed if len(found) > 1 and len(weighed) == 1 else found  # an A/B route gives the stable 0
    return found, f"Service {s.stable}"


def weight_ops(
    entries: list[Any], base: str, s: _Setup, plan: RoutePlan, kept: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """JSON patch operations putting plan's weights on a backend list (a route's services, a TraefikService's
    weighted services), touching only the stable's weight and the canary's entry; and the canary entry removed
    (without its weight), to be kept aside. The canary is listed only while it gets traffic (module docstring)."""
    mirrors = [i for i, e in enumerate(entries) if _is_mirror(e, s)]
    if plan.mirror or mirrors:  # graylane's mirroring service in or leaving the list
        ops, removed = _mirror_weight_ops(entries, base, s, plan, kept, mirrors)
    else:
        ops, removed = backend_weight_ops(
            entries,
            base,
            plan,
            is_stable=lambda e: _is_backend(e, s.stable),
            is_canary=lambda e: _is_backend(e, s.canary),
            canary_of=lambda stable: {**{k: v for k, v in stable.items() if k != "weight"}, "name": s.canary},
            kept=kept,
            what=f"{s.where}: {base} lists Service {s.stable}",
        )
    if s.baseline:  # the fresh baseline's entry, on the list as the operations above leave it
        ops += baseline_ops(
            apply_patch(entries, relative(ops, base)),
            base,
            plan,
            s.baseline,
            lambda e: _is_backend(e, s.stable),
            lambda e: _is_backend(e, s.baseline),
        )
    return ops, removed


def _mirror_weight_ops(
    entries: list[Any],
    base: str,
    s: _Setup,
    plan: RoutePlan,
    kept: Mapping[str, Any] | None,
    mirrors: list[int],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """weight_ops while a mirror stage starts, runs or ends: the stable answers through graylane's mirroring
    TraefikService (weight 100, the stable's own entry 0), which leaves the list with the stage."""
    stable = [i for i, e in enumerate(entries) if _is_backend(e, s.stable)]
    if len(stable) != 1:
        raise ConfigError(f"{s.where}: {base} lists Service {s.stable} {len(stable)} times; expected once")
    i_s, canary = stable[0], [i for i, e in enumerate(entries) if _is_backend(e, s.canary)]
    ops: list[dict[str, Any]] = []
    alone = plan.canary == 0
    stable_weight = (
        0 if plan.mirror else plan.stable
    )  # mirrored: the stable answers through the mirroring service
    if entries[i_s].get("weight") != stable_weight and not (
        alone and not plan.mirror and "weight" not in entries[i_s]
    ):
        ops.append({"op": "add", "path": f"{base}/{i_s}/weight", "value": stable_weight})
    removed = None
    gone: list[int] = []  # removed last, highest index first: the weights above are written by index
    appended: list[dict[str, Any]] = []
    if not alone and canary:
        if entries[canary[0]].get("weight") != plan.canary:
            ops.append({"op": "add", "path": f"{base}/{canary[0]}/weight", "value": plan.canary})
    elif not alone:
        entry = (
            dict(kept)
            if kept
            else {**{k: v for k, v in entries[i_s].items() if k != "weight"}, "name": s.canary}
        )
        appended.append({**entry, "weight": plan.canary})
    elif canary:
        removed = {k: v for k, v in entries[canary[0]].items() if k != "weight"}
        gone.append(canary[0])
    if plan.mirror and mirrors:
        if entries[mirrors[0]].get("weight") != 100:
            ops.append({"op": "add", "path": f"{base}/{mirrors[0]}/weight", "value": 100})
    elif plan.mirror:
        appended.append({"kind": "TraefikService", "name": mirror_name(s), "weight": 100})
    gone += [] if plan.mirror else mirrors
    ops += [{"op": "remove", "path": f"{base}/{i}"} for i in sorted(gone, reverse=True)]
    ops += [{"op": "add", "path": f"{base}/-", "value": entry} for entry in appended]
    return ops, removed


def ab_route(
    managed: Mapping[str, Any], plan: RoutePlan, s: _Setup, kept: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The A/B route graylane adds beside the managed route: its match narrowed by the plan's rules, in the
    managed route's syntax, with its middlewares and (when it has one) a priority above it and at least its
    rule's length (Traefik's default priority)."""
    syntax = managed.get("syntax") or s.syntax
    ss = replace(s, syntax=syntax if s.group == "traefik.io" else "v2")
    rules = " || ".join(_matcher(m, ss) for m in plan.match)
    stable = next((e for e in managed.get("services") or [] if _is_backend(e, s.stable)), None)
    if stable is None:  # the managed route goes through a TraefikService
        canary_entry, stable_entry = _service(s.canary, s, 100), _service(s.stable, s, 0)
    else:
        base = {k: v for k, v in stable.items() if k != "weight"}
        canary_entry = {**(dict(kept) if kept else {**base, "name": s.canary}), "weight": 100}
        stable_entry = {**base, "weight": 0}
    route: dict[str, Any] = {
        "kind": managed.get("kind", "Rule"),
        "match": f"{managed.get('match')} && ({rules})",
        "services": [canary_entry, stable_entry],
    }  # weighted: see the module docstring
    if isinstance(managed.get("priority"), int) and not isinstance(managed.get("priority"), bool):
        # above the managed route, and never below the rule-length priority Traefik gives routes that set
        # none: a user's own route for the same header (seed 000's k8s-flask-abtest) would take the A/B
        # traffic to the canary as a lone backend, named after that route, unseen by the analysis
        route["priority"] = max(managed["priority"] + 1, len(route["match"]))
    if managed.get("middlewares"):
        route["middlewares"] = copy.deepcopy(managed["middlewares"])
    if s.group == "traefik.io" and (managed.get("syntax") or s.syntax) == "v2":
        route["syntax"] = "v2"
    return route


def swap_refs(route: Mapping[str, Any], base: str, swap: Mapping[str, Any],
              restore: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """userProtection replace on one route: each user's reference in `swap` (graylane's name -> the user's
    reference) replaced in place by graylane's, each graylane reference in `restore` by the user's it stood
    in for; element by element, each tested first. Returns the operations and the route as they leave it."""
    refs = list(route.get("middlewares") or [])
    ops: list[dict[str, Any]] = []
    for i, ref in enumerate(refs):
        ours = next((n for n, user in swap.items() if ref == user), None)
        name = ref.get("name") if isinstance(ref, Mapping) else None
        new = {"name": ours} if ours is not None else restore.get(name) if isinstance(name, str) else None
        if new is not None:
            ops += [{"op": "test", "path": f"{base}/middlewares/{i}", "value": ref},
                    {"op": "replace", "path": f"{base}/middlewares/{i}", "value": new}]  # fmt: skip
            refs[i] = new
    return ops, {**route, "middlewares": refs} if "middlewares" in route else dict(route)


def middleware_ops(route: Mapping[str, Any], base: str, names: Mapping[str, bool]) -> list[dict[str, Any]]:
    """Add or remove graylane's Middleware references on one route, element by element (the user's stay)."""
    refs = list(route.get("middlewares") or [])
    have = {r.get("name"): i for i, r in enumerate(refs) if isinstance(r, Mapping)}
    gone = sorted((have[n] for n, on in names.items() if not on and n in have), reverse=True)
    added = [{"name": n} for n, on in names.items() if on and n not in have]
    if gone and len(gone) == len(refs) and not added:
        return [{"op": "remove", "path": f"{base}/middlewares"}]
    ops = [{"op": "remove", "path": f"{base}/middlewares/{i}"} for i in gone]
    if added and "middlewares" not in route:
        return ops + [{"op": "add", "path": f"{base}/middlewares", "value": added}]
    return ops + [{"op": "add", "path": f"{base}/middlewares/-", "value": a} for a in added]


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> TraefikRouter:
    return TraefikRouter(cluster.api_client(NAME))


class TraefikRouter:
    """Router over Traefik's IngressRoute, TraefikService and Middleware custom resources."""

    provider = NAME
    # After the last entry naming graylane's mirroring TraefikService is gone, how long it lives on. Traefik
    # watches IngressRoutes and TraefikServices through separate informers: had the delete reached its cache
    # before the route's update, the configuration it built would name a missing service and Traefik would
    # drop the whole route (404s, measured on v3). Two seconds is Traefik's default providersThrottleDuration.
    mirror_retire_grace = 2.0

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self._objects: dict[tuple[str, str], Objects] = {}
        self._groups: dict[
            tuple[str, str], str
        ] = {}  # (namespace, object) -> the group its live object is in

    def _kind(self, group: str, plural: str, kind: str) -> Objects:
        key = (group, plural)
        if key not in self._objects:
            self._objects[key] = Objects(self.api_client, Kind(group, "v1alpha1", plural, kind))
        return self._objects[key]

    def _routes_api(self, s: _Setup) -> Objects:
        return self._kind(s.group, "ingressroutes", "IngressRoute")

    def _services_api(self, s: _Setup) -> Objects:
        return self._kind(s.group, "traefikservices", "TraefikService")

    def _middlewares_api(self, s: _Setup) -> Objects:
        return self._kind(s.group, "middlewares", "Middleware")

    def _setup(self, target: RouteTarget) -> _Setup:
        """The setup, in the API group the user's object lives in when the policy does not name one (a second
        IngressRoute in the other group would never be created beside the user's), else what the cluster serves."""
        if "group" in target.options:
            return _setup(target)
        s = _setup(target)
        plural, kind, name = (
            ("ingressroutes", "IngressRoute", s.ingress_route)
            if s.ingress_route
            else ("traefikservices", "TraefikService", s.traefik_service)
        )
        key = (s.namespace, name)
        if key not in self._groups:
            found = [g for g in GROUPS if self._kind(g, plural, kind).get(s.namespace, name) is not None]
            if not found:
                served = [
                    g for g in GROUPS if self._kind(g, "ingressroutes", "IngressRoute").served(s.namespace)
                ]
                if not served:
                    raise MissingObject(
                        f"{s.where}: this cluster serves neither {' nor '.join(GROUPS)} {kind}s "
                        "(are Traefik's CRDs installed?)"
                    )
                return _setup(
                    target, served[0]
                )  # nothing to remember yet: create makes it, or MissingObject says
            self._groups[key] = found[0]
        return _setup(target, self._groups[key])

    def reconcile(self, target: RouteTarget) -> None:
        self._ensure(self._setup(target))

    def _missing(self, s: _Setup, kind: str, name: str) -> MissingObject:
        """The refusal of a missing object (MissingObject: the effect fails for good, the release fails with
        it), naming the other group when it holds an object of that name."""
        plural = "ingressroutes" if kind == "IngressRoute" else "traefikservices"
        other = next(g for g in GROUPS if g != s.group)
        try:
            elsewhere = self._kind(other, plural, kind).get(s.namespace, name)
        except Exception:  # that group's CRDs not served, or not readable: nothing more to say
            elsewhere = None
        hint = (
            f"; {s.namespace}/{name} exists in group {other}: set router option group: {other}"
            if elsewhere is not None
            else ""
        )
        return MissingObject(
            f"{s.where}: {kind} {s.namespace}/{name} (group {s.group}) does not exist{hint}; "
            "graylane drives the user's object and does not create one next to it unless router "
            "option create is true"
        )

    def _ensure(self, s: _Setup) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(IngressRoute, TraefikService) as configured; created all on stable with option create, else MissingObject."""
        ts = ir = None
        if s.traefik_service:
            ts = self._services_api(s).get(s.namespace, s.traefik_service)
            if ts is None and not s.create:
                raise self._missing(s, "TraefikService", s.traefik_service)
            if ts is None:
                ts = self._services_api(s).create(
                    s.namespace, s.traefik_service, {"weighted": {"services": _weighted(s, STABLE_ONLY)}}
                )
        if s.ingress_route:
            ir = self._routes_api(s).get(s.namespace, s.ingress_route)
            if ir is None and not s.create:
                raise self._missing(s, "IngressRoute", s.ingress_route)
            if ir is None:
                spec: dict[str, Any] = {"routes": _routes(s, STABLE_ONLY, [])}
                if s.entry_points:
                    spec["entryPoints"] = list(s.entry_points)
                ir = self._routes_api(s).create(s.namespace, s.ingress_route, spec)
        return ir, ts

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        s = self._setup(target)
        legacy = (
            {"source-ip": "router traefik with group traefik.containo.us"} if s.group != "traefik.io" else {}
        )
        check_plan(plan, self.provider, CAPABILITIES, s.where, legacy)
        if plan.match and not s.ingress_route:
            raise ConfigError(
                f"{s.where}: A/B rules need router option ingressRoute (a TraefikService only weighs)"
            )
        if target.affinity is not None and not s.traefik_service:
            raise ConfigError(
                f"{s.where}: session affinity needs router option traefikService (a weighted "
                "TraefikService holds the sticky cookie)"
            )
        ir, ts = self._ensure(s)
        if plan.mirror:  # the mirroring service first: Traefik refuses a route naming a missing one
            self._write_mirror(s, ir, ts, plan)
        named = self._names_mirror(s, ir, ts)
        if ts is not None:
            kept = _note(ts, CANARY_BACKEND)
            entries = (ts["spec"].get("weighted") or {}).get("services") or []
            ops, removed = weight_ops(entries, "/spec/weighted/services", s, plan, kept)
            sticky_patch, sticky_note = sticky_ops(ts, sticky(target, plan), s.where)
            ops += sticky_patch
            notes = {**self._kept_notes(ts, kept, removed, plan), **sticky_note}
            self._services_api(s).write(
                ts,
                ops + annotation_ops(ts, {**notes, **(plan_note(plan) if ir is None else {})}),
                "set routes",
            )
        if ir is not None:
            self._routes_api(s).write(ir, self._route_ops(s, ir, plan), "set routes")
        if not plan.mirror:  # and deleted once no entry names it, and Traefik has seen that
            if named:
                time.sleep(self.mirror_retire_grace)
            self._delete_mirror(s)

    def _names_mirror(self, s: _Setup, ir: dict[str, Any] | None, ts: dict[str, Any] | None) -> bool:
        """Whether a live entry names graylane's mirroring TraefikService (before this set-routes writes)."""
        lists = [(((ts or {}).get("spec") or {}).get("weighted") or {}).get("services") or []]
        lists += [r.get("services") or [] for r in ((ir or {}).get("spec") or {}).get("routes") or []]
        return any(_is_mirror(e, s) for entries in lists for e in entries)

    def _mirror_object(self, s: _Setup) -> dict[str, Any] | None:
        """graylane's mirroring TraefikService, or None; one of that name not labelled as graylane's is the
        user's and refused."""
        live = self._services_api(s).get(s.namespace, mirror_name(s))
        if (
            live is not None
            and (live["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "graylane"
        ):
            raise ConfigError(
                f"{s.where}: TraefikService {s.namespace}/{mirror_name(s)} exists and is not graylane's "
                "(label app.kubernetes.io/managed-by: graylane): graylane's mirroring service needs "
                "that name; rename the user's"
            )
        return live

    def _write_mirror(
        self, s: _Setup, ir: dict[str, Any] | None, ts: dict[str, Any] | None, plan: RoutePlan
    ) -> None:
        if ts is not None:
            entries, kept = (
                (ts["spec"].get("weighted") or {}).get("services") or [],
                _note(ts, CANARY_BACKEND),
            )
        else:
            assert ir is not None
            routes = ir["spec"].get("routes") or []
            managed = routes[managed_index(routes, s, s.ingress_route, _note(ir, MATCH_ROUTE))]
            entries, kept = managed.get("services") or [], _note(ir, CANARY_BACKEND)
        spec = mirror_spec(entries, s, plan.mirror, kept)
        live = self._mirror_object(s)
        if live is None:
            self._services_api(s).create(s.namespace, mirror_name(s), spec)
        elif live.get("spec") != spec:
            self._services_api(s).patch(
                live, [{"op": "replace", "path": "/spec", "value": spec}], "set mirror"
            )

    def _delete_mirror(self, s: _Setup) -> None:
        live = self._mirror_object(s)
        if live is not None:
            self._services_api(s).delete(live, "end mirror")

    @staticmethod
    def _kept_notes(
        obj: Mapping[str, Any], kept: Any, removed: Any, plan: RoutePlan
    ) -> dict[str, str | None]:
        """The user's canary entry is kept aside while graylane has it removed, and dropped once it is back."""
        if removed is not None:
            return {CANARY_BACKEND: json.dumps(removed, sort_keys=True)}
        return {CANARY_BACKEND: None} if kept is not None and plan.canary > 0 else {}

    def _route_ops(self, s: _Setup, ir: dict[str, Any], plan: RoutePlan) -> list[dict[str, Any]]:
        routes = ir["spec"].get("routes") or []
        ab_match = _note(ir, MATCH_ROUTE)
        m = managed_index(routes, s, s.ingress_route, ab_match)
        managed, kept = routes[m], _note(ir, CANARY_BACKEND)
        ops: list[dict[str, Any]] = []
        removed = None
        if not s.traefik_service:
            ops, removed = weight_ops(
                managed.get("services") or [], f"/spec/routes/{m}/services", s, plan, kept
            )
        wanted = ab_route(managed, plan, s, kept if removed is None else removed) if plan.match else None
        a = _match_index(routes, ab_match)
        if wanted is not None and a is None:
            ops.append(
                {"op": "add", "path": f"/spec/routes/{m}", "value": wanted}
            )  # before the managed route
        elif wanted is not None and a is not None and routes[a] != wanted:
            ops.append({"op": "replace", "path": f"/spec/routes/{a}", "value": wanted})
        elif wanted is None and a is not None:
            ops.append({"op": "remove", "path": f"/spec/routes/{a}"})
        notes: dict[str, str | None] = {
            **plan_note(plan),
            MATCH_ROUTE: json.dumps(wanted["match"]) if wanted else None,
            **self._kept_notes(ir, kept, removed, plan),
        }
        return ops + annotation_ops(ir, notes)

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        s = self._setup(target)
        ir = self._routes_api(s).read(s.namespace, s.ingress_route) if s.ingress_route else None
        ts = self._services_api(s).read(s.namespace, s.traefik_service) if s.traefik_service else None
        routes = (ir or {}).get("spec", {}).get("routes") or []
        ab_match = _note(ir, MATCH_ROUTE)
        managed = routes[managed_index(routes, s, s.ingress_route, ab_match)] if ir is not None else {}
        if ts is not None:
            weighted = (ts.get("spec", {}).get("weighted") or {}).get("services") or []
        else:
            weighted = managed.get("services") or []
        a = _match_index(routes, ab_match)
        kept = _note(ir, CANARY_BACKEND)

        def render(plan: RoutePlan) -> Any:
            return ab_route(managed, plan, s, kept) if plan.match and ir is not None else None

        live = routes[a] if a is not None else None
        plan = live_plan(
            decode_plan(ir if ir is not None else ts),
            *_weights(weighted, s),
            live,
            render,
            s.where,
            baseline=_baseline_weight(weighted, s),
        )
        mirroring = any(_is_mirror(e, s) and e.get("weight", 1) for e in weighted)
        if plan.stable != 100 or plan.match or not mirroring:
            return plan
        mirror = self._services_api(s).get(s.namespace, mirror_name(s))
        return replace(plan, mirror=mirror_percent((mirror or {}).get("spec"), s))

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        """The user's rate limiter or circuit breaker Middleware on the managed route, and what userProtection
        does with it (read only; an IngressRoute not there yet says nothing)."""
        s = self._setup(target)
        ir = self._routes_api(s).get(s.namespace, s.ingress_route) if s.ingress_route else None
        if ir is None:
            return ()
        routes = ir["spec"].get("routes") or []
        m = managed_index(routes, s, s.ingress_route, _note(ir, MATCH_ROUTE))
        ours = {f"{s.ingress_route}-{suffix}" for suffix, _ in _PROTECTIONS}
        users = self._user_protection(s, routes[m], ours)
        where = f"route {routes[m].get('match')!r} of IngressRoute {s.namespace}/{s.ingress_route}"
        return tuple(f"{where} has the user's {key} Middleware {label}: {_USER_PROTECTION[s.user_protection]}"
                     for key, (label, _) in users.items())  # fmt: skip

    def set_protection(self, target: RouteTarget, protection: Protection) -> tuple[str, ...]:
        """graylane's Middlewares, referenced from the managed route (and its A/B route). A limiter or breaker
        of the user's already on the route is kept and graylane's not chained after it (userProtection keep),
        chained after it (wrap), or its reference swapped for graylane's until the release ends (replace: the
        user's Middleware object is not changed, its reference is kept in annotation graylane.dev/replaced-
        middlewares and put back where it was by finalize, or when graylane's is cleared). What it did is
        returned (the runner notifies it and puts it in the release's history)."""
        s = self._setup(target)
        wanted = {suffix: _protection_spec(key, protection) for suffix, key in _PROTECTIONS}
        if not s.ingress_route:
            if any(wanted.values()):
                raise ConfigError(f"{s.where}: protection needs router option ingressRoute")
            return ()
        ir, _ = self._ensure(s)
        assert ir is not None
        routes = ir["spec"].get("routes") or []
        ab_match = _note(ir, MATCH_ROUTE)
        m = managed_index(routes, s, s.ingress_route, ab_match)
        ours = {f"{s.ingress_route}-{suffix}" for suffix, _ in _PROTECTIONS}
        users = self._user_protection(s, routes[m], ours)
        replaced: dict[str, Any] = dict(_note(ir, REPLACED) or {})  # graylane's name -> the user's reference
        swap: dict[str, Any] = {}  # now: graylane's name -> the user's reference it takes the place of
        said: list[str] = []
        where = f"route {routes[m].get('match')!r} of IngressRoute {s.namespace}/{s.ingress_route}"
        for suffix, key in _PROTECTIONS:
            name = f"{s.ingress_route}-{suffix}"
            if wanted[suffix] is None or key not in users:
                continue
            label, ref = users[key]
            said.append(
                f"{where} has the user's {key} Middleware {label}: {_USER_PROTECTION[s.user_protection]}"
            )
            if s.user_protection == "keep":
                wanted[suffix] = None
            elif s.user_protection == "replace":
                swap[name] = ref
        for name, ref in replaced.items():
            if wanted[name.removeprefix(f"{s.ingress_route}-")] is not None:
                label = f"{ref.get('namespace') or s.namespace}/{ref.get('name')}"
                said.append(f"{where}: graylane's {name} stands in for the user's Middleware {label} until the "
                            "release ends (userProtection: replace)")  # fmt: skip
        restore = {
            n: ref for n, ref in replaced.items() if wanted[n.removeprefix(f"{s.ingress_route}-")] is None
        }
        api = self._middlewares_api(s)
        for suffix, spec in wanted.items():  # create or update first, so the route never names a missing one
            name = f"{s.ingress_route}-{suffix}"
            if spec is None:
                continue
            live = api.get(s.namespace, name)
            if live is None:
                api.create(s.namespace, name, spec)
            elif live.get("spec") != spec:
                api.patch(live, [{"op": "replace", "path": "/spec", "value": spec}], "set protection")
        names = {f"{s.ingress_route}-{k}": v is not None for k, v in wanted.items()}
        ops: list[dict[str, Any]] = []
        for i in sorted({m, *([a] if (a := _match_index(routes, ab_match)) is not None else [])}):
            swap_ops, route = swap_refs(routes[i], f"/spec/routes/{i}", swap, restore)
            ops += swap_ops + middleware_ops(route, f"/spec/routes/{i}", names)
        kept = {**{n: r for n, r in replaced.items() if n not in restore}, **swap}
        ops += annotation_ops(ir, {REPLACED: json.dumps(kept, sort_keys=True) if kept else None})
        self._routes_api(s).write(ir, ops, "set protection")
        for suffix, spec in wanted.items():  # delete only once no route names it
            live = api.get(s.namespace, f"{s.ingress_route}-{suffix}") if spec is None else None
            if live is not None:
                api.delete(live, "clear protection")
        return tuple(said)

    def _user_protection(
        self, s: _Setup, route: Mapping[str, Any], ours: set[str]
    ) -> dict[str, tuple[str, Any]]:
        """{rateLimit|circuitBreaker: (namespace/name, the route's reference)} of the user's Middlewares on a
        route (those it can read)."""
        found: dict[str, tuple[str, Any]] = {}
        for ref in route.get("middlewares") or []:
            name = ref.get("name") if isinstance(ref, Mapping) else None
            if not isinstance(name, str) or name in ours or "@" in name:
                continue
            namespace = ref.get("namespace") or s.namespace
            spec = (self._middlewares_api(s).get(namespace, name) or {}).get("spec") or {}
            for key in ("rateLimit", "circuitBreaker"):
                if key in spec:
                    found.setdefault(key, (f"{namespace}/{name}", ref))
        return found

    def _put_back(self, s: _Setup) -> None:
        """userProtection replace, when a release ends: the user's Middleware references go back where
        graylane's stood, graylane's leave the route (its Middleware objects stay for the next release)."""
        ir = self._routes_api(s).get(s.namespace, s.ingress_route) if s.ingress_route else None
        replaced = dict(_note(ir, REPLACED) or {})
        if ir is None or not replaced:
            return
        routes = ir["spec"].get("routes") or []
        ops: list[dict[str, Any]] = []
        for i, route in enumerate(routes):
            if any(
                isinstance(r, Mapping) and r.get("name") in replaced for r in route.get("middlewares") or []
            ):
                ops += swap_refs(route, f"/spec/routes/{i}", {}, replaced)[0]
        self._routes_api(s).write(
            ir, ops + annotation_ops(ir, {REPLACED: None}), "put back the user's middlewares"
        )

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        """All traffic on stable, graylane's A/B route and canary entry gone (the objects stay: they carry the
        stable's traffic); returns the user's routes in the namespace that still send traffic to the canary."""
        self.set_routes(target, STABLE_ONLY)
        s = self._setup(target)
        self._put_back(s)
        said = []
        for ir in self._routes_api(s).list(s.namespace):
            name = ir["metadata"]["name"]
            for i, route in enumerate(ir.get("spec", {}).get("routes") or []):
                if name == s.ingress_route and route.get("match") == _note(ir, MATCH_ROUTE):
                    continue
                if any(_is_backend(e, s.canary) for e in route.get("services") or []):
                    said.append(
                        f"IngressRoute {s.namespace}/{name} spec.routes[{i}] (match {route.get('match')!r}) "
                        f"still sends traffic to Service {s.canary}, which has no endpoints once the canary "
                        "is scaled down: it is the user's route, graylane left it as it is"
                    )
        return tuple(said)
