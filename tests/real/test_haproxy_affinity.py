"""Session affinity on a real HAProxy 2.6 (`pytest -k affinity`): 1,000 users with their own cookie jars keep
their version across 20 requests at weight 20, the share of users on the canary is the weight, a weight
change re-rolls every user at the new weight, and a rollback takes everyone off the canary.

The backends answer `X-Backend: stable|canary`. HAProxy's roundrobin is a smooth weighted round robin, so the
users' first (cookie-less) requests split by the weights nearly exactly; the 3-point tolerance is also 2.4
standard deviations of a random 20 % split of 1,000 users.
"""

from __future__ import annotations

import pytest

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import SessionAffinity
from functions.providers.routers.base import RouteTarget
from tests.affinity_clients import Phase, User, run
from tests.real.conftest import HAProxyApp

pytestmark = pytest.mark.real

USERS, REQUESTS, TOLERANCE = 1000, 20, 3.0
AFFINITY = SessionAffinity(cookie="graylane-affinity", max_age=3600)


def pinned(app: HAProxyApp) -> RouteTarget:
    t = app.target
    return RouteTarget(t.namespace, t.app, t.stable, t.canary, options=t.options, affinity=AFFINITY)


def phase(app: HAProxyApp, users: list[User], requests: int = REQUESTS) -> Phase:
    seen = run(users, app.port, requests, version_header="X-Backend", canary="canary")
    print(f"\nhaproxy: {seen}")
    return seen


@pytest.fixture(autouse=True)
def back_to_stable(haproxy_app: HAProxyApp) -> None:
    haproxy_app.router.set_routes(pinned(haproxy_app), STABLE_ONLY)


def test_affinity_haproxy_users_keep_their_version_and_a_weight_change_rerolls_them(
    haproxy_app: HAProxyApp,
) -> None:
    app, target = haproxy_app, pinned(haproxy_app)
    users = [User() for _ in range(USERS)]

    app.router.set_routes(target, RoutePlan.canary_at(20))
    at20 = phase(app, users)
    assert not at20.failures
    assert at20.kept == USERS, "every user keeps one version across its 20 requests"
    assert abs(at20.share - 20) <= TOLERANCE, at20
    assert all(
        u.set_cookies == 1 and set(u.jar) == {"graylane-affinity"} for u in users
    )  # pinned once, by a uuid
    before = {id(u): u.version for u in users}

    again = phase(app, users)  # the same weight: nobody moves
    assert again.kept == USERS and all(u.version == before[id(u)] for u in users)

    app.router.set_routes(target, RoutePlan.canary_at(50))  # a weight change re-rolls everyone at 50
    at50 = phase(app, users)
    moved = sum(u.version != before[id(u)] for u in users)
    stayed_on_canary = sum(before[id(u)] == "canary" and u.version == "canary" for u in users)
    print(
        f"haproxy 20 -> 50: {moved} users changed version, {stayed_on_canary} of {at20.canary} canary users stayed"
    )
    assert not at50.failures
    assert at50.kept == USERS
    assert abs(at50.share - 50) <= TOLERANCE, at50
    assert moved > USERS // 4, "re-rolled at 50 %: about half of the users land on the other version"
    assert all(u.set_cookies == 1 for u in users)  # the cookie stays; HAProxy forgot what it pinned

    app.router.set_routes(target, RoutePlan.canary_at(50))  # re-applied as is: the table is not cleared
    same = phase(app, users, 5)
    assert same.kept == USERS
    assert same.canary == at50.canary

    app.router.set_routes(
        target, STABLE_ONLY
    )  # rollback: pinned canary users do not stay on a weight-0 server
    back = phase(app, users, 5)
    assert back.kept == USERS and back.canary == 0, back


def test_affinity_haproxy_off_pins_nobody_and_sets_no_cookie(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(app.target, RoutePlan.canary_at(20))
    users = [User() for _ in range(200)]
    seen = phase(app, users)
    assert not seen.failures
    assert all(not u.jar and u.set_cookies == 0 for u in users)
    # per request, 20 % to the canary: a user's 20 answers are all stable with probability 0.8^20 ~ 1 %
    assert seen.kept < 20, seen


def test_affinity_haproxy_is_only_while_weighted(haproxy_app: HAProxyApp) -> None:
    app = haproxy_app
    app.router.set_routes(pinned(app), STABLE_ONLY)
    users = [User() for _ in range(50)]
    seen = phase(app, users, 3)
    assert seen.canary == 0 and all(not u.jar for u in users)  # at 0 nobody gets a cookie
