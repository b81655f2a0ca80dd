"""The one place that builds Kubernetes API clients and turns their failures into graylane errors.

`import kubernetes` costs about a quarter of a second, so nothing here imports it at module level: a
function that never talks to the apiserver (SQLite store, local demo) never pays for it. Core objects
(ConfigMaps, Events) go through `request`, the client's own transport without `CoreV1Api`: that class
imports every core model and costs another half second of every cold start on Knative.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from functions.errors import ConfigError, ConflictError, GraylaneError, NotFound, ProviderUnavailable, Reject

if TYPE_CHECKING:
    from collections.abc import Callable

    import kubernetes.client
    from kubernetes.client import (
        ApiClient as ApiClient,  # for type hints elsewhere, without importing kubernetes
    )
    from kubernetes.client.rest import RESTResponse

__all__ = ["api_error", "client_from", "json_object", "kubeconfig_contexts", "list_configmaps", "request"]

_clients: dict[str, Callable[[kubernetes.client.Configuration, float], kubernetes.client.ApiClient]] = {}


def client_from(
    configuration: kubernetes.client.Configuration | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    timeout: float = 5.0,
) -> kubernetes.client.ApiClient:
    """An ApiClient for `configuration`, the in-cluster ServiceAccount, or a kubeconfig.

    With no arguments: in-cluster when KUBERNETES_SERVICE_HOST is set (a pod), else the kubeconfig
    (KUBECONFIG or ~/.kube/config). Every request without its own `_request_timeout` gets `timeout`,
    so no call can hang a function; a watch must pass a `_request_timeout` longer than its
    `timeout_seconds`. urllib3 never silently re-sends a request after a read timeout (it would for a
    GET), so one call costs at most `timeout` and a write's outcome is never hidden by a retry.
    """
    from kubernetes import client, config

    if configuration is not None:
        cfg = copy.deepcopy(configuration)  # never mutate the caller's (often shared) configuration
    else:
        cfg = client.Configuration()
        auto_in_cluster = kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ
        try:
            if in_cluster or auto_in_cluster:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        except (config.ConfigException, OSError) as err:
            where = (
                "in-cluster service account"
                if in_cluster or auto_in_cluster
                else (
                    f"kubeconfig {kubeconfig or os.environ.get('KUBECONFIG', '~/.kube/config')}"
                    + (f" context {context}" if context else "")
                )
            )
            raise ConfigError(f"Kubernetes client: cannot load the {where}: {err}") from err
    if cfg.retries is None:
        cfg.retries = _no_read_retries()
    return _client_class()(cfg, timeout)


def kubeconfig_contexts(kubeconfig: str | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The contexts of `kubeconfig` (default: KUBECONFIG or ~/.kube/config) and the current one; no API call.
    An unreadable or malformed file raises ConfigError naming the reason."""
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, ValueError) as err:
        raise ConfigError(str(err)) from err
    return list(contexts), active


def _no_read_retries() -> Any:
    from urllib3.util.retry import Retry

    # Reconnecting is safe (nothing was sent); re-sending after a read error is not for writes and
    # hides timeouts for reads.
    return Retry(total=1, connect=1, read=0, status=0, redirect=0, other=0)


def _client_class() -> Callable[[kubernetes.client.Configuration, float], kubernetes.client.ApiClient]:
    """ApiClient subclass applying a default request timeout (built once, on first use)."""
    if "timed" not in _clients:
        from kubernetes.client import ApiClient

        class TimedApiClient(ApiClient):
            def __init__(self, configuration: kubernetes.client.Configuration, timeout: float) -> None:
                super().__init__(configuration)
                self.default_timeout = timeout

            def call_api(
                self,
                method: str,
                url: str,
                header_params: Any = None,
                body: Any = None,
                post_params: Any = None,
                _request_timeout: Any = None,
            ) -> RESTResponse:
                timeout = self.default_timeout if _request_timeout is None else _request_timeout
                return super().call_api(
                    method, url, header_params, body, post_params, _request_timeout=timeout
                )

        _clients["timed"] = TimedApiClient
    return _clients["timed"]


