"""Release hooks and the load hook (issue 14, item 4), the pure part: where decide() asks hooks, what their answers
do, what the runner is asked to call (functions.core.hooks.hook_calls), and the load hook's load-test effects.

The same rules against real HTTP hook servers (yes, no, failing, timing out; retries and duplicates) are in
tests/real/test_hook_servers.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from functions.core.events import HookResult, Observation
from functions.core.hooks import hook_calls, point
from functions.core.policy import (
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    Hook,
    LoadTest,
    PreviewTraffic,
    PromoteStage,
)
from functions.core.policy_parse import problems
from functions.core.state import Phase
from tests.unit.machine_helpers import FAIL, PASS, Driver, analysis, kinds, make_policy, sample

STEPS = CanaryStage(steps=(CanaryStep(20, 60.0), CanaryStep(50, 60.0)))


def hooked(*hooks: Hook, stages: tuple[Any, ...] = (STEPS, PromoteStage()), **changes: Any) -> Any:
    return make_policy(*stages, hooks=hooks, **{"analysis": analysis(), **changes})


def hook(kind: str, name: str = "") -> Hook:
    return Hook(name=name or kind, type=kind, url=f"http://hooks.test/{kind}")  # type: ignore[arg-type]


def answered(d: Driver, ok: bool, detail: str = "", metrics: bool = False, after: float = 0.0) -> Observation:
    """The answers of every hook the runner would call `after` seconds from now, as it hands them to decide()."""
    calls = hook_calls(d.policy, d.state, d.now + timedelta(seconds=after), "tick-x")
    results = tuple(
        HookResult(
            name=c.name,
            type=c.type,
            point=c.point,
            ok=ok,
            status=200 if ok else 403,
            detail=detail or ("HTTP 2xx" if ok else "HTTP 403 no"),
            id=c.id,
        )
        for c in calls
    )
    return Observation(hooks=results, metrics=(sample("pass"),) if metrics else None)


def test_hook_confirm_rollout_holds_the_release_at_its_gate_until_it_says_yes() -> None:
    d = Driver.with_stable(hooked(hook("confirm-rollout", "change-freeze")))
    out = d.push("v2")
    assert d.rel.phase == Phase.WAITING and d.rel.gate == "hook:confirm-rollout" and kinds(out.effects) == []
    assert [c.name for c in hook_calls(d.policy, d.state, d.now, "t")] == ["change-freeze"]
    out = d.tick(5, answered(d, False, "HTTP 403 change freeze until Monday"))
    assert d.rel.phase == Phase.WAITING and d.state.history[-1].action == "hook-held"
    assert "change freeze until Monday" in d.state.history[-1].reason
    before = d.state.history
    out = d.tick(5, answered(d, False, "HTTP 403 change freeze until Monday"))  # asked again: the same no
    assert out.effects == () and d.state.history == before  # nothing new, nothing written
    d.tick(5, answered(d, True))
    assert d.rel.phase == Phase.PROGRESSING and d.rel.weight == 20 and d.rel.canary_deployed
    assert d.rel.gates[-1].gate == "hook:confirm-rollout" and d.rel.gates[-1].decision == "approved"


def test_hook_pre_rollout_sees_the_canary_deployed_before_any_traffic_and_its_failure_counts() -> None:
    d = Driver.with_stable(hooked(hook("pre-rollout", "smoke"), analysis=analysis(failure_limit=2)))
    out = d.push("v2")
    assert (
        kinds(out.effects) == ["deploy-canary"]
        and d.rel.gate == "hook:pre-rollout"
        and d.state.routes.canary == 0
    )
    d.tick(5, answered(d, False, "HTTP 500 smoke test failed"))
    assert (
        d.rel.phase == Phase.WAITING and d.rel.failures == 1 and d.state.history[-1].action == "hook-failed"
    )
    d.tick(5, answered(d, False, "HTTP 500 smoke test failed"))
    assert d.rel.phase == Phase.ROLLED_BACK and "pre-rollout hook failed: smoke: HTTP 500" in d.rel.reason


def test_hook_confirm_traffic_increase_holds_each_timed_step_and_analysis_goes_on() -> None:
    d = Driver.with_stable(hooked(hook("confirm-traffic-increase", "capacity")))
    d.push("v2")
    d.tick(10, PASS)
    out = d.tick(60)  # the step is due and its verdict passed: the hook is asked first
    assert (
        d.rel.gate == "hook:confirm-traffic-increase"
        and d.rel.weight == 20
        and "set-routes" not in kinds(out.effects)
    )
    d.tick(10, answered(d, False, metrics=True))
    assert d.rel.phase == Phase.WAITING and d.rel.weight == 20 and d.rel.verdicts[-1].verdict == "pass"
    d.tick(10, answered(d, True))
    assert d.rel.phase == Phase.PROGRESSING and d.rel.weight == 50
    d.tick(10, replace(FAIL))  # analysis after the hook: a failure rolls back as ever
    assert d.rel.phase == Phase.ROLLED_BACK


def test_hook_confirm_promotion_waits_while_analysis_may_still_roll_back() -> None:
    d = Driver.with_stable(hooked(hook("confirm-promotion", "qa")))
    d.push("v2")
    for _ in range(2):
        d.tick(10, PASS)
        d.tick(60)
    assert d.rel.gate == "hook:confirm-promotion" and not d.rel.promoted
    d.tick(10, FAIL)
    assert d.rel.phase == Phase.ROLLED_BACK


def test_hook_gate_approved_by_a_human_stands_in_for_its_hooks() -> None:
    d = Driver.with_stable(hooked(hook("confirm-promotion", "qa")))
    d.push("v2")
    for _ in range(2):
        d.tick(10, PASS)
        d.tick(60)
    d.command("promote")  # promote does not skip a hook gate ...
    assert d.rel.gate == "hook:confirm-promotion"
    d.command("approve", gate="hook:confirm-promotion")  # ... approving the gate does, audited
    assert d.rel.promoted and d.rel.phase == Phase.SUCCEEDED
    assert any("approved by alice via cli for its hooks" in h.reason for h in d.state.history)


def test_hook_rollout_answers_join_the_verdict_and_a_rollback_hook_rolls_back() -> None:
    d = Driver.with_stable(hooked(hook("rollout", "checks")))
    d.push("v2")
    d.tick(10, replace(answered(d, True, after=10), metrics=(sample("pass"),)))
    last = d.rel.verdicts[-1]
    assert last.verdict == "pass" and [m.name for m in last.metrics] == ["error-rate", "hook:checks"]
    d.tick(10, replace(answered(d, False, "HTTP 503 upstream down", after=10), metrics=(sample("pass"),)))
    assert (
        d.rel.phase == Phase.ROLLED_BACK
        and "rollout hook checks failed: HTTP 503 upstream down" in d.rel.reason
    )

    d = Driver.with_stable(hooked(hook("rollback", "kill-switch")))
    d.push("v2")
    d.tick(
        10, replace(answered(d, False, after=10), metrics=(sample("pass"),))
    )  # a rollback hook's no: carry on
    assert d.rel.phase == Phase.PROGRESSING
    d.tick(10, replace(answered(d, True, after=10), metrics=(sample("pass"),)))
    assert (
        d.rel.phase == Phase.ROLLED_BACK and d.rel.reason == "rollback hook kill-switch asked for a rollback"
    )


def test_hook_answers_about_another_point_are_stale() -> None:
    d = Driver.with_stable(hooked(hook("confirm-rollout")))
    d.push("v2")
    stale = HookResult(name="confirm-rollout", type="confirm-rollout", point="confirm-rollout@0/9/9", ok=True)
    d.tick(5, Observation(hooks=(stale,)))
    assert d.rel.phase == Phase.WAITING


def test_hook_post_rollout_is_told_once_the_release_ends() -> None:
    d = Driver.with_stable(hooked(hook("post-rollout", "report")))
    d.push("v2")
    out = d.tick(10, FAIL)
    told = [e for e in out.effects if e.kind == "hook"]
    assert len(told) == 1 and told[0].hook == "report" and told[0].notice["outcome"] == "rolled-back"
    assert told[0].notice["release"] == "web-1" and kinds(out.effects)[-1] == "hook"


def test_hook_calls_are_asked_only_where_an_answer_is_used() -> None:
    d = Driver.with_stable(hooked(hook("rollout"), hook("confirm-promotion"), hook("post-rollout")))
    assert hook_calls(d.policy, d.state, d.now, "t") == ()
    d.push("v2")
    calls = hook_calls(d.policy, d.state, d.now, "tick-7")
    assert [(c.name, c.point, c.id) for c in calls] == [
        ("rollout", point(d.rel, "rollout"), "tick-7/rollout")
    ]
    assert calls[0].payload["release"] == "web-1" and calls[0].payload["target"]["version"] == "v2"
    d.tick(10, replace(answered(d, True, after=10), metrics=(sample("pass"),)))
    assert hook_calls(d.policy, d.state, d.now, "t") == ()  # the analysis interval has not passed


# -- the load hook ---------------------------------------------------------------------------------------

LOAD = Hook(
    name="load",
    type="rollout",
    load_test=LoadTest(
        url="http://web-canary.team-a/", rps=20, duration=120.0, headers=(("x-load", "graylane"),)
    ),
)


def test_hook_load_feeds_an_analysed_canary_and_starts_again_when_the_last_one_stopped() -> None:
    d = Driver.with_stable(hooked(LOAD))
    out = d.push("v2")
    loads = [e for e in out.effects if e.kind == "load-test"]
    assert [e.job for e in loads] == ["web-1-load-1"]
    assert loads[0].command == (
        "-z",
        "120s",
        "-c",
        "2",
        "-q",
        "10",
        "-H",
        "x-load: graylane",
        "http://web-canary.team-a/",
    )
    d.tick(60, PASS)
    assert not [e for e in d.last.effects if e.kind == "load-test"]  # type: ignore[union-attr]
    out = d.tick(60, PASS)  # 120 s: the first one stopped
    assert [e.job for e in out.effects if e.kind == "load-test"] == ["web-1-load-2"]


def test_hook_load_sends_the_preview_header_to_a_blue_green_preview() -> None:
    stage = BlueGreenStage(preview=300.0, preview_traffic=PreviewTraffic())
    d = Driver.with_stable(hooked(LOAD, stages=(stage, PromoteStage())))
    out = d.push("v2")
    (load,) = [e for e in out.effects if e.kind == "load-test"]
    assert "x-graylane-preview: web-1" in load.command and "x-load: graylane" in load.command


def test_hook_policy_mistakes_name_their_field() -> None:
    doc = {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web"},
        "spec": {
            "image": {"repository": "r/web"},
            "router": {"provider": "recording"},
            "stages": [{"canary": {"steps": [{"weight": 10}]}}],
            "hooks": [
                {"name": "a", "type": "rollout", "url": "http://x/"},
                {"name": "a", "type": "confirm-rollout", "url": "ftp://x"},
                {"name": "b", "type": "pre-rollout", "loadTest": {"url": "http://x/"}},
                {"name": "c", "type": "post-rollout"},
            ],
        },
    }
    found = {p for p, _ in problems(doc)}
    assert {
        "spec.hooks[0].type",
        "spec.hooks[1].name",
        "spec.hooks[1].url",
        "spec.hooks[2].type",
        "spec.hooks[3]",
    } <= found, problems(doc)
