"""Tests that fail when the code they guard is broken (issue 11, item 9).

Each one pins a behaviour a plausible mutation removes while every weaker test stays green: the functions
doing their work (not just answering 200), a webhook without its signature header being refused, route
plans that do not split 100 % being impossible, and an unauthenticated delivery publishing nothing.
tests/unit/test_mutation_check.py applies those mutations to a copy of the package and runs these tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from functions import catalog, runtime
from functions.core import events as ev
from functions.core.effects import RoutePlan
from functions.core.state import AppState, Phase
from functions.providers.sources import SOURCES
from functions.providers.sources.base import Credentials, Unauthenticated
from tests.unit.test_functions import EDGE_KEY, function, send
from tests.unit.test_functions import TOKEN as INTERNAL
from tests.unit.test_gateway import POLICIES, SECRET, TOKEN, Gateway, coding_headers, credentials, sample

pytestmark = pytest.mark.mutation
ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = "shop/checkout"  # infra/examples/waves.yaml: canary under analysis from its first step
REPO = "registry.example.com/shop/checkout"


# -- the functions do their work ------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRAYLANE_STORE", "memory://")
    monkeypatch.setenv("GRAYLANE_POLICIES", str(ROOT / "infra" / "examples"))
    monkeypatch.delenv("K_SINK", raising=False)
    monkeypatch.setenv("GRAYLANE_INTERNAL_TOKEN", INTERNAL)
    monkeypatch.setenv("GRAYLANE_EDGE_KEY", EDGE_KEY)
    runtime.runner.cache_clear()
    yield
    runtime.runner.cache_clear()


def _post(target: str, event: object) -> None:
    """What the broker delivers: an event an edge attested, with the internal credential."""
    response = send(function(target), event)
    assert response.status_code == 200, response.get_data(as_text=True)


def _pushed(tag: str) -> object:
    return catalog.make_event(
        ev.IMAGE_PUSHED, "", {"repository": REPO, "tag": tag, "source": "generic"}, id=f"push-{tag}"
    )


def _state() -> AppState:
    doc, _ = runtime.runner().store.load(CHECKOUT)
    assert doc is not None, "no state was written"
    return AppState.from_json(doc)


def test_mutation_release_start_starts_a_release(env: None) -> None:
    _post("release_start", _pushed("3.0.0"))
    assert _state().stable.version == "3.0.0" and _state().release is None  # the first image becomes stable
    _post("release_start", _pushed("3.1.0"))
    state = _state()
    assert state.release is not None and state.release.target.version == "3.1.0"
    # the step plans 10 %; adaptive exposure starts the canary at the probe weight until evidence arrives
    assert state.release.phase == Phase.PROGRESSING and state.release.planned_weight == 10
    assert state.routes == RoutePlan.canary_at(5)
    assert state.pending == ()  # and its effects were applied


def test_mutation_release_tick_moves_a_release(env: None) -> None:
    _post("release_start", _pushed("3.0.0"))
    _post("release_start", _pushed("3.1.0"))
    before = _state()
    assert before.release is not None and before.release.verdicts == ()
    _post("release_tick", catalog.make_event(ev.RELEASE_TICK, CHECKOUT, {}, id="tick-1"))
    after = _state()
    assert after.release is not None and [v.verdict for v in after.release.verdicts] == ["pass"]
    assert after.generation == before.generation + 1 and "tick-1" in after.seen


# -- deliveries without their signature --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "path"),
    [
        ("ghcr", "github/registry-package-tagged.json"),
        ("github", "github/registry-package-tagged.json"),
        ("coding", "tencent/coding-artifact-created.json"),
    ],
)
def test_mutation_a_delivery_without_its_signature_header_is_refused(
    tmp_path: Path, route: str, path: str
) -> None:
    for name, text in POLICIES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    gw = Gateway(tmp_path)
    body = sample(path)
    headers = (
        {"x-github-event": "registry_package"}
        if route != "coding"
        else {k: v for k, v in coding_headers(body).items() if k != "x-coding-signature"}
    )
    response = gw.post(route, body, headers)  # a valid bearer token does not stand in for the signature
    assert response.status_code == 401, response.text
    assert "header is missing" in response.json()["error"]
    assert gw.bus.events == ()
    source = SOURCES["ghcr" if route == "github" else route]()
    with pytest.raises(Unauthenticated, match="missing"):
        source.authenticate({}, body, Credentials(secret=SECRET, token=TOKEN))


# -- route plans -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stable", "canary"), [(50, 60), (100, 10), (0, 0), (-10, 110), (110, -10), (99, 0)])
def test_mutation_route_plans_must_split_100_percent(stable: int, canary: int) -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        RoutePlan(stable=stable, canary=canary)


def test_mutation_canary_weights_outside_0_to_100_are_not_plans() -> None:
    assert RoutePlan.canary_at(30) == RoutePlan(stable=70, canary=30)
    for weight in (-1, 101, 250):
        with pytest.raises(ValueError):
            RoutePlan.canary_at(weight)


# -- unauthenticated deliveries ------------------------------------------------------------------------------------

# every vendor sample that publishes when authenticated, posted to its own route without a credential
OWN_SAMPLES = [
    ("dockerhub", "dockerhub/push.json"),
    ("harbor", "harbor/push-tagged.json"),
    ("ghcr", "github/registry-package-tagged.json"),
    ("gitlab", "gitlab/push-tagged.json"),
    ("quay", "quay/push.json"),
    ("tcr", "tencent/tcr-push.json"),
    ("coding", "tencent/coding-artifact-created.json"),
    ("acr", "aliyun/push.json"),
    ("ecr", "ecr/push.json"),
    ("gar", "gar/push.json"),
    ("azure", "azure/push.json"),
    ("generic", "generic/push.json"),
]


@pytest.mark.parametrize(("route", "path"), OWN_SAMPLES, ids=[r for r, _ in OWN_SAMPLES])
def test_mutation_an_unauthenticated_delivery_publishes_nothing(
    tmp_path: Path, route: str, path: str
) -> None:
    from tests.unit.test_gateway import github_headers

    for name, text in POLICIES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    body = sample(path)
    control = Gateway(tmp_path)  # authenticated, the same delivery publishes
    if route == "ghcr":
        answer = control.post(route, body, github_headers(body), token=None)
    elif route == "coding":
        answer = control.post(route, body, coding_headers(body), token=None)
    else:
        answer = control.post(route, body)
    assert answer.status_code == 202 and control.bus.events, answer.text
    gw = Gateway(tmp_path)
    vendor = (
        {"x-github-event": "registry_package"}
        if route == "ghcr"
        else {"x-coding-event": "ARTIFACTS_VERSION_CREATED"}
        if route == "coding"
        else {}
    )
    for token in (None, "not-the-token"):
        response = gw.post(route, body, vendor, token=token)
        assert response.status_code == 401, (route, token, response.text)
    assert gw.bus.events == ()


def test_mutation_the_fuzz_gateway_has_every_credential_configured() -> None:
    """The fuzz test's `authorized=False` cases are unauthenticated only because every source has a credential."""
    creds = credentials()
    assert set(creds) == set(SOURCES) and all(c.configured for c in creds.values())
