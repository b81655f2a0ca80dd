"""The `spec.stages` list of a policy: one reader per stage kind, then the rules across stages. Pure.

Stage order:
- abtest, canary and bluegreen stages ("traffic stages") come before the single promote stage;
- protect stages come after it;
- without a promote stage, one is inserted implicitly right before the first protect stage (or at
  the end when there is none). That is after the last traffic stage and after any approval gate that
  follows it, so `canary -> approval promote -> protect` promotes only once the gate is approved.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from functions.core.breaker_grammar import read_circuit_breaker
from functions.core.policy import (
    FLAG_VARIANTS,
    LOAD_TEST_IMAGE,
    PREVIEW_HEADER,
    ABTestStage,
    ApprovalStage,
    BlueGreenStage,
    CanaryStage,
    CanaryStep,
    FlagStage,
    GateParam,
    LinearSchedule,
    LoadTest,
    Match,
    MigrationJob,
    MirrorStage,
    PreviewStage,
    PreviewTraffic,
    PromoteStage,
    ProtectStage,
    RateLimit,
    Stage,
)
from functions.core.policy_reader import DNS_EXPECTED, DNS_LABEL, DNS_NAME, PARAM, TOKEN, Reader, is_int, join

STAGE_KINDS = ("preview", "approval", "abtest", "canary", "bluegreen", "promote", "protect", "flag", "mirror")
TRAFFIC_STAGES = ("abtest", "canary", "bluegreen", "mirror")
URL = re.compile(r"https?://\S+")
_MATCH_FORMS = ("header", "cookie", "userIdDigit", "userHash", "sourceIp")


def _digits(v: Any) -> tuple[int, ...] | None:
    ok = isinstance(v, list) and v and all(is_int(d) and 0 <= d <= 9 for d in v) and len(set(v)) == len(v)
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
        name = r.text(m, form, path, pattern=TOKEN, expected=f"a {form} name")
        if ("value" in m) == ("regex" in m):
            r.add(path, f"expected exactly one of value or regex for the {form}")
        value = r.text(m, "value", path, expected="a non-empty string")
        return Match(form, name=name, value=value, regex=r.regex(m, "regex", path))  # type: ignore[arg-type]
    r.fields(node, path, (form,))
    sub = join(path, form)
    if form == "sourceIp":
        cidrs: tuple[Any, ...] = r.value(
            node,
            form,
            path,
            (),
            lambda v: tuple(v) if isinstance(v, list) and v else None,
            "a non-empty list of IP addresses or CIDR ranges",
        )
        for i, cidr in enumerate(cidrs):
            try:
                ipaddress.ip_network(cidr)
            except (ValueError, TypeError) as err:
                r.bad(f"{sub}[{i}]", cidr, f"an IP address or CIDR range ({err})")
        return Match("source-ip", cidrs=tuple(str(c) for c in cidrs))
    if form == "userIdDigit":
        m = r.fields(node[form], sub, ("header", "digits"), ("header", "digits"))
        return Match(
            "user-id-digit",
            name=r.text(m, "header", sub, pattern=TOKEN, expected="a header name"),
            digits=r.value(m, "digits", sub, (), _digits, "a non-empty list of unique digits 0..9"),
        )
    m = r.fields(node[form], sub, ("header", "percent", "salt"), ("header", "percent"))
    return Match(
        "user-hash",
        name=r.text(m, "header", sub, pattern=TOKEN, expected="a header name"),
        percent=r.integer(m, "percent", sub, 0, 1, 99),
        salt=r.text(m, "salt", sub),
    )


def _stage_analysis(r: Reader, m: Mapping[str, Any], path: str, has_analysis: bool) -> bool:
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
        migration = MigrationJob(
            r.text(mm, "name", mp, pattern=DNS_LABEL, expected=DNS_EXPECTED),
            r.strings(mm, "command", mp),
            r.value(
                mm,
                "image",
                mp,
                "",
                lambda v: v if isinstance(v, str) else None,
                "an image reference, or empty for the release image",
            ),
        )
    return PreviewStage(
        environment=r.text(m, "environment", path, "preview", pattern=DNS_LABEL, expected=DNS_EXPECTED),
        namespace=r.text(m, "namespace", path, pattern=DNS_LABEL, expected=DNS_EXPECTED),
        workload=r.text(m, "workload", path, pattern=DNS_NAME, expected="a Kubernetes object name"),
        migration=migration,
    )


def _gate_param(r: Reader, node: Any, path: str) -> GateParam:
    m = r.fields(node, path, ("name", "default", "min", "max"), ("name",))
    name = r.text(
        m, "name", path, pattern=PARAM, expected="a parameter name (a letter, then letters, digits, _ or -)"
    )
    lo, hi = r.integer(m, "min", path, 0, -(2**31)), r.integer(m, "max", path, 100, -(2**31))
    if lo > hi:
        r.bad(join(path, "min"), lo, f"an integer <= max ({hi})")
    default = r.integer(m, "default", path, None, lo, max(lo, hi))
    return GateParam(name, default, lo, hi)


def _approval(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("name", "params", "timeout", "onTimeout"), ("name",))
    params = [(p, _gate_param(r, item, p)) for p, item in r.items(m, "params", path)]
    r.unique([(p, g.name) for p, g in params], "name", "a parameter name unique in the gate")
    timeout = None if m.get("timeout") is None else r.duration(m, "timeout", path, None, positive=True)
    return ApprovalStage(
        name=r.text(m, "name", path, pattern=DNS_LABEL, expected=DNS_EXPECTED),
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


def _mirror(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    """A mirror stage: `percent` % of the live requests copied to the canary, its answers discarded."""
    m = r.fields(node, path, ("percent", "duration", "analysis"), ("percent",))
    return MirrorStage(
        percent=r.integer(m, "percent", path, 100, 1, 100),
        duration=r.duration(m, "duration", path, 0.0),
        analysis=_stage_analysis(r, m, path, has_analysis),
    )


_CANARY_KEYS = {"steps": ("steps",), "manual": ("weightParam", "weight", "hold"), "linear": ("linear",)}


def _canary_mode(r: Reader, m: Mapping[str, Any], path: str) -> str:
    if "mode" in m:
        return r.choice(m, "mode", path, "steps", tuple(_CANARY_KEYS))
    inferred = [mode for mode, keys in _CANARY_KEYS.items() if any(k in m for k in keys)]
    if len(inferred) != 1:
        r.add(
            path,
            "expected exactly one of steps (mode steps), linear (mode linear) or weightParam/weight "
            "(mode manual), or an explicit mode",
        )
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
    return LinearSchedule(
        start,
        end,
        r.integer(m, "increment", path, 1, 1, 100),
        r.duration(m, "every", path, 60.0, positive=True),
    )


def _canary(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    all_keys = ("mode", *(k for keys in _CANARY_KEYS.values() for k in keys), "analysis", "baseline")
    m = r.fields(node, path, all_keys)
    mode = _canary_mode(r, m, path)
    if not mode:
        return CanaryStage(analysis=_stage_analysis(r, m, path, has_analysis))
    for other, keys in _CANARY_KEYS.items():
        for key in keys:
            if other != mode and key in m:
                r.add(
                    join(path, key),
                    f"is not allowed with mode {mode}; expected only {', '.join(_CANARY_KEYS[mode])}",
                )
    steps = [
        (p, _canary_step(r, item, p)) for p, item in r.items(m, "steps", path, non_empty=mode == "steps")
    ]
    linear = None
    if mode == "linear":
        if "linear" not in m:
            r.add(
                join(path, "linear"), "is required with mode linear; expected {start, end, increment, every}"
            )
        linear = _linear(r, m.get("linear"), join(path, "linear"))
    return CanaryStage(
        mode=mode,  # type: ignore[arg-type]
        steps=tuple(s for _, s in steps),
        # an invalid weightParam/weight already has its problem: the fallbacks keep the weight rule quiet
        weight_param=r.text(
            m,
            "weightParam",
            path,
            "" if "weightParam" in m else "weight",
            pattern=PARAM,
            expected="a gate parameter name",
        ),
        weight=r.integer(m, "weight", path, 0 if "weight" in m else None, 0, 100),
        hold=r.duration(m, "hold", path, 0.0),
        linear=linear,
        analysis=_stage_analysis(r, m, path, has_analysis),
        baseline=r.boolean(m, "baseline", path, False) if "baseline" in m else None,
    )


def read_load_test(r: Reader, node: Any, path: str, preview: float | None) -> LoadTest:
    """A loadTest: hey against `url`. `preview`: the blue-green stage's preview (its default duration), or None
    for the load hook (renewed while the release is analysed, 5 minutes each by default)."""
    m = r.fields(node, path, ("url", "rps", "duration", "image", "headers"), ("url",))
    duration = r.duration(m, "duration", path, 0.0, positive="duration" in m)
    if preview is not None and not duration and not preview and "duration" not in m:
        r.add(join(path, "duration"), "is required when the blue-green stage has no preview duration")
    headers = m.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and TOKEN.fullmatch(k) and isinstance(v, str) for k, v in headers.items()
    ):
        r.bad(join(path, "headers"), headers, "a mapping of header name to string value")
        headers = {}
    return LoadTest(
        url=r.text(
            m, "url", path, pattern=URL, expected="an http(s):// URL of the app's entry through its router"
        ),
        rps=r.integer(m, "rps", path, 10, 1, 10_000),
        duration=duration,
        image=r.text(
            m, "image", path, LOAD_TEST_IMAGE, pattern=re.compile(r"\S+"), expected="an image reference"
        ),
        headers=tuple((str(k).lower(), str(v)) for k, v in headers.items()),
    )


def _preview_traffic(r: Reader, node: Any, path: str, preview: float) -> PreviewTraffic:
    m = r.fields(node, path, ("header", "loadTest"))
    load = m.get("loadTest")
    return PreviewTraffic(
        header=r.text(m, "header", path, PREVIEW_HEADER, pattern=TOKEN, expected="a header name").lower(),
        load_test=read_load_test(r, load, join(path, "loadTest"), preview) if load is not None else None,
    )


def _bluegreen(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("preview", "analysis", "previewTraffic"))
    preview = r.duration(m, "preview", path, 0.0)
    analysis = _stage_analysis(r, m, path, has_analysis)
    traffic = m.get("previewTraffic")
    if (
        analysis and traffic is None
    ):  # nothing reaches green before the switch: every verdict would be no-data
        where = join(path, "analysis") if "analysis" in m else path
        r.add(
            where,
            "analyses a preview that receives no traffic; add previewTraffic (a header route to the "
            "preview, and a loadTest sending it) or set analysis: false",
        )
    return BlueGreenStage(
        preview=preview,
        analysis=analysis,
        preview_traffic=_preview_traffic(r, traffic, join(path, "previewTraffic"), preview)
        if traffic is not None
        else None,
    )


def _promote(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("keepPrevious",))
    return PromoteStage(keep_previous=r.duration(m, "keepPrevious", path, 0.0))


def _rate_limit(r: Reader, node: Any, path: str) -> RateLimit:
    m = r.fields(node, path, ("average", "burst", "period"), ("average",))
    average = r.integer(m, "average", path, 1, 1)
    burst = (
        r.integer(m, "burst", path, average, average) if "average" in m else r.integer(m, "burst", path, 1, 1)
    )
    return RateLimit(average, burst, r.duration(m, "period", path, 1.0, positive=True))


def _protect(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    m = r.fields(node, path, ("rateLimit", "circuitBreaker"))
    if m.get("rateLimit") is None and m.get("circuitBreaker") is None:
        r.add(path, "expected rateLimit, circuitBreaker or both")
    rate = _rate_limit(r, m["rateLimit"], join(path, "rateLimit")) if m.get("rateLimit") is not None else None
    cb = m.get("circuitBreaker")
    return ProtectStage(
        rate_limit=rate,
        circuit_breaker=read_circuit_breaker(r, cb, join(path, "circuitBreaker")) if cb is not None else None,
    )


FLAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_FLAG_KEYS = ("key", "variant", "offVariant", "variants", "salt")
_QUOTE = " (quote it: YAML reads on, off, yes and no as booleans)"


def _flag(r: Reader, node: Any, path: str, has_analysis: bool) -> Stage:
    """A flag stage: which flag and variants, then the canary's ways of moving (steps, manual, linear)."""
    canary_keys = ("mode", *(k for keys in _CANARY_KEYS.values() for k in keys), "analysis")
    m = r.fields(node, path, (*_FLAG_KEYS, *canary_keys), ("key",))
    moving = _canary(r, {k: v for k, v in m.items() if k not in _FLAG_KEYS}, path, has_analysis)
    assert isinstance(moving, CanaryStage)
    variant = r.text(m, "variant", path, "on", pattern=FLAG_KEY, expected="a variant name" + _QUOTE)
    off = r.text(m, "offVariant", path, "off", pattern=FLAG_KEY, expected="a variant name" + _QUOTE)
    if variant == off:
        r.bad(join(path, "offVariant"), off, f"a variant other than the one rolled out ({variant})")
    variants = _flag_variants(r, m, path)
    for key, name in (("variant", variant), ("offVariant", off)):
        if name not in variants:
            r.bad(join(path, key), name, f"one of the flag's variants ({', '.join(variants)})")
    if moving.mode == "steps":
        _growing_steps(r, moving, path)
    return FlagStage(
        key=r.text(m, "key", path, pattern=FLAG_KEY, expected="a flag key (letters, digits, _ . : -)"),
        variant=variant,
        off=off,
        variants=tuple(sorted(variants.items())),
        mode=moving.mode,
        steps=moving.steps,
        weight_param=moving.weight_param,
        weight=moving.weight,
        hold=moving.hold,
        linear=moving.linear,
        analysis=moving.analysis,
        salt=r.text(m, "salt", path, expected="a salt string"),
    )


