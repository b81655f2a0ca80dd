"""Webhook source interface: authenticate a delivery over its raw bytes, then parse it into pushes or alerts.

A source never publishes and never touches state; the gateway decides what a parsed delivery becomes.
Helpers here are shared by the vendor modules: `JsonSource` (the class every vendor source extends: token
authentication by default, the body read as a JSON object), JSON reading that names the bad field, token
and HMAC checks that compare with `hmac.compare_digest`, image reference and time normalisation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

from functions import catalog
from functions.core.values import value
from functions.errors import GraylaneError

Headers = Mapping[str, str]  # lower-case names


class Unauthenticated(GraylaneError):
    """No credential, or a wrong one (HTTP 401)."""


class Forbidden(GraylaneError):
    """A valid credential that may not do this (HTTP 403)."""


class Malformed(GraylaneError):
    """The body cannot be read as the vendor's format (HTTP 400 for bad JSON, 422 for a bad field)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@value
class Credentials:
    """What a source was configured with; empty everywhere means the source refuses everything."""

    token: str = ""  # shared token (header or URL path)
    secret: str = ""  # HMAC key (GitHub, CODING)
    user: str = ""  # basic auth (Alertmanager, Azure custom header)
    password: str = ""
    repositories: tuple[str, ...] = ()  # repository prefixes this source may announce; empty: any

    @property
    def configured(self) -> bool:
        return bool(self.token or self.secret or (self.user and self.password))


@value
class Push:
    """One tag (or digest) written to a registry, as the vendor reported it."""

    repository: str  # registry host + path, lower case: ghcr.io/acme/web
    tag: str  # empty when pushed by digest only
    digest: str = ""  # sha256:<64 hex>, empty when unknown or not a manifest digest
    pusher: str = ""
    pushed_at: str = ""  # RFC 3339, empty when unknown
    delivery: str = ""  # vendor delivery id, when the vendor gives one
    problem: str = (
        ""  # why this entry of a delivery could not be read; the gateway ignores it with the reason
    )


@value
class AlertNotice:
    """One alert of an Alertmanager group."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = ""


Parsed = list[Push] | list[AlertNotice]


class Source(Protocol):
    name: ClassVar[str]  # route name and catalog `source` value
    kind: ClassVar[Literal["push", "alert"]]

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        """Raise Unauthenticated or Forbidden; return when the delivery is genuine."""

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        """The pushes (or alerts) of a delivery; [] when it holds none (a delete, a pull, a ping).

        Raise Malformed naming the field.
        """


class JsonSource(ABC):
    """What the vendor sources share: a shared token (also from `token_headers`) and a JSON object body.

    A vendor module sets `name` (and `token_headers`, or overrides `authenticate` for a signature scheme) and
    maps the parsed body in `read`.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["push", "alert"]] = "push"
    token_headers: ClassVar[tuple[str, ...]] = ()  # vendor headers that may carry the token

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        check_token(self.name, headers, credentials, *self.token_headers)

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        return self.read(headers, json_object(self.name, body))

    @abstractmethod
    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        """The pushes (or alerts) of a body already known to be a JSON object."""


# ---------------------------------------------------------------------------------------------- auth helpers

PATH_TOKEN_HEADER = (
    "x-graylane-path-token"  # set by the gateway from /hooks/{source}/{token}; never from clients
)
TOKEN_HEADER = "x-graylane-token"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def presented_tokens(headers: Headers, *extra: str) -> list[str]:
    """Every token-like value a sender may have used: Authorization (Bearer or raw), our header, the path."""
    found: list[str] = []
    auth = headers.get("authorization", "").strip()
    if auth:
        scheme, _, rest = auth.partition(" ")
        found.append(rest.strip() if scheme.lower() == "bearer" and rest else auth)
    for name in (TOKEN_HEADER, PATH_TOKEN_HEADER, *extra):
        value = headers.get(name, "").strip()
        if value:
            found.append(value)
    return found


def require_configured(source: str, credentials: Credentials) -> None:
    if not credentials.configured:
        raise Unauthenticated(
            f"webhook source {source} has no credential configured; it refuses every delivery"
        )


