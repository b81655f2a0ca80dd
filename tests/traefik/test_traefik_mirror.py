"""[mirror] Traffic mirroring on real Traefik v2.11 (traefik.containo.us) and v3 (traefik.io).

graylane's mirror stage writes a TraefikService of kind mirroring (`k8s-flask-pro-mirror`: the stable as its
main service, the canary as its one mirror with `percent`) and points the managed route at it (the stable's
weight 0, the entry naming the mirroring service 100). Real requests through Traefik reach the real backends
of the pods (tests/traefik/pods.py), which count what they serve:

1. every client is answered by the stable (X-Version v1), and the canary's backend serves the copies: the
   share Traefik's mirroring handler sends, `count * 100 < total * percent`, deterministic per handler;
2. Traefik counts the copies on the canary's own `traefik_service_requests_total` series, the one the
   analysis templates read; after the stage the mirroring service is gone and the canary gets nothing;
3. through the Runner with Prometheus: a canary answering 35 % 5xx is rolled back during the mirror stage on
   those series, and no client ever receives one of its answers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import MetricCheck, MirrorStage, PromoteStage
from functions.core.state import Phase
from functions.providers.routers import traefik
from tests.real.protection_stack import wait_for
from tests.traefik import seed
from tests.traefik.analysis import (
    AnalysisStack,
    close_stable_alone,
    first_version,
    flask_policy,
    push,
    stable_alone,
)
from tests.traefik.conftest import FlaskApp, need_traefik, pod_urls, wait_rolled_out
from tests.traefik.pods import PodRunner
from tests.traefik.test_gateway_router import gw  # noqa: F401 (the Gateway fixture)

if TYPE_CHECKING:
    from tests.k8s.cluster import KubeCluster

pytestmark = [pytest.mark.traefik, pytest.mark.k8s, pytest.mark.controller]

MIRROR = f"{seed.PRO_ROUTE}{traefik.MIRROR_SUFFIX}"
REQUESTS = 2000
MEASURED: dict[str, dict[str, Any]] = {}  # version -> what was measured (the report)


@pytest.fixture
def app(flask: FlaskApp) -> FlaskApp:
    """The seed's app with graylane in charge of k8s-flask-pro: no user A/B route, all on stable."""
    seed.delete(
        flask.api,
        {
            "apiVersion": f"{flask.group}/v1alpha1",
            "kind": "IngressRoute",
            "metadata": {"name": seed.ABTEST_ROUTE, "namespace": flask.pro},
        },
    )
    for v in ("v1", "v2"):
        flask.pods.set(v, error_rate=0.0, delay=0.0)
    flask.router.set_protection(flask.target, Protection())
    flask.route(STABLE_ONLY)
    flask.traefik.wait(
        "the user's A/B route gone",
        lambda raw: (
            not any(k.startswith(f"{flask.pro}-{seed.ABTEST_ROUTE}-") for k in raw.get("routers", {}))
        ),
    )
    return flask


def _mirroring(app: FlaskApp, percent: int) -> None:
    """Until Traefik's rawdata has graylane's mirroring service: the stable, the canary at `percent`."""
    name = f"{app.pro}-{MIRROR}@kubernetescrd"
    stable, canary = (traefik.service_label(app.pro, s, seed.PORT) for s in (seed.STABLE, seed.CANARY))

    def check(raw: dict[str, Any]) -> bool:
        live = raw.get("services", {}).get(name, {})
        mirroring = live.get("mirroring") or {}
        mirrors = [(m.get("name"), m.get("percent")) for m in mirroring.get("mirrors") or []]
        return (
            live.get("status", "enabled") == "enabled"
            and mirroring.get("service") in (stable, stable[:-14])
            and mirrors in ([(canary, percent)], [(canary[:-14], percent)])
        )  # with or without @kubernetescrd

    app.traefik.wait(f"mirroring service {name} at {percent} %", check)


