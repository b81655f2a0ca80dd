"""Feature-flag gray release (issue 14, item 1), the pure part: the flag stage in decide(), its policy syntax,
flagd's targeting and the byte-preserving document edit, and the buckets graylane predicts.

The flag documents read by the real flagd and the real OpenFeature SDK are in
tests/real/test_feature_flag_flagd.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from functions.core.effects import FlagPlan
from functions.core.gates import skipped_by_promote
from functions.core.policy import (
    Analysis,
    ApprovalStage,
    CanaryStep,
    FlagSource,
    FlagStage,
    GateParam,
    LinearSchedule,
    MetricCheck,
    PromoteStage,
)
from functions.core.policy_parse import parse_policy, problems, to_doc
from functions.core.state import Phase
from functions.core.targeting import flag_bucket, flag_variant
from functions.errors import ConfigError
from functions.providers.flags.flagd import live_plans, targeting, with_plan
from functions.providers.metrics import variants
from tests.unit.machine_helpers import FAIL, PASS, Driver, kinds, make_policy

FLAGS = FlagSource(file="/tmp/graylane-test-flags.json")
STEPS = (CanaryStep(5, 60.0), CanaryStep(25, 60.0), CanaryStep(50, 60.0), CanaryStep(100, 0.0))
ANALYSIS = Analysis(interval=10.0, metrics=(MetricCheck(name="error-rate", template="error-rate", max=0.05),))


def flag_policy(*stages: Any, **changes: Any) -> Any:
    return make_policy(
        *(stages or (PromoteStage(), FlagStage(key="new-checkout", steps=STEPS))),
        flags=FLAGS,
        **{"analysis": ANALYSIS, **changes},
    )


def flag_effects(effects: tuple[Any, ...]) -> list[int]:
    return [e.flag.percent for e in effects if e.kind == "set-flag"]


# -- decide() -----------------------------------------------------------------------------------------------


def test_feature_flag_stage_rolls_the_variant_out_step_by_step_under_analysis() -> None:
    d = Driver.with_stable(flag_policy())
    out = d.push("v2")
    # the code behind the flag is promoted first (dark), then the flag goes to 5 %
    assert kinds(out.effects)[0] == "promote-stable" and flag_effects(out.effects) == [5]
    assert kinds(out.effects).index("promote-stable") < kinds(out.effects).index("set-flag")
    plan = d.state.flags[0]
    assert (plan.key, plan.variant, plan.off, plan.percent, plan.salt, plan.release) == (
        "new-checkout",
        "on",
        "off",
        5,
        "web-1",
        "web-1",
    )  # the salt rule of userHash: the release id
    assert d.rel.weight == 5 and d.rel.analysing
    d.tick(60)  # the step's pause is over, but no verdict passed yet: it holds
    assert d.rel.weight == 5
    for expected in (25, 50, 100):
        d.tick(10, PASS)
        assert d.rel.weight == expected, d.state.history[-3:]
        d.tick(60)
    d.tick(10, PASS)
    assert d.rel.phase == Phase.SUCCEEDED and d.state.flags[0].percent == 100


def test_feature_flag_failed_analysis_turns_the_variant_off_first() -> None:
    d = Driver.with_stable(flag_policy())
    d.push("v2")
    d.tick(10, PASS)
    d.tick(60)
    assert d.rel.weight == 25
    out = d.tick(10, FAIL)
    assert d.rel.phase == Phase.ROLLED_BACK
    assert (
        out.effects[0].kind == "set-flag" and out.effects[0].flag.percent == 0
    )  # the first effect of the tick
    assert "promote-stable" in kinds(out.effects)[1:]  # then the image goes back too
    assert d.state.flags[0].percent == 0 and d.state.stable.version == "v1"


def test_feature_flag_manual_percentage_from_a_gate_and_the_weight_command() -> None:
    policy = flag_policy(
        ApprovalStage(name="flag", params=(GateParam(name="percent", default=10, min=1, max=100),)),
        FlagStage(key="new-checkout", mode="manual", weight_param="percent", hold=120.0),
    )
    d = Driver.with_stable(policy)
    d.push("v2")
    assert d.rel.phase == Phase.WAITING and d.rel.gate == "flag"
    d.command("approve", params={"percent": 30})
    assert d.state.flags[0].percent == 30 and d.rel.weight == 30
    out = d.command("weight", weight=40)  # ChatOps `weight pro/web 40` moves the flag, not a route
    assert flag_effects(out.effects) == [40] and d.rel.params["weight"] == 40
    d.tick(10, PASS)
    d.tick(120)
    assert d.rel.phase == Phase.SUCCEEDED and d.state.flags[0].percent == 40


def test_feature_flag_promote_command_serves_everyone_and_linear_schedules_grow() -> None:
    d = Driver.with_stable(
        flag_policy(
            PromoteStage(), FlagStage(key="k", linear=LinearSchedule(10, 40, 15, 30.0), mode="linear")
        )
    )
    d.push("v2")
    assert d.rel.weight == 10
    d.tick(10, PASS)
    d.tick(30)
    assert d.rel.weight == 25
    assert skipped_by_promote(d.policy.stages, d.rel) == ()  # the flag goes to everyone: no gate is skipped
    d.command("promote")
    assert d.state.flags[0].percent == 100 and d.rel.phase == Phase.SUCCEEDED
    assert not d.rel.gates


def test_feature_flag_already_rolled_out_is_not_rolled_out_again_but_a_rollback_turns_off_only_its_own() -> (
    None
):
    d = Driver.with_stable(flag_policy())
    d.push("v2")
    for _ in range(4):
        d.tick(10, PASS)
        d.tick(60)
    assert d.rel.phase == Phase.SUCCEEDED and d.state.flags[0].percent == 100
    out = d.push("v3")  # the flag is out: the next release does not take it back to 5 %
    assert flag_effects(out.effects) == [] and d.rel.phase == Phase.SUCCEEDED
    assert any("already serves on to every user" in h.reason for h in d.state.history[-6:])
    out = d.command("rollback", version="v2")  # the last release set no flag: nothing is turned off
    assert flag_effects(out.effects) == [] and d.state.flags[0].percent == 100


def test_feature_flag_supersede_mid_rollout_turns_the_flag_off() -> None:
    d = Driver.with_stable(flag_policy())
    d.push("v2")
    d.tick(10, PASS)
    d.tick(60)
    out = d.push("v3")
    assert flag_effects(out.effects)[:2] == [0, 5]  # v2's 25 % goes off, v3 starts its own rollout
    assert d.state.flags[0].release == "web-2" and d.state.flags[0].salt == "web-2"


def test_feature_flag_drift_is_written_again() -> None:
    from functions.core.events import Observation

    d = Driver.with_stable(flag_policy())
    d.push("v2")
    out = d.tick(1, Observation(flags=()))  # the document does not serve the plan (edited by hand)
    assert flag_effects(out.effects) == [5] and d.state.history[-1].action == "drift"
    out = d.tick(1, Observation(flags=d.state.flags))
    assert flag_effects(out.effects) == []


# -- the policy --------------------------------------------------------------------------------------------

DOC = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: shop, namespace: web}
spec:
  image: {repository: ghcr.io/example/shop}
  router: {provider: gateway-api, httpRoute: shop}
  analysis: {interval: 30s, metrics: [{name: errors, template: error-rate, max: 0.01}]}
  flags: {configMap: shop-flags}
  stages:
    - flag: {key: new-checkout, steps: [{weight: 5, pause: 10m}, {weight: 25, pause: 10m}, {weight: 100}]}
"""


