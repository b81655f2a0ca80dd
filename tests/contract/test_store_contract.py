"""One contract for every StateStore: the same cases against memory, SQLite and ConfigMaps (real apiserver).

The runner relies on exactly these properties: a missing app loads as (None, None); every write is a
compare-and-swap that answers ConflictError when it loses; versions change on every write; no update
is lost under concurrent writers; documents up to the ConfigMap-derived limit round-trip byte for byte.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions.errors import ConfigError, ConflictError, ProviderUnavailable, Reject
from functions.providers.stores import ConfigMapStore, MemoryStore, SqliteStore, StateStore
from functions.providers.stores.configmap import MAX_DOCUMENT_BYTES

STORE_KINDS = ["memory", "sqlite", pytest.param("configmap", marks=pytest.mark.k8s)]


@dataclass
class Subject:
    """A store under test and a namespace its apps may live in."""

    store: StateStore
    namespace: str

    def app(self, name: str = "web") -> str:
        return f"{self.namespace}/{name}"


@pytest.fixture(params=STORE_KINDS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "memory":
        yield Subject(MemoryStore(), "team-a")
    elif request.param == "sqlite":
        store = SqliteStore(tmp_path / "state.db")
        yield Subject(store, "team-a")
        store.close()
    else:
        from functions.providers.kube import client_from

        kube, ns = request.getfixturevalue("kube"), request.getfixturevalue("ns")
        api_client = client_from(configuration=kube.configuration, timeout=10.0)
        yield Subject(ConfigMapStore(api_client, namespaces=[ns], timeout=10.0), ns)
        api_client.close()


def doc(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True)


def increment(store: StateStore, app: str, op_id: str | None = None, attempts: int = 1000) -> int:
    """load → +1 → CAS save, again on conflict (and on ProviderUnavailable: the write may have happened).

    With `op_id`, an increment already recorded in the document is not applied twice: exactly how the
    runner dedupes by event id after a lost response.
    """
    for _ in range(attempts):
        try:
            text, version = store.load(app)
            state = json.loads(text) if text else {"counter": 0, "applied": []}
            if op_id is not None and op_id in state["applied"]:
                return 0
            state["counter"] += 1
            if op_id is not None:
                state["applied"].append(op_id)
            store.save(app, json.dumps(state), version)
            return 1
        except (ConflictError, ProviderUnavailable):
            continue
    raise AssertionError(f"increment {op_id} of {app} gave up after {attempts} attempts")


# -- the contract ------------------------------------------------------------------------------------


def test_missing_app_loads_as_none(subject: Subject) -> None:
    assert subject.store.load(subject.app("nothing-here")) == (None, None)


def test_create_then_load_round_trips(subject: Subject) -> None:
    version = subject.store.save(subject.app(), doc(phase="idle"), None)

    assert isinstance(version, str) and version
    assert subject.store.load(subject.app()) == (doc(phase="idle"), version)


def test_save_at_current_version_replaces_document(subject: Subject) -> None:
    v1 = subject.store.save(subject.app(), doc(phase="idle"), None)
    v2 = subject.store.save(subject.app(), doc(phase="canary"), v1)

    assert v2 != v1
    assert subject.store.load(subject.app()) == (doc(phase="canary"), v2)


def test_stale_write_conflicts_and_keeps_the_winner(subject: Subject) -> None:
    v1 = subject.store.save(subject.app(), doc(weight=0), None)
    v2 = subject.store.save(subject.app(), doc(weight=20), v1)

    with pytest.raises(ConflictError):
        subject.store.save(subject.app(), doc(weight=99), v1)
    assert subject.store.load(subject.app()) == (doc(weight=20), v2)


def test_create_twice_conflicts(subject: Subject) -> None:
    version = subject.store.save(subject.app(), doc(first=True), None)

    with pytest.raises(ConflictError):
        subject.store.save(subject.app(), doc(first=False), None)
    assert subject.store.load(subject.app()) == (doc(first=True), version)


def test_replace_of_missing_app_conflicts(subject: Subject) -> None:
    other = subject.store.save(subject.app("other"), doc(n=1), None)

    with pytest.raises(ConflictError):
        subject.store.save(subject.app(), doc(n=2), other)
    assert subject.store.load(subject.app()) == (None, None)


def test_versions_change_on_every_write(subject: Subject) -> None:
    versions = [subject.store.save(subject.app(), doc(n=0), None)]
    for n in range(1, 6):
        versions.append(subject.store.save(subject.app(), doc(n=n), versions[-1]))

    assert len(set(versions)) == 6
    assert subject.store.load(subject.app()) == (doc(n=5), versions[-1])


def test_identical_rewrite_keeps_the_version_but_is_still_checked(subject: Subject) -> None:
    # The apiserver skips a no-op update without a new resourceVersion; every store does the same.
    v1 = subject.store.save(subject.app(), doc(n=1), None)
    assert subject.store.save(subject.app(), doc(n=1), v1) == v1

    v2 = subject.store.save(subject.app(), doc(n=2), v1)
    with pytest.raises(ConflictError):
        subject.store.save(subject.app(), doc(n=2), v1)
    assert subject.store.load(subject.app()) == (doc(n=2), v2)


def test_list_apps_names_every_app_with_a_document(subject: Subject) -> None:
    assert subject.store.list_apps() == []

    subject.store.save(subject.app("web"), doc(), None)
    subject.store.save(subject.app("api"), doc(), None)

    assert subject.store.list_apps() == sorted([subject.app("api"), subject.app("web")])


def test_concurrent_writers_lose_no_update(subject: Subject) -> None:
    app = subject.app("counter")
    start = threading.Barrier(10)

    def writer() -> int:
        start.wait()
        return sum(increment(subject.store, app) for _ in range(20))

    with ThreadPoolExecutor(10) as pool:
        applied = [f.result() for f in [pool.submit(writer) for _ in range(10)]]

    text, _ = subject.store.load(app)
    assert applied == [20] * 10
    assert text is not None and json.loads(text)["counter"] == 200


def test_document_near_the_limit_round_trips(subject: Subject) -> None:
    body = doc(history="")
    big = doc(history="x" * (MAX_DOCUMENT_BYTES - len(body)))
    assert len(big.encode()) == MAX_DOCUMENT_BYTES

    version = subject.store.save(subject.app(), big, None)

    assert subject.store.load(subject.app()) == (big, version)


def test_document_above_the_limit_is_refused_and_not_stored(subject: Subject) -> None:
    # Counted in UTF-8 bytes: 'é' is 2 bytes, so this has fewer characters than the limit but more bytes.
    too_big = json.dumps({"history": "é" * (MAX_DOCUMENT_BYTES // 2 + 1)}, ensure_ascii=False)
    assert len(too_big) < MAX_DOCUMENT_BYTES < len(too_big.encode())

    with pytest.raises(Reject, match=f"{subject.app()} save.*above the {MAX_DOCUMENT_BYTES}-byte limit"):
        subject.store.save(subject.app(), too_big, None)
    assert subject.store.load(subject.app()) == (None, None)


def test_unicode_round_trips_exactly(subject: Subject) -> None:
    text = json.dumps(
        {"note": '灰度发布 ✅ 🚀 Ünïcödé עברית e\u0301 \u2028 tab\t"quote" \\ back', "by": "张三"},
        ensure_ascii=False,
    )

    version = subject.store.save(subject.app(), text, None)

    assert subject.store.load(subject.app()) == (text, version)


def test_app_id_must_be_namespace_slash_name(subject: Subject) -> None:
    for bad in ("web", "/web", "team-a/", "a/b/c"):
        with pytest.raises(ConfigError, match="namespace/name"):
            subject.store.save(bad, doc(), None)


# -- ConfigMap specifics (real kube-apiserver) ---------------------------------------------------------------


@pytest.fixture
def core(kube: Any) -> Iterator[Any]:
    from kubernetes import client

    api_client = kube.api_client()
    yield client.CoreV1Api(api_client)
    api_client.close()


def configmap_store(configuration: Any, ns: str, timeout: float = 5.0) -> ConfigMapStore:
    from functions.providers.kube import client_from

    return ConfigMapStore(client_from(configuration=configuration, timeout=timeout), [ns], timeout=timeout)


@pytest.mark.k8s
def test_configmap_layout(kube: Any, ns: str, core: Any) -> None:
    store = configmap_store(kube.configuration, ns)
    version = store.save(f"{ns}/web", doc(phase="idle"), None)

    cm = core.read_namespaced_config_map("graylane-web", ns)

    assert cm.data == {"state.json": doc(phase="idle")}
    assert cm.metadata.resource_version == version
    assert cm.metadata.labels == {
        "app.kubernetes.io/managed-by": "graylane",
        "graylane.dev/app": "web",
        "graylane.dev/role": "state",
    }


@pytest.mark.k8s
def test_configmap_without_state_key_loads_empty_and_is_replaced(kube: Any, ns: str, core: Any) -> None:
    labels = {
        "app.kubernetes.io/managed-by": "graylane",
        "graylane.dev/app": "web",
        "graylane.dev/role": "state",
    }
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "graylane-web", "labels": labels}, "data": {}}
    )
    store = configmap_store(kube.configuration, ns)

    text, version = store.load(f"{ns}/web")
    assert text is None and version

    new_version = store.save(f"{ns}/web", doc(phase="idle"), version)
    assert store.load(f"{ns}/web") == (doc(phase="idle"), new_version)


@pytest.mark.k8s
def test_configmap_deleted_since_load_conflicts(kube: Any, ns: str, core: Any) -> None:
    store = configmap_store(kube.configuration, ns)
    version = store.save(f"{ns}/web", doc(n=1), None)
    core.delete_namespaced_config_map("graylane-web", ns)

    with pytest.raises(ConflictError, match=f"ConfigMap {ns}/graylane-web replace"):
        store.save(f"{ns}/web", doc(n=2), version)


@pytest.mark.k8s
def test_configmap_list_ignores_other_configmaps_and_spans_namespaces(kube: Any, ns: str, core: Any) -> None:
    from functions.providers.kube import client_from

    core.create_namespaced_config_map(ns, {"metadata": {"name": "graylane-unrelated"}, "data": {"a": "b"}})
    configmap_store(kube.configuration, ns).save(f"{ns}/web", doc(), None)
    everywhere = ConfigMapStore(client_from(configuration=kube.configuration), namespaces=None)
    elsewhere = ConfigMapStore(client_from(configuration=kube.configuration), namespaces=["default"])

    assert f"{ns}/web" in everywhere.list_apps()
    assert f"{ns}/unrelated" not in everywhere.list_apps()
    assert f"{ns}/web" not in elsewhere.list_apps()


@pytest.mark.k8s
def test_configmap_store_in_missing_namespace_is_not_found(kube: Any) -> None:
    from functions.errors import NotFound

    store = configmap_store(kube.configuration, "no-such-namespace")

    with pytest.raises(NotFound, match="ConfigMap no-such-namespace/graylane-web create"):
        store.save("no-such-namespace/web", doc(), None)


# -- ConfigMap under injected faults (fault proxy in front of the real apiserver) ----------------------------


def _cm_path(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps/graylane-web"


@pytest.mark.k8s
def test_injected_500_on_put_is_unavailable_and_changes_nothing(faults: Any, ns: str) -> None:
    store = configmap_store(faults.configuration, ns)
    version = store.save(f"{ns}/web", doc(n=1), None)
    faults.add(method="PUT", path=_cm_path(ns), status=500, times=1)

    with pytest.raises(ProviderUnavailable, match=f"ConfigMap {ns}/graylane-web replace: 500"):
        store.save(f"{ns}/web", doc(n=2), version)

    assert store.load(f"{ns}/web") == (doc(n=1), version)


@pytest.mark.k8s
def test_injected_409_on_put_is_a_conflict(faults: Any, ns: str) -> None:
    store = configmap_store(faults.configuration, ns)
    version = store.save(f"{ns}/web", doc(n=1), None)
    faults.add(method="PUT", path=_cm_path(ns), status=409, times=1)

    with pytest.raises(ConflictError):
        store.save(f"{ns}/web", doc(n=2), version)
    assert store.load(f"{ns}/web") == (doc(n=1), version)


@pytest.mark.k8s
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_delay_beyond_the_timeout_is_unavailable(faults: Any, ns: str, method: str) -> None:
    store = configmap_store(faults.configuration, ns, timeout=0.5)
    version = store.save(f"{ns}/web", doc(n=1), None)
    faults.add(method=method, path=_cm_path(ns), delay=2.0, times=1)

    with pytest.raises(ProviderUnavailable, match="Timeout"):
        if method == "GET":
            store.load(f"{ns}/web")
        else:
            store.save(f"{ns}/web", doc(n=2), version)


@pytest.mark.k8s
def test_lost_response_on_put_is_unavailable_but_reload_shows_the_write(faults: Any, ns: str) -> None:
    store = configmap_store(faults.configuration, ns)
    version = store.save(f"{ns}/web", doc(n=1), None)
    faults.add(method="PUT", path=_cm_path(ns), lose_response=True, times=1)

    with pytest.raises(ProviderUnavailable):
        store.save(f"{ns}/web", doc(n=2), version)

    # The apiserver committed it: reload-and-compare is how the caller learns the outcome.
    text, new_version = store.load(f"{ns}/web")
    assert text == doc(n=2) and new_version != version
    with pytest.raises(ConflictError):  # a blind retry at the old version is refused, never applied twice
        store.save(f"{ns}/web", doc(n=3), version)


@pytest.mark.k8s
def test_chaos_loses_no_update_and_applies_none_twice(faults: Any, ns: str) -> None:
    store = configmap_store(faults.configuration, ns, timeout=0.5)
    kinds = ["500", "409", "429", "503", "timeout", "lost", "slow"]
    faults.chaos(rate=0.3, kinds=kinds, seed=7, timeout=1.0)

    for i in range(100):
        increment(store, f"{ns}/web", op_id=f"op-{i}")

    faults.clear()
    text, _ = store.load(f"{ns}/web")
    assert text is not None
    state = json.loads(text)
    assert state["counter"] == 100
    assert state["applied"] == [f"op-{i}" for i in range(100)]
    struck = [e.fault for e in faults.log if e.fault]
    assert len(struck) >= 30 and any(f.startswith("lost") for f in struck)  # the chaos really struck
