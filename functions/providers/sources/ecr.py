"""AWS ECR image pushes through EventBridge: the "ECR Image Action" event
(https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html), delivered by an
EventBridge API destination whose connection uses API-key auth: header `x-api-key` (or Authorization)
carrying GRAYLANE_HOOK_TOKEN_ECR.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    Push,
    digest_or_empty,
    get_obj,
    get_str,
    repository_name,
    rfc3339_or_empty,
)


class EcrSource(JsonSource):
    name: ClassVar[str] = "ecr"
    token_headers: ClassVar[tuple[str, ...]] = ("x-api-key",)

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        if data.get("detail-type") != "ECR Image Action":
            return []
        detail = get_obj(self.name, data, "detail", "body")
        if detail.get("action-type") != "PUSH" or detail.get("result") != "SUCCESS":
            return []
        account = get_str(self.name, data, "account", "body")
        region = get_str(self.name, data, "region", "body")
        return [
            Push(
                repository=repository_name(
                    f"{account}.dkr.ecr.{region}.amazonaws.com",
                    get_str(self.name, detail, "repository-name", "body.detail"),
                ),
                tag=get_str(self.name, detail, "image-tag", "body.detail", required=False),
                digest=digest_or_empty(
                    get_str(self.name, detail, "image-digest", "body.detail", required=False)
                ),
                pushed_at=rfc3339_or_empty(data.get("time")),
                delivery=get_str(self.name, data, "id", "body", required=False),
            )
        ]
