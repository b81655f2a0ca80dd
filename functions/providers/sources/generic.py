"""A plain JSON push for CI systems and registries without a dedicated source:
{"repository": "host/path", "tag": "v1.2.0", "digest"?: "sha256:...", "pusher"?: "...", "pushedAt"?: "..."},
or {"images": [ ...the same objects... ]}. Authenticated with a bearer token.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from functions.providers.sources.base import (
    Credentials,
    Headers,
    Malformed,
    Parsed,
    Push,
    check_token,
    digest_or_empty,
    get_list,
    get_str,
    load_json,
    obj,
    rfc3339_or_empty,
    split_reference,
)  # fmt: skip


class GenericSource:
    name: ClassVar[str] = "generic"
    kind: ClassVar[Literal["push", "alert"]] = "push"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        check_token(self.name, headers, credentials)

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        data = obj(self.name, load_json(self.name, body), "body")
        if "images" in data:
            return [self._push(obj(self.name, item, f"body.images[{i}]"), f"body.images[{i}]")
                    for i, item in enumerate(get_list(self.name, data, "images", "body"))]
        return [self._push(data, "body")]

    def _push(self, data: dict[str, Any], path: str) -> Push:
        digest = get_str(self.name, data, "digest", path, required=False)
        if digest and not digest_or_empty(digest):
            raise Malformed(f"webhook source {self.name}: {path}.digest {digest[:80]!r} is not sha256:<64 hex>")
        return Push(
            repository=split_reference(get_str(self.name, data, "repository", path))[0],
            tag=get_str(self.name, data, "tag", path),
            digest=digest_or_empty(digest),
            pusher=get_str(self.name, data, "pusher", path, required=False),
            pushed_at=rfc3339_or_empty(data.get("pushedAt")),
        )
