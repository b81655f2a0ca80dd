"""GitLab container registry notifications: the CNCF Distribution event envelope
(https://distribution.github.io/distribution/about/notifications/), enabled with
`registry['notifications']` in gitlab.rb whose `headers` carry `Authorization: Bearer <token>` (or
`X-Gitlab-Token: <token>`). Only manifest pushes with a tag are image pushes; blob pushes are skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    Push,
    distribution_push,
    each_obj,
)  # fmt: skip


class GitLabSource(JsonSource):
    name: ClassVar[str] = "gitlab"
    token_headers: ClassVar[tuple[str, ...]] = ("x-gitlab-token",)

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        pushes: list[Push] = []
        for where, event in each_obj(self.name, data, "events", "body"):
            push = distribution_push(self.name, event, where)
            if push is not None:
                pushes.append(push)
        return pushes
