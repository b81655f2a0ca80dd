"""A tiny escape-by-default template helper: `render(template, **values)` escapes every value unless it is `Safe`.

Templates are Python strings with `{name}` fields (str.format syntax, no attribute or index access), so a page
is plain text next to the code that fills it, and nothing user-controlled reaches the page unescaped.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable
from typing import Any


class Safe(str):
    """Markup that is already safe to put in a page (built by `render` or `join`)."""


EMPTY = Safe("")


def esc(value: Any) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


class _Formatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise ValueError(f"template field {field_name!r}: only plain names are allowed")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        return esc(format(value, format_spec) if format_spec else value)


_FORMATTER = _Formatter()


def render(template: str, **values: Any) -> Safe:
    return Safe(_FORMATTER.format(template, **values))


def join(parts: Iterable[Any], sep: str = "") -> Safe:
    return Safe(sep.join(esc(p) for p in parts))


def attrs(**values: Any) -> Safe:
    """` name="value"` pairs (underscores become dashes; None and False are left out, True is bare)."""
    out = []
    for name, v in values.items():
        if v is None or v is False:
            continue
        key = name.rstrip("_").replace("_", "-")
        out.append(f" {key}" if v is True else f' {key}="{esc(v)}"')
    return Safe("".join(out))
