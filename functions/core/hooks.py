"""Release hooks, the load hook and what happens when a release ends. Pure.

A hook is a signed POST at one point of a release (Flagger's webhook types). The core decides which hooks are
asked and what their answers do; the runner only makes the calls:

- asking hooks are called by the runner just before it decides a tick, as it measures metrics: `hook_calls`
  names them (pure, from the stored state), their answers arrive in `Observation.hooks`:
  - `confirm-rollout` (before the first stage), `pre-rollout` (before a wave's first traffic stage routes
    anything), `confirm-traffic-increase` (before a timed step raises the weight) and `confirm-promotion`
    (before the promote stage) hold the release at gate `hook:<type>`: phase waiting, the point and what to
    resume stored in the state, so every tick asks again until all its hooks answer 2xx (or a human approves
    the gate). A confirm hook's "no" only holds; a failing pre-rollout hook counts as a failed check;
  - `rollout` hooks are asked with each analysis; their answers join that interval's verdict (a failing one
    fails it). `rollback` hooks are asked at the same time; a 2xx answer rolls the release back;
- `post-rollout` hooks are told once the release ended: a `hook` effect, applied like a notification;
- the load hook (`type: rollout` with `loadTest`) is graylane's own: hey started as a `load-test` effect when
  an analysed traffic stage starts, and again whenever the previous one stopped, while the release analyses.

`release_ended` also records the version in Git (`spec.gitops`) when a release rolls back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from functions.core.analysis import analysis_due
from functions.core.events import HookResult, Observation
from functions.core.policy import Hook, LoadTest, Policy
from functions.core.state import (
    AppState,
    MetricResult,
    Phase,
    Release,
    VerdictRecord,
    Version,
    iso,
    parse_iso,
)
from functions.core.values import value

GATE_PREFIX = "hook:"
ANALYSIS_HOOKS = ("rollout", "rollback")
LOAD_DURATION = 300.0  # seconds one load-hook test sends, unless its loadTest says otherwise
MAX_PASSED = 32


@value
class HookCall:
    """One call the runner makes before deciding: POST `payload` to hook `name` (delivery id `id`)."""

    id: str
    name: str
    type: str
    point: str
    payload: dict[str, Any]


def url_hooks(policy: Policy, kind: str) -> tuple[Hook, ...]:
    return tuple(h for h in policy.hooks if h.type == kind and h.url)


def load_hook(policy: Policy) -> Hook | None:
    return next((h for h in policy.hooks if h.load_test is not None), None)


def point(rel: Release, kind: str) -> str:
    """The release point a hook of `kind` is asked about: a wave's stage and step."""
    return f"{kind}@{rel.wave}/{rel.stage}/{rel.step}"


def payload(policy: Policy, rel: Release, hook: Hook, where: str, call: str, **extra: Any) -> dict[str, Any]:
    """What a hook receives (JSON): the release, where it is, and the hook's own metadata."""
    return {
        "id": call,
        "hook": hook.name,
        "type": hook.type,
        "point": where,
        "app": policy.app,
        "namespace": policy.namespace,
        "name": policy.name,
        "release": rel.id,
        "phase": rel.phase.value,
        "stage": rel.stage,
        "step": rel.step,
        "weight": rel.weight,
        "wave": rel.wave,
        "target": {"version": rel.target.version, "image": rel.target.image},
        "origin": {"version": rel.origin.version, "image": rel.origin.image},
        "metadata": dict(hook.metadata),
        **extra,
    }


# -- what the runner calls ------------------------------------------------------------------------------


def hook_calls(policy: Policy, state: AppState, now: Any, event_id: str) -> tuple[HookCall, ...]:
    """The hooks to ask before deciding a tick: the gate's while the release waits at a hook gate, and the
    rollout and rollback hooks when an analysis is due. Delivery ids are the tick's id and the hook's name:
    a retried call (and a tick decided again after a conflict) repeats its id, the next tick's ask does not."""
    rel = state.release
    if rel is None or not rel.active:
        return ()
    asked: list[tuple[Hook, str]] = []
    if rel.phase == Phase.WAITING and rel.gate.startswith(GATE_PREFIX):
        asked += [(h, rel.hook_point) for h in url_hooks(policy, rel.gate.removeprefix(GATE_PREFIX))]
    if analysis_due(policy, rel, now):
        asked += [(h, point(rel, h.type)) for kind in ANALYSIS_HOOKS for h in url_hooks(policy, kind)]
    calls = []
    for hook, where in asked:
        call = f"{event_id}/{hook.name}"
        calls.append(
            HookCall(
                id=call,
                name=hook.name,
                type=hook.type,
                point=where,
                payload=payload(policy, rel, hook, where, call),
            )
        )
    return tuple(calls)


