"""Alibaba Cloud Container Registry (ACR) triggers: push_data {digest, pushed_at, tag} and repository
{region, repo_full_name, ...} (Alibaba Cloud ACR "Manage triggers"). The image lives at
registry.<region>.aliyuncs.com/<repo_full_name>.

ACR triggers send no signature: use `https://gateway/hooks/acr/<GRAYLANE_HOOK_TOKEN_ACR>`. `pushed_at`
has no time zone, so it is not passed on.
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
)  # fmt: skip


class AliyunSource:
    name: ClassVar[str] = "acr"
    kind: ClassVar[Literal["push", "alert"]] = "push"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        check_token(self.name, headers, credentials)

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        data = obj(self.name, load_json(self.name, body), "body")
        push_data = get_obj(self.name, data, "push_data", "body")
        repo = get_obj(self.name, data, "repository", "body")
        region = get_str(self.name, repo, "region", "body.repository")
        return [Push(
            repository=repository_name(f"registry.{region}.aliyuncs.com",
                                       get_str(self.name, repo, "repo_full_name", "body.repository")),
            tag=get_str(self.name, push_data, "tag", "body.push_data"),
            digest=digest_or_empty(get_str(self.name, push_data, "digest", "body.push_data", required=False)),
        )]  # fmt: skip
