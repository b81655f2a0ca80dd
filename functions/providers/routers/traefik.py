"""Traefik: weights and A/B rules on an IngressRoute (optionally through a weighted TraefikService), rate
limit and circuit breaker as Middlewares.

Layout graylane writes (options `ingressRoute`, `host`, `entryPoints`, `stableService`, `canaryService`,
`port`, `traefikService`, `group`, `ruleSyntax`, `create`):

    routes:
      - match: Host(`pro.coding`) && (Header(`location`, `shenzhen`))   # only with A/B rules
        services: [canary weight 100, stable weight 0]
      - match: Host(`pro.coding`)
        services: [stable weight 80, canary weight 20]   # or [TraefikService <traefikService>]

The A/B route's rule contains the default rule plus more, so Traefik's default priority (rule length)
always tries it first. With `traefikService` the weights live in that TraefikService; without
`ingressRoute` graylane only weighs it (no rules, no protection). Both API groups are served: traefik.io
(rule syntax v3 by default) and the legacy traefik.containo.us (v2 syntax, `Headers(...)`, never a
`syntax` field, which Traefik v2.11 does not know).

The IngressRoute (and TraefikService) the policy names is the user's: if it does not exist, graylane refuses
(MissingObject: a ConfigError naming it, and the group holding an object of that name if the other group does;
an effect failed for good, so the release fails with it) instead of creating one next to the user's, unless the
policy says `create: true`; then it is created all on stable.

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

import hashlib
import re
from collections.abc import Mapping
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
    check_plan,
    decode_plan,
    header_rule,
    live_plan,
    option,
    plan_note,
    route_ops,
)
from functions.providers.routers.base import Cluster, RouteTarget

NAME = "traefik"
GROUPS = ("traefik.io", "traefik.containo.us")
OPTIONS = (
    Option("ingressRoute", "name", "the IngressRoute whose route graylane weighs (and where A/B routes and "
           "protection go)"),
    Option("traefikService", "name", "a weighted TraefikService holding the weights instead (with "
           "ingressRoute: the route's backend)"),
    Option("host", "text", "the host of the default route graylane writes: Host(`<host>`)", "every path"),
    Option("entryPoints", "names", "entry points of an IngressRoute graylane creates"),
    Option("stableService", "name", "the stable's Service", "workload.name"),
    Option("canaryService", "name", "the canary's Service", "workload.canary"),
    Option("port", "port", "the Services' port", "80"),
    Option("group", "choice", "the IngressRoute API group (traefik.containo.us: Traefik v2)", "traefik.io",
           choices=GROUPS),
    Option("ruleSyntax", "choice", "Traefik's rule syntax", "v3 on traefik.io, v2 on traefik.containo.us",
           choices=("v2", "v3")),
)
CAPABILITIES = frozenset(FEATURES)
# service="<namespace>-<service>-<port>@kubernetescrd" (IngressRoute / TraefikService backends), or
# "<namespace>-<service>-http-<port>@kubernetesgateway" (HTTPRoute backends of Traefik's Gateway provider)
METRICS = RouterMetrics("traefik_service_requests_total", ("service",), "code", "5..",
                        "traefik_service_request_duration_seconds_bucket")
OWNS = (
    Owned("IngressRoute", "/spec/routes", "the routes (rebuilt from the plan; the last one is the default route)"),
    Owned("IngressRoute", "/metadata/annotations/graylane.dev~1route-plan", "the plan written"),
    Owned("TraefikService", "/spec/weighted", "the weights (option traefikService)"),
    Owned("Middleware", "<ingressRoute>-rate-limit, <ingressRoute>-circuit-breaker", "created by graylane"),
)
_PROTECTIONS = (("rate-limit", "rateLimit"), ("circuit-breaker", "circuitBreaker"))


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
    create: bool = False  # router option create: make the named objects if they are missing

    @property
    def where(self) -> str:
        return f"traefik router for {self.namespace}/{self.ingress_route or self.traefik_service}"


def _setup(target: RouteTarget) -> _Setup:
    opts, where = target.options, f"traefik router for {target.namespace}/{target.app}"
    group = opts.get("group", "traefik.io")
    if group not in GROUPS:
        raise ConfigError(f"{where}: router option group is {group!r}; expected one of {', '.join(GROUPS)}")
    syntax = opts.get("ruleSyntax", "v3" if group == "traefik.io" else "v2")
    if syntax not in ("v2", "v3") or (group == "traefik.containo.us" and syntax == "v3"):
        raise ConfigError(f"{where}: router option ruleSyntax is {syntax!r}; expected v2 or v3 (v3 needs traefik.io)")
    ingress_route = option(opts, "ingressRoute", "", str, where) if "ingressRoute" in opts else ""
    traefik_service = option(opts, "traefikService", "", str, where) if "traefikService" in opts else ""
    if not ingress_route and not traefik_service:
        raise ConfigError(f"{where}: router option ingressRoute or traefikService is required")
    entry_points = opts.get("entryPoints", [])
    if not isinstance(entry_points, list) or not all(isinstance(e, str) and e for e in entry_points):
        raise ConfigError(f"{where}: router option entryPoints is {entry_points!r}; expected a list of names")
    return _Setup(
        namespace=target.namespace, ingress_route=ingress_route, traefik_service=traefik_service,
        host=option(opts, "host", "", str, where) if "host" in opts else "", entry_points=tuple(entry_points),
        stable=option(opts, "stableService", target.stable, str, where),
        canary=option(opts, "canaryService", target.canary, str, where),
        port=option(opts, "port", 80, (int, str), where), group=group, syntax=syntax,
        create=option(opts, "create", False, bool, where),
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
    backend = [{"kind": "TraefikService", "name": s.traefik_service}] if s.traefik_service else _weighted(s, plan)
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
        return sum(int(x.get("weight", 1)) for x in services if x.get("name") == name and x.get("kind") != "TraefikService")

    return weight(s.stable), weight(s.canary)


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    """source-ip needs the traefik.io group (ClientIP); anything but weights needs an IngressRoute."""
    problems: list[Problem] = []
    for path, feature, _ in needs:
        if feature == "source-ip" and options.get("group") == "traefik.containo.us":
            problems.append((path, f"{WHAT[feature]} is not supported by router traefik with group "
                                   "traefik.containo.us; use group traefik.io"))
        elif feature != "weights" and not options.get("ingressRoute"):
            problems.append((path, f"{WHAT[feature]} needs router option ingressRoute with router traefik (a "
                                   "TraefikService alone only weighs)"))
    return problems


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
            found.append(re.escape(route_service_label(ns, route, default_rule(text_option(opts, "host", "")))))
        return "|".join(found)

    return Versions(stable=(("service", names(stable, True)),), canary=(("service", names(canary, False)),),
                    names={"stable": stable, "canary": canary})


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> TraefikRouter:
    return TraefikRouter(cluster.api_client(NAME))


class TraefikRouter:
    """Router over Traefik's IngressRoute, TraefikService and Middleware custom resources."""

    provider = NAME

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self._objects: dict[tuple[str, str], Objects] = {}

    def _kind(self, s: _Setup, plural: str, kind: str) -> Objects:
        key = (s.group, plural)
        if key not in self._objects:
            self._objects[key] = Objects(self.api_client, Kind(s.group, "v1alpha1", plural, kind))
        return self._objects[key]

    def _routes_api(self, s: _Setup) -> Objects:
        return self._kind(s, "ingressroutes", "IngressRoute")

    def _services_api(self, s: _Setup) -> Objects:
        return self._kind(s, "traefikservices", "TraefikService")

    def _middlewares_api(self, s: _Setup) -> Objects:
        return self._kind(s, "middlewares", "Middleware")

    def reconcile(self, target: RouteTarget) -> None:
        s = _setup(target)
        self._ensure(s)

    def _ensure(self, s: _Setup) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(IngressRoute, TraefikService) as configured. A missing one is created with all traffic on stable
        only with router option `create: true`; otherwise it is a ConfigError (never a second route)."""
        ts = ir = None
        if s.traefik_service:
            ts = self._services_api(s).get(s.namespace, s.traefik_service)
            if ts is None:
                self._missing(s, "traefikservices", "TraefikService", s.traefik_service)
                ts = self._services_api(s).create(s.namespace, s.traefik_service,
                                                  {"weighted": {"services": _weighted(s, STABLE_ONLY)}})  # fmt: skip
        if s.ingress_route:
            ir = self._routes_api(s).get(s.namespace, s.ingress_route)
            if ir is None:
                self._missing(s, "ingressroutes", "IngressRoute", s.ingress_route)
                spec: dict[str, Any] = {"routes": _routes(s, STABLE_ONLY, [])}
                if s.entry_points:
                    spec["entryPoints"] = list(s.entry_points)
                ir = self._routes_api(s).create(s.namespace, s.ingress_route, spec)
        return ir, ts

    def _missing(self, s: _Setup, plural: str, kind: str, name: str) -> None:
        """Raise unless the policy lets graylane create the missing object; name the other group's object."""
        if s.create:
            return
        other = next(g for g in GROUPS if g != s.group)
        try:
            elsewhere = Objects(self.api_client, Kind(other, "v1alpha1", plural, kind)).get(s.namespace, name)
        except Exception:  # that group's CRDs not served, or not readable: nothing more to say
            elsewhere = None
        hint = (f"; {s.namespace}/{name} exists in group {other}: set router option group: {other}"
                if elsewhere is not None else "")  # fmt: skip
        raise MissingObject(f"{s.where}: {kind} {s.namespace}/{name} (group {s.group}) does not exist{hint}; "
                          "graylane drives the user's object and does not create one next to it unless router "
                          "option create is true")  # fmt: skip

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        s = _setup(target)
        legacy = {"source-ip": "router traefik with group traefik.containo.us"} if s.group != "traefik.io" else {}
        check_plan(plan, self.provider, CAPABILITIES, s.where, legacy)
        if plan.match and not s.ingress_route:
            raise ConfigError(f"{s.where}: A/B rules need router option ingressRoute (a TraefikService only weighs)")
        ir, ts = self._ensure(s)
        if ts is not None:
            ops = [] if ts["spec"].get("weighted", {}).get("services") == _weighted(s, plan) else [
                {"op": "add", "path": "/spec/weighted", "value": {"services": _weighted(s, plan)}}]
            ops += annotation_ops(ts, plan_note(plan)) if ir is None else []
            self._services_api(s).write(ts, ops, "set routes")
        if ir is not None:
            routes = _routes(s, plan, self._live_middlewares(ir))
            self._routes_api(s).write(ir, route_ops(ir, "routes", routes, plan, "replace"), "set routes")

    @staticmethod
    def _live_middlewares(ir: dict[str, Any]) -> list[Any]:
        routes = ir["spec"].get("routes") or [{}]
        return list(routes[-1].get("middlewares") or [])

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        s = _setup(target)
        ir = self._routes_api(s).read(s.namespace, s.ingress_route) if s.ingress_route else None
        ts = self._services_api(s).read(s.namespace, s.traefik_service) if s.traefik_service else None
        ts_services = (ts or {}).get("spec", {}).get("weighted", {}).get("services") or []
        ir_routes = (ir or {}).get("spec", {}).get("routes") or []
        weighted = ts_services if ts is not None else (ir_routes[-1].get("services", []) if ir_routes else [])
        middlewares = self._live_middlewares(ir) if ir is not None else []

        def render(plan: RoutePlan) -> Any:
            return (_routes(s, plan, middlewares) if ir is not None else None,
                    _weighted(s, plan) if ts is not None else None)

        live = (ir_routes if ir is not None else None, ts_services if ts is not None else None)
        return live_plan(decode_plan(ir if ir is not None else ts), *_weights(weighted, s), live, render, s.where)

    def set_protection(self, target: RouteTarget, protection: Protection) -> None:
        s = _setup(target)
        wanted = {suffix: _protection_spec(key, protection) for suffix, key in _PROTECTIONS}
        if not s.ingress_route:
            if any(wanted.values()):
                raise ConfigError(f"{s.where}: protection needs router option ingressRoute")
            return
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
        ir, _ = self._ensure(s)
        assert ir is not None
        self._attach(s, ir, {f"{s.ingress_route}-{k}": v is not None for k, v in wanted.items()})
        for suffix, spec in wanted.items():  # delete only once no route names it
            live = api.get(s.namespace, f"{s.ingress_route}-{suffix}") if spec is None else None
            if live is not None:
                api.delete(live, "clear protection")

    def _attach(self, s: _Setup, ir: dict[str, Any], names: dict[str, bool]) -> None:
        """Make every route reference exactly the wanted graylane middlewares (others are kept as they are)."""
        routes = []
        for route in ir["spec"].get("routes") or []:
            kept = [m for m in route.get("middlewares") or [] if m.get("name") not in names]
            added = [{"name": n} for n, on in names.items() if on]
            updated = {k: v for k, v in route.items() if k != "middlewares"}
            if kept + added:
                updated["middlewares"] = kept + added
            routes.append(updated)
        if routes != ir["spec"].get("routes"):
            self._routes_api(s).patch(ir, [{"op": "replace", "path": "/spec/routes", "value": routes}],
                                      "set protection")

    def finalize(self, target: RouteTarget) -> None:
        """All traffic back to stable without rules; the objects stay, they carry stable's traffic."""
        self.set_routes(target, STABLE_ONLY)
