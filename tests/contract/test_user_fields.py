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
import re
from collections.abc import Callable
from dataclasses import replace
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


def schema_of(group: str, kind: str, version: str = "") -> dict[str, Any]:
    """The openAPIV3Schema of the upstream CRD the test apiserver serves for group/kind (`version`, else its
    storage version)."""
    from tests.k8s.cluster import load_crds

    crd = next(c for c in load_crds() if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == kind)
    found = next(
        v for v in crd["spec"]["versions"] if v["name"] == version or not version and v.get("storage")
    )
    return dict(found["schema"]["openAPIV3Schema"])


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]|\[([^\]]+)\]")


def _steps(field: str) -> list[str | int]:
    """An apiserver field path (`spec.http[0].retries`, `metadata.annotations[a/b]`) as keys and indexes."""
    return [m.group(1) or (int(m.group(2)) if m.group(2) else m.group(3)) for m in _STEP.finditer(field)]


def _refused(err: Any) -> list[str]:
    """The field paths a 422 answer names (details.causes[].field)."""
    try:
        details = json.loads(err.body).get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return []
    found = []
    for cause in details.get("causes") or []:
        field = cause.get("field") or ""
        if field in ("", "<nil>"):  # a oneOf refusal names its path in the message: "spec.x[0].y" must ...
            quoted = re.search(r'"((?:spec|metadata)\.[^"]+)"', cause.get("message") or "")
            field = quoted.group(1) if quoted else ""
        if field:
            found.append(field)
    return found


def _drop(obj: dict[str, Any], field: str, keep: frozenset[str]) -> bool:
    """Repair obj where the apiserver refused `field`: the deepest part of the path the generator made (not
    in `keep`, the skeleton the test needs) is removed; at a skeleton node, one generated key under it."""
    node: Any = obj
    trail: list[tuple[Any, str | int, str]] = []  # (parent, key, dotted path)
    path = ""
    for step in _steps(field):
        if not (isinstance(node, dict) and step in node
                or isinstance(node, list) and isinstance(step, int) and step < len(node)):  # fmt: skip
            break
        path = f"{path}[{step}]" if isinstance(step, int) else f"{path}.{step}".lstrip(".")
        trail.append((node, step, path))
        node = node[step]
    for parent, step, at in reversed(trail):
        if at not in keep:
            del parent[step]
            return True
        child = parent[step]
        extra = sorted(k for k in child if f"{at}.{k}" not in keep) if isinstance(child, dict) else []
        if extra:
            del child[extra[-1]]
            return True
    return False


def accepted(create: Callable[[dict[str, Any]], Any], obj: dict[str, Any], keep: frozenset[str],
             tries: int = 40) -> dict[str, Any]:  # fmt: skip
    """obj as the apiserver stores it, created after dropping each field it refuses (its CEL rules, formats,
    patterns: whatever the generator does not know); an AssertionError when the skeleton itself is refused."""
    from kubernetes.client.rest import ApiException

    for _ in range(tries):
        try:
            return dict(create(obj))
        except ApiException as err:
            if err.status != 422:
                raise
            if not any(_drop(obj, f, keep) for f in _refused(err) or [""]):
                raise AssertionError(f"the apiserver refuses the skeleton: {err.body}") from err
    raise AssertionError(f"still refused after {tries} repairs: {json.dumps(obj)[:2000]}")


def _keep(*paths: str) -> frozenset[str]:
    """The skeleton paths and every prefix of them."""
    found: set[str] = set()
    for path in paths:
        for i, ch in enumerate(path + "."):
            if ch in ".[":
                found.add(path[:i])
    return frozenset(found - {""})


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
    rng: random.Random,
    schema: dict[str, Any],
    skip: frozenset[str] | set[str] = frozenset(),
    depth: int = 0,
    refs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A random instance of an object schema: each property present with probability 1/2 (required ones always).
    `refs`: the OpenAPI components a built-in kind's schema refers to ($ref, allOf of one $ref)."""
    found: dict[str, Any] = {}
    schema = _resolved(schema, refs)
    required = set(schema.get("required") or [])
    branches = [set(b["required"]) for b in schema.get("oneOf") or [] if b.get("required")]
    if branches:  # oneOf: the keys of one alternative only
        chosen = rng.choice(branches)
        skip = set(skip) | (set().union(*branches) - chosen)
    for key, sub in (schema.get("properties") or {}).items():
        if key in skip or (key not in required and rng.random() < 0.5):
            continue
        value = random_value(rng, sub, depth + 1, refs)
        if value is not None:
            found[key] = value
    return found