def answers(obs: Observation, kind: str, where: str) -> dict[str, HookResult]:
    """The answers in `obs` from hooks of `kind` about point `where` (answers about another point are stale)."""
    return {r.name: r for r in obs.hooks or () if r.type == kind and r.point == where}


def refusals(policy: Policy, kind: str, got: dict[str, HookResult]) -> list[str]:
    """'<hook>: <why>' for every hook of `kind` that did not answer 2xx (not asked counts as not yes)."""
    out = []
    for hook in url_hooks(policy, kind):
        r = got.get(hook.name)
        if r is None or not r.ok:
            out.append(f"{hook.name}: {r.detail if r is not None else 'not asked'}")
    return out


# -- hook gates -------------------------------------------------------------------------------------------


def held(tx: Any, kind: str, resume: str) -> bool:
    """Hold the release at gate hook:<kind> unless no such hook exists or its point already passed.

    `resume` is what the gate does once every hook of `kind` says yes: "enter:<stage index>" (enter that
    stage) or "fire:<timer name>" (run that timer's rule again: the step it wanted to take)."""
    from functions.core import events as ev

    hooks = url_hooks(tx.policy, kind)
    rel = tx.release
    here = point(rel, kind)
    if not hooks or here in rel.hook_passed:
        return False
    tx.update(
        gate=GATE_PREFIX + kind, gate_next=-1, hook_point=here, hook_resume=resume, hook_answer="", timer=None
    )
    names = ", ".join(h.name for h in hooks)
    tx.set_phase(Phase.WAITING, "gate-waiting", reason=f"waiting for {kind} hook {names} to answer 2xx")
    tx.emit(ev.GATE_WAITING, {"gate": GATE_PREFIX + kind})
    return True


def passed(rel: Release) -> tuple[str, ...]:
    """The points passed, with the gate's own one added (bounded)."""
    out = rel.hook_passed + ((rel.hook_point,) if rel.hook_point not in rel.hook_passed else ())
    return out[-MAX_PASSED:]


# -- analysis hooks ---------------------------------------------------------------------------------------


def with_rollout_hooks(
    verdict: VerdictRecord, policy: Policy, rel: Release, obs: Observation
) -> VerdictRecord:
    """The interval's verdict with the rollout hooks' answers in it: each is a check, a failing one fails it."""
    hooks = url_hooks(policy, "rollout")
    if not hooks or obs.hooks is None:
        return verdict
    got = answers(obs, "rollout", point(rel, "rollout"))
    results, failed = [], []
    for hook in hooks:
        r = got.get(hook.name)
        ok = r is not None and r.ok
        why = r.detail if r is not None else "not asked"
        results.append(MetricResult(name=f"hook:{hook.name}", verdict="pass" if ok else "fail", reason=why))
        if not ok:
            failed.append(f"rollout hook {hook.name} failed: {why}")
    if not failed:
        return VerdictRecord(
            at=verdict.at,
            verdict=verdict.verdict,
            reason=verdict.reason,
            metrics=verdict.metrics + tuple(results),
        )
    return VerdictRecord(
        at=verdict.at,
        verdict="fail",
        reason="; ".join(failed + ([verdict.reason] if verdict.reason and verdict.verdict == "fail" else [])),
        metrics=verdict.metrics + tuple(results),
    )


def rollback_asked(policy: Policy, rel: Release, obs: Observation) -> str:
    """Why a rollback hook asks for a rollback ("" when none answered 2xx)."""
    got = answers(obs, "rollback", point(rel, "rollback"))
    yes = [h.name for h in url_hooks(policy, "rollback") if (r := got.get(h.name)) is not None and r.ok]
    return f"rollback hook {', '.join(yes)} asked for a rollback" if yes else ""


