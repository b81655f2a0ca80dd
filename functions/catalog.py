"""The events/ catalog in code: CloudEvents <-> domain events, and JSON Schema validation.

`to_domain` runs on every function's cold-start path, so it imports only the standard library and
functions.core, and checks each field explicitly, mirroring events/<type>/schema.json (the tests hold the
two together). cloudevents is imported when a CloudEvent is built; jsonschema only by `validate`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.core import events as ev
from functions.core.events import Alert, Command, Emitted, Event, ImagePushed, Tick
from functions.core.state import Actor, Version
from functions.errors import NotFound, Reject

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

RELEASE_EXTENSION = "graylanerelease"  # correlation extension: the release id an event is about
CONTENT_TYPE = "application/json"
DEFAULT_SOURCE = "/graylane/local"

# Emitted types whose data carries the release id (and whose CloudEvent carries the extension).
_RELEASE_TYPES = tuple(t for t in ev.EMITTED if t.startswith(f"{ev.PREFIX}.release."))
RELEASE_SCOPED = frozenset((*_RELEASE_TYPES, ev.ANALYSIS_VERDICT))

REGISTRY_SOURCES = (
    "dockerhub",
    "harbor",
    "ghcr",
    "gitlab",
    "distribution",
    "quay",
    "tcr",
    "coding",
    "acr",
    "ecr",
    "gar",
    "azure",
    "jfrog",
    "generic",
)
COMMAND_VIA = ("cli", "api", "console", "slack", "dingtalk", "feishu", "wecom", "teams", "system")

# The same expressions as events/_defs.json and the image.pushed schema, without anchors (we fullmatch).
# Strings, not compiled patterns: re compiles (and caches) each on first use, so a function only pays
# for the ones its events need (cold start).
_APP = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
# The registry host may be a name, an IPv4 address or a bracketed IPv6 address ([::1]:5000/team/app).
_REPOSITORY = (
    r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\])(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}"
_RELEASE = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?-[0-9]+"  # "<app name>-<n>", as events/_defs.json releaseId


def is_app(text: str) -> bool:
    """`namespace/name` with Kubernetes names (what every subject and app field must be)."""
    return len(text) <= 317 and re.fullmatch(_APP, text) is not None


def is_repository(text: str) -> bool:
    return len(text) <= 255 and re.fullmatch(_REPOSITORY, text) is not None


def is_tag(text: str) -> bool:
    return re.fullmatch(_TAG, text) is not None


def is_release(text: str) -> bool:
    """A release id `<app name>-<n>` such as web-3."""
    return len(text) <= 280 and re.fullmatch(_RELEASE, text) is not None


def is_digest(text: str) -> bool:
    return re.fullmatch(_DIGEST, text) is not None


APP_EXPECTED = "namespace/name (lowercase Kubernetes names)"


class _Invalid(Exception):
    """One bad field; to_domain turns it into a Reject that also names the event."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _not_allowed(path: str, value: Any, expected: str) -> _Invalid:
    return _Invalid(f"{path}: {_show(value)} is not allowed; expected {expected}")


def _missing(path: str, expected: str) -> _Invalid:
    return _Invalid(f"{path}: is required; expected {expected}")


# ---------------------------------------------------------------------------------------------- field readers


def _only(data: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            shown = key if len(key) <= 60 else key[:57] + "..."
            raise _Invalid(f"{path}.{shown}: unknown field; expected one of {', '.join(allowed)}")


def _text(
    data: Mapping[str, Any],
    key: str,
    path: str,
    *,
    required: bool = False,
    min_len: int = 0,
    max_len: int = 2048,
    pattern: str | None = None,
    expected: str = "",
) -> str:
    expected = expected or f"a string of {min_len}..{max_len} characters"
    where = f"{path}.{key}"
    if key not in data:
        if required:
            raise _missing(where, expected)
        return ""
    value = data[key]
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise _not_allowed(where, value, expected)
    if pattern is not None and not re.fullmatch(pattern, value):
        raise _not_allowed(where, value, expected)
    return value


def _choice(data: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...], *, required: bool) -> str:
    expected = "one of " + ", ".join(choices)
    where = f"{path}.{key}"
    if key not in data:
        if required:
            raise _missing(where, expected)
        return ""
    value = data[key]
    if not isinstance(value, str) or value not in choices:
        raise _not_allowed(where, value, expected)
    return value