def request(
    api_client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    path_params: dict[str, str],
    *,
    query: list[tuple[str, Any]] | None = None,
    body: dict[str, Any] | list[Any] | None = None,
    timeout: float | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One call through the client's transport (its auth, TLS, retries and timeouts) returning the JSON body.

    `path` is a template such as /api/v1/namespaces/{namespace}/configmaps/{name}; the client quotes
    `path_params` into it. A non-2xx answer raises the client's ApiException (see api_error).
    """
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type  # application/json-patch+json for a JSON patch
    serialized = api_client.param_serialize(
        method=method,
        resource_path=path,
        path_params=path_params,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*serialized, _request_timeout=timeout)
    data = response.read()  # the body is read here: a timeout can still strike
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    result: dict[str, Any] = json.loads(data)
    return result


def json_object(answer: object) -> dict[str, Any]:
    """A copy of what a CustomObjectsApi call answered (the client types it `object`): the JSON object it is."""
    if not isinstance(answer, dict):
        raise ProviderUnavailable(f"the apiserver answered {type(answer).__name__}, not a JSON object")
    return dict(answer)


def list_configmaps(
    api_client: kubernetes.client.ApiClient,
    namespace: str | None,
    selector: str,
    timeout: float | None = None,
    page: int = 500,
) -> list[dict[str, Any]]:
    """Every ConfigMap matching `selector` in `namespace` (None: all namespaces), paged; raises GraylaneError."""
    path, params = (
        ("/api/v1/configmaps", {})
        if namespace is None
        else ("/api/v1/namespaces/{namespace}/configmaps", {"namespace": namespace})
    )
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        query: list[tuple[str, Any]] = [("labelSelector", selector), ("limit", page)]
        if token:
            query.append(("continue", token))
        try:
            body = request(api_client, "GET", path, params, query=query, timeout=timeout)
        except Exception as err:  # classified by api_error
            raise api_error(err, "ConfigMap", f"{namespace or '*'}/*", "list") from err
        items.extend(body.get("items") or [])
        token = (body.get("metadata") or {}).get("continue") or ""
        if not token:
            return items


def api_error(err: BaseException, kind: str, name: str, verb: str) -> GraylaneError:
    """The graylane error for a failed Kubernetes call on `kind` `name` ("namespace/name").

    409 → ConflictError, 404 → NotFound, 429/5xx and transport failures → ProviderUnavailable,
    401/403 → ConfigError (credentials or RBAC), any other 4xx → Reject (the request itself is
    wrong; sending it again cannot help). The caller raises the result `from err`.
    """
    status, detail = _status_and_detail(err)
    message = f"{kind} {name} {verb}: {detail}"
    result: GraylaneError
    if status == 409:
        result = ConflictError(message)
    elif status == 404:
        result = NotFound(message)
    elif status is None or status == 0 or status == 429 or status >= 500:
        result = ProviderUnavailable(message)
    elif status in (401, 403):
        result = ConfigError(message + " (check the credentials and RBAC rules)")
    elif 400 <= status < 500:
        result = Reject(message)
    else:
        result = GraylaneError(message)
    result.__cause__ = err
    return result


def _status_and_detail(err: BaseException) -> tuple[int | None, str]:
    """(HTTP status or None for a transport failure, the server's message or the error text)."""
    # An ApiException can only exist if its module was imported: checking sys.modules keeps this
    # helper from importing kubernetes just to classify an unrelated error.
    exceptions = sys.modules.get("kubernetes.client.exceptions")
    if exceptions is not None and isinstance(err, exceptions.ApiException):
        return err.status, _server_message(err)
    urllib3_exceptions = sys.modules.get("urllib3.exceptions")
    if urllib3_exceptions is not None and isinstance(err, urllib3_exceptions.HTTPError):
        return None, f"{type(err).__name__}: {err}"
    if isinstance(err, ConnectionError | TimeoutError | OSError):
        return None, f"{type(err).__name__}: {err}"
    return -1, f"{type(err).__name__}: {err}"


def _server_message(err: Any) -> str:
    """The `message` of the apiserver's Status body, else the HTTP reason."""
    reason = f"{err.status} {err.reason or ''}".strip()
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        return reason
    if isinstance(body, dict) and body.get("message"):
        return f"{reason}: {body['message']}"
    return reason
