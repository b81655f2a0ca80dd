"""Policy YAML (a plain mapping) -> `Policy`, collecting every problem with its exact field path. Pure.

YAML keys are camelCase, dataclass fields snake_case. Every problem is `(path, message)` such as
`("spec.stages[4].canary.steps[1].weight", "150 is not allowed; expected an integer 0..100")`;
`parse_policy` raises one `PolicyError` holding all of them, never a bare Python exception.

This module reads the document and its spec sections; the field reader is policy_reader, the stages
policy_stages (which also states the stage order rules), circuit breaker expressions breaker_grammar,
and the way back to YAML policy_doc. Their public names stay importable from here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from functions.core import capabilities, images, routing, slots
from functions.core.breaker_grammar import CB_EXPECTED, circuit_breaker_error, read_circuit_breaker
from functions.core.policy import (
    AFFINITY_COOKIE,
    HOOK_TYPES,
    ABTestStage,
    Allow,
    Analysis,
    ApprovalStage,
    Approvers,
    BlueGreenStage,
    CanaryStage,
    FlagSource,
    GitOps,
    Hook,
    ImageRule,
    MetricCheck,
    MirrorStage,
    NotifySpec,
    Policy,
    ProtectionRule,
    RollbackMode,
    RouterSpec,
    SessionAffinity,
    Stage,
    VariantMetrics,
    Wave,
    WorkloadSpec,
)
from functions.core.policy_doc import API_VERSION, KIND, to_doc
from functions.core.policy_reader import (
    DNS_EXPECTED,
    DNS_LABEL,
    DNS_NAME,
    Problem,
    Reader,
    join,
    parse_duration,
    show,
)
from functions.core.policy_stages import (
    STAGE_KINDS,
    TRAFFIC_STAGES,
    read_load_test,
    read_stages,
    with_implicit_promote,
)
from functions.errors import PolicyError

__all__ = [
    "API_VERSION",
    "CB_EXPECTED",
    "COMMAND_ACTIONS",
    "DNS_EXPECTED",
    "JUDGES",
    "KIND",
    "METRIC_TEMPLATES",
    "NOTIFY_KINDS",
    "STAGE_KINDS",
    "TRAFFIC_STAGES",
    "Problem",
    "Reader",
    "circuit_breaker_error",
    "join",
    "parse_duration",
    "parse_policy",
    "problems",
    "show",
    "to_doc",
    "with_implicit_promote",
]

METRIC_TEMPLATES = ("success-rate", "error-rate", "latency")
JUDGES = ("threshold", "comparison", "sequential")
COMMAND_ACTIONS = ("approve", "reject", "weight", "promote", "pause", "resume", "abort", "rollback")
NOTIFY_KINDS = ("slack", "dingtalk", "feishu", "wecom", "webhook", "teams")
REQUIRED_HINTS = {  # what a missing key should hold
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": "a mapping with name and namespace",
    "spec": "a mapping with image, router and stages",
    "image": "a mapping with repository (and optional tags, semver, byDigest)",
    "router": "a mapping with provider and its options",
    "stages": "a non-empty list of stages (" + ", ".join(STAGE_KINDS) + ")",
    "repository": "an image repository such as registry.example.com/team/app",
    "name": DNS_EXPECTED,
    "metrics": "a non-empty list of metrics",
    "match": "a non-empty list of match rules",
    "spec.notify.kind": "one of " + ", ".join(NOTIFY_KINDS),
    "spec.protection.alert": "an alertname",
}


# --- sections --------------------------------------------------------------------------------------


def _image(r: Reader, node: Any, path: str) -> ImageRule:
    m = r.fields(node, path, ("repository", "tags", "semver", "byDigest"), ("repository",))
    repo = r.text(
        m,
        "repository",
        path,
        pattern=re.compile(r"[^\s@]+"),
        expected="an image repository without tag or digest",
    )
    if (
        ":" in repo.rsplit("/", 1)[-1]
    ):  # a colon after the last slash starts a tag; registry ports come earlier
        r.bad(
            join(path, "repository"), repo, "an image repository without a tag (put tag rules in tags/semver)"
        )
    tags = r.regex(m, "tags", path)
    semver = r.text(m, "semver", path, expected="a semver range")
    if semver:
        try:
            images.parse_range(semver)
        except ValueError as err:
            r.bad(
                join(path, "semver"),
                semver,
                f"a semver range such as '>=1.2.0 <2.0.0', '^1.2', '~1.2.3', '1.x' ({err})",
            )
    return ImageRule(repo, tags, semver, r.boolean(m, "byDigest", path, False))


def _workload(r: Reader, node: Any, path: str) -> WorkloadSpec:
    allowed = (
        "kind",
        "name",
        "canary",
        "container",
        "replicas",
        "model",
        "nameTemplate",
        "versionLabel",
        "subset",
        "keepRetired",
    )
    m = r.fields(node, path, allowed)
    kind = r.choice(m, "kind", path, "Deployment", ("Deployment",))
    name = r.text(m, "name", path, pattern=DNS_NAME, expected="a Kubernetes object name")
    canary = r.text(m, "canary", path, pattern=DNS_NAME, expected="a Kubernetes object name")
    if canary and canary == name:
        r.bad(join(path, "canary"), canary, "a name different from workload.name")
    container = r.text(m, "container", path, pattern=DNS_LABEL, expected=DNS_EXPECTED)
    replicas = r.integer(m, "replicas", path, None, 0)
    model = r.choice(m, "model", path, "pair", WORKLOAD_MODELS)
    if model != "per-version":
        for key in PER_VERSION_KEYS:
            if key in m:
                r.add(join(path, key), "is only allowed with model per-version")
        return WorkloadSpec(kind, name, canary, container, replicas)  # type: ignore[arg-type]
    return _per_version(r, m, path, WorkloadSpec(kind, name, canary, container, replicas, model))  # type: ignore[arg-type]


WORKLOAD_MODELS = ("pair", "per-version")
PER_VERSION_KEYS = ("nameTemplate", "versionLabel", "subset", "keepRetired")
_TEMPLATE = re.compile(r"[a-z0-9.-]*\{version\}[a-z0-9.-]*")
_LABEL_KEY = re.compile(
    r"(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)


def _per_version(r: Reader, m: Mapping[str, Any], path: str, w: WorkloadSpec) -> WorkloadSpec:
    """The per-version model's fields: the first Deployment (name, subset), each version's Deployment name
    (nameTemplate), the version label and how many retired Deployments stay (keepRetired)."""
    if "name" not in m:
        r.add(
            join(path, "name"),
            "is required with model per-version; expected the first version's Deployment "
            "(yours: graylane never re-images it)",
        )
    if "canary" in m:
        r.add(
            join(path, "canary"),
            "is not allowed with model per-version: each version gets its own Deployment (nameTemplate)",
        )
    template = r.text(
        m, "nameTemplate", path, expected="a Deployment name with {version}, e.g. reviews-{version}"
    )
    if "nameTemplate" not in m:
        r.add(
            join(path, "nameTemplate"),
            "is required with model per-version; expected a Deployment name with "
            "{version}, e.g. reviews-{version}",
        )
    elif template and not (
        _TEMPLATE.fullmatch(template)
        and template.count(slots.PLACEHOLDER) == 1
        and DNS_NAME.fullmatch(slots.workload_name(template, "v1"))
        and len(template) - len(slots.PLACEHOLDER) + slots.SLUG_MAX <= 253
    ):
        r.bad(
            join(path, "nameTemplate"),
            template,
            "a Deployment name (lower-case letters, digits, '-' and '.') with "
            "{version} once, e.g. reviews-{version}",
        )
        template = ""
    label = r.text(m, "versionLabel", path, "version", pattern=_LABEL_KEY, expected="a Kubernetes label key")
    subset = r.text(m, "subset", path, pattern=DNS_LABEL, expected=DNS_EXPECTED)
    if not subset and template and w.name:
        subset = slots.template_version(template, w.name)
        if not subset and "subset" not in m:
            r.add(
                join(path, "subset"),
                f"is required: {w.name} is not named by nameTemplate {template}; expected the "
                f"first Deployment's subset (its {label} label value), e.g. v1",
            )
    keep = r.integer(m, "keepRetired", path, 2, 0, 20)
    return replace(w, name_template=template, version_label=label, subset=subset, keep_retired=keep)


_PAIR_ROUTER_OPTIONS = ("stableSubset", "canarySubset", "stableLabels", "canaryLabels")


def _per_version_fits(r: Reader, policy: Policy, catalog: routing.Catalog) -> None:
    """What else a per-version policy must hold: a router with subsets, no fixed subsets, no waves."""
    if not policy.workload.per_version:
        return
    provider = policy.router.provider
    if provider in catalog and not capabilities.version_subsets(provider, catalog):
        able = ", ".join(name for name in catalog if capabilities.version_subsets(name, catalog))
        r.bad(
            "spec.workload.model",
            "per-version",
            f"pair: router {provider} routes to fixed Services "
            f"(per-version needs a subset per version: router {able})",
        )
    for key in _PAIR_ROUTER_OPTIONS:
        if key in policy.router.options:
            r.add(
                f"spec.router.{key}",
                "is not allowed with workload.model per-version: each version's subset is "
                "named after it (workload.subset names the first Deployment's)",
            )
    if policy.waves:
        r.add("spec.waves", "is not supported with workload.model per-version yet; expected no waves")
    if policy.gitops is not None:
        r.add(
            "spec.gitops",
            "is not supported with workload.model per-version yet: the file names one image, "
            "each version has its own Deployment; expected no gitops",
        )


def _router(r: Reader, node: Any, path: str, catalog: routing.Catalog) -> RouterSpec:
    """The provider and its options, as the provider's module declares them (functions.core.routing)."""
    known = ", ".join(catalog)
    if not isinstance(node, Mapping):
        r.bad(path, node, f"a mapping with provider ({known}) and provider options")
        return RouterSpec("")
    if "provider" not in node:
        r.add(join(path, "provider"), "is required; expected one of " + known)
    provider = r.choice(node, "provider", path, "", tuple(catalog))
    options = {}
    for key, value in node.items():
        if key == "provider":
            continue
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key):
            r.bad(join(path, key), key, "a camelCase option name")
            continue
        options[str(key)] = copy.deepcopy(value)
    if provider in catalog:
        for where, message in routing.option_problems(catalog[provider], options, path):
            r.add(where, message)
    return RouterSpec(provider, options)


