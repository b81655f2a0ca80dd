"""Harbor webhooks, both payload formats (https://goharbor.io/docs/latest/working-with-projects/
project-configuration/configure-webhooks/): `Default` (type PUSH_ARTIFACT, event_data) and `CloudEvents`
(Harbor 2.8+, type harbor.artifact.pushed, structured or binary mode).

Harbor publishes no signature scheme: it sends the policy's "Auth Header" verbatim as `Authorization`, so
configure it as `Bearer <GRAYLANE_HOOK_TOKEN_HARBOR>` (or the bare token).
"""

from __future__ import annotations

from typing import Any, ClassVar

from functions.providers.sources.base import (
    Headers,
    JsonSource,
    Parsed,
    epoch_to_rfc3339,
    get_obj,
    get_str,
    harbor_style_pushes,
    rfc3339_or_empty,
)

_PUSHED = ("PUSH_ARTIFACT", "harbor.artifact.pushed")


class HarborSource(JsonSource):
    name: ClassVar[str] = "harbor"

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        if "ce-type" in headers:  # CloudEvents binary mode: attributes in headers, data is the body
            return self._pushes(
                headers["ce-type"],
                data,
                "body",
                headers.get("ce-operator", ""),
                rfc3339_or_empty(headers.get("ce-time")),
                headers.get("ce-id", ""),
            )
        if "specversion" in data:  # CloudEvents structured mode
            event_type = get_str(self.name, data, "type", "body")
            if event_type not in _PUSHED:
                return []
            return self._pushes(
                event_type,
                get_obj(self.name, data, "data", "body"),
                "body.data",
                get_str(self.name, data, "operator", "body", required=False),
                rfc3339_or_empty(data.get("time")),
                get_str(self.name, data, "id", "body"),
            )
        event_type = get_str(self.name, data, "type", "body")
        return self._pushes(
            event_type,
            get_obj(self.name, data, "event_data", "body"),
            "body.event_data",
            get_str(self.name, data, "operator", "body", required=False),
            epoch_to_rfc3339(data.get("occur_at")),
            "",
        )

    def _pushes(
        self,
        event_type: str,
        event_data: dict[str, Any],
        path: str,
        pusher: str,
        pushed_at: str,
        delivery: str,
    ) -> Parsed:
        if event_type not in _PUSHED:
            return []
        return harbor_style_pushes(self.name, event_data, path, pusher, pushed_at, delivery)
