"""The gateway's `/metrics` and its webhook counters, through Starlette's TestClient."""

from __future__ import annotations

import warnings
from pathlib import Path

from starlette.exceptions import StarletteDeprecationWarning

from functions.bus import MemoryBus
from functions.gateway import GatewaySettings, build_app
from functions.observability import metrics
from functions.policies import DirectoryPolicies
from functions.providers.sources import make_sources
from functions.providers.sources.base import Credentials
from tests.unit.test_observability_metrics import parse, series

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)  # see tests/unit/test_gateway.py
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
HARBOR = (ROOT / "events" / "sources" / "harbor" / "push-tagged.json").read_bytes()
TOKEN = "s3cret-token"
POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: alpine, namespace: shop}
spec:
  image: {repository: localhost/harbor/alpine}
  router: {provider: recording}
  stages:
    - canary: {steps: [{weight: 10}]}
"""


def client(tmp_path: Path, max_body: int = 1024 * 1024) -> TestClient:
    (tmp_path / "alpine.yaml").write_text(POLICY)
    settings = GatewaySettings(
        credentials={"harbor": Credentials(token=TOKEN), "ghcr": Credentials(token=TOKEN)}, max_body=max_body
    )
    return TestClient(build_app(settings, make_sources(), MemoryBus(), DirectoryPolicies(tmp_path)))


def scrape(c: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)[1]


def delta(after: dict, before: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    key = series(name, **labels)
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_webhook_requests_are_counted_by_source_and_status(tmp_path: Path) -> None:
    c = client(tmp_path, max_body=64 * 1024)
    before = scrape(c)
    auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    assert c.post("/hooks/harbor", content=HARBOR, headers=auth).status_code == 202
    assert c.post("/hooks/harbor", content=HARBOR, headers=auth).status_code == 202  # a redelivery
    assert (
        c.post("/hooks/harbor", content=HARBOR, headers={"authorization": "Bearer wrong"}).status_code == 401
    )
    assert (
        c.post(
            f"/hooks/harbor/{TOKEN}", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        c.post("/hooks/github", content=HARBOR, headers={"authorization": "Bearer wrong"}).status_code == 401
    )
    assert c.post("/hooks/no-such-registry", content=b"{}").status_code == 404
    assert c.post("/hooks/harbor", content=b"x" * (65 * 1024), headers=auth).status_code == 413
    after = scrape(c)
    assert delta(after, before, "graylane_webhook_requests_total", source="harbor", status="202") == 2
    assert delta(after, before, "graylane_webhook_requests_total", source="harbor", status="401") == 1
    assert delta(after, before, "graylane_webhook_requests_total", source="harbor", status="400") == 1
    assert delta(after, before, "graylane_webhook_requests_total", source="ghcr", status="401") == 1  # alias
    assert delta(after, before, "graylane_webhook_requests_total", source="unknown", status="404") == 1
    assert delta(after, before, "graylane_webhook_requests_total", source="harbor", status="413") == 1
    assert delta(after, before, "graylane_webhook_seconds_count", source="harbor") == 5
    assert delta(after, before, "graylane_webhook_seconds_bucket", source="harbor", le="+Inf") == 5
    # the token in the path never becomes a label value
    assert not any(TOKEN in value for _, labels in after for _, value in labels)


def test_metrics_is_not_counted_as_a_webhook_and_other_routes_still_work(tmp_path: Path) -> None:
    c = client(tmp_path)
    before = metrics.WEBHOOK_SECONDS.count(source="unknown")
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.head("/metrics").status_code == 200
    assert "graylane_transitions_total" in c.get("/metrics").text
    assert c.post("/metrics").status_code == 404  # only GET/HEAD are answered; there is no such route
    assert metrics.WEBHOOK_SECONDS.count(source="unknown") == before
