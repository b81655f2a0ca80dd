"""Seed 000 (the CODING Traefik pipeline) end to end on graylane as deployed (`make e2e`).

The scenario (tests/e2e/scenario.py) runs once per module on a World (tests/e2e/world.py): the test cluster
with RBAC, infra/k8s/deployments applied and its `graylane serve` run with the Deployment's command and
environment as the graylane ServiceAccount, the seed's objects on Traefik v2.11, a real registry, Prometheus
and Alertmanager. Each test below asserts one thing it observed; the measurements go to the closing summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import deployed, seed_objects
from tests.e2e.conftest import RESULTS
from tests.e2e.scenario import V0, V1, Run, run
from tests.e2e.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.controller, pytest.mark.traefik]
ROUTERS_BRANCH = (
    "not built: with the user's own rate limit on the route, graylane keeps it and says so "
    "(router option userProtection: keep); tightening the seed's own Middlewares in place is not "
    "what protect does yet"
)


@pytest.fixture(scope="module")
def seed(world_v2: World) -> Iterator[Run]:
    result = run(world_v2)
    RESULTS.extend(f"[v2] {line}" for line in result.lines)
    RESULTS.append("[v2] measured: " + "; ".join(f"{k}: {v}" for k, v in result.measured.items()))
    yield result


# -- graylane as deployed ----------------------------------------------------------------------------------------


def test_graylane_runs_as_the_deployment_says_as_its_service_account(seed: Run) -> None:
    w = seed.world
    assert w.account == deployed.ACCOUNT_USER
    argv = [*w.container["command"], *w.container.get("args", [])]
    assert w.graylane is not None and w.graylane.argv[1:] == deployed.with_listeners(argv)[1:]
    # every setting of graylane-settings and graylane-webhooks reached the process; only Prometheus' URL differs
    rendered = deployed.container_env(w.cluster, w.container)  # type: ignore[arg-type]
    assert {k: w.graylane.env[k] for k in rendered} == {**rendered, **w.overrides}
    assert set(w.overrides) == {"GRAYLANE_PROMETHEUS"}
    assert rendered["GRAYLANE_PROVIDERS"] == "kubernetes" and rendered["GRAYLANE_STORE"] == "configmap://"


def test_rbac_as_rendered_is_enough_and_every_call_is_granted(seed: Run) -> None:
    calls = seed.checks["account calls"]
    assert calls, "the apiserver audited no request of graylane's account"
    refused = sorted(
        {(c.verb, c.group, c.resource, c.namespace, c.name, c.code) for c in calls if c.code in (401, 403)}
    )
    assert not refused, f"graylane's account was refused: {refused}"
    granted = deployed.granted(seed.world.docs)
    ungranted = sorted(
        {(c.group, c.resource, c.verb) for c in calls}
        - granted
        - {("authentication.k8s.io", "selfsubjectreviews", "create")}
    )  # the test's own `kubectl auth whoami`
    assert not ungranted, f"called outside the ClusterRole (allowed by something else?): {ungranted}"


def test_the_cronjob_tick_as_rendered_is_handled(seed: Run) -> None:
    code, out, err = seed.checks["cronjob tick"]
    assert code == 0, f"the tick Job's command failed: {err}"
    assert out.startswith("tick ") and " 200 " in out, out
    assert f'"app":"{seed.world.app}"' in out.replace(" ", ""), out  # the sweep looked at the release
    assert seed.checks["cronjob tick refused"] == 401


# -- seed 000, step by step --------------------------------------------------------------------------------------


def test_before_graylane_the_seed_objects_route_as_written(seed: Run) -> None:
    assert seed.checks["before graylane"] == {seed_objects.OLD: 20}
    assert seed.checks["user header before"]


def test_a_push_to_the_registry_makes_the_first_version_stable(seed: Run) -> None:
    assert seed.measured["v1.0.0 push to serving (s)"] < 90


def test_the_preview_is_deployed_to_dev_and_the_migration_job_ran(seed: Run) -> None:
    assert seed.checks["migration job"] == 1


def test_ab_by_header_location_shenzhen_is_exact(seed: Run) -> None:
    assert seed.checks["ab shenzhen"] == {V1: 300}
    assert seed.checks["ab others"] == {V0: 300}


def test_the_canary_weight_from_the_gate_is_the_measured_split(seed: Run) -> None:
    split = seed.checks["split"]
    assert set(split) == {V0, V1}, split
    assert abs(split[V1] - 500) <= 25, split  # Traefik's weighted round robin is exact: 500 of 1000


def test_promotion_moves_every_request_to_the_new_version_without_a_failed_request(seed: Run) -> None:
    assert seed.checks["failed during release"] == {}


def test_protect_applies_the_seeds_rate_limit_and_circuit_breaker(seed: Run) -> None:
    specs = list(seed.checks["protection"].values())
    assert {"rateLimit": {"average": 500, "burst": 1000, "period": "1s"}} in specs, specs
    assert {"circuitBreaker": {"expression": "LatencyAtQuantileMS(50.0) > 100"}} in specs, specs


def test_a_bad_version_is_rolled_back_by_analysis_on_traefiks_metrics(seed: Run) -> None:
    bad = seed.checks["bad release"]
    assert bad["phase"] == "rolled-back" and bad["stable"] == V1, bad
    # Either judge on Traefik's metrics: the always-on guard (issue 13: it watches the canary from its first
    # request, so a 35 % error canary is usually its catch) or the policy's own success-rate metric.
    assert bad["reason"].startswith(("guard: canary errors", "analysis failed")), bad
    assert seed.measured["v1.2.0 first 5xx to rolled back (s)"] < 90
    # No request went unanswered for a routing reason (404, 502, a transport error). 503s are allowed only if
    # they are the circuit breaker's: Traefik v2.11 builds a route's middlewares anew on every configuration
    # reload, so graylane's route change gives the protect stage's LatencyAtQuantileMS(50.0) > 100 breaker an
    # empty window, and a slow first request can open it for a moment (seen: 23 x 503 while the route's p50
    # was 63 ms); no Service may have answered 503.
    failed = dict(seed.checks["failed during bad release"])
    breaker_503 = failed.pop("status 503", 0)
    assert failed == {}, seed.checks["failed during bad release"]
    entry, services = seed.checks["503 during bad release (entry point, services)"]
    assert services == 0, seed.checks["503 during bad release (entry point, services)"]
    assert entry >= breaker_503, (entry, breaker_503)  # every 503 the clients saw is one Traefik counted


def test_an_error_burst_tightens_the_rate_limit_through_alertmanager_and_it_relaxes(seed: Run) -> None:
    base, tight, relaxed = (seed.checks[f"rate limit {k}"] for k in ("base", "tightened", "relaxed"))
    assert base["average"] == 500 and base["burst"] == 1000, base
    assert tight["average"] == 250 and tight["burst"] == 500, tight  # rateLimitFactor 0.5
    assert relaxed == base
    assert seed.measured["429 at base 500/1000"]["429"] == 0, seed.measured["429 at base 500/1000"]
    assert seed.measured["429 tightened"]["429"] > 0, seed.measured["429 tightened"]
    assert seed.measured["429 relaxed"]["429"] == 0, seed.measured["429 relaxed"]
    assert seed.checks["alerts in state"] == [] or seed.checks["rate limit relaxed"] == base


def test_the_alert_swaps_in_the_policys_circuit_breaker_and_the_hold_down_restores_the_stages(
    seed: Run,
) -> None:
    assert seed.checks["breaker tightened"] == "NetworkErrorRatio() > 0.30"  # protection[0].circuitBreaker
    assert seed.checks["breaker relaxed"] == "LatencyAtQuantileMS(50.0) > 100"  # the protect stage's


def test_graylane_drives_the_seeds_ingressroute_in_place(seed: Run) -> None:
    """The example's router (group traefik.containo.us, ingressRoute k8s-flask-pro) is the seed's own object:
    no IngressRoute or TraefikService of graylane's next to it, the same object (uid) throughout, and the
    weights, A/B route and promotion measured above went through it."""
    before = seed.checks["ingressroutes before"]
    assert set(before[seed_objects.PRO]) == {seed_objects.PRO_ROUTE, seed_objects.ABTEST_ROUTE}, before
    assert set(before[seed_objects.DEV]) == {seed_objects.DEV_ROUTE}, before
    assert seed.checks["ingressroutes during ab"] == before
    assert seed.checks["ingressroutes after"] == before
    assert seed.checks["traefikservices after"] == {}


# -- what the router must do with the user's objects (branch `routers`) --------------------------------------------

ROUTE_FIELDS = ("priority", "backends")  # inside /spec/routes: checked on their own below


def test_the_users_labels_annotations_and_middleware_survive_the_release(seed: Run) -> None:
    before = {k: v for k, v in seed.checks["user fields before"].items() if k not in ROUTE_FIELDS}
    assert before["label"] and before["annotation"] and before["middlewares"] == [seed_objects.USER_HEADERS]
    for when in ("during ab", "during canary", "after"):
        now = seed.checks[f"user fields {when}"]
        assert {k: v for k, v in now.items() if k not in ROUTE_FIELDS} | {
            "middlewares": [m for m in now["middlewares"] if m == seed_objects.USER_HEADERS]
        } == before, when
    assert seed.checks["user header during ab"] and seed.checks["user header after"]


def test_the_users_route_priority_and_pass_host_header_survive_the_release(seed: Run) -> None:
    # The canary's entry is graylane's while a release runs (added while it gets traffic, left out at 0: Traefik
    # drops a route whose Service has no endpoints); whenever it is listed it carries the user's own fields.
    before = seed.checks["user fields before"]
    assert before["priority"] == seed_objects.ROUTE_PRIORITY
    backends = {name: rest for name, *rest in before["backends"]}
    assert set(backends) == {seed_objects.STABLE, seed_objects.CANARY}
    for when in ("during ab", "during canary", "after"):
        now = seed.checks[f"user fields {when}"]
        assert now["priority"] == before["priority"], when
        listed = {name: rest for name, *rest in now["backends"]}
        assert seed_objects.STABLE in listed and set(listed) <= set(backends), (when, listed)
        assert {n: r for n, r in backends.items() if n in listed} == listed, (when, listed)


@pytest.mark.xfail(strict=True, reason=ROUTERS_BRANCH)
def test_protect_drives_the_seeds_own_middlewares(seed: Run) -> None:
    assert {seed_objects.RATE_LIMIT, seed_objects.BREAKER} <= set(seed.checks["protection"])
