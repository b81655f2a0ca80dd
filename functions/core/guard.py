"""The always-on guard: on every tick, the canary's raw counters become evidence (functions/core/evidence.py),
the guard rolls the release back once the evidence proves a regression, and the canary's weight follows the
exposure cap (functions/core/exposure.py). Pure; decide() calls `watch` before the user's analysis.

The guard looks from the canary's first request in every step, whatever `analysis.startStep` says
(`startStep` gates the user's own metrics, not the guard), and however often it looks its false-rollback
probability stays at most `analysis.alpha` per test (errors, latency): its statistics are e-processes.
`analysis.guard: false` turns the rollbacks off (the evidence is still kept when a latency metric is judged
sequentially, and for adaptive exposure).
"""

from __future__ import annotations

import math
from dataclasses import replace

from functions.core import events as ev
from functions.core.capabilities import counted
from functions.core.counters import Evidence
from functions.core.evidence import log_evidence, update
from functions.core.exposure import active, cap, source
from functions.core.policy import Analysis, Policy
from functions.core.stages import follow_exposure, record_verdict
from functions.core.state import AppState, MetricResult, Phase, Release, VerdictRecord
from functions.core.tx import Tx


def keeps_evidence(analysis: Analysis | None) -> bool:
    if analysis is None:
        return False
    return analysis.guard or any(
        m.template == "latency" and m.judge == "sequential" for m in analysis.metrics
    )


def canary_live(rel: Release) -> bool:
    """A canary of this release is deployed and may take traffic (not the warm previous version of a watch)."""
    return rel.canary_deployed and not rel.promoted and not rel.watching


def wants_totals(policy: Policy, state: AppState, tick: bool = True) -> bool:
    """Should the runner read the versions' raw counters before deciding? (Pure, used by the runner.)

    On a tick while a release's canary may take traffic; on any other event (a push, a command) that may start
    a canary, so that its counters before its first request are the guard's baseline (stages.ensure_canary)."""
    analysis = policy.analysis
    if analysis is None or not (keeps_evidence(analysis) or active(policy)) or not counted(source(policy)):
        return False
    if not tick:
        return True
    rel = state.release
    if rel is None or rel.phase not in (Phase.PROGRESSING, Phase.WAITING):
        return False
    return not rel.promoted and not rel.watching


def watch(tx: Tx) -> str:
    """Take in this tick's counters; the guard's failure reason when it proves a regression, else ''."""
    policy, rel, totals = tx.policy, tx.release, tx.obs.totals
    analysis = policy.analysis
    if totals is None or analysis is None or not canary_live(rel):
        return ""
    if not (keeps_evidence(analysis) or active(policy)):
        return ""
    before = rel.evidence
    evidence = update(before, totals, tx.now, rel.wave)
    if evidence is before:
        return ""
    if active(policy):
        percent, reason = cap(evidence, analysis, source(policy))
        evidence = replace(evidence, cap=percent, cap_reason=reason)
    tx.update(evidence=evidence)
    if analysis.guard and canary_live(rel):
        failure = failed(evidence, analysis)
        if failure:
            verdict = VerdictRecord(
                at=tx.now_iso,
                verdict="fail",
                reason=f"guard: {failure}",
                metrics=(MetricResult("guard", "fail", failure, query=totals.query),),
            )
            record_verdict(tx, verdict)
            tx.emit(
                ev.ANALYSIS_VERDICT,
                {
                    "release": rel.id,
                    "app": policy.app,
                    "verdict": "fail",
                    "reason": verdict.reason,
                    "metrics": ev.verdict_data(verdict.metrics),
                },
                release=False,
            )
            return f"guard: {failure}"
    follow_exposure(tx)
    return ""


def failed(e: Evidence, analysis: Analysis) -> str:
    """Why the evidence proves a regression at level alpha ('' when it does not)."""
    bound = math.log(1 / analysis.alpha)
    errors = log_evidence(e.errors)
    reference = e.base.reference if e.base is not None else "stable"  # the fresh baseline's, when it runs
    if errors >= bound:
        return (
            f"canary errors {e.canary_errors:g}/{e.canary_requests:g} vs {reference} {e.stable_errors:g}/"
            f"{e.stable_requests:g}, log-evidence {errors:.2f} >= {bound:.2f} (alpha {analysis.alpha:g})"
        )
    latency = log_evidence(e.latency)
    if latency >= bound:
        return (
            f"canary requests slower than {e.bound_ms:g} ms {e.slow_canary:g}/{e.slow_canary_requests:g} vs "
            f"{reference} {e.slow_stable:g}/{e.slow_stable_requests:g}, log-evidence {latency:.2f} >= {bound:.2f} "
            f"(alpha {analysis.alpha:g})"
        )
    return ""