def _metric(r: Reader, node: Any, path: str) -> MetricCheck:
    allowed = ("name", "template", "query", "judge", "min", "max", "tolerance", "relative")
    m = r.fields(node, path, allowed, ("name",))
    name = r.text(m, "name", path, pattern=DNS_LABEL, expected=DNS_EXPECTED)
    template = r.choice(m, "template", path, "", METRIC_TEMPLATES)
    query = r.text(m, "query", path, expected="a PromQL query")
    if ("template" in m) == ("query" in m):
        r.add(path, "expected exactly one of template (" + ", ".join(METRIC_TEMPLATES) + ") or query")
    # a latency metric without bounds is judged by the anytime-valid latency test unless it names a judge
    default = "sequential" if template == "latency" and "min" not in m and "max" not in m else "threshold"
    judge = r.choice(m, "judge", path, default, JUDGES)
    lo = r.number(m, "min", path, None, lambda x: True, "a finite number")
    hi = r.number(m, "max", path, None, lambda x: True, "a finite number")
    tolerance = r.number(m, "tolerance", path, 0.0, lambda x: x >= 0, "a number >= 0")
    relative = r.boolean(m, "relative", path, False)
    if judge == "threshold" and "min" not in m and "max" not in m:
        r.add(path, "a threshold judge needs min or max")
    if lo is not None and hi is not None and lo > hi:
        r.bad(join(path, "min"), lo, f"a number <= max ({hi:g})")
    for key in ("min", "max"):
        if key in m and judge != "threshold":
            r.add(
                join(path, key), f"is not allowed with judge {judge}; expected it only with judge threshold"
            )
    for key in ("tolerance", "relative"):
        if key in m and judge != "comparison":
            r.add(
                join(path, key), f"is not allowed with judge {judge}; expected it only with judge comparison"
            )
    if judge == "sequential" and template not in ("success-rate", "error-rate", "latency"):
        r.bad(
            join(path, "judge"),
            judge,
            "threshold or comparison: the sequential test needs request counts, "
            "i.e. template success-rate, error-rate or latency",
        )
    return MetricCheck(name, template, query, judge, lo, hi, tolerance, relative)  # type: ignore[arg-type]


