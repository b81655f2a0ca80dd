"""Built-in PromQL templates: one query for many releases, and the split of its result back per release."""

from __future__ import annotations

import pytest

from functions.core.policy import ImageRule, Policy, RouterSpec
from functions.errors import ConfigError
from functions.providers.metrics import templates as tp
from functions.providers.routers import traefik


def _policy(router: str, name: str = "web", namespace: str = "prod", **options: str) -> Policy:
    return Policy(
        name=name,
        namespace=namespace,
        image=ImageRule(repository="r/x"),
        router=RouterSpec(router, dict(options)),
        stages=(),
    )


def _series(value: float, **labels: str) -> dict:
    return {"metric": labels, "value": [0, str(value)]}


@pytest.mark.parametrize(
    ("router", "metric"),
    [
        ("traefik", "traefik_service_requests_total"),
        ("istio", "istio_requests_total"),
        ("nginx", "nginx_ingress_controller_requests"),
        ("haproxy", "haproxy_server_http_responses_total"),
    ],
)
def test_one_counts_query_covers_every_release(router: str, metric: str) -> None:
    targets = [(tp.target(_policy(router, name=f"app{i}"), f"app{i}-1"), 60) for i in range(20)]
    query = tp.counts_query(router, targets)
    assert query.count(metric) == 1  # same range: a single term for 20 releases
    assert all(f"app{i}" in query for i in range(20))
    assert "[60s]" in query and "sum by (" in query


def test_different_ranges_become_or_terms_of_one_query() -> None:
    a, b = tp.target(_policy("haproxy", "a"), "a-1"), tp.target(_policy("haproxy", "b"), "b-1")
    query = tp.counts_query("haproxy", [(a, 120), (b, 60), (a, 120)])
    assert query.count(" or ") == 1 and "[60s]" in query and "[120s]" in query


def test_istio_counts_only_destination_reporter_and_workloads() -> None:
    t = tp.target(_policy("istio", "reviews", "bookinfo"), "reviews-2")
    query = tp.counts_query("istio", [(t, 30)])
    assert 'reporter="destination"' in query
    assert 'destination_workload=~"reviews|reviews\\\\-canary"' in query


def test_split_counts_separates_versions_and_errors() -> None:
    t = tp.target(_policy("traefik"), "web-3")
    other = tp.target(
        _policy("traefik", "web-canary"), "web-canary-1"
    )  # a different app with a confusable name
    series = [
        _series(900, service="prod-web-80@kubernetescrd", code="200"),
        _series(10, service="prod-web-80@kubernetescrd", code="503"),
        _series(180, service="prod-web-canary-80@kubernetescrd", code="200"),
        _series(20, service="prod-web-canary-80@kubernetescrd", code="500"),
        _series(5, service="prod-web-canary-80@kubernetescrd", code="404"),
    ]
    split = tp.split_counts("traefik", [t, other], series)
    assert split["web-3"][tp.STABLE] == tp.Counts(910, 10, True)
    assert split["web-3"][tp.CANARY] == tp.Counts(205, 20, True)  # 404 is a request, not a server error
    assert split["web-canary-1"][tp.STABLE] == tp.Counts(205, 20, True)


def test_haproxy_uses_code_classes_and_average_latency() -> None:
    t = tp.target(_policy("haproxy", backend="be_app"), "web-1")
    split = tp.split_counts(
        "haproxy",
        [t],
        [
            _series(40, proxy="be_app", server="canary", code="5xx"),
            _series(60, proxy="be_app", server="canary", code="2xx"),
        ],
    )
    assert split["web-1"][tp.CANARY] == tp.Counts(100, 40, True)
    latency = tp.latency_query("haproxy", [(t, 60)])
    assert "haproxy_server_response_time_average_seconds" in latency and "* 1000" in latency


def test_histogram_latency_is_p95_in_milliseconds() -> None:
    t = tp.target(_policy("nginx"), "web-1")
    query = tp.latency_query("nginx", [(t, 60)])
    assert query.startswith("histogram_quantile(0.95, sum by (namespace, service, le)")
    assert query.endswith("* 1000")
    assert "* 1)" not in tp.latency_query("istio", [(tp.target(_policy("istio"), "w"), 60)])


def test_unknown_router_matches_nothing() -> None:
    t = tp.target(_policy("gateway-api"), "web-1")
    assert not tp.has_builtin("gateway-api")
    assert not t.canary.matches({"service": "web-canary", "__name__": "x"})


def test_render_substitutes_every_variable_and_rejects_unknown_ones() -> None:
    q = tp.render(
        "rate(x{ns='{{namespace}}',app='{{ app }}',v='{{target}}'}[{{window}}])",
        {"namespace": "prod", "app": "web", "target": "web-canary", "window": "60s"},
    )
    assert q == "rate(x{ns='prod',app='web',v='web-canary'}[60s])"
    with pytest.raises(ConfigError, match="unknown variable"):
        tp.render("x{a='{{nope}}'}", {})


