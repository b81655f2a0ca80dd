"""The canary's HorizontalPodAutoscaler (autoscaling/v2), derived from the stable's.

When an HPA scales the stable Deployment (its scaleTargetRef names it), the canary gets one too: the stable's
spec (metrics, behavior) pointed at the canary Deployment, its bounds scaled to the canary's share of the
traffic (functions.core.autoscale.canary_bounds), named after the canary, labelled graylane's and owned by the
canary Deployment (an ownerReference: deleting the canary deletes it). Each weight change resizes it (a
`scale-canary` effect), and the effect is done once the canary has its new minReplicas ready (decide() sizes
a canary about to carry more before its route changes, so the traffic waits for the pods); scaling the canary
down deletes it first, so nothing scales the canary back up; the user's HPA of the stable is only read, never
written. An HPA the user made for the canary Deployment is left to the user: graylane then makes none.

Writes are a create, or a JSON patch of `/spec` whose first operation tests `/metadata/resourceVersion`.
"""

from __future__ import annotations

import copy
from typing import Any

from functions.core.autoscale import canary_bounds
from functions.errors import ConflictError, NotFound, NotReady
from functions.providers.kube import api_error
from functions.providers.workloads.base import WorkloadTarget

GROUP, VERSION, PLURAL, KIND = "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"
MANAGED_BY = ("app.kubernetes.io/managed-by", "graylane")
APP = "graylane.dev/app"
DERIVED_FROM = "graylane.dev/derived-from"
JSON_PATCH = "application/json-patch+json"


def targets(hpa: dict[str, Any], deployment: str) -> bool:
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return (
        ref.get("kind") == "Deployment"
        and ref.get("name") == deployment
        and str(ref.get("apiVersion", "apps/v1")).startswith("apps/")
    )


def ours(hpa: dict[str, Any]) -> bool:
    return (hpa.get("metadata", {}).get("labels") or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]


def canary_spec(stable: dict[str, Any], canary: str, share: int | None) -> dict[str, Any]:
    """The stable HPA's spec for the canary Deployment at `share` % of the traffic."""
    spec: dict[str, Any] = copy.deepcopy(stable["spec"])
    lo, hi = canary_bounds(int(spec.get("minReplicas") or 1), int(spec["maxReplicas"]), share)
    spec["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": canary}
    spec["minReplicas"], spec["maxReplicas"] = lo, hi
    return spec


def _wait_for_minimum(
    target: WorkloadTarget, canary: dict[str, Any], minimum: int, share: int | None
) -> None:
    """The HPA raises the canary to its minimum: the traffic waits for it (NotReady until then)."""
    ready = int((canary.get("status") or {}).get("readyReplicas") or 0)
    if ready < minimum:
        share_text = "a match route" if share is None else f"{share} % of the traffic"
        raise NotReady(
            f"Deployment {target.namespace}/{target.canary} autoscale canary: {ready} ready of the "
            f"{minimum} its HPA keeps for {share_text}"
        )


class CanaryAutoscaler:
    def __init__(self, api: Any, timeout: float = 5.0) -> None:
        self.api = api  # a kubernetes CustomObjectsApi
        self.timeout = timeout

    def follow(self, target: WorkloadTarget, share: int | None) -> None:
        """Size the canary's HPA for `share` (created from the stable's; removed when the stable has none)."""
        hpas = self._list(target.namespace)
        stable = sorted(
            (h for h in hpas if targets(h, target.stable) and not ours(h)),
            key=lambda h: h["metadata"]["name"],
        )
        mine = [h for h in hpas if targets(h, target.canary) and ours(h)]
        users = [h for h in hpas if targets(h, target.canary) and not ours(h)]
        if not stable or users:
            for hpa in mine:
                self._delete(target.namespace, hpa["metadata"]["name"])
            return
        spec = canary_spec(stable[0], target.canary, share)
        canary = self._canary(target)
        live = next((h for h in mine if h["metadata"]["name"] == target.canary), None)
        if live is None:
            self._create(target, stable[0], spec, canary)
        elif live.get("spec") != spec:
            self._patch(live, [{"op": "replace", "path": "/spec", "value": spec}])
        _wait_for_minimum(target, canary, spec["minReplicas"], share)

    def remove(self, target: WorkloadTarget) -> None:
        """Delete graylane's HPA of the canary (before the canary scales to zero)."""
        for hpa in self._list(target.namespace):
            if targets(hpa, target.canary) and ours(hpa):
                self._delete(target.namespace, hpa["metadata"]["name"])

    def owns_canary(self, target: WorkloadTarget) -> bool:
        return any(targets(h, target.canary) for h in self._list(target.namespace))

    # -- API calls --------------------------------------------------------------------------------------
    def _list(self, namespace: str) -> list[dict[str, Any]]:
        try:
            body = self.api.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _request_timeout=self.timeout
            )
        except Exception as err:
            raise api_error(err, KIND, f"{namespace}/*", "list") from err
        return list(body.get("items") or [])

    def _canary(self, target: WorkloadTarget) -> dict[str, Any]:
        """The canary Deployment: its HPA's owner (deploy-canary made it before any scale-canary)."""
        where = f"{target.namespace}/{target.canary}"
        try:
            dep = self.api.get_namespaced_custom_object(
                "apps", "v1", target.namespace, "deployments", target.canary, _request_timeout=self.timeout
            )
        except Exception as err:
            failure = api_error(err, "Deployment", where, "autoscale canary")
            if isinstance(failure, NotFound):
                raise NotReady(f"Deployment {where} autoscale canary: no canary Deployment yet") from err
            raise failure from err
        return dict(dep)

    def _create(
        self, target: WorkloadTarget, stable: dict[str, Any], spec: dict[str, Any], canary: dict[str, Any]
    ) -> None:
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": target.canary,
            "uid": canary["metadata"]["uid"],
        }
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": target.canary,
                "namespace": target.namespace,
                "labels": {MANAGED_BY[0]: MANAGED_BY[1], APP: target.app},
                "annotations": {DERIVED_FROM: stable["metadata"]["name"]},
                "ownerReferences": [owner],
            },
            "spec": spec,
        }
        try:
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, target.namespace, PLURAL, body, _request_timeout=self.timeout
            )
        except Exception as err:
            raise api_error(err, KIND, f"{target.namespace}/{target.canary}", "create") from err

    def _patch(self, live: dict[str, Any], ops: list[dict[str, Any]]) -> None:
        meta = live["metadata"]
        guarded = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            *ops,
        ]
        try:
            self.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                guarded,
                _content_type=JSON_PATCH,
                _request_timeout=self.timeout,
            )
        except Exception as err:
            if getattr(err, "status", None) == 422:
                raise ConflictError(
                    f"{KIND} {meta['namespace']}/{meta['name']} resize: changed meanwhile"
                ) from err
            raise api_error(err, KIND, f"{meta['namespace']}/{meta['name']}", "resize") from err

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self.timeout
            )
        except Exception as err:
            failure = api_error(err, KIND, f"{namespace}/{name}", "delete")
            if not isinstance(failure, NotFound):
                raise failure from err
