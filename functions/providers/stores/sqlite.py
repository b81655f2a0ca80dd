"""StateStore in SQLite: the embedded default (one file, or ":memory:" for tests and the demo).

One row per app; a save compares the version and writes inside one `BEGIN IMMEDIATE` transaction,
so the CAS holds across threads (one connection behind a lock) and across processes sharing the
file (SQLite's write lock, WAL journal, busy timeout).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from functions.errors import ConflictError, ProviderUnavailable
from functions.providers.stores.configmap import check_size, split_app

__all__ = ["SqliteStore"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS app_state (app TEXT PRIMARY KEY, document TEXT NOT NULL, version INTEGER NOT NULL)"
_BUSY_TIMEOUT_MS = 5000


class SqliteStore:
    """StateStore on the SQLite database at `path` (":memory:" for a private in-process one)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; each statement below is atomic on its own.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as err:
            raise ProviderUnavailable(f"SQLite database {self.path} open: {err}") from err

    def load(self, app: str) -> tuple[str | None, str | None]:
        split_app(app)
        with self._lock, self._errors(app, "load"):
            row = self._db.execute("SELECT document, version FROM app_state WHERE app = ?", (app,)).fetchone()
        if row is None:
            return None, None
        return row[0], str(row[1])

    def save(self, app: str, document: str, expected_version: str | None) -> str:
        """CAS write; rewriting the identical document keeps the version, as the apiserver does."""
        split_app(app)
        check_size(app, document, "SQLite row")
        expected = None if expected_version is None else _parse_version(app, expected_version)
        with self._lock, self._errors(app, "save"), self._transaction():
            row = self._db.execute("SELECT document, version FROM app_state WHERE app = ?", (app,)).fetchone()
            current = None if row is None else row[1]
            if current != expected:
                raise ConflictError(
                    f"SQLite row {app} save: expected version {expected_version}, found {current}"
                )
            if row is None:
                self._db.execute(
                    "INSERT INTO app_state (app, document, version) VALUES (?, ?, 1)", (app, document)
                )
                return "1"
            if row[0] != document:
                current = row[1] + 1
                self._db.execute(
                    "UPDATE app_state SET document = ?, version = ? WHERE app = ?",
                    (document, current, app),
                )
        return str(current)

    def list_apps(self) -> list[str]:
        with self._lock, self._errors("*", "list"):
            rows = self._db.execute("SELECT app FROM app_state ORDER BY app").fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _errors(self, app: str, verb: str) -> Iterator[None]:
        """sqlite3 failures other than the CAS outcome (locked, I/O, closed) → ProviderUnavailable."""
        try:
            yield
        except sqlite3.Error as err:
            raise ProviderUnavailable(f"SQLite row {app} {verb} ({self.path}): {err}") from err

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock up front, so the read-compare-write is one atomic step
        for every connection and process on the file (others wait up to the busy timeout)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _parse_version(app: str, version: str) -> int:
    try:
        return int(version)
    except ValueError as err:
        raise ConflictError(f"SQLite row {app} save: {version!r} is not a version this store issued") from err
