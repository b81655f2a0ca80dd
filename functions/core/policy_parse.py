"""Policy YAML (a plain mapping) -> `Policy`, collecting every problem with its exact field path. Pure.

YAML keys are camelCase, dataclass fields snake_case. Every problem is `(path, message)` such as
`("spec.stages[4].canary.steps[1].weight", "150 is not allowed; expected an integer 0..100")`;
`parse_policy` raises one `PolicyError` holding all of them, never a bare Python exception.

Stage order:
- abtest, canary and bluegreen stages ("traffic stages") come before the single promote stage;
- protect stages come after it;
- without a promote stage, one is inserted implicitly right before the first protect stage (or at
  the end when there is none). That is after the last traffic stage and after any approval gate that
  follows it, so `canary -> approval promote -> protect` promotes only once the gate is approved.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from functions.core import capabilities, images
from functions.core.policy import (
    ABTestStage,
    Allow,
    Analysis,
    ApprovalStage,
    Approvers,
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    CircuitBreaker,
    GateParam,
    ImageRule,
    LinearSchedule,
    Match,
    MetricCheck,
    MigrationJob,
    NotifySpec,
    Policy,
    PreviewStage,
    PromoteStage,
    ProtectionRule,
    ProtectStage,
    RateLimit,
    RollbackMode,
    RouterSpec,
    Stage,
    Wave,
    WorkloadSpec,
)
from functions.errors import PolicyError

API_VERSION = "graylane.dev/v1alpha1"
KIND = "ReleasePolicy"
ROUTER_PROVIDERS = ("traefik", "istio", "gateway-api", "nginx", "haproxy", "recording")
METRIC_TEMPLATES = ("success-rate", "error-rate", "latency")
JUDGES = ("threshold", "comparison", "sequential")
COMMAND_ACTIONS = ("approve", "reject", "weight", "promote", "pause", "resume", "abort", "rollback")
NOTIFY_KINDS = ("slack", "dingtalk", "feishu", "wecom", "webhook")
STAGE_KINDS = ("preview", "approval", "abtest", "canary", "bluegreen", "promote", "protect")
TRAFFIC_STAGES = ("abtest", "canary", "bluegreen")

Problem = tuple[str, str]
T = TypeVar("T")
_MISSING: Any = object()
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_PARAM = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: header and cookie names
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DNS_EXPECTED = "a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)"
_REQUIRED_HINTS = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": "a mapping with name and namespace",
    "spec": "a mapping with image, router and stages",
    "image": "a mapping with repository (and optional tags, semver)",
    "router": "a mapping with provider (" + ", ".join(ROUTER_PROVIDERS) + ") and its options",
    "stages": "a non-empty list of stages (" + ", ".join(STAGE_KINDS) + ")",
    "repository": "an image repository such as registry.example.com/team/app",
    "name": DNS_EXPECTED,
    "metrics": "a non-empty list of metrics",
    "match": "a non-empty list of match rules",
    "spec.notify.kind": "one of " + ", ".join(NOTIFY_KINDS),
    "spec.protection.alert": "an alertname",
}


def _prune(value: Any, depth: int = 3) -> Any:
    """A small copy of value, so that showing a huge (or alias-bombed) YAML node stays cheap."""
    if isinstance(value, Mapping):
        items = list(value.items())[:8]
        return {str(k): _prune(v, depth - 1) for k, v in items} if depth > 0 else "{...}"
    if isinstance(value, list):
        return [_prune(v, depth - 1) for v in value[:8]] if depth > 0 else "[...]"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"{str(value)[:20]}..."
    return value


def show(value: Any) -> str:
    """A value as the user wrote it, JSON-style and shortened."""
    try:
        text = json.dumps(_prune(value), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


class Reader:
    """Reads typed fields out of plain mappings, recording a problem instead of raising."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append((path or "(document)", message))

    def bad(self, path: str, value: Any, expected: str) -> None:
        self.add(path, f"{show(value)} is not allowed; expected {expected}")

    def fields(self, node: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        """The mapping at path (or {} after recording why not); unknown keys and missing ones are problems."""
        if node is None and not required:
            return {}
        if not isinstance(node, Mapping):
            self.bad(path, node, f"a mapping with keys {', '.join(allowed)}")
            return {}
        for key in node:
            if key not in allowed:
                self.add(join(path, key), f"unknown key; allowed keys: {', '.join(allowed)}")
        for key in required:
            if key not in node:
                where = re.sub(r"\[\d+\]", "", join(path, key))
                hint = _REQUIRED_HINTS.get(where) or _REQUIRED_HINTS.get(str(key))
                self.add(join(path, key), f"is required; expected {hint}" if hint else "is required")
        return {k: v for k, v in node.items() if k in allowed}

    def value(self, m: Mapping, key: str, path: str, default: T, check: Callable[[Any], T | None],
              expected: str) -> T:
        """m[key] converted by check (None means invalid), or default when absent."""
        if key not in m:
            return default
        got = check(m[key])
        if got is None:
            self.bad(join(path, key), m[key], expected)
            return default
        return got

    def text(self, m: Mapping, key: str, path: str, default: str = "", pattern: re.Pattern[str] | None = None,
             expected: str = "a non-empty string") -> str:
        def check(v: Any) -> str | None:
            ok = isinstance(v, str) and v != "" and (pattern is None or pattern.fullmatch(v) is not None)
            return v if ok else None

        return self.value(m, key, path, default, check, expected)

    def integer(self, m: Mapping, key: str, path: str, default: Any, lo: int, hi: int | None = None) -> Any:
        expected = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        return self.value(m, key, path, default,
                          lambda v: v if _is_int(v) and lo <= v and (hi is None or v <= hi) else None, expected)

    def number(self, m: Mapping, key: str, path: str, default: Any, ok: Callable[[float], bool],
               expected: str) -> Any:
        return self.value(m, key, path, default,
                          lambda v: float(v) if _is_number(v) and ok(float(v)) else None, expected)

    def boolean(self, m: Mapping, key: str, path: str, default: bool) -> bool:
        return self.value(m, key, path, default, lambda v: v if isinstance(v, bool) else None, "true or false")

    def duration(self, m: Mapping, key: str, path: str, default: Any, positive: bool = False) -> Any:
        bound = "> 0" if positive else ">= 0"
        expected = f"a duration such as 500ms, 10s, 2m, 1h30m or a number of seconds {bound}"
        return self.value(m, key, path, default,
                          lambda v: d if (d := parse_duration(v)) is not None and (d > 0 or not positive) else None,
                          expected)

    def choice(self, m: Mapping, key: str, path: str, default: str, options: tuple[str, ...]) -> str:
        return self.value(m, key, path, default, lambda v: v if v in options else None, "one of " + ", ".join(options))

    def strings(self, m: Mapping, key: str, path: str) -> tuple[str, ...]:
        def ok(v: Any) -> tuple[str, ...] | None:
            return tuple(v) if isinstance(v, list) and all(isinstance(s, str) and s for s in v) else None

        return self.value(m, key, path, (), ok, "a list of non-empty strings")

    def items(self, m: Mapping, key: str, path: str, non_empty: bool = False) -> list[tuple[str, Any]]:
        """(path, item) for each element of the list m[key]."""
        if key not in m or (m[key] is None and not non_empty):
            if non_empty:
                self.add(join(path, key), "is required; expected a non-empty list")
            return []
        v = m[key]
        if not isinstance(v, list) or (non_empty and not v):
            self.bad(join(path, key), v, "a non-empty list" if non_empty else "a list")
            return []
        return [(f"{join(path, key)}[{i}]", item) for i, item in enumerate(v)]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def parse_duration(value: Any) -> float | None:
    """Seconds from `500ms`, `10s`, `2m`, `1h30m`, `"90"` or a plain number; None when not a duration."""
    if _is_number(value):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    elif _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    else:
        return None
    return seconds if math.isfinite(seconds) else None


# --- circuit breaker expressions (Traefik grammar) -------------------------------------------------

_CB_FUNCS = {"NetworkErrorRatio": 0, "ResponseCodeRatio": 4, "LatencyAtQuantileMS": 1}
_CB_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<logic>&&|\|\|)|(?P<cmp>>=|<=|==|!=|>|<)"
                       r"|(?P<punct>[(),]))")
