"""Policy YAML -> Policy: the examples, every validation rule with its exact path, and robustness."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.core.policy import (
    ABTestStage,
    ApprovalStage,
    CanaryStage,
    CanaryStep,
    FlagStage,
    Match,
    PromoteStage,
    ProtectStage,
    RollbackMode,
)
from functions.core.policy_parse import circuit_breaker_error, parse_duration, parse_policy, problems, to_doc
from functions.errors import PolicyError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "infra" / "examples").glob("*.yaml"))


def base(**spec: Any) -> dict[str, Any]:
    """A small valid policy; keyword arguments replace spec keys (None deletes one)."""
    doc: dict[str, Any] = {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "flask", "namespace": "pro"},
        "spec": {
            "image": {"repository": "registry.example.com/team/flask"},
            "router": {"provider": "recording"},
            "analysis": {"metrics": [{"name": "sr", "template": "success-rate", "min": 0.9}]},
            "stages": [{"canary": {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 50}]}}],
        },
    }
    for key, value in spec.items():
        if value is None:
            del doc["spec"][key]
        else:
            doc["spec"][key] = value
    return doc


def with_stages(*stages: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return base(stages=list(stages), **spec)


def only(doc: Any) -> tuple[str, str]:
    """The single problem of doc (failing with the whole list otherwise)."""
    found = problems(doc)
    assert len(found) == 1, found
    return found[0]


# --- the examples ----------------------------------------------------------------------------------


def test_there_is_one_example_per_scenario() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "traefik-pipeline.yaml",
        "argo-canary-analysis.yaml",
        "istio-bookinfo.yaml",
        "bluegreen.yaml",
        "gray-user-id.yaml",
        "waves.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_and_round_trips(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs
    for doc in docs:
        policy = parse_policy(doc, str(path))
        again = parse_policy(yaml.safe_load(yaml.safe_dump(to_doc(policy))))
        assert again == policy
        assert isinstance(policy.stages[-1], PromoteStage | ProtectStage | FlagStage)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_names_its_seed(path: Path) -> None:
    assert path.read_text().startswith("# Seed ")


def test_traefik_pipeline_follows_the_seed() -> None:
    policy = parse_policy(yaml.safe_load((EXAMPLES[0].parent / "traefik-pipeline.yaml").read_text()))
    kinds = [s.kind for s in policy.stages]
    assert kinds == ["preview", "approval", "abtest", "approval", "canary", "approval", "promote", "protect"]
    assert policy.app == "pro/flask"
    assert policy.router.provider == "traefik"
    assert policy.router.options["ingressRoute"] == "k8s-flask-pro"
    assert policy.router.options["host"] == "pro.coding"
    assert (policy.stable_workload, policy.canary_workload) == ("k8s-flask", "k8s-flask-canary")
    preview, ab_gate, abtest, weight_gate, canary, promote_gate, _, protect = policy.stages
    assert preview.migration is not None and preview.migration.name == "migrate-db"  # type: ignore[union-attr]
    assert isinstance(ab_gate, ApprovalStage) and ab_gate.name == "ab-test"
    assert isinstance(abtest, ABTestStage) and abtest.match == (
        Match("header", name="location", value="shenzhen"),
    )
    assert isinstance(weight_gate, ApprovalStage) and weight_gate.params[0].default == 50
    assert isinstance(canary, CanaryStage) and (canary.mode, canary.weight_param) == ("manual", "weight")
    assert isinstance(promote_gate, ApprovalStage) and promote_gate.name == "promote"
    assert isinstance(protect, ProtectStage)
    assert protect.rate_limit is not None and (protect.rate_limit.average, protect.rate_limit.burst) == (
        500,
        1000,
    )
    assert protect.circuit_breaker is not None
    assert protect.circuit_breaker.expression == "LatencyAtQuantileMS(50.0) > 100"


def test_argo_example_follows_the_seed() -> None:
    policy = parse_policy(yaml.safe_load((EXAMPLES[0].parent / "argo-canary-analysis.yaml").read_text()))
    canary = policy.stages[0]
    assert isinstance(canary, CanaryStage)
    assert canary.steps == tuple(CanaryStep(w, 120.0) for w in (20, 40, 60, 80))
    assert policy.analysis is not None
    assert (policy.analysis.start_step, policy.analysis.interval, policy.analysis.failure_limit) == (
        2,
        10.0,
        3,
    )
    assert policy.analysis.metrics[0].min == 0.9
    assert policy.router.provider == "nginx" and policy.router.options["stableIngress"] == "canary-demo"


# --- shapes and defaults ---------------------------------------------------------------------------


def test_defaults() -> None:
    policy = parse_policy(base())
    assert policy.rollback is RollbackMode.ROLLBACK
    assert policy.revision_history == 10
    assert policy.workload.kind == "Deployment"
    assert policy.stages[-1] == PromoteStage()  # implicit
    canary = policy.stages[0]
    assert isinstance(canary, CanaryStage) and canary.mode == "steps" and canary.analysis is True
    assert canary.steps == (CanaryStep(20, 60.0), CanaryStep(50, None))


def test_namespace_defaults_to_default() -> None:
    doc = base()
    del doc["metadata"]["namespace"]
    assert parse_policy(doc).app == "default/flask"


def test_stage_analysis_defaults_to_whether_spec_has_analysis() -> None:
    without = parse_policy(base(analysis=None)).stages[0]
    assert isinstance(without, CanaryStage) and without.analysis is False
    opted_out = parse_policy(with_stages({"canary": {"steps": [{"weight": 5}], "analysis": False}})).stages[0]
    assert isinstance(opted_out, CanaryStage) and opted_out.analysis is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        (90, 90.0),
        (1.5, 1.5),
        ("45", 45.0),
        ("0", 0.0),
        ("1m30s", 90.0),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1x",
        "-1s",
        -1,
        "1.5.2s",
        True,
        None,
        [],
        "m",
        "10 s",
        float("nan"),
        float("inf"),
        10**400,
        "9" * 400,
    ],
)
def test_parse_duration_rejects(text: Any) -> None:
    assert parse_duration(text) is None


def test_canary_modes_are_inferred() -> None:
    doc = with_stages(
        {"approval": {"name": "w", "params": [{"name": "weight", "default": 50}]}},
        {"canary": {"weightParam": "weight", "hold": "30s"}},
        {"canary": {"weight": 40}},
        {"canary": {"linear": {"start": 10, "end": 90, "increment": 10, "every": "1m"}}},
        {"canary": {"mode": "manual", "weight": 50}},
    )
    modes = [(s.mode, s.weight, s.hold) for s in parse_policy(doc).stages if isinstance(s, CanaryStage)]
    assert modes == [("manual", None, 30.0), ("manual", 40, 0.0), ("linear", None, 0.0), ("manual", 50, 0.0)]


def test_match_forms() -> None:
    doc = with_stages(
        {
            "abtest": {
                "match": [
                    {"header": "location", "value": "shenzhen"},
                    {"header": "x-beta", "regex": "yes|true"},
                    {"cookie": "canary", "value": "always"},
                    {"userIdDigit": {"header": "x-user-id", "digits": [1, 3, 5, 7, 9]}},
                    {"userHash": {"header": "x-user-id", "percent": 20, "salt": "s1"}},
                    {"sourceIp": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]},
                ]
            }
        }
    )
    stage = parse_policy(doc).stages[0]
    assert isinstance(stage, ABTestStage)
    assert stage.match == (
        Match("header", name="location", value="shenzhen"),
        Match("header", name="x-beta", regex="yes|true"),
        Match("cookie", name="canary", value="always"),
        Match("user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
        Match("user-hash", name="x-user-id", percent=20, salt="s1"),
        Match("source-ip", cidrs=("10.0.0.0/8", "192.168.1.7", "2001:db8::/32")),
    )


def test_router_options_keep_everything_but_the_provider() -> None:
    policy = parse_policy(
        base(router={"provider": "istio", "virtualService": "reviews", "gateways": ["mesh", "bookinfo"]})
    )
    assert policy.router.provider == "istio"
    assert policy.router.options == {"virtualService": "reviews", "gateways": ["mesh", "bookinfo"]}


# --- stage order and the implicit promote ----------------------------------------------------------


def test_implicit_promote_goes_after_trailing_gates_and_before_protect() -> None:
    doc = with_stages(
        {"canary": {"steps": [{"weight": 50}]}},
        {"approval": {"name": "promote"}},
        {"protect": {"rateLimit": {"average": 10}}},
    )
    assert [s.kind for s in parse_policy(doc).stages] == ["canary", "approval", "promote", "protect"]


def test_implicit_promote_goes_last_without_protect() -> None:
    doc = with_stages({"abtest": {"match": [{"header": "a", "value": "b"}]}}, {"approval": {"name": "go"}})
    assert [s.kind for s in parse_policy(doc).stages] == ["abtest", "approval", "promote"]


def test_explicit_promote_is_not_duplicated() -> None:
    doc = with_stages(
        {"bluegreen": {"preview": "1m", "analysis": False}}, {"promote": {"keepPrevious": "10m"}}
    )
    assert [s.kind for s in parse_policy(doc).stages] == ["bluegreen", "promote"]
    assert parse_policy(doc).stages[1] == PromoteStage(keep_previous=600.0)


def test_rate_limit_burst_defaults_to_average() -> None:
    stage = parse_policy(with_stages({"protect": {"rateLimit": {"average": 7}}})).stages[-1]
    assert isinstance(stage, ProtectStage) and stage.rate_limit is not None
    assert (stage.rate_limit.average, stage.rate_limit.burst, stage.rate_limit.period) == (7, 7, 1.0)


# --- one test per rule, each asserting the exact path ----------------------------------------------


def test_weight_out_of_range() -> None:
    doc = with_stages({"canary": {"steps": [{"weight": 10}, {"weight": 150}]}})
    assert only(doc) == (
        "spec.stages[0].canary.steps[1].weight",
        "150 is not allowed; expected an integer 0..100",
    )


def test_unknown_key_lists_the_allowed_keys() -> None:
    doc = with_stages({"canary": {"steps": [{"weight": 10, "wait": "1m"}]}})
    path, message = only(doc)
    assert path == "spec.stages[0].canary.steps[0].wait"
    assert message == "unknown key; allowed keys: weight, pause"


def test_all_problems_are_collected() -> None:
    doc = with_stages(
        {"canary": {"steps": [{"weight": 101}, {"weight": -1}, {"weight": "x"}]}}, rollback="nope"
    )
    paths = [p for p, _ in problems(doc)]
    assert paths == [
        "spec.stages[0].canary.steps[0].weight",
        "spec.stages[0].canary.steps[1].weight",
        "spec.stages[0].canary.steps[2].weight",
        "spec.rollback",
    ]


def test_parse_policy_raises_one_error_with_every_problem_and_the_source() -> None:
    doc = base(rollback="nope", revisionHistory=-1)
    with pytest.raises(PolicyError) as caught:
        parse_policy(doc, "policies/flask.yaml")
    assert caught.value.source == "policies/flask.yaml"
    assert [p for p, _ in caught.value.problems] == ["spec.rollback", "spec.revisionHistory"]
    assert str(caught.value).startswith('policies/flask.yaml: spec.rollback: "nope" is not allowed')


def test_header_regex_must_compile() -> None:
    path, message = only(with_stages({"abtest": {"match": [{"header": "h", "regex": "(["}]}}))
    assert path == "spec.stages[0].abtest.match[0].regex"
    assert message.startswith('"([" is not allowed; expected a valid regular expression')


def test_header_needs_value_or_regex() -> None:
    assert only(with_stages({"abtest": {"match": [{"header": "h"}]}}))[0] == "spec.stages[0].abtest.match[0]"
    both = with_stages({"abtest": {"match": [{"cookie": "c", "value": "v", "regex": "v"}]}})
    assert only(both) == (
        "spec.stages[0].abtest.match[0]",
        "expected exactly one of value or regex for the cookie",
    )


def test_match_needs_exactly_one_form() -> None:
    path, message = only(with_stages({"abtest": {"match": [{"header": "h", "cookie": "c", "value": "v"}]}}))
    assert path == "spec.stages[0].abtest.match[0]"
    assert "found header, cookie" in message


def test_cidr_must_parse() -> None:
    path, message = only(with_stages({"abtest": {"match": [{"sourceIp": ["10.0.0.0/8", "10.0.0.1/8"]}]}}))
    assert path == "spec.stages[0].abtest.match[0].sourceIp[1]"
    assert "has host bits set" in message


@pytest.mark.parametrize("digits", [[1, 1], [10], [], [-1], ["1"], [True]])
def test_digits_are_unique_0_to_9(digits: list[Any]) -> None:
    doc = with_stages({"abtest": {"match": [{"userIdDigit": {"header": "x-user-id", "digits": digits}}]}})
    path, message = only(doc)
    assert path == "spec.stages[0].abtest.match[0].userIdDigit.digits"
    assert message.endswith("expected a non-empty list of unique digits 0..9")


@pytest.mark.parametrize("percent", [0, 100, 20.5, "20"])
def test_user_hash_percent_1_to_99(percent: Any) -> None:
    doc = with_stages({"abtest": {"match": [{"userHash": {"header": "x-user-id", "percent": percent}}]}})
    assert only(doc)[0] == "spec.stages[0].abtest.match[0].userHash.percent"


def test_pause_must_not_be_negative() -> None:
    path, message = only(with_stages({"canary": {"steps": [{"weight": 10, "pause": "-1s"}]}}))
    assert path == "spec.stages[0].canary.steps[0].pause"
    assert message.startswith('"-1s" is not allowed; expected a duration')


def test_steps_must_not_be_empty() -> None:
    assert only(with_stages({"canary": {"steps": []}})) == (
        "spec.stages[0].canary.steps",
        "[] is not allowed; expected a non-empty list",
    )


def test_linear_start_below_end_and_positive_increment() -> None:
    doc = with_stages({"canary": {"linear": {"start": 50, "end": 50, "increment": 0, "every": "1m"}}})
    assert [p for p, _ in problems(doc)] == [
        "spec.stages[0].canary.linear.end",
        "spec.stages[0].canary.linear.increment",
    ]


def test_canary_keys_of_another_mode_are_rejected() -> None:
    path, message = only(with_stages({"canary": {"mode": "steps", "steps": [{"weight": 5}], "hold": "1m"}}))
    assert path == "spec.stages[0].canary.hold"
    assert message == "is not allowed with mode steps; expected only steps"


def test_gate_names_are_unique() -> None:
    doc = with_stages(
        {"approval": {"name": "go"}}, {"canary": {"steps": [{"weight": 5}]}}, {"approval": {"name": "go"}}
    )
    path, message = only(doc)
    assert path == "spec.stages[2].approval.name"
    assert "spec.stages[0].approval uses it" in message


@pytest.mark.parametrize("name", ["Go", "go_now", "-go", "a" * 64, ""])
def test_gate_names_are_dns_labels(name: str) -> None:
    assert only(with_stages({"approval": {"name": name}}))[0] == "spec.stages[0].approval.name"


def test_approvers_gates_name_existing_gates() -> None:
    doc = with_stages(
        {"approval": {"name": "promote"}},
        approvers={"gates": {"promote": {"users": ["a"]}, "promot": {"users": ["b"]}}},
    )
    assert only(doc) == (
        "spec.approvers.gates.promot",
        '"promot" is not allowed; expected the name of an approval gate (promote)',
    )


def test_approvers_gates_accept_wave_gates() -> None:
    doc = base(waves=[{"name": "eu", "approval": True}], approvers={"gates": {"wave-eu": {"users": ["a"]}}})
    assert problems(doc) == []


def test_approvers_actions_are_command_actions() -> None:
    doc = base(approvers={"actions": {"rollback": {"users": ["a"]}, "deploy": {"users": ["b"]}}})
    path, message = only(doc)
    assert path == "spec.approvers.actions.deploy"
    assert "approve, reject, weight, promote, pause, resume, abort, rollback" in message


def test_manual_canary_needs_an_earlier_weight_param() -> None:
    later = with_stages(
        {"canary": {"weightParam": "ratio"}}, {"approval": {"name": "g", "params": [{"name": "ratio"}]}}
    )
    assert only(later) == (
        "spec.stages[0].canary.weightParam",
        '"ratio" is not allowed; expected a parameter declared by an earlier approval gate '
        "(declared so far: none), or set weight",
    )
    earlier = with_stages(
        {"approval": {"name": "g", "params": [{"name": "ratio"}]}}, {"canary": {"weightParam": "ratio"}}
    )
    assert problems(earlier) == []
    fixed = with_stages({"canary": {"mode": "manual", "weight": 30}})
    assert problems(fixed) == []


def test_weight_param_range_must_fit_a_weight() -> None:
    doc = with_stages(
        {"approval": {"name": "g", "params": [{"name": "weight", "max": 200}]}},
        {"canary": {"weightParam": "weight"}},
    )
    assert only(doc)[0] == "spec.stages[1].canary.weightParam"


def test_gate_param_default_within_min_max() -> None:
    doc = with_stages({"approval": {"name": "g", "params": [{"name": "weight", "default": 0, "min": 1}]}})
    assert only(doc) == (
        "spec.stages[0].approval.params[0].default",
        "0 is not allowed; expected an integer 1..100",
    )


def test_at_most_one_promote() -> None:
    path, message = only(with_stages({"promote": {}}, {"promote": {}}))
    assert path == "spec.stages[1].promote"
    assert "at most one promote stage" in message


def test_promote_comes_after_every_traffic_stage() -> None:
    path, message = only(with_stages({"promote": {}}, {"bluegreen": {"analysis": False}}))
    assert path == "spec.stages[1].bluegreen"
    assert "after the promote stage spec.stages[0].promote" in message


def test_protect_only_after_promote() -> None:
    doc = with_stages({"protect": {"rateLimit": {"average": 1}}}, {"promote": {}})
    assert only(doc)[0] == "spec.stages[0].protect"
    implicit = with_stages({"protect": {"rateLimit": {"average": 1}}}, {"canary": {"steps": [{"weight": 1}]}})
    path, message = only(implicit)
    assert path == "spec.stages[1].canary"
    assert "expected protect stages last" in message


def test_protect_needs_rate_limit_or_circuit_breaker() -> None:
    assert only(with_stages({"protect": {}})) == (
        "spec.stages[0].protect",
        "expected rateLimit, circuitBreaker or both",
    )


def test_stage_analysis_requires_spec_analysis() -> None:
    doc = with_stages({"abtest": {"match": [{"header": "a", "value": "b"}], "analysis": True}}, analysis=None)
    assert only(doc) == (
        "spec.stages[0].abtest.analysis",
        "true is not allowed; expected false or absent because spec.analysis is not set",
    )


def test_metric_needs_exactly_one_of_template_or_query() -> None:
    both = base(analysis={"metrics": [{"name": "m", "template": "latency", "query": "up", "max": 1}]})
    neither = base(analysis={"metrics": [{"name": "m", "max": 1}]})
    for doc in (both, neither):
        assert only(doc) == (
            "spec.analysis.metrics[0]",
            "expected exactly one of template (success-rate, error-rate, latency) or query",
        )


def test_metric_template_is_known() -> None:
    path, message = only(base(analysis={"metrics": [{"name": "m", "template": "p99", "max": 1}]}))
    assert path == "spec.analysis.metrics[0].template"
    assert message == '"p99" is not allowed; expected one of success-rate, error-rate, latency'


def test_threshold_judge_needs_min_or_max() -> None:
    assert only(base(analysis={"metrics": [{"name": "m", "template": "success-rate"}]})) == (
        "spec.analysis.metrics[0]",
        "a threshold judge needs min or max",
    )


def test_latency_judge_is_sequential_by_default_and_needs_a_histogram() -> None:
    (metric,) = parse_policy(
        base(analysis={"metrics": [{"name": "m", "template": "latency"}]})
    ).analysis.metrics
    assert metric.judge == "sequential"
    bounded = parse_policy(base(analysis={"metrics": [{"name": "m", "template": "latency", "max": 500}]}))
    assert bounded.analysis.metrics[0].judge == "threshold"  # a bound still means a threshold on the p95
    haproxy = base(analysis={"metrics": [{"name": "m", "template": "latency"}]})
    haproxy["spec"]["router"] = {"provider": "haproxy", "backend": "be_app"}
    path, message = only(haproxy)
    assert path == "spec.analysis.metrics[0].judge" and "exports averages only" in message


def test_guard_and_exposure_settings() -> None:
    analysis = parse_policy(
        base(
            analysis={
                "metrics": [{"name": "m", "template": "latency"}],
                "guard": False,
                "exposureBudget": 0,
                "probeWeight": 2,
            }
        )
    ).analysis
    assert (analysis.guard, analysis.exposure_budget, analysis.probe_weight) == (False, 0.0, 2)
    defaults = parse_policy(base(analysis={"metrics": [{"name": "m", "template": "latency"}]})).analysis
    assert defaults.guard and defaults.exposure_budget > 0 and 1 <= defaults.probe_weight <= 5
    bad = base(analysis={"metrics": [{"name": "m", "template": "latency"}], "probeWeight": 0})
    assert only(bad)[0] == "spec.analysis.probeWeight"


def test_metric_names_are_unique() -> None:
    m = {"name": "m", "template": "latency", "max": 1}
    assert only(base(analysis={"metrics": [m, m]}))[0] == "spec.analysis.metrics[1].name"


def test_sequential_judge_needs_counts() -> None:
    doc = base(analysis={"metrics": [{"name": "m", "query": "up", "judge": "sequential"}]})
    assert only(doc)[0] == "spec.analysis.metrics[0].judge"


def test_rate_limit_average_positive_and_burst_at_least_average() -> None:
    doc = with_stages({"protect": {"rateLimit": {"average": 500, "burst": 100}}})
    assert only(doc) == (
        "spec.stages[0].protect.rateLimit.burst",
        "100 is not allowed; expected an integer >= 500",
    )
    zero = with_stages({"protect": {"rateLimit": {"average": 0}}})
    assert only(zero)[0] == "spec.stages[0].protect.rateLimit.average"


def test_circuit_breaker_grammar_error_names_the_position() -> None:
    doc = with_stages({"protect": {"circuitBreaker": {"expression": "LatencyAtQuantileMS(50.0) >> 100"}}})
    path, message = only(doc)
    assert path == "spec.stages[0].protect.circuitBreaker.expression"
    assert "at position 27" in message
    assert "NetworkErrorRatio()" in message


@pytest.mark.parametrize(
    "expression",
    [
        "NetworkErrorRatio() > 0.30",
        "LatencyAtQuantileMS(50.0) > 100",
        "ResponseCodeRatio(500, 600, 0, 600) > 0.25",
        "NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(99) >= 2000",
        "(NetworkErrorRatio() > 0.5 && ResponseCodeRatio(500,600,0,600) != 0) || LatencyAtQuantileMS(50) == 1",
        "  LatencyAtQuantileMS(50.0)<100  ",
    ],
)
def test_circuit_breaker_accepts(expression: str) -> None:
    assert circuit_breaker_error(expression) is None


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "expected a function name, found end of expression at position 0"),
        ("Latency() > 1", "unknown function 'Latency' at position 0"),
        ("NetworkErrorRatio(1) > 0.1", "NetworkErrorRatio takes 0 argument(s), got 1 at position 0"),
        ("ResponseCodeRatio(500, 600) > 0.1", "takes 4 argument(s), got 2"),
        ("LatencyAtQuantileMS(150) > 1", "quantile 150 is outside 0..100"),
        (
            "NetworkErrorRatio()",
            "expected a comparison operator (> < >= <= == !=), found end of expression at position 19",
        ),
        ("NetworkErrorRatio() > ", "expected a number, found end of expression"),
        ("NetworkErrorRatio() > 0.1 &&", "expected a function name, found end of expression at position 28"),
        ("NetworkErrorRatio() > 0.1 and", "found 'and' at position 26"),
        ("NetworkErrorRatio() > 0.1 $", "unexpected '$' at position 26"),
        ("(NetworkErrorRatio() > 0.1", "expected ), found end of expression at position 26"),
        ("0.3 < NetworkErrorRatio()", "expected a function name, found '0.3' at position 0"),
    ],
)
def test_circuit_breaker_rejects_with_position(expression: str, fragment: str) -> None:
    error = circuit_breaker_error(expression)
    assert error is not None and fragment in error


def test_router_provider_is_known() -> None:
    path, message = only(base(router={"provider": "envoy"}))
    assert path == "spec.router.provider"
    assert (
        message
        == '"envoy" is not allowed; expected one of traefik, istio, gateway-api, nginx, haproxy, recording'
    )


def test_wave_names_are_unique() -> None:
    doc = base(waves=[{"name": "dc1"}, {"name": "dc2"}, {"name": "dc1", "approval": True}])
    assert only(doc)[0] == "spec.waves[2].name"


def test_image_tags_and_semver_must_parse() -> None:
    doc = base(image={"repository": "r.example.com/app", "tags": "v(", "semver": ">=one"})
    assert [p for p, _ in problems(doc)] == ["spec.image.tags", "spec.image.semver"]


def test_image_repository_carries_no_tag() -> None:
    assert only(base(image={"repository": "r.example.com/app:v1"}))[0] == "spec.image.repository"
    assert problems(base(image={"repository": "localhost:5000/app"})) == []


@pytest.mark.parametrize(("key", "value"), [("apiVersion", "graylane.dev/v1"), ("kind", "Rollout")])
def test_api_version_and_kind(key: str, value: str) -> None:
    doc = base()
    doc[key] = value
    assert only(doc)[0] == key


def test_metadata_name_is_a_dns_label() -> None:
    doc = base()
    doc["metadata"]["name"] = "Flask_App"
    assert only(doc)[0] == "metadata.name"


# --- a table of bad documents ----------------------------------------------------------------------


def _set(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node: Any = doc
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return doc


BAD = [
    ("spec.revisionHistory", True, "spec.revisionHistory"),
    ("spec.revisionHistory", 101, "spec.revisionHistory"),
    ("spec.rollback", "undo", "spec.rollback"),
    ("spec.workload", {"kind": "StatefulSet"}, "spec.workload.kind"),
    ("spec.workload", {"name": "a", "canary": "a"}, "spec.workload.canary"),
    ("spec.workload", {"replicas": -1}, "spec.workload.replicas"),
    ("spec.workload", {"container": "Web"}, "spec.workload.container"),
    ("spec.analysis.interval", "0s", "spec.analysis.interval"),
    ("spec.analysis.window", "soon", "spec.analysis.window"),
    ("spec.analysis.startStep", 0, "spec.analysis.startStep"),
    ("spec.analysis.failureLimit", 0, "spec.analysis.failureLimit"),
    ("spec.analysis.inconclusiveLimit", 1.5, "spec.analysis.inconclusiveLimit"),
    ("spec.analysis.minRequests", -5, "spec.analysis.minRequests"),
    ("spec.analysis.alpha", 1, "spec.analysis.alpha"),
    ("spec.analysis.alpha", float("nan"), "spec.analysis.alpha"),
    ("spec.analysis.prometheus", "prometheus:9090", "spec.analysis.prometheus"),
    ("spec.analysis.metrics", [], "spec.analysis.metrics"),
    ("spec.analysis.metrics.0.judge", "vibes", "spec.analysis.metrics.0.judge"),
    ("spec.analysis.metrics.0.max", 0.5, "spec.analysis.metrics.0.min"),
    ("spec.analysis.metrics.0.tolerance", 0.1, "spec.analysis.metrics.0.tolerance"),
    ("spec.stages", [], "spec.stages"),
    ("spec.stages", "canary", "spec.stages"),
    ("spec.stages.0", {"canary": {}, "promote": {}}, "spec.stages.0"),
    ("spec.stages.0", {"rollout": {}}, "spec.stages.0.rollout"),
    ("spec.stages.0", {"approval": {"name": "g", "timeout": "0s"}}, "spec.stages.0.approval.timeout"),
    ("spec.stages.0", {"approval": {"name": "g", "onTimeout": "ignore"}}, "spec.stages.0.approval.onTimeout"),
    (
        "spec.stages.0",
        {"approval": {"name": "g", "params": [{"name": "1x"}]}},
        "spec.stages.0.approval.params.0.name",
    ),
    (
        "spec.stages.0",
        {"approval": {"name": "g", "params": [{"name": "a"}, {"name": "a"}]}},
        "spec.stages.0.approval.params.1.name",
    ),
    ("spec.stages.0", {"abtest": {"match": []}}, "spec.stages.0.abtest.match"),
    (
        "spec.stages.0",
        {"abtest": {"match": [{"header": "a b", "value": "v"}]}},
        "spec.stages.0.abtest.match.0.header",
    ),
    ("spec.stages.0", {"abtest": {"match": [{"sourceIp": []}]}}, "spec.stages.0.abtest.match.0.sourceIp"),
    (
        "spec.stages.0",
        {"abtest": {"match": [{"header": "a", "value": "b"}], "duration": "-1m"}},
        "spec.stages.0.abtest.duration",
    ),
    ("spec.stages.0", {"canary": {"mode": "random"}}, "spec.stages.0.canary.mode"),
    ("spec.stages.0", {"canary": {"mode": "linear"}}, "spec.stages.0.canary.linear"),
    ("spec.stages.0", {"canary": {"weight": 101}}, "spec.stages.0.canary.weight"),
    ("spec.stages.0", {"canary": {"weight": 1, "hold": "x"}}, "spec.stages.0.canary.hold"),
    (
        "spec.stages.0",
        {"canary": {"linear": {"start": 10, "end": 90, "increment": 10, "every": 0}}},
        "spec.stages.0.canary.linear.every",
    ),
    ("spec.stages.0", {"canary": {"linear": {"start": 10}}}, "spec.stages.0.canary.linear.end"),
    ("spec.stages.0", {"bluegreen": {"preview": "forever"}}, "spec.stages.0.bluegreen.preview"),
    ("spec.stages.0", {"promote": {"keepPrevious": "-5m"}}, "spec.stages.0.promote.keepPrevious"),
    (
        "spec.stages.0",
        {"protect": {"rateLimit": {"average": 1, "period": 0}}},
        "spec.stages.0.protect.rateLimit.period",
    ),
    ("spec.stages.0", {"preview": {"migration": {"command": ["x"]}}}, "spec.stages.0.preview.migration.name"),
    (
        "spec.stages.0",
        {"preview": {"migration": {"name": "m", "command": "flask db upgrade"}}},
        "spec.stages.0.preview.migration.command",
    ),
    ("spec.waves", [{"cluster": "x"}], "spec.waves.0.name"),
    ("spec.waves", [{"name": "a", "approval": "yes"}], "spec.waves.0.approval"),
    ("spec.protection", [{"alert": "A", "rateLimitFactor": 0}], "spec.protection.0.rateLimitFactor"),
    ("spec.protection", [{"alert": "A", "floor": 0}], "spec.protection.0.floor"),
    ("spec.protection", [{"alert": "A", "match": {"severity": 1}}], "spec.protection.0.match"),
    (
        "spec.protection",
        [{"alert": "A", "circuitBreaker": {"expression": "x"}}],
        "spec.protection.0.circuitBreaker.expression",
    ),
    ("spec.protection", [{"alert": "A", "holdDown": "later"}], "spec.protection.0.holdDown"),
    ("spec.notify", [{"kind": "irc", "url": "https://x"}], "spec.notify.0.kind"),
    ("spec.notify", [{"kind": "slack", "url": "ftp://x"}], "spec.notify.0.url"),
    ("spec.approvers", {"default": {"users": "alice"}}, "spec.approvers.default.users"),
    ("spec.approvers", {"owners": {}}, "spec.approvers.owners"),
    ("spec.router", {"provider": "traefik", "bad key": 1}, "spec.router.bad key"),
    ("spec.router", "traefik", "spec.router"),
    ("spec.image", {"repository": ""}, "spec.image.repository"),
    ("spec.extra", 1, "spec.extra"),
    ("metadata.namespace", "Pro", "metadata.namespace"),
    ("metadata.labels", {"a": "b"}, None),  # allowed, ignored
]


@pytest.mark.parametrize(("where", "value", "expected_path"), BAD, ids=[f"{w}={v!r}"[:60] for w, v, _ in BAD])
def test_bad_documents(where: str, value: Any, expected_path: str | None) -> None:
    doc = _set(base(), where, value)
    if expected_path is None:
        assert problems(doc) == []
        return
    dotted = expected_path.split(".")
    want = ".".join(f"[{k}]" if k.isdigit() else k for k in dotted).replace(".[", "[")
    found = problems(doc)
    assert found and found[0][0] == want, found
    with pytest.raises(PolicyError):
        parse_policy(doc)


# --- robustness and round trips --------------------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.just(10**400) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)
EXAMPLE_DOCS = [yaml.safe_load(p.read_text()) for p in EXAMPLES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLE_DOCS), st.data(), JUNK)
def test_a_mangled_policy_never_raises_anything_but_policy_error(
    doc: Any, data: st.DataObject, junk: Any
) -> None:
    doc = copy.deepcopy(doc)
    where = data.draw(st.sampled_from(_paths(doc)))
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = junk
    try:
        parse_policy(doc)
    except PolicyError as err:
        assert err.problems
        assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in err.problems)


@settings(max_examples=100, deadline=None)
@given(JUNK)
def test_any_document_gives_problems_not_tracebacks(doc: Any) -> None:
    assert problems(doc)


DURATION = st.sampled_from(["500ms", "10s", "2m", "1h30m", 0, 15, 2.5])
WEIGHT = st.integers(0, 100)
MATCH = st.one_of(
    st.builds(
        lambda n, v: {"header": n, "value": v},
        st.sampled_from(["location", "x-beta"]),
        st.text("abc", min_size=1),
    ),
    st.builds(lambda n: {"cookie": n, "regex": "^a.*"}, st.sampled_from(["canary", "beta"])),
    st.builds(
        lambda d: {"userIdDigit": {"header": "x-user-id", "digits": sorted(d)}},
        st.sets(st.integers(0, 9), min_size=1),
    ),
    st.builds(
        lambda p, s: {"userHash": {"header": "x-user-id", "percent": p, **({"salt": s} if s else {})}},
        st.integers(1, 99),
        st.sampled_from(["", "salt"]),
    ),
    st.builds(
        lambda c: {"sourceIp": c}, st.lists(st.sampled_from(["10.0.0.0/8", "192.168.0.1", "::1"]), min_size=1)
    ),
)
TRAFFIC = st.one_of(
    st.builds(
        lambda m, d: {"abtest": {"match": m, "duration": d}},
        st.lists(MATCH, min_size=1, max_size=3),
        DURATION,
    ),
    st.builds(
        lambda s: {"canary": {"steps": s}},
        st.lists(st.builds(lambda w, p: {"weight": w, "pause": p}, WEIGHT, st.none() | DURATION), min_size=1),
    ),
    st.builds(lambda w, h: {"canary": {"mode": "manual", "weight": w, "hold": h}}, WEIGHT, DURATION),
    st.builds(
        lambda a, n: {"canary": {"linear": {"start": a, "end": a + n, "increment": 5, "every": "1m"}}},
        st.integers(0, 50),
        st.integers(1, 50),
    ),
    st.builds(
        lambda p, a, t: {
            "bluegreen": {
                "preview": p,
                "analysis": a,
                **({"previewTraffic": t or {"header": "x-preview"}} if t or a else {}),
            }
        },
        DURATION,
        st.booleans(),
        st.sampled_from(
            [
                None,
                {"header": "X-Preview"},
                {
                    "loadTest": {
                        "url": "http://shop.example.com/",
                        "rps": 5,
                        "duration": "1m",
                        "image": "hey:1",
                    }
                },
            ]
        ),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(TRAFFIC, min_size=1, max_size=4), st.booleans(), st.booleans(), st.booleans())
def test_generated_policies_round_trip(traffic: list[Any], gate: bool, promote: bool, protect: bool) -> None:
    stages = [{"approval": {"name": f"gate-{i}"}} if gate else None for i in range(len(traffic))]
    listed = [s for pair in zip(stages, traffic, strict=True) for s in pair if s is not None]
    listed += [{"promote": {"keepPrevious": "1m"}}] if promote else []
    listed += (
        [{"protect": {"circuitBreaker": {"expression": "NetworkErrorRatio() > 0.5"}}}] if protect else []
    )
    policy = parse_policy(base(stages=listed))
    assert sum(isinstance(s, PromoteStage) for s in policy.stages) == 1
    assert parse_policy(to_doc(policy)) == policy
    assert parse_policy(yaml.safe_load(yaml.safe_dump(to_doc(policy)))) == policy


@pytest.mark.parametrize(
    ("canary", "path"), [({"weight": 101}, "weight"), ({"weightParam": "1bad"}, "weightParam")]
)
def test_a_bad_manual_weight_is_reported_once(canary: dict[str, Any], path: str) -> None:
    assert only(with_stages({"canary": canary}))[0] == f"spec.stages[0].canary.{path}"
