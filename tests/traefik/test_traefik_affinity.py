"""Session affinity on real Traefik v2.11 and v3 (`pytest -k affinity`): graylane's sticky cookie on a weighted
TraefikService; 1,000 users with their own cookie jars keep their version (the response's X-Version) across 20
requests at weight 20, the share of users on the canary is the weight, and a weight change re-rolls every user
(the cookie is named after the weight); a rollback takes everyone off the canary.

Traefik's weighted round robin is deterministic (earliest deadline first), so the users' first requests split
by the weights nearly exactly; the 3-point tolerance is also 2.4 standard deviations of a random 20 % split.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from functions.core.effects import RoutePlan
from functions.core.policy import SessionAffinity
from functions.providers.routers.base import RouteTarget
from tests.affinity_clients import Phase, User, run
from tests.traefik import seed
from tests.traefik.conftest import FlaskApp

USERS, REQUESTS, TOLERANCE = 1000, 20, 3.0
HOST, ROUTE, WRR = "sticky.coding", "flask-sticky", "flask-wrr"


def pinned(app: FlaskApp, affinity: SessionAffinity | None) -> RouteTarget:
    options = {
        "ingressRoute": ROUTE,
        "traefikService": WRR,
        "host": HOST,
        "entryPoints": ["web"],
        "stableService": seed.STABLE,
        "canaryService": seed.CANARY,
        "port": seed.PORT,
        "group": app.group,
        "create": True,
    }
    return RouteTarget(app.pro, "flask", seed.STABLE, seed.CANARY, options=options, affinity=affinity)


def affinity_for(app: FlaskApp) -> SessionAffinity:
    """v3 with a Max-Age; Traefik v2.11's cookie has none (graylane validate refuses maxAge there)."""
    return SessionAffinity("graylane-affinity", 3600 if app.version == "v3" else None)


def wrr_in_force(app: FlaskApp, plan: RoutePlan, cookie: str | None) -> None:
    """Until Traefik's weighted service has the plan's weights and the sticky cookie `cookie` (or none)."""
    key = f"{app.pro}-{WRR}@kubernetescrd"
    wanted = [(f"{app.pro}-{seed.STABLE}-{seed.PORT}", plan.stable)]
    wanted += [(f"{app.pro}-{seed.CANARY}-{seed.PORT}", plan.canary)] if plan.canary else []

    def check(raw: dict[str, Any]) -> bool:
        weighted = raw.get("services", {}).get(key, {}).get("weighted", {})
        live = [(s["name"].split("@", 1)[0], s.get("weight", 1)) for s in weighted.get("services") or []]
        return live == wanted and ((weighted.get("sticky") or {}).get("cookie") or {}).get("name") == cookie

    app.traefik.wait(f"{key} at {plan.stable}/{plan.canary}, sticky cookie {cookie}", check)


def route(app: FlaskApp, target: RouteTarget, weight: int) -> None:
    plan = RoutePlan.canary_at(weight)
    app.router.set_routes(target, plan)
    a = target.affinity
    wrr_in_force(app, plan, f"{a.cookie}-{weight}" if a is not None and 0 < weight < 100 else None)


def phase(app: FlaskApp, users: list[User], requests: int = REQUESTS) -> Phase:
    seen = run(users, app.traefik.port, requests, version_header="X-Version", canary="v2", host=HOST)
    print(f"\ntraefik {app.version}: {seen}")
    return seen


@pytest.fixture
def sticky(flask: FlaskApp) -> Iterator[FlaskApp]:
    flask.router.reconcile(
        pinned(flask, affinity_for(flask))
    )  # the IngressRoute and TraefikService, on stable
    flask.traefik.wait_route(flask.ingress_route(ROUTE))
    route(flask, pinned(flask, affinity_for(flask)), 0)
    yield flask
    route(flask, pinned(flask, affinity_for(flask)), 0)


def test_affinity_traefik_users_keep_their_version_and_a_weight_change_rerolls_them(sticky: FlaskApp) -> None:
    app = sticky
    target = pinned(app, affinity_for(app))
    users = [User() for _ in range(USERS)]

    route(app, target, 20)
    at20 = phase(app, users)
    assert not at20.failures
    assert at20.kept == USERS, "every user keeps one version across its 20 requests"
    assert abs(at20.share - 20) <= TOLERANCE, at20
    assert all(set(u.jar) == {"graylane-affinity-20"} for u in users)
    before = {id(u): u.version for u in users}

    again = phase(app, users)  # the same weight: nobody moves
    assert again.kept == USERS and all(u.version == before[id(u)] for u in users)

    route(app, target, 50)  # a weight change re-rolls everyone at 50
    at50 = phase(app, users)
    moved = sum(u.version != before[id(u)] for u in users)
    stayed_on_canary = sum(before[id(u)] == "v2" and u.version == "v2" for u in users)
    print(
        f"traefik {app.version} 20 -> 50: {moved} users changed version, {stayed_on_canary} of {at20.canary} "
        "canary users stayed"
    )
    assert not at50.failures
    assert at50.kept == USERS
    assert abs(at50.share - 50) <= TOLERANCE, at50
    assert moved > USERS // 4, "re-rolled at 50 %: about half of the users land on the other version"
    assert all(set(u.jar) == {"graylane-affinity-20", "graylane-affinity-50"} for u in users)

    route(app, target, 0)  # rollback: the canary leaves the weighted service, and so do its users
    back = phase(app, users, 5)
    assert back.kept == USERS and back.canary == 0, back
    stored = seed.read(
        app.api,
        {
            "apiVersion": f"{app.group}/v1alpha1",
            "kind": "TraefikService",
            "metadata": {"name": WRR, "namespace": app.pro},
        },
    )
    assert "sticky" not in stored["spec"]["weighted"]  # graylane's sticky is gone at 0


def test_affinity_traefik_off_pins_nobody(sticky: FlaskApp) -> None:
    app = sticky
    route(app, pinned(app, None), 20)
    users = [User() for _ in range(200)]
    seen = phase(app, users)
    assert not seen.failures
    assert all(not u.jar for u in users)
    # per request, 20 % to the canary: a user's 20 answers all from one version with probability ~ 0.8^20
    assert seen.kept < 20, seen
