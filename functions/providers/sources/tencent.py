"""Tencent Cloud: TCR Enterprise triggers and CODING artifact repository webhooks.

TCR Enterprise runs Harbor and posts Harbor's event shape with type `pushImage` (see the trigger log
example of `tccli tcr DescribeWebhookTriggerLog`); the trigger's custom header carries the token.
CODING (https://coding.net/help/docs/project-settings/open/webhook.html) signs with X-Coding-Signature =
"sha1=" + HMAC-SHA1(token, body) and names the event in X-Coding-Event; a Docker artifact push is
ARTIFACTS_VERSION_CREATED (or _RELEASED), the image being <team>-docker.pkg.coding.net/<project>/<repo>/<pkg>.
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
    check_token,
    epoch_to_rfc3339,
    get_obj,
    get_str,
    harbor_style_pushes,
    repository_name,
    require_configured,
)

_CODING_PUSHES = ("ARTIFACTS_VERSION_CREATED", "ARTIFACTS_VERSION_RELEASED")


class TcrSource(JsonSource):
    name: ClassVar[str] = "tcr"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        if get_str(self.name, data, "type", "body") not in ("pushImage", "PUSH_ARTIFACT"):
            return []
        return harbor_style_pushes(
            self.name,
            get_obj(self.name, data, "event_data", "body"),
            "body.event_data",
            get_str(self.name, data, "operator", "body", required=False),
            epoch_to_rfc3339(data.get("occur_at")),
            "",
        )


class CodingSource(JsonSource):
    name: ClassVar[str] = "coding"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        require_configured(self.name, credentials)
        if credentials.secret:
            check_hmac(
                self.name,
                "X-Coding-Signature",
                headers.get("x-coding-signature", ""),
                body,
                credentials.secret,
                "sha1",
            )
        else:
            check_token(self.name, headers, credentials)

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        event = headers.get("x-coding-event", "") or get_str(self.name, data, "event", "body", required=False)
        if event not in _CODING_PUSHES:
            return []
        artifact = get_obj(self.name, data, "artifact", "body")
        if get_str(self.name, artifact, "artifactType", "body.artifact", required=False).upper() != "DOCKER":
            return []
        team = get_obj(self.name, data, "team", "body")
        path = "/".join(
            (
                get_str(self.name, artifact, "projectName", "body.artifact"),
                get_str(self.name, artifact, "artifactRepoName", "body.artifact"),
                get_str(self.name, artifact, "artifactPkgName", "body.artifact"),
            )
        )
        return [
            Push(
                repository=repository_name(
                    f"{get_str(self.name, team, 'domain', 'body.team')}-docker.pkg.coding.net", path
                ),
                tag=get_str(self.name, artifact, "artifactVersionName", "body.artifact"),
                pusher=get_str(self.name, artifact, "userName", "body.artifact", required=False),
                delivery=headers.get("x-coding-delivery", ""),
            )
        ]
