"""The events/ catalog and functions.catalog: schemas, examples, CloudEvent <-> domain, validation."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_dict, from_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from functions import catalog
from functions.core import events as ev
from functions.core.events import Alert, Command, Emitted, ImagePushed, Tick
from functions.core.state import Actor, MetricResult, Phase, Version
from functions.errors import NotFound, Reject

ROOT = Path(catalog.__file__).resolve().parents[1]
EVENTS = ROOT / "events"
ALL_TYPES = ev.CONSUMED + ev.EMITTED
EXAMPLE_FILES = sorted(EVENTS.glob("*/examples/*.json"))
CONSUMED_FILES = [p for p in EXAMPLE_FILES if p.parts[-3] in ev.CONSUMED]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def example(type_: str, name: str) -> dict[str, Any]:
    return load(EVENTS / type_ / "examples" / f"{name}.json")


# ---------------------------------------------------------------------------------------------- the catalog


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_every_type_has_a_schema_and_an_example(type_: str) -> None:
    assert (EVENTS / type_ / "schema.json").is_file()
    assert catalog.examples_for(type_), f"no example for {type_}"
    assert catalog.schema_for(type_)["$id"].endswith(f"/{type_}/schema.json")


def test_catalog_holds_no_unknown_type() -> None:
    folders = {p.name for p in EVENTS.iterdir() if p.is_dir() and p.name != "sources"}  # vendor payloads
    assert folders == set(ALL_TYPES)


def test_readme_lists_every_type() -> None:
    readme = (EVENTS / "README.md").read_text(encoding="utf-8")
    missing = [t for t in ALL_TYPES if f"`{t}`" not in readme]
    assert not missing


@pytest.mark.parametrize(
    "path", sorted(EVENTS.glob("**/schema.json")) + [EVENTS / "_defs.json", EVENTS / "_envelope.json"]
)
def test_schema_is_a_valid_draft_2020_12_schema(path: Path) -> None:
    schema = load(path)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_example_is_a_complete_cloudevent_that_validates(path: Path) -> None:
    event = load(path)

    assert event["type"] == path.parts[-3]
    assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
    assert event["id"] and event["source"].startswith("/") and event["time"]
    catalog.validate(event)
    catalog.validate(from_dict(event))  # the same through the SDK's CloudEvent


@pytest.mark.parametrize("type_", sorted(catalog.RELEASE_SCOPED))
def test_release_scoped_examples_carry_the_correlation_extension(type_: str) -> None:
    for event in catalog.examples_for(type_).values():
        assert event[catalog.RELEASE_EXTENSION] == event["data"]["release"]
        assert event["subject"] == event["data"]["app"]


def test_schema_for_unknown_type_is_not_found() -> None:
    with pytest.raises(NotFound, match="dev.graylane.nope"):
        catalog.schema_for("dev.graylane.nope")


def test_catalog_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = tmp_path / "events"
    shutil.copytree(EVENTS, copy_dir)
    schema_path = copy_dir / ev.RELEASE_TICK / "schema.json"
    schema = load(schema_path)
    schema["title"] = "patched"
    schema["required"] = ["app"]
    schema_path.write_text(json.dumps(schema))
    monkeypatch.setenv("GRAYLANE_EVENTS_DIR", str(copy_dir))

    assert catalog.schema_for(ev.RELEASE_TICK)["title"] == "patched"
    with pytest.raises(Reject, match="'app' is a required property"):
        catalog.validate(example(ev.RELEASE_TICK, "sweep"))


# ---------------------------------------------------------------------------------------------- to_domain


def over_http(event: dict[str, Any], mode: str) -> CloudEvent:
    """The event as a function receives it: serialised in `mode`, parsed back by from_http."""
    headers, body = (to_binary if mode == "binary" else to_structured)(from_dict(copy.deepcopy(event)))
    if mode == "binary":
        assert "ce-type" in headers
    else:
        assert headers["content-type"] == "application/cloudevents+json"
    return from_http(headers, body)


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("path", CONSUMED_FILES, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_consumed_example_reaches_the_domain_over_http(path: Path, mode: str) -> None:
    event = load(path)

    domain = catalog.to_domain(over_http(event, mode))

    assert domain == catalog.to_domain(event)  # the dict form says the same
    assert domain.id == event["id"] and domain.type == event["type"]
    assert domain.app == (event.get("subject") or event["data"].get("app", ""))


def test_image_pushed_fields() -> None:
    pushed = catalog.to_domain(example(ev.IMAGE_PUSHED, "harbor-with-app"))

    assert isinstance(pushed, ImagePushed)
    assert pushed.app == "shop/web" and pushed.source == "harbor" and pushed.tag == "v1.3.0"
    assert pushed.target == Version("v1.3.0", f"harbor.example.com/shop/web@{pushed.digest}")


def test_image_pushed_without_app_leaves_it_to_the_runner() -> None:
    pushed = catalog.to_domain(example(ev.IMAGE_PUSHED, "dockerhub-unmatched"))

    assert isinstance(pushed, ImagePushed) and pushed.app == ""
    assert pushed.target == Version("v1.3.0", "docker.io/shop/web:v1.3.0")  # no digest: by tag


def test_image_pushed_pins_the_digest_when_no_image_is_given() -> None:
    pushed = catalog.to_domain(example(ev.IMAGE_PUSHED, "ghcr-digest"))

    assert pushed.target.image == f"ghcr.io/acme/api@{pushed.digest}"  # type: ignore[union-attr]


def test_command_fields() -> None:
    command = catalog.to_domain(example(ev.RELEASE_COMMAND, "approve-with-weight"))

    assert command == Command(
        id="slack-T024BE7LD-1717406100.000200",
        app="shop/web",
        action="approve",
        actor=Actor("alice", "slack", "#releases"),
        gate="canary",
        params={"weight": 20},
        reason="metrics look fine",
        release="web-3",
        version="v2.4.0",
    )


def test_alerts_know_whether_they_fire() -> None:
    firing = catalog.to_domain(example(ev.ALERT_FIRING, "latency"))
    resolved = catalog.to_domain(example(ev.ALERT_RESOLVED, "latency"))

    assert isinstance(firing, Alert) and isinstance(resolved, Alert)
    assert (firing.firing, firing.type) == (True, ev.ALERT_FIRING)
    assert (resolved.firing, resolved.type) == (False, ev.ALERT_RESOLVED)
    assert firing.fingerprint == resolved.fingerprint and resolved.app == "shop/web"
    assert firing.labels["severity"] == "page" and firing.starts_at == "2025-06-03T09:14:30.123Z"


def test_tick_sweep_and_tick_for_one_app() -> None:
    assert catalog.to_domain(example(ev.RELEASE_TICK, "sweep")) == Tick(id="ping-2025-06-03T09:15:00Z")
    assert catalog.to_domain(example(ev.RELEASE_TICK, "one-app")).app == "shop/web"


@pytest.mark.parametrize(
    "raw", [b'{"app": "shop/web"}', '{"app": "shop/web"}', bytearray(b'{"app": "shop/web"}')]
)
def test_data_may_arrive_as_json_text(raw: Any) -> None:
    event = {**example(ev.RELEASE_TICK, "sweep"), "data": raw}

    assert catalog.to_domain(event).app == "shop/web"


@pytest.mark.parametrize("raw", [None, b"", "  "])
def test_empty_tick_data_is_an_empty_object(raw: Any) -> None:
    event = {**example(ev.RELEASE_TICK, "sweep"), "data": raw}

    assert catalog.to_domain(event) == Tick(id=event["id"])


def test_empty_binary_tick_over_http() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "t-1", "ce-source": "/pings", "ce-type": ev.RELEASE_TICK}

    assert catalog.to_domain(from_http(headers, b"")) == Tick(id="t-1")


def test_structured_dict_with_data_base64() -> None:
    event = example(ev.RELEASE_COMMAND, "weight")
    raw = json.dumps(event.pop("data")).encode()
    event["data_base64"] = __import__("base64").b64encode(raw).decode()

    assert catalog.to_domain(event).weight == 50  # type: ignore[union-attr]


def test_integral_floats_count_as_integers() -> None:
    event = example(ev.RELEASE_COMMAND, "weight")
    event["data"]["weight"] = 30.0

    command = catalog.to_domain(event)
    assert command.weight == 30 and type(command.weight) is int  # type: ignore[union-attr]


def mutate(
    type_: str, name: str, change: dict[str, Any], *, attrs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An example with data keys changed (value None deletes the key) and attributes overridden."""
    event = example(type_, name)
    for key, value in change.items():
        target, _, leaf = key.rpartition(".")
        node = event["data"]
        for part in filter(None, target.split(".")):
            node = node[part]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    for key, value in (attrs or {}).items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