def _resolved(schema: dict[str, Any], refs: dict[str, Any] | None) -> dict[str, Any]:
    if refs is None:
        return schema
    if len(schema.get("allOf") or []) == 1:
        schema = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
    if "$ref" in schema:
        return _resolved(refs[schema["$ref"].rsplit("/", 1)[-1]], refs)
    return schema


def random_value(
    rng: random.Random, schema: dict[str, Any], depth: int, refs: dict[str, Any] | None = None
) -> Any:
    schema = _resolved(schema, refs)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return rng.choice([rng.randint(1, 100), f"{rng.randint(1, 99)}s"])
    kind = schema.get("type")
    if kind == "object" and depth < 4:
        if "properties" in schema:
            return random_object(rng, schema, depth=depth, refs=refs) or None
        if isinstance(schema.get("additionalProperties"), dict):
            return {
                f"k{rng.randint(0, 9)}": random_value(rng, schema["additionalProperties"], depth + 1, refs)
            }
        return None
    if kind == "array" and depth < 4:
        items = [
            random_value(rng, schema.get("items") or {}, depth + 1, refs) for _ in range(rng.randint(1, 2))
        ]
        return [i for i in items if i is not None] or None
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(min(schema.get("maximum", 1000), 1000)))
    if kind == "number":
        return round(rng.uniform(0, 10), 2)
    if kind == "boolean":
        return rng.choice([True, False])
    if kind == "string":
        if rng.random() < 0.5:  # values formats and patterns often want as they are
            return rng.choice(["10s", "5s", "alpha", "team-a", "reviews", "/api", "*"])
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
        if obj["spec"].get("trafficPolicy") == {}:  # graylane added it for its breaker (and removes it after)
            del obj["spec"]["trafficPolicy"]


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


# --- property-style: random user fields from the upstream schemas survive a whole release ----------------------

CASES = 6  # per provider; seeded, so every run draws the same objects


def _create_custom(
    co: Any, group: str, version: str, ns: str, plural: str
) -> Callable[[dict[str, Any]], Any]:
    return lambda obj: co.create_namespaced_custom_object(group, version, ns, plural, obj)


