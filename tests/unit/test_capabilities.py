"""The capability table and `graylane validate` refusing what a policy's router cannot do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from functions.cli import main
from functions.core import capabilities
from functions.core.capabilities import FEATURES, unsupported
from functions.core.policy_parse import parse_policy, problems
from functions.core.routing import Option
from functions.errors import ConfigError, PolicyError
from functions.providers.routers import REGISTRY

CAPABILITIES = capabilities.table()
ROUTER_PROVIDERS = tuple(REGISTRY)

README = Path(__file__).resolve().parents[2] / "README.md"
ROUTER_OPTIONS: dict[str, dict[str, Any]] = {
    "traefik": {"ingressRoute": "web", "host": "web.example.com"},
    "istio": {"virtualService": "web", "destinationRule": "web"},
    "gateway-api": {"httpRoute": "web"},
    "nginx": {"stableIngress": "web"},
    "haproxy": {"backend": "web"},
    "recording": {},
}
RULES = {
    "header": {"header": "location", "value": "shenzhen"},
    "header-regex": {"header": "location", "regex": "^shen"},
    "cookie": {"cookie": "canary", "value": "always"},
    "user-id-digit": {"userIdDigit": {"header": "x-user-id", "digits": [1, 3]}},
    "user-hash": {"userHash": {"header": "x-user-id", "percent": 20}},
    "source-ip": {"sourceIp": ["10.0.0.0/8"]},
}


def doc(
    provider: str, *stages: dict[str, Any], protection: list[dict[str, Any]] | None = None, **options: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": {"repository": "registry.example.com/shop/web"},
        "router": {"provider": provider, **ROUTER_OPTIONS[provider], **options},
        "stages": list(stages) or [{"canary": {"steps": [{"weight": 50}]}}],
    }
    if protection:
        spec["protection"] = protection
    return {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }


def abtest(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"abtest": {"match": list(rules), "duration": "10m"}}


PROTECT = {
    "protect": {
        "rateLimit": {"average": 500, "burst": 1000, "period": "1s"},
        "circuitBreaker": {"expression": "NetworkErrorRatio() > 0.3"},
    }
}


def test_the_table_covers_every_router_provider_with_known_features() -> None:
    assert set(CAPABILITIES) == set(ROUTER_PROVIDERS)
    assert all(features <= set(FEATURES) and "weights" in features for features in CAPABILITIES.values())


def test_the_readme_table_is_the_capability_data() -> None:
    section = README.read_text().split("## Traffic providers", 1)[1].split("\n## ", 1)[0]
    table_text = section[section.index("\n|") :].split("\n\n", 1)[0]  # the first table of the section
    rows = [line for line in table_text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    assert header == list(FEATURES)
    table = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0].strip("`")] = frozenset(
            f for f, cell in zip(FEATURES, cells[1:], strict=True) if cell.startswith("yes")
        )
    assert table == CAPABILITIES


def test_source_ip_on_nginx_fails_validation_at_its_field_path() -> None:
    policy = doc(
        "nginx",
        {"approval": {"name": "ab"}},
        {"canary": {"steps": [{"weight": 10}]}},
        abtest(RULES["source-ip"]),
    )
    found = problems(policy)
    assert found == [
        (
            "spec.stages[2].abtest.match[0]",
            "source-ip matching is not supported by router nginx; supported: weights, header, "
            "header-regex, cookie, user-id-digit, user-hash, rate-limit",
        )
    ]
    with pytest.raises(PolicyError, match=re.escape("spec.stages[2].abtest.match[0]: source-ip matching")):
        parse_policy(policy)


@pytest.mark.parametrize("provider", sorted(CAPABILITIES))
@pytest.mark.parametrize("feature", sorted(RULES))
def test_a_match_rule_is_refused_exactly_where_the_table_says(provider: str, feature: str) -> None:
    found = unsupported(provider, doc(provider, abtest(RULES[feature])))
    if feature in CAPABILITIES[provider]:
        assert found == []
    else:
        assert found == [("spec.stages[0].abtest.match[0]", found[0][1])]
        assert f"not supported by router {provider}" in found[0][1]


def test_protection_on_a_router_without_it_is_refused_per_field() -> None:
    found = dict(
        problems(
            doc(
                "gateway-api",
                {"canary": {"steps": [{"weight": 50}]}},
                PROTECT,
                protection=[{"alert": "HighErrorRate", "rateLimitFactor": 0.5}],
            )
        )
    )
    assert set(found) == {
        "spec.stages[1].protect.rateLimit",
        "spec.stages[1].protect.circuitBreaker",
        "spec.protection[0].rateLimitFactor",
    }
    assert found["spec.stages[1].protect.rateLimit"].startswith(
        "rate limiting is not supported by router gateway-api"
    )
    assert problems(doc("traefik", {"canary": {"steps": [{"weight": 50}]}}, PROTECT)) == []


def test_istio_takes_error_ratios_but_not_latency_and_no_rate_limit() -> None:
    latency = {"protect": {"circuitBreaker": {"expression": "LatencyAtQuantileMS(50.0) > 100"}}}
    found = problems(doc("istio", latency, protection=[{"alert": "Slow", "rateLimitFactor": 0.5}]))
    assert [p for p, _ in found] == [
        "spec.stages[0].protect.circuitBreaker",
        "spec.protection[0].rateLimitFactor",
    ]
    assert "LatencyAtQuantileMS is not supported by router istio" in found[0][1]
    assert (
        problems(doc("istio", {"protect": {"circuitBreaker": {"expression": "NetworkErrorRatio() > 0.3"}}}))
        == []
    )
    assert "not supported by router haproxy" in problems(doc("haproxy", latency))[0][1]


def test_nginx_carries_one_header_rule_one_always_cookie_and_per_second_or_minute_limits() -> None:
    two_headers = abtest(RULES["header"], RULES["user-hash"], {"cookie": "beta", "value": "yes"})
    slow = {"protect": {"rateLimit": {"average": 5, "period": "10s"}}}
    found = dict(problems(doc("nginx", two_headers, slow)))
    assert (
        "at most one header, userIdDigit or userHash rule per stage (match[0] is one)"
        in found["spec.stages[0].abtest.match[1]"]
    )
    assert "needs value: always" in found["spec.stages[0].abtest.match[2]"]
    assert "needs period 1s or 1m" in found["spec.stages[1].protect.rateLimit"]
    per_minute = {"protect": {"rateLimit": {"average": 600, "period": "1m"}}}
    assert problems(doc("nginx", abtest(RULES["header"], RULES["cookie"]), per_minute)) == []


def test_traefik_source_ip_needs_the_traefik_io_group_and_rules_need_an_ingress_route() -> None:
    legacy = problems(doc("traefik", abtest(RULES["source-ip"]), group="traefik.containo.us"))
    assert legacy == [
        (
            "spec.stages[0].abtest.match[0]",
            "source-ip matching is not supported by router traefik "
            "with group traefik.containo.us; use group traefik.io",
        )
    ]
    only_service = doc("traefik", abtest(RULES["header"]))
    only_service["spec"]["router"] = {"provider": "traefik", "traefikService": "web"}
    assert [p for p, _ in problems(only_service)] == ["spec.stages[0].abtest.match[0]"]


def test_the_router_registry_builds_every_provider_through_its_module() -> None:
    from functions.providers.recording import RecordingRouter
    from functions.providers.routers import make_router
    from functions.providers.routers.gateway_api import GatewayAPIRouter
    from functions.providers.routers.haproxy import HAProxyRouter

    assert (
        set(REGISTRY)
        == set(CAPABILITIES)
        == {"traefik", "istio", "gateway-api", "nginx", "haproxy", "recording"}
    )
    assert isinstance(make_router("gateway-api", object()), GatewayAPIRouter)
    assert isinstance(make_router("recording"), RecordingRouter)
    # haproxy is built from its options (the admin socket), not from a Kubernetes client
    router = make_router("haproxy", object(), options={"socket": "/run/haproxy/admin.sock", "backend": "web"})
    assert isinstance(router, HAProxyRouter) and router.cli.path == "/run/haproxy/admin.sock"
    with pytest.raises(ConfigError, match="router.socket: the haproxy provider needs the admin socket path"):
        make_router("haproxy", object())
    with pytest.raises(
        ConfigError, match="router provider 'envoy' is unknown; known: gateway-api, haproxy, istio"
    ):
        make_router("envoy", None)
    with pytest.raises(
        ConfigError, match="router traefik talks to a Kubernetes cluster, and these providers have none"
    ):
        from functions.providers.routers.base import Cluster

        make_router("traefik", Cluster(name="local"))


def test_an_unknown_or_mistyped_router_option_is_refused_at_its_path() -> None:
    found = dict(problems(doc("traefik", ingresRoute="web", port=True)))
    assert found["spec.router.ingresRoute"].startswith(
        "is not an option of router traefik; its options: ingressRoute"
    )
    assert "expected a port number" in found["spec.router.port"]
    assert (
        "expected one of traefik.io, traefik.containo.us"
        in dict(problems(doc("traefik", group="traefik.example")))["spec.router.group"]
    )


class _Envoy:
    """A router module the parser, the capability check and the factory have never heard of."""

    NAME = "envoy"
    OPTIONS = (Option("cluster", "name", "the Envoy cluster"),)
    CAPABILITIES = frozenset({"weights", "header"})
    METRICS = None
    OWNS = ()

    @staticmethod
    def check(options: Any, needs: Any) -> list[tuple[str, str]]:
        return [
            (path, "header matching needs router option cluster")
            for path, feature, _ in needs
            if feature == "header" and "cluster" not in options
        ]

    @staticmethod
    def measured_by(options: Any) -> str:
        return ""

    @staticmethod
    def versions(policy: Any) -> Any:
        raise AssertionError("not measured")


def test_a_new_router_is_one_module_the_parser_and_the_capabilities_read() -> None:
    catalog = {"envoy": _Envoy()}
    envoy = doc("recording", abtest(RULES["header"]))
    envoy["spec"]["router"] = {"provider": "envoy"}
    assert problems(envoy, catalog) == [
        ("spec.stages[0].abtest.match[0]", "header matching needs router option cluster")
    ]
    envoy["spec"]["router"]["cluster"] = "web"
    assert parse_policy(envoy, catalog=catalog).router.options == {"cluster": "web"}
    envoy["spec"]["stages"].append(abtest(RULES["cookie"]))
    assert (
        "cookie matching is not supported by router envoy; supported: weights, header"
        in dict(problems(envoy, catalog))["spec.stages[1].abtest.match[0]"]
    )
    assert "expected one of envoy" in dict(problems(doc("traefik"), catalog))["spec.router.provider"]


@pytest.mark.parametrize(
    "path",
    [
        "functions/core/policy_parse.py",
        "functions/core/capabilities.py",
        "functions/providers/factory.py",
        "functions/providers/metrics/templates.py",
        "functions/local/providers.py",
    ],
)
def test_no_provider_is_named_outside_its_module(path: str) -> None:
    code = "\n".join(
        line for line in (README.parent / path).read_text().splitlines() if not line.lstrip().startswith("#")
    )
    code = re.sub(r'""".*?"""', "", code, flags=re.S)  # docstrings may give examples
    for provider in ("traefik", "istio", "gateway-api", "nginx", "haproxy"):
        assert f'"{provider}"' not in code, f"{path} names {provider}"


def test_a_parsed_policy_is_checked_too() -> None:
    policy = parse_policy(doc("recording", abtest(RULES["source-ip"])))
    assert unsupported("recording", policy) == []
    assert [p for p, _ in unsupported("istio", policy)] == ["spec.stages[0].abtest.match[0]"]
    assert unsupported("no-such-router", policy) == []


def test_graylane_validate_reports_the_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(doc("gateway-api", abtest(RULES["source-ip"]))))
    assert main(["validate", str(path)]) != 0
    out = capsys.readouterr()
    assert "spec.stages[0].abtest.match[0]" in out.out + out.err
    assert "source-ip matching is not supported by router gateway-api" in out.out + out.err


def test_guard_and_latency_judge_routers_match_the_metric_templates() -> None:
    from functions.core.capabilities import counted, histogrammed
    from functions.providers.metrics.templates import ROUTERS
    from functions.providers.routers import REGISTRY

    # the guard's counters and the latency judge's histograms are the series each router module declares
    assert (
        {name for name in REGISTRY if counted(name)}
        == set(ROUTERS)
        == {"traefik", "istio", "nginx", "haproxy"}
    )
    assert {name for name in REGISTRY if histogrammed(name)} == {
        n for n, r in ROUTERS.items() if r.duration_bucket
    }
    assert {name for name in REGISTRY if histogrammed(name)} == {"traefik", "istio", "nginx"}