CB_EXPECTED = ("NetworkErrorRatio(), ResponseCodeRatio(from,to,dividedByFrom,dividedByTo) or "
               "LatencyAtQuantileMS(q) compared (> < >= <= == !=) with a number, combined with && and ||")


class _CBSyntax(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"{message} at position {pos}")


def _cb_tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _CB_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            start = len(text) - len(text[pos:].lstrip())
            raise _CBSyntax(f"unexpected {text[start]!r}", start)
        kind = m.lastgroup or ""
        out.append((kind, m[kind], m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _CBParser:
    def __init__(self, text: str) -> None:
        self.tokens = _cb_tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, kind: str, value: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind or (value is not None and tok[1] != value):
            found = "end of expression" if tok[0] == "end" else repr(tok[1])
            raise _CBSyntax(f"expected {what or value or kind}, found {found}", tok[2])
        self.i += 1
        return tok

    def expression(self) -> None:
        self.conjunction()
        while self.peek()[:2] == ("logic", "||"):
            self.i += 1
            self.conjunction()

    def conjunction(self) -> None:
        self.atom()
        while self.peek()[:2] == ("logic", "&&"):
            self.i += 1
            self.atom()

    def atom(self) -> None:
        if self.peek()[:2] == ("punct", "("):
            self.i += 1
            self.expression()
            self.take("punct", ")")
            return
        _, name, pos = self.take("name", what="a function name")
        if name not in _CB_FUNCS:
            raise _CBSyntax(f"unknown function {name!r}", pos)
        self.take("punct", "(")
        args: list[float] = []
        while self.peek()[:2] != ("punct", ")"):
            if args:
                self.take("punct", ",")
            args.append(float(self.take("num", what="a number")[1]))
        self.take("punct", ")")
        if len(args) != _CB_FUNCS[name]:
            raise _CBSyntax(f"{name} takes {_CB_FUNCS[name]} argument(s), got {len(args)}", pos)
        if name == "LatencyAtQuantileMS" and not 0 < args[0] <= 100:
            raise _CBSyntax(f"quantile {args[0]:g} is outside 0..100", pos)
        self.take("cmp", what="a comparison operator (> < >= <= == !=)")
        self.take("num", what="a number")


def circuit_breaker_error(expression: str) -> str | None:
    """Why expression is not a Traefik circuit breaker expression (with the position), or None."""
    try:
        parser = _CBParser(expression)
        parser.expression()
        parser.take("end", what="end of expression (&& or ||)")
    except _CBSyntax as err:
        return str(err)
    return None


# --- sections --------------------------------------------------------------------------------------


def _circuit_breaker(r: Reader, node: Any, path: str) -> CircuitBreaker | None:
    m = r.fields(node, path, ("expression",), ("expression",))
    expr = r.text(m, "expression", path)
    if not expr:
        return None
    error = circuit_breaker_error(expr)
    if error:
        r.add(join(path, "expression"), f"{show(expr)} is not allowed; {error}; expected {CB_EXPECTED}")
    return CircuitBreaker(expr)


def _image(r: Reader, node: Any, path: str) -> ImageRule:
    m = r.fields(node, path, ("repository", "tags", "semver"), ("repository",))
    repo = r.text(m, "repository", path, pattern=re.compile(r"[^\s@]+"), expected="an image repository without tag or digest")
    if ":" in repo.rsplit("/", 1)[-1]:  # a colon after the last slash starts a tag; registry ports come earlier
        r.bad(join(path, "repository"), repo, "an image repository without a tag (put tag rules in tags/semver)")
    tags = r.text(m, "tags", path, expected="a regular expression")
    if tags:
        try:
            re.compile(tags)
        except re.error as err:
            r.bad(join(path, "tags"), tags, f"a valid regular expression ({err})")
    semver = r.text(m, "semver", path, expected="a semver range")
    if semver:
        try:
            images.parse_range(semver)
        except ValueError as err:
            r.bad(join(path, "semver"), semver, f"a semver range such as '>=1.2.0 <2.0.0', '^1.2', '~1.2.3', '1.x' ({err})")
    return ImageRule(repo, tags, semver)


def _workload(r: Reader, node: Any, path: str) -> WorkloadSpec:
    m = r.fields(node, path, ("kind", "name", "canary", "container", "replicas"))
    kind = r.choice(m, "kind", path, "Deployment", ("Deployment",))
    name = r.text(m, "name", path, pattern=_DNS_NAME, expected="a Kubernetes object name")
    canary = r.text(m, "canary", path, pattern=_DNS_NAME, expected="a Kubernetes object name")
    if canary and canary == name:
        r.bad(join(path, "canary"), canary, "a name different from workload.name")
    container = r.text(m, "container", path, pattern=_DNS_LABEL, expected=DNS_EXPECTED)
    replicas = r.integer(m, "replicas", path, None, 0)
    return WorkloadSpec(kind, name, canary, container, replicas)  # type: ignore[arg-type]


def _router(r: Reader, node: Any, path: str) -> RouterSpec:
    if not isinstance(node, Mapping):
        r.bad(path, node, "a mapping with provider and provider options")
        return RouterSpec("")
    if "provider" not in node:
        r.add(join(path, "provider"), "is required; expected one of " + ", ".join(ROUTER_PROVIDERS))
    provider = r.choice(node, "provider", path, "", ROUTER_PROVIDERS)
    options = {}
    for key, value in node.items():
        if key == "provider":
            continue
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key):
            r.bad(join(path, key), key, "a camelCase option name")
        options[str(key)] = copy.deepcopy(value)
    return RouterSpec(provider, options)


def _metric(r: Reader, node: Any, path: str) -> MetricCheck:
    allowed = ("name", "template", "query", "judge", "min", "max", "tolerance", "relative")
    m = r.fields(node, path, allowed, ("name",))
    name = r.text(m, "name", path, pattern=_DNS_LABEL, expected=DNS_EXPECTED)
    template = r.choice(m, "template", path, "", METRIC_TEMPLATES)
    query = r.text(m, "query", path, expected="a PromQL query")
    if ("template" in m) == ("query" in m):
        r.add(path, "expected exactly one of template (" + ", ".join(METRIC_TEMPLATES) + ") or query")
    judge = r.choice(m, "judge", path, "threshold", JUDGES)
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
            r.add(join(path, key), f"is not allowed with judge {judge}; expected it only with judge threshold")
    for key in ("tolerance", "relative"):
        if key in m and judge != "comparison":
            r.add(join(path, key), f"is not allowed with judge {judge}; expected it only with judge comparison")
    if judge == "sequential" and template not in ("success-rate", "error-rate"):
        r.bad(join(path, "judge"), judge, "threshold or comparison: the sequential test needs request and error "
                                          "counts, i.e. template success-rate or error-rate")
    return MetricCheck(name, template, query, judge, lo, hi, tolerance, relative)  # type: ignore[arg-type]


def _analysis(r: Reader, node: Any, path: str) -> Analysis:
    allowed = ("interval", "window", "startStep", "failureLimit", "inconclusiveLimit", "minRequests", "alpha",
               "prometheus", "metrics")
    m = r.fields(node, path, allowed, ("metrics",))
    checked = [(p, _metric(r, item, p)) for p, item in r.items(m, "metrics", path, non_empty="metrics" in m)]
    _unique(r, [(p, mt.name) for p, mt in checked], "name", "a metric name unique in the analysis")
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
        prometheus=r.text(m, "prometheus", path, pattern=re.compile(r"https?://\S+"), expected="an http(s):// URL"),
    )


