"""Parser and authentication edge cases of the webhook sources, called directly (no HTTP)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from functions.errors import ConfigError, GraylaneError
from functions.gateway import GatewaySettings, alert_app, matching_policies
from functions.policies import load_policy_text
from functions.providers.sources import make_sources
from functions.providers.sources.base import (
    Credentials,
    Malformed,
    Push,
    Unauthenticated,
    check_hmac,
    split_reference,
)

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "sources"
SOURCES = make_sources()


def test_github_documented_hmac_test_vector() -> None:
    # docs.github.com "Validating webhook deliveries": secret, payload and the signature they must give
    check_hmac(
        "ghcr",
        "X-Hub-Signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        b"Hello, World!",
        "It's a Secret to Everybody",
        "sha256",
    )
    with pytest.raises(Unauthenticated, match="does not match"):
        check_hmac(
            "ghcr",
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            b"Hello, World?",
            "It's a Secret to Everybody",
            "sha256",
        )


def test_errors_are_graylane_errors() -> None:
    assert issubclass(Unauthenticated, GraylaneError) and issubclass(Malformed, GraylaneError)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("ghcr.io/Acme/Web:v1", ("ghcr.io/acme/web", "v1", "")),
        ("localhost:5000/team/web", ("localhost:5000/team/web", "", "")),
        ("localhost:5000/team/web:2.0@sha256:ab", ("localhost:5000/team/web", "2.0", "sha256:ab")),
        ("https://quay.io/a/b/", ("quay.io/a/b", "", "")),
    ],
)
def test_split_reference_keeps_the_port_colon(ref: str, expected: tuple[str, str, str]) -> None:
    assert split_reference(ref) == expected


def test_quay_legacy_payload_maps_tags_to_image_ids_which_are_not_pinned() -> None:
    pushes = SOURCES["quay"].parse({}, (SAMPLES / "quay/push-legacy.json").read_bytes())

    assert pushes == [Push(repository="quay.io/devtable/ubuntu", tag="latest")]


def test_quay_updated_tags_of_the_wrong_type_is_malformed() -> None:
    with pytest.raises(Malformed, match="updated_tags"):
        SOURCES["quay"].parse(
            {}, json.dumps({"docker_url": "quay.io/a/b", "updated_tags": "latest"}).encode()
        )


def test_harbor_binary_mode_cloudevent() -> None:
    data = json.loads((SAMPLES / "harbor/push-cloudevents.json").read_bytes())["data"]
    headers = {"ce-type": "harbor.artifact.pushed", "ce-id": "x1", "ce-time": "2023-04-03T06:16:38Z"}

    (push,) = SOURCES["harbor"].parse(headers, json.dumps(data).encode())

    assert (push.repository, push.tag, push.delivery, push.pushed_at) == (
        "localhost/harbor/alpine",
        "3.8",
        "x1",
        "2023-04-03T06:16:38Z",
    )


def test_harbor_resource_of_the_wrong_type_names_the_field() -> None:
    body = {
        "type": "PUSH_ARTIFACT",
        "event_data": {"resources": ["nope"], "repository": {"repo_full_name": "a/b"}},
    }
    with pytest.raises(Malformed, match=r"body\.event_data\.resources\[0\] must be an object"):
        SOURCES["harbor"].parse({}, json.dumps(body).encode())


def test_ecr_failed_push_and_other_detail_types_are_not_pushes() -> None:
    event = json.loads((SAMPLES / "ecr/push.json").read_bytes())
    failed = {**event, "detail": {**event["detail"], "result": "FAILURE"}}
    other = {**event, "detail-type": "ECR Image Scan"}

    assert SOURCES["ecr"].parse({}, json.dumps(failed).encode()) == []
    assert SOURCES["ecr"].parse({}, json.dumps(other).encode()) == []


def test_gar_data_that_is_not_base64_is_malformed() -> None:
    body = json.dumps({"message": {"data": "%%%"}, "subscription": "s"}).encode()
    with pytest.raises(Malformed, match="not base64"):
        SOURCES["gar"].parse({}, body)


def test_gar_digest_only_insert_is_an_untagged_push() -> None:
    digest = "sha256:" + "a" * 64
    msg = {"action": "INSERT", "digest": f"us-docker.pkg.dev/p/r/img@{digest}"}
    body = json.dumps({"message": {"data": base64.b64encode(json.dumps(msg).encode()).decode()}}).encode()

    assert SOURCES["gar"].parse({}, body) == [
        Push(repository="us-docker.pkg.dev/p/r/img", tag="", digest=digest)
    ]


def test_github_non_container_package_is_not_a_push() -> None:
    data = json.loads((SAMPLES / "github/registry-package-tagged.json").read_bytes())
    data["registry_package"]["package_type"] = data["registry_package"]["ecosystem"] = "npm"

    assert SOURCES["ghcr"].parse({"x-github-event": "registry_package"}, json.dumps(data).encode()) == []


def test_coding_non_docker_artifact_is_not_a_push() -> None:
    data = json.loads((SAMPLES / "tencent/coding-artifact-created.json").read_bytes())
    data["artifact"]["artifactType"] = "MAVEN"

    assert SOURCES["coding"].parse({}, json.dumps(data).encode()) == []


def test_generic_rejects_an_unpinnable_digest() -> None:
    with pytest.raises(Malformed, match="digest"):
        SOURCES["generic"].parse(
            {}, b'{"repository": "r.example.com/a", "tag": "v1", "digest": "sha256:abc"}'
        )


def test_alertmanager_rejects_other_versions_and_statuses() -> None:
    data = json.loads((SAMPLES / "alertmanager/grouped.json").read_bytes())
    with pytest.raises(Malformed, match="version"):
        SOURCES["alertmanager"].parse({}, json.dumps({**data, "version": "3"}).encode())
    data["alerts"][0]["status"] = "pending"
    with pytest.raises(Malformed, match=r"alerts\[0\]\.status"):
        SOURCES["alertmanager"].parse({}, json.dumps(data).encode())


def test_alertmanager_bearer_token_and_basic_auth() -> None:
    creds = Credentials(token="t", user="am", password="pw")
    source = SOURCES["alertmanager"]

    source.authenticate({"authorization": "Bearer t"}, b"", creds)
    source.authenticate({"authorization": "Basic " + base64.b64encode(b"am:pw").decode()}, b"", creds)
    with pytest.raises(Unauthenticated):
        source.authenticate({"authorization": "Basic !!!"}, b"", creds)
    with pytest.raises(Unauthenticated, match="Basic auth is not configured"):
        source.authenticate(
            {"authorization": "Basic " + base64.b64encode(b"am:pw").decode()}, b"", Credentials(token="t")
        )


def test_coding_falls_back_to_the_token_when_no_secret_is_set() -> None:
    body = b"{}"
    signed = "sha1=" + hmac.new(b"k", body, hashlib.sha1).hexdigest()
    SOURCES["coding"].authenticate({"x-coding-signature": signed}, body, Credentials(secret="k"))
    SOURCES["coding"].authenticate({"authorization": "t"}, body, Credentials(token="t"))
    with pytest.raises(Unauthenticated):
        SOURCES["coding"].authenticate({"x-coding-signature": signed}, body, Credentials(token="t"))


@pytest.mark.parametrize(
    ("labels", "app"),
    [
        ({"graylane_app": "shop/web", "namespace": "x", "app": "y"}, "shop/web"),
        ({"namespace": "shop", "app": "web"}, "shop/web"),
        ({"namespace": "shop"}, ""),
        ({"graylane_app": "Not/An App"}, ""),
    ],
)
def test_alert_app_from_labels(labels: dict[str, str], app: str) -> None:
    assert alert_app(labels) == app


def test_matching_policies_returns_every_match_in_order() -> None:
    text = "---\n".join(
        f"apiVersion: graylane.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {{name: web, namespace: {ns}}}\n"
        f"spec:\n  image: {{repository: docker.io/acme/web{rule}}}\n  router: {{provider: recording}}\n"
        "  stages:\n    - canary: {steps: [{weight: 10}]}\n"
        for ns, rule in (("staging", ""), ("prod", ", semver: '>=1.0.0'"), ("other", ", tags: '^nightly$'"))
    )
    policies = load_policy_text(text)

    assert [p.app for p in matching_policies(policies, "acme/web", "v1.2.0")] == ["staging/web", "prod/web"]
    assert [p.app for p in matching_policies(policies, "acme/web", "0.1.0")] == ["staging/web"]


def test_settings_from_env_names_sources_and_secure_defaults() -> None:
    settings = GatewaySettings.from_env(
        {
            "GRAYLANE_HOOK_TOKEN_DOCKERHUB": "d",
            "GRAYLANE_HOOK_SECRET_GITHUB": "g",
            "GRAYLANE_ALERTMANAGER_USER": "am",
            "GRAYLANE_ALERTMANAGER_PASSWORD": "pw",
            "GRAYLANE_HOOK_REPOSITORIES_GENERIC": "registry.example.com/team/, acme/web",
            "GRAYLANE_GATEWAY_MAX_BODY": "2048",
        }
    )

    assert settings.credentials["dockerhub"].token == "d"
    assert settings.credentials["ghcr"].secret == "g"
    assert settings.credentials["alertmanager"] == Credentials(user="am", password="pw")
    assert settings.credentials["generic"].repositories == ("registry.example.com/team", "docker.io/acme/web")
    assert not settings.credentials["harbor"].configured
    assert settings.max_body == 2048
    with pytest.raises(ConfigError, match="GRAYLANE_GATEWAY_MAX_BODY"):
        GatewaySettings.from_env({"GRAYLANE_GATEWAY_MAX_BODY": "lots"})


def test_unknown_source_name_lists_the_known() -> None:
    with pytest.raises(ConfigError, match="known: dockerhub"):
        make_sources(["nexus"])
