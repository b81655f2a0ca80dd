"""Release policies read from ConfigMaps the service owner manages (GitOps-friendly).

A policy ConfigMap carries the label `graylane.dev/role: policy` and the key `policy.yaml` (one or
more YAML documents). It is separate from the state ConfigMap graylane writes, so a GitOps tool and
graylane never fight over one object. A policy governs its ConfigMap's namespace only: a
`metadata.namespace` naming another namespace is refused, so nobody can steer another team's app.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from functions.core.images import match_policy
from functions.core.policy import Policy
from functions.core.policy_parse import parse_policy
from functions.core.values import value
from functions.errors import ConfigError, NotFound, PolicyError
from functions.policies import yaml_documents
from functions.providers.kube import list_configmaps

if TYPE_CHECKING:
    import kubernetes.client

__all__ = ["ConfigMapPolicies"]

log = logging.getLogger(__name__)

ROLE_SELECTOR = "graylane.dev/role=policy"
DATA_KEY = "policy.yaml"


@value
class _Found:
    """One parsed policy document, or why it could not be parsed."""

    source: str  # "ConfigMap ns/name policy.yaml#index"
    name: str | None  # metadata.name as declared, kept for invalid policies so get() reports their error
    policy: Policy | None
    error: PolicyError | None


class ConfigMapPolicies:
    """Policies from labelled ConfigMaps in `namespaces` (None: all namespaces); read fresh on every call."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespaces: list[str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._api = api_client
        self._namespaces = list(namespaces) if namespaces is not None else None
        self._timeout = timeout

    def get(self, app: str) -> Policy:
        """The policy of `namespace/name`; NotFound without one, PolicyError when it is invalid or doubled."""
        namespace, sep, name = app.partition("/")
        if not sep or not namespace or not name:
            raise ConfigError(f"app id {app!r} must be 'namespace/name'")
        found = [f for f in self._read(namespace) if f.name == name]
        if not found:
            raise NotFound(f"ReleasePolicy {app} get: no ConfigMap labelled {ROLE_SELECTOR} declares it")
        if len(found) > 1:
            sources = ", ".join(f.source for f in found)
            raise PolicyError(
                [("metadata.name", f"{app} is declared more than once: {sources}")], found[0].source
            )
        if found[0].error is not None:
            raise found[0].error
        assert found[0].policy is not None
        return found[0].policy

    def all(self) -> list[Policy]:
        """Every valid policy, ordered by namespace, ConfigMap name and position.

        An invalid policy is logged and left out: one team's typo must not stop every other release.
        """
        policies: list[Policy] = []
        for namespace in self._namespaces if self._namespaces is not None else [None]:
            for found in self._read(namespace):
                if found.error is not None:
                    log.warning("skipping invalid release policy: %s", found.error)
                elif found.policy is not None:
                    policies.append(found.policy)
        return policies

    def for_image(self, repository: str, tag: str) -> Policy | None:
        """The first policy (in `all()` order) whose image rule accepts repository:tag, or None."""
        return match_policy(self.all(), repository, tag)

    def _read(self, namespace: str | None) -> list[_Found]:
        items = sorted(
            list_configmaps(self._api, namespace, ROLE_SELECTOR, self._timeout),
            key=lambda cm: (cm["metadata"]["namespace"], cm["metadata"]["name"]),
        )
        return [found for cm in items for found in _parse_configmap(cm)]


def _parse_configmap(cm: dict[str, Any]) -> list[_Found]:
    import yaml

    namespace, cm_name = cm["metadata"]["namespace"], cm["metadata"]["name"]
    source = f"ConfigMap {namespace}/{cm_name}"
    text = (cm.get("data") or {}).get(DATA_KEY)
    if text is None:
        return [_Found(source, None, None, PolicyError([(DATA_KEY, "missing key")], source))]
    try:
        docs = yaml_documents(text)
    except yaml.YAMLError as err:
        return [_Found(source, None, None, PolicyError([(DATA_KEY, f"not YAML: {err}")], source))]
    return [_parse_doc(doc, f"{source} {DATA_KEY}#{i}", namespace) for i, doc in enumerate(docs)]


def _parse_doc(doc: Any, source: str, namespace: str) -> _Found:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    declared_name = meta.get("name") if isinstance(meta, dict) else None
    name = declared_name if isinstance(declared_name, str) else None
    if isinstance(meta, dict):
        declared = meta.get("namespace")
        if declared not in (None, namespace):
            problem = (
                "metadata.namespace",
                f"{declared!r} differs from the ConfigMap's namespace {namespace!r}",
            )
            return _Found(source, name, None, PolicyError([problem], source))
        doc = {**doc, "metadata": {**meta, "namespace": namespace}}
    try:
        return _Found(source, name, parse_policy(doc, source), None)
    except PolicyError as err:
        return _Found(source, name, None, err)