def check_token(source: str, headers: Headers, credentials: Credentials, *extra_headers: str) -> None:
    """Accept the configured token from Authorization, X-Graylane-Token, the URL path or `extra_headers`."""
    require_configured(source, credentials)
    if not credentials.token:
        raise Unauthenticated(f"webhook source {source} accepts a token but none is configured")
    tokens = presented_tokens(headers, *extra_headers)
    if not tokens:
        raise Unauthenticated(
            f"webhook source {source}: no token presented (Authorization header or /hooks/{source}/TOKEN)"
        )
    # check every candidate (no early exit) so timing does not reveal which one matched
    matched = [_same(t, credentials.token) for t in tokens]
    if not any(matched):
        raise Unauthenticated(f"webhook source {source}: the token is not valid")


def check_basic(source: str, headers: Headers, credentials: Credentials) -> bool:
    """True when basic auth matches; False when none was presented; raise when wrong."""
    auth = headers.get("authorization", "")
    scheme, _, encoded = auth.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        raise Unauthenticated(
            f"webhook source {source}: the Basic credentials are not base64 user:password"
        ) from None
    ok_user = _same(user, credentials.user)
    ok_password = _same(password, credentials.password)
    if not (sep and credentials.user and credentials.password and ok_user and ok_password):
        raise Unauthenticated(f"webhook source {source}: the user or password is not valid")
    return True


def check_hmac(source: str, header: str, signature: str, body: bytes, secret: str, algorithm: str) -> None:
    """Verify `<algorithm>=<hex>` (GitHub X-Hub-Signature-256, CODING X-Coding-Signature) over the raw body."""
    if not secret:
        raise Unauthenticated(f"webhook source {source} verifies {header} but no secret is configured")
    if not signature:
        raise Unauthenticated(f"webhook source {source}: the {header} header is missing")
    prefix = f"{algorithm}="
    expected = prefix + hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()
    if not _same(signature.strip().lower(), expected):
        raise Unauthenticated(f"webhook source {source}: the {header} signature does not match the body")


# ---------------------------------------------------------------------------------------------- body helpers


