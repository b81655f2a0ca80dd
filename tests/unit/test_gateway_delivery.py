"""What the gateway answers to deliveries it will not act on, pushes by digest, and alert routing.

- [wedge] after authentication, a push graylane will not act on is answered 2xx with the reason in
  `ignored` (logged and counted); 4xx only for bad credentials and bodies that are not the vendor's format.
  CNCF Distribution (and GitLab's registry) retry any other answer forever, one event at a time.
- [digest_push] vendor-documented pushes without a tag are "ignored: pushed without a tag" unless a policy
  opts in with `spec.image.byDigest`, which releases repository@sha256:... and shows the digest as the version.
- [alert_labels] an alert reaches every policy whose protection rule matches its labels; the app label is a
  shortcut.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from functions import catalog
from functions.errors import Reject
from functions.observability import metrics
from functions.providers.sources import SOURCES
from functions.providers.sources.base import Credentials
from tests.unit.test_gateway import (
    POLICIES,
    SAMPLES,
    TOKEN,
    Gateway,
    credentials,
    github_headers,
    policy,
    pushed,
    sample,
)

DIGEST = "sha256:" + hashlib.sha256(b"graylane digest push").hexdigest()


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """One policy per vendor sample, as in test_gateway."""
    return folder(tmp_path, **POLICIES)


def folder(tmp_path: Path, **texts: str) -> Path:
    for name, text in texts.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def by_digest(namespace: str, name: str, repository: str) -> str:
    return policy(namespace, name, repository).replace(
        "{repository: " + repository + "}", "{repository: " + repository + ", byDigest: true}"
    )


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def manifest_event(
    host: str, repository: str, tag: str | None, digest: str = DIGEST, n: int = 0
) -> dict[str, Any]:
    """One Distribution notification event, the documented shape (distribution/push-documented.json)."""
    event = copy.deepcopy(json.loads(sample("distribution/push-documented.json"))["events"][0])
    event["id"] = f"event-{n}"
    event["request"]["host"] = host
    event["target"].update(
        repository=repository, digest=digest, url=f"http://{host}/v2/{repository}/manifests/{digest}"
    )
    if tag is None:
        event["target"].pop("tag", None)
    else:
        event["target"]["tag"] = tag
    return event


# ---------------------------------------------------------------------------------------------- [wedge]


def test_wedge_repository_outside_the_allowlist_is_2xx_ignored_so_distribution_moves_on(
    tmp_path: Path,
) -> None:
    creds = {
        **credentials(),
        "distribution": Credentials(token=TOKEN, repositories=("192.168.100.227:5000/team",)),
    }
    gw = Gateway(
        folder(tmp_path, hello=policy("reg", "hello", "192.168.100.227:5000/hello-world")), creds=creds
    )
    before = metrics.WEBHOOK_IGNORED.get(source="distribution", reason="not-allowed")

    response = gw.post("distribution", sample("distribution/push-documented.json"))

    assert response.status_code == 202, response.text
    (entry,) = response.json()["ignored"]
    assert entry["repository"] == "192.168.100.227:5000/hello-world"
    assert "may not announce repository 192.168.100.227:5000/hello-world" in entry["reason"]
    assert "192.168.100.227:5000/team" in entry["reason"]
    assert gw.bus.events == ()
    assert metrics.WEBHOOK_IGNORED.get(source="distribution", reason="not-allowed") == before + 1


def test_wedge_the_same_for_generic_and_gitlab_allowlists(policy_dir: Path) -> None:
    creds = credentials()
    creds["generic"] = Credentials(token=TOKEN, repositories=("registry.example.com/other/",))
    creds["gitlab"] = Credentials(token=TOKEN, repositories=("registry.gitlab.example.com/else",))
    gw = Gateway(policy_dir, creds=creds)

    generic = gw.post("generic", sample("generic/push.json"))
    gitlab = gw.post("gitlab", sample("gitlab/push-tagged.json"))

    assert (generic.status_code, gitlab.status_code) == (202, 202)
    assert "registry.example.com/team/flask" in generic.json()["ignored"][0]["reason"]
    assert gw.bus.events == ()


def test_wedge_an_ipv6_registry_host_is_a_valid_repository(tmp_path: Path) -> None:
    gw = Gateway(folder(tmp_path, v6=policy("team", "app", "'[::1]:5000/team/app'")))

    response = gw.post("gitlab", envelope(manifest_event("[::1]:5000", "team/app", "v1.0.0")))

    assert response.status_code == 202, response.text
    (event,) = pushed(gw)
    assert event["subject"] == "team/app"
    assert event["data"]["repository"] == "[::1]:5000/team/app"
    assert event["data"]["image"] == f"[::1]:5000/team/app@{DIGEST}"
    assert catalog.is_repository("[::1]:5000/team/app") and catalog.is_repository("[2001:db8::1]/a/b")
    assert not catalog.is_repository("[not-an-address]:5000/a")


def test_wedge_one_unreadable_event_in_an_envelope_is_ignored_and_the_others_still_published(
    tmp_path: Path,
) -> None:
    gw = Gateway(folder(tmp_path, hello=policy("reg", "hello", "192.168.100.227:5000/hello-world")))
    good = manifest_event("192.168.100.227:5000", "hello-world", "v2", n=1)
    no_target = {**manifest_event("192.168.100.227:5000", "hello-world", "v3", n=2)}
    del no_target["target"]
    odd_repository = manifest_event("192.168.100.227:5000", "Not A Repo!", "v4", n=3)

    response = gw.post("gitlab", envelope(no_target, good, odd_repository, "not an event"))  # type: ignore[arg-type]

    assert response.status_code == 202, response.text
    assert [e["data"]["tag"] for e in pushed(gw)] == ["v2"]
    reasons = [i["reason"] for i in response.json()["ignored"]]
    assert len(reasons) == 3
    assert "body.events[0].target is required" in reasons[0]
    assert "is not an image repository" in reasons[1]
    assert "body.events[3] must be an object" in reasons[2]


def test_wedge_bad_credentials_and_bodies_not_in_the_vendor_format_stay_4xx(tmp_path: Path) -> None:
    gw = Gateway(folder(tmp_path, hello=policy("reg", "hello", "192.168.100.227:5000/hello-world")))
    body = sample("distribution/push-documented.json")

    assert gw.post("distribution", body, token="wrong-token").status_code == 401
    assert gw.post("distribution", b"{not json").status_code == 400
    no_events = gw.post("distribution", b'{"hello": "world"}')
    assert no_events.status_code == 422 and "body.events is required" in no_events.json()["error"]
    assert gw.bus.events == ()
    assert gw.post("distribution", body).status_code == 202


def test_wedge_distribution_is_its_own_source_sharing_the_gitlab_envelope(tmp_path: Path) -> None:
    gw = Gateway(folder(tmp_path, hello=policy("reg", "hello", "192.168.100.227:5000/hello-world")))

    response = gw.post("distribution", sample("distribution/push-documented.json"))
    alias = gw.post("registry", sample("distribution/push-documented.json"))

    assert response.status_code == 202 and alias.status_code == 202
    event = pushed(gw)[0]
    assert event["source"] == "/graylane/gateway/distribution" and event["data"]["source"] == "distribution"
    assert (event["data"]["repository"], event["data"]["tag"]) == (
        "192.168.100.227:5000/hello-world",
        "latest",
    )
    assert "distribution" in SOURCES and "distribution" in catalog.REGISTRY_SOURCES
    # the env names follow the source: GRAYLANE_HOOK_TOKEN_DISTRIBUTION
    from functions.gateway import GatewaySettings

    assert (
        GatewaySettings.from_env({"GRAYLANE_HOOK_TOKEN_DISTRIBUTION": "t"}).credentials["distribution"].token
        == "t"
    )


# ---------------------------------------------------------------------------------------------- [digest_push]


def test_digest_push_documented_payloads_are_ignored_without_a_tag(policy_dir: Path, tmp_path: Path) -> None:
    gw = Gateway(policy_dir)
    untagged_ghcr = sample("github/registry-package-published.json")
    gar_message = {
        "action": "INSERT",
        "digest": f"us-east1-docker.pkg.dev/my-project/my-repo/hello-world@{DIGEST}",
    }
    gar = json.dumps(
        {
            "message": {
                "data": base64.b64encode(json.dumps(gar_message).encode()).decode(),
                "messageId": "1",
                "publishTime": "2025-06-03T09:15:00Z",
            },
            "subscription": "projects/p/subscriptions/s",
        }
    ).encode()
    gitlab = sample("gitlab/envelope-documented.json")

    answers = {
        "harbor": gw.post("harbor", sample("harbor/push-default.json")),
        "ghcr": gw.post("ghcr", untagged_ghcr, github_headers(untagged_ghcr), token=None),
        "gar": gw.post("gar", gar),
        "gitlab": gw.post("gitlab", gitlab),
        "distribution": gw.post("distribution", envelope(manifest_event("r.example.com", "team/app", None))),
    }

    for source, answer in answers.items():
        assert answer.status_code == 202, (source, answer.text)
        assert [i["reason"] for i in answer.json()["ignored"]] == ["pushed without a tag"], source
    assert gw.bus.events == ()
    assert (
        answers["ghcr"].json()["ignored"][0]["digest"]
        == "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
    )  # package_version.name


@pytest.mark.parametrize("case", ["harbor", "ghcr", "gar", "distribution"])
def test_digest_push_releases_by_digest_when_the_policy_opts_in(tmp_path: Path, case: str) -> None:
    ghcr_digest = "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
    harbor_digest = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"
    repository, digest, body, headers = {
        "harbor": ("localhost/harbor/alpine", harbor_digest, sample("harbor/push-default.json"), {}),
        "ghcr": (
            "ghcr.io/codertocat/hello-world",
            ghcr_digest,
            sample("github/registry-package-published.json"),
            github_headers(sample("github/registry-package-published.json")),
        ),
        "gar": (
            "us-east1-docker.pkg.dev/p/r/img",
            DIGEST,
            json.dumps(
                {
                    "message": {
                        "data": base64.b64encode(
                            json.dumps(
                                {"action": "INSERT", "digest": f"us-east1-docker.pkg.dev/p/r/img@{DIGEST}"}
                            ).encode()
                        ).decode()
                    }
                }
            ).encode(),
            {},
        ),
        "distribution": (
            "r.example.com/team/app",
            DIGEST,
            envelope(manifest_event("r.example.com", "team/app", None)),
            {},
        ),
    }[case]
    gw = Gateway(
        folder(tmp_path, pinned=by_digest("pin", "web", repository), tagged=policy("tag", "web", repository))
    )  # a policy without the opt-in sees nothing

    response = gw.post(case, body, headers, token=None if case == "ghcr" else TOKEN)

    assert response.status_code == 202, response.text
    (event,) = pushed(gw)
    assert event["subject"] == "pin/web"
    assert "tag" not in event["data"]
    assert (event["data"]["digest"], event["data"]["image"]) == (digest, f"{repository}@{digest}")
    domain = catalog.to_domain(event)
    assert domain.target.version == digest and domain.target.image == f"{repository}@{digest}"  # type: ignore[union-attr]


def test_digest_push_catalog_needs_a_tag_or_a_digest() -> None:
    base = {"repository": "r.example.com/a", "source": "generic"}
    event = catalog.make_event("dev.graylane.image.pushed", "", {**base, "digest": DIGEST}, id="p1")
    catalog.validate(event)
    assert catalog.to_domain(event).target.version == DIGEST  # type: ignore[union-attr]
    bare = catalog.make_event("dev.graylane.image.pushed", "", base, id="p2")
    with pytest.raises(Reject, match="data.tag"):
        catalog.to_domain(bare)
    with pytest.raises(Reject):
        catalog.validate(bare)


def test_digest_push_policy_option_parses_and_names_a_bad_value() -> None:
    from functions.errors import PolicyError
    from functions.policies import load_policy_text

    (pinned,) = load_policy_text(by_digest("pin", "web", "r.example.com/a"))
    assert pinned.image.by_digest is True
    with pytest.raises(PolicyError, match="spec.image.byDigest"):
        load_policy_text(
            by_digest("pin", "web", "r.example.com/a").replace("byDigest: true", "byDigest: maybe")
        )


def test_digest_push_a_release_by_digest_shows_the_digest_wherever_a_version_is_shown(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from functions import present
    from functions.core.state import AppState
    from functions.gateway import GatewaySettings
    from functions.policies import DirectoryPolicies
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores.sqlite import SqliteStore
    from functions.serve import build_serve
    from tests.unit.test_serve import TestClient

    policies = folder(tmp_path, pinned=by_digest("pin", "web", "r.example.com/team/web"))
    store = SqliteStore(str(tmp_path / "g.db"))
    serve = build_serve(
        store,
        DirectoryPolicies(policies),
        RecordingProviders(),
        env={},
        gateway_settings=GatewaySettings(credentials={"distribution": Credentials(token=TOKEN)}),
    )
    first, second = "sha256:" + "1" * 64, DIGEST
    with TestClient(serve.app) as client:
        for n, digest in enumerate((first, second)):
            answer = client.post(
                "/hooks/distribution",
                content=envelope(manifest_event("r.example.com", "team/web", None, digest=digest, n=n)),
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert answer.status_code == 202 and answer.json()["ids"], answer.text
    serve.stop()

    doc, _ = store.load("pin/web")
    state = AppState.from_json(doc)
    assert state.stable.version == first and state.stable.image == f"r.example.com/team/web@{first}"
    assert state.release is not None and state.release.target.version == second
    assert state.release.target.image == f"r.example.com/team/web@{second}"
    (policy_,) = DirectoryPolicies(policies).all()
    now = datetime.now(UTC)
    assert f"{first} -> {second}" in present.summary(state, policy_, now)
    assert present.row(state, policy_, now)["release"] == f"{state.release.id} {second}"
    assert present.status(state, policy_, now)["release"]["version"] == second
    assert any(second in h.reason for h in state.history if h.action == "started")


# ---------------------------------------------------------------------------------------------- [alert_labels]

PROTECTED = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  image: {{repository: registry.example.com/{namespace}/{name}}}
  router: {{provider: recording}}
  stages:
    - canary: {{steps: [{{weight: 10}}]}}
    - protect: {{rateLimit: {{average: 400, burst: 800, period: 1s}}}}
  protection:
    - {{alert: {alert}, match: {match}, rateLimitFactor: 0.1, floor: 10, holdDown: 1m}}
"""


