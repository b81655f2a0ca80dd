"""`graylane import` of Argo Rollouts: the seed's Rollout and AnalysisTemplate verbatim, and the examples of Argo
Rollouts' own documentation (tests/unit/import_fixtures/argo/README.md says which page each comes from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.core.policy import ABTestStage, ApprovalStage, CanaryStage, CanaryStep, PromoteStage
from functions.core.policy_parse import parse_policy, problems
from functions.importers import Imported, convert
from functions.importers.argo import _condition

FIXTURES = Path(__file__).resolve().parent / "import_fixtures" / "argo"


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FIXTURES / name).read_text()) if d]


def imported(name: str) -> Imported:
    [item] = convert(load(name))
    assert problems(item.document) == []  # what graylane validate checks
    return item


def notes(item: Imported) -> str:
    return "\n".join(str(n) for n in item.notes)


def test_import_seed_002_rollout_and_analysis_template() -> None:
    item = imported("seed-002.yaml")
    assert item.source == "Rollout default/canary-demo"
    spec = item.document["spec"]
    assert spec["image"] == {"repository": "docker.io/argoproj/rollouts-demo"}
    assert spec["workload"] == {
        "name": "canary-demo",
        "canary": "canary-demo-canary",
        "container": "canary-demo",
    }
    assert spec["router"] == {
        "provider": "nginx",
        "stableIngress": "canary-demo",
        "stableService": "canary-demo",
        "canaryService": "canary-demo-canary",
        "host": "progressive.auto",
    }
    assert spec["stages"] == [{"canary": {"steps": [{"weight": w, "pause": "2m"} for w in (20, 40, 60, 80)]}}]
    analysis = spec["analysis"]
    [metric] = analysis["metrics"]
    assert (metric["name"], metric["judge"], metric["min"]) == ("success-rate", "threshold", 0.9)
    assert (
        'nginx_ingress_controller_requests{ingress="canary-demo",status!~"[4-5].*"}[60s]' in metric["query"]
    )
    assert "{{" not in metric["query"]
    # startingStep 2 is steps[2], setWeight 40: graylane's step 2; Argo fails after more than 3 failures
    assert (analysis["startStep"], analysis["interval"], analysis["failureLimit"]) == (2, "10s", 4)
    assert analysis["prometheus"] == "http://prometheus-kube-prometheus-prometheus.prometheus:9090"
    text = notes(item)
    assert "passing at result[0] > 0.9 became min 0.9" in text
    assert 'selects ingress="canary-demo", the stable Ingress' in text
    policy = parse_policy(item.document)
    assert policy.stages == (
        CanaryStage(steps=tuple(CanaryStep(w, 120.0) for w in (20, 40, 60, 80))),
        PromoteStage(),
    )
    assert (policy.analysis.start_step, policy.analysis.failure_limit, policy.analysis.interval) == (
        2,
        4,
        10.0,
    )


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_import_argo_documented_examples_validate(name: str) -> None:
    item = imported(name)
    assert (
        item.document["apiVersion"] == "graylane.dev/v1alpha1" and item.notes
    )  # every example loses something


def test_import_argo_indefinite_pause_is_an_approval_gate() -> None:
    policy = parse_policy(imported("traefik-pauses.yaml").document)
    assert policy.router.provider == "traefik" and policy.router.options == {
        "traefikService": "traefik-service",
        "stableService": "stable-rollout",
        "canaryService": "canary-rollout",
    }
    first, gate, second, promote = policy.stages
    assert first == CanaryStage(steps=(CanaryStep(30, 0.0),), analysis=False)  # the weight holds at the gate
    assert gate == ApprovalStage(name="pause-1")
    assert second == CanaryStage(
        steps=(CanaryStep(40, 10.0), CanaryStep(60, 10.0), CanaryStep(80, 10.0)), analysis=False
    )
    assert isinstance(promote, PromoteStage)
    assert "the policy names no approvers" in notes(imported("traefik-pauses.yaml"))


def test_import_argo_header_route_becomes_an_ab_stage() -> None:
    item = imported("header-route.yaml")
    policy = parse_policy(item.document)
    canary, abtest, gate, _ = policy.stages
    assert canary == CanaryStage(steps=(CanaryStep(20, 0.0),), analysis=False)
    assert isinstance(abtest, ABTestStage)
    assert [(m.name, m.value, m.regex) for m in abtest.match] == [
        ("Custom-Header1", "Mozilla", ""),
        ("Custom-Header2", "", "^Mozilla.*"),
        ("Custom-Header3", "", "Mozilla(.*)"),
    ]
    assert gate == ApprovalStage(name="pause-1")
    text = notes(item)
    assert "prefix 'Mozilla' became the regular expression ^Mozilla.*" in text
    assert "Argo keeps 20 % of the other traffic on the canary" in text
    assert "host-level splitting between Services stable-service and canary-service is not expressed" in text


def test_import_argo_header_route_a_router_cannot_express_is_dropped_with_a_note() -> None:
    [rollout] = [d for d in load("header-route.yaml")]
    rollout["spec"]["strategy"]["canary"]["trafficRouting"] = {"nginx": {"stableIngress": "rollouts-demo"}}
    [item] = convert([rollout])
    assert problems(item.document) == []
    assert [next(iter(s)) for s in item.document["spec"]["stages"]] == ["canary", "approval"]
    assert "the A/B stage from the source is not expressed" in notes(item) and "nginx" in notes(item)


def test_import_argo_background_analysis_with_istio_subsets() -> None:
    item = imported("background-analysis-istio.yaml")
    spec = item.document["spec"]
    assert spec["router"] == {
        "provider": "istio",
        "virtualService": "rollout-vsvc",
        "host": "rollout-example",
        "destinationRule": "rollout-destrule",
        "stableSubset": "stable",
        "canarySubset": "canary",
        "gateways": ["istio-rollout-gateway"],
    }
    [metric] = spec["analysis"]["metrics"]
    assert (
        'destination_service=~"guestbook-svc.default.svc.cluster.local"' in metric["query"]
        and metric["min"] == 0.95
    )
    assert (
        spec["analysis"]["startStep"],
        spec["analysis"]["interval"],
        spec["analysis"]["failureLimit"],
    ) == (2, "5m", 4)


def test_import_argo_inline_analysis_and_arguments() -> None:
    item = imported("inline-analysis.yaml")
    analysis = item.document["spec"]["analysis"]
    assert [m["name"] for m in analysis["metrics"]] == ["success-rate", "total-errors"]
    assert analysis["metrics"][1]["max"] == 10  # failureCondition result[0] >= 10
    assert (
        analysis["prometheus"] == "http://prometheus.example.com:9090"
    )  # the template's default port argument
    assert analysis["startStep"] == 2 and analysis["interval"] == "1m"
    text = notes(item)
    for expected in (
        "argument latest-hash comes from podTemplateHashValue",
        "provider web is not expressed",
        "{{args.latest-hash}} cannot be resolved",
        "not a fixed count",
        "metric intervals differ (1m, 5m)",
        "not as a blocking run",
    ):
        assert expected in text, expected


def test_import_argo_blue_green() -> None:
    item = imported("bluegreen.yaml")
    spec = item.document["spec"]
    assert spec["stages"] == [
        {"preview": {"environment": "preview"}},
        {"approval": {"name": "promote"}},
        {"bluegreen": {"previewTraffic": {"header": "x-graylane-preview"}}},
        {"promote": {"keepPrevious": "10m"}},
    ]  # the pre-promotion checks need green to get traffic
    assert len(spec["analysis"]["metrics"]) == 1  # the same template pre and post promotion: one check
    assert spec["router"]["provider"] == "gateway-api" and spec["revisionHistory"] == 2
    assert "values that are neither (Argo's inconclusive) fail" in notes(item)
    assert "add previewTraffic.loadTest" in notes(item)


def test_import_argo_smi_and_no_traffic_routing_use_gateway_api() -> None:
    item = imported("smi.yaml")
    assert item.document["spec"]["router"] == {
        "provider": "gateway-api",
        "httpRoute": "rollout-example-traffic-split",
        "stableService": "stable-svc",
        "canaryService": "canary-svc",
    }
    assert "SMI TrafficSplit is not a graylane router" in notes(item)
    [rollout] = load("smi.yaml")
    del rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    [plain] = convert([rollout])
    assert plain.document["spec"]["router"]["provider"] == "gateway-api" and "no trafficRouting" in notes(
        plain
    )


def test_import_argo_missing_template_and_image_are_noted() -> None:
    [rollout, *_] = load("seed-002.yaml")
    rollout["spec"]["template"]["spec"]["containers"][0].pop("image")
    [item] = convert([rollout])
    assert problems(item.document) == [] and "analysis" not in item.document["spec"]
    assert item.document["spec"]["image"]["repository"] == "registry.example.com/default/canary-demo"
    text = notes(item)
    assert "AnalysisTemplate 'success-rate' was not among the files" in text and "placeholder" in text


@pytest.mark.parametrize(
    ("condition", "success", "bounds"),
    [
        ("result[0] >= 0.95", True, {"min": 0.95}),
        ("result[0] > 0.9 && result[0] < 2", True, {"min": 0.9, "max": 2}),
        ("result <= 500", True, {"max": 500}),
        ("result[0] == 1", True, {"min": 1, "max": 1}),
        ("len(result) == 0 || result[0] >= 0.95", True, {"min": 0.95}),
        ("isNaN(result) || result >= 0.95", True, {"min": 0.95}),
        ("result[0] >= 10", False, {"max": 10}),
        ("result[0] < 0.5", False, {"min": 0.5}),
        ("result == 'true'", True, None),
        ("result[0] != 1", True, None),
        ("result[0] > 2 && result[0] < 1", True, None),
        ("asInt(result) > 3", True, None),
    ],
)
def test_import_argo_conditions(condition: str, success: bool, bounds: dict[str, float] | None) -> None:
    found = _condition(condition, pass_when=success)
    assert (found[0] if found else None) == bounds


def test_import_seed_policy_runs_the_seeds_flow() -> None:
    """The imported policy, run by graylane's own runner: 20 -> 40 -> 60 -> 80 % two minutes apart, analysis from
    the second step (the seed's startingStep), then promotion."""
    from functions.core.state import AppState
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores import MemoryStore
    from functions.runner import Runner
    from tests.support import Clock, StaticPolicies, push, tick

    policy = parse_policy(imported("seed-002.yaml").document)
    clock, store = Clock(), MemoryStore()
    runner = Runner(store, StaticPolicies([policy]), RecordingProviders(), clock=clock)
    repo = policy.image.repository
    runner.handle(push(policy.app, "blue", repo))
    runner.handle(push(policy.app, "green", repo))
    weights, analysed = [], []
    for _ in range(200):
        state = AppState.from_json(store.load(policy.app)[0])
        rel = state.release
        if not rel.active:
            break
        planned = rel.planned_weight or rel.weight  # the step's weight; adaptive exposure may route less
        if not weights or weights[-1] != planned:
            weights.append(planned)
            analysed.append(rel.analysing)
        clock.advance(10)
        runner.handle(tick(policy.app))
    assert rel.phase.value == "succeeded" and state.stable.version == "green"
    assert weights == [20, 40, 60, 80] and analysed == [False, True, True, True]


def test_import_argo_experiment_baseline_becomes_the_fresh_baseline() -> None:
    item = imported("experiment-baseline.yaml")
    policy = parse_policy(item.document)
    assert policy.baseline and item.document["spec"]["baseline"] is True
    assert isinstance(policy.stages[0], CanaryStage)
    assert policy.stages[0].steps == (CanaryStep(20, 60.0), CanaryStep(50, 60.0))
    assert "specRef stable became graylane's fresh baseline (spec.baseline)" in notes(item)