def test_user_fields_istio_property_random_user_fields_survive(api: Any, co: Any, ns: str) -> None:
    """Random values, from the upstream Istio CRDs' v1 schemas, in every user-owned field of the managed HTTP
    route (retries, timeout, fault, corsPolicy, headers, rewrite, match...), of its destination entries, of
    the VirtualService's spec and of the DestinationRule (its traffic policy, subsets' policies): after a whole
    release (steps, an A/B route, a circuit breaker, promotion, finalize) each is exactly as the apiserver
    stored it. Where istioctl accepts the user's objects, it accepts graylane's writes too."""
    from tests.k8s.istio_validate import assert_istio_valid, istio_validate

    vs_spec = schema_of(ISTIO[0], "VirtualService", ISTIO[1])["properties"]["spec"]
    http = vs_spec["properties"]["http"]["items"]
    entry = http["properties"]["route"]["items"]
    dr_spec = schema_of(ISTIO[0], "DestinationRule", ISTIO[1])["properties"]["spec"]
    subset = dr_spec["properties"]["subsets"]["items"]
    not_routes = {"route", "name", "redirect", "directResponse", "delegate", "mirror", "mirrors", "mirror_percent",
                  "mirrorPercent", "mirrorPercentage"}  # fmt: skip  # a route that routes, graylane's own name
    rng = random.Random(20261203)
    stored_cases, istio_checked = 0, 0
    for case in range(CASES):
        name = f"reviews-{case}"
        route = random_object(rng, http, skip=not_routes)
        dest = {**random_object(rng, entry["properties"]["destination"], skip={"host", "subset"}),
                "host": "reviews", "subset": "v1"}  # fmt: skip
        route["route"] = [{**random_object(rng, entry, skip={"destination", "weight"}), "destination": dest}]
        spec = {**random_object(rng, vs_spec, skip={"hosts", "http", "tcp", "tls"}), "hosts": ["reviews"],
                "http": [route]}  # fmt: skip
        vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
              "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip
        subsets = [{**random_object(rng, subset, skip={"name", "labels"}), "name": v, "labels": {"version": v}}
                   for v in ("v1", "v2")]  # fmt: skip
        dr_policy = random_object(rng, dr_spec["properties"]["trafficPolicy"], skip={"outlierDetection"})
        dr = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "host": "reviews",
                "subsets": subsets,
                **({"trafficPolicy": dr_policy} if dr_policy else {}),
            },
        }
        vs_keep = _keep(
            "spec.hosts",
            "spec.http[0].route[0].destination.host",
            "spec.http[0].route[0].destination.subset",
            "metadata.name",
            "metadata.namespace",
        )
        dr_keep = _keep("spec.host", "spec.subsets[0].name", "spec.subsets[0].labels", "spec.subsets[1].name",
                        "spec.subsets[1].labels", "metadata.name", "metadata.namespace")  # fmt: skip
        stored_vs = accepted(_create_custom(co, *ISTIO, ns, "virtualservices"), vs, vs_keep)
        stored_dr = accepted(_create_custom(co, *ISTIO, ns, "destinationrules"), dr, dr_keep)
        stored_cases += 1
        objects = [stored_vs, stored_dr]
        before = [user_part(o, _istio_owned) for o in objects]
        istio_ok = istio_validate(objects).ok  # the user's objects as Istio sees them
        router = make_router("istio", api)
        t = RouteTarget(ns, "reviews", "reviews-v1", "reviews-v2", options={
            "virtualService": name, "destinationRule": name, "host": "reviews", "stableSubset": "v1",
            "canarySubset": "v2"})  # fmt: skip

        def read(obj: dict[str, Any]) -> dict[str, Any]:
            plural = obj["kind"].lower() + "s"
            return dict(co.get_namespaced_custom_object(*ISTIO, ns, plural, obj["metadata"]["name"]))

        def check(when: str, objects: list[dict[str, Any]] = objects, before: list[Any] = before,
                  case: int = case, istio_ok: bool = istio_ok) -> None:  # fmt: skip
            live = [read(o) for o in objects]
            assert [user_part(o, _istio_owned) for o in live] == before, (case, when)
            if istio_ok and ("shenzhen" in when or "protection" in when or "finalize" in when):
                assert_istio_valid(live, f"case {case} {when}")

        release(router, t, check, Protection(circuit_breaker=CircuitBreaker("NetworkErrorRatio() > 0.3")))
        istio_checked += istio_ok
    assert stored_cases == CASES
    print(f"\nistio property: {CASES} cases stored, {istio_checked} also checked by istioctl validate")