CMD, PUSH = ev.RELEASE_COMMAND, ev.IMAGE_PUSHED
# (id, event, field named in the message, whether the JSON Schemas reject it too)
MALFORMED = [
    (
        "weight-too-high",
        mutate(CMD, "weight", {"weight": 150}),
        "data.weight: 150 is not allowed; expected an integer 0..100",
        True,
    ),
    ("weight-negative", mutate(CMD, "weight", {"weight": -1}), "data.weight", True),
    ("weight-as-text", mutate(CMD, "weight", {"weight": "50"}), "data.weight", True),
    ("weight-as-bool", mutate(CMD, "weight", {"weight": True}), "data.weight", True),
    ("weight-fraction", mutate(CMD, "weight", {"weight": 12.5}), "data.weight", True),
    ("weight-action-without-weight", mutate(CMD, "weight", {"weight": None}), "data.weight", True),
    ("unknown-action", mutate(CMD, "weight", {"action": "explode"}), "data.action", True),
    ("read-only-action", mutate(CMD, "weight", {"action": "status"}), "data.action", True),
    ("no-action", mutate(CMD, "weight", {"action": None}), "data.action", True),
    ("no-actor", mutate(CMD, "weight", {"actor": None}), "data.actor", True),
    ("actor-not-object", mutate(CMD, "weight", {"actor": "bob"}), "data.actor", True),
    ("actor-unknown-via", mutate(CMD, "weight", {"actor.via": "telegram"}), "data.actor.via", True),
    ("actor-empty-user", mutate(CMD, "weight", {"actor.user": ""}), "data.actor.user", True),
    ("actor-extra-field", mutate(CMD, "weight", {"actor.role": "admin"}), "data.actor.role", True),
    (
        "param-not-integer",
        mutate(CMD, "approve-with-weight", {"params.weight": "x"}),
        "data.params.weight",
        True,
    ),
    ("params-not-object", mutate(CMD, "approve-with-weight", {"params": [20]}), "data.params", True),
    ("typo-field", mutate(CMD, "weight", {"wieght": 50}), "data.wieght: unknown field", True),
    ("bad-rollback-version", mutate(CMD, "rollback", {"version": "v1 2"}), "data.version", True),
    ("empty-gate", mutate(CMD, "approve-with-weight", {"gate": ""}), "data.gate", True),
    ("command-without-app", mutate(CMD, "weight", {}, attrs={"subject": None}), "subject", False),
    ("app-disagrees-with-subject", mutate(CMD, "weight", {"app": "shop/api"}), "data.app", False),
    ("bad-subject", mutate(CMD, "weight", {}, attrs={"subject": "Shop/Web"}), "subject", True),
    ("subject-without-namespace", mutate(CMD, "weight", {}, attrs={"subject": "web"}), "subject", True),
    ("unknown-registry", mutate(PUSH, "harbor-with-app", {"source": "dockerhubz"}), "data.source", True),
    ("bad-digest", mutate(PUSH, "harbor-with-app", {"digest": "md5:abc"}), "data.digest", True),
    (
        "uppercase-repository",
        mutate(PUSH, "harbor-with-app", {"repository": "docker.io/Shop/Web"}),
        "data.repository",
        True,
    ),
    ("tag-with-space", mutate(PUSH, "harbor-with-app", {"tag": "v1 .0"}), "data.tag", True),
    ("no-tag", mutate(PUSH, "harbor-with-app", {"tag": None, "digest": None}), "data.tag", True),
    ("no-repository", mutate(PUSH, "harbor-with-app", {"repository": None}), "data.repository", True),
    ("pushed-at-words", mutate(PUSH, "harbor-with-app", {"pushedAt": "yesterday"}), "data.pushedAt", True),
    (
        "pushed-at-month-13",
        mutate(PUSH, "harbor-with-app", {"pushedAt": "2025-13-40T10:00:00Z"}),
        "data.pushedAt",
        True,
    ),
    ("alert-wrong-status", mutate(ev.ALERT_FIRING, "latency", {"status": "resolved"}), "data.status", True),
    ("alert-no-status", mutate(ev.ALERT_FIRING, "latency", {"status": None}), "data.status", True),
    (
        "alert-label-number",
        mutate(ev.ALERT_FIRING, "latency", {"labels.severity": 1}),
        "data.labels.severity",
        True,
    ),
    (
        "alert-no-fingerprint",
        mutate(ev.ALERT_FIRING, "latency", {"fingerprint": None}),
        "data.fingerprint",
        True,
    ),
    ("alert-no-starts-at", mutate(ev.ALERT_RESOLVED, "latency", {"startsAt": None}), "data.startsAt", True),
    (
        "alert-without-app",
        mutate(ev.ALERT_RESOLVED, "latency", {}, attrs={"subject": None}),
        "subject",
        False,
    ),
    ("tick-data-list", {**example(ev.RELEASE_TICK, "sweep"), "data": []}, "data: [] is not allowed", True),
    ("tick-data-not-json", {**example(ev.RELEASE_TICK, "sweep"), "data": b"{not json"}, "data", True),
    (
        "tick-bad-app",
        mutate(ev.RELEASE_TICK, "one-app", {"app": "nope"}, attrs={"subject": None}),
        "data.app",
        True,
    ),
    ("emitted-type", mutate(CMD, "weight", {}, attrs={"type": ev.RELEASE_STARTED}), "type: ", True),
    ("foreign-type", mutate(CMD, "weight", {}, attrs={"type": "com.example.other"}), "type: ", True),
    ("no-id", mutate(CMD, "weight", {}, attrs={"id": None}), "id: ", True),
    ("numeric-id", mutate(CMD, "weight", {}, attrs={"id": 42}), "id: 42", True),
]


