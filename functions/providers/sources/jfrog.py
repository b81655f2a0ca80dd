"""JFrog Artifactory webhooks, domain `docker`, event `pushed` ("Docker tag was pushed",
https://jfrog.com/help/r/jfrog-platform-administration-documentation/domain-docker).

The body is the JFrog event envelope `{domain, event_type, data, subscription_key, jpd_origin, source}`;
`data` holds `repo_key`, `image_name`, `tag` and `sha256` (the manifest's digest). The image is pulled as
`<jpd_origin host>/<repo_key>/<image_name>` (Artifactory's repository-path access method), so a policy's
`image.repository` names it that way, e.g. `acme.jfrog.io/docker-local/team/web`. Other domains and
event types (deleted, promoted, artifact events) are acknowledged and ignored.

Authentication (https://jfrog.com/help/r/jfrog-platform-administration-documentation/webhooks): the
webhook's "Secret token" arrives in the `X-JFrog-Event-Auth` header, either verbatim, or, with "Use secret
for payload signing", as the hex HMAC-SHA256 of the raw body keyed by it (the token itself then never
travels). Configure the first as GRAYLANE_HOOK_TOKEN_JFROG and the second as GRAYLANE_HOOK_SECRET_JFROG;
with both set either is accepted. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar
from urllib.parse import urlsplit

from functions.providers.sources.base import (
    Credentials,
    Headers,
    JsonSource,
    Malformed,
    Parsed,
    Push,
    Unauthenticated,
    check_token,
    digest_or_empty,
    get_obj,
    get_str,
    repository_name,
    require_configured,
)

AUTH_HEADER = "x-jfrog-event-auth"


def signature(secret: str, body: bytes) -> str:
    """What Artifactory sends in X-JFrog-Event-Auth when the secret signs the payload."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class JFrogSource(JsonSource):
    name: ClassVar[str] = "jfrog"
    token_headers: ClassVar[tuple[str, ...]] = (AUTH_HEADER,)

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        require_configured(self.name, credentials)
        presented = headers.get(AUTH_HEADER, "").strip().lower().removeprefix("sha256=")
        if credentials.secret and presented:
            expected = signature(credentials.secret, body)
            if hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode()):
                return
        if credentials.token:
            check_token(self.name, headers, credentials, *self.token_headers)
            return
        raise Unauthenticated(
            f"webhook source {self.name}: X-JFrog-Event-Auth is missing or is not the HMAC-SHA256 of "
            "the body; tick 'Use secret for payload signing' on the webhook, or configure its "
            "secret token as GRAYLANE_HOOK_TOKEN_JFROG instead"
        )

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        domain = get_str(self.name, data, "domain", "body")
        event_type = get_str(self.name, data, "event_type", "body")
        if (domain, event_type) != ("docker", "pushed"):
            return []
        event = get_obj(self.name, data, "data", "body")
        origin = get_str(self.name, data, "jpd_origin", "body")
        host = _host(origin)
        if not host:
            raise Malformed(
                f"webhook source {self.name}: body.jpd_origin {origin[:80]!r} is not a URL such as "
                "https://acme.jfrog.io"
            )
        repo_key = get_str(self.name, event, "repo_key", "body.data")
        image = get_str(self.name, event, "image_name", "body.data")
        sha = get_str(self.name, event, "sha256", "body.data", required=False)
        pusher = get_str(self.name, data, "source", "body", required=False).removeprefix("jfrog/")
        return [
            Push(
                repository=repository_name(host, f"{repo_key}/{image}"),
                tag=get_str(self.name, event, "tag", "body.data", required=False),
                digest=digest_or_empty(f"sha256:{sha}") if sha else "",
                pusher=pusher,
            )
        ]


def _host(origin: str) -> str:
    """host[:port] of the platform URL (the Docker registry of the repository-path method)."""
    try:
        parts = urlsplit(origin if "://" in origin else f"https://{origin}")
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return ""
    return f"{host}:{port}" if host and port else host
