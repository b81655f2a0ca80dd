"""Built-in PromQL templates: one query for many releases, and the split of its result back per release."""

from __future__ import annotations

import pytest

from functions.core.policy import ImageRule, Policy, RouterSpec
from functions.errors import ConfigError
from functions.providers.metrics import templates as tp


def _policy(router: str, name: str = "web", namespace: str = "prod", **options: str) -> Policy:
    return Policy(name=name, namespace=namespace, image=ImageRule(repository="r/x"),
                  router=RouterSpec(router, dict(options)), stages=())  # fmt: skip


def _series(value: float, **labels: str) -> dict:
    return {"metric": labels, "value": [0, str(value)]}


@pytest.mark.parametrize(
    ("router", "metric"),
    [("traefik", "traefik_service_requests_total"), ("istio", "istio_requests_total"),
     ("nginx", "nginx_ingress_controller_requests"), ("haproxy", "haproxy_server_http_responses_total")],
)  # fmt: skip
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
    split = tp.split_counts("haproxy", [t], [_series(40, proxy="be_app", server="canary", code="5xx"),
                                              _series(60, proxy="be_app", server="canary", code="2xx")])  # fmt: skip
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
    q = tp.render("rate(x{ns='{{namespace}}',app='{{ app }}',v='{{target}}'}[{{window}}])",
                  {"namespace": "prod", "app": "web", "target": "web-canary", "window": "60s"})  # fmt: skip
    assert q == "rate(x{ns='prod',app='web',v='web-canary'}[60s])"
    with pytest.raises(ConfigError, match="unknown variable"):
        tp.render("x{a='{{nope}}'}", {})