def _unique(r: Reader, named: list[tuple[str, str]], key: str, expected: str) -> None:
    seen: dict[str, str] = {}
    for path, name in named:
        if name and name in seen:
            r.bad(join(path, key), name, f"{expected} ({seen[name]} uses it too)")
        seen.setdefault(name, path)


def _allow(r: Reader, node: Any, path: str) -> Allow:
    m = r.fields(node, path, ("users", "channels"))
    return Allow(r.strings(m, "users", path), r.strings(m, "channels", path))


def _allow_map(r: Reader, node: Any, path: str, ok_key: Callable[[str], str | None]) -> tuple[tuple[str, Allow], ...]:
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
        gates=_allow_map(r, m.get("gates"), join(path, "gates"),
                         lambda k: None if k in gates else f"the name of an approval gate ({known})"),
        actions=_allow_map(r, m.get("actions"), join(path, "actions"),
                           lambda k: None if k in COMMAND_ACTIONS else "one of " + ", ".join(COMMAND_ACTIONS)),
    )


def _waves(r: Reader, spec: Mapping) -> tuple[Wave, ...]:
    out = []
    for p, item in r.items(spec, "waves", "spec"):
        m = r.fields(item, p, ("name", "cluster", "approval"), ("name",))
        out.append((p, Wave(r.text(m, "name", p, pattern=_DNS_LABEL, expected=DNS_EXPECTED),
                            r.text(m, "cluster", p, expected="a kubeconfig context name"),
                            r.boolean(m, "approval", p, False))))
    _unique(r, [(p, w.name) for p, w in out], "name", "a wave name unique in the policy")
    return tuple(w for _, w in out)


