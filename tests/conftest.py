"""Shared fixtures: a real kube-apiserver for the session, a namespace per test, a fault proxy, and the
opt-in kube-controller-manager + fake Nodes (kube-scheduler + kwok).

Nothing here starts a server unless a test asks for one of these fixtures, so unit tests run without the
binaries. Heavy imports (kubernetes, aiohttp) happen inside the fixtures.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import Phase, settings

# tests/unit/test_mutation_check.py runs property tests against mutants with `--hypothesis-profile=mutation`:
# the first failing example is the answer it needs, so it does not spend time shrinking it
settings.register_profile("mutation", phases=(Phase.explicit, Phase.reuse, Phase.generate))

if TYPE_CHECKING:
    from tests.k8s.cluster import FakeNodes, KubeCluster
    from tests.k8s.faultproxy import Faults


def pytest_configure(config: pytest.Config) -> None:
    # The test apiserver has a self-signed cert and the fixtures' clients don't verify it; with warnings
    # as errors, urllib3's InsecureRequestWarning would fail every cluster test.
    config.addinivalue_line("filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")
    # compiled policies go to a private directory of this run, not the user's ~/.cache (inherited by the
    # processes the tests start)
    os.environ.setdefault("GRAYLANE_POLICY_CACHE", tempfile.mkdtemp(prefix="graylane-policy-cache-"))


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """etcd + kube-apiserver v1.37 on loopback with every pinned upstream CRD (tests/k8s/upstream-crds.txt)
    installed and served."""
    from tests.k8s.cluster import BinariesMissing, KubeCluster, install_crds, load_crds

    missing = ""
    try:
        cluster = KubeCluster.start()
    except BinariesMissing as exc:
        missing = str(exc)
    if missing:  # outside the except block: one clear message, not a chained traceback
        pytest.fail(missing, pytrace=False)
    try:
        with cluster.api_client() as api:
            install_crds(api, load_crds())
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ns(kube: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards (only finishes with kube_controller)."""
    from kubernetes import client

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {"graylane.test/namespace": "true"}}})
        yield name
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def faults(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    """A fault-injection proxy in front of the apiserver; `.configuration` goes through it."""
    from tests.k8s.faultproxy import Faults

    proxy = Faults(kube.host, kube.token, tmp_path_factory.mktemp("faults")).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def kube_controller(kube: KubeCluster) -> Iterator[KubeCluster]:
    """Opt-in: kube-controller-manager for the session (tests/k8s/cluster.py DEFAULT_CONTROLLERS)."""
    kube.start_controller_manager()
    try:
        yield kube
    finally:
        kube.stop_controller_manager()


@pytest.fixture(scope="session")
def kube_nodes(kube_controller: KubeCluster) -> Iterator[FakeNodes]:
    """Opt-in: two fake Nodes for the session: kube-scheduler binds pods to them and kwok runs them."""
    nodes = kube_controller.start_nodes()
    try:
        yield nodes
    finally:
        kube_controller.stop_nodes()


@pytest.fixture
def nodes(kube_nodes: FakeNodes) -> Iterator[FakeNodes]:
    """Schedulable fake Nodes: pods of every namespace get an IP of POD_CIDR and go Running + Ready, so
    Deployments roll out and Services get endpoints (starts kube_controller). `nodes.cordoned()` holds new
    pods Pending; the Nodes are schedulable again after the test whatever it did."""
    kube_nodes.uncordon()
    try:
        yield kube_nodes
    finally:
        kube_nodes.uncordon()