def _analysis(r: Reader, node: Any, path: str) -> Analysis:
    allowed = (
        "interval",
        "window",
        "startStep",
        "failureLimit",
        "inconclusiveLimit",
        "minRequests",
        "alpha",
        "prometheus",
        "metrics",
        "guard",
        "exposureBudget",
        "probeWeight",
    )
    m = r.fields(node, path, allowed, ("metrics",))
    checked = [(p, _metric(r, item, p)) for p, item in r.items(m, "metrics", path, non_empty="metrics" in m)]
    r.unique([(p, mt.name) for p, mt in checked], "name", "a metric name unique in the analysis")
    metrics = tuple(mt for _, mt in checked)
    return Analysis(
        interval=r.duration(m, "interval", path, 10.0, positive=True),
        window=r.duration(m, "window", path, 60.0, positive=True),
        metrics=metrics,
        start_step=r.integer(m, "startStep", path, 1, 1),
        failure_limit=r.integer(m, "failureLimit", path, 1, 1),
        inconclusive_limit=r.integer(m, "inconclusiveLimit", path, 6, 1),
        min_requests=r.integer(m, "minRequests", path, 50, 0),
        alpha=r.number(m, "alpha", path, 0.01, lambda x: 0 < x < 1, "a number between 0 and 1 (exclusive)"),
        prometheus=r.text(
            m, "prometheus", path, pattern=re.compile(r"https?://\S+"), expected="an http(s):// URL"
        ),
        guard=r.boolean(m, "guard", path, True),
        exposure_budget=r.number(
            m,
            "exposureBudget",
            path,
            Analysis().exposure_budget,
            lambda x: x >= 0,
            "a number of failed requests >= 0 (0 turns adaptive exposure off)",
        ),
        probe_weight=r.integer(m, "probeWeight", path, Analysis().probe_weight, 1, 100),
    )