def _protection(r: Reader, spec: Mapping) -> tuple[ProtectionRule, ...]:
    out = []
    allowed = ("alert", "match", "rateLimitFactor", "floor", "circuitBreaker", "holdDown")
    for p, item in r.items(spec, "protection", "spec"):
        m = r.fields(item, p, allowed, ("alert",))
        match = m.get("match") or {}
        if not isinstance(match, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in match.items()):
            r.bad(join(p, "match"), match, "a mapping of label name to string value")
            match = {}
        cb = _circuit_breaker(r, m["circuitBreaker"], join(p, "circuitBreaker")) if "circuitBreaker" in m else None
        out.append(ProtectionRule(
            alert=r.text(m, "alert", p, expected="an alertname"),
            match=tuple(sorted(match.items())),
            rate_limit_factor=r.number(m, "rateLimitFactor", p, 1.0, lambda x: 0 < x <= 1, "a number in (0, 1]"),
            floor=r.integer(m, "floor", p, 1, 1),
            circuit_breaker=cb,
            hold_down=r.duration(m, "holdDown", p, 60.0),
        ))
    return tuple(out)


def _notify(r: Reader, spec: Mapping) -> tuple[NotifySpec, ...]:
    out = []
    for p, item in r.items(spec, "notify", "spec"):
        m = r.fields(item, p, ("kind", "url", "secret"), ("kind",))
        if "url" not in m and "secret" not in m:
            r.add(p, "expected url or secret")
        out.append(NotifySpec(r.choice(m, "kind", p, "", NOTIFY_KINDS),
                              r.text(m, "url", p, pattern=re.compile(r"https?://\S+"), expected="an http(s):// URL"),
                              r.text(m, "secret", p, expected="a secret reference")))
    return tuple(out)


# --- stages ----------------------------------------------------------------------------------------

_MATCH_FORMS = ("header", "cookie", "userIdDigit", "userHash", "sourceIp")


def _regex(r: Reader, m: Mapping, key: str, path: str) -> str:
    text = r.text(m, key, path, expected="a regular expression")
    if text:
        try:
            re.compile(text)
        except re.error as err:
            r.bad(join(path, key), text, f"a valid regular expression ({err})")
    return text


def _digits(v: Any) -> tuple[int, ...] | None:
    ok = isinstance(v, list) and v and all(_is_int(d) and 0 <= d <= 9 for d in v) and len(set(v)) == len(v)
    return tuple(v) if ok else None


