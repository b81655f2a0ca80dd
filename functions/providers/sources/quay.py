"""Quay repository push notifications (Red Hat Quay "Repository Events": docker_url, updated_tags).

Quay's webhook notification has no signature and no custom header: put the token in the URL,
`https://gateway/hooks/quay/<GRAYLANE_HOOK_TOKEN_QUAY>`. Old payloads map tags to image ids (not manifest
digests), so no digest is taken from them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Malformed,
    Parsed,
    Push,
    get_str,
    split_reference,
)


class QuaySource(JsonSource):
    name: ClassVar[str] = "quay"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        repository = split_reference(get_str(self.name, data, "docker_url", "body"))[0]
        tags = data.get("updated_tags")
        if isinstance(tags, dict):
            tags = list(tags)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Malformed(f"webhook source {self.name}: body.updated_tags must be a list of tag names")
        return [Push(repository=repository, tag=t.strip()) for t in tags]
