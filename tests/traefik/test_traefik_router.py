"""graylane's TraefikRouter driving real Traefik v2.11 (traefik.containo.us, v2 rules) and v3 (traefik.io).

Every test runs for both versions against the seed's objects (tests/traefik/seed.py): the router writes
the IngressRoute / Middlewares on the test apiserver, Traefik's CRD provider picks them up, and real
requests through Traefik reach real backends of the pods the Deployments run (v1 stable, v2 canary).
Each change is awaited in Traefik's own rawdata before the requests are sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.events import Alert, Tick
from functions.core.policy import (
    CircuitBreaker,
    ImageRule,
    Match,
    Policy,
    PromoteStage,
    ProtectionRule,
    ProtectStage,
    RateLimit,
    RouterSpec,
    WorkloadSpec,
)
from functions.core.targeting import BUCKET_HEADER, bucket
from functions.errors import ConfigError
from functions.providers.factory import KubernetesProviders
from functions.providers.stores.sqlite import SqliteStore
from functions.runner import Runner
from functions.settings import Settings
from tests.support import StaticPolicies
from tests.traefik import seed
from tests.traefik.client import Traffic
from tests.traefik.conftest import FlaskApp, pod_urls, wait_rolled_out

if TYPE_CHECKING:
    from tests.k8s.cluster import KubeCluster

pytestmark = [pytest.mark.traefik, pytest.mark.k8s, pytest.mark.controller]

SALT = "flask-7"
HEADER = Match(kind="header", name="location", value="shenzhen")
COOKIE = Match(kind="cookie", name="gray", regex="tr(ue|y)")
ODD_IDS = Match(kind="user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9))
USER_HASH = Match(kind="user-hash", name="x-uid", percent=20)
SPLITS: dict[str, dict[int, float]] = {}  # version -> canary weight -> measured canary share (report)


@pytest.fixture
def app(flask: FlaskApp) -> FlaskApp:
    """The seed's app with graylane in charge of k8s-flask-pro: no user A/B route, all on stable, no protection."""
    seed.delete(
        flask.api,
        {
            "apiVersion": f"{flask.group}/v1alpha1",
            "kind": "IngressRoute",
            "metadata": {"name": seed.ABTEST_ROUTE, "namespace": flask.pro},
        },
    )
    flask.pods.set("v1", error_rate=0.0, delay=0.0)
    flask.pods.set("v2", error_rate=0.0, delay=0.0)
    flask.router.set_protection(flask.target, Protection())
    flask.route(STABLE_ONLY)
    flask.traefik.wait(
        "the user's A/B route gone",
        lambda raw: (
            not any(k.startswith(f"{flask.pro}-{seed.ABTEST_ROUTE}-") for k in raw.get("routers", {}))
        ),
    )
    return flask


def test_the_seed_objects_route_as_the_user_wrote_them(flask: FlaskApp) -> None:
    """Traefik serves the seed's own IngressRoutes (v2 `Headers` on traefik.containo.us) before graylane acts."""
    seed.apply(flask.api, seed.routing(flask.group, flask.pro, flask.dev))
    for name in (seed.PRO_ROUTE, seed.ABTEST_ROUTE):
        flask.in_force(name)
    flask.traefik.wait_route(flask.ingress_route(seed.DEV_ROUTE, flask.dev))
    pro = flask.client()
    assert pro.split(500, {"location": "shenzhen"}) == Counter(v2=500)  # k8s-flask-abtest
    half = pro.split(2000)
    assert set(half) == {"v1", "v2"} and abs(half["v2"] - 1000) <= 40, half  # k8s-flask-pro 50/50
    assert flask.client(seed.DEV_HOST).split(200) == Counter({"v2-dev": 200})  # k8s-flask-dev
    assert flask.client("other.coding").split(20) == Counter({"status 404": 20})


