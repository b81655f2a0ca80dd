"""AWS ECR image pushes through EventBridge: the "ECR Image Action" event
(https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html), delivered by an
EventBridge API destination whose connection uses API-key auth: header `x-api-key` (or Authorization)
carrying GRAYLANE_HOOK_TOKEN_ECR.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from functions.providers.sources.base import (
    Credentials,
    Headers,
    Parsed,
    Push,
    check_token,
    digest_or_empty,
    get_obj,
    get_str,
    load_json,
    obj,
    repository_name,
    rfc3339_or_empty,
)  # fmt: skip


class EcrSource:
    name: ClassVar[str] = "ecr"
    kind: ClassVar[Literal["push", "alert"]] = "push"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        check_token(self.name, headers, credentials, "x-api-key")

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        data = obj(self.name, load_json(self.name, body), "body")
        if data.get("detail-type") != "ECR Image Action":
            return []
        detail = get_obj(self.name, data, "detail", "body")
        if detail.get("action-type") != "PUSH" or detail.get("result") != "SUCCESS":
            return []
        account = get_str(self.name, data, "account", "body")
        region = get_str(self.name, data, "region", "body")
        return [Push(
            repository=repository_name(f"{account}.dkr.ecr.{region}.amazonaws.com",
                                       get_str(self.name, detail, "repository-name", "body.detail")),
            tag=get_str(self.name, detail, "image-tag", "body.detail", required=False),
            digest=digest_or_empty(get_str(self.name, detail, "image-digest", "body.detail", required=False)),
            pushed_at=rfc3339_or_empty(data.get("time")),
            delivery=get_str(self.name, data, "id", "body", required=False),
        )]  # fmt: skip