def _match(r: Reader, node: Any, path: str) -> Match:
    present = [k for k in _MATCH_FORMS if isinstance(node, Mapping) and k in node]
    if len(present) != 1:
        r.fields(node, path, (*_MATCH_FORMS, "value", "regex"))
        found = f" (found {', '.join(present)})" if present else ""
        r.add(path, f"expected exactly one of {', '.join(_MATCH_FORMS)}{found}")
        return Match("header")
    form = present[0]
    if form in ("header", "cookie"):
        m = r.fields(node, path, (form, "value", "regex"))
        name = r.text(m, form, path, pattern=_TOKEN, expected=f"a {form} name")
        if ("value" in m) == ("regex" in m):
            r.add(path, f"expected exactly one of value or regex for the {form}")
        value = r.text(m, "value", path, expected="a non-empty string")
        return Match(form, name=name, value=value, regex=_regex(r, m, "regex", path))  # type: ignore[arg-type]
    r.fields(node, path, (form,))
    sub = join(path, form)
    if form == "sourceIp":
        cidrs = r.value(node, form, path, (), lambda v: tuple(v) if isinstance(v, list) and v else None,
                        "a non-empty list of IP addresses or CIDR ranges")
        for i, cidr in enumerate(cidrs):
            try:
                ipaddress.ip_network(cidr)
            except (ValueError, TypeError) as err:
                r.bad(f"{sub}[{i}]", cidr, f"an IP address or CIDR range ({err})")
        return Match("source-ip", cidrs=tuple(str(c) for c in cidrs))
    if form == "userIdDigit":
        m = r.fields(node[form], sub, ("header", "digits"), ("header", "digits"))
        return Match("user-id-digit", name=r.text(m, "header", sub, pattern=_TOKEN, expected="a header name"),
                     digits=r.value(m, "digits", sub, (), _digits, "a non-empty list of unique digits 0..9"))
    m = r.fields(node[form], sub, ("header", "percent", "salt"), ("header", "percent"))
    return Match("user-hash", name=r.text(m, "header", sub, pattern=_TOKEN, expected="a header name"),
                 percent=r.integer(m, "percent", sub, 0, 1, 99), salt=r.text(m, "salt", sub))


def _stage_analysis(r: Reader, m: Mapping, path: str, has_analysis: bool) -> bool:
    wanted = r.boolean(m, "analysis", path, has_analysis)
    if wanted and not has_analysis:
        r.bad(join(path, "analysis"), True, "false or absent because spec.analysis is not set")
        return False
    return wanted


def _preview(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("environment", "namespace", "workload", "migration"))
    migration = None
    if m.get("migration") is not None:
        mp = join(path, "migration")
        mm = r.fields(m["migration"], mp, ("name", "command", "image"), ("name",))
        migration = MigrationJob(r.text(mm, "name", mp, pattern=_DNS_LABEL, expected=DNS_EXPECTED),
                                 r.strings(mm, "command", mp),
                                 r.value(mm, "image", mp, "", lambda v: v if isinstance(v, str) else None,
                                         "an image reference, or empty for the release image"))
    return PreviewStage(
        environment=r.text(m, "environment", path, "preview", pattern=_DNS_LABEL, expected=DNS_EXPECTED),
        namespace=r.text(m, "namespace", path, pattern=_DNS_LABEL, expected=DNS_EXPECTED),
        workload=r.text(m, "workload", path, pattern=_DNS_NAME, expected="a Kubernetes object name"),
        migration=migration,
    )


def _gate_param(r: Reader, node: Any, path: str) -> GateParam:
    m = r.fields(node, path, ("name", "default", "min", "max"), ("name",))
    name = r.text(m, "name", path, pattern=_PARAM, expected="a parameter name (a letter, then letters, digits, _ or -)")
    lo, hi = r.integer(m, "min", path, 0, -(2**31)), r.integer(m, "max", path, 100, -(2**31))
    if lo > hi:
        r.bad(join(path, "min"), lo, f"an integer <= max ({hi})")
    default = r.integer(m, "default", path, None, lo, max(lo, hi))
    return GateParam(name, default, lo, hi)


def _approval(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("name", "params", "timeout", "onTimeout"), ("name",))
    params = [(p, _gate_param(r, item, p)) for p, item in r.items(m, "params", path)]
    _unique(r, [(p, g.name) for p, g in params], "name", "a parameter name unique in the gate")
    timeout = None if m.get("timeout") is None else r.duration(m, "timeout", path, None, positive=True)
    return ApprovalStage(
        name=r.text(m, "name", path, pattern=_DNS_LABEL, expected=DNS_EXPECTED),
        params=tuple(g for _, g in params),
        timeout=timeout,
        on_timeout=r.choice(m, "onTimeout", path, "reject", ("reject", "approve")),  # type: ignore[arg-type]
    )


def _abtest(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("match", "duration", "analysis"), ("match",))
    return ABTestStage(
        match=tuple(_match(r, item, p) for p, item in r.items(m, "match", path, non_empty="match" in m)),
        duration=r.duration(m, "duration", path, 0.0),
        analysis=_stage_analysis(r, m, path, has_analysis),
    )


_CANARY_KEYS = {"steps": ("steps",), "manual": ("weightParam", "weight", "hold"), "linear": ("linear",)}


