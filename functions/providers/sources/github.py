"""GitHub Packages / GHCR: the `package` and `registry_package` webhook events with action `published`
(payload examples: octokit/webhooks payload-examples/api.github.com/registry_package/).

Deliveries are signed: X-Hub-Signature-256 = "sha256=" + HMAC-SHA256(secret, raw body)
(https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries). An untagged version
(`container_metadata.tag.name` empty) is a push by digest: its digest is `package_version.name`.

Sender: GitHub does not retry a failed delivery (any answer but 2xx, or no answer within 10 s); it is
listed under "Recent Deliveries" for a manual redelivery.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Credentials,
    Headers,
    JsonSource,
    Parsed,
    Push,
    check_hmac,
    digest_or_empty,
    get_obj,
    get_str,
    repository_name,
    require_configured,
    rfc3339_or_empty,
    split_reference,
)

_EVENTS = ("package", "registry_package")


class GitHubSource(JsonSource):
    name: ClassVar[str] = "ghcr"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        require_configured(self.name, credentials)
        check_hmac(
            self.name,
            "X-Hub-Signature-256",
            headers.get("x-hub-signature-256", ""),
            body,
            credentials.secret,
            "sha256",
        )

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        event = headers.get("x-github-event", "")
        key = event if event in _EVENTS else next((k for k in _EVENTS if k in data), "")
        if not key or data.get("action") not in ("published", "updated"):
            return []  # ping, other events, deletions
        package = get_obj(self.name, data, key, "body")
        if str(package.get("package_type", "")).lower() not in ("container", "docker") and str(
            package.get("ecosystem", "")
        ).lower() not in ("container", "docker"):
            return []  # npm, maven, ... packages are not images
        where = f"body.{key}.package_version"
        version = get_obj(self.name, package, "package_version", f"body.{key}")
        meta = get_obj(self.name, version, "container_metadata", where, required=False)
        tag_info = get_obj(self.name, meta, "tag", f"{where}.container_metadata", required=False)
        url = get_str(self.name, version, "package_url", where, required=False)
        repository = split_reference(url)[0] if url else ""
        if not repository:
            owner = get_obj(self.name, package, "owner", f"body.{key}")
            repository = repository_name(
                "ghcr.io",
                get_str(self.name, owner, "login", f"body.{key}.owner")
                + "/"
                + get_str(self.name, package, "name", f"body.{key}"),
            )
        sender = get_obj(self.name, data, "sender", "body", required=False)
        # a container package version is named by its manifest digest; container_metadata.tag.digest is
        # often shortened in GitHub's payloads, so the version name is the digest to pin when it is one
        digest = digest_or_empty(
            get_str(self.name, version, "name", where, required=False)
        ) or digest_or_empty(
            get_str(self.name, tag_info, "digest", f"{where}.container_metadata.tag", required=False)
        )
        return [
            Push(
                repository=repository,
                tag=get_str(self.name, tag_info, "name", f"{where}.container_metadata.tag", required=False),
                digest=digest,
                pusher=get_str(self.name, sender, "login", "body.sender", required=False),
                pushed_at=rfc3339_or_empty(package.get("updated_at")),
                delivery=headers.get("x-github-delivery", ""),
            )
        ]