def _allow(r: Reader, node: Any, path: str) -> Allow:
    m = r.fields(node, path, ("users", "channels"))
    return Allow(r.strings(m, "users", path), r.strings(m, "channels", path))


def _allow_map(
    r: Reader, node: Any, path: str, ok_key: Callable[[str], str | None]
) -> tuple[tuple[str, Allow], ...]:
    if node is None:
        return ()
    if not isinstance(node, Mapping):
        r.bad(path, node, "a mapping of name to {users, channels}")
        return ()
    out = []
    for key, value in node.items():
        expected = ok_key(key) if isinstance(key, str) else "a string key"
        if expected:
            r.bad(join(path, key), key, expected)
        out.append((str(key), _allow(r, value, join(path, key))))
    return tuple(out)


def _approvers(r: Reader, node: Any, path: str, gates: set[str]) -> Approvers:
    m = r.fields(node, path, ("default", "gates", "actions"))
    known = ", ".join(sorted(gates)) or "none"
    return Approvers(
        default=_allow(r, m.get("default"), join(path, "default")),
        gates=_allow_map(
            r,
            m.get("gates"),
            join(path, "gates"),
            lambda k: None if k in gates else f"the name of an approval gate ({known})",
        ),
        actions=_allow_map(
            r,
            m.get("actions"),
            join(path, "actions"),
            lambda k: None if k in COMMAND_ACTIONS else "one of " + ", ".join(COMMAND_ACTIONS),
        ),
    )


def _waves(r: Reader, spec: Mapping[str, Any]) -> tuple[Wave, ...]:
    out = []
    for p, item in r.items(spec, "waves", "spec"):
        m = r.fields(item, p, ("name", "cluster", "approval"), ("name",))
        out.append(
            (
                p,
                Wave(
                    r.text(m, "name", p, pattern=DNS_LABEL, expected=DNS_EXPECTED),
                    r.text(m, "cluster", p, expected="a kubeconfig context name"),
                    r.boolean(m, "approval", p, False),
                ),
            )
        )
    r.unique([(p, w.name) for p, w in out], "name", "a wave name unique in the policy")
    return tuple(w for _, w in out)