def _canary_mode(r: Reader, m: Mapping, path: str) -> str:
    if "mode" in m:
        return r.choice(m, "mode", path, "steps", tuple(_CANARY_KEYS))
    inferred = [mode for mode, keys in _CANARY_KEYS.items() if any(k in m for k in keys)]
    if len(inferred) != 1:
        r.add(path, "expected exactly one of steps (mode steps), linear (mode linear) or weightParam/weight "
                    "(mode manual), or an explicit mode")
        return ""
    return inferred[0]


def _canary_step(r: Reader, node: Any, path: str) -> CanaryStep:
    m = r.fields(node, path, ("weight", "pause"), ("weight",))
    pause = None if m.get("pause") is None else r.duration(m, "pause", path, None)
    return CanaryStep(r.integer(m, "weight", path, 0, 0, 100), pause)


def _linear(r: Reader, node: Any, path: str) -> LinearSchedule:
    m = r.fields(node, path, ("start", "end", "increment", "every"), ("start", "end", "increment", "every"))
    start, end = r.integer(m, "start", path, 0, 0, 100), r.integer(m, "end", path, 100, 0, 100)
    if "start" in m and "end" in m and start >= end:
        r.bad(join(path, "end"), end, f"an integer greater than start ({start}) and at most 100")
    return LinearSchedule(start, end, r.integer(m, "increment", path, 1, 1, 100),
                          r.duration(m, "every", path, 60.0, positive=True))


