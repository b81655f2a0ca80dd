"""Kubernetes workloads: the canary, stable and preview Deployments and the migration Job of a release.

Every write is a compare-and-swap: a create (AlreadyExists means someone created it first: it is read and
used), or a JSON patch whose first operation tests /metadata/resourceVersion, so a write based on a stale
read loses with ConflictError instead of overwriting a change made meanwhile. Nothing waits: a call writes
what is missing and raises NotReady until the rollout (or Job) it asked for is observable; the runner
leaves the effect pending and the next tick calls again.

Derived Deployments (the canary, a preview) are copies of the stable Deployment's spec. Their labels must
differ from the stable's, or the stable Service would send traffic to them; the convention, which matches
the seed apps' one-Service-per-track layout (Service k8s-flask selects `app: k8s-flask`, k8s-flask-canary
selects `app: k8s-flask-canary`):

- every label (object, selector, pod template) whose value is the stable Deployment's name takes the
  derived Deployment's name instead;
- selector and pod template also get `graylane.dev/track: canary|preview`.

If the stable selector would still match the derived pods (it selects on labels that carry no name, as
Istio subsets on `version` do), nothing is created and ConfigError says so: create the canary Deployment
with its own labels once; graylane then only changes its image and replicas.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from functions.core.slots import Slot
from functions.core.values import value
from functions.errors import ConfigError, ConflictError, EffectFailed, GraylaneError, NotFound, NotReady
from functions.providers.kube import api_error, json_object
from functions.providers.workloads.autoscaling import CanaryAutoscaler
from functions.providers.workloads.base import WorkloadTarget

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

TRACK = "graylane.dev/track"
APP = "graylane.dev/app"
JOB = "graylane.dev/job"
DERIVED_FROM = "graylane.dev/derived-from"
MANAGED_BY = ("app.kubernetes.io/managed-by", "graylane")
JSON_PATCH = "application/json-patch+json"
# not copied to a derived Deployment: the stable's rollout revision, kubectl's record of what was applied, and Argo
# CD's tracking id (a copy carrying the stable's would be shown out of sync and offered for pruning, argo-cd #8683)
_STRIPPED_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
    "argocd.argoproj.io/tracking-id",
)
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


@value
class Kind:
    group: str
    version: str
    plural: str
    kind: str


DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
JOB_KIND = Kind("batch", "v1", "jobs", "Job")


class KubernetesWorkloads:
    """The Workloads of one cluster, through `api_client` (see functions.providers.kube.client_from)."""

    def __init__(self, api_client: ApiClient, timeout: float = 5.0) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)  # serves built-in groups too, as plain dicts
        self.core = client.CoreV1Api(api_client)  # Services (the core group has no /apis path)
        self.api_client = api_client
        self.timeout = timeout
        self.autoscaler = CanaryAutoscaler(self.api, timeout)

    # -- Workloads -----------------------------------------------------------------------------------
    def deploy_canary(self, target: WorkloadTarget, image: str) -> None:
        stable = self._read(DEPLOYMENT, target.namespace, target.stable, "deploy canary")
        replicas = target.replicas if target.replicas is not None else _replicas(stable)
        autoscaled = self.autoscaler.owns_canary(target)  # an HPA sizes it: its replica count is the HPA's
        canary = self._derive(
            target,
            stable,
            target.namespace,
            target.canary,
            "canary",
            image,
            replicas,
            keep_replicas=autoscaled,
        )
        self._check_rolled_out(canary, image, target.container, "deploy canary")

    def scale_canary(self, target: WorkloadTarget, share: int | None) -> None:
        """The canary's HPA follows its share of the traffic (when the stable has an HPA; see autoscaling.py);
        a fresh baseline keeps the canary's replica count."""
        self.autoscaler.follow(target, share)
        if target.baseline:
            self._baseline_follows_canary(target)

    # -- a fresh baseline (functions/core/baseline.py) -----------------------------------------------
    def deploy_baseline(self, target: WorkloadTarget, image: str) -> None:
        """The baseline Deployment `target.baseline`: the stable's spec (labels renamed, track `baseline`, as the
        canary's) running the stable's `image` on the canary's replica count, and its own Service."""
        verb = "deploy baseline"
        stable = self._read(DEPLOYMENT, target.namespace, target.stable, verb)
        canary = self._get(DEPLOYMENT, target.namespace, target.canary, verb)
        replicas = _baseline_replicas(target, stable, canary)
        dep = self._derive(target, stable, target.namespace, target.baseline, BASELINE_TRACK, image, replicas)
        self._ensure_baseline_service(target, dep)
        self._check_rolled_out(dep, image, target.container, verb)

    def remove_baseline(self, target: WorkloadTarget) -> None:
        """Delete the baseline's Service and Deployment, each only if graylane created it (labelled so)."""
        from kubernetes import client

        verb = "remove baseline"
        service = self._get_service(target.namespace, target.baseline, verb)
        if service is not None and created_by_graylane(service, target.app):
            meta = service["metadata"]
            options = client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=meta["resourceVersion"])
            )
            try:
                self.core.delete_namespaced_service(
                    target.baseline, target.namespace, body=options, _request_timeout=self.timeout
                )
            except Exception as err:
                if getattr(err, "status", None) == 409:
                    raise ConflictError(
                        f"Service {_where(service)} {verb}: it changed since it was read"
                    ) from err
                if getattr(err, "status", None) != 404:
                    raise api_error(err, "Service", _where(service), verb) from err
        live = self._get(DEPLOYMENT, target.namespace, target.baseline, verb)
        if live is not None and created_by_graylane(live, target.app):
            self._delete_deployment(target.namespace, target.baseline, live, verb)

    def _baseline_follows_canary(self, target: WorkloadTarget) -> None:
        verb = "scale baseline"
        baseline = self._get(DEPLOYMENT, target.namespace, target.baseline, verb)
        canary = self._get(DEPLOYMENT, target.namespace, target.canary, verb)
        if (
            baseline is None
            or canary is None
            or _replicas(canary) == 0
            or _replicas(baseline) == _replicas(canary)
        ):
            return
        self._patch(
            DEPLOYMENT,
            baseline,
            [{"op": "replace", "path": "/spec/replicas", "value": _replicas(canary)}],
            verb,
        )

    def _get_service(self, namespace: str, name: str, verb: str) -> dict[str, Any] | None:
        try:
            found = self.core.read_namespaced_service(name, namespace, _request_timeout=self.timeout)
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return None
            raise api_error(err, "Service", f"{namespace}/{name}", f"{verb} (read)") from err
        return dict(self.api_client.sanitize_for_serialization(found))

    def _ensure_baseline_service(self, target: WorkloadTarget, baseline: Mapping[str, Any]) -> None:
        """The baseline's Service: created from the stable's (its ports) once; an existing one is left as it is."""
        verb = "deploy baseline"
        if self._get_service(target.namespace, target.baseline, verb) is not None:
            return
        name = target.service or target.stable
        stable = self._get_service(target.namespace, name, verb)
        if stable is None:
            raise NotFound(
                f"Service {target.namespace}/{name} {verb}: not found (the baseline's Service copies "
                "its ports; router option stableService names it)"
            )
        body: Any = baseline_service(stable, baseline, target)
        try:
            self.core.create_namespaced_service(target.namespace, body, _request_timeout=self.timeout)
        except Exception as err:
            if getattr(err, "status", None) != 409:
                raise api_error(
                    err, "Service", f"{target.namespace}/{target.baseline}", f"{verb} (create)"
                ) from err

    def promote_stable(self, target: WorkloadTarget, image: str) -> None:
        stable = self._read(DEPLOYMENT, target.namespace, target.stable, "promote")
        stable = self._update(stable, image, None, target.container, "promote")
        self._check_rolled_out(stable, image, target.container, "promote")

    def scale_down_canary(self, target: WorkloadTarget) -> None:
        self.autoscaler.remove(target)  # first: it would scale the canary up again
        canary = self._get(DEPLOYMENT, target.namespace, target.canary, "scale down")
        if canary is not None and _replicas(canary) != 0:
            self._patch(
                DEPLOYMENT, canary, [{"op": "replace", "path": "/spec/replicas", "value": 0}], "scale down"
            )

    def deploy_preview(
        self, target: WorkloadTarget, image: str, environment: str, namespace: str, workload: str
    ) -> None:
        ns, name = namespace or target.namespace, workload or f"{target.app}-{environment}"
        preview = self._get(DEPLOYMENT, ns, name, "deploy preview")
        if preview is None:
            stable = self._read(DEPLOYMENT, target.namespace, target.stable, "deploy preview")
            extra = {"graylane.dev/environment": environment}
            preview = self._derive(target, stable, ns, name, "preview", image, 1, extra)
        else:  # an existing preview keeps its replica count (someone may have scaled it on purpose)
            preview = self._update(preview, image, None, target.container, "deploy preview")
        self._check_rolled_out(preview, image, target.container, "deploy preview")

    def run_job(self, target: WorkloadTarget, name: str, image: str, command: tuple[str, ...]) -> None:
        job = self._get(JOB_KIND, target.namespace, name, "run")
        if job is None:
            body = self._job_body(target, name, image, command)
            job = self._create(JOB_KIND, target.namespace, body, "run")
        _check_job(job, image)

    def start_load_test(self, target: WorkloadTarget, name: str, image: str, args: tuple[str, ...]) -> None:
        """A Job running hey (the image's entrypoint) with `args`; created once, never waited for."""
        if self._get(JOB_KIND, target.namespace, name, "start load test") is None:
            self._create(
                JOB_KIND, target.namespace, load_test_job(target, name, image, args), "start load test"
            )

    # -- per-version model: one Deployment per version ---------------------------------------------------
    def deploy_version(self, target: WorkloadTarget, slot: Slot, source: str) -> None:
        """`slot`'s Deployment runs: created from `source`'s spec (see version_deployment) or, when it exists,
        scaled up if at zero. An existing one's image is never changed: graylane's own (or one someone else
        created under that name) must run slot.image, the user's first Deployment is not looked at."""
        ns, verb = target.namespace, f"deploy version {slot.version}"
        live = self._get(DEPLOYMENT, ns, slot.workload, verb)
        if live is None:
            origin = self._read(DEPLOYMENT, ns, source, verb)
            replicas = target.replicas if target.replicas is not None else max(1, _replicas(origin))
            live = self._create(DEPLOYMENT, ns, version_deployment(origin, slot, target, replicas), verb)
        else:
            running = live["spec"]["template"]["spec"]["containers"][
                container_index(live, target.container, DEPLOYMENT.kind)
            ].get("image")
            if slot.owned and running != slot.image:
                raise EffectFailed(
                    f"Deployment {_where(live)} {verb}: runs {running}, not {slot.image}; graylane "
                    f"never re-images a version's Deployment (its {target.version_label} label would "
                    "lie): delete it, or release the image under a new tag"
                )
            if _replicas(live) == 0:
                live = self._patch(
                    DEPLOYMENT,
                    live,
                    [
                        {
                            "op": "replace",
                            "path": "/spec/replicas",
                            "value": self._scale_up_replicas(target, source, slot),
                        }
                    ],
                    verb,
                )
        image = live["spec"]["template"]["spec"]["containers"][
            container_index(live, target.container, DEPLOYMENT.kind)
        ].get("image")
        self._check_rolled_out(live, image, target.container, verb)

    def _scale_up_replicas(self, target: WorkloadTarget, source: str, slot: Slot) -> int:
        if target.replicas is not None:
            return max(1, target.replicas)
        origin = (
            self._get(DEPLOYMENT, target.namespace, source, "scale up") if source != slot.workload else None
        )
        return max(1, _replicas(origin)) if origin is not None else 1

    def scale_down_version(self, target: WorkloadTarget, slot: Slot) -> None:
        live = self._get(DEPLOYMENT, target.namespace, slot.workload, f"scale down version {slot.version}")
        if live is not None and _replicas(live) != 0:
            self._patch(
                DEPLOYMENT,
                live,
                [{"op": "replace", "path": "/spec/replicas", "value": 0}],
                f"scale down version {slot.version}",
            )

    def delete_version(self, target: WorkloadTarget, slot: Slot) -> None:
        """Delete a retired Deployment graylane created (its labels say so); any other is left alone."""
        verb = f"delete version {slot.version}"
        live = self._get(DEPLOYMENT, target.namespace, slot.workload, verb)
        if live is not None and slot.owned and created_by_graylane(live, target.app):
            self._delete_deployment(target.namespace, slot.workload, live, verb)

    def _delete_deployment(self, namespace: str, name: str, live: dict[str, Any], verb: str) -> None:
        """Delete the Deployment as it was read (a precondition on its resourceVersion), its pods in the
        background; already gone is done."""
        from kubernetes import client

        body = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=live["metadata"]["resourceVersion"]),
            propagation_policy="Background",
        )
        try:
            self.api.delete_namespaced_custom_object(
                DEPLOYMENT.group,
                DEPLOYMENT.version,
                namespace,
                DEPLOYMENT.plural,
                name,
                body=body,
                _request_timeout=self.timeout,
            )
        except Exception as err:
            if getattr(err, "status", None) == 409:
                raise ConflictError(
                    f"Deployment {_where(live)} {verb}: it changed since it was read"
                ) from err
            if getattr(err, "status", None) != 404:
                raise api_error(err, DEPLOYMENT.kind, _where(live), verb) from err

    # -- Deployments ---------------------------------------------------------------------------------
    def _derive(
        self,
        target: WorkloadTarget,
        stable: dict[str, Any],
        namespace: str,
        name: str,
        track: str,
        image: str,
        replicas: int,
        extra_labels: Mapping[str, str] | None = None,
        keep_replicas: bool = False,
    ) -> dict[str, Any]:
        """The Deployment `name` copied from `stable` (created if missing) running `image` on `replicas` (an
        existing one keeps its replica count with `keep_replicas`: an autoscaler sets it)."""
        live = self._get(DEPLOYMENT, namespace, name, f"deploy {track}")
        if live is None:
            body = derived_deployment(
                stable, namespace, name, track, image, replicas, target, extra_labels or {}
            )
            live = self._create(DEPLOYMENT, namespace, body, f"deploy {track}")
        elif keep_replicas and _replicas(live) == 0:
            keep_replicas = False  # scaled down: an HPA never scales up from zero, so graylane does
        return self._update(
            live, image, None if keep_replicas else replicas, target.container, f"deploy {track}"
        )

    def _update(
        self, dep: dict[str, Any], image: str, replicas: int | None, container: str, verb: str
    ) -> dict[str, Any]:
        """Set the image (and replicas) with one guarded patch, only where they differ."""
        index = container_index(dep, container, DEPLOYMENT.kind)
        ops: list[dict[str, Any]] = []
        if dep["spec"]["template"]["spec"]["containers"][index].get("image") != image:
            ops.append(
                {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": image}
            )
        if replicas is not None and _replicas(dep) != replicas:
            ops.append({"op": "add", "path": "/spec/replicas", "value": replicas})
        return self._patch(DEPLOYMENT, dep, ops, verb) if ops else dep

    def _check_rolled_out(self, dep: dict[str, Any], image: str, container: str, verb: str) -> None:
        problem = rollout_problem(dep, image, container)
        if problem:
            raise NotReady(f"Deployment {_where(dep)} {verb}: {problem}")

    # -- Jobs ----------------------------------------------------------------------------------------
    def _job_body(
        self, target: WorkloadTarget, name: str, image: str, command: tuple[str, ...]
    ) -> dict[str, Any]:
        """A Job running the stable pod's container (its env, volumes, service account) with `image`/`command`.

        Only that one container is kept (a sidecar would keep the Job from completing), without probes, and
        the pod gets graylane's labels only, so no Service of the app ever selects a migration pod.
        """
        try:
            stable: dict[str, Any] | None = self._read(DEPLOYMENT, target.namespace, target.stable, "run job")
        except NotFound:
            stable = None
        if stable is not None:
            pod = copy.deepcopy(stable["spec"]["template"]["spec"])
            one = pod["containers"][container_index(stable, target.container, DEPLOYMENT.kind)]
            for key in (*_PROBES, "lifecycle"):
                one.pop(key, None)
        else:
            pod, one = {}, {"name": target.container or "migration"}
        one["image"] = image
        one.pop("args", None)
        if command:
            one["command"] = list(command)
        else:
            one.pop("command", None)  # the image's own entrypoint
        pod["containers"] = [one]
        pod["restartPolicy"] = "Never"
        labels = {APP: target.app, JOB: name, MANAGED_BY[0]: MANAGED_BY[1]}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": target.namespace, "labels": labels},
            "spec": {
                "backoffLimit": 1,
                "template": {"metadata": {"labels": {APP: target.app, JOB: name}}, "spec": pod},
            },
        }

    # -- API calls -----------------------------------------------------------------------------------
    def _get(self, kind: Kind, namespace: str, name: str, verb: str) -> dict[str, Any] | None:
        try:
            return json_object(
                self.api.get_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, name, _request_timeout=self.timeout
                )
            )
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return None
            raise api_error(err, kind.kind, f"{namespace}/{name}", f"{verb} (read)") from err

    def _read(self, kind: Kind, namespace: str, name: str, verb: str) -> dict[str, Any]:
        obj = self._get(kind, namespace, name, verb)
        if obj is None:
            raise NotFound(f"{kind.kind} {namespace}/{name} {verb}: not found")
        return obj

    def _create(self, kind: Kind, namespace: str, body: dict[str, Any], verb: str) -> dict[str, Any]:
        """Create; if it exists already (another writer, or our own earlier attempt) read and use that."""
        name = body["metadata"]["name"]
        try:
            return json_object(
                self.api.create_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, body, _request_timeout=self.timeout
                )
            )
        except Exception as err:
            if getattr(err, "status", None) != 409:
                raise api_error(err, kind.kind, f"{namespace}/{name}", f"{verb} (create)") from err
        return self._read(kind, namespace, name, verb)

    def _patch(self, kind: Kind, obj: dict[str, Any], ops: list[dict[str, Any]], verb: str) -> dict[str, Any]:
        """Apply `ops` only if `obj` is still the stored version (a `test` on resourceVersion comes first)."""
        meta = obj["metadata"]
        namespace, name, version = meta["namespace"], meta["name"], meta["resourceVersion"]
        guarded = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *ops]
        try:
            return json_object(
                self.api.patch_namespaced_custom_object(
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    name,
                    guarded,
                    _content_type=JSON_PATCH,
                    _request_timeout=self.timeout,
                )
            )
        except Exception as err:
            raise self._patch_error(err, kind, namespace, name, version, verb) from err

    def _patch_error(
        self, err: Exception, kind: Kind, namespace: str, name: str, version: str, verb: str
    ) -> GraylaneError:
        # A failed `test` and a bad path both answer 422: the stored version tells them apart.
        if getattr(err, "status", None) == 422:
            now = self._get(kind, namespace, name, verb)
            current = now["metadata"]["resourceVersion"] if now is not None else "(deleted)"
            if current != version:
                lost = ConflictError(
                    f"{kind.kind} {namespace}/{name} {verb}: resourceVersion {version} moved on to {current}"
                )
                lost.__cause__ = err
                return lost
        return api_error(err, kind.kind, f"{namespace}/{name}", verb)


