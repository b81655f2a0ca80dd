"""The per-version workload model's names: which Deployment, subset and label value a version gets. Pure.

With `workload.model: per-version` every version runs in a Deployment of its own (Istio's Bookinfo:
`reviews-v1`, `reviews-v2`, each pod labelled `version: v1|v2`, each a DestinationRule subset). A
version's *slot* is that Deployment and subset:

    version (image tag)   v2            v1.2.0          1.17.0          sha256:4f1c...
    slug                  v2            v1-2-0          1-17-0          sha256-4f1c...   (DNS-1123 label)
    Deployment            reviews-v2    reviews-v1-2-0  reviews-1-17-0  nameTemplate with {version} = slug
    subset                v2            v1-2-0          1-17-0          = slug
    version label value   v2            v1.2.0          1.17.0          = the tag when it is a valid label
                                                                          value (<= 63, [A-Za-z0-9._-],
                                                                          alphanumeric at both ends), else slug

The slug lower-cases the tag and turns every run of other characters than letters and digits into one
'-'; a slug longer than 63 characters keeps 54 and appends '-' and 8 hex digits of the tag's sha256. Two
versions with one slug (`V2` and `v2`, `1.2` and `1-2`) cannot both have a slot: the second is refused
(see `new_slot`).

The first Deployment (workload.name) is the user's: its slot is `owned=False` and carries its own subset
(workload.subset); graylane never re-images it, never changes its labels and never deletes it.
"""

from __future__ import annotations

import hashlib
import re

from functions.core.values import value

PLACEHOLDER = "{version}"
LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
SLUG_MAX = 63


@value
class Slot:
    """One version's own Deployment and subset (per-version model)."""

    version: str  # the tag (or digest) it runs
    image: str  # the pinned image its Deployment runs
    workload: str  # Deployment name
    subset: str  # the router's subset for it (DestinationRule subset name)
    label: str  # the value of the version label on its pods (the subset selects it)
    owned: bool = True  # graylane created it (False: the user's first Deployment)


@value
class Routed:
    """Which versions' subsets the route sends traffic to, and every subset the router must keep.

    `stable` takes the route's stable weight, `canary` (None when no other version is routed) the canary
    weight. `subsets` are all the slots whose Deployment exists: their subsets stay in the DestinationRule
    (graylane adds the ones it needs, and removes only those it added whose Deployment is gone).
    """

    stable: Slot | None = None
    canary: Slot | None = None
    subsets: tuple[Slot, ...] = ()
    label: str = "version"  # the label key each subset selects on


def slug(version: str) -> str:
    """The DNS-1123 label naming `version`'s Deployment (in the template) and its subset."""
    text = _NOT_ALNUM.sub("-", version.lower()).strip("-") or "v"
    if len(text) > SLUG_MAX:
        digest = hashlib.sha256(version.encode()).hexdigest()[:8]
        text = text[: SLUG_MAX - 9].rstrip("-") + "-" + digest
    return text


def label_value(version: str) -> str:
    """The version label value of `version`'s pods: the tag itself when Kubernetes allows it, else its slug."""
    return version if version and LABEL_VALUE.fullmatch(version) else slug(version)


def workload_name(template: str, version: str) -> str:
    return template.replace(PLACEHOLDER, slug(version))


def template_version(template: str, name: str) -> str:
    """The slug `name` stands for under `template` ("" when the template does not produce it)."""
    head, _, tail = template.partition(PLACEHOLDER)
    if len(name) <= len(head) + len(tail) or not name.startswith(head) or not name.endswith(tail):
        return ""
    middle = name[len(head) : len(name) - len(tail)]
    return middle if slug(middle) == middle else ""


def new_slot(template: str, version: str, image: str) -> Slot:
    """The slot graylane creates for `version`."""
    return Slot(
        version=version,
        image=image,
        workload=workload_name(template, version),
        subset=slug(version),
        label=label_value(version),
    )


def clash(slot: Slot, slots: tuple[Slot, ...]) -> Slot | None:
    """The existing slot of another version that has `slot`'s Deployment or subset, if any."""
    return next(
        (
            s
            for s in slots
            if s.version != slot.version and (s.workload == slot.workload or s.subset == slot.subset)
        ),
        None,
    )
