"""StateStore in a dict: the store's semantics with no I/O, for fast tests of the runner."""

from __future__ import annotations

import threading

from functions.errors import ConflictError
from functions.providers.stores.configmap import check_size, split_app

__all__ = ["MemoryStore"]


class MemoryStore:
    """Documents and integer versions (as strings) per app, every save a CAS under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, tuple[str, int]] = {}

    def load(self, app: str) -> tuple[str | None, str | None]:
        split_app(app)
        with self._lock:
            stored = self._docs.get(app)
        if stored is None:
            return None, None
        return stored[0], str(stored[1])

    def save(self, app: str, document: str, expected_version: str | None) -> str:
        split_app(app)
        check_size(app, document, "MemoryStore")
        with self._lock:
            stored = self._docs.get(app)
            current = None if stored is None else str(stored[1])
            if current != expected_version:
                raise ConflictError(
                    f"MemoryStore {app} save: expected version {expected_version}, found {current}"
                )
            if stored is not None and stored[0] == document:
                return str(stored[1])  # an identical rewrite is a no-op, as on the apiserver
            version = 1 if stored is None else stored[1] + 1
            self._docs[app] = (document, version)
        return str(version)

    def list_apps(self) -> list[str]:
        with self._lock:
            return sorted(self._docs)