def _protection(r: Reader, spec: Mapping[str, Any]) -> tuple[ProtectionRule, ...]:
    out = []
    allowed = ("alert", "match", "rateLimitFactor", "floor", "circuitBreaker", "holdDown")
    for p, item in r.items(spec, "protection", "spec"):
        m = r.fields(item, p, allowed, ("alert",))
        match = m.get("match") or {}
        if not isinstance(match, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in match.items()
        ):
            r.bad(join(p, "match"), match, "a mapping of label name to string value")
            match = {}
        cb = (
            read_circuit_breaker(r, m["circuitBreaker"], join(p, "circuitBreaker"))
            if "circuitBreaker" in m
            else None
        )
        out.append(
            ProtectionRule(
                alert=r.text(m, "alert", p, expected="an alertname"),
                match=tuple(sorted(match.items())),
                rate_limit_factor=r.number(
                    m, "rateLimitFactor", p, 1.0, lambda x: 0 < x <= 1, "a number in (0, 1]"
                ),
                floor=r.integer(m, "floor", p, 1, 1),
                circuit_breaker=cb,
                hold_down=r.duration(m, "holdDown", p, 60.0),
            )
        )
    return tuple(out)


def _notify(r: Reader, spec: Mapping[str, Any]) -> tuple[NotifySpec, ...]:
    out = []
    for p, item in r.items(spec, "notify", "spec"):
        m = r.fields(item, p, ("kind", "url", "secret"), ("kind",))
        if "url" not in m and "secret" not in m:
            r.add(p, "expected url or secret")
        out.append(
            NotifySpec(
                r.choice(m, "kind", p, "", NOTIFY_KINDS),
                r.text(m, "url", p, pattern=re.compile(r"https?://\S+"), expected="an http(s):// URL"),
                r.text(m, "secret", p, expected="a secret reference"),
            )
        )
    return tuple(out)


_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_CM_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_GIT_URL = re.compile(r"(?:(?:git|https?|ssh|file)://\S+|[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:\S+)")
_AUTHOR = re.compile(r"[^<>]+ <[^<>\s]+@[^<>\s]+>")
_BRANCH = re.compile(r"(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/{}-]+(?<![/.])")


def _variant_metrics(r: Reader, node: Any, path: str) -> VariantMetrics:
    keys = ("requests", "code", "errors", "duration", "toMs", "flagLabel", "variantLabel", "selector")
    m = r.fields(node, path, keys)
    d = VariantMetrics()
    duration = m.get("duration", d.duration)
    if duration != "" and not (isinstance(duration, str) and _METRIC.fullmatch(duration)):
        r.bad(
            join(path, "duration"), duration, 'a histogram\'s _bucket series name, or "" when there is none'
        )
        duration = d.duration
    return VariantMetrics(
        requests=r.text(m, "requests", path, d.requests, pattern=_METRIC, expected="a counter name"),
        code=r.text(m, "code", path, d.code, pattern=_LABEL, expected="a label name"),
        errors=r.regex(m, "errors", path) or d.errors,
        duration=duration,
        to_ms=r.number(m, "toMs", path, d.to_ms, lambda x: x > 0, "a number > 0"),
        flag_label=r.text(m, "flagLabel", path, d.flag_label, pattern=_LABEL, expected="a label name"),
        variant_label=r.text(
            m, "variantLabel", path, d.variant_label, pattern=_LABEL, expected="a label name"
        ),
        selector=r.text(m, "selector", path, expected='PromQL label matchers, e.g. namespace="shop"'),
    )


def _flags(r: Reader, node: Any, path: str) -> FlagSource:
    m = r.fields(node, path, ("provider", "configMap", "key", "file", "metrics"))
    if ("configMap" in m) == ("file" in m):
        r.add(
            path, "expected exactly one of configMap (Kubernetes) or file (a flag document on this machine)"
        )
    file = r.text(m, "file", path, expected="a path")
    if file and not file.endswith(".json"):
        r.bad(join(path, "file"), file, "a .json file (graylane writes flagd's JSON format)")
    return FlagSource(
        provider=r.choice(m, "provider", path, "flagd", ("flagd",)),  # type: ignore[arg-type]
        config_map=r.text(m, "configMap", path, pattern=DNS_NAME, expected="a ConfigMap name"),
        key=r.text(m, "key", path, "flags.flagd.json", pattern=_CM_KEY, expected="a ConfigMap data key"),
        file=file,
        metrics=_variant_metrics(r, m.get("metrics"), join(path, "metrics")),
    )


