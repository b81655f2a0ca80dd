"""JFrog Artifactory Docker push webhooks: the documented payload through the gateway, both ways of using the
secret token (verbatim in X-JFrog-Event-Auth, or as the HMAC-SHA256 of the body), and what is ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions import catalog
from functions.bus import MemoryBus
from functions.gateway import GatewaySettings, build_app
from functions.policies import DirectoryPolicies
from functions.providers.sources import SOURCES, make_sources
from functions.providers.sources.base import Credentials, Unauthenticated
from functions.providers.sources.jfrog import signature
from tests.unit.chatops_helpers import TestClient

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "sources" / "jfrog"
TOKEN = "jfrog-secret-token"
PUSHED = (SAMPLES / "docker-pushed.json").read_bytes()
REPO = "acme.jfrog.io/docker-remote-cache/library/ubuntu"
DIGEST = "sha256:35c4a2c15539c6c1e4e5fa4e554dac323ad0107d8eb5c582d6ff386b383b7dce"
POLICY = f"""\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: ubuntu, namespace: base}}
spec:
  image: {{repository: {REPO}}}
  router: {{provider: recording}}
  stages:
    - canary: {{steps: [{{weight: 10}}]}}
"""


def gateway(tmp_path: Path, **creds: str) -> tuple[TestClient, MemoryBus]:
    (tmp_path / "ubuntu.yaml").write_text(POLICY)
    bus = MemoryBus()
    settings = GatewaySettings(credentials={"jfrog": Credentials(**creds)})
    return TestClient(build_app(settings, make_sources(), bus, DirectoryPolicies(str(tmp_path)))), bus


def post(client: TestClient, body: bytes, auth: str | None) -> Any:
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["X-JFrog-Event-Auth"] = auth
    return client.post("/hooks/jfrog", content=body, headers=headers)


def test_jfrog_documented_push_with_the_secret_token_becomes_one_pinned_event(tmp_path: Path) -> None:
    client, bus = gateway(tmp_path, token=TOKEN)
    response = post(client, PUSHED, TOKEN)
    assert response.status_code == 202, response.text
    [event] = bus.of_type("dev.graylane.image.pushed")
    catalog.validate(event)
    assert event["subject"] == "base/ubuntu" and event["source"] == "/graylane/gateway/jfrog"
    assert event.data == {
        "app": "base/ubuntu",
        "repository": REPO,
        "tag": "latest",
        "digest": DIGEST,
        "image": f"{REPO}@{DIGEST}",
        "source": "jfrog",
        "pusher": "release-bot@acme.example",
    }
    assert post(client, PUSHED, TOKEN).json()["ids"] == response.json()["ids"]  # a redelivery dedupes


def test_jfrog_signed_payload(tmp_path: Path) -> None:
    client, bus = gateway(tmp_path, secret=TOKEN)
    # the well-known HMAC-SHA256 example (key "key"), in the hex form Artifactory sends
    assert (
        signature("key", b"The quick brown fox jumps over the lazy dog")
        == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )
    assert post(client, PUSHED, signature(TOKEN, PUSHED)).status_code == 202
    assert post(client, PUSHED, signature(TOKEN, PUSHED).upper()).status_code == 202  # hex in either case
    tampered = PUSHED.replace(b'"latest"', b'"evil"')
    bad = post(client, tampered, signature(TOKEN, PUSHED))
    assert bad.status_code == 401 and "HMAC-SHA256 of the body" in bad.json()["error"]
    # with signing configured the verbatim token is not enough: it would have travelled in clear
    assert post(client, PUSHED, TOKEN).status_code == 401
    assert post(client, PUSHED, None).status_code == 401
    assert len(bus.of_type("dev.graylane.image.pushed")) == 2


def test_jfrog_both_configured_accepts_either(tmp_path: Path) -> None:
    client, bus = gateway(tmp_path, token=TOKEN, secret="signing-key")
    assert post(client, PUSHED, signature("signing-key", PUSHED)).status_code == 202
    assert post(client, PUSHED, TOKEN).status_code == 202
    wrong = post(client, PUSHED, "guess")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]


def test_jfrog_wrong_or_missing_token_changes_nothing(tmp_path: Path) -> None:
    client, bus = gateway(tmp_path, token=TOKEN)
    assert post(client, PUSHED, "nope").status_code == 401
    assert post(client, PUSHED, None).status_code == 401
    assert client.post(f"/hooks/jfrog/{TOKEN}", content=PUSHED).status_code == 202  # the URL path works too
    (tmp_path / "other").mkdir()
    unconfigured, _ = gateway(tmp_path / "other")
    refused = post(unconfigured, PUSHED, TOKEN)
    assert refused.status_code == 401 and "no credential configured" in refused.json()["error"]
    assert len(bus.of_type("dev.graylane.image.pushed")) == 1


def test_jfrog_deleted_and_other_domains_are_acknowledged_and_ignored(tmp_path: Path) -> None:
    client, bus = gateway(tmp_path, token=TOKEN)
    deleted = (SAMPLES / "docker-deleted.json").read_bytes()
    artifact = json.dumps({**json.loads(PUSHED), "domain": "artifact", "event_type": "deployed"}).encode()
    for body in (deleted, artifact):
        response = post(client, body, TOKEN)
        assert response.status_code == 202 and response.json() == {"ids": [], "ignored": []}
    assert bus.events == ()


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"jpd_origin": None}, 422, "body.jpd_origin is required"),
        ({"jpd_origin": "::"}, 422, "body.jpd_origin"),
        ({"data": "x"}, 422, "body.data must be an object"),
        ({"data": {"repo_key": "docker-local", "tag": "v1"}}, 422, "body.data.image_name is required"),
        (
            {"data": {"repo_key": "docker-local", "image_name": "web", "tag": 7}},
            422,
            "body.data.tag must be a string",
        ),
        ({"domain": None}, 422, "body.domain is required"),
    ],
)
def test_jfrog_bad_fields_are_4xx_naming_the_field(
    tmp_path: Path, change: dict[str, Any], status: int, field: str
) -> None:
    client, bus = gateway(tmp_path, token=TOKEN)
    body = {k: v for k, v in {**json.loads(PUSHED), **change}.items() if v is not None}
    response = post(client, json.dumps(body).encode(), TOKEN)
    assert response.status_code == status and field in response.json()["error"], response.text
    assert bus.events == ()
    assert post(client, b"{not json", TOKEN).status_code == 400


def test_jfrog_is_in_the_registry_catalog() -> None:
    assert "jfrog" in SOURCES and "jfrog" in catalog.REGISTRY_SOURCES
    schema = json.loads((catalog.catalog_dir() / "dev.graylane.image.pushed" / "schema.json").read_text())
    assert "jfrog" in schema["properties"]["source"]["enum"]
    with pytest.raises(Unauthenticated, match="no credential"):
        SOURCES["jfrog"]().authenticate({}, PUSHED, Credentials())


def test_jfrog_answers_on_the_artifactory_route_too(tmp_path: Path) -> None:
    client, bus = gateway(tmp_path, token=TOKEN)
    response = client.post("/hooks/artifactory", content=PUSHED, headers={"X-JFrog-Event-Auth": TOKEN})
    assert (
        response.status_code == 202 and bus.of_type("dev.graylane.image.pushed")[0].data["source"] == "jfrog"
    )
