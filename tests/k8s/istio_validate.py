"""Istio's own validation for the Istio objects graylane writes: `istioctl validate -f FILE`, offline.

No Envoy runs here, so what Istio would make of a VirtualService or DestinationRule is asked of the code
istiod's validating webhook runs (istio.io/istio pkg/config/validation, through istioctl): proto decoding
that refuses unknown fields, then the semantic checks (destinations, weights, RE2 regexes, durations,
outlier detection, connection pool, ...).

`istioctl validate` never contacts a cluster; it only reads a kubeconfig for a default namespace. It runs
with a private HOME and KUBECONFIG so nothing of the machine's config is read. The binary comes from
`make istioctl` (tests/k8s/tools/build.sh istioctl, found with its --cached); GRAYLANE_ISTIOCTL names another
one.

    assert_istio_valid([vs, dr], "after set_routes 20%")   # AssertionError with istioctl's output

istioctl passes over kinds it does not know without a word (non-Istio YAML is fine to it), so the helper
refuses anything but the Istio kinds it is meant for: an object with a wrong apiVersion would otherwise
be "valid". Warnings fail too (an unreachable rule, a deprecated field): graylane's output must be clean.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")  # the versions istioctl's schema collection knows for these kinds
KINDS = ("VirtualService", "DestinationRule")
TOOLS = Path(__file__).parent / "tools"
HINT = (
    "run `make istioctl` (bash tests/k8s/tools/build.sh istioctl), or point GRAYLANE_ISTIOCTL at an istioctl"
)


class IstioctlMissing(RuntimeError):
    """No istioctl built for the current recipe of tests/k8s/tools/istioctl."""


@functools.lru_cache(maxsize=8)
def _cached_bin(cache_root: str) -> Path:
    """`build.sh --cached istioctl`: the bin dir of the current recipe's build, never building one."""
    env = {**os.environ, "GRAYLANE_CACHE": cache_root} if cache_root else None
    done = subprocess.run(
        ["bash", str(TOOLS / "build.sh"), "--cached", "istioctl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise IstioctlMissing(
            f"istioctl is not built for tests/k8s/tools/istioctl's recipe ({done.stderr.strip()}): {HINT}"
        )
    return Path(done.stdout.strip())


def find_istioctl() -> Path:
    explicit = os.environ.get("GRAYLANE_ISTIOCTL")
    path = Path(explicit) if explicit else _cached_bin(os.environ.get("GRAYLANE_CACHE", "")) / "istioctl"
    if not os.access(path, os.X_OK):
        raise IstioctlMissing(f"istioctl missing: {path} is not an executable; {HINT}")
    return path


def istioctl() -> Path:
    """The istioctl binary; a missing one fails the calling test with the hint (never a skip)."""
    try:
        return find_istioctl()
    except IstioctlMissing as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)  # outside the except block: one message, not a chained traceback


@dataclass(frozen=True)
class Verdict:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "has warnings" not in self.output


def _check_kind(obj: Mapping[str, Any]) -> None:
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    group, _, version = api_version.rpartition("/")
    if group != GROUP or version not in VERSIONS or kind not in KINDS:
        name = obj.get("metadata", {}).get("name", "?")
        raise AssertionError(
            f"{kind or '?'} {name} ({api_version or 'no apiVersion'}) is not one istioctl validates: "
            f"expected {GROUP}/{{{','.join(VERSIONS)}}} {' or '.join(KINDS)}"
        )


def istio_validate(objs: Iterable[Mapping[str, Any]]) -> Verdict:
    """Run `istioctl validate -f` on the objects (one YAML stream, JSON documents)."""
    objs = list(objs)
    if not objs:
        raise AssertionError("no objects to validate")
    for obj in objs:
        _check_kind(obj)
    binary = istioctl()
    with tempfile.TemporaryDirectory(prefix="graylane-istioctl-") as tmp:
        path = Path(tmp) / "objects.yaml"
        path.write_text("".join(f"---\n{json.dumps(obj, sort_keys=True)}\n" for obj in objs))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "KUBECONFIG": str(Path(tmp) / "none"),
        }
        done = subprocess.run(
            [str(binary), "validate", "-f", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return Verdict(done.returncode, (done.stdout + done.stderr).strip())


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name', '')}"  # as istioctl names it


def assert_istio_valid(objs: Iterable[Mapping[str, Any]], what: str = "") -> None:
    """Fail (AssertionError) unless istioctl accepts every object without error or warning."""
    objs = list(objs)
    verdict = istio_validate(objs)
    if not verdict.ok:
        named = [o for o in objs if _describe(o) + ":" in verdict.output] or objs
        names = ", ".join(map(_describe, named[:4])) + (
            f" and {len(named) - 4} more" if len(named) > 4 else ""
        )
        shown = "\n".join(f"  {json.dumps(o, sort_keys=True)[:2000]}" for o in named[:4])
        raise AssertionError(
            f"istioctl validate refused {names}{' ' + what if what else ''} "
            f"({'warnings count as refusals' if verdict.returncode == 0 else f'exit {verdict.returncode}'}):"
            f"\n{verdict.output}\nrefused:\n{shown}"
        )
