"""Contract of the Kubernetes API graylane relies on, checked against the real kube-apiserver 1.37.

Pins down the server semantics (resourceVersion CAS, patch types, selectors, SSA, CRD schemas and CEL rules,
status subresource, watch), the quirks of the official client 37 (research §8) and the test tools themselves
(fault proxy, fake Nodes: tests/contract/test_k8s_nodes.py). If a fake server is ever needed, it must pass
this file.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client import ApiException

from tests.k8s.cluster import (
    FakeNodes,
    KubeCluster,
    install_crds,
    pod_is_ready,
    wait_deployment_ready,
)
from tests.k8s.faultproxy import Faults, describe

k8s = pytest.mark.k8s
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
SMP = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def co(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def config_map(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def deployment(name: str, image: str = "demo:1", replicas: int = 3) -> dict[str, Any]:
    labels = {"app": name}
    containers = [{"name": "app", "image": image}, {"name": "sidecar", "image": "proxy:1"}]
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
        },
    }


def rv_int(obj: Any) -> int:
    rv = obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else obj.metadata.resource_version
    return int(rv)


# -- core objects: create, read, replace, resourceVersion CAS --------------------------------------------


@k8s
def test_create_fills_server_metadata_and_read_returns_it(core: client.CoreV1Api, ns: str) -> None:
    created = core.create_namespaced_config_map(ns, config_map("c1", {"weight": "10"}))
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.namespace == ns
    assert rv_int(created) > 0
    read = core.read_namespaced_config_map("c1", ns)
    assert read.data == {"weight": "10"}
    assert read.metadata.resource_version == created.metadata.resource_version


@k8s
def test_replace_drops_absent_keys_and_every_write_moves_the_resource_version(
    core: client.CoreV1Api, ns: str
) -> None:
    first = core.create_namespaced_config_map(ns, config_map("c1", {"weight": "10", "old": "x"}))
    first.data = {"weight": "20"}
    replaced = core.replace_namespaced_config_map("c1", ns, first)
    assert replaced.data == {"weight": "20"}  # PUT is a full replace
    patched = core.patch_namespaced_config_map("c1", ns, {"data": {"weight": "30"}})
    assert rv_int(first) < rv_int(replaced) < rv_int(patched)


@k8s
def test_stale_put_is_refused_with_409_and_leaves_the_object_unchanged(
    core: client.CoreV1Api, ns: str
) -> None:
    seen = core.create_namespaced_config_map(ns, config_map("c1", {"weight": "10"}))
    seen.data = {"weight": "40"}
    core.replace_namespaced_config_map("c1", ns, seen)  # carries the rv we read: accepted
    seen.data = {"weight": "50"}  # same, now stale, rv
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c1", ns, seen)
    assert (err.value.status, err.value.reason) == (409, "Conflict")
    assert core.read_namespaced_config_map("c1", ns).data == {"weight": "40"}


@k8s
def test_put_without_resource_version_is_unconditional(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, config_map("c1", {"weight": "10"}))
    core.patch_namespaced_config_map("c1", ns, {"data": {"weight": "11"}})
    core.replace_namespaced_config_map("c1", ns, config_map("c1", {"weight": "99"}))
    assert core.read_namespaced_config_map("c1", ns).data == {"weight": "99"}


@k8s
def test_merge_patch_carrying_a_stale_resource_version_is_refused(core: client.CoreV1Api, ns: str) -> None:
    stale = core.create_namespaced_config_map(
        ns, config_map("c1", {"weight": "10"})
    ).metadata.resource_version
    core.patch_namespaced_config_map("c1", ns, {"data": {"weight": "20"}})
    body = {"metadata": {"resourceVersion": stale}, "data": {"weight": "30"}}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c1", ns, body, _content_type=MERGE_PATCH)
    assert err.value.status == 409
    assert core.read_namespaced_config_map("c1", ns).data == {"weight": "20"}


@k8s
def test_json_patch_guarded_by_a_test_op_on_the_resource_version(core: client.CoreV1Api, ns: str) -> None:
    rv = core.create_namespaced_config_map(ns, config_map("c1", {"weight": "10"})).metadata.resource_version

    def guarded(expected_rv: str, weight: str) -> Any:
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": expected_rv},
            {"op": "replace", "path": "/data/weight", "value": weight},
        ]
        return core.patch_namespaced_config_map("c1", ns, ops, _content_type=JSON_PATCH)

    assert guarded(rv, "20").data == {"weight": "20"}
    with pytest.raises(ApiException) as err:
        guarded(rv, "99")  # rv moved on with the first patch
    assert (err.value.status, err.value.reason) == (422, "Unprocessable Entity")
    assert core.read_namespaced_config_map("c1", ns).data == {"weight": "20"}


@k8s
def test_label_selectors_and_list_metadata(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, config_map("c1", {}, {"app": "demo", "track": "stable"}))
    core.create_namespaced_config_map(ns, config_map("c2", {}, {"app": "demo", "track": "canary"}))
    core.create_namespaced_config_map(ns, config_map("c3", {}, {"app": "other"}))

    def names(selector: str) -> list[str]:
        return sorted(
            cm.metadata.name for cm in core.list_namespaced_config_map(ns, label_selector=selector).items
        )

    assert names("app=demo") == ["c1", "c2"]
    assert names("app=demo,track=canary") == ["c2"]
    assert names("track in (stable,canary)") == ["c1", "c2"]
    assert names("app!=demo") == ["c3"]
    assert names("track") == ["c1", "c2"]
    assert names("!track") == ["c3"]
    listed = core.list_namespaced_config_map(ns)
    assert listed.kind == "ConfigMapList" and int(listed.metadata.resource_version) > 0


@k8s
def test_error_statuses_carry_kubernetes_reasons(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, config_map("c1", {}))
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(ns, config_map("c1", {}))
    assert exists.value.status == 409 and '"reason":"AlreadyExists"' in exists.value.body
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", ns)
    assert missing.value.status == 404 and '"reason":"NotFound"' in missing.value.body
    assert '"name":"nope"' in missing.value.body and '"kind":"configmaps"' in missing.value.body
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map(f"{ns}-missing", config_map("c1", {}))
    assert no_ns.value.status == 404
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_config_map(ns, config_map("Bad_Name", {}))
    assert invalid.value.status == 422 and '"reason":"Invalid"' in invalid.value.body


# -- patch flavours ----------------------------------------------------------------------------------------


@k8s
def test_strategic_merge_keeps_containers_by_name_merge_patch_replaces_lists(
    apps: client.AppsV1Api, ns: str
) -> None:
    apps.create_namespaced_deployment(ns, deployment("web"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:2"}]}}}}
    smp = apps.patch_namespaced_deployment("web", ns, patch)  # client default for a dict body: SMP
    assert [(c.name, c.image) for c in smp.spec.template.spec.containers] == [
        ("app", "demo:2"),
        ("sidecar", "proxy:1"),
    ]
    merged = apps.patch_namespaced_deployment("web", ns, patch, _content_type=MERGE_PATCH)
    assert [c.name for c in merged.spec.template.spec.containers] == ["app"]


@k8s
def test_server_side_apply_conflicts_between_managers_until_forced(core: client.CoreV1Api, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"weight": "10"}}
    core.patch_namespaced_config_map("ssa", ns, body, field_manager="graylane", _content_type=APPLY)
    other = dict(body, data={"weight": "77"})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("ssa", ns, other, field_manager="gitops", _content_type=APPLY)
    assert err.value.status == 409
    assert core.read_namespaced_config_map("ssa", ns).data == {"weight": "10"}
    forced = core.patch_namespaced_config_map(
        "ssa", ns, other, field_manager="gitops", force=True, _content_type=APPLY
    )
    assert forced.data == {"weight": "77"}


# -- custom resources --------------------------------------------------------------------------------------


def ingress_route(group: str = "traefik.io", weights: tuple[int, int] = (100, 0)) -> dict[str, Any]:
    services = [
        {"name": "demo-stable", "port": 80, "weight": weights[0]},
        {"name": "demo-canary", "port": 80, "weight": weights[1]},
    ]
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {
            "entryPoints": ["web"],
            "routes": [{"match": "Host(`demo.local`)", "kind": "Rule", "services": services}],
        },
    }


def traefik_service(group: str = "traefik.io") -> dict[str, Any]:
    services = [
        {"name": "demo-stable", "port": 80, "weight": 90},
        {"name": "demo-canary", "port": 80, "weight": 10},
    ]
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {"weighted": {"services": services}},
    }


def middleware(group: str = "traefik.io") -> dict[str, Any]:
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": "Middleware",
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {"rateLimit": {"average": 100, "burst": 50, "period": "1s"}},
    }


def virtual_service(version: str = "v1") -> dict[str, Any]:
    canary = {"destination": {"host": "demo", "subset": "canary", "port": {"number": 80}}, "weight": 100}
    split = [
        {"destination": {"host": "demo", "subset": "stable"}, "weight": 90},
        {"destination": {"host": "demo", "subset": "canary"}, "weight": 10},
    ]
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "VirtualService",
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {
            "hosts": ["demo"],
            "http": [
                {"name": "ab", "match": [{"headers": {"x-canary": {"exact": "1"}}}], "route": [canary]},
                {"name": "primary", "route": split},
            ],
        },
    }


def destination_rule(version: str = "v1") -> dict[str, Any]:
    subsets = [
        {"name": "stable", "labels": {"track": "stable"}},
        {"name": "canary", "labels": {"track": "canary"}},
    ]
    policy = {
        "connectionPool": {"http": {"http1MaxPendingRequests": 10}},
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s"},
    }
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "DestinationRule",
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {"host": "demo", "subsets": subsets, "trafficPolicy": policy},
    }


def http_route(version: str = "v1") -> dict[str, Any]:
    ab_match = [{"headers": [{"name": "x-canary", "type": "Exact", "value": "1"}]}]
    return {
        "apiVersion": f"gateway.networking.k8s.io/{version}",
        "kind": "HTTPRoute",
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["demo.example.com"],
            "rules": [
                {"matches": ab_match, "backendRefs": [{"name": "demo-canary", "port": 80}]},
                {
                    "backendRefs": [
                        {"name": "demo-stable", "port": 80, "weight": 90},
                        {"name": "demo-canary", "port": 80, "weight": 10},
                    ]
                },
            ],
        },
    }


class Kind:
    """One served CRD version, a valid object, a misspelt field path and a value the schema refuses."""

    def __init__(
        self,
        group: str,
        version: str,
        plural: str,
        make: Callable[[], dict[str, Any]],
        good_path: str,
        typo_path: str,
        bad_value: Any,
    ) -> None:
        self.group, self.version, self.plural, self.make = group, version, plural, make
        self.good_path, self.typo_path, self.bad_value = good_path, typo_path, bad_value

    def __repr__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}"


def _get(obj: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


KINDS = [
    *(
        k
        for g, bad in (
            ("traefik.io", -1),
            ("traefik.containo.us", "ten"),
        )  # v2.11 sets no minimum: a wrong type
        for k in (
            Kind(
                g,
                "v1alpha1",
                "ingressroutes",
                lambda g=g: ingress_route(g),
                "/spec/routes/0/services/0/weight",
                "/spec/routes/0/services/0/wieght",
                bad,
            ),
            Kind(
                g,
                "v1alpha1",
                "traefikservices",
                lambda g=g: traefik_service(g),
                "/spec/weighted/services/1/weight",
                "/spec/weighted/services/1/wieght",
                bad,
            ),
            Kind(
                g,
                "v1alpha1",
                "middlewares",
                lambda g=g: middleware(g),
                "/spec/rateLimit/average",
                "/spec/rateLimit/averag",
                bad,
            ),
        )
    ),
    *(
        Kind(
            "networking.istio.io",
            v,
            "virtualservices",
            lambda v=v: virtual_service(v),
            "/spec/http/1/route/1/weight",
            "/spec/http/1/route/1/wieght",
            "ten",
        )
        for v in ("v1beta1", "v1alpha3", "v1")
    ),
    Kind(
        "networking.istio.io",
        "v1",
        "destinationrules",
        destination_rule,
        "/spec/trafficPolicy/outlierDetection/consecutive5xxErrors",
        "/spec/trafficPolicy/outlierDetection/consecutive5xxError",
        -1,
    ),
    *(
        Kind(
            "gateway.networking.k8s.io",
            v,
            "httproutes",
            lambda v=v: http_route(v),
            "/spec/rules/1/backendRefs/1/weight",
            "/spec/rules/1/backendRefs/1/wieght",
            1_000_001,
        )
        for v in ("v1", "v1beta1")
    ),
]


@k8s
@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_crd_schema_prunes_typos_and_rejects_out_of_range_values(
    co: client.CustomObjectsApi, ns: str, kind: Kind
) -> None:
    created = co.create_namespaced_custom_object(kind.group, kind.version, ns, kind.plural, kind.make())
    original = _get(created, kind.good_path)
    typo_field = kind.typo_path.rsplit("/", 1)[1]

    def patch(ops: list[dict[str, Any]]) -> Any:
        return co.patch_namespaced_custom_object(
            kind.group, kind.version, ns, kind.plural, "demo", ops, _content_type=JSON_PATCH
        )

    for op in (
        "add",
        "replace",
    ):  # json-patch lets `replace` create a key (1.20 and 1.37): both end up pruned
        after = patch([{"op": op, "path": kind.typo_path, "value": 50}])
        assert typo_field not in _get(after, kind.typo_path.rsplit("/", 1)[0]), f"{op} kept {typo_field}"
        assert _get(after, kind.good_path) == original
    merged = co.patch_namespaced_custom_object(
        kind.group, kind.version, ns, kind.plural, "demo", {"metadata": {"labels": {"x": "y"}}, "bogusTop": 1}
    )
    assert "bogusTop" not in merged
    with pytest.raises(ApiException) as err:
        patch([{"op": "replace", "path": kind.good_path, "value": kind.bad_value}])
    assert err.value.status == 422, err.value.body
    stored = co.get_namespaced_custom_object(kind.group, kind.version, ns, kind.plural, "demo")
    assert _get(stored, kind.good_path) == original


@k8s
@pytest.mark.parametrize(
    ("group", "version", "plural", "body", "reason"),
    [
        (
            "traefik.io",
            "v1alpha1",
            "middlewares",
            {
                "spec": {
                    "circuitBreaker": {"expression": "LatencyAtQuantileMS(50.0) > 100", "responseCode": 600}
                }
            },
            "responseCode above 599",
        ),
        (
            "traefik.io",
            "v1alpha1",
            "ingressroutes",
            {"spec": {"routes": [{"match": "Host(`a`)", "services": [{"name": "s", "kind": "Pod"}]}]}},
            "service kind outside the enum",
        ),
        (
            "traefik.io",
            "v1alpha1",
            "ingressroutes",
            {"spec": {"routes": [{"services": [{"name": "s"}]}]}},
            "route without match",
        ),
        (
            "traefik.io",
            "v1alpha1",
            "traefikservices",
            {"spec": {"mirroring": {"mirrors": [{"name": "m"}]}}},
            "mirroring without name",
        ),
        (
            "networking.istio.io",
            "v1",
            "virtualservices",
            {"spec": {"http": [{"match": [{"headers": {"x": {"exact": "1", "prefix": "2"}}}]}]}},
            "string match with two of exact/prefix/regex",
        ),
        (
            "networking.istio.io",
            "v1",
            "virtualservices",
            {"spec": {"http": [{"route": [{"weight": 5}]}]}},
            "route without destination",
        ),
        (
            "networking.istio.io",
            "v1",
            "destinationrules",
            {
                "spec": {
                    "host": "d",
                    "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "MAYBE"}}},
                }
            },
            "h2UpgradePolicy outside the enum",
        ),
        ("networking.istio.io", "v1", "destinationrules", {"spec": {"subsets": [{"name": "a"}]}}, "no host"),
        (
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            {
                "spec": {
                    "rules": [{"matches": [{"headers": [{"name": "x", "type": "Prefix", "value": "1"}]}]}]
                }
            },
            "header match type Prefix",
        ),
        (
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            {"spec": {"hostnames": ["Not_A_Host"]}},
            "hostname pattern",
        ),
        (
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            {"spec": {"rules": [{"backendRefs": [{"name": "b", "port": 70000}]}]}},
            "port above 65535",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)
def test_crd_schema_rejects_invalid_objects(
    co: client.CustomObjectsApi,
    ns: str,
    group: str,
    version: str,
    plural: str,
    body: dict[str, Any],
    reason: str,
) -> None:
    kind = {
        "middlewares": "Middleware",
        "ingressroutes": "IngressRoute",
        "traefikservices": "TraefikService",
        "virtualservices": "VirtualService",
        "destinationrules": "DestinationRule",
        "httproutes": "HTTPRoute",
    }[plural]
    obj = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": "bad"}, **body}
    with pytest.raises(ApiException) as err:
        co.create_namespaced_custom_object(group, version, ns, plural, obj)
    assert err.value.status == 422, f"{reason}: {err.value.body}"


PORT_RULE = "(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true"


@k8s
def test_cel_rule_of_the_upstream_http_route_refuses_a_service_backend_without_port(
    api: client.ApiClient, co: client.CustomObjectsApi, ns: str
) -> None:
    """Gateway API's x-kubernetes-validations rule on spec.rules[].backendRefs[], "Must have port for Service
    reference": no schema keyword says it, only CEL, and the apiserver enforces it (422) on the served CRD."""
    answer = client.ApiextensionsV1Api(api).read_custom_resource_definition(
        "httproutes.gateway.networking.k8s.io", _preload_content=False
    )
    [v1] = [v for v in json.loads(answer.data)["spec"]["versions"] if v["name"] == "v1"]
    rules = v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]
    backend = rules["items"]["properties"]["backendRefs"]["items"]
    assert PORT_RULE in [r["rule"] for r in backend.get("x-kubernetes-validations", [])]  # kept by the server
    route = http_route()
    del route["spec"]["rules"][1]["backendRefs"][1]["port"]
    args = ("gateway.networking.k8s.io", "v1", ns, "httproutes")
    with pytest.raises(ApiException) as refused:
        co.create_namespaced_custom_object(*args, route)
    assert refused.value.status == 422, refused.value.body
    assert "spec.rules[1].backendRefs[1]: Invalid value" in refused.value.body
    assert "Must have port for Service reference" in refused.value.body
    route["spec"]["rules"][1]["backendRefs"][1]["port"] = 80
    created = co.create_namespaced_custom_object(*args, route)
    assert created["spec"]["rules"][1]["backendRefs"][1]["port"] == 80


