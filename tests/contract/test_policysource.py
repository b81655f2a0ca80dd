"""ConfigMapPolicies against the real kube-apiserver: labelled ConfigMaps the service owner manages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from functions.core.policy import Policy
from functions.errors import NotFound, PolicyError
from functions.providers.kube import client_from
from functions.providers.policysource import ConfigMapPolicies

pytestmark = pytest.mark.k8s


def policy_doc(name: str, repository: str, namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": metadata,
        "spec": {
            "image": {"repository": repository},
            "router": {"provider": "recording"},
            "stages": [{"canary": {"steps": [{"weight": 50, "pause": "10s"}]}}, {"promote": {}}],
        },
    }


@pytest.fixture
def core(kube: Any) -> Iterator[Any]:
    from kubernetes import client

    api_client = kube.api_client()
    yield client.CoreV1Api(api_client)
    api_client.close()


@pytest.fixture
def source(kube: Any, ns: str) -> Iterator[ConfigMapPolicies]:
    api_client = client_from(configuration=kube.configuration)
    yield ConfigMapPolicies(api_client, namespaces=[ns])
    api_client.close()


def put_policy(core: Any, ns: str, cm_name: str, *docs: dict[str, Any] | str, labelled: bool = True) -> None:
    text = "".join(d if isinstance(d, str) else "---\n" + yaml.safe_dump(d) for d in docs)
    labels = {"graylane.dev/role": "policy"} if labelled else {}
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": cm_name, "labels": labels}, "data": {"policy.yaml": text}}
    )


def test_get_parses_the_labelled_configmap_in_the_app_namespace(
    core: Any, ns: str, source: ConfigMapPolicies
) -> None:
    put_policy(core, ns, "web-policy", policy_doc("web", "registry.example.com/web"))

    policy = source.get(f"{ns}/web")

    assert isinstance(policy, Policy)
    assert (policy.app, policy.image.repository, policy.router.provider) == (
        f"{ns}/web",
        "registry.example.com/web",
        "recording",
    )


def test_get_of_an_undeclared_app_is_not_found(core: Any, ns: str, source: ConfigMapPolicies) -> None:
    put_policy(core, ns, "unlabelled", policy_doc("web", "registry.example.com/web"), labelled=False)

    with pytest.raises(NotFound, match=f"ReleasePolicy {ns}/web get"):
        source.get(f"{ns}/web")
    assert source.all() == []


def test_one_configmap_may_hold_several_policies(core: Any, ns: str, source: ConfigMapPolicies) -> None:
    put_policy(
        core, ns, "team", policy_doc("web", "registry.example.com/web"), policy_doc("api", "ghcr.io/acme/api")
    )

    assert [p.name for p in source.all()] == ["web", "api"]
    assert source.get(f"{ns}/api").image.repository == "ghcr.io/acme/api"


def test_invalid_policy_fails_get_but_not_all(core: Any, ns: str, source: ConfigMapPolicies) -> None:
    broken = policy_doc("web", "registry.example.com/web")
    broken["spec"]["router"] = {}
    put_policy(core, ns, "a-broken", broken)
    put_policy(core, ns, "b-good", policy_doc("api", "registry.example.com/api"))
    put_policy(core, ns, "c-not-yaml", "spec: [unclosed\n")

    with pytest.raises(PolicyError, match=f"ConfigMap {ns}/a-broken policy.yaml#0: spec.router"):
        source.get(f"{ns}/web")
    assert [p.name for p in source.all()] == ["api"]


def test_a_policy_cannot_name_another_namespace(core: Any, ns: str, source: ConfigMapPolicies) -> None:
    put_policy(core, ns, "web-policy", policy_doc("web", "registry.example.com/web", namespace="kube-system"))

    with pytest.raises(PolicyError, match="metadata.namespace: 'kube-system' differs"):
        source.get(f"{ns}/web")


def test_an_app_declared_twice_is_refused(core: Any, ns: str, source: ConfigMapPolicies) -> None:
    put_policy(core, ns, "one", policy_doc("web", "registry.example.com/web"))
    put_policy(core, ns, "two", policy_doc("web", "registry.example.com/web2"))

    with pytest.raises(PolicyError, match="declared more than once"):
        source.get(f"{ns}/web")


def test_for_image_matches_the_repository(core: Any, ns: str, source: ConfigMapPolicies) -> None:
    put_policy(
        core, ns, "team", policy_doc("web", "registry.example.com/web"), policy_doc("api", "ghcr.io/acme/api")
    )

    match = source.for_image("ghcr.io/acme/api", "1.2.3")

    assert match is not None and match.app == f"{ns}/api"
    assert source.for_image("ghcr.io/acme/unknown", "1.2.3") is None


def test_namespaces_limit_all(kube: Any, core: Any, ns: str) -> None:
    put_policy(core, ns, "web-policy", policy_doc("web", "registry.example.com/web"))
    api_client = client_from(configuration=kube.configuration)

    assert ConfigMapPolicies(api_client, namespaces=["default"]).all() == []
    assert f"{ns}/web" in [p.app for p in ConfigMapPolicies(api_client).all()]
    api_client.close()


def test_list_configmaps_follows_continue_tokens_across_pages(kube: Any, ns: str, core: Any) -> None:
    from functions.providers.kube import list_configmaps

    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}", "labels": {"pick": "yes"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other", "labels": {"pick": "no"}}})
    api_client = client_from(configuration=kube.configuration)
    try:
        names = sorted(cm["metadata"]["name"] for cm in list_configmaps(api_client, ns, "pick=yes", page=2))
    finally:
        api_client.close()
    assert names == [f"cm-{i}" for i in range(5)]
