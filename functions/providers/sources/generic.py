"""A plain JSON push for CI systems and registries without a dedicated source:
{"repository": "host/path", "tag": "v1.2.0", "digest"?: "sha256:...", "pusher"?: "...", "pushedAt"?: "..."},
or {"images": [ ...the same objects... ]}. Authenticated with a bearer token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Malformed,
    Parsed,
    Push,
    digest_or_empty,
    each_obj,
    get_str,
    rfc3339_or_empty,
    split_reference,
)


class GenericSource(JsonSource):
    name: ClassVar[str] = "generic"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        if "images" in data:
            return [self._push(image, where) for where, image in each_obj(self.name, data, "images", "body")]
        return [self._push(data, "body")]

    def _push(self, data: dict[str, Any], path: str) -> Push:
        digest = get_str(self.name, data, "digest", path, required=False)
        if digest and not digest_or_empty(digest):
            raise Malformed(
                f"webhook source {self.name}: {path}.digest {digest[:80]!r} is not sha256:<64 hex>"
            )
        return Push(
            repository=split_reference(get_str(self.name, data, "repository", path))[0],
            tag=get_str(self.name, data, "tag", path),
            digest=digest_or_empty(digest),
            pusher=get_str(self.name, data, "pusher", path, required=False),
            pushed_at=rfc3339_or_empty(data.get("pushedAt")),
        )
