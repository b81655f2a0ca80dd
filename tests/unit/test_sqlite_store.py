"""SqliteStore beyond the shared contract: a file shared by several connections (processes), reopening."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from functions.errors import ConflictError, ProviderUnavailable
from functions.providers.stores import SqliteStore


def test_two_connections_on_one_file_share_the_cas(tmp_path: Path) -> None:
    first, second = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
    version = first.save("team-a/web", "{}", None)

    assert second.load("team-a/web") == ("{}", version)
    second.save("team-a/web", '{"n": 2}', version)
    with pytest.raises(ConflictError):
        first.save("team-a/web", '{"n": 1}', version)
    with pytest.raises(ConflictError):
        first.save("team-a/web", "{}", None)
    first.close()
    second.close()


def test_state_survives_reopening_and_the_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "state.db"
    store = SqliteStore(path)
    version = store.save("team-a/web", '{"phase": "idle"}', None)
    store.close()

    reopened = SqliteStore(path)
    assert reopened.load("team-a/web") == ('{"phase": "idle"}', version)
    reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_databases_are_private_to_each_store() -> None:
    one, two = SqliteStore(":memory:"), SqliteStore(":memory:")
    one.save("team-a/web", "{}", None)

    assert two.load("team-a/web") == (None, None)
    one.close()
    two.close()


def test_a_version_this_store_never_issued_conflicts() -> None:
    store = SqliteStore()
    store.save("team-a/web", "{}", None)

    with pytest.raises(ConflictError, match="not a version this store issued"):
        store.save("team-a/web", "{}", "41a7")
    store.close()


def test_a_closed_or_unusable_database_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.close()
    with pytest.raises(ProviderUnavailable, match="SQLite row team-a/web load"):
        store.load("team-a/web")

    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(ProviderUnavailable, match="a-directory.db open"):
        SqliteStore(tmp_path / "a-directory.db")


_WORKER = """
import json, sys
from functions.errors import ConflictError
from functions.providers.stores import SqliteStore
store = SqliteStore(sys.argv[1])
for _ in range(int(sys.argv[2])):
    while True:
        text, version = store.load("team-a/counter")
        try:
            store.save("team-a/counter", json.dumps({"n": json.loads(text)["n"] + 1}), version)
            break
        except ConflictError:
            continue
"""


def test_processes_sharing_the_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.save("team-a/counter", json.dumps({"n": 0}), None)

    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), "50"], cwd=Path(__file__).parents[2])
        for _ in range(4)
    ]
    assert [w.wait(60) for w in workers] == [0, 0, 0, 0]

    text, version = store.load("team-a/counter")
    assert json.loads(text or "{}") == {"n": 200} and version == "201"
    store.close()