def test_user_fields_gateway_property_random_user_fields_survive(api: Any, co: Any, ns: str) -> None:
    """Random values, from the upstream Gateway API v1 HTTPRoute schema, in every user-owned field of the
    managed rule (matches, filters, timeouts, name), of its stable backendRef (filters...), of the route's
    spec (parentRefs, hostnames) and of another rule of the user's: after a whole release each is exactly as
    the apiserver stored it (the CRD's CEL rules refuse what the generator gets wrong: it is dropped first)."""
    spec_schema = schema_of(GATEWAY[0], "HTTPRoute", GATEWAY[1])["properties"]["spec"]
    rule_schema = spec_schema["properties"]["rules"]["items"]
    ref_schema = rule_schema["properties"]["backendRefs"]["items"]
    rng = random.Random(20261204)
    for case in range(CASES):
        name = f"shop-{case}"
        managed = random_object(rng, rule_schema, skip={"backendRefs"})
        stable = {**random_object(rng, ref_schema, skip={"name", "kind", "group", "port", "weight", "namespace"}),
                  "group": "", "kind": "Service", "name": "shop-blue", "port": 8080}  # fmt: skip
        managed["backendRefs"] = [stable]
        other = {**random_object(rng, rule_schema, skip={"backendRefs"}),
                 "backendRefs": [{"group": "", "kind": "Service", "name": "cdn", "port": 80}]}  # fmt: skip
        spec = {**random_object(rng, spec_schema, skip={"rules", "parentRefs"}),
                "parentRefs": [{"name": "public"}], "rules": [other, managed]}  # fmt: skip
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip
        keep = _keep("spec.parentRefs[0].name", "spec.rules[0].backendRefs[0].name", "spec.rules[1].backendRefs[0].group",
                     "spec.rules[1].backendRefs[0].kind", "spec.rules[1].backendRefs[0].name",
                     "spec.rules[1].backendRefs[0].port", "spec.rules[0].backendRefs[0].port",
                     "spec.rules[0].backendRefs[0].group", "spec.rules[0].backendRefs[0].kind",
                     "metadata.name", "metadata.namespace")  # fmt: skip
        stored = accepted(_create_custom(co, *GATEWAY, ns, "httproutes"), route, keep)
        before = user_part(stored, _gateway_owned)
        router = make_router("gateway-api", api)
        t = RouteTarget(ns, "shop", "shop-blue", "shop-green", options={"httpRoute": name, "port": 8080})

        def check(when: str, name: str = name, before: dict[str, Any] = before, case: int = case) -> None:
            live = dict(co.get_namespaced_custom_object(*GATEWAY, ns, "httproutes", name))
            assert user_part(live, _gateway_owned) == before, (case, when)

        release(router, t, check)


NGINX_ANNOTATIONS = ("proxy-body-size", "ssl-redirect", "rewrite-target", "proxy-read-timeout", "enable-cors",
                     "whitelist-source-range", "affinity", "backend-protocol", "limit-rps", "limit-connections",
                     "configuration-snippet", "canary-by-header")  # fmt: skip


def test_user_fields_nginx_property_random_user_fields_survive(api: Any, ns: str) -> None:
    """Random values, from the apiserver's own OpenAPI v3 schema of networking.k8s.io/v1 Ingress, in the user's
    Ingress spec (TLS, ingressClassName, default backend, another path to another Service) and random
    ingress-nginx annotations and labels: after a whole release (canary Ingress, rules, a rate limit,
    finalize) the user's Ingress is exactly as stored, and graylane's canary Ingress is gone."""
    from kubernetes import client

    from functions.providers.kube import request

    doc = request(api, "GET", "/openapi/v3/apis/networking.k8s.io/v1", {}, timeout=10)
    refs = doc["components"]["schemas"]
    spec_schema = refs["io.k8s.api.networking.v1.IngressSpec"]
    path_schema = refs["io.k8s.api.networking.v1.HTTPIngressPath"]
    net = client.NetworkingV1Api(api)
    rng = random.Random(20261205)
    for case in range(CASES):
        name = f"shop-{case}"
        backend = {"service": {"name": "shop", "port": {"number": 80}}}
        paths = [
            {"path": "/", "pathType": "Prefix", "backend": backend},
            random_object(rng, path_schema, refs=refs),
        ]
        spec = {**random_object(rng, spec_schema, skip={"rules"}, refs=refs),
                "rules": [{"host": "shop.example.com", "http": {"paths": paths}}]}  # fmt: skip
        notes = {f"nginx.ingress.kubernetes.io/{k}": rng.choice(["8m", "true", "/", "30", "10.0.0.0/8", "cookie"])
                 for k in rng.sample(NGINX_ANNOTATIONS, rng.randint(1, 5))}  # fmt: skip
        notes[f"team.example.com/k{case}"] = str(rng.randint(0, 99))
        meta = {
            "name": name,
            "namespace": ns,
            "annotations": notes,
            "labels": {"team": f"t{rng.randint(0, 9)}"},
        }
        ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
        keep = _keep(
            "spec.rules[0].host",
            "spec.rules[0].http.paths[0].path",
            "spec.rules[0].http.paths[0].pathType",
            "spec.rules[0].http.paths[0].backend.service.name",
            "spec.rules[0].http.paths[0].backend.service.port.number",
            "metadata.name",
            "metadata.namespace",
        )
        path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"  # the raw API: the apiserver judges
        stored = accepted(
            lambda obj, path=path: request(api, "POST", path, {}, body=obj, timeout=10), ingress, keep
        )

        def read(name: str = name, path: str = path) -> dict[str, Any]:
            return request(api, "GET", f"{path}/{name}", {}, timeout=10)

        def users(obj: dict[str, Any]) -> dict[str, Any]:
            found = copy.deepcopy(obj)
            notes = found["metadata"].get("annotations") or {}
            if "graylane.dev/protection" in notes:  # graylane's limit is on it: those keys are graylane's
                for key in ("limit-rps", "limit-rpm", "limit-burst-multiplier"):
                    notes.pop(f"nginx.ingress.kubernetes.io/{key}", None)
            return user_part(found, lambda o: o.pop("status", None))

        before = users(stored)
        router = make_router("nginx", api)
        t = RouteTarget(
            ns,
            "shop",
            "shop",
            "shop-canary",
            options={"stableIngress": name, "canaryIngress": f"{name}-canary"},
        )

        def check(when: str, read: Callable[[], dict[str, Any]] = read, before: dict[str, Any] = before,
                  case: int = case) -> None:  # fmt: skip
            assert users(read()) == before, (case, when)

        release(router, t, check, Protection(rate_limit=RateLimit(100, 200, 1.0)))
        assert f"{name}-canary" not in [i.metadata.name for i in net.list_namespaced_ingress(ns).items], case


