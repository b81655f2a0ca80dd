"""GitLab container registry notifications: the CNCF Distribution event envelope
(https://distribution.github.io/distribution/about/notifications/), enabled with
`registry['notifications']` in gitlab.rb whose `headers` carry `Authorization: Bearer <token>` (or
`X-Gitlab-Token: <token>`). Only manifest pushes are image pushes; blob pushes are skipped, a manifest
pushed by digest only is ignored unless a policy releases by digest.

Sender: GitLab's registry (a Distribution fork) treats any answer outside 200-399 as a failure and retries
it with backoff (older versions forever, newer ones `maxretries` times), one event at a time per endpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    distribution_pushes,
)


class GitLabSource(JsonSource):
    name: ClassVar[str] = "gitlab"
    token_headers: ClassVar[tuple[str, ...]] = ("x-gitlab-token",)

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        return distribution_pushes(self.name, data)