def _as_int(value: Any) -> int | None:
    """JSON integers; 50.0 counts too, as in JSON Schema. Booleans do not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _integer(data: Mapping[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
    if key not in data:
        return None
    value = data[key]
    number = _as_int(value)
    if number is None or not lo <= number <= hi:
        raise _not_allowed(f"{path}.{key}", value, f"an integer {lo}..{hi}")
    return number


def _object(data: Mapping[str, Any], key: str, path: str, *, required: bool) -> dict[str, Any] | None:
    where = f"{path}.{key}"
    if key not in data:
        if required:
            raise _missing(where, "an object")
        return None
    value = data[key]
    if not isinstance(value, dict):
        raise _not_allowed(where, value, "an object")
    return value


def _str_map(data: Mapping[str, Any], key: str, path: str, *, required: bool) -> dict[str, str]:
    obj = _object(data, key, path, required=required) or {}
    for name, value in obj.items():
        if not isinstance(value, str):
            raise _not_allowed(f"{path}.{key}.{name}", value, "a string")
    return dict(obj)


def _int_map(data: Mapping[str, Any], key: str, path: str) -> dict[str, int]:
    obj = _object(data, key, path, required=False) or {}
    out: dict[str, int] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise _not_allowed(f"{path}.{key}", name, "parameter names of 1..64 characters")
        number = _as_int(value)
        if number is None:
            raise _not_allowed(f"{path}.{key}.{name}", value, "an integer")
        out[name] = number
    return out


def _time(data: Mapping[str, Any], key: str, path: str, *, required: bool) -> str:
    expected = "an RFC 3339 time such as 2025-06-03T09:15:00Z"
    value = _text(data, key, path, required=required, max_len=64, pattern=_TIME, expected=expected)
    if value:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _not_allowed(f"{path}.{key}", value, expected) from None
    return value


def _app(data: Mapping[str, Any], subject: str, *, required: bool) -> str:
    """The app named by the subject and/or data.app; the two must agree."""
    named = _text(data, "app", "data", max_len=317, pattern=_APP, expected=APP_EXPECTED)
    if named and subject and named != subject:
        raise _not_allowed("data.app", named, f"the subject {subject!r}")
    app = subject or named
    if required and not app:
        raise _missing("subject", f"{APP_EXPECTED} in the subject or in data.app")
    return app


# ---------------------------------------------------------------------------------------------- parsers


def _image_pushed(event_id: str, subject: str, data: Mapping[str, Any]) -> ImagePushed:
    _only(data, ("app", "repository", "tag", "digest", "image", "source", "pushedAt", "pusher"), "data")
    app = _app(data, subject, required=False)  # empty: the runner finds the policy by repository+tag
    repository = _text(
        data,
        "repository",
        "data",
        required=True,
        min_len=1,
        max_len=255,
        pattern=_REPOSITORY,
        expected="an image repository such as docker.io/acme/web",
    )
    digest = _text(data, "digest", "data", max_len=200, pattern=_DIGEST, expected="sha256:<64 hex digits>")
    # a push by digest only has no tag: the release is of the digest, and its version says so
    tag = _text(
        data,
        "tag",
        "data",
        required=not digest,
        max_len=128,
        pattern=_TAG,
        expected="an image tag such as v1.2.0 (or, for a push by digest only, no tag and a digest)",
    )
    image = _text(data, "image", "data", min_len=1, max_len=512)
    source = _choice(data, "source", "data", REGISTRY_SOURCES, required=True)
    _time(data, "pushedAt", "data", required=False)
    _text(data, "pusher", "data", max_len=256)
    pinned = image or (f"{repository}@{digest}" if digest else f"{repository}:{tag}")
    return ImagePushed(
        id=event_id,
        app=app,
        target=Version(version=tag or digest, image=pinned),
        repository=repository,
        tag=tag,
        digest=digest,
        source=source,
    )


def _tick(event_id: str, subject: str, data: Mapping[str, Any]) -> Tick:
    _only(data, ("app",), "data")
    return Tick(id=event_id, app=_app(data, subject, required=False))


def _actor(data: Mapping[str, Any]) -> Actor:
    obj = _object(data, "actor", "data", required=True) or {}
    _only(obj, ("user", "via", "channel"), "data.actor")
    return Actor(
        user=_text(obj, "user", "data.actor", required=True, min_len=1, max_len=256),
        via=_choice(obj, "via", "data.actor", COMMAND_VIA, required=True),
        channel=_text(obj, "channel", "data.actor", max_len=256),
    )


def _command(event_id: str, subject: str, data: Mapping[str, Any]) -> Command:
    _only(
        data, ("action", "app", "gate", "weight", "params", "version", "reason", "actor", "release"), "data"
    )
    action = _choice(data, "action", "data", ev.MUTATING_ACTIONS, required=True)
    app = _app(data, subject, required=True)
    weight = _integer(data, "weight", "data", 0, 100)
    if action == "weight" and weight is None:
        raise _missing("data.weight", "an integer 0..100 for action weight")
    return Command(
        id=event_id,
        app=app,
        action=action,
        actor=_actor(data),
        gate=_text(data, "gate", "data", min_len=1, max_len=128),
        weight=weight,
        params=_int_map(data, "params", "data"),
        version=_text(
            data,
            "version",
            "data",
            max_len=200,
            pattern=f"{_TAG}|{_DIGEST}",
            expected="a version tag such as v1.2.0, or the digest of a release by digest",
        ),
        reason=_text(data, "reason", "data"),
        release=_text(
            data,
            "release",
            "data",
            max_len=280,
            pattern=_RELEASE,
            expected="a release id such as web-3 (the app name, a dash, its number)",
        ),
    )


def _release_of(attrs: Mapping[str, Any], event: Event) -> Event:
    """A command's release is data.release; the correlation extension, when set, must agree (and names the
    release of a command published before commands carried it in data)."""
    if not isinstance(event, Command):
        return event
    extension = attrs.get(RELEASE_EXTENSION)
    if extension in (None, ""):
        return event
    if not isinstance(extension, str) or re.fullmatch(_RELEASE, extension) is None:
        raise _not_allowed(RELEASE_EXTENSION, extension, "a release id such as web-3")
    if event.release and extension != event.release:
        raise _not_allowed(
            RELEASE_EXTENSION, extension, f"the release named by data.release ({event.release!r})"
        )
    return dataclasses.replace(event, release=extension)


_ALERT_FIELDS = (
    "fingerprint",
    "alertname",
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "app",
)


def _alert(firing: bool) -> Callable[[str, str, Mapping[str, Any]], Alert]:
    status = "firing" if firing else "resolved"

    def parse(event_id: str, subject: str, data: Mapping[str, Any]) -> Alert:
        _only(data, _ALERT_FIELDS, "data")
        if "status" not in data:
            raise _missing("data.status", repr(status))
        if data["status"] != status:
            raise _not_allowed(
                "data.status",
                data["status"],
                f"{status!r} for {ev.ALERT_FIRING if firing else ev.ALERT_RESOLVED}",
            )
        fingerprint = _text(data, "fingerprint", "data", required=True, min_len=1, max_len=128)
        alertname = _text(data, "alertname", "data", required=True, min_len=1, max_len=256)
        labels = _str_map(data, "labels", "data", required=True)
        _str_map(data, "annotations", "data", required=True)
        starts_at = _time(data, "startsAt", "data", required=True)
        _time(data, "endsAt", "data", required=False)
        _text(data, "generatorURL", "data")
        return Alert(
            id=event_id,
            app=_app(data, subject, required=True),
            fingerprint=fingerprint,
            firing=firing,
            alertname=alertname,
            labels=labels,
            starts_at=starts_at,
            type=ev.ALERT_FIRING if firing else ev.ALERT_RESOLVED,
        )

    return parse


_PARSERS: dict[str, Callable[[str, str, Mapping[str, Any]], Event]] = {
    ev.IMAGE_PUSHED: _image_pushed,
    ev.RELEASE_TICK: _tick,
    ev.KNATIVE_PING: lambda event_id, subject, data: Tick(id=event_id),  # any payload: a sweep
    ev.RELEASE_COMMAND: _command,
    ev.ALERT_FIRING: _alert(firing=True),
    ev.ALERT_RESOLVED: _alert(firing=False),
}


# ---------------------------------------------------------------------------------------------- envelope


def _split(ce: Any) -> tuple[Mapping[str, Any], Any]:
    """(attributes, data) of a cloudevents CloudEvent or of a structured-mode dict."""
    if isinstance(ce, Mapping):
        if "data" in ce:
            return ce, ce["data"]
        if "data_base64" in ce:
            encoded = ce["data_base64"]
            try:
                return ce, base64.b64decode(encoded, validate=True)
            except (TypeError, ValueError, binascii.Error):
                raise _not_allowed("data_base64", encoded, "base64 text") from None
        return ce, None
    get_attributes = getattr(ce, "get_attributes", None)
    if callable(get_attributes):
        return get_attributes(), getattr(ce, "data", None)
    raise _not_allowed("event", ce, "a CloudEvent or a mapping of its attributes")


def _attribute(attrs: Mapping[str, Any], name: str) -> str:
    expected = "a string of 1..256 characters"
    if name not in attrs:
        raise _missing(name, expected)
    value = attrs[name]
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise _not_allowed(name, value, expected)
    return value


def _subject(attrs: Mapping[str, Any]) -> str:
    subject = attrs.get("subject")
    if subject is None or subject == "":
        return ""
    if not isinstance(subject, str) or not is_app(subject):
        raise _not_allowed("subject", subject, APP_EXPECTED)
    return subject


def _data(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, bytes | bytearray | str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise _not_allowed("data", raw, "a JSON object") from None
    if not isinstance(raw, dict):
        raise _not_allowed("data", raw, "a JSON object")
    return raw


def to_domain(ce: Any) -> Event:
    """The domain event a consumed CloudEvent stands for; Reject names the first bad field."""
    try:
        attrs, raw = _split(ce)
        event_type = _attribute(attrs, "type")
        event_id = _attribute(attrs, "id")
    except _Invalid as err:
        raise Reject(f"cannot read CloudEvent: {err}") from None
    try:
        parse = _PARSERS.get(event_type)
        if parse is None:
            if event_type in ev.EMITTED:
                raise _Invalid(f"type: {event_type} is emitted by graylane, not consumed")
            raise _not_allowed("type", event_type, "a consumed type: " + ", ".join(ev.CONSUMED))
        subject = _subject(attrs)
        return _release_of(attrs, parse(event_id, subject, _data(raw)))
    except _Invalid as err:
        named = attrs.get("subject")
        about = f" about {named}" if isinstance(named, str) and 0 < len(named) <= 317 else ""
        raise Reject(f"rejected {event_type} event {event_id!r}{about}: {err}") from None


# ---------------------------------------------------------------------------------------------- building events


def _unknown(type: str) -> NotFound:
    return NotFound(
        f"event type {type!r} is not in the catalog; known: {', '.join(ev.CONSUMED + ev.EMITTED)}"
    )


def _cloudevent(attrs: dict[str, Any], data: dict[str, Any]) -> CloudEvent:
    from cloudevents.http import CloudEvent  # lazy: callers that only parse never pay for it

    return CloudEvent(attrs, data)


def make_event(
    type: str,
    subject: str,
    data: Mapping[str, Any],
    id: str | None = None,
    source: str = DEFAULT_SOURCE,
    release: str | None = None,
    time: str | None = None,
) -> CloudEvent:
    """A catalog CloudEvent (id and time are filled in when not given). Does not validate `data`."""
    if type not in ev.CONSUMED and type not in ev.EMITTED:
        raise _unknown(type)
    attrs: dict[str, Any] = {"type": type, "source": source, "datacontenttype": CONTENT_TYPE}
    if subject:
        attrs["subject"] = subject
    if id:
        attrs["id"] = id
    if time:
        attrs["time"] = time
    if release:
        attrs[RELEASE_EXTENSION] = release
    return _cloudevent(attrs, dict(data))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_json_value(value: Any) -> Any:
    """Catalog JSON for a value: dataclasses by camelCase field (None fields left out), enums by value.

    Dict keys are kept as they are: they are names (params, labels) or already catalog fields.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            _camel(f.name): to_json_value(v)
            for f in dataclasses.fields(value)
            if (v := getattr(value, f.name)) is not None
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return value


