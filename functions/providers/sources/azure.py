"""Azure Container Registry webhooks, push event
(https://learn.microsoft.com/azure/container-registry/container-registry-webhook-reference).

ACR sends only the custom headers configured on the webhook: set `Authorization: Bearer <token>`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    distribution_push,
)


class AzureSource(JsonSource):
    name: ClassVar[str] = "azure"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        push = distribution_push(self.name, data, "body")
        return [push] if push is not None else []
