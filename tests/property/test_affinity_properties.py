"""Session affinity on a TraefikService, over any sequence of weights (`pytest -k affinity`): graylane's sticky is
there exactly while the split is weighted, named after the weight in force, written once per change (a plan
applied again writes nothing), and a user's own fields of the TraefikService stay as they were."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.core.effects import RoutePlan
from functions.core.policy import SessionAffinity
from functions.providers.routers import traefik
from functions.providers.routers._common import apply_patch
from functions.providers.routers.base import RouteTarget

TARGET = RouteTarget(
    "shop",
    "web",
    "web",
    "web-canary",
    options={"traefikService": "web-wrr"},
    affinity=SessionAffinity("shop-sticky", 600),
)
S = traefik._setup(TARGET, "traefik.io")


def users_wrr(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-wrr", "namespace": "shop", "annotations": {"theirs": "1"}},
        "spec": {"weighted": {"services": [{"name": "web", "port": 80, "weight": 100, **extra}]}},
    }


def step(ts: dict[str, Any], plan: RoutePlan) -> tuple[dict[str, Any], int]:
    """One set_routes on the TraefikService, as TraefikRouter writes it: (the object after, ops written)."""
    kept = traefik._note(ts, traefik.CANARY_BACKEND)
    entries = ts["spec"]["weighted"]["services"]
    ops, removed = traefik.weight_ops(entries, "/spec/weighted/services", S, plan, kept)
    sticky_ops, sticky_note = traefik.sticky_ops(ts, traefik.sticky(TARGET, plan), "w")
    ops += sticky_ops
    notes = {**traefik.TraefikRouter._kept_notes(ts, kept, removed, plan), **sticky_note}
    annotations = dict(ts["metadata"].get("annotations") or {})
    for key, value in notes.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    after = apply_patch(copy.deepcopy(ts), ops)
    after["metadata"]["annotations"] = annotations
    return after, len(ops)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(0, 100), min_size=1, max_size=12),
    extra=st.dictionaries(
        st.sampled_from(["passHostHeader", "responseForwarding", "scheme"]),
        st.sampled_from([True, False, "http"]),
        max_size=2,
    ),
)
def test_affinity_sticky_follows_the_weight_and_is_written_once(
    weights: list[int], extra: dict[str, Any]
) -> None:
    ts = users_wrr(extra)
    before = copy.deepcopy(ts)
    for weight in weights:
        plan = RoutePlan.canary_at(weight)
        ts, _ = step(ts, plan)
        sticky = ts["spec"]["weighted"].get("sticky")
        if 0 < weight < 100:
            assert sticky == {"cookie": {"name": f"shop-sticky-{weight}", "httpOnly": True, "maxAge": 600}}
            assert json.loads(ts["metadata"]["annotations"][traefik.STICKY]) == sticky
        else:
            assert sticky is None and traefik.STICKY not in ts["metadata"]["annotations"]
        again, written = step(ts, plan)
        assert written == 0 and again["spec"] == ts["spec"]  # idempotent
        stable = ts["spec"]["weighted"]["services"][0]
        assert {k: v for k, v in stable.items() if k != "weight"} == {"name": "web", "port": 80, **extra}
    ts, _ = step(ts, RoutePlan.canary_at(0))
    assert ts["spec"] == before["spec"]  # back on stable: the user's TraefikService as it was
    assert {k: v for k, v in ts["metadata"]["annotations"].items() if not k.startswith("graylane.dev/")} == {
        "theirs": "1"
    }
