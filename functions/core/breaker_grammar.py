"""Traefik's circuit breaker expression grammar, checked without Traefik. Pure.

    expression  := conjunction ("||" conjunction)*
    conjunction := atom ("&&" atom)*
    atom        := "(" expression ")" | function "(" numbers ")" comparison number

`circuit_breaker_error` says why a text is not such an expression, with the position; the policy's
`circuitBreaker` sections (protect stages and protection rules) are read by `read_circuit_breaker`.
"""

from __future__ import annotations

import re
from typing import Any

from functions.core.policy import CircuitBreaker
from functions.core.policy_reader import Reader, join, show

_CB_FUNCS = {"NetworkErrorRatio": 0, "ResponseCodeRatio": 4, "LatencyAtQuantileMS": 1}
_CB_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<logic>&&|\|\|)|(?P<cmp>>=|<=|==|!=|>|<)"
    r"|(?P<punct>[(),]))"
)
CB_EXPECTED = (
    "NetworkErrorRatio(), ResponseCodeRatio(from,to,dividedByFrom,dividedByTo) or "
    "LatencyAtQuantileMS(q) compared (> < >= <= == !=) with a number, combined with && and ||"
)


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


def read_circuit_breaker(r: Reader, node: Any, path: str) -> CircuitBreaker | None:
    m = r.fields(node, path, ("expression",), ("expression",))
    expr = r.text(m, "expression", path)
    if not expr:
        return None
    error = circuit_breaker_error(expr)
    if error:
        r.add(join(path, "expression"), f"{show(expr)} is not allowed; {error}; expected {CB_EXPECTED}")
    return CircuitBreaker(expr)
