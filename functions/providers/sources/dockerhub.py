"""Docker Hub repository webhooks (https://docs.docker.com/docker-hub/repos/manage/webhooks/).

Docker Hub signs nothing and sends no custom header: configure the webhook URL as
`https://gateway/hooks/dockerhub/<GRAYLANE_HOOK_TOKEN_DOCKERHUB>`. The payload carries no digest.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    Push,
    epoch_to_rfc3339,
    get_obj,
    get_str,
    repository_name,
)


class DockerHubSource(JsonSource):
    name: ClassVar[str] = "dockerhub"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        push_data = get_obj(self.name, data, "push_data", "body")
        repo = get_obj(self.name, data, "repository", "body")
        return [
            Push(
                repository=repository_name(
                    "docker.io", get_str(self.name, repo, "repo_name", "body.repository")
                ),
                tag=get_str(self.name, push_data, "tag", "body.push_data"),
                pusher=get_str(self.name, push_data, "pusher", "body.push_data", required=False),
                pushed_at=epoch_to_rfc3339(push_data.get("pushed_at")),
            )
        ]