# -- the load hook ------------------------------------------------------------------------------------------


def hey_args(url: str, rps: int, seconds: float, headers: dict[str, str]) -> tuple[str, ...]:
    """hey's arguments for `rps` requests per second for `seconds`: hey rate-limits per worker (-q), so the
    rate is spread over one worker per 10 requests per second (a slow answer then delays less of the load)."""
    workers = max(1, -(-rps // 10))
    args = ["-z", f"{max(1, round(seconds))}s", "-c", str(workers), "-q", f"{rps / workers:g}"]
    for name, val in headers.items():
        args += ["-H", f"{name}: {val}"]
    return (*args, url)


def start_load(tx: Any, load: LoadTest, seconds: float, headers: dict[str, str], job: str) -> None:
    """A load-test effect: hey against `load.url` at `load.rps` for `seconds`, with the load's own headers
    and `headers` (the preview's header)."""
    rel = tx.release
    sent = {**dict(load.headers), **headers}
    tx.effect(
        "load-test",
        job=job,
        image=load.image,
        command=hey_args(load.url, load.rps, seconds, sent),
        version=rel.target.version,
    )
    shown = "".join(f" with {k}: {v}" for k, v in sent.items())
    tx.record("load-test", reason=f"{load.rps} requests/s for {seconds:g} s to {load.url}{shown}")


def keep_fed(tx: Any) -> None:
    """The load hook: while an analysed traffic stage runs, a load test is always sending. One starts when the
    stage starts (or its analysis does) and another whenever the previous one stopped. A blue-green
    preview's requests carry its preview header (set to the release id), so they reach the preview."""
    from functions.core.policy import BlueGreenStage

    hook = load_hook(tx.policy)
    rel = tx.release
    stage = tx.stage()
    if hook is None or hook.load_test is None or not rel.analysing or not rel.canary_deployed or rel.promoted:
        return
    if rel.load_until and parse_iso(rel.load_until) > tx.now:
        return
    headers: dict[str, str] = {}
    if isinstance(stage, BlueGreenStage) and stage.preview_traffic is not None:
        if stage.preview_traffic.load_test is not None:
            return  # the preview has its own load test
        headers[stage.preview_traffic.header] = rel.id
    load = hook.load_test
    seconds = load.duration or LOAD_DURATION
    n = rel.loads + 1
    start_load(tx, load, seconds, headers, f"{rel.id}-load-{n}")
    tx.update(loads=n, load_until=iso(tx.now + timedelta(seconds=seconds)))


# -- the end of a release ----------------------------------------------------------------------------------


def release_ended(tx: Any, phase: Phase, reason: str) -> None:
    """Tell the post-rollout hooks, and after a rollback record the version now stable in Git."""
    rel, policy = tx.release, tx.policy
    for hook in url_hooks(policy, "post-rollout"):
        where = point(rel, "post-rollout")
        tx.effect(
            "hook",
            hook=hook.name,
            notice=payload(
                policy,
                rel,
                hook,
                where,
                f"{rel.id}/post-rollout/{hook.name}",
                outcome=phase.value,
                reason=reason,
            ),
        )
    if phase in (Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED):
        record_in_git(tx, "rollback", tx.state.stable, f"{rel.id} {phase.value}: {reason}")


def record_in_git(tx: Any, on: str, version: Version, why: str) -> None:
    """A git-write-back effect setting `version`'s tag in the policy's GitOps file (when `on` is configured)."""
    gitops = tx.policy.gitops
    if gitops is None or on not in gitops.on or not version.version:
        return
    rel = tx.release
    verb = "roll back" if on == "rollback" else "promote"
    subject = f"graylane: {verb} {tx.policy.app} to {version.version}"
    body = f"Release: {rel.id} ({rel.origin.version or '-'} -> {rel.target.version})\nReason: {why}"
    tx.effect(
        "git-write-back",
        image=version.image,
        version=version.version,
        message=f"{subject}\n\n{body}",
        notice={"release": rel.id, "app": tx.policy.app, "on": on},
    )