# -- pure helpers ------------------------------------------------------------------------------------


def derived_deployment(
    stable: Mapping[str, Any],
    namespace: str,
    name: str,
    track: str,
    image: str,
    replicas: int,
    target: WorkloadTarget,
    extra_labels: Mapping[str, str],
) -> dict[str, Any]:
    """The body of Deployment `name`: the stable's spec with renamed labels, the track label and `image`."""
    old = stable["metadata"]["name"]
    spec = copy.deepcopy(stable["spec"])
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**relabel(selector.get("matchLabels"), old, name), TRACK: track}
    template_meta = spec["template"].setdefault("metadata", {})
    pod_labels = {**relabel(template_meta.get("labels"), old, name), TRACK: track, **extra_labels}
    template_meta["labels"] = pod_labels
    spec["replicas"] = replicas
    spec["template"]["spec"]["containers"][container_index(stable, target.container, DEPLOYMENT.kind)][
        "image"
    ] = image
    if namespace == stable["metadata"]["namespace"] and selects(
        stable["spec"].get("selector") or {}, pod_labels
    ):
        raise ConfigError(
            f"Deployment {namespace}/{name} deploy {track}: its pods would be selected by the stable Deployment "
            f"{old}'s selector {stable['spec'].get('selector')} (no selector label carries the name {old!r}); "
            f"create {name} once with labels of its own, graylane then only sets its image and replicas"
        )
    annotations = {
        k: v
        for k, v in (stable["metadata"].get("annotations") or {}).items()
        if k not in _STRIPPED_ANNOTATIONS
    }
    labels = {
        **relabel(stable["metadata"].get("labels"), old, name),
        TRACK: track,
        APP: target.app,
        MANAGED_BY[0]: MANAGED_BY[1],
        **extra_labels,
    }
    meta = {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {**annotations, DERIVED_FROM: old},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


BASELINE_TRACK = "baseline"


def _baseline_replicas(
    target: WorkloadTarget, stable: Mapping[str, Any], canary: Mapping[str, Any] | None
) -> int:
    """The canary's size: its replica count when it runs, else what the canary is given (workload.replicas, or
    the stable's count)."""
    if canary is not None and _replicas(canary) > 0:
        return _replicas(canary)
    return target.replicas if target.replicas is not None else max(1, _replicas(stable))


def baseline_service(
    stable: Mapping[str, Any], baseline: Mapping[str, Any], target: WorkloadTarget
) -> dict[str, Any]:
    """The body of the baseline's Service: the stable Service's ports (no node ports), selecting exactly the
    baseline Deployment's pods (its selector), labelled as graylane's (the stable's labels renamed, the track)."""
    old = stable["metadata"]["name"]
    ports = [
        {k: v for k, v in p.items() if k != "nodePort"} for p in (stable.get("spec") or {}).get("ports") or []
    ]
    labels = {
        **relabel(stable["metadata"].get("labels"), target.stable, target.baseline),
        TRACK: BASELINE_TRACK,
        APP: target.app,
        MANAGED_BY[0]: MANAGED_BY[1],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": target.baseline,
            "namespace": target.namespace,
            "labels": labels,
            "annotations": {DERIVED_FROM: old},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": dict(baseline["spec"]["selector"]["matchLabels"]),
            "ports": ports,
        },
    }