CEL_GROUP = "cel.graylane.test"
CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"splits.{CEL_GROUP}"},
    "spec": {
        "group": CEL_GROUP,
        "scope": "Namespaced",
        "names": {"plural": "splits", "singular": "split", "kind": "Split", "listKind": "SplitList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["stable", "canary"],
                                "properties": {
                                    "stable": {"type": "integer"},
                                    "canary": {"type": "integer"},
                                    "approved": {"type": "boolean"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.stable + self.canary == 100",
                                        "message": "weights must add up to 100",
                                    },
                                    {
                                        "rule": "self.canary <= oldSelf.canary || (has(self.approved) && self.approved)",
                                        "message": "raising the canary needs approval",
                                    },  # a transition rule: not on create
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def cel_crd(api: client.ApiClient) -> Iterator[dict[str, Any]]:
    install_crds(api, [CEL_CRD])
    try:
        yield CEL_CRD
    finally:
        client.ApiextensionsV1Api(api).delete_custom_resource_definition(CEL_CRD["metadata"]["name"])


@k8s
def test_crd_cel_validation_rules_are_kept_and_enforced(
    api: client.ApiClient, co: client.CustomObjectsApi, ns: str, cel_crd: dict[str, Any]
) -> None:
    stored = client.ApiextensionsV1Api(api).read_custom_resource_definition(cel_crd["metadata"]["name"])
    rules = stored.spec.versions[0].schema.open_apiv3_schema.properties["spec"].x_kubernetes_validations
    assert [r.message for r in rules] == ["weights must add up to 100", "raising the canary needs approval"]

    def split(name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": f"{CEL_GROUP}/v1", "kind": "Split", "metadata": {"name": name}, "spec": spec}

    with pytest.raises(ApiException) as err:
        co.create_namespaced_custom_object(CEL_GROUP, "v1", ns, "splits", split("bad", stable=90, canary=20))
    assert err.value.status == 422 and "weights must add up to 100" in err.value.body, err.value.body
    co.create_namespaced_custom_object(CEL_GROUP, "v1", ns, "splits", split("s", stable=90, canary=10))
    with pytest.raises(ApiException) as err:
        co.patch_namespaced_custom_object(
            CEL_GROUP,
            "v1",
            ns,
            "splits",
            "s",
            {"spec": {"stable": 50, "canary": 50}},
            _content_type=MERGE_PATCH,
        )
    assert err.value.status == 422 and "raising the canary needs approval" in err.value.body, err.value.body
    approved = {"spec": {"stable": 50, "canary": 50, "approved": True}}
    done = co.patch_namespaced_custom_object(
        CEL_GROUP, "v1", ns, "splits", "s", approved, _content_type=MERGE_PATCH
    )
    assert done["spec"] == {"stable": 50, "canary": 50, "approved": True}


@k8s
def test_http_route_gets_upstream_defaults(co: client.CustomObjectsApi, ns: str) -> None:
    route = http_route()
    route["spec"]["rules"].append({"backendRefs": [{"name": "demo-stable", "port": 80}]})
    created = co.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", route)
    assert created["spec"]["parentRefs"][0] == {
        "name": "gw",
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
    }
    assert created["spec"]["rules"][2]["backendRefs"][0] == {
        "name": "demo-stable",
        "port": 80,
        "weight": 1,
        "group": "",
        "kind": "Service",
    }
    assert created["spec"]["rules"][2]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


@k8s
def test_empty_strings_survive_in_custom_resources(co: client.CustomObjectsApi, ns: str) -> None:
    """Traefik removes a header given an empty value; the build patch of build-kube.sh (RECIPE 2) keeps "" valid."""
    body = middleware()
    body["spec"] = {
        "headers": {"customRequestHeaders": {"X-Canary": ""}, "customResponseHeaders": {"X-Debug": ""}}
    }
    created = co.create_namespaced_custom_object("traefik.io", "v1alpha1", ns, "middlewares", body)
    assert created["spec"] == body["spec"]


@k8s
def test_custom_resource_lifecycle_with_weights(co: client.CustomObjectsApi, ns: str) -> None:
    args = ("traefik.io", "v1alpha1", ns, "ingressroutes")
    created = co.create_namespaced_custom_object(*args, ingress_route())
    assert isinstance(created, dict) and created["metadata"]["generation"] == 1  # 201 mapped to a body
    merged = co.patch_namespaced_custom_object(
        *args, "demo", {"metadata": {"labels": {"release": "r1"}}}, _content_type=MERGE_PATCH
    )
    rv = merged["metadata"]["resourceVersion"]
    shift = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/routes/0/services/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/routes/0/services/1/weight", "value": 50},
    ]
    shifted = co.patch_namespaced_custom_object(*args, "demo", shift, _content_type=JSON_PATCH)
    assert [s["weight"] for s in shifted["spec"]["routes"][0]["services"]] == [50, 50]
    assert shifted["metadata"]["generation"] == 2  # spec changed; the label patch did not bump it
    with pytest.raises(ApiException) as stale_test:
        co.patch_namespaced_custom_object(*args, "demo", shift, _content_type=JSON_PATCH)
    assert stale_test.value.status == 422
    with pytest.raises(ApiException) as smp:
        co.patch_namespaced_custom_object(*args, "demo", {"spec": {}}, _content_type=SMP)
    assert smp.value.status == 415
    stale = dict(created, spec=ingress_route(weights=(0, 100))["spec"])  # carries the creation rv
    with pytest.raises(ApiException) as conflict:
        co.replace_namespaced_custom_object(*args, "demo", stale)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as dup:
        co.create_namespaced_custom_object(*args, ingress_route())
    assert dup.value.status == 409
    co.delete_namespaced_custom_object(*args, "demo")
    with pytest.raises(ApiException) as gone:
        co.get_namespaced_custom_object(*args, "demo")
    assert gone.value.status == 404


@k8s
def test_every_router_kind_is_created_and_listed_by_label(co: client.CustomObjectsApi, ns: str) -> None:
    objects = [
        ("traefik.io", "v1alpha1", "traefikservices", traefik_service()),
        ("traefik.containo.us", "v1alpha1", "middlewares", middleware("traefik.containo.us")),
        ("networking.istio.io", "v1", "virtualservices", virtual_service()),
        ("networking.istio.io", "v1", "destinationrules", destination_rule()),
        ("gateway.networking.k8s.io", "v1", "httproutes", http_route()),
    ]
    for group, version, plural, body in objects:
        co.create_namespaced_custom_object(group, version, ns, plural, body)
        other = dict(body, metadata={"name": "other", "labels": {"app": "other"}})
        co.create_namespaced_custom_object(group, version, ns, plural, other)
        listed = co.list_namespaced_custom_object(group, version, ns, plural, label_selector="app=demo")
        assert [o["metadata"]["name"] for o in listed["items"]] == ["demo"], plural
        stored = co.get_namespaced_custom_object(group, version, ns, plural, "demo")["spec"]
        if (
            plural != "httproutes"
        ):  # HTTPRoute gets defaults filled in (test_http_route_gets_upstream_defaults)
            assert stored == body["spec"], plural
    mirror = {
        "name": "demo-stable",
        "port": 80,
        "mirrors": [{"name": "demo-canary", "port": 80, "percent": 10}],
    }
    ts = dict(traefik_service(), metadata={"name": "mirror"}, spec={"mirroring": mirror})
    created = co.create_namespaced_custom_object("traefik.io", "v1alpha1", ns, "traefikservices", ts)
    assert created["spec"]["mirroring"] == mirror
    vs_old = co.get_namespaced_custom_object("networking.istio.io", "v1beta1", ns, "virtualservices", "demo")
    assert (
        vs_old["apiVersion"] == "networking.istio.io/v1beta1" and vs_old["spec"] == virtual_service()["spec"]
    )


@k8s
def test_crd_status_subresource_ignores_spec_and_main_resource_ignores_status(
    co: client.CustomObjectsApi, ns: str
) -> None:
    args = ("gateway.networking.k8s.io", "v1", ns, "httproutes", "demo")
    co.create_namespaced_custom_object(*args[:4], http_route())
    condition = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {
        "parents": [
            {"controllerName": "example.com/gw", "parentRef": {"name": "gw"}, "conditions": [condition]}
        ]
    }
    co.patch_namespaced_custom_object(
        *args, {"status": status, "spec": {"hostnames": []}}
    )  # main: status dropped
    after_main = co.get_namespaced_custom_object(*args)
    assert "status" not in after_main and after_main["spec"]["hostnames"] == []
    co.patch_namespaced_custom_object_status(
        *args, {"status": status, "spec": {"hostnames": ["x.example.com"]}}
    )
    after_status = co.get_namespaced_custom_object(*args)
    assert after_status["status"]["parents"][0]["conditions"][0]["type"] == "Accepted"
    assert after_status["spec"]["hostnames"] == []


# -- Deployments: generation and status ----------------------------------------------------------------


@k8s
def test_deployment_generation_and_status_subresource(apps: client.AppsV1Api, ns: str) -> None:
    created = apps.create_namespaced_deployment(ns, deployment("web"))
    assert created.metadata.generation == 1
    patched = apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:2"}]}}}}
    )
    assert patched.metadata.generation == 2
    status = {
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
        }
    }
    # a controller stand-in; what the write returns is what was stored (a real kube-controller-manager, which
    # another module may have started for the session, rewrites the status soon after)
    written = apps.patch_namespaced_deployment_status("web", ns, status)
    assert (written.status.observed_generation, written.status.ready_replicas) == (2, 3)
    assert written.metadata.generation == 2  # status writes don't bump generation
    ignored = apps.patch_namespaced_deployment(
        "web", ns, {"status": {"readyReplicas": 99}}, _content_type=MERGE_PATCH
    )
    # ignored on the main resource
    assert ignored.status.ready_replicas != 99 and ignored.metadata.generation == 2
    assert apps.read_namespaced_deployment("web", ns).status.ready_replicas != 99


# -- watch ---------------------------------------------------------------------------------------------


def _collect_watch(
    core: client.CoreV1Api, ns: str, rv: str, events: list[tuple[str, str]], **kw: Any
) -> None:
    for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv, **kw):
        events.append((ev["type"], ev["object"].metadata.name))