@pytest.mark.parametrize(
    ("event", "field", "schema_rejects"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_event_is_rejected_naming_the_field(
    event: dict[str, Any], field: str, schema_rejects: bool
) -> None:
    with pytest.raises(Reject) as caught:
        catalog.to_domain(event)

    assert field in str(caught.value)
    assert event.get("type", "") in str(caught.value) or field.startswith(("type", "id"))
    if schema_rejects:
        with pytest.raises(Reject):
            catalog.validate(event)
    else:  # subject <-> data.app is beyond the data schema; to_domain is the stricter one
        catalog.validate(event)


def test_not_an_event_at_all() -> None:
    with pytest.raises(Reject, match="event: 42 is not allowed"):
        catalog.to_domain(42)


def test_validate_names_the_data_path() -> None:
    with pytest.raises(Reject, match=r"data\.weight: 150 is greater than the maximum of 100"):
        catalog.validate(mutate(CMD, "weight", {"weight": 150}))
    with pytest.raises(Reject, match=r"data\.metrics\.0\.verdict"):
        catalog.validate(
            mutate(ev.ANALYSIS_VERDICT, "fail", {"metrics": [{"name": "x", "verdict": "maybe"}]})
        )


def test_validate_checks_the_envelope() -> None:
    with pytest.raises(Reject, match="specversion"):
        catalog.validate({**example(ev.RELEASE_TICK, "sweep"), "specversion": "0.3"})
    with pytest.raises(Reject, match="graylanerelease"):
        catalog.validate(mutate(ev.RELEASE_STARTED, "started", {}, attrs={catalog.RELEASE_EXTENSION: None}))


# ---------------------------------------------------------------------------------------------- building events


@pytest.mark.parametrize("type_", ev.EMITTED)
def test_to_cloudevent_output_validates(type_: str) -> None:
    for name, event in catalog.examples_for(type_).items():
        # app and release come from the arguments
        data = {k: v for k, v in event["data"].items() if k not in ("app", "release")}
        ce = catalog.to_cloudevent(
            Emitted(type_, data), "shop/web", "web-3", "/graylane/functions/release_tick", id=f"web-3/{name}"
        )

        catalog.validate(ce)
        assert ce["subject"] == "shop/web" and ce["id"] == f"web-3/{name}"
        assert ce[catalog.RELEASE_EXTENSION] == "web-3" and ce["source"] == "/graylane/functions/release_tick"
        assert ce.data["app"] == "shop/web"
        assert ce.data.get("release") == ("web-3" if type_ in catalog.RELEASE_SCOPED else None)


def test_to_cloudevent_is_idempotent_with_an_id() -> None:
    emitted = Emitted(
        ev.RELEASE_PAUSED,
        {
            "phase": "paused",
            "target": {"version": "v2", "image": "r/w:v2"},
            "origin": {"version": "v1", "image": "r/w:v1"},
        },
    )
    first = catalog.to_cloudevent(emitted, "shop/web", "web-3", "/graylane/x", id="web-3/7/paused")
    again = catalog.to_cloudevent(emitted, "shop/web", "web-3", "/graylane/x", id="web-3/7/paused")
    other = catalog.to_cloudevent(emitted, "shop/web", "web-3", "/graylane/x")

    assert first["id"] == again["id"] == "web-3/7/paused"
    assert first.data == again.data and other["id"] != first["id"]


def test_to_cloudevent_turns_domain_values_into_catalog_json() -> None:
    emitted = Emitted(
        ev.ANALYSIS_VERDICT,
        {
            "verdict": "fail",
            "reason": "error-rate failed",
            "metrics": (
                MetricResult("error-rate", "fail", "4% > 1%", 0.04, 0.001, "sum(x)"),
                MetricResult("p50", "inconclusive"),
            ),
        },
    )
    paused = Emitted(
        ev.RELEASE_PAUSED,
        {
            "phase": Phase.PAUSED,
            "target": Version("v2", "r/w@sha256:" + "b" * 64),
            "origin": Version("v1"),
            "by": Actor("bob", "cli"),
        },
    )

    verdict = catalog.to_cloudevent(emitted, "shop/web", "web-3", "/graylane/functions/release_tick")
    pause = catalog.to_cloudevent(paused, "shop/web", "web-3", "/graylane/functions/release_command")

    catalog.validate(verdict)
    catalog.validate(pause)
    assert verdict.data["metrics"][0] == {
        "name": "error-rate",
        "verdict": "fail",
        "reason": "4% > 1%",
        "value": 0.04,
        "stableValue": 0.001,
        "query": "sum(x)",
    }
    assert pause.data["phase"] == "paused" and pause.data["origin"] == {"version": "v1", "image": ""}
    assert pause.data["by"] == {"user": "bob", "via": "cli", "channel": ""}


def test_to_cloudevent_output_that_breaks_the_schema_is_caught_by_validate() -> None:
    ce = catalog.to_cloudevent(Emitted(ev.RELEASE_PAUSED, {"phase": "paused"}), "shop/web", "web-3", "/g")

    with pytest.raises(Reject, match="data: '(target|origin)' is a required property"):
        catalog.validate(ce)


def test_to_cloudevent_refuses_types_outside_the_catalog() -> None:
    with pytest.raises(NotFound, match="dev.graylane.release.exploded"):
        catalog.to_cloudevent(Emitted("dev.graylane.release.exploded", {}), "shop/web", "web-3", "/g")
    with pytest.raises(NotFound, match=ev.RELEASE_COMMAND):
        catalog.to_cloudevent(Emitted(ev.RELEASE_COMMAND, {}), "shop/web", "web-3", "/g")


def test_make_event_builds_a_catalog_cloudevent() -> None:
    ce = catalog.make_event(
        ev.RELEASE_COMMAND,
        "shop/web",
        {"action": "pause", "actor": {"user": "bob", "via": "cli"}},
        id="cli-1",
        source="/graylane/cli",
        release="web-3",
    )
    sweep = catalog.make_event(ev.RELEASE_TICK, "", {})

    assert (ce["id"], ce["source"], ce["subject"], ce["graylanerelease"]) == (
        "cli-1",
        "/graylane/cli",
        "shop/web",
        "web-3",
    )
    assert ce["datacontenttype"] == "application/json" and ce["specversion"] == "1.0" and ce["time"]
    assert sweep.get("subject") is None and sweep["id"]  # the SDK fills in an id
    catalog.validate(ce)
    catalog.validate(sweep)
    assert catalog.to_domain(ce).action == "pause"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        catalog.make_event("dev.graylane.unknown", "shop/web", {})


@pytest.mark.parametrize("path", CONSUMED_FILES, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_from_domain_is_the_inverse_of_to_domain(path: Path) -> None:
    domain = catalog.to_domain(load(path))

    ce = catalog.from_domain(domain, source="/graylane/cli")

    catalog.validate(ce)
    assert catalog.to_domain(ce) == domain
    assert catalog.to_domain(over_http(json.loads(to_structured(ce)[1]), "binary")) == domain


# ---------------------------------------------------------------------------------------------- garbage in


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "app",
    "repository",
    "tag",
    "digest",
    "image",
    "source",
    "action",
    "weight",
    "params",
    "actor",
    "gate",
    "version",
    "reason",
    "fingerprint",
    "alertname",
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
]
GARBAGE_EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(ALL_TYPES) | JSON,
        "id": st.text(max_size=5) | JSON,
        "subject": st.sampled_from(["shop/web", ""]) | JSON,
        "data": JSON
        | st.binary(max_size=20)
        | st.text(max_size=20)
        | st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
        "data_base64": JSON,
    },
) | st.dictionaries(st.text(max_size=8), JSON, max_size=5)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=GARBAGE_EVENTS | JSON | st.binary(max_size=10))
def test_garbage_raises_only_reject(event: Any) -> None:
    try:
        catalog.to_domain(event)
    except Reject:
        pass