def _hooks(r: Reader, spec: Mapping[str, Any], has_analysis: bool) -> tuple[Hook, ...]:
    out: list[tuple[str, Hook]] = []
    allowed = ("name", "type", "url", "timeout", "retries", "secret", "metadata", "loadTest")
    for p, item in r.items(spec, "hooks", "spec"):
        m = r.fields(item, p, allowed, ("name", "type"))
        kind = r.choice(m, "type", p, "rollout", HOOK_TYPES)
        if ("url" in m) == ("loadTest" in m):
            r.add(p, "expected exactly one of url (a hook graylane calls) or loadTest (graylane's load hook)")
        if "loadTest" in m and kind != "rollout":
            r.bad(join(p, "type"), kind, "rollout: the load hook sends traffic while the release is analysed")
        if kind in ("rollout", "rollback") and not has_analysis:
            r.bad(
                join(p, "type"),
                kind,
                f"a type other than {kind} (rollout and rollback hooks are asked with each "
                "analysis, and spec.analysis is not set)",
            )
        metadata = m.get("metadata") or {}
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            r.bad(join(p, "metadata"), metadata, "a mapping of string to string")
            metadata = {}
        load = m.get("loadTest")
        out.append(
            (
                p,
                Hook(
                    name=r.text(m, "name", p, pattern=DNS_LABEL, expected=DNS_EXPECTED),
                    type=kind,  # type: ignore[arg-type]
                    url=r.text(
                        m, "url", p, pattern=re.compile(r"https?://\S+"), expected="an http(s):// URL"
                    ),
                    timeout=r.duration(m, "timeout", p, 5.0, positive=True),
                    retries=r.integer(m, "retries", p, 2, 0, 10),
                    secret=r.text(m, "secret", p, expected="a secret reference"),
                    metadata=tuple((str(k), str(v)) for k, v in metadata.items()),
                    load_test=read_load_test(r, load, join(p, "loadTest"), None)
                    if load is not None
                    else None,
                ),
            )
        )
    r.unique([(p, h.name) for p, h in out], "name", "a hook name unique in the policy")
    loads = [p for p, h in out if h.load_test is not None]
    for p in loads[1:]:
        r.add(join(p, "loadTest"), f"is not allowed: expected at most one load hook ({loads[0]} is one)")
    return tuple(h for _, h in out)


def _gitops(r: Reader, node: Any, path: str) -> GitOps:
    keys = (
        "repository",
        "file",
        "format",
        "image",
        "key",
        "branch",
        "defaultBranch",
        "when",
        "secret",
        "author",
    )
    m = r.fields(node, path, keys, ("repository", "file"))
    file = r.text(
        m,
        "file",
        path,
        pattern=re.compile(r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))\S+"),
        expected="a path inside the repository (relative, without ..)",
    )
    base = file.rsplit("/", 1)[-1]
    guessed = "kustomize" if base in ("kustomization.yaml", "kustomization.yml", "Kustomization") else "helm"
    fmt = r.choice(m, "format", path, guessed, ("kustomize", "helm"))
    on = r.value(
        m,
        "when",
        path,
        ("rollback",),
        lambda v: (
            tuple(dict.fromkeys(v))
            if isinstance(v, list) and v and all(x in ("rollback", "promotion") for x in v)
            else None
        ),
        "a non-empty list of rollback, promotion",
    )
    if "branch" in m and m.get("defaultBranch") is True:
        r.add(
            join(path, "branch"),
            "is not allowed with defaultBranch: true (that commits to the default branch)",
        )
    if fmt != "helm" and "key" in m:
        r.add(join(path, "key"), "is only for format helm (a kustomization's tag is images[].newTag)")
    if fmt != "kustomize" and "image" in m:
        r.add(join(path, "image"), "is only for format kustomize (the images[] entry's name)")
    return GitOps(
        repository=r.text(
            m,
            "repository",
            path,
            pattern=_GIT_URL,
            expected="a Git URL (git://, https://, ssh://, file:// or user@host:path)",
        ),
        file=file,
        format=fmt,  # type: ignore[arg-type]
        image=r.text(
            m, "image", path, pattern=re.compile(r"[^\s@:]+(?::\d+)?[^\s@:]*"), expected="an image name"
        ),
        key=r.text(
            m,
            "key",
            path,
            "image.tag",
            pattern=re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*"),
            expected="a dotted key such as image.tag",
        ),
        branch=r.text(
            m,
            "branch",
            path,
            pattern=_BRANCH,
            expected="a branch name ({release}, {app}, {namespace}, {version} are replaced)",
        ),
        default_branch=r.boolean(m, "defaultBranch", path, False),
        on=on,  # type: ignore[arg-type]
        secret=r.text(m, "secret", path, expected="a secret reference"),
        author=r.text(
            m,
            "author",
            path,
            GitOps.__dataclass_fields__["author"].default,
            pattern=_AUTHOR,
            expected="Name <email>",
        ),
    )