VERSION_ANNOTATION = "graylane.dev/version"
K8S_VERSION_LABEL = "app.kubernetes.io/version"


def version_deployment(
    source: Mapping[str, Any], slot: Slot, target: WorkloadTarget, replicas: int
) -> dict[str, Any]:
    """The body of `slot`'s Deployment: `source`'s (the stable version's) spec with slot.image, the version label
    (target.version_label, and app.kubernetes.io/version where the source has it) set to slot.label on the
    Deployment, its selector and its pods, labels holding the source's name renamed, graylane's labels added.
    Everything else of the source is kept (containers, env, volumes, probes, other labels and annotations).

    The source's selector must select on the version label: otherwise both Deployments would claim each
    other's pods (ConfigError)."""
    old, key = source["metadata"]["name"], target.version_label
    spec = copy.deepcopy(source["spec"])
    selector = spec.setdefault("selector", {})
    if key not in (selector.get("matchLabels") or {}):
        raise ConfigError(
            f"Deployment {_where(source)}: its selector {selector} has no {key} label; each version's "
            f"Deployment must select its own pods (workload.versionLabel {key}, which the subsets "
            "select on too): add it to the selector and the pod labels"
        )
    keys = {key, K8S_VERSION_LABEL}

    def versioned(labels: Mapping[str, str] | None) -> dict[str, str]:
        return {
            k: (slot.label if k in keys else slot.workload if v == old else v)
            for k, v in (labels or {}).items()
        }

    selector["matchLabels"] = versioned(selector["matchLabels"])
    template_meta = spec["template"].setdefault("metadata", {})
    pod_labels = {**versioned(template_meta.get("labels")), key: slot.label}
    template_meta["labels"] = pod_labels
    template_meta.setdefault("annotations", {})[VERSION_ANNOTATION] = slot.version
    spec["replicas"] = replicas
    spec["template"]["spec"]["containers"][container_index(source, target.container, DEPLOYMENT.kind)][
        "image"
    ] = slot.image
    if selects(source["spec"].get("selector") or {}, pod_labels):
        raise ConfigError(
            f"Deployment {_where(source)}: its selector {source['spec'].get('selector')} would also "
            f"select the pods of {slot.workload}"
        )
    annotations = {
        k: v
        for k, v in (source["metadata"].get("annotations") or {}).items()
        if k not in _STRIPPED_ANNOTATIONS
    }
    labels = {
        **versioned(source["metadata"].get("labels")),
        key: slot.label,
        APP: target.app,
        MANAGED_BY[0]: MANAGED_BY[1],
    }
    meta = {
        "name": slot.workload,
        "namespace": source["metadata"]["namespace"],
        "labels": labels,
        "annotations": {**annotations, DERIVED_FROM: old, VERSION_ANNOTATION: slot.version},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def created_by_graylane(dep: Mapping[str, Any], app: str) -> bool:
    labels = dep.get("metadata", {}).get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and labels.get(APP) == app


def relabel(labels: Mapping[str, str] | None, old: str, new: str) -> dict[str, str]:
    """The labels with every value equal to `old` (the stable's name) replaced by `new`."""
    return {k: (new if v == old else v) for k, v in (labels or {}).items()}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) matches `labels`."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op, False)
        if not ok:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def container_index(obj: Mapping[str, Any], container: str, kind: str) -> int:
    """Index of the policy's container in the pod template (the first when the policy names none)."""
    containers = obj["spec"]["template"]["spec"]["containers"]
    if not container:
        return 0
    for i, c in enumerate(containers):
        if c.get("name") == container:
            return i
    names = ", ".join(c.get("name", "?") for c in containers)
    raise ConfigError(
        f"{kind} {_where(obj)}: workload.container {container!r} is not in its pod template "
        f"(containers: {names})"
    )


