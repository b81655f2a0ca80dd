"""NGINX Ingress: a canary Ingress beside the app's Ingress, steered by ingress-nginx canary annotations;
rate limits as annotations on the app's Ingress.

Options: `stableIngress`, `stableService`, `canaryService`, `host`, optional `port` (80), `canaryIngress`
(default `<stableIngress>-canary`) and `ingressClass` (both only used when graylane creates an Ingress).

The canary Ingress is a copy of the stable one pointing at the canary Service, with
`nginx.ingress.kubernetes.io/canary: "true"` and `canary-weight`. ingress-nginx evaluates
`canary-by-header` (with `-value` for an exact value or `-pattern` for a regular expression) first, then
`canary-by-cookie` (a cookie set to `always`), then the weight; so a canary Ingress carries at most one
header rule (header, user-id digit or user-hash bucket) and one cookie rule. No circuit breaker.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from functions.core.capabilities import MATCHING, WHAT, stage_of
from functions.core.effects import Protection, RoutePlan
from functions.core.policy import Policy
from functions.core.routing import Need, Option, Owned, Problem, RouterMetrics, Versions, text_option
from functions.core.values import value
from functions.errors import ConfigError, MissingObject
from functions.providers.routers._common import (
    MANAGED_BY,
    PROTECTION_ANNOTATION,
    Kind,
    Objects,
    annotation_ops,
    check_plan,
    choice_option,
    decode_plan,
    header_rule,
    live_plan,
    option,
    plan_note,
)
from functions.providers.routers.base import Cluster, RouteTarget

NAME = "nginx"
OPTIONS = (
    Option("stableIngress", "name", "the app's Ingress (rate limits go on it)", "the app's name"),
    Option("stableService", "name", "the stable's Service", "workload.name"),
    Option("canaryService", "name", "the canary's Service", "workload.canary"),
    Option("host", "text", "the host of an Ingress graylane creates"),
    Option("port", "integer", "the Services' port", "80"),
    Option("canaryIngress", "name", "the canary Ingress graylane creates", "<stableIngress>-canary"),
    Option("ingressClass", "text", "the ingressClassName of an Ingress graylane creates"),
    Option(
        "create",
        "boolean",
        "create the stable Ingress when it does not exist (the canary Ingress is always graylane's)",
        "false",
    ),
    Option(
        "userProtection",
        "choice",
        "what to do with a limit-rps / limit-rpm of the user's on the stable Ingress: "
        "keep it (graylane's is not written), or replace it with graylane's until the release ends (one "
        "annotation cannot hold two limits: no wrap)",
        "keep",
        choices=("keep", "replace"),
    ),
)
CAPABILITIES = (MATCHING - {"source-ip"}) | {"weights", "rate-limit"}  # one canary header and cookie rule
WHY_NOT = {
    "session-affinity": "ingress-nginx pins a client to the canary by the canary Ingress's affinity cookie "
    "(affinity-canary-behavior: sticky), but to the stable only by affinity annotations on "
    "the user's main Ingress, which graylane does not own; without them a stable client "
    "re-draws at every request and drifts onto the canary, past the weight"
}
METRICS = RouterMetrics(
    "nginx_ingress_controller_requests",
    ("namespace", "service"),
    "status",
    "5..",
    "nginx_ingress_controller_request_duration_seconds_bucket",
)
OWNS = (
    Owned("Ingress", "<canaryIngress> (whole object)", "the canary Ingress graylane creates"),
    Owned(
        "Ingress",
        "/metadata/annotations/nginx.ingress.kubernetes.io~1limit-{rps,rpm,burst-multiplier}",
        "the rate limit on the stable Ingress (while graylane.dev/protection says it is graylane's)",
    ),
    Owned("Ingress", "/metadata/annotations/graylane.dev~1protection", "marks the limit as graylane's"),
    Owned(
        "Ingress",
        "/metadata/annotations/graylane.dev~1replaced-annotations",
        "userProtection replace: the user's limit annotations, put back when the release ends",
    ),
)
_HEADER_RULES = ("header", "header-regex", "user-id-digit", "user-hash")  # all become one canary-by-header


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    """canary-by-cookie routes a cookie set to `always`; limit-rps / limit-rpm count per second or minute; one
    canary Ingress carries one header rule and one cookie rule per stage."""
    from functions.core.policy_reader import parse_duration

    problems: list[Problem] = []
    first: dict[tuple[str, str], str] = {}
    for path, feature, node in needs:
        if feature == "cookie" and (not isinstance(node, Mapping) or node.get("value") != "always"):
            problems.append(
                (
                    path,
                    f"{WHAT[feature]} with router nginx needs value: always (canary-by-cookie "
                    "routes a cookie set to 'always')",
                )
            )
        if (
            feature == "rate-limit"
            and isinstance(node, Mapping)
            and parse_duration(node.get("period", 1)) not in (None, 1.0, 60.0)
        ):
            problems.append(
                (path, f"{WHAT[feature]} with router nginx needs period 1s or 1m (limit-rps / limit-rpm)")
            )
        group = (
            "header, userIdDigit or userHash rule"
            if feature in _HEADER_RULES
            else "cookie rule"
            if feature == "cookie"
            else ""
        )
        if group and ".abtest.match[" in path:
            key = (stage_of(path), group)
            if key in first:
                problems.append(
                    (
                        path,
                        f"is not supported by router nginx: at most one {group} per stage "
                        f"({first[key]} is one)",
                    )
                )
            else:
                first[key] = path.rsplit(".", 1)[-1]
    return problems


def measured_by(options: Mapping[str, Any]) -> str:
    return NAME


def versions(policy: Policy) -> Versions:
    opts, e = policy.router.options, re.escape
    stable = text_option(opts, "stableService", policy.stable_workload)
    canary = text_option(opts, "canaryService", policy.canary_workload)
    return Versions(
        stable=(("namespace", e(policy.namespace)), ("service", e(stable))),
        canary=(("namespace", e(policy.namespace)), ("service", e(canary))),
        names={"stable": stable, "canary": canary},
    )


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> NginxRouter:
    return NginxRouter(cluster.api_client(NAME))


INGRESS = Kind("networking.k8s.io", "v1", "ingresses", "Ingress")
PREFIX = "nginx.ingress.kubernetes.io/"
CANARY, WEIGHT = PREFIX + "canary", PREFIX + "canary-weight"
BY_HEADER, HEADER_VALUE, HEADER_PATTERN = (
    PREFIX + "canary-by-header",
    PREFIX + "canary-by-header-value",
    PREFIX + "canary-by-header-pattern",
)
BY_COOKIE = PREFIX + "canary-by-cookie"
RULE_KEYS = (BY_HEADER, HEADER_VALUE, HEADER_PATTERN, BY_COOKIE)
LIMIT_RPS, LIMIT_RPM, LIMIT_BURST = (
    PREFIX + "limit-rps",
    PREFIX + "limit-rpm",
    PREFIX + "limit-burst-multiplier",
)
LIMITS = (LIMIT_RPS, LIMIT_RPM, LIMIT_BURST)
REPLACED = "graylane.dev/replaced-annotations"  # userProtection replace: the user's limit annotations
_USER_PROTECTION = {
    "keep": "kept it, graylane's rate limit is not written over it (router option userProtection: replace writes "
    "graylane's in its place for the release)",
    "replace": "graylane's rate limit takes its place for the release (userProtection: replace); the user's "
    "annotations are put back when the release ends",
}


@value
class _Setup:
    namespace: str
    stable_ingress: str
    canary_ingress: str
    stable: str
    canary: str
    host: str
    port: int
    ingress_class: str
    create: bool = False
    user_protection: str = "keep"

    @property
    def where(self) -> str:
        return f"nginx router for {self.namespace}/{self.stable_ingress}"


def _setup(target: RouteTarget) -> _Setup:
    opts, where = target.options, f"nginx router for {target.namespace}/{target.app}"
    stable_ingress = option(opts, "stableIngress", target.app, str, where)
    return _Setup(
        namespace=target.namespace,
        stable_ingress=stable_ingress,
        canary_ingress=option(opts, "canaryIngress", f"{stable_ingress}-canary", str, where),
        stable=option(opts, "stableService", target.stable, str, where),
        canary=option(opts, "canaryService", target.canary, str, where),
        host=option(opts, "host", "", str, where) if "host" in opts else "",
        port=option(opts, "port", 80, int, where),
        ingress_class=option(opts, "ingressClass", "", str, where) if "ingressClass" in opts else "",
        create=opts.get("create") is True,
        user_protection=choice_option(opts, "userProtection", _USER_PROTECTION, where),
    )


# --- rendering (pure) ------------------------------------------------------------------------------------


def _stable_spec(s: _Setup) -> dict[str, Any]:
    backend = {"service": {"name": s.stable, "port": {"number": s.port}}}
    rule: dict[str, Any] = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
    if s.host:
        rule["host"] = s.host
    spec: dict[str, Any] = {"rules": [rule]}
    if s.ingress_class:
        spec["ingressClassName"] = s.ingress_class
    return spec


def _canary_spec(stable_spec: dict[str, Any], s: _Setup) -> dict[str, Any]:
    """The stable Ingress's spec with every backend on the stable Service moved to the canary Service."""
    spec = copy.deepcopy(stable_spec)
    spec.pop("tls", None)  # ingress-nginx takes TLS from the main Ingress
    backends = [
        p.get("backend", {}) for r in spec.get("rules", []) for p in r.get("http", {}).get("paths", [])
    ]
    for backend in [*backends, spec.get("defaultBackend") or {}]:
        if backend.get("service", {}).get("name") == s.stable:
            backend["service"]["name"] = s.canary
    return spec


