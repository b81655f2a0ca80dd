"""The field reader of the policy parser: typed values out of plain mappings, each problem with its path.

Pure. A `Reader` never raises on bad input: it records `(path, message)` and returns a default, so one
pass reports every problem of a document. Durations, value display and path joining live here too,
because every section of the policy uses them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

Problem = tuple[str, str]
T = TypeVar("T")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
PARAM = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: header and cookie names
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DNS_EXPECTED = "a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)"


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

    def __init__(self, hints: Mapping[str, str]) -> None:
        self.problems: list[Problem] = []
        self.hints = hints  # what a missing key should hold, by its path without indexes or by its name

    def add(self, path: str, message: str) -> None:
        self.problems.append((path or "(document)", message))

    def bad(self, path: str, value: Any, expected: str) -> None:
        self.add(path, f"{show(value)} is not allowed; expected {expected}")

    def fields(
        self, node: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
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
                hint = self.hints.get(where) or self.hints.get(str(key))
                self.add(join(path, key), f"is required; expected {hint}" if hint else "is required")
        return {k: v for k, v in node.items() if k in allowed}

    def value(
        self,
        m: Mapping[str, Any],
        key: str,
        path: str,
        default: T,
        check: Callable[[Any], T | None],
        expected: str,
    ) -> T:
        """m[key] converted by check (None means invalid), or default when absent."""
        if key not in m:
            return default
        got = check(m[key])
        if got is None:
            self.bad(join(path, key), m[key], expected)
            return default
        return got

    def text(
        self,
        m: Mapping[str, Any],
        key: str,
        path: str,
        default: str = "",
        pattern: re.Pattern[str] | None = None,
        expected: str = "a non-empty string",
    ) -> str:
        def check(v: Any) -> str | None:
            ok = isinstance(v, str) and v != "" and (pattern is None or pattern.fullmatch(v) is not None)
            return v if ok else None

        return self.value(m, key, path, default, check, expected)

    def integer(
        self, m: Mapping[str, Any], key: str, path: str, default: Any, lo: int, hi: int | None = None
    ) -> Any:
        expected = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        return self.value(
            m,
            key,
            path,
            default,
            lambda v: v if is_int(v) and lo <= v and (hi is None or v <= hi) else None,
            expected,
        )

    def number(
        self,
        m: Mapping[str, Any],
        key: str,
        path: str,
        default: Any,
        ok: Callable[[float], bool],
        expected: str,
    ) -> Any:
        return self.value(
            m, key, path, default, lambda v: float(v) if is_number(v) and ok(float(v)) else None, expected
        )

    def boolean(self, m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        return self.value(
            m, key, path, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def duration(
        self, m: Mapping[str, Any], key: str, path: str, default: Any, positive: bool = False
    ) -> Any:
        bound = "> 0" if positive else ">= 0"
        expected = f"a duration such as 500ms, 10s, 2m, 1h30m or a number of seconds {bound}"
        return self.value(
            m,
            key,
            path,
            default,
            lambda v: d if (d := parse_duration(v)) is not None and (d > 0 or not positive) else None,
            expected,
        )

    def choice(
        self, m: Mapping[str, Any], key: str, path: str, default: str, options: tuple[str, ...]
    ) -> str:
        return self.value(
            m, key, path, default, lambda v: v if v in options else None, "one of " + ", ".join(options)
        )

    def strings(self, m: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        def ok(v: Any) -> tuple[str, ...] | None:
            return tuple(v) if isinstance(v, list) and all(isinstance(s, str) and s for s in v) else None

        return self.value(m, key, path, (), ok, "a list of non-empty strings")

    def items(
        self, m: Mapping[str, Any], key: str, path: str, non_empty: bool = False
    ) -> list[tuple[str, Any]]:
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

    def regex(self, m: Mapping[str, Any], key: str, path: str) -> str:
        text = self.text(m, key, path, expected="a regular expression")
        if text:
            try:
                re.compile(text)
            except re.error as err:
                self.bad(join(path, key), text, f"a valid regular expression ({err})")
        return text

    def unique(self, named: list[tuple[str, str]], key: str, expected: str) -> None:
        """Record every (path, name) whose non-empty name an earlier entry already uses."""
        seen: dict[str, str] = {}
        for path, name in named:
            if name and name in seen:
                self.bad(join(path, key), name, f"{expected} ({seen[name]} uses it too)")
            seen.setdefault(name, path)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def parse_duration(value: Any) -> float | None:
    """Seconds from `500ms`, `10s`, `2m`, `1h30m`, `"90"` or a plain number; None when not a duration."""
    if is_number(value):
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
