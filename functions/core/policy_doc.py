"""`Policy` back to the YAML mapping it was parsed from (`to_doc`). Pure.

Durations come out in seconds and stages explicit (the implicit promote stage included); empty values
are left out, so the document shows only what differs from the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from functions.core.policy import (
    ABTestStage,
    Allow,
    Analysis,
    ApprovalStage,
    BlueGreenStage,
    CanaryStage,
    FlagStage,
    LoadTest,
    Match,
    MetricCheck,
    MirrorStage,
    Policy,
    PreviewStage,
    PromoteStage,
    Stage,
    WorkloadSpec,
)

API_VERSION = "graylane.dev/v1alpha1"
KIND = "ReleasePolicy"


def _compact(d: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out empty values so the document shows only what differs from the defaults."""
    return {k: v for k, v in d.items() if v is not None and v != "" and v != [] and v != {}}


def _allow_doc(a: Allow) -> dict[str, Any]:
    return _compact({"users": list(a.users), "channels": list(a.channels)})


def _match_doc(m: Match) -> dict[str, Any]:
    if m.kind in ("header", "cookie"):
        return _compact({m.kind: m.name, "value": m.value, "regex": m.regex})
    if m.kind == "user-id-digit":
        return {"userIdDigit": {"header": m.name, "digits": list(m.digits)}}
    if m.kind == "user-hash":
        return {"userHash": _compact({"header": m.name, "percent": m.percent, "salt": m.salt})}
    return {"sourceIp": list(m.cidrs)}


def _load_doc(load: LoadTest | None) -> dict[str, Any] | None:
    if load is None:
        return None
    return _compact(
        {
            "url": load.url,
            "rps": load.rps,
            "duration": load.duration or None,
            "image": load.image,
            "headers": dict(load.headers),
        }
    )


def _moving_doc(s: CanaryStage | FlagStage) -> dict[str, Any]:
    """How a canary's weight (a flag's percentage) moves: steps, manual or linear."""
    body: dict[str, Any] = {"mode": s.mode, "analysis": s.analysis}
    if s.mode == "steps":
        body["steps"] = [_compact({"weight": st.weight, "pause": st.pause}) for st in s.steps]
    elif s.mode == "manual":
        body |= {"weightParam": s.weight_param, "weight": s.weight, "hold": s.hold}
    elif s.linear:
        lin = s.linear
        body["linear"] = {"start": lin.start, "end": lin.end, "increment": lin.increment, "every": lin.every}
    return body


def _stage_doc(s: Stage) -> dict[str, Any]:
    body: dict[str, Any]
    if isinstance(s, PreviewStage):
        mig = s.migration
        body = {
            "environment": s.environment,
            "namespace": s.namespace,
            "workload": s.workload,
            "migration": mig
            and _compact({"name": mig.name, "command": list(mig.command), "image": mig.image}),
        }
    elif isinstance(s, ApprovalStage):
        params = [
            _compact({"name": g.name, "default": g.default, "min": g.min, "max": g.max}) for g in s.params
        ]
        body = {"name": s.name, "params": params, "timeout": s.timeout, "onTimeout": s.on_timeout}
    elif isinstance(s, MirrorStage):
        body = {"percent": s.percent, "duration": s.duration, "analysis": s.analysis}
    elif isinstance(s, ABTestStage):
        body = {"match": [_match_doc(m) for m in s.match], "duration": s.duration, "analysis": s.analysis}
    elif isinstance(s, CanaryStage):
        body = _moving_doc(s)
        if s.baseline is not None:
            body["baseline"] = s.baseline
    elif isinstance(s, FlagStage):
        body = {
            "key": s.key,
            "variant": s.variant,
            "offVariant": s.off,
            "variants": dict(s.variants),
            "salt": s.salt,
            **_moving_doc(s),
        }
    elif isinstance(s, BlueGreenStage):
        body = {"preview": s.preview, "analysis": s.analysis}
        traffic = s.preview_traffic
        if traffic is not None:
            load = traffic.load_test
            body["previewTraffic"] = _compact({"header": traffic.header, "loadTest": _load_doc(load)})
    elif isinstance(s, PromoteStage):
        body = {"keepPrevious": s.keep_previous}
    else:
        rl, cb = s.rate_limit, s.circuit_breaker
        body = {
            "rateLimit": rl and {"average": rl.average, "burst": rl.burst, "period": rl.period},
            "circuitBreaker": cb and {"expression": cb.expression},
        }
    return {s.kind: _compact(body)}


def _metric_doc(m: MetricCheck) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": m.name, "template": m.template, "query": m.query, "judge": m.judge}
    if m.judge == "threshold":
        doc |= {"min": m.min, "max": m.max}
    if m.judge == "comparison":
        doc |= {"tolerance": m.tolerance, "relative": m.relative}
    return _compact(doc)