# --- userProtection replace: graylane's limiter in the user's place for the release, the user's put back -------


@pytest.mark.parametrize("group", ["traefik.io", "traefik.containo.us"])
def test_user_fields_traefik_replace_swaps_the_users_limiter_and_finalize_puts_the_list_back_byte_for_byte(
    api: Any, ns: str, group: str
) -> None:
    objects = _seed_000(group, ns)
    pro = next(o for o in objects if o["metadata"]["name"] == seed.PRO_ROUTE)
    users_list = [{"name": seed.RATE_LIMIT, "namespace": ns}, {"name": seed.BREAKER}]
    pro["spec"]["routes"][1]["middlewares"] = users_list
    stored = seed.apply(api, objects)
    middlewares = {o["metadata"]["name"]: o for o in stored if o["kind"] == "Middleware"}
    before = user_part(seed.read(api, pro), _traefik_owned)
    users_list = seed.read(api, pro)["spec"]["routes"][1]["middlewares"]  # as the apiserver stores it
    router, t = make_router("traefik", api), _traefik_target(ns, userProtection="replace")
    surveyed = router.survey(t)
    assert len(surveyed) == 2 and all("takes its place" in n for n in surveyed), surveyed
    assert f"rateLimit Middleware {ns}/{seed.RATE_LIMIT}" in surveyed[0]
    assert f"circuitBreaker Middleware {ns}/{seed.BREAKER}" in surveyed[1]
    ours = f"{seed.PRO_ROUTE}-rate-limit"

    def managed() -> dict[str, Any]:
        return next(r for r in seed.read(api, pro)["spec"]["routes"] if r.get("priority") == 10)

    said = router.set_protection(t, Protection(rate_limit=RateLimit(100, 200, 1.0)))
    assert said and f"{ns}/{seed.RATE_LIMIT}" in said[0] and "takes its place" in said[0], said
    assert managed()["middlewares"] == [
        {"name": ours},
        {"name": seed.BREAKER},
    ]  # in its place, the breaker stays
    version = seed.read(api, pro)["metadata"]["resourceVersion"]
    assert router.set_protection(
        t, Protection(rate_limit=RateLimit(100, 200, 1.0))
    )  # said again, written once
    assert seed.read(api, pro)["metadata"]["resourceVersion"] == version
    router.set_routes(t, RoutePlan.canary_at(30, (SHENZHEN,)))
    ab = next(r for r in seed.read(api, pro)["spec"]["routes"] if "&& (" in r["match"])
    assert ab["middlewares"] == [{"name": ours}, {"name": seed.BREAKER}]  # the A/B route takes the same chain
    router.set_routes(t, RoutePlan.canary_at(100))
    router.set_routes(t, STABLE_ONLY)
    router.finalize(t)
    after = seed.read(api, pro)
    assert json.dumps(managed()["middlewares"]) == json.dumps(users_list)  # byte for byte, in its order
    assert user_part(after, _traefik_owned) == before
    assert "graylane.dev/replaced-middlewares" not in (after["metadata"].get("annotations") or {})
    for name, mw in middlewares.items():  # the user's Middleware objects were never written
        assert seed.read(api, mw)["metadata"]["resourceVersion"] == mw["metadata"]["resourceVersion"], name
    # clearing graylane's limiter mid-release puts the user's back as well
    router.set_protection(t, Protection(rate_limit=RateLimit(100, 200, 1.0)))
    assert managed()["middlewares"][0] == {"name": ours}
    assert router.set_protection(t, Protection()) == ()
    assert json.dumps(managed()["middlewares"]) == json.dumps(users_list)
    assert router.finalize(t) and json.dumps(managed()["middlewares"]) == json.dumps(users_list)  # idempotent