def test_feature_flag_policy_parses_with_an_implicit_promote_before_the_flag_and_round_trips() -> None:
    doc = yaml.safe_load(DOC)
    policy = parse_policy(doc)
    assert [s.kind for s in policy.stages] == ["promote", "flag"]
    assert parse_policy(to_doc(policy)) == policy
    # gateway-api has no metrics of its own, but a flag stage is measured on the app's metrics by variant
    assert problems(doc) == []


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda s: s.pop("flags"), "spec.stages[0].flag"),
        (
            lambda s: (
                s["stages"].insert(0, {"canary": {"steps": [{"weight": 10}]}})
                or s["stages"].append({"canary": {"steps": [{"weight": 10}]}})
            ),
            "spec.stages[2].canary",
        ),
        (
            lambda s: s["stages"].insert(0, {"promote": {}}) or s["stages"].insert(0, s["stages"].pop()),
            "spec.stages[0].flag",
        ),
        (lambda s: s["stages"][0]["flag"].update(variant=True), "spec.stages[0].flag.variant"),
        (
            lambda s: s["stages"][0]["flag"].update(variants={"a": 1, "b": "x"}),
            "spec.stages[0].flag.variants",
        ),
        (lambda s: s["stages"][0]["flag"].update(offVariant="missing"), "spec.stages[0].flag.offVariant"),
        (
            lambda s: s["stages"][0]["flag"]["steps"].insert(1, {"weight": 1}),
            "spec.stages[0].flag.steps[1].weight",
        ),
        (lambda s: s["flags"].update(file="/x.json"), "spec.flags"),
    ],
)
def test_feature_flag_policy_mistakes_name_their_field(change: Any, path: str) -> None:
    doc = yaml.safe_load(DOC)
    change(doc["spec"])
    assert path in [p for p, _ in problems(doc)], problems(doc)


