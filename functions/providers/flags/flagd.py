"""flagd's flag definitions: what graylane writes for a flag rollout, and edits that touch nothing else.

A flag stage's `FlagPlan` becomes the flag's `targeting` (flagd's JSONLogic):

- 0 %: `{"if": [false, "<variant>", "<off>"]}` (the off variant for every user);
- 100 %: `{"if": [true, "<variant>", "<off>"]}` (the rolled-out variant for every user);
- in between: users with a targetingKey are split by `fractional` over graylane's bucketing expression,
  `{"cat": ["<salt>", ":", {"var": "targetingKey"}]}`, i.e. MurmurHash3("<salt>:<user>") as for userHash,
  the rolled-out variant first so a larger percentage keeps every user it had (nested buckets); users
  without a targetingKey get the off variant.

graylane owns the `targeting` of the flags its policies name, and creates a flag that is not in the document
yet (ENABLED, the stage's variants, the off variant as default). Everything else in the document (the
user's other flags, `$evaluators`, the flag's own variants, formatting, key order) is left byte for byte: the
edit replaces or inserts the one JSON value, found by a scanner built on the json module's own decoder.
"""

from __future__ import annotations

import json
from typing import Any

from functions.core.effects import FlagPlan
from functions.errors import ConfigError

SCHEMA = "https://flagd.dev/schema/v0/flags.json"
_WS = " \t\n\r"
_DECODER = json.JSONDecoder()


def targeting(plan: FlagPlan) -> dict[str, Any]:
    if plan.percent <= 0:
        return {"if": [False, plan.variant, plan.off]}
    if plan.percent >= 100:
        return {"if": [True, plan.variant, plan.off]}
    bucket = {"cat": [plan.salt, ":", {"var": "targetingKey"}]}
    split = {"fractional": [bucket, [plan.variant, plan.percent], [plan.off, 100 - plan.percent]]}
    return {"if": [{"var": "targetingKey"}, split, plan.off]}


def new_flag(plan: FlagPlan) -> dict[str, Any]:
    variants = dict(plan.variants) or {plan.variant: True, plan.off: False}
    return {
        "state": "ENABLED",
        "variants": variants,
        "defaultVariant": plan.off,
        "targeting": targeting(plan),
    }


def reads_as(flag: Any, plan: FlagPlan) -> bool:
    """Does this flag of a live document serve exactly `plan` (graylane's targeting, enabled, both variants)?"""
    if not isinstance(flag, dict) or flag.get("state") != "ENABLED":
        return False
    variants = flag.get("variants")
    if not isinstance(variants, dict) or plan.variant not in variants or plan.off not in variants:
        return False
    return flag.get("targeting") == targeting(plan)


def live_plans(text: str, plans: tuple[FlagPlan, ...]) -> tuple[FlagPlan, ...]:
    """The plans of `plans` that the document `text` serves as they are (a missing or edited flag is left out)."""
    try:
        flags = json.loads(text).get("flags") if text.strip() else None
    except (ValueError, AttributeError):
        return ()
    if not isinstance(flags, dict):
        return ()
    return tuple(p for p in plans if reads_as(flags.get(p.key), p))


def with_plan(text: str, plan: FlagPlan, where: str) -> str:
    """The document `text` with `plan` written: the flag's targeting replaced (or the flag added), nothing else
    changed. `where` names the document in errors (a ConfigMap key, a file)."""
    if not text.strip():
        doc = {"$schema": SCHEMA, "flags": {plan.key: new_flag(plan)}}
        return json.dumps(doc, indent=2) + "\n"
    try:
        parsed = json.loads(text)
    except ValueError as err:
        raise ConfigError(
            f"flag document {where} is not JSON ({err}); graylane writes flagd's JSON format"
        ) from err
    if not isinstance(parsed, dict) or not isinstance(parsed.get("flags", {}), dict):
        raise ConfigError(f"flag document {where}: expected an object with a 'flags' object (flagd's format)")
    flag = parsed.get("flags", {}).get(plan.key)
    if flag is not None:
        variants = flag.get("variants") if isinstance(flag, dict) else None
        missing = [v for v in (plan.variant, plan.off) if not isinstance(variants, dict) or v not in variants]
        if missing:
            raise ConfigError(
                f"flag document {where}: flag {plan.key} has no variant {', '.join(missing)} "
                f"(its variants: {', '.join(variants or {}) or 'none'})"
            )
        return _set_member(text, ["flags", plan.key], "targeting", targeting(plan))
    if "flags" not in parsed:
        return _set_member(text, [], "flags", {plan.key: new_flag(plan)})
    return _set_member(text, ["flags"], plan.key, new_flag(plan))


# -- the span editor ------------------------------------------------------------------------------------------


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _members(text: str, start: int) -> tuple[list[tuple[str, int, int, int]], int]:
    """The members of the JSON object opening at text[start] == '{' as (key, key start, value start, value end),
    and the index of its closing brace."""
    assert text[start] == "{"
    out: list[tuple[str, int, int, int]] = []
    i = _skip(text, start + 1)
    if text[i] == "}":
        return out, i
    while True:
        key_start = i
        key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = _skip(text, i)
        assert text[i] == ":"
        value_start = _skip(text, i + 1)
        _, value_end = _DECODER.raw_decode(text, value_start)
        out.append((key, key_start, value_start, value_end))
        i = _skip(text, value_end)
        if text[i] == "}":
            return out, i
        assert text[i] == ","
        i = _skip(text, i + 1)


def _object_at(text: str, path: list[str]) -> int:
    """The index of the '{' of the object at `path` (keys from the document's top)."""
    i = _skip(text, 0)
    for key in path:
        members, _ = _members(text, i)
        found = [m for m in members if m[0] == key]
        if not found:
            raise KeyError(key)
        i = found[-1][2]  # JSON's last duplicate wins, as in json.loads
    return i


def _indent(text: str, at: int) -> str:
    line = text.rfind("\n", 0, at) + 1
    return text[line:at] if text[line:at].strip() == "" else ""


def _set_member(text: str, path: list[str], key: str, value: Any) -> str:
    """`text` with member `key` of the object at `path` set to `value`: its value span replaced, or the member
    added after the last one (with the indentation of its siblings). Nothing else changes."""
    start = _object_at(text, path)
    members, close = _members(text, start)
    found = [m for m in members if m[0] == key]
    if found:
        _, key_start, vstart, vend = found[-1]
        return text[:vstart] + _dumps(value, _indent(text, key_start)) + text[vend:]
    if members:
        _, key_start, _, last_end = members[-1]
        pad = _indent(text, key_start)
        sep = f",\n{pad}" if pad or "\n" in text[start:key_start] else ", "
        return text[:last_end] + sep + json.dumps(key) + ": " + _dumps(value, pad) + text[last_end:]
    pad = _indent(text, start)
    inner = pad + "  "
    return (
        text[: start + 1]
        + f"\n{inner}"
        + json.dumps(key)
        + ": "
        + _dumps(value, inner)
        + f"\n{pad}"
        + text[close:]
    )


def _dumps(value: Any, pad: str) -> str:
    """`value` as JSON laid out like the document around it: indented at `pad` (compact on one line if none)."""
    if not pad:
        return json.dumps(value, separators=(", ", ": "))
    return json.dumps(value, indent=2).replace("\n", "\n" + pad)
