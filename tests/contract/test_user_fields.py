"""[user_fields] graylane touches only what it owns in the user's routing objects, on the real apiserver with
the upstream CRDs (tests/k8s/upstream-crds.txt).

Each test loads the user's objects as the seeds write them (seed 000's IngressRoutes and Middlewares, seed
003's Bookinfo `reviews` VirtualService) enriched with the fields users really set (priority,
passHostHeader, services[].namespace, retries, timeout, rule names, filters, timeouts, annotations), runs a
whole release through the router (canary steps, an A/B rule, protection, promotion back to stable-only,
finalize) and asserts after every step that everything outside the provider module's OWNS paths is byte for
byte what the user wrote. Select them with `-k "user_fields and traefik"` (istio, gateway, nginx).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, RateLimit
from functions.errors import ConfigError, MissingObject
from functions.providers.routers import make_router
from functions.providers.routers.base import RouteTarget
from tests.contract.router_support import api_fixture, co_fixture  # noqa: F401
from tests.traefik import seed

pytestmark = pytest.mark.k8s
SHENZHEN = Match("header", name="location", value="shenzhen")
VOLATILE = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")


def user_part(obj: dict[str, Any], strip_owned: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """obj without the server's bookkeeping, graylane's annotations and the provider's owned paths."""
    found = copy.deepcopy(obj)
    meta = found["metadata"]
    for key in VOLATILE:
        meta.pop(key, None)
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("graylane.dev/")}
    meta.pop("annotations", None)
    if notes:
        meta["annotations"] = notes
    strip_owned(found)
    return found


def release(
    router: Any, t: RouteTarget, check: Callable[[str], None], protection: Protection | None = None
) -> None:
    """A whole release as the machine drives it: steps, an A/B test, protection, promotion, finalize."""
    for plan in (
        STABLE_ONLY,
        RoutePlan.canary_at(10),
        RoutePlan.canary_at(50),
        RoutePlan.canary_at(0, (SHENZHEN,)),
        RoutePlan.canary_at(30, (SHENZHEN,)),
        RoutePlan.canary_at(100),
        STABLE_ONLY,
    ):
        router.reconcile(t)
        router.set_routes(t, plan)
        assert router.get_routes(t) == plan
        check(f"after {plan}")
        if protection is not None and plan.canary == 50:
            router.set_protection(t, protection)
            check("after protection")
            router.set_protection(t, Protection())
            check("after clearing protection")
    router.finalize(t)
    check("after finalize")


# --- Traefik: seed 000 ---------------------------------------------------------------------------------------


