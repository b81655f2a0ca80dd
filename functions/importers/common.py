"""What the Argo Rollouts and Flagger converters share: notes, names, durations, images, thresholds. Pure.

A converter turns plain mappings (the YAML objects) into a graylane policy document and a list of
`Note`s: each names the field of the source object graylane could not express (or expressed only
approximately) and why. Nothing here reads files or talks to a cluster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from functions.core import images, routing
from functions.core.capabilities import unsupported
from functions.core.policy import PREVIEW_HEADER
from functions.core.policy_doc import API_VERSION, KIND
from functions.core.policy_reader import DNS_LABEL, parse_duration
from functions.core.values import value

FALLBACK_ROUTER = "gateway-api"


@value
class Note:
    """Something of the source object that the policy does not say (or says differently)."""

    path: str  # field path in the source object, e.g. spec.strategy.canary.steps[3].setMirrorRoute
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@value
class Imported:
    source: str  # "Rollout default/canary-demo"
    document: dict[str, Any]  # a ReleasePolicy document (what `graylane validate` reads)
    notes: tuple[Note, ...] = ()


class Notes:
    """Collects notes while a converter walks an object."""

    def __init__(self) -> None:
        self.items: list[Note] = []

    def add(self, path: str, message: str) -> None:
        note = Note(path, message)
        if note not in self.items:
            self.items.append(note)


def mapping(node: Any) -> dict[str, Any]:
    return dict(node) if isinstance(node, Mapping) else {}


def seq(node: Any) -> list[Any]:
    return list(node) if isinstance(node, list) else []


def text(node: Any) -> str:
    return node.strip() if isinstance(node, str) else ""


def dns_label(raw: str, fallback: str = "metric") -> str:
    """A DNS-1123 label made from a free-form name ("404s percentage" -> "404s-percentage")."""
    label = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:63].strip("-")
    return label if label and DNS_LABEL.fullmatch(label) else fallback


def seconds(raw: Any) -> float | None:
    """Seconds of a Kubernetes-style duration (`2m`, `10s`, `1h30m`, a number of seconds); None if unreadable."""
    if isinstance(raw, str) and re.fullmatch(r"\d+(?:\.\d+)?(?:us|µs|ns)", raw.strip()):
        return 0.0
    return parse_duration(raw)


def duration(value_s: float) -> str:
    """A compact duration the policy parser reads back exactly: 90 -> 1m30s, 0.5 -> 500ms, 0 -> 0s."""
    if value_s <= 0:
        return "0s"
    if value_s < 1 or not float(value_s).is_integer():
        return f"{round(value_s * 1000)}ms"
    total, parts = int(value_s), []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


def image_repository(image: str) -> str:
    """The repository of an image reference (tag and digest dropped), as the gateway names pushes."""
    name = image.strip().partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return images.normalize_repository(name) if name else ""


def first_container(template: Mapping[str, Any]) -> dict[str, Any]:
    containers = seq(mapping(mapping(template).get("spec")).get("containers"))
    return mapping(containers[0]) if containers else {}


def whole(value: float) -> float:
    """500.0 -> 500 (an int), so the YAML shows what the user wrote."""
    return int(value) if float(value).is_integer() else value


def find(objects: Sequence[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The spec of the object of `kind` named `name` among the files' other objects ({} when absent)."""
    for obj in objects:
        if obj.get("kind") == kind and text(mapping(obj.get("metadata")).get("name")) == name:
            return mapping(obj.get("spec"))
    return {}


def deployment_container(objects: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """The first container of Deployment `name` among the objects ({} when absent)."""
    return first_container(mapping(find(objects, "Deployment", name).get("template")))


def ingress_host(objects: Sequence[Mapping[str, Any]], name: str) -> str:
    """The host of the first rule of Ingress `name` ('' when absent)."""
    rules = seq(find(objects, "Ingress", name).get("rules"))
    return text(mapping(rules[0]).get("host")) if rules else ""


def number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float) and math.isfinite(raw):
        return float(raw)
    if isinstance(raw, str):
        try:
            parsed = float(raw.strip())
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def compact(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != "" and v != [] and v != {}}


SPEC_ORDER = (
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
)