def alert_body(*alerts: dict[str, Any]) -> bytes:
    data = json.loads(sample("alertmanager/grouped.json"))
    data["alerts"] = list(alerts)
    return json.dumps(data).encode()


def alert(
    labels: dict[str, str], fingerprint: str = "f00d000000000001", status: str = "firing"
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": "2025-06-03T09:14:30Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def test_alert_labels_an_alert_without_an_app_label_reaches_the_policy_whose_rule_matches(
    tmp_path: Path,
) -> None:
    gw = Gateway(
        folder(
            tmp_path,
            flask=PROTECTED.format(
                namespace="pro", name="flask", alert="HighErrorRate", match="{service: flask}"
            ),
            other=PROTECTED.format(
                namespace="pro", name="other", alert="HighErrorRate", match="{service: other}"
            ),
        )
    )

    response = gw.post("alertmanager", alert_body(alert({"alertname": "HighErrorRate", "service": "flask"})))

    assert response.status_code == 202, response.text
    events = gw.bus.of_type("dev.graylane.alert.")
    assert [(e["type"], e["subject"]) for e in events] == [("dev.graylane.alert.firing", "pro/flask")]
    catalog.validate(events[0])
    assert response.json()["ignored"] == []


def test_alert_labels_every_matching_policy_gets_its_own_event_and_the_app_label_is_a_shortcut(
    tmp_path: Path,
) -> None:
    rule = {"alert": "HighErrorRate", "match": "{team: shop}"}
    gw = Gateway(
        folder(
            tmp_path,
            web=PROTECTED.format(namespace="shop", name="web", **rule),
            api=PROTECTED.format(namespace="shop", name="api", **rule),
            db=PROTECTED.format(namespace="data", name="db", alert="DiskFull", match="{}"),
        )
    )
    body = alert_body(
        alert({"alertname": "HighErrorRate", "team": "shop"}),
        alert({"alertname": "Other", "graylane_app": "data/db"}, fingerprint="f00d000000000002"),
        alert({"alertname": "HighErrorRate", "team": "else"}, fingerprint="f00d000000000003"),
    )

    first = gw.post("alertmanager", body)
    again = gw.post("alertmanager", body)

    assert first.status_code == 202, first.text
    events = gw.bus.of_type("dev.graylane.alert.")[:3]
    assert [e["subject"] for e in events] == ["shop/api", "shop/web", "data/db"]
    assert len({e["id"] for e in events}) == 3  # one alert, two apps: two events, two ids
    assert first.json()["ids"] == again.json()["ids"]  # a redelivery is the same events
    (ignored,) = first.json()["ignored"]
    assert ignored["fingerprint"] == "f00d000000000003" and "protection rule" in ignored["reason"]


def test_alert_labels_tighten_protection_end_to_end_through_serve(tmp_path: Path) -> None:
    from functions.core.state import AppState
    from functions.gateway import GatewaySettings
    from functions.policies import DirectoryPolicies
    from functions.providers.recording import RecordingProviders
    from functions.providers.stores.sqlite import SqliteStore
    from functions.serve import build_serve
    from tests.unit.test_serve import TestClient

    policies = folder(
        tmp_path,
        flask=PROTECTED.format(
            namespace="pro", name="flask", alert="HighErrorRate", match="{service: flask}"
        ),
    )
    store = SqliteStore(str(tmp_path / "g.db"))
    serve = build_serve(
        store,
        DirectoryPolicies(policies),
        RecordingProviders(),
        env={},
        gateway_settings=GatewaySettings(
            credentials={"generic": Credentials(token=TOKEN), "alertmanager": Credentials(token=TOKEN)}
        ),
    )
    auth = {"authorization": f"Bearer {TOKEN}"}
    with TestClient(serve.app) as client:
        push = {"repository": "registry.example.com/pro/flask", "tag": "v1.0.0"}
        assert client.post("/hooks/generic", json=push, headers=auth).status_code == 202
        answer = client.post(
            "/hooks/alertmanager",
            headers=auth,
            content=alert_body(alert({"alertname": "HighErrorRate", "service": "flask"})),
        )
    serve.stop()
    assert answer.status_code == 202 and len(answer.json()["ids"]) == 1, answer.text
    doc, _ = store.load("pro/flask")
    state = AppState.from_json(doc)
    assert [(a.fingerprint, a.rule) for a in state.alerts] == [("f00d000000000001", 0)]


def test_alert_labels_fuzz_sample_still_names_the_samples_apps(policy_dir: Path) -> None:
    gw = Gateway(policy_dir)
    response = gw.post("alertmanager", (SAMPLES / "alertmanager/grouped.json").read_bytes())
    assert [e["subject"] for e in gw.bus.of_type("dev.graylane.alert.")] == ["shop/web", "shop/api"]
    assert "protection rule" in response.json()["ignored"][0]["reason"]