def test_traefik_follows_the_endpoints_its_version_reads_as_the_deployment_scales(app: FlaskApp) -> None:
    """v2.11 reads core/v1 Endpoints, v3 EndpointSlices: both are kept by kube-controller-manager from the
    ready pods, so scaling the canary Deployment changes the servers Traefik sends canary requests to."""
    from kubernetes import client

    core, discovery = client.CoreV1Api(app.api), client.DiscoveryV1Api(app.api)

    def endpoint_urls() -> set[str]:
        if app.version == "v2":
            subsets = core.read_namespaced_endpoints(seed.CANARY, app.pro).subsets or []
            return {f"http://{a.ip}:{p.port}" for s in subsets for a in s.addresses or [] for p in s.ports}
        slices = discovery.list_namespaced_endpoint_slice(
            app.pro, label_selector=f"kubernetes.io/service-name={seed.CANARY}"
        ).items
        return {
            f"http://{ip}:{p.port}"
            for s in slices
            for e in s.endpoints or []
            if e.conditions.ready
            for ip in e.addresses
            for p in s.ports
        }

    app.route(RoutePlan.canary_at(100))
    apps = client.AppsV1Api(app.api)
    try:
        for replicas in (3, 1):
            apps.patch_namespaced_deployment(seed.CANARY, app.pro, {"spec": {"replicas": replicas}})
            wait_rolled_out(app.api, app.pro, [seed.CANARY])
            app.pods.wait_serving(app.pro, {"v1": 2, "v2": replicas})
            ready = pod_urls(app.api, app.pro, seed.CANARY)
            seed.wait(
                lambda ready=ready: endpoint_urls() == ready,  # type: ignore[misc]
                f"{app.version}'s endpoints = the {replicas} ready pods",
            )
            app.traefik.wait_servers(f"{app.pro}-{seed.CANARY}-{seed.PORT}", ready)
            client_ = app.client()
            served = set()
            for i in range(30):
                assert client_.answer() == "v2", (replicas, i, time.time())
                served.add(client_.backend)
            assert len(served) == replicas, served  # round robin over every ready canary pod, and only those
    finally:
        apps.patch_namespaced_deployment(seed.CANARY, app.pro, {"spec": {"replicas": 1}})
        app.pods.wait_serving(app.pro, {"v1": 2, "v2": 1})


@pytest.mark.parametrize("canary", [20, 50, 5])
def test_weighted_split_over_5000_requests_is_within_two_points(app: FlaskApp, canary: int) -> None:
    app.route(RoutePlan.canary_at(canary))
    seen = app.client().split(5000)
    share = 100 * seen["v2"] / 5000
    SPLITS.setdefault(app.version, {})[canary] = share
    print(
        f"\nTraefik {app.version} split {100 - canary}/{canary}: v1 {seen['v1']} v2 {seen['v2']} -> {share:.2f} %"
    )
    assert seen["v1"] + seen["v2"] == 5000, seen
    assert abs(share - canary) <= 2, seen


def test_header_rule_sends_exactly_the_matching_requests_to_the_canary(app: FlaskApp) -> None:
    app.route(RoutePlan.canary_at(0, match=(HEADER,)))
    client = app.client()
    assert client.split(500, {"location": "shenzhen"}) == Counter(v2=500)
    assert client.split(300, {"Location": "shenzhen"}) == Counter(v2=300)  # header names are case-insensitive
    assert client.split(200, {"location": "beijing"}) == Counter(v1=200)
    assert client.split(200, {"location": "shenzhen-north"}) == Counter(v1=200)  # exact, not a prefix
    assert client.split(200) == Counter(v1=200)


def test_header_rule_keeps_the_weighted_split_for_everyone_else(app: FlaskApp) -> None:
    app.route(RoutePlan.canary_at(50, match=(HEADER,)))
    client = app.client()
    assert client.split(300, {"location": "shenzhen"}) == Counter(v2=300)
    others = client.split(1000, {"location": "beijing"})
    assert abs(others["v2"] - 500) <= 20, others


def test_cookie_rule_matches_the_cookie_value_by_regex(app: FlaskApp) -> None:
    app.route(RoutePlan.canary_at(0, match=(COOKIE,)))
    client = app.client()
    assert client.split(200, {"Cookie": "session=abc; gray=true"}) == Counter(v2=200)
    assert client.split(200, {"Cookie": "gray=try"}) == Counter(v2=200)
    for cookie in ("gray=false", "gray=trueish", "notgray=true", "session=gray=true"):
        assert client.split(50, {"Cookie": cookie}) == Counter(v1=50), cookie
    assert client.split(50) == Counter(v1=50)


def test_user_id_tail_digit_sends_odd_ids_only_to_the_canary(app: FlaskApp) -> None:
    app.route(RoutePlan.canary_at(0, match=(ODD_IDS,)))
    client = app.client()
    routed = {uid: client.answer({"x-user-id": str(uid)}) for uid in range(1000, 1200)}
    assert routed == {uid: "v2" if uid % 2 else "v1" for uid in range(1000, 1200)}
    assert client.split(50, {"x-user-id": "12a"}) == Counter(v1=50)
    assert client.split(50) == Counter(v1=50)


