"""make_store: one URL names the state store; unknown schemes and options fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.errors import ConfigError
from functions.providers.stores import STORES, MemoryStore, SqliteStore, make_store


def test_memory_url() -> None:
    assert isinstance(make_store("memory://"), MemoryStore)


def test_sqlite_url_with_absolute_path(tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path}/state.db")

    assert isinstance(store, SqliteStore) and store.path == f"{tmp_path}/state.db"
    store.save("team-a/web", "{}", None)
    assert (tmp_path / "state.db").exists()
    store.close()


def test_sqlite_url_with_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = make_store("sqlite:///graylane.db")

    assert isinstance(store, SqliteStore) and store.path == "graylane.db"
    store.save("team-a/web", "{}", None)
    assert (tmp_path / "graylane.db").exists()
    store.close()


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite:///:memory:"])
def test_sqlite_url_in_memory(url: str) -> None:
    store = make_store(url)

    assert isinstance(store, SqliteStore) and store.path == ":memory:"
    store.close()


def test_sqlite_url_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="sqlite needs a path"):
        make_store("sqlite:///")


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'etcd'; known: configmap, memory, sqlite"):
        make_store("etcd://127.0.0.1:2379")
    assert sorted(STORES) == ["configmap", "memory", "sqlite"]


def test_configmap_url_rejects_unknown_options_and_bad_timeout() -> None:
    with pytest.raises(ConfigError, match="unknown option.*namespace; known: context, kubeconfig"):
        make_store("configmap://?namespace=a")
    with pytest.raises(ConfigError, match="timeout must be seconds"):
        make_store("configmap://?timeout=soon")


def test_configmap_url_with_a_missing_kubeconfig_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"kubeconfig {tmp_path}/absent context prod"):
        make_store(f"configmap://?kubeconfig={tmp_path}/absent&context=prod")
