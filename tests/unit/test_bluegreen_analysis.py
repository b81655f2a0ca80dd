"""Examples that can pass (issue 11, item 8): validation refuses analysis no template can serve, naming the
field, and a blue-green preview gets traffic to analyse (a header route, and a load test sending it).

The examples themselves run whole releases against a real Prometheus in
tests/real/test_examples_bluegreen_analysis.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.cli import main
from functions.core.effects import RoutePlan
from functions.core.events import MetricSample
from functions.core.policy import (
    LOAD_TEST_IMAGE,
    BlueGreenStage,
    LoadTest,
    Match,
    PreviewTraffic,
    PromoteStage,
)
from functions.core.policy_parse import parse_policy, problems, to_doc
from functions.core.state import Phase
from functions.providers.metrics import templates
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.providers.workloads.base import WorkloadTarget
from functions.providers.workloads.kubernetes import load_test_job
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, push, tick
from tests.unit.machine_helpers import PASS, Driver, analysis, kinds, make_policy

# infra/examples/bluegreen.yaml as it was: validate said OK, and no release of it could ever pass analysis
OLD_BLUEGREEN = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: shop, namespace: web}
spec:
  image: {repository: ghcr.io/example/shop, semver: "^2.0.0"}
  workload: {name: shop-blue, canary: shop-green}
  router: {provider: gateway-api, httpRoute: shop, stableService: shop-blue, canaryService: shop-green}
  analysis:
    interval: 15s
    window: 2m
    metrics:
      - {name: errors, template: error-rate, judge: threshold, max: 0.01}
      - {name: latency, template: latency, judge: threshold, max: 0.3}
  rollback: rollback
  approvers:
    gates:
      switch: {users: [release-manager]}
  stages:
    - bluegreen: {preview: 5m, analysis: true}
    - approval: {name: switch, timeout: 2h, onTimeout: reject}
    - promote: {keepPrevious: 15m}
"""


def _doc(text: str = OLD_BLUEGREEN) -> dict[str, Any]:
    return yaml.safe_load(text)