def _seed_000(group: str, ns: str) -> list[dict[str, Any]]:
    """Seed 000's objects, with the fields users set beside the weights."""
    objects = seed.routing(group, ns, ns)
    pro = next(o for o in objects if o["metadata"]["name"] == seed.PRO_ROUTE)
    pro["metadata"]["labels"] = {"team": "flask", "app.kubernetes.io/part-of": "shop"}
    pro["metadata"]["annotations"] = {
        "owner": "ops@example.com",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    route = pro["spec"]["routes"][0]
    route["priority"] = 10
    route["middlewares"] = [{"name": seed.RATE_LIMIT, "namespace": ns}]
    for svc in route["services"]:
        svc["passHostHeader"] = True
    admin = {
        "kind": "Rule",
        "match": "Host(`pro.coding`) && PathPrefix(`/admin`)",
        "priority": 20,
        "services": [{"name": "admin", "port": 9000, "namespace": ns, "passHostHeader": False}],
    }
    pro["spec"]["routes"].insert(0, admin)
    pro["spec"]["tls"] = {"secretName": "pro-coding-tls"}
    return objects


def _traefik_target(ns: str, **options: Any) -> RouteTarget:
    base = {
        "ingressRoute": seed.PRO_ROUTE,
        "stableService": seed.STABLE,
        "canaryService": seed.CANARY,
        "port": seed.PORT,
    }  # no group: taken from the user's live IngressRoute
    return RouteTarget(ns, "flask", seed.STABLE, seed.CANARY, options={**base, **options})


def _traefik_owned(obj: dict[str, Any]) -> None:
    """Traefik's OWNS: the managed route's stable weight and canary entry, and graylane's A/B route."""
    if obj["kind"] != "IngressRoute" or obj["metadata"]["name"] != seed.PRO_ROUTE:
        return
    routes = obj["spec"]["routes"]
    obj["spec"]["routes"] = routes = [r for r in routes if "&& (" not in r["match"]]  # graylane's A/B route
    for route in routes:
        if any(s["name"] == seed.STABLE for s in route["services"]):
            route["services"] = [
                {k: v for k, v in s.items() if k != "weight"}
                for s in route["services"]
                if s["name"] != seed.CANARY
            ]
        _drop_graylane_middlewares(route, seed.PRO_ROUTE)


def _drop_graylane_middlewares(route: dict[str, Any], ingress_route: str) -> None:
    ours = {f"{ingress_route}-rate-limit", f"{ingress_route}-circuit-breaker"}
    if "middlewares" in route:
        route["middlewares"] = [m for m in route["middlewares"] if m.get("name") not in ours]
        if not route["middlewares"]:
            del route["middlewares"]


@pytest.mark.parametrize("group", ["traefik.io", "traefik.containo.us"])
def test_user_fields_traefik_seed_000_survive_a_whole_release(api: Any, co: Any, ns: str, group: str) -> None:
    objects = seed.apply(api, _seed_000(group, ns))
    before = {o["metadata"]["name"]: user_part(o, _traefik_owned) for o in objects}
    router, t = make_router("traefik", api), _traefik_target(ns)

    def check(when: str) -> None:
        for obj in objects:
            live = seed.read(api, obj)
            assert user_part(live, _traefik_owned) == before[obj["metadata"]["name"]], (
                when,
                obj["metadata"]["name"],
            )
            assert "syntax" not in json.dumps(live["spec"]) or group == "traefik.io", when

    def ab_route() -> dict[str, Any] | None:
        live = seed.read(api, objects[2])
        return next((r for r in live["spec"]["routes"] if "&& (" in r["match"]), None)

    protection = Protection(
        rate_limit=RateLimit(100, 200, 1.0), circuit_breaker=CircuitBreaker("NetworkErrorRatio() > 0.3")
    )
    seen: list[tuple[str, Any]] = []
    real_set = router.set_routes

    def set_routes(target: RouteTarget, plan: RoutePlan) -> None:
        real_set(target, plan)
        seen.append((str(plan), ab_route()))

    router.set_routes = set_routes  # type: ignore[method-assign]
    said = router.set_protection(t, protection)  # the user's rate limit is on the route: kept, and said
    assert said and "flask-k8s-traffic" in said[0] and "kept it" in said[0]
    live = seed.read(api, objects[2])
    route = next(r for r in live["spec"]["routes"] if r.get("priority") == 10)
    assert [m["name"] for m in route["middlewares"]] == [seed.RATE_LIMIT, f"{seed.PRO_ROUTE}-circuit-breaker"]
    router.set_protection(t, Protection())
    release(router, t, check, protection)
    # the A/B route narrows the user's managed route, outranks it, and speaks the group's rule syntax
    ab = dict(seen)[str(RoutePlan.canary_at(30, (SHENZHEN,)))]
    header = "Headers" if group == "traefik.containo.us" else "Header"
    assert ab["match"] == f"Host(`pro.coding`) && ({header}(`location`, `shenzhen`))" and ab[
        "priority"
    ] == max(11, len(ab["match"]))
    assert ab["services"][0] == {
        "name": seed.CANARY,
        "port": seed.PORT,
        "namespace": ns,
        "passHostHeader": True,
        "weight": 100,
    }
    assert "syntax" not in ab
    live = seed.read(api, objects[2])
    assert live["spec"]["routes"][1]["services"] == [
        {"name": seed.STABLE, "port": seed.PORT, "namespace": ns, "passHostHeader": True, "weight": 100}
    ]
    assert (
        router.finalize(t) and "k8s-flask-abtest" in router.finalize(t)[0]
    )  # the user's route to the canary
    assert {o["metadata"]["name"] for o in seed.read_all(api, group, ns, "ingressroutes")} == {
        seed.PRO_ROUTE,
        seed.ABTEST_ROUTE,
        seed.DEV_ROUTE,
    }  # no second IngressRoute in the other group
    other = "traefik.io" if group == "traefik.containo.us" else "traefik.containo.us"
    assert seed.read_all(api, other, ns, "ingressroutes") == []


def test_user_fields_traefik_ambiguous_route_and_missing_object_are_refused_by_name(
    api: Any, ns: str
) -> None:
    objects = _seed_000("traefik.io", ns)
    pro = next(o for o in objects if o["metadata"]["name"] == seed.PRO_ROUTE)
    pro["spec"]["routes"][0]["services"].append(
        {"name": seed.STABLE, "port": seed.PORT}
    )  # /admin also to stable
    seed.apply(api, objects)
    router = make_router("traefik", api)
    with pytest.raises(
        ConfigError,
        match=r"spec.routes\[0\] \(match 'Host\(`pro.coding`\) && PathPrefix\(`/admin`\)'\) "
        r"and spec.routes\[1\] .* set router option route",
    ):
        router.set_routes(_traefik_target(ns), RoutePlan.canary_at(10))
    t = _traefik_target(ns, route="Host(`pro.coding`)")
    router.set_routes(t, RoutePlan.canary_at(10))
    assert router.get_routes(t) == RoutePlan.canary_at(10)
    with pytest.raises(
        MissingObject, match=r"IngressRoute .*/nope \(group traefik.io\) does not exist.*create is true"
    ):
        router.reconcile(_traefik_target(ns, ingressRoute="nope"))
    with pytest.raises(MissingObject, match=r"IngressRoute .*/nope \(group traefik.io\) does not exist"):
        router.set_routes(_traefik_target(ns, ingressRoute="nope"), RoutePlan.canary_at(10))


def test_user_fields_traefik_property_random_user_fields_survive(api: Any, ns: str) -> None:
    """Random values, from the upstream CRD's schema, in every user-owned field of the managed route and its
    backends: after a whole release each is exactly as it was."""
    routes_schema = schema_of("traefik.io", "IngressRoute")["properties"]["spec"]["properties"]["routes"][
        "items"
    ]
    service_schema = routes_schema["properties"]["services"]["items"]
    rng = random.Random(20261203)
    for case in range(6):
        route = random_object(rng, routes_schema, skip={"match", "services", "kind", "syntax", "middlewares"})
        route.update({"kind": "Rule", "match": "Host(`pro.coding`)"})
        extra = random_object(rng, service_schema, skip={"name", "port", "weight", "kind", "namespace"})
        route["services"] = [{**extra, "name": seed.STABLE, "port": seed.PORT}]
        ir = {
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "IngressRoute",
            "metadata": {"name": f"{seed.PRO_ROUTE}-{case}", "namespace": ns},
            "spec": {"routes": [route]},
        }
        try:
            stored = seed.apply(api, [ir])[0]
        except Exception as err:  # a CEL rule the generator does not know: another draw
            if getattr(err, "status", None) == 422:
                continue
            raise
        before = user_part(stored, _owned_weights_of(seed.STABLE, seed.CANARY))
        router, t = make_router("traefik", api), _traefik_target(ns, ingressRoute=ir["metadata"]["name"])

        def check(
            when: str, ir: dict[str, Any] = ir, before: dict[str, Any] = before, case: int = case
        ) -> None:
            live = seed.read(api, ir)
            assert user_part(live, _owned_weights_of(seed.STABLE, seed.CANARY)) == before, (case, when)

        release(router, t, check)


def schema_of(group: str, kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the upstream CRD the test apiserver serves for group/kind (its storage version)."""
    from tests.k8s.cluster import load_crds

    crd = next(c for c in load_crds() if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == kind)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return dict(version["schema"]["openAPIV3Schema"])


def _owned_weights_of(stable: str, canary: str) -> Callable[[dict[str, Any]], None]:
    def strip(obj: dict[str, Any]) -> None:
        routes = [r for r in obj["spec"]["routes"] if "&& (" not in r["match"]]
        for r in routes:
            r["services"] = [
                {k: v for k, v in s.items() if k != "weight"} for s in r["services"] if s["name"] != canary
            ]
        obj["spec"]["routes"] = routes

    return strip


def random_object(
    rng: random.Random, schema: dict[str, Any], skip: frozenset[str] | set[str] = frozenset(), depth: int = 0
) -> dict[str, Any]:
    """A random instance of an object schema: each property present with probability 1/2 (required ones always)."""
    found: dict[str, Any] = {}
    required = set(schema.get("required") or [])
    for key, sub in (schema.get("properties") or {}).items():
        if key in skip or (key not in required and rng.random() < 0.5):
            continue
        value = random_value(rng, sub, depth + 1)
        if value is not None:
            found[key] = value
    return found


def random_value(rng: random.Random, schema: dict[str, Any], depth: int) -> Any:
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return rng.choice([rng.randint(1, 100), f"{rng.randint(1, 99)}s"])
    kind = schema.get("type")
    if kind == "object" and depth < 4:
        if "properties" in schema:
            return random_object(rng, schema, depth=depth) or None
        if isinstance(schema.get("additionalProperties"), dict):
            return {f"k{rng.randint(0, 9)}": random_value(rng, schema["additionalProperties"], depth + 1)}
        return None
    if kind == "array" and depth < 4:
        items = [random_value(rng, schema.get("items") or {}, depth + 1) for _ in range(rng.randint(1, 2))]
        return [i for i in items if i is not None] or None
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(min(schema.get("maximum", 1000), 1000)))
    if kind == "number":
        return round(rng.uniform(0, 10), 2)
    if kind == "boolean":
        return rng.choice([True, False])
    if kind == "string":
        return rng.choice(["x", "alpha", "10s", "v1", "pro.coding"]) + str(rng.randint(0, 9))
    return None


# --- Istio: seed 003 (Bookinfo reviews) ---------------------------------------------------------------------

ISTIO = ("networking.istio.io", "v1")


def _seed_003(ns: str) -> list[dict[str, Any]]:
    """Bookinfo's `reviews`: the end-user jason route to v2 (samples/bookinfo virtual-service-reviews-test-v2),
    everyone else to v1 with retries and a 10s timeout, and the v1/v2 DestinationRule with its own policy."""
    meta = {
        "name": "reviews",
        "namespace": ns,
        "labels": {"app": "reviews"},
        "annotations": {"owner": "bookinfo"},
    }
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta,
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "name": "everyone",
                    "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
                    "timeout": "10s",
                    "headers": {"request": {"set": {"x-team": "bookinfo"}}},
                },
            ],
        },
    }
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": dict(meta),
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }
    return [vs, dr]


def _istio_owned(obj: dict[str, Any]) -> None:
    if obj["kind"] == "VirtualService":
        http = [r for r in obj["spec"]["http"] if r.get("name") != "graylane-match"]
        for r in http:
            if any(d["destination"].get("subset") == "v1" for d in r["route"]):
                r["route"] = [
                    {k: v for k, v in d.items() if k != "weight"}
                    for d in r["route"]
                    if d["destination"].get("subset") != "v2"
                ]
        obj["spec"]["http"] = http
    if obj["kind"] == "DestinationRule":
        obj["spec"].get("trafficPolicy", {}).pop("outlierDetection", None)


def test_user_fields_istio_seed_003_survive_a_whole_release(api: Any, co: Any, ns: str) -> None:
    from tests.k8s.istio_validate import assert_istio_valid

    objects = _seed_003(ns)
    for obj in objects:
        co.create_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", obj)

    def read(obj: dict[str, Any]) -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", "reviews"))

    before = [user_part(read(o), _istio_owned) for o in objects]
    router = make_router("istio", api)
    t = RouteTarget(
        ns,
        "reviews",
        "reviews-v1",
        "reviews-v2",
        options={
            "virtualService": "reviews",
            "destinationRule": "reviews",
            "host": "reviews",
            "stableSubset": "v1",
            "canarySubset": "v2",
        },
    )
    stored: dict[str, Any] = {}

    def check(when: str) -> None:
        live = [read(o) for o in objects]
        assert [user_part(o, _istio_owned) for o in live] == before, when
        assert_istio_valid(live, when)
        stored[when] = live[0]

    release(router, t, check, Protection(circuit_breaker=CircuitBreaker("NetworkErrorRatio() > 0.3")))
    ab = stored[f"after {RoutePlan.canary_at(30, (SHENZHEN,))}"]["spec"]["http"]
    assert [r.get("name") for r in ab] == [None, "graylane-match", "everyone"]  # jason's route stays first
    assert ab[1]["match"] == [{"headers": {"location": {"exact": "shenzhen"}}}]
    assert ab[1]["retries"] == ab[2]["retries"] and ab[1]["timeout"] == "10s"
    assert ab[2]["route"] == [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 70},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 30},
    ]
    final = read(objects[0])["spec"]["http"]
    assert final[1]["route"] == [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}
    ]  # owned: the weight
    said = router.finalize(t)
    assert said and "spec.http[0] still sends traffic to subset v2" in said[0]  # jason's route, the user's
    with pytest.raises(MissingObject, match=r"VirtualService .*/ratings does not exist.*create: true"):
        router.reconcile(
            RouteTarget(
                ns,
                "ratings",
                "ratings-v1",
                "ratings-v2",
                options={"destinationRule": "reviews", "host": "reviews"},
            )
        )


# --- Gateway API: an HTTPRoute with named rules, filters and timeouts -----------------------------------------

GATEWAY = ("gateway.networking.k8s.io", "v1")


def _httproute(ns: str) -> dict[str, Any]:
    backend = {"group": "", "kind": "Service", "name": "shop-blue", "port": 8080}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "shop",
            "namespace": ns,
            "labels": {"team": "shop"},
            "annotations": {"owner": "shop"},
        },
        "spec": {
            "parentRefs": [{"name": "public", "sectionName": "web"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {
                    "name": "static",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"group": "", "kind": "Service", "name": "cdn", "port": 80}],
                },
                {
                    "name": "app",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-shop", "value": "1"}]},
                        }
                    ],
                    "timeouts": {"request": "10s"},
                    "backendRefs": [backend],
                },
            ],
        },
    }


def _gateway_owned(obj: dict[str, Any]) -> None:
    rules = [
        r
        for r in obj["spec"]["rules"]
        if not any(
            h.get("name") == "location" for m in r.get("matches") or [] for h in m.get("headers") or []
        )
    ]
    for r in rules:
        if any(b["name"] == "shop-blue" for b in r["backendRefs"]):
            r["backendRefs"] = [
                {k: v for k, v in b.items() if k != "weight"}
                for b in r["backendRefs"]
                if b["name"] != "shop-green"
            ]
    obj["spec"]["rules"] = rules


def test_user_fields_gateway_named_rules_filters_and_timeouts_survive_a_whole_release(
    api: Any, co: Any, ns: str
) -> None:
    co.create_namespaced_custom_object(*GATEWAY, ns, "httproutes", _httproute(ns))

    def read() -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*GATEWAY, ns, "httproutes", "shop"))

    before = user_part(read(), _gateway_owned)
    router = make_router("gateway-api", api)
    t = RouteTarget(ns, "shop", "shop-blue", "shop-green", options={"httpRoute": "shop", "port": 8080})
    stored: dict[str, Any] = {}

    def check(when: str) -> None:
        live = read()
        assert user_part(live, _gateway_owned) == before, when
        stored[when] = live

    release(router, t, check)
    rules = stored[f"after {RoutePlan.canary_at(30, (SHENZHEN,))}"]["spec"]["rules"]
    assert [r.get("name") for r in rules] == ["static", None, "app"]
    ab = rules[1]
    assert ab["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"type": "Exact", "name": "location", "value": "shenzhen"}],
        }
    ]
    assert ab["filters"] == rules[2]["filters"] and ab["timeouts"] == {"request": "10s"}
    assert [(b["name"], b["weight"]) for b in rules[2]["backendRefs"]] == [
        ("shop-blue", 70),
        ("shop-green", 30),
    ]
    with pytest.raises(MissingObject, match=r"HTTPRoute .*/cart does not exist.*create: true"):
        router.reconcile(RouteTarget(ns, "cart", "cart", "cart-canary", options={}))


# --- NGINX: the user's Ingress with its own annotations --------------------------------------------------------


def test_user_fields_nginx_user_annotations_survive_and_the_canary_ingress_goes(api: Any, ns: str) -> None:
    from kubernetes import client

    net = client.NetworkingV1Api(api)
    backend = {"service": {"name": "shop", "port": {"number": 80}}}
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "shop",
            "namespace": ns,
            "labels": {"team": "shop"},
            "annotations": {
                "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                "nginx.ingress.kubernetes.io/limit-rps": "50",
                "cert-manager.io/cluster-issuer": "letsencrypt",
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }
    net.create_namespaced_ingress(ns, ingress)

    def read() -> dict[str, Any]:
        return api.sanitize_for_serialization(net.read_namespaced_ingress("shop", ns))

    before = user_part(read(), lambda obj: obj.pop("status", None))
    router = make_router("nginx", api)
    t = RouteTarget(ns, "shop", "shop", "shop-canary", options={"stableIngress": "shop"})

    def check(when: str) -> None:
        assert user_part(read(), lambda obj: obj.pop("status", None)) == before, when

    said = router.set_protection(t, Protection(rate_limit=RateLimit(100, 200, 1.0)))
    assert said and "limit-rps" in said[0] and "kept it" in said[0]  # the user's limit stays, said
    release(router, t, check, Protection(rate_limit=RateLimit(100, 200, 1.0)))
    names = [i.metadata.name for i in net.list_namespaced_ingress(ns).items]
    assert names == ["shop"]  # finalize deleted graylane's canary Ingress
    assert router.finalize(t) == ()  # idempotent
