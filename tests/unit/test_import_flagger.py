"""`graylane import` of Flagger Canaries and MetricTemplates, from the examples of Flagger's own documentation
(tests/unit/import_fixtures/flagger/README.md says which page each comes from)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.core.policy import ABTestStage, BlueGreenStage, CanaryStage, CanaryStep, PreviewTraffic
from functions.core.policy_parse import parse_policy, problems
from functions.importers import Imported, convert

FIXTURES = Path(__file__).resolve().parent / "import_fixtures" / "flagger"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FIXTURES / name).read_text()) if d]


def imported(name: str, objects: list[dict[str, Any]] | None = None) -> Imported:
    [item] = convert(objects if objects is not None else load(name))
    assert problems(item.document) == []
    return item


def notes(item: Imported) -> str:
    return "\n".join(str(n) for n in item.notes)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_import_flagger_documented_examples_validate(name: str) -> None:
    item = imported(name)
    assert item.source == "Canary test/podinfo"
    assert item.document["spec"]["image"] == {"repository": "ghcr.io/stefanprodan/podinfo"}
    assert item.document["spec"]["workload"] == {
        "name": "podinfo-primary",
        "canary": "podinfo",
        "container": "podinfod",
    }


def test_import_flagger_istio_canary_with_a_pre_rollout_hook_and_the_load_hook() -> None:
    item = imported("istio-canary.yaml")
    policy = parse_policy(item.document)
    assert policy.stages[0] == CanaryStage(steps=tuple(CanaryStep(w, 60.0) for w in (10, 20, 30, 40, 50)))
    assert policy.router.provider == "istio" and policy.router.options["gateways"] == [
        "istio-system/public-gateway"
    ]
    analysis = policy.analysis
    assert (analysis.interval, analysis.failure_limit, analysis.window) == (60.0, 5, 60.0)
    success, duration = analysis.metrics
    assert (success.template, success.min) == ("success-rate", 0.99)  # Flagger's percent, graylane's ratio
    assert (duration.template, duration.max) == ("latency", 500)
    text = notes(item)
    for expected in (
        "Flagger's default mesh provider, istio, is assumed",
        "P99; graylane's latency template is the P95",
        "webhook 'load-test'",
        "spec.service.retries: not expressed",
        "must select both versions' pods",
    ):
        assert expected in text, expected
    # the acceptance test stays a pre-rollout hook; Flagger's load tester running hey becomes graylane's load hook
    acceptance, load = policy.hooks
    assert (acceptance.type, acceptance.url, acceptance.timeout) == (
        "pre-rollout",
        "http://flagger-loadtester.test/",
        30.0,
    )
    assert dict(acceptance.metadata)["cmd"] == "curl -sd 'test' http://podinfo-canary:9898/token | grep token"
    assert load.type == "rollout" and load.load_test is not None and not load.url
    assert (load.load_test.url, load.load_test.rps, load.load_test.duration) == (
        "http://podinfo-canary.test:9898/",
        20,
        60.0,
    )


@pytest.mark.parametrize(
    ("analysis", "weights"),
    [
        (
            {"maxWeight": 50, "stepWeight": 20},
            [20, 40, 60],
        ),  # usage/deployment-strategies.md "Rollout Weights"
        ({"stepWeights": [1, 2, 10, 80]}, [1, 2, 10, 80]),
        ({"maxWeight": 50, "stepWeight": 10}, [10, 20, 30, 40, 50]),
        ({"stepWeight": 40}, [40, 80, 100]),
        ({"maxWeight": 30}, [30]),
    ],
)
def test_import_flagger_weights_follow_flaggers_scheduler(
    analysis: dict[str, Any], weights: list[int]
) -> None:
    objects = load("istio-canary.yaml")
    canary = objects[0]
    canary["spec"]["analysis"] = {
        k: v for k, v in canary["spec"]["analysis"].items() if k not in ("maxWeight", "stepWeight")
    } | analysis
    steps = imported("", objects).document["spec"]["stages"][0]["canary"]["steps"]
    assert [s["weight"] for s in steps] == weights and {s["pause"] for s in steps} == {"1m"}


def test_import_flagger_ab_testing() -> None:
    item = imported("istio-ab-testing.yaml")
    policy = parse_policy(item.document)
    [abtest, _] = policy.stages
    assert isinstance(abtest, ABTestStage) and abtest.duration == 600.0  # 10 iterations x 1m
    assert [(m.name, m.regex) for m in abtest.match] == [
        ("user-agent", ".*Firefox.*"),
        ("cookie", "^(.*?;)?(type=insider)(;.*)?$"),
    ]
    assert policy.analysis.failure_limit == 2
    text = notes(item)
    assert "match[2]: several headers that must all match (AND) are not expressed" in text
    assert "match[3]: sourceLabels matching is not expressed" in text


def test_import_flagger_ab_test_on_a_router_without_matching_becomes_a_blue_green_preview() -> None:
    objects = load("istio-ab-testing.yaml")
    objects[0]["spec"]["provider"] = "traefik"  # a TraefikService only weighs
    item = imported("", objects)
    assert item.document["spec"]["stages"] == [{"bluegreen": {"preview": "10m", "analysis": False}}]
    assert "its time runs as a blue/green preview" in notes(item)
    assert "cannot route a header to the blue-green preview" in notes(item)  # a TraefikService only weighs


def test_import_flagger_nginx_with_a_metric_template() -> None:
    item = imported("nginx-canary.yaml")
    spec = item.document["spec"]
    assert spec["router"] == {
        "provider": "nginx",
        "stableIngress": "podinfo",
        "stableService": "podinfo-primary",
        "canaryService": "podinfo-canary",
        "port": 80,
        "host": "app.example.com",
    }
    latency = spec["analysis"]["metrics"][1]
    assert latency["name"] == "latency" and latency["max"] == 0.5
    assert (
        'kubernetes_namespace="test"' in latency["query"]
        and 'kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+' in latency["query"]
        and "{{" not in latency["query"]
    )
    assert spec["analysis"]["prometheus"] == "http://flagger-prometheus.ingress-nginx:9090"
    assert len(spec["stages"][0]["canary"]["steps"]) == 10 and spec["analysis"]["interval"] == "10s"


def test_import_flagger_gateway_api_with_confirm_hooks_and_an_event_hook() -> None:
    item = imported("gatewayapi-canary.yaml")
    spec = item.document["spec"]
    assert spec["router"]["parentRef"] == {"name": "gateway", "namespace": "istio-ingress"}
    assert spec["router"]["host"] == "www.example.com" and spec["router"]["httpRoute"] == "podinfo"
    assert [next(iter(s)) for s in spec["stages"]] == ["canary"]
    # Flagger's gates are graylane's hooks of the same types: they hold the release until they answer 2xx
    assert spec["hooks"] == [
        {
            "name": "start-gate",
            "type": "confirm-rollout",
            "url": "http://flagger-loadtester.test/gate/approve",
            "retries": 5,
        },
        {
            "name": "promotion-gate",
            "type": "confirm-promotion",
            "url": "http://flagger-loadtester.test/gate/approve",
        },
    ]
    assert [(h.name, h.type, h.retries) for h in parse_policy(item.document).hooks] == [
        ("start-gate", "confirm-rollout", 5),
        ("promotion-gate", "confirm-promotion", 2),
    ]
    assert spec["notify"] == [{"kind": "webhook", "url": "http://event-recevier.notifications/slack"}]
    error_rate, latency = spec["analysis"]["metrics"]
    assert "}[1m]" in error_rate["query"] and "}[30s]" in latency["query"]  # each metric's own interval
    assert 'destination_workload=~"podinfo"' in latency["query"]


def test_import_flagger_blue_green_with_template_variables() -> None:
    item = imported("kubernetes-blue-green.yaml")
    policy = parse_policy(item.document)
    assert policy.stages[0] == BlueGreenStage(preview=300.0, preview_traffic=PreviewTraffic())  # 10 x 30s
    assert policy.router.options.get("metrics") == "traefik" and "Gateway provider" in notes(item)
    custom = policy.analysis.metrics[2]
    assert custom.name == "my-metric" and (custom.min, custom.max) == (10, 1000)
    assert 'direction="inbound"' in custom.query and 'deployment=~"podinfo"' in custom.query
    assert "metric 'my metric' is named my-metric" in notes(item)
    assert "provider kubernetes" in notes(item) and policy.router.provider == "gateway-api"


def test_import_flagger_missing_template_deployment_and_other_providers_are_noted() -> None:
    objects = load("nginx-canary.yaml")
    canary = copy.deepcopy(objects[0])
    canary["spec"]["provider"] = "linkerd"
    item = imported("", [canary])
    spec = item.document["spec"]
    assert [m["name"] for m in spec["analysis"]["metrics"]] == ["request-success-rate"]
    assert (
        spec["image"]["repository"] == "registry.example.com/test/podinfo"
        and spec["router"]["provider"] == "gateway-api"
    )
    text = notes(item)
    assert "MetricTemplate test/latency was not among the files" in text and "provider linkerd" in text
    assert "Deployment podinfo was not among the files" in text
    datadog = {**objects[2], "spec": {"provider": {"type": "datadog"}, "query": "avg:x{*}"}}
    item = imported("", [objects[0], datadog])
    assert "provider datadog is not expressed" in notes(item)


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (
            "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/",
            {"url": "http://podinfo-canary.test:9898/", "rps": 20, "duration": "1m"},
        ),
        ("hey -q 5 http://web/", {"url": "http://web/", "rps": 250}),  # hey's 50 workers
        ("hey -z 1m http://web/", None),  # as fast as it can: no rate
        ("hey -z 1m -q 10 -m POST http://web/", None),  # an option the load hook would not send
        ("curl http://web/", None),
    ],
)
def test_import_flagger_hook_load_tester_commands(cmd: str, expected: dict | None) -> None:  # type: ignore[type-arg]
    from functions.importers.flagger import load_test

    assert load_test(cmd) == expected


def test_import_flagger_istio_blue_green_with_mirroring_becomes_a_mirror_stage() -> None:
    """[mirror] Flagger's Istio blue/green with traffic mirroring: the iterations mirror mirrorWeight % to green."""
    objects = load("istio-canary.yaml")
    canary = next(o for o in objects if o.get("kind") == "Canary")
    analysis = canary["spec"]["analysis"]
    for key in ("stepWeight", "maxWeight", "stepWeights"):
        analysis.pop(key, None)
    analysis.update({"iterations": 10, "mirror": True, "mirrorWeight": 40})
    policy = parse_policy(imported("istio-canary.yaml", objects).document)
    from functions.core.policy import MirrorStage

    assert policy.stages[0] == MirrorStage(percent=40, duration=10 * 60.0)
    assert policy.router.provider == "istio"