def test_user_hash_routes_exactly_the_users_whose_bucket_is_below_the_percent(app: FlaskApp) -> None:
    """The edge sets x-graylane-bucket = MurmurHash3(salt:user) % 100; Traefik matches the buckets < 20."""
    app.route(RoutePlan.canary_at(0, match=(USER_HASH,), salt=SALT))
    client = app.client()
    users = [f"user-{i:05d}" for i in range(400)]
    routed = {u for u in users if client.answer({BUCKET_HEADER: str(bucket(u, SALT))}) == "v2"}
    assert routed == {u for u in users if bucket(u, SALT) < 20}
    assert 50 < len(routed) < 110  # about 20 % of 400
    for b in ("100", "-1", "07", "1 9", ""):  # only the decimal buckets 0..19 match
        assert client.split(10, {BUCKET_HEADER: b}) == Counter(v1=10), b


def test_source_ip_is_a_client_ip_rule_on_v3_and_refused_on_the_legacy_group(app: FlaskApp) -> None:
    rule = Match(kind="source-ip", cidrs=("127.0.0.2/32", "127.0.0.3/32"))
    if app.group == "traefik.containo.us":
        with pytest.raises(ConfigError, match="source-ip"):
            app.router.set_routes(app.target, RoutePlan.canary_at(0, match=(rule,)))
        return
    app.route(RoutePlan.canary_at(0, match=(rule,)))
    assert app.client(source="127.0.0.2").split(100) == Counter(v2=100)
    assert app.client(source="127.0.0.3").split(100) == Counter(v2=100)
    assert app.client(source="127.0.0.4").split(100) == Counter(v1=100)


def test_rate_limit_answers_429_above_its_limit_only_and_clearing_lifts_it(app: FlaskApp) -> None:
    """Traefik's rateLimit is a token bucket per client address: `burst` at once, then `average` per period."""
    app.protect(Protection(rate_limit=RateLimit(average=50, burst=50, period=1.0)))
    route = app.ingress_route()
    assert all(
        m == [{"name": f"{seed.PRO_ROUTE}-rate-limit"}]
        for m in (r.get("middlewares") for r in route["spec"]["routes"])
    )
    hammer = app.client(source="127.0.0.5")
    started = time.monotonic()
    seen = hammer.split(400)
    elapsed = time.monotonic() - started
    admitted = seen["v1"]
    assert seen["status 429"] > 100, seen
    assert 50 <= admitted <= 50 + 50 * elapsed + 5, (seen, elapsed)  # the burst, then 50 per second
    assert app.client(source="127.0.0.6").split(30) == Counter(v1=30)  # another client has its own bucket
    app.protect(Protection())
    assert app.ingress_route()["spec"]["routes"][-1].get("middlewares") is None
    assert hammer.split(400) == Counter(v1=400)