_DELETE = object()
_ALERT_PATHS = [
    "fingerprint",
    "alertname",
    "status",
    "labels",
    "labels.severity",
    "annotations",
    "annotations.summary",
    "startsAt",
    "endsAt",
    "generatorURL",
    "app",
    "extra",
]
FIELD_PATHS = {
    ev.IMAGE_PUSHED: ["app", "repository", "tag", "digest", "image", "source", "pushedAt", "pusher", "extra"],
    ev.RELEASE_TICK: ["app", "extra"],
    ev.RELEASE_COMMAND: [
        "action",
        "app",
        "gate",
        "weight",
        "params",
        "params.weight",
        "version",
        "reason",
        "actor",
        "actor.user",
        "actor.via",
        "actor.channel",
        "actor.extra",
        "extra",
    ],
    ev.ALERT_FIRING: _ALERT_PATHS,
    ev.ALERT_RESOLVED: _ALERT_PATHS,
}
VALUES = (
    st.just(_DELETE)
    | JSON
    | st.sampled_from(["shop/web", "v1.0", "approve", "weight", "firing", "slack", "sha256:" + "c" * 64])
    | st.integers(min_value=-2, max_value=300)  # around the weight bounds
    | st.text(alphabet="ab", min_size=100, max_size=300)  # around the length limits
)


