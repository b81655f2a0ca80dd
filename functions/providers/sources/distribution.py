"""CNCF Distribution's own notifications (the `registry` of distribution/distribution, Debian's
docker-registry package): the same event envelope GitLab's registry sends
(https://distribution.github.io/distribution/about/notifications/), parsed by the shared
`distribution_pushes`.

Configure an endpoint in the registry's config.yml; Distribution sends the `headers` given there verbatim:

    notifications:
      endpoints:
        - name: graylane
          url: https://graylane.example.com/hooks/distribution
          headers: {Authorization: [Bearer <GRAYLANE_HOOK_TOKEN_DISTRIBUTION>]}
          timeout: 5s
          backoff: 1s
          ignoredmediatypes: [application/octet-stream]

Sender: any answer outside 200-399 is a failure, retried forever with `backoff`, events queued in memory
and sent one at a time per endpoint, so a rejected event blocks every later one until the registry
restarts. After authentication, graylane therefore answers 2xx to anything it will not act on.
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    distribution_pushes,
)


class DistributionSource(JsonSource):
    name: ClassVar[str] = "distribution"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        return distribution_pushes(self.name, data)
