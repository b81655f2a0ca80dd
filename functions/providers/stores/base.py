"""State store interface: one document per app, every write a compare-and-swap."""

from __future__ import annotations

from typing import Protocol


class StateStore(Protocol):
    def load(self, app: str) -> tuple[str | None, str | None]:
        """(document JSON, version) for `namespace/name`; (None, None) when there is none yet."""

    def save(self, app: str, document: str, expected_version: str | None) -> str:
        """Write if the stored version is still `expected_version` (None: must not exist yet).

        Returns the new version. Raises ConflictError when another writer got there first and
        ProviderUnavailable when the backend failed (the write may or may not have happened).
        """

    def list_apps(self) -> list[str]:
        """Every app (namespace/name) that has a document."""
