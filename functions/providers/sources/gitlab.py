"""GitLab container registry notifications: the CNCF Distribution event envelope
(https://distribution.github.io/distribution/about/notifications/), enabled with
`registry['notifications']` in gitlab.rb whose `headers` carry `Authorization: Bearer <token>` (or
`X-Gitlab-Token: <token>`). Only manifest pushes with a tag are image pushes; blob pushes are skipped.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from functions.providers.sources.base import (
    Credentials,
    Headers,
    Parsed,
    Push,
    check_token,
    distribution_push,
    get_list,
    load_json,
    obj,
)  # fmt: skip


class GitLabSource:
    name: ClassVar[str] = "gitlab"
    kind: ClassVar[Literal["push", "alert"]] = "push"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        check_token(self.name, headers, credentials, "x-gitlab-token")

    def parse(self, headers: Headers, body: bytes) -> Parsed:
        data = obj(self.name, load_json(self.name, body), "body")
        pushes: list[Push] = []
        for i, item in enumerate(get_list(self.name, data, "events", "body")):
            push = distribution_push(self.name, obj(self.name, item, f"body.events[{i}]"), f"body.events[{i}]")
            if push is not None:
                pushes.append(push)
        return pushes
