"""Workload interface: Deployments/Jobs on Kubernetes, local processes for the demo."""

from __future__ import annotations

from typing import Protocol

from functions.core.slots import Slot
from functions.core.values import value


@value
class WorkloadTarget:
    namespace: str
    app: str
    stable: str  # stable Deployment
    canary: str  # canary Deployment
    container: str = ""
    replicas: int | None = None
    cluster: str = ""
    version_label: str = ""  # per-version model: the pod label naming the version
    baseline: str = ""  # a fresh baseline's Deployment and Service (functions/core/baseline.py)
    service: str = ""  # the stable's Service, whose ports the baseline's Service copies ("" = `stable`)


class Workloads(Protocol):
    def deploy_canary(self, target: WorkloadTarget, image: str) -> None:
        """Run `image` in the canary workload; raises NotReady until it is available."""

    def promote_stable(self, target: WorkloadTarget, image: str) -> None:
        """Run `image` in the stable workload; raises NotReady until the rollout is complete."""

    def scale_down_canary(self, target: WorkloadTarget) -> None:
        """Scale the canary workload to zero."""

    def scale_canary(self, target: WorkloadTarget, share: int | None) -> None:
        """Size what scales the canary for `share` % of the traffic (None: a match route); where the stable has
        no autoscaler, nothing to do."""

    def deploy_preview(
        self, target: WorkloadTarget, image: str, environment: str, namespace: str, workload: str
    ) -> None:
        """Deploy `image` to the preview environment; raises NotReady until available."""

    def run_job(self, target: WorkloadTarget, name: str, image: str, command: tuple[str, ...]) -> None:
        """Run a one-off Job (DB migration) named `name`; raises NotReady until it succeeded."""

    def start_load_test(self, target: WorkloadTarget, name: str, image: str, args: tuple[str, ...]) -> None:
        """Start the load test `name` (hey with `args`) unless it was started already; never waits for it:
        it runs for the duration its arguments give (a blue-green preview's test traffic)."""

    def deploy_baseline(self, target: WorkloadTarget, image: str) -> None:
        """Run the stable's `image` in the baseline Deployment `target.baseline` (the canary's labels scheme with
        track `baseline`, the canary's replica count) and its own Service (the stable Service's ports, selecting
        the baseline's pods); raises NotReady until it is available."""

    def remove_baseline(self, target: WorkloadTarget) -> None:
        """Delete the baseline's Deployment and Service, if graylane created them (a missing one is fine)."""

    # -- per-version model: one Deployment per version (functions/core/per_version.py) --------------------
    def deploy_version(self, target: WorkloadTarget, slot: Slot, source: str) -> None:
        """Run `slot`'s Deployment: created from `source`'s spec with slot.image and the version label set to
        slot.label if missing, scaled up if at zero. Never changes the image of an existing one (a
        Deployment graylane created running another image fails for good; the user's is not looked at).
        Raises NotReady until it is rolled out."""

    def scale_down_version(self, target: WorkloadTarget, slot: Slot) -> None:
        """Scale `slot`'s Deployment to zero (a missing one is fine)."""

    def delete_version(self, target: WorkloadTarget, slot: Slot) -> None:
        """Delete `slot`'s Deployment if graylane created it (labelled so); never the user's."""
