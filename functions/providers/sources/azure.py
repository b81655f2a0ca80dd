"""Azure Container Registry webhooks, push event
(https://learn.microsoft.com/azure/container-registry/container-registry-webhook-reference).

ACR sends only the custom headers configured on the webhook: set `Authorization: Bearer <token>`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from functions.providers.sources.base import (
    Credentials,
    Headers,
    Parsed,
    check_token,
    distribution_push,
    load_json,
    obj,
)  # fmt: skip


class AzureSource:
    name: ClassVar[str] = "azure"
    kind: ClassVar[Literal["push", "alert"]] = "push"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        check_token(self.name, headers, credentials)

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        push = distribution_push(self.name, obj(self.name, load_json(self.name, body), "body"), "body")
        return [push] if push is not None else []