def test_user_fields_istio_replace_writes_graylanes_breaker_and_finalize_puts_the_users_outlier_detection_back(
    api: Any, co: Any, ns: str
) -> None:
    vs, dr = _seed_003(ns)
    users_policy = {
        "loadBalancer": {"simple": "RANDOM"},
        "outlierDetection": {"consecutive5xxErrors": 7, "interval": "5s", "baseEjectionTime": "1m"},
    }
    dr["spec"]["trafficPolicy"] = users_policy
    for obj in (vs, dr):
        co.create_namespaced_custom_object(*ISTIO, ns, obj["kind"].lower() + "s", obj)

    def rule() -> dict[str, Any]:
        return dict(co.get_namespaced_custom_object(*ISTIO, ns, "destinationrules", "reviews"))

    users_policy = rule()["spec"]["trafficPolicy"]  # as the apiserver stores it

    router = make_router("istio", api)
    options = {"virtualService": "reviews", "destinationRule": "reviews", "host": "reviews", "stableSubset": "v1",
               "canarySubset": "v2"}  # fmt: skip
    keep = RouteTarget(ns, "reviews", "reviews-v1", "reviews-v2", options=options)
    t = replace(keep, options={**options, "userProtection": "replace"})
    assert router.survey(keep) == (f"DestinationRule {ns}/reviews has the user's outlierDetection: kept it, graylane's "
                                   "circuit breaker is not written over it (router option userProtection: replace "
                                   "writes graylane's in its place for the release)",)  # fmt: skip
    breaker = Protection(circuit_breaker=CircuitBreaker("NetworkErrorRatio() > 0.3"))
    assert (
        "kept it" in router.set_protection(keep, breaker)[0]
        and rule()["spec"]["trafficPolicy"] == users_policy
    )
    said = router.set_protection(t, breaker)
    assert said and "takes its place" in said[0]
    live = rule()["spec"]["trafficPolicy"]
    assert (
        live["loadBalancer"] == {"simple": "RANDOM"}
        and live["outlierDetection"]["consecutiveGatewayErrors"] == 5
    )
    assert "consecutive5xxErrors" not in live["outlierDetection"]
    router.set_protection(t, breaker)  # idempotent: the user's stays aside, not graylane's
    router.set_routes(t, RoutePlan.canary_at(20))
    router.finalize(t)
    final = rule()
    assert json.dumps(final["spec"]["trafficPolicy"]) == json.dumps(users_policy)
    assert not any(k.startswith("graylane.dev/") for k in final["metadata"].get("annotations") or {})
    assert router.survey(t) and "takes its place" in router.survey(t)[0]  # the next release meets it again