def _rule_annotations(plan: RoutePlan, s: _Setup) -> dict[str, str | None]:
    wanted: dict[str, str | None] = dict.fromkeys(RULE_KEYS)
    for m in plan.match:
        if m.kind == "cookie":
            if wanted[BY_COOKIE] is not None or m.regex or m.value != "always":
                raise ConfigError(f"{s.where}: cookie rules need value 'always' and at most one per plan")
            wanted[BY_COOKIE] = m.name
            continue
        if wanted[BY_HEADER] is not None:
            raise ConfigError(f"{s.where}: a canary Ingress carries at most one header rule")
        name, value, regex = header_rule(m)
        wanted[BY_HEADER] = name
        wanted[HEADER_PATTERN if regex else HEADER_VALUE] = value
    return wanted


def _rate_limit(protection: Protection, s: _Setup) -> dict[str, str | None]:
    rl = protection.rate_limit
    if rl is None:
        return {LIMIT_RPS: None, LIMIT_RPM: None, LIMIT_BURST: None}
    if rl.period not in (1.0, 60.0):
        raise ConfigError(
            f"{s.where}: a rate limit period of {rl.period:g}s cannot be written; "
            "ingress-nginx limits per second (1s) or per minute (60s)"
        )
    per_second = rl.period == 1.0
    return {
        LIMIT_RPS: str(rl.average) if per_second else None,
        LIMIT_RPM: None if per_second else str(rl.average),
        LIMIT_BURST: str(max(1, math.ceil(rl.burst / rl.average))),
    }