def test_bluegreen_analysis_validate_refuses_the_old_example_naming_each_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bluegreen.yaml").write_text(OLD_BLUEGREEN)
    assert main(["validate", str(tmp_path / "bluegreen.yaml")]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert (
        "spec.analysis.metrics[0].template: template error-rate has no query for router gateway-api" in text
    )
    assert "spec.analysis.metrics[1].template: template latency" in text and "spec.router.metrics" in text
    assert "spec.stages[0].bluegreen.analysis: analyses a preview that receives no traffic" in text


def test_bluegreen_analysis_gateway_api_reads_the_metrics_of_the_implementation_it_names() -> None:
    doc = _doc()
    doc["spec"]["stages"][0]["bluegreen"]["previewTraffic"] = {
        "loadTest": {"url": "http://shop.example.com/"}
    }
    assert [p for p, _ in problems(doc)] == [
        "spec.analysis.metrics[0].template",
        "spec.analysis.metrics[1].template",
    ]
    doc["spec"]["router"]["metrics"] = "envoy"
    assert [p for p, _ in problems(doc)] == [
        "spec.router.metrics",
        "spec.analysis.metrics[0].template",
        "spec.analysis.metrics[1].template",
    ]
    doc["spec"]["router"]["metrics"] = "traefik"
    assert problems(doc) == []
    custom = copy.deepcopy(doc)  # a query of one's own needs no template
    del custom["spec"]["router"]["metrics"]
    custom["spec"]["analysis"]["metrics"] = [
        {
            "name": "errors",
            "judge": "threshold",
            "max": 0.01,
            "query": "sum(rate(my_errors_total[{{window}}]))",
        }
    ]
    assert problems(custom) == []
    assert set(templates.ROUTERS) == {"traefik", "istio", "nginx", "haproxy"}  # the modules declaring METRICS


def test_bluegreen_analysis_a_preview_under_analysis_needs_traffic() -> None:
    doc = _doc()
    doc["spec"]["router"]["metrics"] = "traefik"
    [(path, message)] = problems(doc)
    assert path == "spec.stages[0].bluegreen.analysis" and "add previewTraffic" in message
    doc["spec"]["stages"][0]["bluegreen"]["analysis"] = False
    assert problems(doc) == []  # a blue-green switch without analysis is fine
    doc["spec"]["stages"][0]["bluegreen"] = {"preview": "5m", "previewTraffic": {"header": "X-Shop-Preview"}}
    assert problems(doc) == []  # a header route a test client uses: traffic without a load test
    open_ended = _doc()
    open_ended["spec"]["router"] = {"provider": "haproxy", "backend": "shop"}
    open_ended["spec"]["stages"][0]["bluegreen"] = {
        "preview": 0,
        "previewTraffic": {"loadTest": {"url": "http://x/"}},
    }
    assert [p for p, _ in problems(open_ended)] == [
        "spec.stages[0].bluegreen.previewTraffic.loadTest.duration"
    ]


def test_bluegreen_analysis_preview_traffic_parses_and_round_trips() -> None:
    doc = _doc()
    doc["spec"]["router"]["metrics"] = "traefik"
    doc["spec"]["stages"][0]["bluegreen"]["previewTraffic"] = {
        "header": "X-Graylane-Preview",
        "loadTest": {"url": "http://shop.web.example.com/", "rps": 25, "duration": "4m"},
    }
    policy = parse_policy(doc)
    stage = policy.stages[0]
    assert isinstance(stage, BlueGreenStage)
    assert stage.preview_traffic == PreviewTraffic(
        header="x-graylane-preview",
        load_test=LoadTest(url="http://shop.web.example.com/", rps=25, duration=240.0, image=LOAD_TEST_IMAGE),
    )
    assert parse_policy(to_doc(policy)) == policy
    bad = copy.deepcopy(doc)
    bad["spec"]["stages"][0]["bluegreen"]["previewTraffic"] = {
        "loadTest": {"url": "ftp://x", "rps": 0},
        "x": 1,
    }
    assert sorted(p for p, _ in problems(bad)) == [
        "spec.stages[0].bluegreen.previewTraffic.loadTest.rps",
        "spec.stages[0].bluegreen.previewTraffic.loadTest.url",
        "spec.stages[0].bluegreen.previewTraffic.x",
    ]


# -- the machine --------------------------------------------------------------------------------------------


def _bluegreen(load: bool = True) -> Driver:
    traffic = PreviewTraffic(load_test=LoadTest(url="http://shop.example.com/", rps=25) if load else None)
    policy = make_policy(
        BlueGreenStage(preview=300, preview_traffic=traffic), PromoteStage(), analysis=analysis()
    )
    d = Driver.with_stable(policy)
    d.push("v2")
    return d


def test_bluegreen_analysis_the_preview_gets_a_header_route_and_a_load_test() -> None:
    d = _bluegreen()
    effects = d.last.effects if d.last else ()
    # the route is in place before the load
    assert kinds(effects) == ["deploy-canary", "scale-canary", "set-routes", "load-test"]
    route = effects[2].routes
    assert route == RoutePlan(100, 0, (Match(kind="header", name="x-graylane-preview", value="web-1"),))
    load = effects[3]
    assert load.job == "web-1-preview" and load.image == LOAD_TEST_IMAGE
    assert load.command == (
        "-z",
        "300s",
        "-c",
        "3",
        "-q",
        "8.33333",
        "-H",
        "x-graylane-preview: web-1",
        "http://shop.example.com/",
    )
    assert d.rel.analysing and d.state.history[-1].action == "load-test"
    d.tick(15, PASS)
    d.tick(300, PASS)  # the preview is over and its latest verdict passed: the switch, then the promotion
    routes = [e.routes for e in d.last.effects if e.kind == "set-routes"]  # type: ignore[union-attr]
    assert routes[0] is not None and routes[0].canary == 100  # every user on green at once
    assert d.rel.phase == Phase.SUCCEEDED and d.state.routes == RoutePlan()  # promoted: no rule left behind


def test_bluegreen_analysis_a_header_route_alone_waits_for_a_test_client() -> None:
    d = _bluegreen(load=False)
    assert kinds(d.last.effects) == ["deploy-canary", "scale-canary", "set-routes"]  # type: ignore[union-attr]
    assert d.state.routes.match == (Match(kind="header", name="x-graylane-preview", value="web-1"),)


def test_bluegreen_analysis_the_runner_starts_the_load_test_once(tmp_path: Path) -> None:
    traffic = PreviewTraffic(load_test=LoadTest(url="http://shop.example.com/", rps=5, duration=60))
    from tests.support import canary_policy

    policy = canary_policy(stages=(BlueGreenStage(preview=120, preview_traffic=traffic), PromoteStage()))
    providers = RecordingProviders(
        lambda p, r: (MetricSample(name="success-rate", value=1.0, canary_requests=300),)
    )
    clock = Clock()
    runner = Runner(MemoryStore(), StaticPolicies([policy]), providers, clock=clock)
    runner.handle(push(policy.app, "v1"))
    runner.handle(push(policy.app, "v2"))
    for _ in range(3):
        clock.advance(10)
        runner.handle(tick())
    started = [c for c in providers.log.calls if c[0] == "start_load_test"]
    assert started == [
        (
            "start_load_test",
            "/prod/web-1-preview",
            (
                "-z",
                "60s",
                "-c",
                "1",
                "-q",
                "5",
                "-H",
                "x-graylane-preview: web-1",
                "http://shop.example.com/",
            ),
        )
    ]
    verbs = providers.log.verbs()
    assert verbs.index("set_routes") < verbs.index("start_load_test")


def test_bluegreen_analysis_the_kubernetes_load_test_is_a_job_running_hey() -> None:
    target = WorkloadTarget(namespace="web", app="shop", stable="shop-blue", canary="shop-green")
    job = load_test_job(
        target, "shop-3-preview", LOAD_TEST_IMAGE, ("-z", "300s", "-c", "2", "-q", "10", "http://x/")
    )
    assert job["metadata"] == {
        "name": "shop-3-preview",
        "namespace": "web",
        "labels": {
            "graylane.dev/app": "shop",
            "graylane.dev/job": "shop-3-preview",
            "app.kubernetes.io/managed-by": "graylane",
        },
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 3600  # never twice the load
    [container] = spec["template"]["spec"]["containers"]
    assert container["image"] == LOAD_TEST_IMAGE and container["args"] == [
        "-z",
        "300s",
        "-c",
        "2",
        "-q",
        "10",
        "http://x/",
    ]
    assert "command" not in container  # the image's entrypoint is hey
    assert spec["template"]["metadata"]["labels"] == {
        "graylane.dev/app": "shop",
        "graylane.dev/job": "shop-3-preview",
    }
