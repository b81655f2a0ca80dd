"""Google Artifact Registry: Pub/Sub push subscriptions to the `gcr` topic
(https://cloud.google.com/artifact-registry/docs/configure-notifications). The push envelope's
message.data is base64 of {"action": "INSERT", "digest": "HOST/PATH@sha256:...", "tag": "HOST/PATH:TAG"}.

Pub/Sub signs pushes with a Google OIDC JWT, which cannot be verified without reaching Google's keys;
graylane instead requires a shared token in the push endpoint URL (`/hooks/gar/<token>`) or header.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Malformed,
    Parsed,
    Push,
    digest_or_empty,
    get_obj,
    get_str,
    load_json,
    obj,
    rfc3339_or_empty,
    split_reference,
)


class GarSource(JsonSource):
    name: ClassVar[str] = "gar"

    def read(self, headers: Headers, envelope: dict[str, Any]) -> Parsed:
        message = get_obj(self.name, envelope, "message", "body")
        encoded = get_str(self.name, message, "data", "body.message")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Malformed(f"webhook source {self.name}: body.message.data is not base64") from None
        data = obj(self.name, load_json(self.name, raw), "body.message.data")
        if data.get("action") != "INSERT":
            return []
        tag_ref = get_str(self.name, data, "tag", "body.message.data", required=False)
        digest_ref = get_str(self.name, data, "digest", "body.message.data", required=False)
        if not tag_ref and not digest_ref:
            raise Malformed(f"webhook source {self.name}: body.message.data needs a tag or a digest")
        repository, tag, _ = split_reference(tag_ref or digest_ref)
        digest = split_reference(digest_ref)[2] if digest_ref else ""
        return [
            Push(
                repository=repository,
                tag=tag if tag_ref else "",
                digest=digest_or_empty(digest),
                pushed_at=rfc3339_or_empty(message.get("publishTime")),
                delivery=get_str(self.name, message, "messageId", "body.message", required=False),
            )
        ]