# -- flagd's format ------------------------------------------------------------------------------------------

USER_DOC = """{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light"}, "defaultVariant": "light",
              "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "dark"]}},
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off"
    }
  },
  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}
}
"""


def test_feature_flag_document_edit_changes_only_graylanes_targeting() -> None:
    plan = FlagPlan(key="new-checkout", percent=25, salt="shop-1", release="shop-1")
    edited = with_plan(USER_DOC, plan, "test")
    before, after = json.loads(USER_DOC), json.loads(edited)
    assert after["flags"]["new-checkout"]["targeting"] == targeting(plan)
    del after["flags"]["new-checkout"]["targeting"]
    assert after == before
    # byte for byte: the text before graylane's flag and after its last member are untouched
    head = USER_DOC.index('"defaultVariant": "off"') + len('"defaultVariant": "off"')
    assert edited[:head] == USER_DOC[:head] and edited.endswith(USER_DOC[head:])
    again = with_plan(edited, plan, "test")
    assert again == edited  # idempotent
    moved = with_plan(
        edited, FlagPlan(key="new-checkout", percent=50, salt="shop-1", release="shop-1"), "test"
    )
    assert moved[:head] == USER_DOC[:head] and json.loads(moved)["flags"]["theme"] == before["flags"]["theme"]
    assert live_plans(moved, (plan,)) == () and len(live_plans(edited, (plan,))) == 1


def test_feature_flag_document_gets_a_new_flag_and_refuses_unknown_variants() -> None:
    plan = FlagPlan(
        key="search-v2",
        variant="new",
        off="old",
        percent=5,
        salt="s",
        variants=(("new", "v2"), ("old", "v1")),
    )
    edited = with_plan(USER_DOC, plan, "test")
    flag = json.loads(edited)["flags"]["search-v2"]
    assert flag == {
        "state": "ENABLED",
        "variants": {"new": "v2", "old": "v1"},
        "defaultVariant": "old",
        "targeting": targeting(plan),
    }
    assert edited.startswith(USER_DOC[: USER_DOC.index('"new-checkout"')])
    with pytest.raises(ConfigError, match="flag theme has no variant on, off"):
        with_plan(USER_DOC, FlagPlan(key="theme", percent=5), "test")
    assert json.loads(with_plan("", plan, "empty"))["flags"] == {"search-v2": flag}


def test_feature_flag_targeting_at_the_ends_and_between() -> None:
    assert targeting(FlagPlan(key="k", percent=0)) == {"if": [False, "on", "off"]}
    assert targeting(FlagPlan(key="k", percent=100)) == {"if": [True, "on", "off"]}
    assert targeting(FlagPlan(key="k", percent=30, salt="r-1")) == {
        "if": [
            {"var": "targetingKey"},
            {"fractional": [{"cat": ["r-1", ":", {"var": "targetingKey"}]}, ["on", 30], ["off", 70]]},
            "off",
        ]
    }


def test_feature_flag_buckets_nest_and_split_near_the_percentage() -> None:
    users = [f"user-{i}" for i in range(5000)]
    previous: set[str] = set()
    for percent in (5, 25, 50, 100):
        on = {u for u in users if flag_variant(u, "shop-1", percent, "on", "off") == "on"}
        assert previous <= on  # a user in at 5 % stays in at 25 %
        assert abs(len(on) / len(users) * 100 - percent) <= 2
        previous = on
    assert all(0 <= flag_bucket(u, "s") <= 100 for u in users[:100])
    assert flag_variant("", "s", 50, "on", "off") == "off" and flag_variant("", "s", 100, "on", "off") == "on"


def test_feature_flag_metrics_by_variant_queries() -> None:
    policy = flag_policy()
    stage = policy.stages[1]
    vm = FlagSource(file="x.json").metrics
    assert variants.counts_query(vm, stage, 60) == (
        'sum by (feature_flag_result_variant, code) (increase(http_requests_total{feature_flag_key="new-checkout", '
        'feature_flag_result_variant=~"on|off"}[60s]))'
    )
    series = [
        {"metric": {"feature_flag_result_variant": "on", "code": "200"}, "value": [0, "90"]},
        {"metric": {"feature_flag_result_variant": "on", "code": "500"}, "value": [0, "10"]},
        {"metric": {"feature_flag_result_variant": "off", "code": "200"}, "value": [0, "400"]},
    ]
    split = variants.split(vm, stage, series)
    assert (split["canary"].requests, split["canary"].errors, split["stable"].requests) == (100, 10, 400)