def test_traefik_versions_are_the_exact_backend_services_of_the_crd_provider() -> None:
    """Traefik names an IngressRoute's Service backend `<ns>-<svc>-<port>@kubernetescrd` (v2.11 and v3)."""
    t = tp.target(
        _policy("traefik", "k8s-flask", "pro", port="8080", canaryService="k8s-flask-canary"), "f-1"
    )
    assert t.stable.matches({"service": "pro-k8s-flask-8080@kubernetescrd"})
    assert t.canary.matches({"service": "pro-k8s-flask-canary-8080@kubernetescrd"})
    for other in (
        "pro-k8s-flask-canary-8080@kubernetescrd",  # the canary is not the stable
        "pro-k8s-flask-9090@kubernetescrd",  # another port of the Service
        "pro-k8s-flask-3f2a91c0d4@kubernetescrd",  # an IngressRoute k8s-flask's weighted parent
        "pro-k8s-flask-8080@kubernetes",
        "dev-k8s-flask-8080@kubernetescrd",
    ):
        assert not t.stable.matches({"service": other}), other
    assert tp.target(_policy("traefik", "web"), "w").stable.matches({"service": "prod-web-80@kubernetescrd"})
    named = tp.target(_policy("traefik", "web", port="http"), "w")  # a named port keeps its name
    assert named.stable.matches({"service": "prod-web-http@kubernetescrd"})


def test_traefik_service_names_follow_traefiks_normalize() -> None:
    assert traefik.service_label("pro", "k8s-flask", 8080) == "pro-k8s-flask-8080@kubernetescrd"
    assert traefik.service_label("a.b", "x_y", "http") == "a-b-x-y-http@kubernetescrd"
    assert traefik.service_label("pro", "web", 80, "kubernetesgateway") == "pro-web-http-80@kubernetesgateway"


def test_gateway_api_on_traefik_reads_the_gateway_providers_service_series() -> None:
    policy = _policy("gateway-api", "web", "pro", metrics="traefik", port="8080")
    assert (
        tp.metrics_source(policy) == "traefik" and tp.metrics_source(_policy("gateway-api")) == "gateway-api"
    )
    t = tp.target(policy, "web-1")
    assert t.stable.matches({"service": "pro-web-http-8080@kubernetesgateway"})
    assert t.canary.matches({"service": "pro-web-canary-http-8080@kubernetesgateway"})
    assert not t.stable.matches({"service": "pro-web-8080@kubernetescrd"})
    query = tp.counts_query("traefik", [(t, 30)])
    assert "traefik_service_requests_total" in query
    assert 'service=~"pro\\\\-web\\\\-http\\\\-8080@kubernetesgateway|' in query
    series = [
        _series(8, service="pro-web-http-8080@kubernetesgateway", code="200"),
        _series(2, service="pro-web-canary-http-8080@kubernetesgateway", code="500"),
    ]
    split = tp.split_counts("traefik", [t], series)["web-1"]
    assert split[tp.STABLE] == tp.Counts(8, 0, True) and split[tp.CANARY] == tp.Counts(2, 2, True)


def test_traefik_names_a_lone_backends_load_balancer_after_its_route() -> None:
    """Seen on real Traefik v3.6 and v2.11: a route with one Service backend gets a load balancer named
    `<ns>-<ingressRoute>-<sha256(rule)[:10 bytes]>`; graylane's default route is one at canary weight 0."""
    assert traefik.route_service_label("dev-v3-3957fd", "k8s-flask-dev", "Host(`dev.coding`)") == (
        "dev-v3-3957fd-k8s-flask-dev-9681d7360e900d1954ba@kubernetescrd"
    )
    policy = _policy(
        "traefik",
        "flask",
        "pro",
        ingressRoute="k8s-flask-pro",
        host="pro.coding",
        port="8080",
        stableService="k8s-flask",
        canaryService="k8s-flask-canary",
    )
    t = tp.target(policy, "f-1")
    alone = traefik.route_service_label("pro", "k8s-flask-pro", "Host(`pro.coding`)")
    assert t.stable.matches({"service": alone}) and t.stable.matches(
        {"service": "pro-k8s-flask-8080@kubernetescrd"}
    )
    assert not t.canary.matches({"service": alone})
    other_rule = traefik.route_service_label("pro", "k8s-flask-pro", "Host(`pro.coding`) && Header(`a`, `b`)")
    assert not t.stable.matches({"service": other_rule})  # the A/B route's name is never the stable's
    every_path = tp.target(_policy("traefik", "web", ingressRoute="web"), "w")  # no host: PathPrefix(`/`)
    assert every_path.stable.matches(
        {"service": traefik.route_service_label("prod", "web", "PathPrefix(`/`)")}
    )


def test_the_templates_default_rule_is_the_routers() -> None:
    from functions.core.effects import STABLE_ONLY
    from functions.providers.routers.base import RouteTarget

    for host in ("pro.coding", ""):
        options = {"ingressRoute": "r", **({"host": host} if host else {})}
        s = traefik._setup(RouteTarget("ns", "app", "app", "app-canary", options=options))
        assert traefik._routes(s, STABLE_ONLY, [])[-1]["match"] == traefik.default_rule(host)


def test_a_version_without_traffic_on_one_of_its_series_keeps_the_latency_of_the_other() -> None:
    policy = _policy(
        "traefik", "flask", "pro", ingressRoute="r", host="h", stableService="s", canaryService="c"
    )
    t = tp.target(policy, "f")
    alone = traefik.route_service_label("pro", "r", "Host(`h`)")
    series = [
        _series(12.5, service="pro-s-80@kubernetescrd"),
        _series(float("nan"), service=alone),
        _series(30.0, service="pro-c-80@kubernetescrd"),
    ]
    assert tp.split_values([t], series)["f"] == {tp.STABLE: 12.5, tp.CANARY: 30.0}
    both = [_series(12.5, service="pro-s-80@kubernetescrd"), _series(20.0, service=alone)]
    assert tp.split_values([t], both)["f"][tp.STABLE] == 20.0  # the slower of two with traffic
