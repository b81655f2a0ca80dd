"""The webhook gateway through Starlette's TestClient, fed the vendors' documented payloads from events/sources/."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.exceptions import StarletteDeprecationWarning

from functions import catalog
from functions.bus import MemoryBus
from functions.errors import ProviderUnavailable
from functions.gateway import GatewaySettings, build_app
from functions.policies import DirectoryPolicies
from functions.providers.sources import SOURCES, make_sources
from functions.providers.sources.base import Credentials

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for TestClient and warns when only httpx (a declared test
    # dependency) is installed; the client works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "events" / "sources"
TOKEN = "s3cret-token"
SECRET = "hmac-secret"


def sample(path: str) -> bytes:
    return (SAMPLES / path).read_bytes()


def policy(namespace: str, name: str, repository: str, tags: str = "", semver: str = "") -> str:
    rule = "".join(f", {k}: '{v}'" for k, v in (("tags", tags), ("semver", semver)) if v)
    return f"""\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  image: {{repository: {repository}{rule}}}
  router: {{provider: recording}}
  stages:
    - canary: {{steps: [{{weight: 10}}]}}
"""


# one policy per vendor sample, plus the same image in two namespaces
POLICIES = {
    "dockerhub": policy("hub", "testhook", "svendowideit/testhook"),
    "harbor": policy("shop", "alpine", "localhost/harbor/alpine", tags=r"^3\.\d+$"),
    "ghcr": policy("acme", "hello", "ghcr.io/codertocat/hello-world", tags=r"^v\d+\.\d+\.\d+$"),
    "gitlab": policy("group", "web", "registry.gitlab.example.com/group/project/web"),
    "quay": policy("qa", "test", "quay.io/dgangaia/test"),
    "tcr": policy("tc", "nginx", "wcctest.tencentcloudcr.com/nginx/nginx"),
    "coding": policy("shop", "flask", "acme-docker.pkg.coding.net/shop/docker/flask", semver="^1.0.0"),
    "acr": policy("ali", "repotest", "registry.cn-hangzhou.aliyuncs.com/namespace/repotest"),
    "ecr": policy("aws", "repo", "123456789012.dkr.ecr.us-west-2.amazonaws.com/my-repository-name"),
    "gar": policy("gcp", "hello", "us-east1-docker.pkg.dev/my-project/my-repo/hello-world"),
    "azure": policy("az", "hello", "myregistry.azurecr.io/hello-world"),
    "generic-staging": policy("staging", "flask", "registry.example.com/team/flask"),
    "generic-prod": policy("prod", "flask", "registry.example.com/team/flask", semver=">=1.0.0"),
}


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    for name, text in POLICIES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def credentials() -> dict[str, Credentials]:
    creds = {name: Credentials(token=TOKEN) for name in SOURCES}
    creds["ghcr"] = Credentials(secret=SECRET)
    creds["coding"] = Credentials(secret=SECRET)
    creds["alertmanager"] = Credentials(token=TOKEN, user="am", password="pw")
    return creds


class Gateway:
    def __init__(
        self,
        policy_dir: Path,
        creds: dict[str, Credentials] | None = None,
        max_body: int = 1024 * 1024,
        bus: Any = None,
    ) -> None:
        self.bus = bus if bus is not None else MemoryBus()
        settings = GatewaySettings(
            credentials=creds if creds is not None else credentials(), max_body=max_body
        )
        self.app = build_app(settings, make_sources(), self.bus, DirectoryPolicies(policy_dir))
        self.client = TestClient(self.app)

    def post(
        self,
        source: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        token: str | None = TOKEN,
        path_token: str = "",
    ) -> Any:
        hdrs = {"content-type": "application/json", **(headers or {})}
        if token is not None and not path_token:
            hdrs.setdefault("authorization", f"Bearer {token}")
        url = f"/hooks/{source}/{path_token}" if path_token else f"/hooks/{source}"
        return self.client.post(url, content=body, headers=hdrs)


@pytest.fixture
def gw(policy_dir: Path) -> Iterator[Gateway]:
    yield Gateway(policy_dir)


def github_headers(body: bytes, event: str = "registry_package", secret: str = SECRET) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": signature, "x-github-event": event, "x-github-delivery": "72d3162e"}


def coding_headers(body: bytes) -> dict[str, str]:
    signature = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    return {"x-coding-signature": signature, "x-coding-event": "ARTIFACTS_VERSION_CREATED"}


def pushed(gw: Gateway) -> list[dict[str, Any]]:
    """The published image.pushed events as structured dicts, each checked against the catalog."""
    out = []
    for event in gw.bus.of_type("dev.graylane.image.pushed"):
        catalog.validate(event)
        out.append({**event.get_attributes(), "data": event.data})
    return out


# ---------------------------------------------------------------------------------------------- one per source

# source, sample, expected app, repository, tag, digest ('' when the vendor sends none)
CASES = [
    ("dockerhub", "dockerhub/push.json", "hub/testhook", "docker.io/svendowideit/testhook", "latest", ""),
    (
        "harbor",
        "harbor/push-tagged.json",
        "shop/alpine",
        "localhost/harbor/alpine",
        "3.8",
        "sha256:2bb501e6173d9d006e56de5bce2720eb06396803300fe1687b58a7ff32bf4c14",
    ),
    (
        "harbor",
        "harbor/push-cloudevents.json",
        "shop/alpine",
        "localhost/harbor/alpine",
        "3.8",
        "sha256:2bb501e6173d9d006e56de5bce2720eb06396803300fe1687b58a7ff32bf4c14",
    ),
    (
        "gitlab",
        "gitlab/push-tagged.json",
        "group/web",
        "registry.gitlab.example.com/group/project/web",
        "v2.4.0",
        "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
    ),
    ("quay", "quay/push.json", "qa/test", "quay.io/dgangaia/test", "latest", ""),
    (
        "tcr",
        "tencent/tcr-push.json",
        "tc/nginx",
        "wcctest.tencentcloudcr.com/nginx/nginx",
        "v1",
        "sha256:7ac7819e1523911399b798309025935a9968b277d86d50e5255465d6592c0266",
    ),
    (
        "acr",
        "aliyun/push.json",
        "ali/repotest",
        "registry.cn-hangzhou.aliyuncs.com/namespace/repotest",
        "latest",
        "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917",
    ),
    # AWS's documented digest has 60 hex digits: not pinnable, so the image falls back to the tag
    (
        "ecr",
        "ecr/push.json",
        "aws/repo",
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/my-repository-name",
        "latest",
        "",
    ),
    (
        "gar",
        "gar/push.json",
        "gcp/hello",
        "us-east1-docker.pkg.dev/my-project/my-repo/hello-world",
        "1.1",
        "sha256:" + hashlib.sha256(b"us-east1-docker.pkg.dev/my-project/my-repo/hello-world:1.1").hexdigest(),
    ),
    (
        "azure",
        "azure/push.json",
        "az/hello",
        "myregistry.azurecr.io/hello-world",
        "v1",
        "sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d",
    ),
]


@pytest.mark.parametrize(
    ("source", "path", "app", "repository", "tag", "digest"), CASES, ids=[c[1] for c in CASES]
)
def test_vendor_sample_becomes_one_catalog_event(
    gw: Gateway, source: str, path: str, app: str, repository: str, tag: str, digest: str
) -> None:
    response = gw.post(source, sample(path))

    assert response.status_code == 202, response.text
    events = pushed(gw)
    assert [e["subject"] for e in events] == [app]
    data = events[0]["data"]
    assert (data["repository"], data["tag"], data.get("digest", "")) == (repository, tag, digest)
    assert data["image"] == (f"{repository}@{digest}" if digest else f"{repository}:{tag}")
    assert data["source"] == source and events[0]["source"] == f"/graylane/gateway/{source}"
    assert response.json() == {"ids": [events[0]["id"]], "ignored": []}


def test_github_registry_package_signed_with_hmac(gw: Gateway) -> None:
    body = sample("github/registry-package-tagged.json")
    response = gw.post("ghcr", body, github_headers(body), token=None)

    assert response.status_code == 202, response.text
    (event,) = pushed(gw)
    assert event["subject"] == "acme/hello"
    assert event["data"]["repository"] == "ghcr.io/codertocat/hello-world"
    assert event["data"]["tag"] == "v1.3.0"
    assert event["data"]["image"].startswith("ghcr.io/codertocat/hello-world@sha256:")


def test_github_package_event_through_the_github_alias(gw: Gateway) -> None:
    body = sample("github/package-tagged.json")
    response = gw.post("github", body, github_headers(body, event="package"), token=None)

    assert response.status_code == 202, response.text
    assert [e["data"]["tag"] for e in pushed(gw)] == ["v1.3.0"]


def test_github_documented_untagged_push_is_acknowledged_and_ignored(gw: Gateway) -> None:
    body = sample("github/registry-package-published.json")
    response = gw.post("ghcr", body, github_headers(body), token=None)

    assert response.status_code == 202
    assert response.json()["ids"] == []
    assert response.json()["ignored"][0]["reason"] == "pushed without a tag"
    assert gw.bus.events == ()


def test_github_wrong_signature_is_401_and_publishes_nothing(gw: Gateway) -> None:
    body = sample("github/registry-package-tagged.json")
    response = gw.post("ghcr", body, github_headers(body, secret="not-the-secret"), token=None)

    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]
    assert gw.bus.events == ()


def test_coding_docker_artifact_signed_with_hmac_sha1(gw: Gateway) -> None:
    body = sample("tencent/coding-artifact-created.json")
    response = gw.post("coding", body, coding_headers(body), token=None)

    assert response.status_code == 202, response.text
    (event,) = pushed(gw)
    assert event["subject"] == "shop/flask"
    assert event["data"]["image"] == "acme-docker.pkg.coding.net/shop/docker/flask:v1.2.0"


def test_generic_push_matches_every_policy_of_the_image(gw: Gateway) -> None:
    response = gw.post("generic", sample("generic/push.json"))

    assert response.status_code == 202
    events = pushed(gw)
    assert sorted(e["subject"] for e in events) == ["prod/flask", "staging/flask"]
    assert len(set(response.json()["ids"])) == 2
    assert {e["data"]["image"] for e in events} == {
        "registry.example.com/team/flask@sha256:3f1c9a0e5b7d2c4f6a8e0b1d3c5f7a9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a"
    }


def test_token_in_the_url_path_for_senders_without_headers(gw: Gateway) -> None:
    response = gw.post("dockerhub", sample("dockerhub/push.json"), token=None, path_token=TOKEN)

    assert response.status_code == 202
    assert len(pushed(gw)) == 1


# ---------------------------------------------------------------------------------------------- not pushes


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("harbor", "harbor/pull-cloudevents.json"),
        ("gar", "gar/delete.json"),
    ],
)
def test_deliveries_without_a_push_are_acknowledged(gw: Gateway, source: str, path: str) -> None:
    response = gw.post(source, sample(path))

    assert response.status_code == 202
    assert response.json() == {"ids": [], "ignored": []}
    assert gw.bus.events == ()


def test_harbor_documented_digest_push_is_ignored_for_want_of_a_tag(gw: Gateway) -> None:
    response = gw.post("harbor", sample("harbor/push-default.json"))

    assert response.status_code == 202
    assert response.json()["ignored"] == [
        {
            "repository": "localhost/harbor/alpine",
            "tag": "",
            "reason": "pushed without a tag",
            "digest": "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4",
        }
    ]
    assert gw.bus.events == ()


def test_gitlab_documented_envelope_skips_blobs_and_untagged_manifests(gw: Gateway) -> None:
    response = gw.post("gitlab", sample("gitlab/envelope-documented.json"))

    assert response.status_code == 202
    assert [i["reason"] for i in response.json()["ignored"]] == ["pushed without a tag"]  # the manifest only
    assert gw.bus.events == ()


def test_unmatched_push_is_acknowledged_and_ignored(gw: Gateway) -> None:
    body = json.dumps({"repository": "registry.example.com/other/thing", "tag": "v9.9.9"}).encode()
    response = gw.post("generic", body)

    assert response.status_code == 202
    assert response.json() == {
        "ids": [],
        "ignored": [
            {
                "repository": "registry.example.com/other/thing",
                "tag": "v9.9.9",
                "reason": "no policy matches this repository and tag",
            }
        ],
    }
    assert gw.bus.events == ()


def test_tag_outside_the_semver_range_matches_only_the_other_policy(gw: Gateway) -> None:
    body = json.dumps({"repository": "registry.example.com/team/flask", "tag": "0.9.0"}).encode()
    response = gw.post("generic", body)

    assert response.status_code == 202
    assert [e["subject"] for e in pushed(gw)] == ["staging/flask"]


# ---------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("source", sorted(set(SOURCES) - {"ghcr", "coding"}))
def test_missing_or_wrong_token_is_401(gw: Gateway, source: str) -> None:
    body = b"{}"
    missing = gw.post(source, body, token=None)
    wrong = gw.post(source, body, token="guess")

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert source in missing.json()["error"] and "not valid" in wrong.json()["error"]
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert gw.bus.events == ()


def test_a_source_without_credentials_refuses_everything(policy_dir: Path) -> None:
    gw = Gateway(policy_dir, creds={})

    response = gw.post("generic", sample("generic/push.json"))

    assert response.status_code == 401
    assert "no credential configured" in response.json()["error"]
    assert gw.bus.events == ()


def test_repository_outside_the_source_allowlist_is_ignored_not_refused(policy_dir: Path) -> None:
    creds = credentials()
    creds["generic"] = Credentials(token=TOKEN, repositories=("registry.example.com/other/",))
    gw = Gateway(policy_dir, creds=creds)

    response = gw.post("generic", sample("generic/push.json"))

    assert response.status_code == 202  # a refusal would be retried forever by Distribution-style senders
    assert "registry.example.com/team/flask" in response.json()["ignored"][0]["reason"]
    assert gw.bus.events == ()


def test_alertmanager_basic_auth(gw: Gateway) -> None:
    good = "Basic " + base64.b64encode(b"am:pw").decode()
    bad = "Basic " + base64.b64encode(b"am:nope").decode()
    body = sample("alertmanager/grouped.json")

    assert gw.post("alertmanager", body, {"authorization": bad}).status_code == 401
    assert gw.bus.events == ()
    assert gw.post("alertmanager", body, {"authorization": good}).status_code == 202


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_json_is_400_naming_the_problem(gw: Gateway) -> None:
    response = gw.post("harbor", b'{"type": "PUSH_ARTIFACT", ')

    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]


def test_missing_field_is_422_naming_it(gw: Gateway) -> None:
    body = json.dumps({"push_data": {"tag": "v1"}, "repository": {}}).encode()
    response = gw.post("dockerhub", body)

    assert response.status_code == 422
    assert "body.repository.repo_name" in response.json()["error"]


def test_oversize_body_is_413(policy_dir: Path) -> None:
    gw = Gateway(policy_dir, max_body=64)

    response = gw.post("generic", b'{"repository": "' + b"a" * 100 + b'"}')
    streamed = gw.client.post(
        "/hooks/generic", content=iter([b"{" * 40, b"}" * 40]), headers={"authorization": f"Bearer {TOKEN}"}
    )

    assert (response.status_code, streamed.status_code) == (413, 413)
    assert "64 bytes" in response.json()["error"]
    assert gw.bus.events == ()


def test_unknown_source_is_404(gw: Gateway) -> None:
    response = gw.post("nexus", b"{}")

    assert response.status_code == 404
    assert "dockerhub" in response.json()["error"]


def test_healthz(gw: Gateway) -> None:
    assert gw.client.get("/healthz").json() == {"status": "ok"}


def test_a_rejected_delivery_publishes_nothing_even_when_its_first_push_was_good(gw: Gateway) -> None:
    body = json.dumps(
        {
            "images": [
                {"repository": "registry.example.com/team/flask", "tag": "v1.4.0"},
                {"repository": "registry.example.com/team/flask"},
            ]
        }
    ).encode()
    response = gw.post("generic", body)

    assert response.status_code == 422
    assert "body.images[1].tag is required" in response.json()["error"]
    assert gw.bus.events == ()


def test_an_unusable_push_is_ignored_and_the_good_one_still_published(gw: Gateway) -> None:
    body = json.dumps(
        {
            "images": [
                {"repository": "registry.example.com/team/flask", "tag": "v1.4.0"},
                {"repository": "Not A Repository!", "tag": "v1"},
            ]
        }
    ).encode()
    response = gw.post("generic", body)

    assert response.status_code == 202
    assert "push 1: repository 'not a repository!'" in response.json()["ignored"][0]["reason"]
    assert sorted(e["subject"] for e in pushed(gw)) == ["prod/flask", "staging/flask"]


class DownBus:
    def publish(self, event: Any) -> None:
        raise ProviderUnavailable("publish to broker http://127.0.0.1:1: connection refused")


def test_broker_down_is_503_so_the_sender_retries(policy_dir: Path) -> None:
    gw = Gateway(policy_dir, bus=DownBus())

    response = gw.post("generic", sample("generic/push.json"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


# ---------------------------------------------------------------------------------------------- alerts


def test_alert_group_becomes_one_event_per_alert_naming_an_app(gw: Gateway) -> None:
    response = gw.post("alertmanager", sample("alertmanager/grouped.json"))

    assert response.status_code == 202
    events = gw.bus.of_type("dev.graylane.alert.")
    for event in events:
        catalog.validate(event)
    assert [(e["type"], e["subject"]) for e in events] == [
        ("dev.graylane.alert.firing", "shop/web"),
        ("dev.graylane.alert.resolved", "shop/api"),
    ]
    assert events[0].data["startsAt"] == "2025-06-03T09:14:30.123456789Z"
    assert response.json()["ignored"] == [
        {
            "fingerprint": "c0ffee0000000001",
            "status": "firing",
            "reason": "no policy's protection rule matches its labels, and they "
            "name no app (graylane_app, or namespace and app)",
        }
    ]


def test_alert_redelivery_gets_the_same_ids(gw: Gateway) -> None:
    body = sample("alertmanager/grouped.json")
    first = gw.post("alertmanager", body).json()["ids"]
    second = gw.post("alertmanager", body).json()["ids"]

    assert first == second and len(first) == 2


def test_same_fingerprint_resolved_is_a_different_event(gw: Gateway) -> None:
    data = json.loads(sample("alertmanager/grouped.json"))
    data["alerts"] = [data["alerts"][0], {**data["alerts"][0], "status": "resolved"}, data["alerts"][0]]
    response = gw.post("alertmanager", json.dumps(data).encode())

    assert response.status_code == 202
    assert [e["type"] for e in gw.bus.events] == ["dev.graylane.alert.firing", "dev.graylane.alert.resolved"]


def test_push_redelivery_gets_the_same_ids(gw: Gateway) -> None:
    body = sample("harbor/push-tagged.json")

    assert gw.post("harbor", body).json()["ids"] == gw.post("harbor", body).json()["ids"]


# ---------------------------------------------------------------------------------------------- fuzz

ROUTES = [*SOURCES, "github", "nexus"]
_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.json"))).map(sample),
)


# each route's own vendor samples: a delivery that would publish if it were authenticated
_OWN = {
    "dockerhub": ["dockerhub/push.json"],
    "harbor": ["harbor/push-tagged.json", "harbor/push-cloudevents.json"],
    "ghcr": ["github/registry-package-tagged.json"],
    "github": ["github/registry-package-tagged.json"],
    "gitlab": ["gitlab/push-tagged.json"],
    "quay": ["quay/push.json"],
    "tcr": ["tencent/tcr-push.json"],
    "coding": ["tencent/coding-artifact-created.json"],
    "acr": ["aliyun/push.json"],
    "ecr": ["ecr/push.json"],
    "gar": ["gar/push.json"],
    "azure": ["azure/push.json"],
    "generic": ["generic/push.json"],
    "alertmanager": ["alertmanager/grouped.json"],
}
_deliveries = st.sampled_from(ROUTES).flatmap(
    lambda route: st.tuples(
        st.just(route),
        st.one_of(_bodies, st.sampled_from(_OWN.get(route, ["dockerhub/push.json"])).map(sample)),
    )
)


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    folder = tmp_path_factory.mktemp("fuzz-policies")
    for name, text in POLICIES.items():
        (folder / f"{name}.yaml").write_text(text)
    return Gateway(folder)


@pytest.mark.mutation
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    delivery=_deliveries,
    authorized=st.booleans(),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "x-github-event",
                "ce-type",
                "x-coding-event",
                "content-type",
                "x-hub-signature-256",
                "authorization",
            ]
        ),
        _header_text,
        max_size=3,
    ),
)
def test_fuzz_never_answers_5xx(
    fuzz_gateway: Gateway, delivery: tuple[str, bytes], authorized: bool, headers: dict[str, str]
) -> None:
    """Any bytes and headers: never a 5xx, and nothing published unless the delivery was authenticated and
    accepted (an unauthenticated, refused or unreadable delivery publishes nothing at all)."""
    route, body = delivery
    if authorized:
        headers = {**headers, "authorization": f"Bearer {TOKEN}"}
        if route in ("ghcr", "github"):
            headers.update(github_headers(body, event=headers.get("x-github-event", "registry_package")))
        if route == "coding":
            headers.update(coding_headers(body))
    before = len(fuzz_gateway.bus.events)
    response = fuzz_gateway.client.post(f"/hooks/{route}", content=body, headers=headers)
    published = fuzz_gateway.bus.events[before:]

    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if not authorized:  # every source has a credential configured: without it nothing gets through
        assert response.status_code in (401, 403, 404), response.text
    if response.status_code >= 300:
        assert published == (), (
            f"{route} answered {response.status_code} but published {len(published)} event(s)"
        )
    else:
        assert [e["id"] for e in published] == response.json()["ids"]
    for event in published:
        catalog.validate(event)