def _settled(read: Any, quiet: float = 1.0, timeout: float = 15.0) -> int:
    """`read()` once it stopped changing for `quiet` s (the copies are sent after the answers, asynchronously)."""
    last, since, deadline = read(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return int(last)


def _requests_of(app: FlaskApp, service: str) -> float:
    """Traefik's own count of the requests of a service (summed over codes and methods)."""
    label = traefik.service_label(app.pro, service, seed.PORT)
    return sum(
        float(s["value"][1])
        for s in app.traefik.series("traefik_service_requests_total")
        if s["metric"].get("service") == label
    )


@pytest.mark.parametrize("percent", [50, 10])
def test_mirror_clients_see_only_the_stable_and_the_canary_serves_the_copies(
    app: FlaskApp, percent: int
) -> None:
    app.route(RoutePlan.mirrored(percent))
    _mirroring(app, percent)
    stored = app.ingress_route()["spec"]["routes"]
    managed = next(r for r in stored if any(s.get("name") == seed.STABLE for s in r["services"]))
    assert [(s.get("kind", "Service"), s["name"], s.get("weight")) for s in managed["services"]] == [
        ("Service", seed.STABLE, 0),
        ("TraefikService", MIRROR, 100),
    ]
    assert app.router.get_routes(app.target) == RoutePlan.mirrored(percent)

    served = (app.pods.served("v1"), app.pods.served("v2"))
    counted = (_requests_of(app, seed.STABLE), _requests_of(app, seed.CANARY))
    seen = app.client().split(REQUESTS)
    copies = _settled(lambda: app.pods.served("v2")) - served[1]
    answered = app.pods.served("v1") - served[0]
    traefik_canary = _settled(lambda: _requests_of(app, seed.CANARY)) - counted[1]
    traefik_stable = _settled(lambda: _requests_of(app, seed.STABLE)) - counted[0]
    share = 100 * copies / REQUESTS
    MEASURED.setdefault(app.version, {})[percent] = share
    print(
        f"\nTraefik {app.version} mirror {percent} %: clients {dict(seen)}; stable served {answered}; canary served "
        f"{copies} copies ({share:.2f} %); Traefik counted stable {traefik_stable:.0f}, canary {traefik_canary:.0f}"
    )

    assert seen == Counter(v1=REQUESTS)  # every answer is the stable's
    assert answered == REQUESTS
    # Traefik's mirroring handler copies request n when copies * 100 < n * percent: exactly percent % of the
    # requests it saw, give or take the one in flight; 1 point (20 requests) leaves room for nothing else
    assert abs(share - percent) <= 1.0, (copies, REQUESTS)
    # the analysis reads the canary's series: Traefik counts every copy there, and the stable's answers on its own
    assert traefik_canary == copies and traefik_stable == REQUESTS

    app.route(STABLE_ONLY)  # the stage is over: the entry goes, then the mirroring service
    assert app.router.get_routes(app.target) == STABLE_ONLY
    from kubernetes import client as k8s

    with pytest.raises(k8s.ApiException) as gone:
        k8s.CustomObjectsApi(app.api).get_namespaced_custom_object(
            app.group, "v1alpha1", app.pro, "traefikservices", MIRROR
        )
    assert gone.value.status == 404
    app.traefik.wait(
        "the mirroring service gone",
        lambda raw: f"{app.pro}-{MIRROR}@kubernetescrd" not in raw.get("services", {}),
    )
    before = app.pods.served("v2")
    assert app.client().split(300) == Counter(v1=300)
    time.sleep(0.5)
    assert app.pods.served("v2") == before  # no more copies


def test_mirror_then_weights_then_finalize_on_live_traefik(app: FlaskApp) -> None:
    """A release's route plans in order: the mirror, a canary step (the canary answers its share, no copies),
    the mirror again, finalize (the mirroring service deleted, everything on stable)."""
    for plan in (RoutePlan.mirrored(30), RoutePlan.canary_at(20), RoutePlan.mirrored(100)):
        app.route(plan)
        if plan.mirror:
            _mirroring(app, plan.mirror)
        assert app.router.get_routes(app.target) == plan
        before = app.pods.served("v2")
        seen = app.client().split(500)
        copies = _settled(lambda: app.pods.served("v2")) - before
        if plan.mirror:
            assert seen == Counter(v1=500) and abs(copies - 5 * plan.mirror) <= 5, (plan, seen, copies)
        else:
            assert seen["v2"] == copies and abs(seen["v2"] - 100) <= 10, (plan, seen, copies)  # answers only
    assert app.router.finalize(app.target) == ()
    app.in_force()
    assert app.router.get_routes(app.target) == STABLE_ONLY
    app.traefik.wait(
        "the mirroring service gone",
        lambda raw: f"{app.pro}-{MIRROR}@kubernetescrd" not in raw.get("services", {}),
    )
    assert app.client().split(200) == Counter(v1=200)


# --- through the Runner: analysis on the copies --------------------------------------------------------------

ERRORS = MetricCheck(name="errors", template="success-rate", judge="sequential")
SUCCESS = MetricCheck(name="success-rate", template="success-rate", min=0.95)


@pytest.fixture(params=["v2", "v3"])
def stable_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlaskApp]:
    """The stable app alone in a fresh namespace behind its own Traefik (graylane creates the route)."""
    version = str(request.param)
    need_traefik(version)
    kube: KubeCluster = request.getfixturevalue("kube")
    pods: PodRunner = request.getfixturevalue("pods")
    found = stable_alone(version, kube, pods, tmp_path / "traefik")
    try:
        yield found
    finally:
        close_stable_alone(found)
        for v in ("v1", "v2"):
            pods.set(v, error_rate=0.0, delay=0.0)