def _flag_variants(r: Reader, m: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The flag's variants: as given (a mapping of names to values of one type), else the default on/off."""
    if "variants" not in m:
        return dict(FLAG_VARIANTS)
    given = m["variants"]
    kinds = {
        type(v) if not isinstance(v, int | float) or isinstance(v, bool) else float
        for v in (given.values() if isinstance(given, Mapping) else ())
    }
    ok = (
        isinstance(given, Mapping)
        and given
        and all(isinstance(k, str) and FLAG_KEY.fullmatch(k) for k in given)
        and len(kinds) == 1
        and kinds <= {bool, str, float, dict}
    )
    if not ok:
        r.bad(
            join(path, "variants"),
            given,
            "a mapping of variant name to value, every value of one type "
            "(boolean, string, number or object), as flagd requires" + _QUOTE,
        )
        return dict(FLAG_VARIANTS)
    return dict(given)


def _growing_steps(r: Reader, moving: CanaryStage, path: str) -> None:
    """A flag rollout only grows: a user keeps the variant across steps."""
    for i, step in enumerate(moving.steps):
        if i and step.weight < moving.steps[i - 1].weight:
            r.bad(
                f"{path}.steps[{i}].weight",
                step.weight,
                f"at least the step before ({moving.steps[i - 1].weight}):"
                " a flag rollout only grows (a user keeps the variant across steps)",
            )


_STAGE_PARSERS: dict[str, Callable[[Reader, Any, str, bool], Stage]] = {
    "preview": _preview,
    "approval": _approval,
    "abtest": _abtest,
    "canary": _canary,
    "bluegreen": _bluegreen,
    "promote": _promote,
    "protect": _protect,
    "flag": _flag,
    "mirror": _mirror,
}


def _weight_param_rule(
    r: Reader, path: str, stage: CanaryStage | FlagStage, params: dict[str, GateParam]
) -> None:
    """A manual canary takes its weight from a parameter of an earlier gate, unless it fixes one."""
    if stage.mode != "manual" or not stage.weight_param:
        return
    param = params.get(stage.weight_param)
    if param is None and stage.weight is None:
        declared = ", ".join(sorted(params)) or "none"
        r.bad(
            join(path, "weightParam"),
            stage.weight_param,
            f"a parameter declared by an earlier approval gate (declared so far: {declared}), or set weight",
        )
    elif param is not None and (param.min < 0 or param.max > 100):
        r.bad(
            join(path, "weightParam"),
            stage.weight_param,
            f"a parameter whose range lies within 0..100 (it is {param.min}..{param.max})",
        )


def _order_rules(r: Reader, parsed: list[tuple[str, Stage]]) -> None:
    """Gate names, weight parameters and the traffic -> promote -> protect order."""
    gates: dict[str, str] = {}
    params: dict[str, GateParam] = {}
    promote_at = next((p for p, s in parsed if isinstance(s, PromoteStage)), "")
    first_protect = ""
    first_flag = ""
    for path, stage in parsed:
        if isinstance(stage, ApprovalStage):
            if stage.name in gates:
                r.bad(
                    join(path, "name"),
                    stage.name,
                    f"a gate name unique in the policy ({gates[stage.name]} uses it)",
                )
            gates.setdefault(stage.name, path)
            params.update((g.name, g) for g in stage.params)
        if isinstance(stage, CanaryStage | FlagStage):
            _weight_param_rule(r, path, stage, params)
        _place_rule(r, path, stage, promote_at, first_flag, first_protect)
        if isinstance(stage, FlagStage):
            first_flag = first_flag or path
        elif isinstance(stage, ProtectStage):
            first_protect = first_protect or path


def _place_rule(
    r: Reader, path: str, stage: Stage, promote_at: str, first_flag: str, first_protect: str
) -> None:
    """Where `stage` may stand: one promote stage; traffic stages before it, flag and protect stages after it.
    Without a declared one (it is implicit, right before the first flag or protect stage): no traffic or
    preview stage after a flag stage, nothing but protect stages after a protect stage."""
    if isinstance(stage, PromoteStage) and path != promote_at:
        r.add(path, f"is not allowed: expected at most one promote stage ({promote_at} is one)")
    if stage.kind in TRAFFIC_STAGES and promote_at and _index(path) > _index(promote_at):
        r.add(
            path,
            f"is not allowed after the promote stage {promote_at}; "
            "expected abtest, canary and bluegreen stages before promote",
        )
    if isinstance(stage, FlagStage | ProtectStage):
        if promote_at and _index(path) < _index(promote_at):
            why = (
                "expected flag stages after it (the code behind the flag is promoted, dark, before the flag "
                "goes out)"
                if isinstance(stage, FlagStage)
                else "expected protect stages after it"
            )
            r.add(path, f"is not allowed before the promote stage {promote_at}; {why}")
    elif first_flag and not promote_at and stage.kind in (*TRAFFIC_STAGES, "preview"):
        r.add(
            path,
            f"is not allowed after the flag stage {first_flag}; expected abtest, canary, bluegreen and "
            "preview stages before it (the implicit promote stage goes right before the first flag stage)",
        )
    elif first_protect and not promote_at:
        r.add(
            path,
            f"is not allowed after the protect stage {first_protect}; expected protect stages last "
            "(the implicit promote stage goes right before them)",
        )


def _index(path: str) -> int:
    return int(path.split("[", 1)[1].split("]", 1)[0])


def with_implicit_promote(stages: list[Stage]) -> tuple[Stage, ...]:
    """Insert a promote stage before the first protect or flag stage (or at the end) when none is declared."""
    if any(isinstance(s, PromoteStage) for s in stages):
        return tuple(stages)
    at = next((i for i, s in enumerate(stages) if isinstance(s, ProtectStage | FlagStage)), len(stages))
    return (*stages[:at], PromoteStage(), *stages[at:])


def read_stages(r: Reader, spec: Mapping[str, Any], has_analysis: bool) -> tuple[Stage, ...]:
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