def load_json(source: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise Malformed(f"webhook source {source}: the body is nested too deeply", 400) from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise Malformed(f"webhook source {source}: the body is not JSON: {err}", 400) from None


def obj(source: str, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"webhook source {source}: {path} must be an object, got {type(value).__name__}")
    return value


def json_object(source: str, body: bytes) -> dict[str, Any]:
    """The body as a JSON object: 400 when it is not JSON, 422 when it is JSON of another type."""
    return obj(source, load_json(source, body), "body")


def each_obj(
    source: str, data: Mapping[str, Any], key: str, path: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) for each element of the required list data[key], each checked only when reached."""
    for i, item in enumerate(get_list(source, data, key, path)):
        where = f"{path}.{key}[{i}]"
        yield where, obj(source, item, where)


def get_obj(
    source: str, data: Mapping[str, Any], key: str, path: str, *, required: bool = True
) -> dict[str, Any]:
    if key not in data or data[key] is None:
        if required:
            raise Malformed(f"webhook source {source}: {path}.{key} is required")
        return {}
    return obj(source, data[key], f"{path}.{key}")


def get_list(
    source: str, data: Mapping[str, Any], key: str, path: str, *, required: bool = True
) -> list[Any]:
    if key not in data or data[key] is None:
        if required:
            raise Malformed(f"webhook source {source}: {path}.{key} is required")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise Malformed(f"webhook source {source}: {path}.{key} must be a list, got {type(value).__name__}")
    return value


def get_str(source: str, data: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str:
    if key not in data or data[key] is None:
        if required:
            raise Malformed(f"webhook source {source}: {path}.{key} is required")
        return ""
    value = data[key]
    if not isinstance(value, str):
        raise Malformed(f"webhook source {source}: {path}.{key} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise Malformed(f"webhook source {source}: {path}.{key} must not be empty")
    return value.strip()


def digest_or_empty(value: str) -> str:
    """A manifest digest we can pin to; anything else (shortened doc examples, image ids) is dropped."""
    value = value.strip().lower()
    return value if catalog.is_digest(value) else ""


def repository_name(host: str, path: str) -> str:
    """host/path in lower case without scheme or slashes at the ends (registries are case-insensitive here)."""
    host = host.strip().lower().removeprefix("https://").removeprefix("http://").strip("/")
    path = path.strip().lower().strip("/")
    return f"{host}/{path}" if host else path


def split_reference(ref: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of `host/path[:tag][@digest]`; the port colon is not a tag separator."""
    ref = ref.strip().removeprefix("https://").removeprefix("http://")
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name.lower().strip("/"), tag, digest


def epoch_to_rfc3339(value: Any) -> str:
    """RFC 3339 UTC for a Unix timestamp; '' for anything that is not a plausible number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 32503680000:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def rfc3339_or_empty(value: Any) -> str:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return ""
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return value


# ---------------------------------------------------------------------------------------------- shared shapes

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)  # blob and layer events are not image pushes


def harbor_style_pushes(
    source: str, event_data: Mapping[str, Any], path: str, pusher: str, pushed_at: str, delivery: str
) -> list[Push]:
    """Harbor's `event_data` (also TCR Enterprise, which runs Harbor): resources[] of one repository."""
    repo = get_obj(source, event_data, "repository", path)
    full_name = get_str(source, repo, "repo_full_name", f"{path}.repository")
    pushes = []
    for where, resource in each_obj(source, event_data, "resources", path):
        url = get_str(source, resource, "resource_url", where, required=False)
        host = split_reference(url)[0].split("/", 1)[0] if "/" in url else ""
        digest = get_str(source, resource, "digest", where, required=False)
        tag = get_str(source, resource, "tag", where, required=False)
        pushes.append(
            Push(
                repository=repository_name(host, full_name),
                tag=""
                if tag.startswith("sha256:")
                else tag,  # Harbor repeats the digest as tag for digest pushes
                digest=digest_or_empty(digest),
                pusher=pusher,
                pushed_at=pushed_at,
                delivery=delivery,
            )
        )
    return pushes


def distribution_pushes(source: str, data: Mapping[str, Any]) -> list[Push]:
    """The manifest pushes of a CNCF Distribution envelope `{"events": [...]}` (Distribution, GitLab's registry).

    The envelope must be the vendor's shape (else Malformed: a 4xx). One event in it that cannot be read
    becomes a Push carrying the `problem`, which the gateway answers as ignored: Distribution retries a
    rejected envelope forever, one at a time, so one odd event must not block every later notification.
    """
    pushes: list[Push] = []
    for i, event in enumerate(get_list(source, data, "events", "body")):
        where = f"body.events[{i}]"
        try:
            push = distribution_push(source, obj(source, event, where), where)
        except Malformed as err:
            pushes.append(
                Push(repository="", tag="", problem=str(err).removeprefix(f"webhook source {source}: "))
            )
            continue
        if push is not None:
            pushes.append(push)
    return pushes


def distribution_push(source: str, event: Mapping[str, Any], path: str) -> Push | None:
    """One CNCF Distribution notification event (Distribution, GitLab registry, Azure ACR); None unless a
    manifest push. A manifest pushed by digest only has no `target.tag`: the Push has tag ''."""
    if get_str(source, event, "action", path, required=False) != "push":
        return None
    target = get_obj(source, event, "target", path)
    media_type = get_str(source, target, "mediaType", f"{path}.target", required=False)
    if media_type and media_type not in MANIFEST_TYPES:
        return None
    request = get_obj(source, event, "request", path, required=False)
    actor = get_obj(source, event, "actor", path, required=False)
    return Push(
        repository=repository_name(
            get_str(source, request, "host", f"{path}.request", required=False),
            get_str(source, target, "repository", f"{path}.target"),
        ),
        tag=get_str(source, target, "tag", f"{path}.target", required=False),
        digest=digest_or_empty(get_str(source, target, "digest", f"{path}.target", required=False)),
        pusher=get_str(source, actor, "name", f"{path}.actor", required=False),
        pushed_at=rfc3339_or_empty(event.get("timestamp")),
        delivery=get_str(source, event, "id", path, required=False),
    )
