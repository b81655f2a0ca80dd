"""Bring your existing configuration: Argo Rollouts and Flagger objects -> graylane policies. Pure.

    imported = convert(objects)       # plain mappings, as YAML loads them, in any order
    for item in imported:             # one per Rollout / Canary
        item.document                 # a ReleasePolicy document that `graylane validate` accepts
        item.notes                    # what it could not express, and why

`argo` converts a Rollout with its AnalysisTemplates / ClusterAnalysisTemplates, `flagger` a Canary with its
MetricTemplates; other objects in the same files (Deployments, Ingresses, VirtualServices) only fill in
what the two do not say (an image, a host). The last step checks each document with the policy parser;
an A/B rule the chosen router cannot express is dropped there, with a note, so the output always validates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from functions.core.policy_parse import problems
from functions.importers import argo, flagger
from functions.importers.common import Imported, Note, mapping, measurable, text

__all__ = ["Imported", "Note", "convert", "importable"]

ARGO_GROUP = "argoproj.io/"
FLAGGER_GROUP = "flagger.app/"


def importable(obj: Mapping[str, Any]) -> bool:
    """A Rollout or a Canary: an object `convert` turns into a policy."""
    api = text(obj.get("apiVersion"))
    return (api.startswith(ARGO_GROUP) and obj.get("kind") == argo.ROLLOUT) or (
        api.startswith(FLAGGER_GROUP) and obj.get("kind") == flagger.CANARY
    )


def convert(objects: Iterable[Any]) -> list[Imported]:
    """One policy per Rollout and Canary among `objects`, with the notes of what was not expressed."""
    objs = [mapping(o) for o in objects if isinstance(o, Mapping)]
    argo_templates: dict[tuple[str, str], Mapping[str, Any]] = {}
    flagger_templates: dict[tuple[str, str], Mapping[str, Any]] = {}
    for obj in objs:
        api, kind, meta = text(obj.get("apiVersion")), text(obj.get("kind")), mapping(obj.get("metadata"))
        name = text(meta.get("name"))
        if api.startswith(ARGO_GROUP) and kind in argo.TEMPLATE_KINDS:
            argo_templates[(kind, name)] = obj
        elif api.startswith(FLAGGER_GROUP) and kind == flagger.METRIC_TEMPLATE:
            flagger_templates[(text(meta.get("namespace")), name)] = obj
    out = []
    for obj in objs:
        if not importable(obj):
            continue
        if obj.get("kind") == argo.ROLLOUT:
            item = argo.convert(obj, argo_templates, objs)
        else:
            item = flagger.convert(obj, flagger_templates, objs)
        out.append(_valid(item))
    return out


def _valid(item: Imported) -> Imported:
    """Drop what the policy parser refuses that a router cannot do (A/B rules), noting why; keep the rest."""
    doc, notes = item.document, list(item.notes)
    for _ in range(20):
        found = problems(doc)
        stage = next((_stage_index(path) for path, _ in found if _stage_index(path) is not None), None)
        if not found or stage is None or "abtest" not in doc["spec"]["stages"][stage]:
            notes += [Note("", f"graylane validate: {path}: {message}") for path, message in found]
            break
        reasons = "; ".join(m for p, m in found if _stage_index(p) == stage)
        stages = doc["spec"]["stages"]
        dropped = stages.pop(stage)["abtest"]
        if not any(kind in s for s in stages for kind in ("canary", "bluegreen", "abtest")):
            stages.insert(stage, {"bluegreen": {"preview": dropped.get("duration", "0s")}})
            notes.append(
                Note("", f"the A/B test is not expressed ({reasons}): its time runs as a blue/green preview")
            )
            notes += [Note("", message) for message in measurable(doc["spec"])]
        else:
            notes.append(Note("", f"the A/B stage from the source is not expressed: {reasons}"))
    return Imported(item.source, doc, tuple(notes))


def _stage_index(path: str) -> int | None:
    prefix = "spec.stages["
    if not path.startswith(prefix):
        return None
    index = path[len(prefix) :].split("]", 1)[0]
    return int(index) if index.isdigit() else None
