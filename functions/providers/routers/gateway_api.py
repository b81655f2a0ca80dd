"""Gateway API: weights and A/B header rules on an HTTPRoute (gateway.networking.k8s.io/v1).

Options: `httpRoute`, `stableService`, `canaryService`, `port`, optional `parentRef` (a Gateway name,
or a mapping with name/namespace/sectionName) and `host` (the route's hostname); both only matter when
graylane creates the route.

    rules:
      - matches: [{path: {type: PathPrefix, value: /}, headers: [{type: Exact, name: location, value: shenzhen}]}]
        backendRefs: [{group: '', kind: Service, name: canary, port: 80, weight: 100}]   # only with A/B rules
      - matches: [{path: {type: PathPrefix, value: /}}]
        backendRefs: [{... stable, weight: 80}, {... canary, weight: 20}]

Among rules with the same path, Gateway API gives precedence to the one with more header matches, so
the A/B rule is tried first. Fields the CRD defaults (path, header type, backend group and kind) are written
explicitly, so what is read back is exactly what was written. The standard HTTPRoute has no rate limit
or circuit breaker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from functions.core.capabilities import MATCHING
from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import Policy
from functions.core.routing import Need, Option, Owned, Problem, Versions, text_option
from functions.core.values import value
from functions.errors import ConfigError
from functions.providers.routers._common import (
    Kind,
    Objects,
    check_plan,
    header_rule,
    option,
    route_ops,
    spec_plan,
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
    Option("metrics", "choice", "the Gateway implementation whose metrics the built-in templates read "
           "(an API has none of its own)", choices=IMPLEMENTATIONS),
)
CAPABILITIES = (MATCHING - {"source-ip"}) | {"weights"}  # HTTPRoute has no standard rate limit or circuit breaker
METRICS = None  # an API, not a proxy: the series are the implementation's (measured_by)
OWNS = (
    Owned("HTTPRoute", "/spec/rules", "the rules (an A/B rule and the weighted rule)"),
    Owned("HTTPRoute", "/metadata/annotations/graylane.dev~1route-plan", "the plan written"),
)


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    return []


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

    return Versions(stable=label(stable), canary=label(canary), names={"stable": stable, "canary": canary})


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

    @property
    def where(self) -> str:
        return f"gateway-api router for {self.namespace}/{self.http_route}"


def _setup(target: RouteTarget) -> _Setup:
    opts, where = target.options, f"gateway-api router for {target.namespace}/{target.app}"
    parent = opts.get("parentRef")
    if isinstance(parent, str) and parent:
        parent = {"name": parent}
    if parent is not None and not (isinstance(parent, dict) and isinstance(parent.get("name"), str)):
        raise ConfigError(f"{where}: router option parentRef is {parent!r}; expected a Gateway name or "
                          "a mapping with name (and namespace, sectionName)")
    return _Setup(
        namespace=target.namespace,
        http_route=option(opts, "httpRoute", target.app, str, where),
        stable=option(opts, "stableService", target.stable, str, where),
        canary=option(opts, "canaryService", target.canary, str, where),
        port=option(opts, "port", 80, int, where),
        parent=parent,
        host=option(opts, "host", "", str, where) if "host" in opts else "",
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


def _weights(rules: list[dict[str, Any]], s: _Setup) -> tuple[int, int]:
    refs = rules[-1].get("backendRefs", []) if rules else []

    def weight(name: str) -> int:  # Gateway API's default weight is 1
        return sum(int(r.get("weight", 1)) for r in refs if r.get("name") == name and r.get("kind", "Service") == "Service")

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
        if route is None:
            spec: dict[str, Any] = {"rules": _rules(s, STABLE_ONLY)}
            if s.parent:
                spec["parentRefs"] = [s.parent]
            if s.host:
                spec["hostnames"] = [s.host]
            route = self.routes.create(s.namespace, s.http_route, spec)
        return route

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        s = _setup(target)
        check_plan(plan, self.provider, CAPABILITIES, s.where)
        route = self._ensure(s)
        self.routes.write(route, route_ops(route, "rules", _rules(s, plan), plan), "set routes")

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        s = _setup(target)
        route = self.routes.read(s.namespace, s.http_route)
        return spec_plan(route, "rules", lambda rules: _weights(rules, s), lambda plan: _rules(s, plan), s.where)

    def set_protection(self, target: RouteTarget, protection: Protection) -> None:
        if protection.rate_limit is not None or protection.circuit_breaker is not None:
            raise ConfigError(f"{_setup(target).where}: rate limiting and circuit breaking are not supported "
                              "by router gateway-api")

    def finalize(self, target: RouteTarget) -> None:
        """All traffic back to stable without rules; the route stays, it carries stable's traffic."""
        self.set_routes(target, STABLE_ONLY)