def rollout_problem(dep: Mapping[str, Any], image: str, container: str) -> str:
    """Why the Deployment is not rolled out on `image` yet; "" when it is (the checks `kubectl rollout status` makes)."""
    spec, status = dep["spec"], dep.get("status") or {}
    live = spec["template"]["spec"]["containers"][container_index(dep, container, DEPLOYMENT.kind)].get(
        "image"
    )
    if live != image:
        return f"runs {live}, not {image}"
    generation, observed = dep["metadata"].get("generation", 0), status.get("observedGeneration", 0)
    if observed < generation:
        return f"rollout of {image} not observed yet (generation {generation}, observed {observed})"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"rollout of {image} stuck: {cond.get('message', 'progress deadline exceeded')}"
    want = _replicas(dep)
    counts = {
        k: status.get(k, 0) for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    }
    if any(v != want for v in counts.values()):
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        return f"rolling out {image}: {shown} of {want}"
    return ""


def _check_job(job: Mapping[str, Any], image: str) -> None:
    """Return when the Job succeeded; NotReady while it runs; GraylaneError (permanent) when it failed."""
    where = _where(job)
    live = [c.get("image") for c in job["spec"]["template"]["spec"]["containers"]]
    if image not in live:
        raise GraylaneError(
            f"Job {where} run: exists with image {', '.join(map(str, live))}, not {image}; "
            "delete it to run the migration again"
        )
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions or (status.get("succeeded") or 0) > 0:
        return
    if "Failed" in conditions:
        cond = conditions["Failed"]
        raise EffectFailed(
            f"Job {where} run: failed: {cond.get('reason', '')}: {cond.get('message', '')} "
            f"({status.get('failed', 0)} failed pods)"
        )
    raise NotReady(
        f"Job {where} run: not finished (active {status.get('active', 0)}, failed {status.get('failed', 0)})"
    )


def load_test_job(target: WorkloadTarget, name: str, image: str, args: tuple[str, ...]) -> dict[str, Any]:
    """The Job of a load test: one pod running `image` (its entrypoint is hey) with `args`, never retried (a
    second run would double the load), removed an hour after it finished. Its pod has graylane's labels only,
    so no Service of the app selects it."""
    labels = {APP: target.app, JOB: name, MANAGED_BY[0]: MANAGED_BY[1]}
    pod = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "load-test",
                "image": image,
                "args": list(args),
                "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
            }
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": target.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": {APP: target.app, JOB: name}}, "spec": pod},
        },
    }


def _replicas(dep: Mapping[str, Any]) -> int:
    value = dep["spec"].get("replicas")
    return 1 if value is None else int(value)


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