def to_cloudevent(
    emitted: Emitted,
    app: str,
    release_id: str,
    source: str,
    id: str | None = None,
    time: str | None = None,
) -> CloudEvent:
    """Wrap an event decide() emitted. Pass a deterministic `id` so a re-emission is recognised downstream.

    data gets `app` (and `release` for release-scoped types) when decide() left them out.
    """
    if emitted.type not in ev.EMITTED:
        raise NotFound(
            f"emitted event type {emitted.type!r} is not in the catalog; known: {', '.join(ev.EMITTED)}"
        )
    data: dict[str, Any] = to_json_value(dict(emitted.data))
    data.setdefault("app", app)
    if release_id and emitted.type in RELEASE_SCOPED:
        data.setdefault("release", release_id)
    return make_event(emitted.type, app, data, id=id, source=source, release=release_id or None, time=time)


def from_domain(event: Event, source: str = DEFAULT_SOURCE, release: str | None = None) -> CloudEvent:
    """The CloudEvent for a consumed domain event: the inverse of `to_domain` (CLI, gateway, tests)."""
    data: dict[str, Any]
    if isinstance(event, ImagePushed):
        data = {"repository": event.repository, "source": event.source or "generic"}
        if event.tag:
            data["tag"] = event.tag
        if event.digest:
            data["digest"] = event.digest
        if event.target.image:
            data["image"] = event.target.image
    elif isinstance(event, Tick):
        data = {}
    elif isinstance(event, Command):
        data = {"action": event.action, "actor": to_json_value(event.actor)}
        if not event.actor.channel:
            data["actor"].pop("channel", None)
        extras = {
            "gate": event.gate,
            "weight": event.weight,
            "params": event.params,
            "version": event.version,
            "reason": event.reason,
            "release": event.release,
        }
        data.update({k: v for k, v in extras.items() if v not in ("", None, {})})
        release = event.release or release
    elif isinstance(event, Alert):
        data = {
            "fingerprint": event.fingerprint,
            "alertname": event.alertname,
            "status": "firing" if event.firing else "resolved",
            "labels": dict(event.labels),
            "annotations": {},
            "startsAt": event.starts_at,
        }
    else:  # an EffectFailure: the runner's own, never a CloudEvent
        raise TypeError(f"{type(event).__name__} is not a consumed event")
    return make_event(event.type, event.app, data, id=event.id, source=source, release=release)


