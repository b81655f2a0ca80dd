"""Prometheus Alertmanager webhook receiver, payload version 4
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config): one delivery per group,
`alerts[]` each with status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint.

Alertmanager's `http_config` sends either `authorization: {credentials: TOKEN}` (Bearer) or
`basic_auth: {username, password}`: GRAYLANE_ALERTMANAGER_TOKEN or _USER/_PASSWORD.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from functions.providers.sources.base import (
    AlertNotice,
    Credentials,
    Headers,
    JsonSource,
    Malformed,
    Parsed,
    Unauthenticated,
    check_basic,
    check_token,
    each_obj,
    get_str,
    obj,
    require_configured,
)


class AlertmanagerSource(JsonSource):
    name: ClassVar[str] = "alertmanager"
    kind: ClassVar[Literal["push", "alert"]] = "alert"

    def authenticate(self, headers: Headers, body: bytes, credentials: Credentials) -> None:
        require_configured(self.name, credentials)
        if headers.get("authorization", "").lower().startswith("basic "):
            if not (credentials.user and credentials.password):
                raise Unauthenticated(
                    f"webhook source {self.name}: Basic auth is not configured; use the token"
                )
            check_basic(self.name, headers, credentials)
            return
        check_token(self.name, headers, credentials)

    def read(self, headers: Headers, data: dict[str, Any]) -> Parsed:
        version = data.get("version", "4")
        if version != "4":
            raise Malformed(
                f"webhook source {self.name}: body.version {str(version)[:20]!r} is not supported; expected '4'"
            )
        notices: list[AlertNotice] = []
        for where, alert in each_obj(self.name, data, "alerts", "body"):
            status = get_str(self.name, alert, "status", where)
            if status not in ("firing", "resolved"):
                raise Malformed(
                    f"webhook source {self.name}: {where}.status {status[:40]!r} is not firing or resolved"
                )
            notices.append(
                AlertNotice(
                    fingerprint=get_str(self.name, alert, "fingerprint", where),
                    status="firing" if status == "firing" else "resolved",
                    labels=self._strings(alert, "labels", where),
                    annotations=self._strings(alert, "annotations", where),
                    starts_at=get_str(self.name, alert, "startsAt", where),
                    ends_at=get_str(self.name, alert, "endsAt", where, required=False),
                    generator_url=get_str(self.name, alert, "generatorURL", where, required=False),
                )
            )
        return notices

    def _strings(self, alert: dict[str, object], key: str, where: str) -> dict[str, str]:
        value = alert.get(key) or {}
        mapping = obj(self.name, value, f"{where}.{key}")
        for name, text in mapping.items():
            if not isinstance(text, str):
                raise Malformed(f"webhook source {self.name}: {where}.{key}.{name} must be a string")
        return dict(mapping)