def policy_document(name: str, namespace: str, spec: dict[str, Any], notes: Notes) -> dict[str, Any]:
    """The ReleasePolicy document of a converted spec; stages lose `analysis` flags when there is no analysis,
    and a policy with gates but no approvers says so. Analysis gets what it needs to measure anything: the
    Gateway implementation whose metrics graylane reads, and traffic to a blue-green preview."""
    if not spec.get("analysis"):
        spec.pop("analysis", None)
        for stage in spec.get("stages", []):
            for body in stage.values():
                body.pop("analysis", None)
    for message in measurable(spec):
        notes.add("", message)
    if any("approval" in s for s in spec.get("stages", [])) and not spec.get("approvers"):
        notes.add(
            "",
            "the policy names no approvers: add spec.approvers so its gates can be approved from chat or "
            "the approval API (the local CLI needs none)",
        )
    ordered = {k: spec[k] for k in SPEC_ORDER if k in spec} | {
        k: v for k, v in spec.items() if k not in SPEC_ORDER
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": compact(ordered),
    }


def measurable(spec: dict[str, Any]) -> list[str]:
    """Give analysis what it needs to measure anything (what graylane validate asks), and say what was done: a
    gateway-api router with built-in templates names the implementation whose metrics they read, and a
    blue-green stage under analysis routes the preview header to green (or, on a router that cannot route a
    header, is not analysed)."""
    if not spec.get("analysis"):
        return []
    said: list[str] = []
    router = spec.get("router") or {}
    templated = any(
        isinstance(m, Mapping) and m.get("template") for m in (spec["analysis"].get("metrics") or [])
    )
    if router.get("provider") == "gateway-api" and templated and "metrics" not in router:
        implementation = _gateway_metrics()
        router["metrics"] = implementation
        said.append(
            f"the built-in checks read the HTTPRoute's traffic as {implementation}'s Gateway provider "
            "exports it (router option metrics): the one Gateway implementation whose metrics graylane "
            "knows; give the metrics queries of your own if another implementation serves the route"
        )
    for i, stage in enumerate(spec.get("stages", [])):
        body = stage.get("bluegreen")
        if not isinstance(body, dict) or body.get("analysis", True) is False or "previewTraffic" in body:
            continue
        body["previewTraffic"] = {"header": PREVIEW_HEADER}
        where = f"spec.stages[{i}].bluegreen.previewTraffic"
        if any(path == where for path, _ in unsupported(str(router.get("provider", "")), {"spec": spec})):
            body.pop(
                "previewTraffic"
            )  # the router cannot send the preview header anywhere: nothing to measure
            body["analysis"] = False
            said.append(
                "the router cannot route a header to the blue-green preview, so green gets no traffic "
                "before the switch: its analysis is off (checks still judge the release after it)"
            )
        else:
            said.append(
                f"before the switch green gets only the requests carrying {PREVIEW_HEADER}: <release id>: "
                "add previewTraffic.loadTest to the bluegreen stage (or send them from a test client) for "
                "its checks to have traffic to judge"
            )
    return said


def header_rule(name: str, match: Mapping[str, Any], path: str, notes: Notes) -> dict[str, Any] | None:
    """A graylane header rule from an exact/regex/prefix/suffix matcher (Argo headerValue, Flagger headers)."""
    if not name:
        notes.add(path, "a header match without a header name is not expressed")
        return None
    if "exact" in match:
        return {"header": name, "value": str(match["exact"])}
    if "regex" in match:
        return {"header": name, "regex": str(match["regex"])}
    if "prefix" in match:
        notes.add(
            path,
            f"prefix {match['prefix']!r} became the regular expression ^{re.escape(str(match['prefix']))}.*",
        )
        return {"header": name, "regex": f"^{re.escape(str(match['prefix']))}.*"}
    if "suffix" in match:
        notes.add(
            path,
            f"suffix {match['suffix']!r} became the regular expression .*{re.escape(str(match['suffix']))}$",
        )
        return {"header": name, "regex": f".*{re.escape(str(match['suffix']))}$"}
    notes.add(
        path, f"header matcher {sorted(match)} is not expressed (graylane matches exact values or regexes)"
    )
    return None


_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


def substitute(template: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace {{ name }} placeholders found in `values`; returns the text and the names left unresolved."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in values:
            return values[name]
        missing.append(name)
        return m.group(0)

    return _VARIABLE.sub(sub, template), missing


def _gateway_metrics() -> str:
    """The first Gateway implementation whose metrics the gateway-api router reads (its option `metrics`)."""
    module = routing.installed()["gateway-api"]
    return next(o.choices[0] for o in module.OPTIONS if o.name == "metrics")