_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")  # an RFC 6265 token (HAProxy's table holds 64)


def _session_affinity(r: Reader, node: Any, path: str, stages: tuple[Any, ...]) -> SessionAffinity:
    """spec.sessionAffinity: {cookie: {name, maxAge}}; the router's support is checked by capabilities."""
    m = r.fields(node, path, ("cookie",), ("cookie",))
    where = join(path, "cookie")
    c = r.fields(m["cookie"], where, ("name", "maxAge")) if "cookie" in m else {}
    name = r.text(
        c,
        "name",
        where,
        AFFINITY_COOKIE,
        pattern=_COOKIE_NAME,
        expected="a cookie name (RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~, at most 64)",
    )
    max_age = r.duration(c, "maxAge", where, None, positive=True)
    if max_age is not None and max_age != int(max_age):
        r.bad(join(where, "maxAge"), c["maxAge"], "whole seconds (a cookie's Max-Age)")
    if not any(isinstance(s, CanaryStage) for s in stages):
        r.add(
            path,
            "keeps clients on a version while a canary stage weighs the traffic; this policy has no "
            "canary stage",
        )
    return SessionAffinity(cookie=name, max_age=None if max_age is None else int(max_age))


def _feature_rules(r: Reader, spec: Mapping[str, Any], policy: Policy) -> None:
    """What flag stages, hooks and the load hook need from the rest of the policy."""
    has_load = any(h.load_test is not None for h in policy.hooks)
    stages = spec.get("stages")
    for i, item in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(item, Mapping):
            continue
        if "flag" in item and policy.flags is None:
            r.add(
                f"spec.stages[{i}].flag",
                "needs spec.flags: where the flag document is (a ConfigMap or a file)",
            )
        body = item.get("bluegreen")
        traffic = body.get("previewTraffic") if isinstance(body, Mapping) else None
        if has_load and isinstance(traffic, Mapping) and traffic.get("loadTest") is not None:
            r.add(
                f"spec.stages[{i}].bluegreen.previewTraffic.loadTest",
                "is not allowed with a load hook: declare "
                "the load test once (the load hook sends the preview header itself)",
            )
    traffic = (ABTestStage, CanaryStage, BlueGreenStage, MirrorStage)
    if has_load and not any(isinstance(s, traffic) and s.analysis for s in policy.stages):
        r.add(
            "spec.hooks",
            "a load hook feeds analysed abtest, canary and bluegreen stages; this policy has none",
        )


def _baseline_fits(r: Reader, spec: Mapping[str, Any], policy: Policy) -> None:
    """A fresh baseline (functions/core/baseline.py) runs beside a canary stage of the pair model."""
    from functions.core.baseline import uses

    if not (uses(policy) or policy.baseline):
        return
    where = (
        "spec.baseline"
        if policy.baseline
        else next(
            (
                f"spec.stages[{i}].canary.baseline"
                for i, s in enumerate(policy.stages)
                if isinstance(s, CanaryStage) and s.baseline
            ),
            "spec.baseline",
        )
    )
    if policy.workload.per_version:
        r.add(
            where,
            "is not supported with workload.model per-version (each version has its own Deployment "
            "already); expected workload.model pair",
        )
    if not any(isinstance(s, CanaryStage) for s in policy.stages):
        r.add(where, "needs a canary stage: the baseline is routed at the canary's weight in canary stages")


# --- policy ----------------------------------------------------------------------------------------


_SPEC_KEYS = (
    "image",
    "workload",
    "router",
    "analysis",
    "rollback",
    "approvers",
    "stages",
    "waves",
    "protection",
    "notify",
    "revisionHistory",
    "flags",
    "hooks",
    "gitops",
    "sessionAffinity",
    "baseline",
)