def _canary(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    all_keys = ("mode", *(k for keys in _CANARY_KEYS.values() for k in keys), "analysis")
    m = r.fields(node, path, all_keys)
    mode = _canary_mode(r, m, path)
    if not mode:
        return CanaryStage(analysis=_stage_analysis(r, m, path, has_analysis))
    for other, keys in _CANARY_KEYS.items():
        for key in keys:
            if other != mode and key in m:
                r.add(join(path, key), f"is not allowed with mode {mode}; expected only "
                                       f"{', '.join(_CANARY_KEYS[mode])}")
    steps = [(p, _canary_step(r, item, p)) for p, item in r.items(m, "steps", path, non_empty=mode == "steps")]
    linear = None
    if mode == "linear":
        if "linear" not in m:
            r.add(join(path, "linear"), "is required with mode linear; expected {start, end, increment, every}")
        linear = _linear(r, m.get("linear"), join(path, "linear"))
    return CanaryStage(
        mode=mode,  # type: ignore[arg-type]
        steps=tuple(s for _, s in steps),
        # an invalid weightParam/weight already has its problem: the fallbacks keep the weight rule quiet
        weight_param=r.text(m, "weightParam", path, "" if "weightParam" in m else "weight", pattern=_PARAM,
                            expected="a gate parameter name"),
        weight=r.integer(m, "weight", path, 0 if "weight" in m else None, 0, 100),
        hold=r.duration(m, "hold", path, 0.0),
        linear=linear,
        analysis=_stage_analysis(r, m, path, has_analysis),
    )


def _bluegreen(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("preview", "analysis"))
    return BlueGreenStage(preview=r.duration(m, "preview", path, 0.0),
                          analysis=_stage_analysis(r, m, path, has_analysis))


def _promote(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("keepPrevious",))
    return PromoteStage(keep_previous=r.duration(m, "keepPrevious", path, 0.0))


def _rate_limit(r: Reader, node: Any, path: str) -> RateLimit:
    m = r.fields(node, path, ("average", "burst", "period"), ("average",))
    average = r.integer(m, "average", path, 1, 1)
    burst = r.integer(m, "burst", path, average, average) if "average" in m else r.integer(m, "burst", path, 1, 1)
    return RateLimit(average, burst, r.duration(m, "period", path, 1.0, positive=True))


def _protect(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("rateLimit", "circuitBreaker"))
    if m.get("rateLimit") is None and m.get("circuitBreaker") is None:
        r.add(path, "expected rateLimit, circuitBreaker or both")
    rate = _rate_limit(r, m["rateLimit"], join(path, "rateLimit")) if m.get("rateLimit") is not None else None
    cb = m.get("circuitBreaker")
    return ProtectStage(rate_limit=rate,
                        circuit_breaker=_circuit_breaker(r, cb, join(path, "circuitBreaker")) if cb is not None else None)


_STAGE_PARSERS: dict[str, Callable[[Reader, Any, str, bool], Stage]] = {
    "preview": _preview, "approval": _approval, "abtest": _abtest, "canary": _canary,
    "bluegreen": _bluegreen, "promote": _promote, "protect": _protect,
}


def _weight_param_rule(r: Reader, path: str, stage: CanaryStage, params: dict[str, GateParam]) -> None:
    """A manual canary takes its weight from a parameter of an earlier gate, unless it fixes one."""
    if stage.mode != "manual" or not stage.weight_param:
        return
    param = params.get(stage.weight_param)
    if param is None and stage.weight is None:
        declared = ", ".join(sorted(params)) or "none"
        r.bad(join(path, "weightParam"), stage.weight_param,
              f"a parameter declared by an earlier approval gate (declared so far: {declared}), or set weight")
    elif param is not None and (param.min < 0 or param.max > 100):
        r.bad(join(path, "weightParam"), stage.weight_param,
              f"a parameter whose range lies within 0..100 (it is {param.min}..{param.max})")


def _order_rules(r: Reader, parsed: list[tuple[str, Stage]]) -> None:
    """Gate names, weight parameters and the traffic -> promote -> protect order."""
    gates: dict[str, str] = {}
    params: dict[str, GateParam] = {}
    promote_at = next((p for p, s in parsed if isinstance(s, PromoteStage)), "")
    first_protect = ""
    for path, stage in parsed:
        if isinstance(stage, ApprovalStage):
            if stage.name in gates:
                r.bad(join(path, "name"), stage.name, f"a gate name unique in the policy ({gates[stage.name]} uses it)")
            gates.setdefault(stage.name, path)
            params.update((g.name, g) for g in stage.params)
        if isinstance(stage, CanaryStage):
            _weight_param_rule(r, path, stage, params)
        if isinstance(stage, PromoteStage) and path != promote_at:
            r.add(path, f"is not allowed: expected at most one promote stage ({promote_at} is one)")
        if stage.kind in TRAFFIC_STAGES and promote_at and _index(path) > _index(promote_at):
            r.add(path, f"is not allowed after the promote stage {promote_at}; "
                        "expected abtest, canary and bluegreen stages before promote")
        if isinstance(stage, ProtectStage):
            first_protect = first_protect or path
            if promote_at and _index(path) < _index(promote_at):
                r.add(path, f"is not allowed before the promote stage {promote_at}; expected protect stages after it")
        elif first_protect and not promote_at:
            r.add(path, f"is not allowed after the protect stage {first_protect}; expected protect stages last "
                        "(the implicit promote stage goes right before them)")


def _index(path: str) -> int:
    return int(path.split("[", 1)[1].split("]", 1)[0])


def with_implicit_promote(stages: list[Stage]) -> tuple[Stage, ...]:
    """Insert a promote stage before the first protect stage (or at the end) when none is declared."""
    if any(isinstance(s, PromoteStage) for s in stages):
        return tuple(stages)
    at = next((i for i, s in enumerate(stages) if isinstance(s, ProtectStage)), len(stages))
    return (*stages[:at], PromoteStage(), *stages[at:])


def _stages(r: Reader, spec: Mapping, has_analysis: bool) -> tuple[Stage, ...]:
    parsed: list[tuple[str, Stage]] = []
    for path, item in r.items(spec, "stages", "spec", non_empty="stages" in spec):
        if not isinstance(item, Mapping) or len(item) != 1:
            r.bad(path, item, "a mapping with exactly one stage kind: " + ", ".join(STAGE_KINDS))
            continue
        ((kind, body),) = item.items()
        if kind not in _STAGE_PARSERS:
            r.add(join(path, kind), "unknown stage kind; allowed: " + ", ".join(STAGE_KINDS))
            continue
        parsed.append((join(path, kind), _STAGE_PARSERS[kind](r, body, join(path, kind), has_analysis)))
    _order_rules(r, parsed)
    return with_implicit_promote([s for _, s in parsed])


# --- policy ----------------------------------------------------------------------------------------


def _policy(r: Reader, doc: Any) -> Policy:
    top = r.fields(doc, "", ("apiVersion", "kind", "metadata", "spec"), ("apiVersion", "kind", "metadata", "spec"))
    if "apiVersion" in top and top["apiVersion"] != API_VERSION:
        r.bad("apiVersion", top["apiVersion"], API_VERSION)
    if "kind" in top and top["kind"] != KIND:
        r.bad("kind", top["kind"], KIND)
    if not top:
        return Policy("", "", ImageRule(""), RouterSpec(""), ())
    meta_keys = ("name", "namespace", "labels", "annotations")
    meta = r.fields(top["metadata"], "metadata", meta_keys, ("name",)) if "metadata" in top else {}
    name = r.text(meta, "name", "metadata", pattern=_DNS_LABEL, expected=DNS_EXPECTED)
    namespace = r.text(meta, "namespace", "metadata", "default", pattern=_DNS_LABEL, expected=DNS_EXPECTED)
    spec_keys = ("image", "workload", "router", "analysis", "rollback", "approvers", "stages", "waves", "protection",
                 "notify", "revisionHistory")
    spec = r.fields(top.get("spec"), "spec", spec_keys, ("image", "router", "stages")) if "spec" in top else {}
    analysis = _analysis(r, spec["analysis"], "spec.analysis") if spec.get("analysis") is not None else None
    stages = _stages(r, spec, analysis is not None)
    waves = _waves(r, spec)
    gates = {s.name for s in stages if isinstance(s, ApprovalStage)}
    for i, wave in enumerate(waves):
        if wave.approval and f"wave-{wave.name}" in gates:
            r.bad(f"spec.waves[{i}].name", wave.name, f"a name whose gate wave-{wave.name} is not also an approval stage")
    gates |= {f"wave-{w.name}" for w in waves if w.approval}
    policy = Policy(
        name=name,
        namespace=namespace,
        image=_image(r, spec.get("image"), "spec.image") if "image" in spec else ImageRule(""),
        router=_router(r, spec.get("router"), "spec.router") if "router" in spec else RouterSpec(""),
        stages=stages,
        workload=_workload(r, spec.get("workload"), "spec.workload"),
        analysis=analysis,
        rollback=RollbackMode(r.choice(spec, "rollback", "spec", "rollback", tuple(m.value for m in RollbackMode))),
        approvers=_approvers(r, spec.get("approvers"), "spec.approvers", gates),
        waves=waves,
        protection=_protection(r, spec),
        notify=_notify(r, spec),
        revision_history=r.integer(spec, "revisionHistory", "spec", 10, 0, 100),
    )
    for path, message in capabilities.unsupported(policy.router.provider, doc):  # fail at validate, not at run
        r.add(path, message)
    return policy


def problems(doc: Any) -> list[Problem]:
    """Every problem of doc as (field path, message); empty when the policy is valid."""
    r = Reader()
    _policy(r, doc)
    return r.problems


def parse_policy(doc: Mapping, source: str = "") -> Policy:
    """The Policy doc declares; raise PolicyError(problems, source) listing every problem."""
    r = Reader()
    policy = _policy(r, doc)
    if r.problems:
        raise PolicyError(r.problems, source)
    return policy


# --- back to YAML ----------------------------------------------------------------------------------


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


def _stage_doc(s: Stage) -> dict[str, Any]:
    body: dict[str, Any]
    if isinstance(s, PreviewStage):
        mig = s.migration
        body = {"environment": s.environment, "namespace": s.namespace, "workload": s.workload,
                "migration": mig and _compact({"name": mig.name, "command": list(mig.command), "image": mig.image})}
    elif isinstance(s, ApprovalStage):
        params = [_compact({"name": g.name, "default": g.default, "min": g.min, "max": g.max}) for g in s.params]
        body = {"name": s.name, "params": params, "timeout": s.timeout, "onTimeout": s.on_timeout}
    elif isinstance(s, ABTestStage):
        body = {"match": [_match_doc(m) for m in s.match], "duration": s.duration, "analysis": s.analysis}
    elif isinstance(s, CanaryStage):
        body = {"mode": s.mode, "analysis": s.analysis}
        if s.mode == "steps":
            body["steps"] = [_compact({"weight": st.weight, "pause": st.pause}) for st in s.steps]
        elif s.mode == "manual":
            body |= {"weightParam": s.weight_param, "weight": s.weight, "hold": s.hold}
        elif s.linear:
            lin = s.linear
            body["linear"] = {"start": lin.start, "end": lin.end, "increment": lin.increment, "every": lin.every}
    elif isinstance(s, BlueGreenStage):
        body = {"preview": s.preview, "analysis": s.analysis}
    elif isinstance(s, PromoteStage):
        body = {"keepPrevious": s.keep_previous}
    else:
        rl, cb = s.rate_limit, s.circuit_breaker
        body = {"rateLimit": rl and {"average": rl.average, "burst": rl.burst, "period": rl.period},
                "circuitBreaker": cb and {"expression": cb.expression}}
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
    return _compact({
        "interval": a.interval, "window": a.window, "startStep": a.start_step, "failureLimit": a.failure_limit,
        "inconclusiveLimit": a.inconclusive_limit, "minRequests": a.min_requests, "alpha": a.alpha,
        "prometheus": a.prometheus, "metrics": [_metric_doc(m) for m in a.metrics],
    })


def to_doc(policy: Policy) -> dict[str, Any]:
    """The YAML mapping that parses back to an equal policy (durations in seconds, stages explicit)."""
    w, ap = policy.workload, policy.approvers
    spec = {
        "image": _compact({"repository": policy.image.repository, "tags": policy.image.tags,
                           "semver": policy.image.semver}),
        "workload": _compact({"kind": w.kind, "name": w.name, "canary": w.canary, "container": w.container,
                              "replicas": w.replicas}),
        "router": {"provider": policy.router.provider, **policy.router.options},
        "analysis": _analysis_doc(policy.analysis),
        "rollback": policy.rollback.value,
        "approvers": _compact({"default": _allow_doc(ap.default),
                               "gates": {k: _allow_doc(v) for k, v in ap.gates},
                               "actions": {k: _allow_doc(v) for k, v in ap.actions}}),
        "stages": [_stage_doc(s) for s in policy.stages],
        "waves": [_compact({"name": x.name, "cluster": x.cluster, "approval": x.approval}) for x in policy.waves],
        "protection": [_compact({
            "alert": p.alert, "match": dict(p.match), "rateLimitFactor": p.rate_limit_factor, "floor": p.floor,
            "circuitBreaker": p.circuit_breaker and {"expression": p.circuit_breaker.expression},
            "holdDown": p.hold_down}) for p in policy.protection],
        "notify": [_compact({"kind": n.kind, "url": n.url, "secret": n.secret}) for n in policy.notify],
        "revisionHistory": policy.revision_history,
    }
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": policy.name, "namespace": policy.namespace},
            "spec": _compact(spec)}