def _analysis_doc(a: Analysis | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return _compact(
        {
            "interval": a.interval,
            "window": a.window,
            "startStep": a.start_step,
            "failureLimit": a.failure_limit,
            "inconclusiveLimit": a.inconclusive_limit,
            "minRequests": a.min_requests,
            "alpha": a.alpha,
            "prometheus": a.prometheus,
            "metrics": [_metric_doc(m) for m in a.metrics],
            "guard": a.guard,
            "exposureBudget": a.exposure_budget,
            "probeWeight": a.probe_weight,
        }
    )


def _flags_doc(policy: Policy) -> dict[str, Any] | None:
    f = policy.flags
    if f is None:
        return None
    m = f.metrics
    metrics = {
        "requests": m.requests,
        "code": m.code,
        "errors": m.errors,
        "duration": m.duration,
        "toMs": m.to_ms,
        "flagLabel": m.flag_label,
        "variantLabel": m.variant_label,
        "selector": m.selector,
    }
    if m.duration == "":
        metrics["duration"] = ""  # kept: "" says there is no histogram
    body = _compact({"provider": f.provider, "configMap": f.config_map, "key": f.key, "file": f.file})
    body["metrics"] = {k: v for k, v in metrics.items() if v is not None and (v != "" or k == "duration")}
    return body


def _gitops_doc(policy: Policy) -> dict[str, Any] | None:
    g = policy.gitops
    if g is None:
        return None
    return _compact(
        {
            "repository": g.repository,
            "file": g.file,
            "format": g.format,
            "image": g.image,
            "key": g.key if g.format == "helm" else None,
            "branch": g.branch,
            "defaultBranch": g.default_branch or None,
            "when": list(g.on),
            "secret": g.secret,
            "author": g.author,
        }
    )


def _affinity_doc(policy: Policy) -> dict[str, Any] | None:
    a = policy.session_affinity
    return None if a is None else {"cookie": _compact({"name": a.cookie, "maxAge": a.max_age})}


def _per_version_doc(w: WorkloadSpec) -> dict[str, Any]:
    if not w.per_version:
        return {}
    return {
        "model": w.model,
        "nameTemplate": w.name_template,
        "versionLabel": w.version_label,
        "subset": w.subset,
        "keepRetired": w.keep_retired,
    }


def to_doc(policy: Policy) -> dict[str, Any]:
    """The YAML mapping that parses back to an equal policy (durations in seconds, stages explicit)."""
    w, ap = policy.workload, policy.approvers
    spec = {
        "image": _compact(
            {
                "repository": policy.image.repository,
                "tags": policy.image.tags,
                "semver": policy.image.semver,
                "byDigest": policy.image.by_digest or None,
            }
        ),
        "workload": _compact(
            {
                "kind": w.kind,
                "name": w.name,
                "canary": w.canary,
                "container": w.container,
                "replicas": w.replicas,
                **_per_version_doc(w),
            }
        ),
        "router": {"provider": policy.router.provider, **policy.router.options},
        "analysis": _analysis_doc(policy.analysis),
        "rollback": policy.rollback.value,
        "approvers": _compact(
            {
                "default": _allow_doc(ap.default),
                "gates": {k: _allow_doc(v) for k, v in ap.gates},
                "actions": {k: _allow_doc(v) for k, v in ap.actions},
            }
        ),
        "stages": [_stage_doc(s) for s in policy.stages],
        "waves": [
            _compact({"name": x.name, "cluster": x.cluster, "approval": x.approval}) for x in policy.waves
        ],
        "protection": [
            _compact(
                {
                    "alert": p.alert,
                    "match": dict(p.match),
                    "rateLimitFactor": p.rate_limit_factor,
                    "floor": p.floor,
                    "circuitBreaker": p.circuit_breaker and {"expression": p.circuit_breaker.expression},
                    "holdDown": p.hold_down,
                }
            )
            for p in policy.protection
        ],
        "notify": [_compact({"kind": n.kind, "url": n.url, "secret": n.secret}) for n in policy.notify],
        "revisionHistory": policy.revision_history,
        "flags": _flags_doc(policy),
        "hooks": [
            _compact(
                {
                    "name": h.name,
                    "type": h.type,
                    "url": h.url,
                    "timeout": h.timeout,
                    "retries": h.retries,
                    "secret": h.secret,
                    "metadata": dict(h.metadata),
                    "loadTest": _load_doc(h.load_test),
                }
            )
            for h in policy.hooks
        ],
        "gitops": _gitops_doc(policy),
        "sessionAffinity": _affinity_doc(policy),
        "baseline": policy.baseline or None,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": policy.name, "namespace": policy.namespace},
        "spec": _compact(spec),
    }