def _set(event: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = event["data"]
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from([(p.parts[-3], p.stem) for p in CONSUMED_FILES]), draw=st.data())
def test_what_to_domain_accepts_the_schemas_accept(which: tuple[str, str], draw: st.DataObject) -> None:
    """The fast checks never let through an event the catalog's JSON Schema would refuse."""
    event = example(*which)
    for _ in range(draw.draw(st.integers(1, 3))):
        _set(event, draw.draw(st.sampled_from(FIELD_PATHS[which[0]])), draw.draw(VALUES))
    try:
        catalog.to_domain(event)
    except Reject:
        return
    catalog.validate(event)


def test_to_domain_does_not_import_jsonschema_or_cloudevents() -> None:
    event = json.dumps(example(ev.RELEASE_COMMAND, "approve-with-weight"))
    code = (
        "import json, sys\n"
        "from functions.catalog import to_domain\n"
        f"print(to_domain(json.loads({event!r})).action)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jsonschema', 'referencing', 'cloudevents'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout

    assert out.split("\n")[:2] == ["approve", "[]"]


def test_name_predicates_follow_the_catalog_patterns() -> None:
    from functions.catalog import is_app, is_digest, is_repository, is_tag

    assert is_app("pro/flask") and is_app("a/" + "b" * 315) and not is_app("a/" + "b" * 316)
    assert not is_app("Pro/flask") and not is_app("flask") and not is_app("pro/flask/x")
    assert is_repository("registry.example.com:5000/team/app") and not is_repository("Team/App")
    assert not is_repository("a" * 256)
    assert is_tag("v1.2.0") and is_tag("x" * 128) and not is_tag("x" * 129) and not is_tag("-v1")
    assert is_digest("sha256:" + "a" * 64) and not is_digest("sha256:" + "a" * 63)