def test_user_fields_nginx_replace_writes_graylanes_limit_and_finalize_puts_the_users_annotations_back(
    api: Any, ns: str
) -> None:
    from kubernetes import client

    net = client.NetworkingV1Api(api)
    notes = {"nginx.ingress.kubernetes.io/limit-rps": "50", "nginx.ingress.kubernetes.io/limit-burst-multiplier": "3",
             "nginx.ingress.kubernetes.io/proxy-body-size": "8m"}  # fmt: skip
    backend = {"service": {"name": "shop", "port": {"number": 80}}}
    net.create_namespaced_ingress(ns, {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": ns, "annotations": notes},
        "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend}]}}]}})  # fmt: skip

    def annotations() -> dict[str, str]:
        return dict(net.read_namespaced_ingress("shop", ns).metadata.annotations or {})

    router = make_router("nginx", api)
    t = RouteTarget(
        ns, "shop", "shop", "shop-canary", options={"stableIngress": "shop", "userProtection": "replace"}
    )
    assert router.survey(t) == (f"Ingress {ns}/shop has the user's limit-rps 50: graylane's rate limit takes its "
                                "place for the release (userProtection: replace); the user's annotations are put "
                                "back when the release ends",)  # fmt: skip
    said = router.set_protection(t, Protection(rate_limit=RateLimit(100, 200, 1.0)))
    assert said and "takes its place" in said[0]
    live = annotations()
    assert live["nginx.ingress.kubernetes.io/limit-rps"] == "100"
    assert live["nginx.ingress.kubernetes.io/limit-burst-multiplier"] == "2"
    assert router.survey(t) == ()  # graylane's is there now, the user's aside
    router.set_routes(t, RoutePlan.canary_at(20))
    router.finalize(t)
    assert annotations() == notes  # exactly the user's again
    assert [i.metadata.name for i in net.list_namespaced_ingress(ns).items] == ["shop"]
    router.set_protection(t, Protection(rate_limit=RateLimit(100, 200, 1.0)))
    router.set_protection(t, Protection())  # cleared mid-release: the user's back as well
    assert annotations() == notes


# --- graylane validate --live: what graylane will meet, before any release ------------------------------------

LIVE_POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: flask, namespace: {ns}}}
spec:
  image: {{repository: registry.example.com/team/flask}}
  workload: {{name: k8s-flask, canary: k8s-flask-canary, container: flask}}
  router:
    provider: traefik
    ingressRoute: {route}
    stableService: k8s-flask
    canaryService: k8s-flask-canary
    port: 8080
    userProtection: replace
  stages:
    - canary: {{steps: [{{weight: 10}}]}}
"""


def test_user_fields_traefik_validate_live_says_what_graylane_meets_on_the_users_route(
    kube: Any,
    api: Any,
    ns: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from functions.cli import main

    seed.apply(api, _seed_000("traefik.io", ns))
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    good, missing = tmp_path / "flask.yaml", tmp_path / "missing.yaml"
    good.write_text(LIVE_POLICY.format(ns=ns, route=seed.PRO_ROUTE))
    missing.write_text(LIVE_POLICY.format(ns=ns, route="nope").replace("name: flask,", "name: other,"))
    assert main(["validate", str(good)]) == 0 and "WARN" not in capsys.readouterr().out  # offline: files only
    assert main(["validate", "--live", str(good)]) == 0  # a warning does not fail
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        f"WARN {good} ({ns}/flask, router traefik): route 'Host(`pro.coding`)' of IngressRoute "
        f"{ns}/{seed.PRO_ROUTE} has the user's rateLimit Middleware {ns}/{seed.RATE_LIMIT}: graylane's "
        "takes its place in the route's middlewares for the release (userProtection: replace); the "
        "user's Middleware is not changed and its reference is put back when the release ends"
    )
    assert main(["validate", "--live", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"IngressRoute {ns}/nope (group traefik.io) does not exist" in err and str(missing) in err
    assert main(["validate", "--live", "--context", "nowhere", str(good)]) == 3
    assert "cannot reach the cluster" in capsys.readouterr().err
    assert seed.read_all(api, "traefik.io", ns, "middlewares")  # nothing written: the user's only
    assert {m["metadata"]["name"] for m in seed.read_all(api, "traefik.io", ns, "middlewares")} == {
        seed.RATE_LIMIT,
        seed.BREAKER,
    }
