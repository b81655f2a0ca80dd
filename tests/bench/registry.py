"""The benchmark registry: suites register here; results are written as JSON under results/."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SUITES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def suite(name: str) -> Callable[[Callable[[argparse.Namespace], dict[str, Any]]], Any]:
    def register(fn: Callable[[argparse.Namespace], dict[str, Any]]) -> Any:
        SUITES[name] = fn
        return fn

    return register


def write(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "suite": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    return path


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("benchmark", "result", "target", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, rows)])  # type: ignore[arg-type]
