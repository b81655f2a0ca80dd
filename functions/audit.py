"""The audit log of release commands: every decision on a command, allowed or denied, with who, where,
when, what and the outcome.

Accepted commands also land in the release's own history (decide() records them); the audit log is
where refused attempts are kept too, and it never depends on a release existing. Records live in one
bounded document per app, apart from the release state, written with the StateStore CAS API.

The store key is `<namespace>/audit.<name>` (ConfigMap `graylane-audit.<name>` in the app's
namespace): stores only accept `namespace/name` keys, and the app's own key holds its state.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, field
from typing import Any, Protocol

from functions.core.values import value
from functions.errors import ConflictError, ProviderUnavailable

log = logging.getLogger("graylane.audit")

MAX_AUDIT = 200  # records kept per app: the document stays a few tens of KiB
AUDIT_PREFIX = "audit."
_ATTEMPTS = 8


@value
class AuditRecord:
    at: str  # RFC 3339 UTC
    app: str  # namespace/name
    action: str
    outcome: str  # accepted | denied | invalid | failed
    user: str
    via: str  # cli | api | console | slack | dingtalk | feishu | wecom | teams
    channel: str = ""
    gate: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # weight, version, params, reason given
    reason: str = ""  # why it was denied (or refused as invalid)
    event_id: str = ""  # the command event published, when accepted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class AuditLog(Protocol):
    def record(self, entry: AuditRecord) -> None:
        """Append one record; raise ProviderUnavailable when it could not be stored."""

    def recent(self, app: str, limit: int = 50) -> list[AuditRecord]:
        """The newest `limit` records of app, oldest first."""


def audit_key(app: str) -> str:
    """The store key of an app's audit document: namespace/audit.<name>."""
    namespace, _, name = app.partition("/")
    return f"{namespace}/{AUDIT_PREFIX}{name}"


def is_audit_key(key: str) -> bool:
    """True for an audit document's key (list_apps returns them next to release states)."""
    return key.partition("/")[2].startswith(AUDIT_PREFIX)


class MemoryAuditLog:
    """Records in a list (tests, and processes without a store)."""

    def __init__(self, limit: int = MAX_AUDIT) -> None:
        self._lock = threading.Lock()
        self._records: list[AuditRecord] = []
        self.limit = limit

    def record(self, entry: AuditRecord) -> None:
        with self._lock:
            self._records.append(entry)

    def recent(self, app: str, limit: int = 50) -> list[AuditRecord]:
        with self._lock:
            mine = [r for r in self._records if r.app == app]
        return mine[-min(limit, self.limit) :]

    @property
    def records(self) -> list[AuditRecord]:
        with self._lock:
            return list(self._records)


class StoreAuditLog:
    """Records in a bounded `audit` list of one document per app, appended with compare-and-swap."""

    def __init__(self, store: Any, limit: int = MAX_AUDIT, attempts: int = _ATTEMPTS) -> None:
        self.store = store
        self.limit = limit
        self.attempts = attempts

    def record(self, entry: AuditRecord) -> None:
        key = audit_key(entry.app)
        for _ in range(self.attempts):
            records, version = self._load(key)
            records = (records + [entry.to_dict()])[-self.limit :]
            document = json.dumps({"app": entry.app, "audit": records}, separators=(",", ":"), sort_keys=True)
            try:
                self.store.save(key, document, version)
                return
            except ConflictError:
                continue  # another writer appended first: reload and append again
        raise ProviderUnavailable(
            f"audit log {key} append: the document kept changing over {self.attempts} attempts"
        )

    def recent(self, app: str, limit: int = 50) -> list[AuditRecord]:
        records, _ = self._load(audit_key(app))
        return [AuditRecord.from_dict(r) for r in records[-limit:] if isinstance(r, dict)]

    def _load(self, key: str) -> tuple[list[dict[str, Any]], str | None]:
        doc, version = self.store.load(key)
        if not doc:
            return [], version
        try:
            records = json.loads(doc).get("audit", [])
        except (ValueError, AttributeError):
            log.warning("audit log %s is not readable JSON; starting it again", key)
            return [], version
        return (records if isinstance(records, list) else []), version
