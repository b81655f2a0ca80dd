"""Alibaba Cloud Container Registry (ACR) triggers: push_data {digest, pushed_at, tag} and repository
{region, repo_full_name, ...} (Alibaba Cloud ACR "Manage triggers"). The image lives at
registry.<region>.aliyuncs.com/<repo_full_name>.

ACR triggers send no signature: use `https://gateway/hooks/acr/<GRAYLANE_HOOK_TOKEN_ACR>`. `pushed_at`
has no time zone, so it is not passed on.
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
)


class AliyunSource(JsonSource):
    name: ClassVar[str] = "acr"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        push_data = get_obj(self.name, data, "push_data", "body")
        repo = get_obj(self.name, data, "repository", "body")
        region = get_str(self.name, repo, "region", "body.repository")
        return [
            Push(
                repository=repository_name(
                    f"registry.{region}.aliyuncs.com",
                    get_str(self.name, repo, "repo_full_name", "body.repository"),
                ),
                tag=get_str(self.name, push_data, "tag", "body.push_data"),
                digest=digest_or_empty(
                    get_str(self.name, push_data, "digest", "body.push_data", required=False)
                ),
            )
        ]
