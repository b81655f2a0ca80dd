"""State in one ConfigMap per app (`graylane-<name>` in the app's namespace), CAS on resourceVersion.

The document lives under the data key `state.json`; the version is the ConfigMap's resourceVersion.
A create answers 409 when someone else created it first; a PUT carrying the resourceVersion we
loaded answers 409 when someone else wrote since. Both become ConflictError: reload and decide again.

A transport failure or timeout becomes ProviderUnavailable and the write MAY have happened (the
apiserver can commit a PUT whose response never arrives). The caller must reload and compare
before trusting either outcome; the runner does so by looking for its event id in the reloaded state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.errors import ConfigError, ConflictError, NotFound, Reject
from functions.providers.kube import api_error, list_configmaps, request

if TYPE_CHECKING:
    import kubernetes.client

__all__ = ["ConfigMapStore"]

# ConfigMaps are capped at 1 MiB; every store refuses what a ConfigMap could not hold, so a state
# that works on SQLite in the demo also works in a cluster.
MAX_DOCUMENT_BYTES = 900 * 1024
DATA_KEY = "state.json"
NAME_PREFIX = "graylane-"
ROLE_LABEL = "graylane.dev/role"
APP_LABEL = "graylane.dev/app"
SELECTOR = f"app.kubernetes.io/managed-by=graylane,{ROLE_LABEL}=state"
_MANY = "/api/v1/namespaces/{namespace}/configmaps"
_ONE = "/api/v1/namespaces/{namespace}/configmaps/{name}"


def split_app(app: str) -> tuple[str, str]:
    """("namespace", "name") of an app id; ConfigError unless it is exactly "namespace/name"."""
    namespace, sep, name = app.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ConfigError(f"app id {app!r} must be 'namespace/name'")
    return namespace, name


def check_size(app: str, document: str, kind: str) -> None:
    """Reject a document larger than any store may hold (the ConfigMap limit, with headroom)."""
    size = len(document.encode("utf-8"))
    if size > MAX_DOCUMENT_BYTES:
        raise Reject(
            f"{kind} {app} save: state document is {size} bytes, above the {MAX_DOCUMENT_BYTES}-byte "
            "limit (ConfigMaps hold at most 1 MiB); history must be bounded"
        )


class ConfigMapStore:
    """StateStore backed by ConfigMaps; `namespaces` limits list_apps (None: all namespaces)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespaces: list[str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._api = api_client
        self._namespaces = list(namespaces) if namespaces is not None else None
        self._timeout = timeout

    def load(self, app: str) -> tuple[str | None, str | None]:
        """(document, resourceVersion); (None, None) without a ConfigMap.

        A ConfigMap without the `state.json` key (emptied by hand) loads as (None, resourceVersion):
        the next save replaces it instead of failing forever on "already exists".
        """
        namespace, name = split_app(app)
        try:
            body = self._call("get", app, "GET", _ONE, {"namespace": namespace, "name": _cm(name)})
        except NotFound:
            return None, None
        return (body.get("data") or {}).get(DATA_KEY), body["metadata"]["resourceVersion"]

    def save(self, app: str, document: str, expected_version: str | None) -> str:
        """Create (expected_version None) or replace at `expected_version`; the new resourceVersion."""
        namespace, name = split_app(app)
        check_size(app, document, "ConfigMap")
        body = _body(name, document, expected_version)
        if expected_version is None:
            created = self._call("create", app, "POST", _MANY, {"namespace": namespace}, body=body)
            return str(created["metadata"]["resourceVersion"])
        try:
            replaced = self._call(
                "replace", app, "PUT", _ONE, {"namespace": namespace, "name": _cm(name)}, body=body
            )
        except NotFound as err:
            # Deleted since it was loaded: the expected version is gone, exactly a lost CAS.
            raise ConflictError(
                f"ConfigMap {namespace}/{_cm(name)} replace: deleted since it was loaded"
            ) from err
        return str(replaced["metadata"]["resourceVersion"])

    def list_apps(self) -> list[str]:
        """Every app with a state ConfigMap in the configured namespaces, sorted."""
        apps: set[str] = set()
        for namespace in self._namespaces if self._namespaces is not None else [None]:
            for item in list_configmaps(self._api, namespace, SELECTOR, self._timeout):
                meta = item["metadata"]
                name = (meta.get("labels") or {}).get(APP_LABEL) or meta["name"].removeprefix(NAME_PREFIX)
                apps.add(f"{meta['namespace']}/{name}")
        return sorted(apps)

    def _call(
        self, verb: str, app: str, method: str, path: str, path_params: dict[str, str], **kwargs: Any
    ) -> dict[str, Any]:
        """Run one API call, returning the raw JSON body (the client's models are slow and unneeded)."""
        where = app if "*" in app else _where(app)
        try:
            return request(self._api, method, path, path_params, timeout=self._timeout, **kwargs)
        except Exception as err:  # classified by api_error; an unknown one stays a GraylaneError
            raise api_error(err, "ConfigMap", where, verb) from err


def _where(app: str) -> str:
    namespace, name = split_app(app)
    return f"{namespace}/{_cm(name)}"


def _cm(name: str) -> str:
    return NAME_PREFIX + name


def _body(name: str, document: str, resource_version: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": _cm(name),
        "labels": {"app.kubernetes.io/managed-by": "graylane", APP_LABEL: name, ROLE_LABEL: "state"},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {DATA_KEY: document}}