def test_mirror_a_bad_canary_is_rolled_back_during_the_mirror_and_no_client_gets_its_answers(
    stable_app: FlaskApp, kube: KubeCluster, tmp_path: Path
) -> None:
    app = stable_app
    policy = flask_policy(app.version, app.pro, (ERRORS, SUCCESS))
    policy = replace(policy, stages=(MirrorStage(percent=50, duration=60.0), PromoteStage()))
    with AnalysisStack(app, kube, tmp_path, policy) as stack:
        try:
            app.pods.set("v2", error_rate=0.35)
            first_version(stack)
            started = time.monotonic()
            copies0, failed0 = app.pods.served("v2"), app.pods.behaviour("v2").failed
            stack.runner.handle(push(stack.policy.app, "v2"))
            wait_for(
                "the mirror in Traefik", lambda: app.router.get_routes(app.target).mirror == 50, timeout=30
            )
            rolled_back = wait_for(
                "release rolled back", lambda: stack.first(".release.rolledback"), timeout=40
            )
            release = stack.state().release
            assert release is not None and release.phase == Phase.ROLLED_BACK, stack.story()
            assert release.reason.startswith("analysis failed") and stack.state().stable.version == "v1"
            assert release.weight == 0 and any("mirror: 50%" in h.reason for h in stack.state().history)
            errors = {m.name: m for m in release.verdicts[-1].metrics}["errors"]
            assert errors.verdict == "fail" and "traefik_service_requests_total" in errors.query
            copies = app.pods.served("v2") - copies0
            failed = app.pods.behaviour("v2").failed - failed0

            wait_for(
                "route back to stable", lambda: app.router.get_routes(app.target) == STABLE_ONLY, timeout=10
            )
            app.in_force()
            # the canary scaled to 0 after the route left it (and the mirroring service outlived it by its grace)
            wait_for(
                "the canary's pods gone",
                lambda: not pod_urls(app.api, app.pro, seed.CANARY),
                timeout=traefik.TraefikRouter.mirror_retire_grace + 20,
            )
            wait_rolled_out(app.api, app.pro, [seed.CANARY])
            hits = stack.hits(started)
            answers = Counter(h.version or f"status {h.status}" for h in hits)
            print(
                f"\nTraefik {app.version} mirror of a 35 % 5xx canary: rolled back {rolled_back - started:.2f} s "
                f"after the push; the canary served {copies} copies ({failed} failed); clients got {dict(answers)}; "
                f"{len(release.verdicts)} verdicts"
            )
            MEASURED.setdefault(app.version, {})["rollback_s"] = round(rolled_back - started, 2)
            assert copies > 50  # the analysis judged the canary on copies
            assert set(answers) == {"v1"} and all(h.status == 200 for h in hits), (
                answers
            )  # none of its answers
            assert stack.events(".release.promoted") == []
            assert stack.tick_errors == [], stack.tick_errors[:3]
        except BaseException:
            print(stack.story())
            raise


# --- Gateway API through Traefik's Gateway provider: why validate refuses it ------------------------------------


def test_mirror_gateway_request_mirror_is_refused_by_traefiks_gateway_provider(gw: Any) -> None:  # noqa: F811
    """Traefik v3.6's Gateway provider has no RequestMirror (Extended support): it refuses the filter, so
    `graylane validate` refuses a mirror stage on router gateway-api with `metrics: traefik`. Written here
    through the router anyway (validation bypassed), the apiserver accepts the filter; Traefik logs "unsupported
    filter RequestMirror", leaves the route's status Accepted, and answers 500 to every request of the rule."""
    from functions.core.policy_parse import problems
    from tests.unit.test_mirror import doc

    assert [p for p, _ in problems(doc("gateway-api", metrics="traefik"))] == ["spec.stages[0].mirror"]
    gw.route(STABLE_ONLY)
    try:
        gw.router.set_routes(gw.target, RoutePlan.mirrored(50))
        stored = gw.http_route()
        assert any(
            f.get("type") == "RequestMirror" for r in stored["spec"]["rules"] for f in r.get("filters") or []
        )

        said = wait_for(
            "Traefik's verdict on the RequestMirror filter",
            lambda: next(
                (
                    line
                    for line in gw.traefik.log_text.splitlines()
                    if "unsupported filter RequestMirror" in line
                ),
                "",
            ),
            timeout=20,
        )
        time.sleep(1.0)  # the configuration that followed it is in force
        conditions = {
            c["type"]: c["status"]
            for p in gw.http_route().get("status", {}).get("parents") or []
            for c in p.get("conditions") or []
        }
        copies = gw.pods.served("v2")
        answers = gw.client().split(200)
        copies = _settled(lambda: gw.pods.served("v2")) - copies
        print(
            f"\nTraefik v3 Gateway provider on RequestMirror: {said.split(' ERR ')[-1]}; HTTPRoute conditions "
            f"{conditions}; clients got {dict(answers)}; the canary got {copies} copies"
        )
        assert "unsupported filter RequestMirror" in said
        # the rule stays Accepted in the route's status, yet every request on it fails and nothing is mirrored
        assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}
        assert answers == Counter({"status 500": 200}) and copies == 0
    finally:
        gw.route(STABLE_ONLY)
    assert gw.client().split(50) == Counter(v1=50)