def _policy(r: Reader, doc: Any, catalog: routing.Catalog) -> Policy:
    top = r.fields(
        doc, "", ("apiVersion", "kind", "metadata", "spec"), ("apiVersion", "kind", "metadata", "spec")
    )
    if "apiVersion" in top and top["apiVersion"] != API_VERSION:
        r.bad("apiVersion", top["apiVersion"], API_VERSION)
    if "kind" in top and top["kind"] != KIND:
        r.bad("kind", top["kind"], KIND)
    if not top:
        return Policy("", "", ImageRule(""), RouterSpec(""), ())
    meta_keys = ("name", "namespace", "labels", "annotations")
    meta = r.fields(top["metadata"], "metadata", meta_keys, ("name",)) if "metadata" in top else {}
    name = r.text(meta, "name", "metadata", pattern=DNS_LABEL, expected=DNS_EXPECTED)
    namespace = r.text(meta, "namespace", "metadata", "default", pattern=DNS_LABEL, expected=DNS_EXPECTED)
    spec = (
        r.fields(top.get("spec"), "spec", _SPEC_KEYS, ("image", "router", "stages")) if "spec" in top else {}
    )
    analysis = _analysis(r, spec["analysis"], "spec.analysis") if spec.get("analysis") is not None else None
    stages = read_stages(r, spec, analysis is not None)
    waves = _waves(r, spec)
    gates = _gates(r, stages, waves)
    policy = Policy(
        name=name,
        namespace=namespace,
        image=_image(r, spec.get("image"), "spec.image") if "image" in spec else ImageRule(""),
        router=_router(r, spec.get("router"), "spec.router", catalog) if "router" in spec else RouterSpec(""),
        stages=stages,
        workload=_workload(r, spec.get("workload"), "spec.workload"),
        analysis=analysis,
        rollback=RollbackMode(
            r.choice(spec, "rollback", "spec", "rollback", tuple(m.value for m in RollbackMode))
        ),
        approvers=_approvers(r, spec.get("approvers"), "spec.approvers", gates),
        waves=waves,
        protection=_protection(r, spec),
        notify=_notify(r, spec),
        revision_history=r.integer(spec, "revisionHistory", "spec", 10, 0, 100),
        flags=_flags(r, spec["flags"], "spec.flags") if spec.get("flags") is not None else None,
        hooks=_hooks(r, spec, analysis is not None),
        gitops=_gitops(r, spec["gitops"], "spec.gitops") if spec.get("gitops") is not None else None,
        session_affinity=(
            _session_affinity(r, spec["sessionAffinity"], "spec.sessionAffinity", stages)
            if spec.get("sessionAffinity") is not None
            else None
        ),
        baseline=r.boolean(spec, "baseline", "spec", False),
    )
    _feature_rules(r, spec, policy)
    _baseline_fits(r, spec, policy)
    _per_version_fits(r, policy, catalog)
    for path, message in capabilities.unsupported(policy.router.provider, doc, catalog):  # at validate
        r.add(path, message)
    return policy


def _gates(r: Reader, stages: tuple[Stage, ...], waves: tuple[Wave, ...]) -> set[str]:
    """Every gate's name: the approval stages' and those of the waves with an approval, which differ."""
    gates = {s.name for s in stages if isinstance(s, ApprovalStage)}
    for i, wave in enumerate(waves):
        if wave.approval and f"wave-{wave.name}" in gates:
            r.bad(
                f"spec.waves[{i}].name",
                wave.name,
                f"a name whose gate wave-{wave.name} is not also an approval stage",
            )
    return gates | {f"wave-{w.name}" for w in waves if w.approval}


def problems(doc: Any, catalog: routing.Catalog | None = None) -> list[Problem]:
    """Every problem of doc as (field path, message); empty when the policy is valid. The routers are the
    installed catalog's (functions.providers.routers) unless one is given."""
    r = Reader(REQUIRED_HINTS)
    _policy(r, doc, routing.installed() if catalog is None else catalog)
    return r.problems


def parse_policy(doc: Mapping[str, Any], source: str = "", catalog: routing.Catalog | None = None) -> Policy:
    """The Policy doc declares; raise PolicyError(problems, source) listing every problem."""
    r = Reader(REQUIRED_HINTS)
    policy = _policy(r, doc, routing.installed() if catalog is None else catalog)
    if r.problems:
        raise PolicyError(r.problems, source)
    return policy