def _users_limits(ingress: Mapping[str, Any]) -> dict[str, str]:
    """The user's limit-rps / limit-rpm annotations on an Ingress: none while graylane's limit is there (the
    user's, if it replaced them, are in graylane.dev/replaced-annotations)."""
    notes = ingress.get("metadata", {}).get("annotations") or {}
    if notes.get(PROTECTION_ANNOTATION) == "rate-limit":
        return {}
    return {k: str(notes[k]) for k in (LIMIT_RPS, LIMIT_RPM) if k in notes}


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


class NginxRouter:
    """Router over ingress-nginx canary Ingresses."""

    provider = NAME

    def __init__(self, api_client: Any) -> None:
        self.ingresses = Objects(api_client, INGRESS)

    def reconcile(self, target: RouteTarget) -> None:
        self._ensure(_setup(target))

    def _ensure(self, s: _Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        """(stable Ingress, canary Ingress), created with all traffic on stable if missing."""
        stable = self.ingresses.get(s.namespace, s.stable_ingress)
        if stable is None and not s.create:
            raise MissingObject(
                f"{s.where}: Ingress {s.namespace}/{s.stable_ingress} does not exist: graylane routes on "
                "the user's Ingress; create it, or set router option create: true"
            )
        if stable is None:
            stable = self.ingresses.create(s.namespace, s.stable_ingress, _stable_spec(s))
        canary = self.ingresses.get(s.namespace, s.canary_ingress)
        if canary is not None and not _ours(canary):
            raise ConfigError(
                f"{s.where}: Ingress {s.namespace}/{s.canary_ingress} exists and is not graylane's (no "
                "label app.kubernetes.io/managed-by: graylane): set router option canaryIngress to a "
                "name graylane may create"
            )
        if canary is None:
            canary = self.ingresses.create(
                s.namespace,
                s.canary_ingress,
                _canary_spec(stable["spec"], s),
                annotations={CANARY: "true", WEIGHT: "0"},
            )
        return stable, canary

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        s = _setup(target)
        check_plan(plan, self.provider, CAPABILITIES, s.where)
        if plan.baseline:  # validate refuses spec.baseline already
            raise ConfigError(
                f"{s.where}: a fresh baseline (spec.baseline) needs a three-way split; the canary "
                "Ingress splits two ways"
            )
        wanted = _rule_annotations(plan, s)
        _, canary = self._ensure(s)
        ops = annotation_ops(canary, {CANARY: "true", WEIGHT: str(plan.canary), **wanted, **plan_note(plan)})
        self.ingresses.write(canary, ops, "set routes")

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        s = _setup(target)
        canary = self.ingresses.read(s.namespace, s.canary_ingress)
        notes = canary["metadata"].get("annotations") or {}
        try:
            weight = int(notes.get(WEIGHT, "0")) if notes.get(CANARY) == "true" else 0
        except ValueError:
            weight = -1  # not a number: reported as drift below
        live = {k: notes.get(k) for k in RULE_KEYS}
        return live_plan(
            decode_plan(canary), 100 - weight, weight, live, lambda plan: _rule_annotations(plan, s), s.where
        )

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        """The user's limit-rps / limit-rpm on the stable Ingress and what userProtection does with it."""
        s = _setup(target)
        stable = self.ingresses.get(s.namespace, s.stable_ingress)
        users = _users_limits(stable) if stable is not None else {}
        if not users:
            return ()
        have = ", ".join(f"{k.removeprefix(PREFIX)} {v}" for k, v in users.items())
        return (
            f"Ingress {s.namespace}/{s.stable_ingress} has the user's {have}: {_USER_PROTECTION[s.user_protection]}",
        )

    def set_protection(self, target: RouteTarget, protection: Protection) -> tuple[str, ...]:
        """The limit annotations on the stable Ingress. A limit the user set there is kept and said
        (userProtection keep), or graylane's written in its place with the user's annotations kept in
        graylane.dev/replaced-annotations, put back as they were when graylane's is cleared or the release
        ends (replace)."""
        s = _setup(target)
        if protection.circuit_breaker is not None:
            raise ConfigError(f"{s.where}: circuit breaking is not supported by router nginx")
        stable, _ = self._ensure(s)
        notes = stable["metadata"].get("annotations") or {}
        ours = notes.get(PROTECTION_ANNOTATION) == "rate-limit"
        users = _users_limits(stable)
        on = protection.rate_limit is not None
        said: tuple[str, ...] = ()
        if users and on:
            have = ", ".join(f"{k.removeprefix(PREFIX)} {v}" for k, v in users.items())
            said = (f"Ingress {s.namespace}/{s.stable_ingress} already has the user's {have}: "
                    f"{_USER_PROTECTION[s.user_protection]}",)  # fmt: skip
            if s.user_protection == "keep":
                return said
        if not on and not ours:
            return ()
        if not on:  # graylane's cleared: the user's annotations, if it stood in for them, come back
            self._put_back(s, stable)
            return ()
        wanted: dict[str, str | None] = {**_rate_limit(protection, s), PROTECTION_ANNOTATION: "rate-limit"}
        if users:  # replace: the user's limit annotations, exactly, until the release ends
            wanted[REPLACED] = json.dumps({k: notes[k] for k in LIMITS if k in notes}, sort_keys=True)
        self.ingresses.write(stable, annotation_ops(stable, wanted), "set protection")
        return said

    def _put_back(self, s: _Setup, stable: dict[str, Any] | None = None) -> None:
        """graylane's limit annotations off the stable Ingress, and the user's it replaced back as they were."""
        stable = stable if stable is not None else self.ingresses.get(s.namespace, s.stable_ingress)
        notes = (stable or {}).get("metadata", {}).get("annotations") or {}
        if stable is None or notes.get(PROTECTION_ANNOTATION) != "rate-limit":
            return
        try:
            users = json.loads(notes[REPLACED]) if REPLACED in notes else {}
        except ValueError:
            users = {}
        wanted: dict[str, str | None] = {**dict.fromkeys(LIMITS), PROTECTION_ANNOTATION: None, REPLACED: None}
        wanted.update({k: str(v) for k, v in users.items() if k in LIMITS})
        self.ingresses.write(stable, annotation_ops(stable, wanted), "put back the user's limit")

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        """All traffic back to stable, then the canary Ingress (graylane's, labelled) is deleted; returns the
        user's Ingresses that still send traffic to the canary Service."""
        s = _setup(target)
        canary = self.ingresses.get(s.namespace, s.canary_ingress)
        if canary is not None and _ours(canary):
            self.ingresses.delete(canary, "finalize")
        stable = self.ingresses.get(s.namespace, s.stable_ingress)
        if stable is not None and REPLACED in (stable["metadata"].get("annotations") or {}):
            self._put_back(
                s, stable
            )  # userProtection replace: the user's limit is back when the release ends
        said = []
        for ing in self.ingresses.list(s.namespace):
            if ing["metadata"]["name"] == s.canary_ingress and _ours(ing):
                continue
            backends = [
                p.get("backend", {})
                for r in ing.get("spec", {}).get("rules") or []
                for p in (r.get("http") or {}).get("paths") or []
            ]
            if any((b.get("service") or {}).get("name") == s.canary for b in backends):
                said.append(
                    f"Ingress {s.namespace}/{ing['metadata']['name']} still sends traffic to Service "
                    f"{s.canary}: it is the user's, graylane left it as it is"
                )
        return tuple(said)