# ---------------------------------------------------------------------------------------------- JSON Schemas


def catalog_dir() -> Path:
    configured = os.environ.get("GRAYLANE_EVENTS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "events"


@cache
def _load(path: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise NotFound(f"catalog file {path} does not exist") from err
    return document


def schema_for(type: str) -> dict[str, Any]:
    """The JSON Schema of `data` for a catalog type (events/<type>/schema.json)."""
    if type not in ev.CONSUMED and type not in ev.EMITTED:
        raise _unknown(type)
    return _load(catalog_dir() / type / "schema.json")


def examples_for(type: str) -> dict[str, dict[str, Any]]:
    """Example CloudEvents (structured JSON) of a catalog type, by file stem."""
    folder = catalog_dir() / type / "examples"
    return {p.stem: _load(p) for p in sorted(folder.glob("*.json"))}


@cache
def _validators(root: Path) -> tuple[Any, Callable[[dict[str, Any]], Any]]:
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    paths = [root / "_defs.json", root / "_envelope.json", *sorted(root.glob("*/schema.json"))]
    resources = [(s["$id"], Resource.from_contents(s)) for s in (_load(p) for p in paths)]
    registry: Registry[Any] = Registry().with_resources(resources)
    checker = FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:  # the same calendar check as to_domain (no extra dependency)
        if isinstance(value, str):
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    def make(schema: dict[str, Any]) -> Any:
        return Draft202012Validator(schema, registry=registry, format_checker=checker)

    return make(_load(root / "_envelope.json")), make


def _structured(ce: Any) -> dict[str, Any]:
    if isinstance(ce, Mapping):
        return dict(ce)
    attrs, data = _split(ce)
    return {**attrs, "data": data}


def validate(ce: Any) -> None:
    """Check a CloudEvent (or its structured JSON dict) against the catalog; Reject names the first problem.

    Debug and test path: imports jsonschema. The envelope is checked against events/_envelope.json, the
    data against events/<type>/schema.json.
    """
    from jsonschema.exceptions import best_match

    event = _structured(ce)
    envelope, make = _validators(catalog_dir().resolve())
    what = f"{event.get('type')} event {event.get('id')!r}"
    error = best_match(envelope.iter_errors(event))
    if error is None:
        error = best_match(make(schema_for(event["type"])).iter_errors(event["data"]))
        where = ".".join(["data", *(str(p) for p in error.absolute_path)]) if error else ""
    else:
        where = ".".join(str(p) for p in error.absolute_path) or "event"
    if error is not None:
        raise Reject(f"{what} does not match the catalog: {where}: {error.message}") from error