def test_an_alert_tightens_the_rate_limit_in_traefik_and_its_resolution_relaxes_it(
    app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    """The protection function (runner + policy rule, factor 0.1) on the real router: an alert tightens the
    protect stage's 200/s to 20/s before that stage ran; resolved and held down, what was in force returns."""
    protect = RateLimit(average=200, burst=200, period=1.0)
    policy = Policy(
        name="flask",
        namespace=app.pro,
        image=ImageRule(repository=seed.REPOSITORY),
        router=RouterSpec("traefik", dict(app.target.options)),
        workload=WorkloadSpec(name=seed.STABLE, canary=seed.CANARY, container="flask"),
        stages=(PromoteStage(), ProtectStage(rate_limit=protect)),
        protection=(
            ProtectionRule(
                alert="FlaskHighErrorRate",
                match=(("service", "k8s-flask"),),
                rate_limit_factor=0.1,
                floor=5,
                hold_down=1.0,
            ),
        ),
    )
    providers = KubernetesProviders(Settings(providers="kubernetes"), client_for=lambda _: kube.api_client())
    runner = Runner(
        SqliteStore(tmp_path / "state.db"), StaticPolicies([policy]), providers, source="/graylane/protection"
    )
    labels = {"alertname": "FlaskHighErrorRate", "service": "k8s-flask", "severity": "critical"}
    rate_limit = f"{seed.PRO_ROUTE}-rate-limit"

    def paced(seconds: float, source: str) -> Counter[str]:
        traffic = Traffic(app.traefik.port, seed.HOST, rps=60, source=source).start()
        time.sleep(seconds)
        traffic.stop()
        return traffic.counts()

    try:
        assert paced(2.0, "127.0.0.21")["status 429"] == 0  # no limit in force yet
        runner.handle(
            Alert(
                id="alert-1",
                app=policy.app,
                fingerprint="fp-1",
                firing=True,
                alertname="FlaskHighErrorRate",
                labels=labels,
            )
        )
        tightened = app.middlewares(app.ingress_route())[rate_limit]["rateLimit"]
        assert (tightened["average"], tightened["burst"]) == (20, 20), tightened
        app.in_force()
        seen = paced(3.0, "127.0.0.22")
        assert seen["status 429"] > 60 and 20 <= seen["v1"] <= 20 + 20 * 3 + 5, seen  # ~20/s get through
        runner.handle(
            Alert(
                id="alert-2",
                app=policy.app,
                fingerprint="fp-1",
                firing=False,
                alertname="FlaskHighErrorRate",
                labels=labels,
            )
        )
        time.sleep(1.2)  # the hold-down
        runner.handle(Tick(id="tick-1", app=policy.app))
        assert app.middlewares(app.ingress_route()) == {}  # nothing was in force before the alert
        app.in_force()
        assert paced(2.0, "127.0.0.23")["status 429"] == 0
    finally:
        providers.close()


def test_circuit_breaker_trips_on_the_canarys_error_ratio(app: FlaskApp) -> None:
    app.route(RoutePlan.canary_at(100))
    app.protect(Protection(circuit_breaker=CircuitBreaker("ResponseCodeRatio(500, 600, 0, 600) > 0.5")))
    client = app.client()
    assert client.split(100) == Counter(v2=100)  # closed while the canary is healthy
    app.pods.set("v2", error_rate=1.0)
    seen: Counter[str] = Counter()
    started = time.monotonic()
    while seen["status 503"] == 0 and time.monotonic() - started < 10:  # checked every 100 ms (checkPeriod)
        seen += client.split(20)
    opened = time.monotonic() - started
    print(f"\nTraefik {app.version} breaker open after {opened:.2f} s: {dict(seen)}")
    assert seen["status 503"] > 0, seen
    before = app.pods.served("v2")
    assert client.split(300) == Counter({"status 503": 300})  # open: Traefik answers 503 itself ...
    assert app.pods.served("v2") == before  # ... and the failing canary gets nothing (fallback: 10 s)
    app.pods.set("v2", error_rate=0.0)
    app.protect(Protection())  # cleared: the route has no breaker any more
    assert client.split(200) == Counter(v2=200)


def test_circuit_breaker_trips_on_the_seeds_latency_expression(app: FlaskApp) -> None:
    """The seed's `LatencyAtQuantileMS(50.0) > 100`: a canary answering in 150 ms trips it, 0 ms does not."""
    app.route(RoutePlan.canary_at(100))
    app.protect(Protection(circuit_breaker=CircuitBreaker("LatencyAtQuantileMS(50.0) > 100")))
    client = app.client()
    assert client.split(10) == Counter(v2=10)  # few: the median must move above 100 ms soon
    app.pods.set("v2", delay=0.15)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 10
    while seen["status 503"] < 20 and time.monotonic() < deadline:
        seen += client.split(10)
    assert seen["status 503"] >= 20, seen
    app.pods.set("v2", delay=0.0)
    app.protect(Protection())
    assert client.split(100) == Counter(v2=100)


def test_weights_change_under_load_without_a_single_failed_request(app: FlaskApp) -> None:
    stop, results, errors = threading.Event(), Counter[str](), []

    def load() -> None:
        client = app.client()
        while not stop.is_set():
            try:
                results[client.answer()] += 1
            except Exception as err:  # noqa: BLE001 (any failure is what the test counts)
                errors.append(repr(err))

    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for weight in (0, 20, 50, 100, 0, 95, 5, 100, 50, 0):
            app.route(RoutePlan.canary_at(weight))
            time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
    print(f"\nTraefik {app.version} under load: {dict(results)}, errors {len(errors)}")
    assert not errors, errors[:5]
    assert set(results) == {"v1", "v2"}, results  # nothing but real answers: no 404/502/503 in between
    assert results["v2"] > 200 and results["v1"] > 200


def test_reading_back_and_finalize_on_live_traefik(app: FlaskApp) -> None:
    plan = RoutePlan.canary_at(30, match=(HEADER, ODD_IDS), salt=SALT)
    app.route(plan)
    assert app.router.get_routes(app.target) == plan
    app.router.reconcile(app.target)  # finds everything in place, moves nothing
    assert app.router.get_routes(app.target) == plan
    app.router.finalize(app.target)
    app.in_force()
    assert app.router.get_routes(app.target) == STABLE_ONLY
    client = app.client()
    assert client.split(200, {"location": "shenzhen", "x-user-id": "7"}) == Counter(v1=200)


def _managed(route: dict[str, Any]) -> int:
    """The index of k8s-flask-pro's route to the stable Service (not an A/B route graylane added)."""
    return next(i for i, r in enumerate(route["spec"]["routes"])
                if any(s["name"] == seed.STABLE for s in r["services"]) and "&& (" not in r["match"])  # fmt: skip


def _with_users_middlewares(app: FlaskApp, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user's own Middleware references on k8s-flask-pro's managed route (as the apiserver stores them)."""
    ir = app.ingress_route()
    ir["metadata"] = {
        k: v for k, v in ir["metadata"].items() if k in ("name", "namespace", "labels", "annotations")
    }
    m = _managed(ir)
    if refs:
        ir["spec"]["routes"][m]["middlewares"] = refs
    else:
        ir["spec"]["routes"][m].pop("middlewares", None)
    seed.apply(app.api, [ir])
    return list(app.ingress_route()["spec"]["routes"][m].get("middlewares") or [])


def _paced_admitted(client: Any, n: int) -> tuple[Counter[str], float]:
    started = time.monotonic()
    seen = client.split(n)
    return seen, time.monotonic() - started


def test_user_protection_replace_429s_come_from_graylanes_limit_and_finalize_puts_the_users_back(
    app: FlaskApp,
) -> None:
    """userProtection replace (issue 12 item 4): the user's own strict rate limit (5/s) on k8s-flask-pro is
    swapped for graylane's 50/s for the release. About 50 requests a second get through, ten times what the
    user's lets through, so the 429s are graylane's limit's; the user's Middleware object is never written;
    finalize puts its reference back (the route's middlewares byte for byte as stored) and the user's 5/s is in
    force again."""
    strict = {"apiVersion": f"{app.group}/v1alpha1", "kind": "Middleware",
              "metadata": {"name": "flask-strict", "namespace": app.pro},
              "spec": {"rateLimit": {"average": 5, "burst": 5}}}  # fmt: skip
    stored = seed.apply(app.api, [strict])[0]
    target = replace(app.target, options={**app.target.options, "userProtection": "replace"})
    try:
        users = _with_users_middlewares(app, [{"name": "flask-strict", "namespace": app.pro}])
        app.in_force()
        seen, elapsed = _paced_admitted(app.client(source="127.0.0.41"), 60)
        assert seen["status 429"] > 30 and seen["v1"] <= 5 + 5 * elapsed + 2, (
            seen,
            elapsed,
        )  # the user's 5/s
        said = app.router.set_protection(
            target, Protection(rate_limit=RateLimit(average=50, burst=50, period=1.0))
        )
        assert said and f"{app.pro}/flask-strict" in said[0] and "takes its place" in said[0], said
        m = _managed(app.ingress_route())
        assert app.ingress_route()["spec"]["routes"][m]["middlewares"] == [
            {"name": f"{seed.PRO_ROUTE}-rate-limit"}
        ]
        app.in_force()
        seen, elapsed = _paced_admitted(app.client(source="127.0.0.42"), 400)
        print(f"\nTraefik {app.version} replace: {dict(seen)} in {elapsed:.2f}s")
        assert seen["status 429"] > 100, seen
        assert 50 <= seen["v1"] <= 50 + 50 * elapsed + 5, (
            seen,
            elapsed,
        )  # graylane's 50/s, not the user's 5/s
        assert (
            seed.read(app.api, strict)["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
        )
        app.router.finalize(target)
        app.in_force()
        assert json.dumps(app.ingress_route()["spec"]["routes"][m]["middlewares"]) == json.dumps(users)
        seen, elapsed = _paced_admitted(app.client(source="127.0.0.43"), 60)
        assert seen["status 429"] > 30 and seen["v1"] <= 5 + 5 * elapsed + 2, (
            seen,
            elapsed,
        )  # the user's again
    finally:
        app.router.set_protection(target, Protection())
        _with_users_middlewares(app, [])
        seed.delete(app.api, strict)


def test_the_users_abtest_route_to_the_canary_is_named_in_the_release_history_and_notification(
    app: FlaskApp,
) -> None:
    """Issue 12 item 4 on real Traefik: seed 000's own k8s-flask-abtest (location: shenzhen to
    k8s-flask-canary) is the user's. Through a whole release driven by the runner it serves the canary to
    shenzhen as the user wrote it; when the release ends the runner names it in the release's history and
    notification. At the start, the user's rate limit on k8s-flask-pro (the seed's flask-k8s-traffic) is
    said the same way (kept: userProtection keep)."""
    from functions.core.policy import CanaryStage, CanaryStep
    from functions.core.state import AppState, Phase
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores.memory import MemoryStore
    from tests.support import Clock, canary_policy, push, tick

    abtest = next(
        o for o in seed.routing(app.group, app.pro, app.dev) if o["metadata"]["name"] == seed.ABTEST_ROUTE
    )
    seed.apply(app.api, [abtest])
    base = canary_policy(
        "flask", app.pro, stages=(CanaryStage(steps=(CanaryStep(20, 10.0),)), PromoteStage())
    )
    assert base.analysis is not None
    policy = replace(base, router=RouterSpec("traefik", dict(app.target.options)),
                    workload=WorkloadSpec(name=seed.STABLE, canary=seed.CANARY, container="flask"),
                    analysis=replace(base.analysis, guard=False, exposure_budget=0.0))  # fmt: skip

    class RealRouter(RecordingProviders):  # the real router on real Traefik; workloads and metrics recorded
        def router(self, policy: Policy, cluster: str) -> Any:  # type: ignore[override]
            return app.router

    providers, store, clock = RealRouter(), MemoryStore(), Clock()
    runner = Runner(store, StaticPolicies([policy]), providers, clock=clock)

    def state() -> AppState:
        doc, _ = store.load(policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    shenzhen = app.client(source="127.0.0.44")
    try:
        _with_users_middlewares(app, [{"name": seed.RATE_LIMIT, "namespace": app.pro}])
        app.in_force(seed.ABTEST_ROUTE)
        runner.handle(push(policy.app, "v1"))
        runner.handle(push(policy.app, "v2"))
        app.in_force()
        assert shenzhen.split(50, {"location": "shenzhen"}) == Counter(v2=50)  # the user's route, as written
        split = app.client(source="127.0.0.45").split(500)
        assert abs(split["v2"] - 100) <= 35, split  # graylane's 20 % on k8s-flask-pro
        for _ in range(20):
            if state().release.phase == Phase.SUCCEEDED and not state().pending:
                break
            clock.advance(10)
            runner.handle(tick(policy.app))
        s = state()
        assert s.release.phase == Phase.SUCCEEDED and not s.pending, (s.release.phase, s.pending)
        app.in_force()
        assert shenzhen.split(50, {"location": "shenzhen"}) == Counter(v2=50)  # left as the user wrote it
        assert app.client(source="127.0.0.46").split(100) == Counter(v1=100)
        ended = [h for h in s.history if h.action == "routes-finalized"]
        assert [h.release for h in ended] == [s.release.id], ended
        assert ended[0].reason.startswith(
            f"IngressRoute {app.pro}/{seed.ABTEST_ROUTE} spec.routes[0] (match "
        )
        assert (
            f"still sends traffic to Service {seed.CANARY}" in ended[0].reason
            and ended[0].phase_to == "succeeded"
        )
        started = [h for h in s.history if h.action == "routes-surveyed"]
        assert (
            len(started) == 1
            and f"rateLimit Middleware {app.pro}/{seed.RATE_LIMIT}: kept it" in started[0].reason
        )
        notices = {n["type"]: n for n in providers.notifier_.notices if n.get("notes")}
        assert seed.ABTEST_ROUTE in notices["routes-finalized"]["message"]
        assert notices["routes-finalized"]["release"] == s.release.id
        assert seed.RATE_LIMIT in notices["routes-surveyed"]["message"]
    finally:
        _with_users_middlewares(app, [])
        seed.delete(app.api, abtest)


def test_traefik_ran_the_whole_module_without_a_restart(flask: FlaskApp) -> None:
    flask.traefik.alive()
    if flask.version in SPLITS:
        print(f"\nTraefik {flask.version} measured canary shares: {SPLITS[flask.version]}")
