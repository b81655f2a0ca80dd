"""providers.kube without an apiserver: error classification, client building, lazy import."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from functions.errors import ConfigError, ConflictError, GraylaneError, NotFound, ProviderUnavailable, Reject
from functions.providers.kube import api_error, client_from, json_object


def api_exception(status: int, message: str = "boom") -> Exception:
    from kubernetes.client.exceptions import ApiException

    body = json.dumps({"kind": "Status", "code": status, "message": message})
    return ApiException(status=status, reason="Reason", body=body)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (409, ConflictError),
        (404, NotFound),
        (429, ProviderUnavailable),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (0, ProviderUnavailable),  # the client's own code for a TLS failure
        (401, ConfigError),
        (403, ConfigError),
        (400, Reject),
        (422, Reject),
    ],
)
def test_api_error_maps_status(status: int, kind: type[GraylaneError]) -> None:
    cause = api_exception(status, "the server's words")

    err = api_error(cause, "ConfigMap", "team-a/graylane-web", "replace")

    assert type(err) is kind
    assert str(err).startswith(f"ConfigMap team-a/graylane-web replace: {status} Reason: the server's words")
    assert err.__cause__ is cause


@pytest.mark.parametrize(
    "cause", [TimeoutError("timed out"), ConnectionResetError("reset"), OSError("no route")]
)
def test_api_error_maps_transport_failures(cause: Exception) -> None:
    err = api_error(cause, "Deployment", "team-a/web", "patch")

    assert type(err) is ProviderUnavailable
    assert f"Deployment team-a/web patch: {type(cause).__name__}" in str(err)


def test_unreachable_apiserver_is_unavailable_within_the_timeout() -> None:
    from kubernetes import client

    with socket.socket() as s:  # a port that certainly refuses: bound, never listening
        s.bind(("127.0.0.1", 0))
        cfg = client.Configuration(host=f"http://127.0.0.1:{s.getsockname()[1]}")
        api_client = client_from(cfg, timeout=1.0)
        with pytest.raises(Exception) as caught:
            client.CoreV1Api(api_client).read_namespaced_config_map("graylane-web", "team-a")
    api_client.close()

    err = api_error(caught.value, "ConfigMap", "team-a/graylane-web", "get")
    assert type(err) is ProviderUnavailable and "MaxRetryError" in str(err)


def test_unexpected_errors_stay_plain_graylane_errors() -> None:
    err = api_error(ValueError("odd"), "ConfigMap", "team-a/x", "get")

    assert type(err) is GraylaneError and str(err) == "ConfigMap team-a/x get: ValueError: odd"


def test_client_from_copies_the_configuration_and_disables_read_retries() -> None:
    from kubernetes import client

    cfg = client.Configuration(host="https://127.0.0.1:1")
    api_client = client_from(cfg, timeout=2.5)

    assert api_client.configuration is not cfg and cfg.retries is None
    assert api_client.configuration.retries.read == 0
    assert api_client.default_timeout == 2.5
    api_client.close()


def test_client_from_a_kubeconfig_context(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [
                    {"name": "one", "context": {"cluster": "c", "user": "u"}},
                    {"name": "two", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "one",
            }
        )
    )

    api_client = client_from(kubeconfig=str(kubeconfig), context="two")

    assert api_client.configuration.host == "https://127.0.0.1:6443"
    api_client.close()
    with pytest.raises(ConfigError, match=f"kubeconfig {kubeconfig} context three"):
        client_from(kubeconfig=str(kubeconfig), context="three")


def test_in_cluster_without_a_service_account_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    with pytest.raises(ConfigError, match="in-cluster service account"):
        client_from(in_cluster=True)


def test_importing_the_stores_does_not_import_kubernetes() -> None:
    code = (
        "import sys, functions.providers.stores, functions.providers.kube;"
        "print(any(m == 'kubernetes' or m.startswith('kubernetes.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


def test_a_custom_object_answer_is_a_copy_of_a_json_object_or_unavailable() -> None:
    answer = {"metadata": {"name": "web"}}
    copied = json_object(answer)
    assert copied == answer and copied is not answer  # the caller may edit it
    with pytest.raises(ProviderUnavailable, match="answered str, not a JSON object"):
        json_object("<html>a proxy's error page</html>")