def _watch_thread(
    core: client.CoreV1Api, ns: str, rv: str, events: list[tuple[str, str]], **kw: Any
) -> threading.Thread:
    thread = threading.Thread(target=_collect_watch, args=(core, ns, rv, events), kwargs=kw, daemon=True)
    thread.start()
    time.sleep(0.3)  # let the watch reach the server before the writes
    return thread


@k8s
def test_watch_from_resource_version_without_replay_until_server_timeout(
    core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespaced_config_map(ns, config_map("before", {}))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    events: list[tuple[str, str]] = []
    labelled: list[tuple[str, str]] = []
    started = time.monotonic()
    t1 = _watch_thread(core, ns, rv, events, timeout_seconds=2)
    t2 = _watch_thread(core, ns, rv, labelled, timeout_seconds=2, label_selector="app=demo")
    core.create_namespaced_config_map(ns, config_map("w1", {"a": "1"}, {"app": "demo"}))
    core.create_namespaced_config_map(ns, config_map("w2", {}, {"app": "other"}))
    core.patch_namespaced_config_map("w1", ns, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w1", ns)
    t1.join(10)
    t2.join(10)
    assert not t1.is_alive() and time.monotonic() - started < 5  # ended by timeoutSeconds on the server
    assert events == [("ADDED", "w1"), ("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    assert labelled == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


# -- client quirks (research §8), observed through the fault proxy ---------------------------------------


@pytest.fixture
def pcore(faults: Faults) -> Iterator[client.CoreV1Api]:
    with faults.api_client() as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
def pco(faults: Faults) -> Iterator[client.CustomObjectsApi]:
    with faults.api_client() as api_client:
        yield client.CustomObjectsApi(api_client)


def _wait_log(faults: Faults, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(faults.log) < count and time.monotonic() < deadline:
        time.sleep(0.05)


@k8s
def test_client_content_types(
    pcore: client.CoreV1Api, pco: client.CustomObjectsApi, faults: Faults, ns: str
) -> None:
    pcore.create_namespaced_config_map(ns, config_map("c1", {"w": "0"}))
    pcore.patch_namespaced_config_map("c1", ns, {"data": {"w": "1"}})
    pcore.patch_namespaced_config_map("c1", ns, [{"op": "replace", "path": "/data/w", "value": "2"}])
    pco.create_namespaced_custom_object("traefik.io", "v1alpha1", ns, "ingressroutes", ingress_route())
    ops = [{"op": "replace", "path": "/spec/routes/0/services/0/weight", "value": 5}]
    with pytest.raises(ApiException) as err:  # CustomObjectsApi sends a list as merge-patch: always pass it
        pco.patch_namespaced_custom_object("traefik.io", "v1alpha1", ns, "ingressroutes", "demo", ops)
    assert err.value.status == 400, err.value.body  # 1.20 answered 422
    types = [(e.method, e.content_type) for e in faults.log]
    assert types == [
        ("POST", None),  # a dict body goes out without Content-Type; the apiserver reads JSON
        ("PATCH", SMP),  # built-in type, dict body: strategic merge patch
        ("PATCH", JSON_PATCH),  # built-in type, list body: json patch
        ("POST", None),
        ("PATCH", MERGE_PATCH),  # custom object, list body: still merge patch
    ], describe(faults.log)


@k8s
def test_read_timeout_is_retried_silently_on_get_but_not_on_patch(
    pcore: client.CoreV1Api, core: client.CoreV1Api, faults: Faults, ns: str
) -> None:
    core.create_namespaced_config_map(ns, config_map("c1", {"w": "0"}))
    faults.add(method="GET", path="/configmaps/c1$", delay=0.8)
    assert pcore.read_namespaced_config_map("c1", ns, _request_timeout=0.3).data == {"w": "0"}
    _wait_log(faults, 2)
    assert [(e.method, e.fault) for e in faults.log] == [("GET", None), ("GET", "delay 0.8s")], describe(
        faults.log
    )
    faults.clear_log()
    faults.add(method="PATCH", path="/configmaps/c1$", delay=0.8)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        pcore.patch_namespaced_config_map("c1", ns, {"data": {"w": "1"}}, _request_timeout=0.3)
    _wait_log(faults, 1)
    assert [e.method for e in faults.log] == ["PATCH"]
    # the proxy forwards the delayed write anyway: the client's "failed" patch lands
    deadline = time.monotonic() + 3
    while core.read_namespaced_config_map("c1", ns).data != {"w": "1"} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert core.read_namespaced_config_map("c1", ns).data == {"w": "1"}


@k8s
def test_lost_put_response_is_retried_by_urllib3_and_surfaces_as_conflict(
    pcore: client.CoreV1Api, core: client.CoreV1Api, faults: Faults, ns: str
) -> None:
    """PUT is idempotent for urllib3, so a lost answer is retried; the retry's rv is stale by our own write."""
    seen = pcore.create_namespaced_config_map(ns, config_map("c1", {"w": "0"}))
    faults.add(method="PUT", path="/configmaps/c1$", lose_response=True)
    seen.data = {"w": "1"}
    with pytest.raises(ApiException) as err:
        pcore.replace_namespaced_config_map("c1", ns, seen)
    assert err.value.status == 409
    assert [(e.method, e.status) for e in faults.log[1:]] == [("PUT", None), ("PUT", 409)]
    assert core.read_namespaced_config_map("c1", ns).data == {"w": "1"}  # our write did land


# -- the fault proxy itself ------------------------------------------------------------------------------


@k8s
def test_injected_statuses_leave_the_state_unchanged(
    pcore: client.CoreV1Api, core: client.CoreV1Api, faults: Faults, ns: str
) -> None:
    core.create_namespaced_config_map(ns, config_map("c1", {"w": "0"}))
    for code, reason in ((500, "InternalError"), (409, "Conflict"), (503, "ServiceUnavailable")):
        rule = faults.add(method="PATCH", path=r"/configmaps/c1$", status=code)
        with pytest.raises(ApiException) as err:
            pcore.patch_namespaced_config_map("c1", ns, {"data": {"w": "REJECTED"}})
        assert err.value.status == code and f'"reason": "{reason}"' in err.value.body
        assert rule.hits == 1
    faults.add(method="PATCH", path=r"/configmaps/c1$", status=429, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as throttled:
            pcore.patch_namespaced_config_map("c1", ns, {"data": {"w": "REJECTED"}})
        assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "1"
    assert core.read_namespaced_config_map("c1", ns).data == {"w": "0"}
    assert pcore.patch_namespaced_config_map("c1", ns, {"data": {"w": "1"}}).data == {
        "w": "1"
    }  # rules used up
    assert [e.status for e in faults.log] == [500, 409, 503, 429, 429, 200]


@k8s
def test_lost_response_on_create_fails_the_client_but_the_write_is_applied(
    pcore: client.CoreV1Api, core: client.CoreV1Api, faults: Faults, ns: str
) -> None:
    faults.add(method="POST", path="/configmaps$", lose_response=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):  # POST: no retry, no answer
        pcore.create_namespaced_config_map(ns, config_map("c1", {"w": "0"}))
    assert core.read_namespaced_config_map("c1", ns).data == {"w": "0"}
    assert [(e.status, e.fault) for e in faults.log] == [(None, "lost (applied: 201)")]


@k8s
def test_delay_trips_the_client_read_timeout(pcore: client.CoreV1Api, faults: Faults, ns: str) -> None:
    faults.add(method="POST", path="/configmaps$", delay=1.0)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        pcore.create_namespaced_config_map(ns, config_map("c1", {}), _request_timeout=0.3)
    assert time.monotonic() - started < 0.9


@k8s
def test_chaos_is_seeded_and_bounded_by_rate(pcore: client.CoreV1Api, faults: Faults, ns: str) -> None:
    pcore.create_namespaced_config_map(ns, config_map("c1", {}))

    def run(seed: int, rate: float) -> list[str | None]:
        faults.clear_log()
        faults.chaos(rate=rate, kinds=[500, "409", "503"], seed=seed, method="GET")
        for _ in range(30):
            try:
                pcore.read_namespaced_config_map("c1", ns)
            except ApiException as exc:
                assert exc.status in (500, 409, 503)
        faults.clear()
        return [e.fault for e in faults.log]

    first = run(seed=7, rate=0.3)
    assert run(seed=7, rate=0.3) == first  # replayable
    assert 3 <= sum(f is not None for f in first) <= 18
    assert set(first) <= {None, "500", "409", "503"}
    assert all(f is None for f in run(seed=7, rate=0.0))
    with pytest.raises(ValueError, match="chaos kinds"):
        faults.chaos(kinds=["418"])


@k8s
def test_watch_streams_through_the_proxy(
    pcore: client.CoreV1Api, core: client.CoreV1Api, faults: Faults, ns: str
) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    events: list[tuple[str, str]] = []
    faults.chaos(rate=1.0, kinds=["500"], seed=1)  # watches are spared by default
    thread = _watch_thread(pcore, ns, rv, events, timeout_seconds=2)
    first_seen = time.monotonic()
    faults.clear()
    core.create_namespaced_config_map(ns, config_map("w1", {}))
    while not events and time.monotonic() - first_seen < 1.5:
        time.sleep(0.02)
    assert events == [("ADDED", "w1")]  # delivered before the watch ends: streamed, not buffered
    assert thread.is_alive()
    thread.join(5)
    assert any("watch=true" in e.query.lower() for e in faults.log)


@k8s
def test_faults_kubeconfig_goes_through_the_proxy(faults: Faults, ns: str) -> None:
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(faults.kubeconfig), context="graylane-test")
    with api_client:
        names = [n.metadata.name for n in client.CoreV1Api(api_client).list_namespace().items]
    assert ns in names
    assert faults.log and faults.log[-1].path == "/api/v1/namespaces"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", faults.host)


# -- kube-controller-manager + fake Nodes -----------------------------------------------------------------


@k8s
@pytest.mark.controller
def test_deployment_rolls_out_with_controller_manager_onto_the_fake_nodes(
    api: client.ApiClient, apps: client.AppsV1Api, nodes: FakeNodes, ns: str
) -> None:
    apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    first = wait_deployment_ready(apps, ns, "web", timeout=30)
    assert (first.status.ready_replicas, first.status.observed_generation) == (2, 1)
    apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:2"}]}}}}
    )
    second = wait_deployment_ready(apps, ns, "web", timeout=30)
    assert second.metadata.generation == second.status.observed_generation == 2
    replica_sets = apps.list_namespaced_replica_set(ns, label_selector="app=web").items
    assert len(replica_sets) == 2
    assert sorted(rs.spec.replicas for rs in replica_sets) == [0, 2]
    # the old pods went away through kwok (graceful deletion on a Node), the new ones run on the fake Nodes
    deadline = time.monotonic() + 30
    while len(pods := client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app=web").items) != 2:
        assert time.monotonic() < deadline, [(p.metadata.name, p.metadata.deletion_timestamp) for p in pods]
        time.sleep(0.2)
    assert all(pod_is_ready(p) and p.spec.node_name in nodes.names for p in pods)
    assert {p.spec.containers[0].image for p in pods} == {"demo:2"}
