"""A real Kubernetes API for tests: etcd + kube-apiserver v1.20.2 (+ kube-controller-manager) on loopback.

The binaries come from `tests/k8s/build-kube.sh` (`make kube`), see shared/research/k8s-api-for-tests.md.
Everything listens on 127.0.0.1 with ports picked at start; every process is stopped by its PID.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes import client as k8s

KUBE_VERSION = "1.20.2"
CONTEXT_NAME = "graylane-test"
DEFAULT_CONTROLLERS = "deployment,replicaset,namespace,garbagecollector"


class BinariesMissing(RuntimeError):
    """kube-apiserver, kube-controller-manager or etcd is not installed on this machine."""


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    controller_manager: Path
    etcd: Path


def kube_cache_dir() -> Path:
    return Path(os.environ.get("GRAYLANE_KUBE_CACHE", f"/var/cache/graylane/kube-{KUBE_VERSION}"))


def find_binaries() -> KubeBinaries:
    """Locate the three binaries; the message tells how to get them."""
    bin_dir = kube_cache_dir() / "bin"
    etcd = shutil.which("etcd")
    found = KubeBinaries(
        bin_dir / "kube-apiserver", bin_dir / "kube-controller-manager", Path(etcd or "etcd")
    )
    missing = [str(p) for p in (found.apiserver, found.controller_manager) if not os.access(p, os.X_OK)]
    if etcd is None:
        missing.append("etcd (Debian package etcd-server)")
    if missing:
        raise BinariesMissing(
            f"Kubernetes test binaries missing: {', '.join(missing)}; run `make kube` "
            "(tests/k8s/build-kube.sh; cache dir from GRAYLANE_KUBE_CACHE)"
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_configuration(host: str, token: str, verify_ssl: bool = False) -> k8s.Configuration:
    """A kubernetes.client.Configuration with the static bearer token (TLS not verified: self-signed)."""
    import urllib3
    from kubernetes import client

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    cfg = client.Configuration(host=host, api_key={"authorization": f"Bearer {token}"})
    cfg.verify_ssl = verify_ssl
    return cfg


def write_kubeconfig(path: Path, host: str, token: str) -> Path:
    """kubeconfig with one context `graylane-test` (JSON is valid YAML, so no yaml dependency here)."""
    cluster: dict[str, Any] = {"server": host}
    if host.startswith("https://"):
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT_NAME, "cluster": cluster}],
        "users": [{"name": CONTEXT_NAME, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": CONTEXT_NAME}}],
        "current-context": CONTEXT_NAME,
    }
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)


@dataclass
class KubeCluster:
    """A running etcd + kube-apiserver pair; use `KubeCluster.start()` and `stop()`."""

    host: str
    token: str
    workdir: Path
    kubeconfig: Path
    ca_cert: Path
    binaries: KubeBinaries
    configuration: k8s.Configuration
    authorization_mode: str = "AlwaysAllow"  # "RBAC" to test permissions (the admin token is in system:masters)
    _procs: dict[str, _Proc] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, ready_timeout: float = 60.0, authorization_mode: str = "AlwaysAllow") -> KubeCluster:
        binaries = find_binaries()
        root = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        workdir = Path(tempfile.mkdtemp(prefix="graylane-kube-", dir=root))
        token = secrets.token_hex(16)
        port = free_port()
        host = f"https://127.0.0.1:{port}"
        cluster = cls(
            host=host,
            token=token,
            workdir=workdir,
            kubeconfig=workdir / "kubeconfig",
            ca_cert=workdir / "certs" / "apiserver.crt",
            binaries=binaries,
            configuration=make_configuration(host, token),
            authorization_mode=authorization_mode,
        )
        atexit.register(cluster.stop)  # no orphaned apiserver if the caller never reaches its teardown
        try:
            cluster._launch(port, ready_timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = _Proc(name, popen, log)
        self._procs[name] = proc
        return proc

    def _launch(self, port: int, ready_timeout: float) -> None:
        w = self.workdir
        (w / "certs").mkdir()
        (w / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        subprocess.run(
            ["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(w / "sa.key"), "-pubout", "-out", str(w / "sa.pub")],
            check=True,
            capture_output=True,
        )
        client_port, peer_port = free_port(), free_port()
        self._spawn("etcd", [
            str(self.binaries.etcd), "--data-dir", str(w / "etcd"), "--name", "default",
            "--listen-client-urls", f"http://127.0.0.1:{client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--log-level", "error",
        ])  # fmt: skip
        self._spawn("kube-apiserver", [
            str(self.binaries.apiserver),
            f"--etcd-servers=http://127.0.0.1:{client_port}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={w / 'certs'}",
            f"--token-auth-file={w / 'tokens.csv'}", f"--authorization-mode={self.authorization_mode}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={w / 'sa.pub'}", f"--service-account-signing-key-file={w / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24", "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none", "--disable-admission-plugins=ServiceAccount",
        ])  # fmt: skip
        write_kubeconfig(self.kubeconfig, self.host, self.token)
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"{self.host}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs.values():
                if proc.popen.poll() is not None:
                    raise RuntimeError(
                        f"{proc.name} exited with {proc.popen.returncode} during start:\n{_tail(proc.log)}"
                    )
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(
            f"kube-apiserver not ready after {timeout:.0f}s ({last}):\n{_tail(self.workdir / 'kube-apiserver.log')}"
        )

    # -- clients -------------------------------------------------------------------------------------------

    def new_configuration(self) -> k8s.Configuration:
        """A fresh Configuration (tests may tweak it without touching `self.configuration`)."""
        return make_configuration(self.host, self.token)

    def api_client(self) -> k8s.ApiClient:
        from kubernetes import client

        return client.ApiClient(self.new_configuration())

    # -- kube-controller-manager ---------------------------------------------------------------------------

    @property
    def controller_running(self) -> bool:
        proc = self._procs.get("kube-controller-manager")
        return proc is not None and proc.popen.poll() is None

    def start_controller_manager(self, controllers: str = DEFAULT_CONTROLLERS) -> None:
        """Deployment/ReplicaSet rollouts, garbage collection and namespace deletion, as in a cluster."""
        if self.controller_running:
            return
        proc = self._spawn("kube-controller-manager", [
            str(self.binaries.controller_manager), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--port=0", "--secure-port=0", f"--controllers={controllers}",
            "--use-service-account-credentials=false", "--concurrent-deployment-syncs=5",
        ])  # fmt: skip
        time.sleep(0.3)
        if proc.popen.poll() is not None:
            raise RuntimeError(f"kube-controller-manager exited at start:\n{_tail(proc.log)}")

    def stop_controller_manager(self) -> None:
        proc = self._procs.pop("kube-controller-manager", None)
        if proc is not None:
            proc.stop()

    # -- teardown ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop controller-manager, apiserver, then etcd (reverse start order), then remove the work dir."""
        atexit.unregister(self.stop)
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, name: str = "kube-apiserver", lines: int = 30) -> str:
        return _tail(self.workdir / f"{name}.log", lines)


# -- CRDs ------------------------------------------------------------------------------------------------


def load_crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of the pinned upstream files (tests/k8s/upstream-crds.txt), checked
    against their sha256; other documents are skipped, and a CRD a file earlier in the list already defined
    is kept as that file has it (Traefik v3's traefik.io over v2.11's)."""
    from tests.k8s.upstream_crds import crd_files

    crds: dict[str, dict[str, Any]] = {}
    for path in crd_files():
        for doc in _yaml_documents(path):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.setdefault(doc["metadata"]["name"], doc)
    return list(crds.values())


def _yaml_documents(path: Path) -> list[Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~8x faster on Istio's 0.9 MB file
    return list(yaml.load_all(path.read_bytes(), Loader=loader))


def install_crds(api_client: k8s.ApiClient, crds: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create (or replace) each CRD, then wait until every version is Established and in discovery."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    for crd in crds:
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            live = ext.read_custom_resource_definition(crd["metadata"]["name"])
            body = dict(crd, metadata=dict(crd["metadata"], resourceVersion=live.metadata.resource_version))
            ext.replace_custom_resource_definition(crd["metadata"]["name"], body)
    deadline = time.monotonic() + timeout
    pending = list(crds)
    while pending:
        pending = [crd for crd in pending if not _crd_served(ext, api_client, crd)]
        if pending and time.monotonic() > deadline:
            names = ", ".join(c["metadata"]["name"] for c in pending)
            raise TimeoutError(f"CRDs not served after {timeout:.0f}s: {names}")
        if pending:
            time.sleep(0.1)


def _crd_served(ext: Any, api_client: k8s.ApiClient, crd: dict[str, Any]) -> bool:
    live = ext.read_custom_resource_definition(crd["metadata"]["name"])
    conditions = {c.type: c.status for c in (live.status.conditions or [])} if live.status else {}
    if conditions.get("Established") != "True":
        return False
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    discovery = client.CustomObjectsApi(api_client)
    for version in (v["name"] for v in crd["spec"]["versions"] if v.get("served", True)):
        try:
            resources = discovery.get_api_resources(group, version).resources
        except ApiException as exc:
            if exc.status == 404:  # the group/version is not in discovery yet
                return False
            raise
        if plural not in {r.name for r in resources}:
            return False
    return True


# -- fake kubelet ------------------------------------------------------------------------------------------


def _pod_is_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return (
        pod.status is not None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in conditions)
    )


class FakeKubelet:
    """Marks every pod of the given namespaces Running + Ready (a status patch), like a healthy node would.

    With kube-controller-manager running this makes Deployments roll out: the ReplicaSet controller counts
    the pods ready and the Deployment controller sees them available.
    """

    def __init__(self, api_client: k8s.ApiClient, namespaces: list[str], interval: float = 0.2) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._api_client = api_client
        self.namespaces = list(namespaces)
        self.interval = interval
        self.marked: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._api_client.close()

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            for ns in self.namespaces:
                try:
                    self.sync(ns)
                except Exception as exc:  # keep the node alive; the test sees `errors`
                    self.errors.append(f"{ns}: {exc!r}")
            self._stop.wait(self.interval)

    def sync(self, namespace: str) -> int:
        """One pass: mark the not-yet-ready pods of `namespace`; returns how many were marked."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        marked = 0
        for pod in self._core.list_namespaced_pod(namespace).items:
            if pod.metadata.deletion_timestamp is not None or _pod_is_ready(pod):
                continue
            conditions = [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ]
            body = {"status": {"phase": "Running", "conditions": conditions, "startTime": now}}
            with contextlib.suppress(Exception):  # pod deleted meanwhile: the next pass forgets it
                self._core.patch_namespaced_pod_status(pod.metadata.name, namespace, body)
                self.marked.add((namespace, pod.metadata.name))
                marked += 1
        return marked


def deployment_is_ready(dep: Any) -> bool:
    """Rolled out: status caught up with the spec, all replicas updated, ready and available, no old ones."""
    spec_replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
    st = dep.status
    if st is None or (st.observed_generation or 0) < (dep.metadata.generation or 0):
        return False
    return (
        (st.updated_replicas or 0) == spec_replicas
        and (st.replicas or 0) == spec_replicas
        and (st.ready_replicas or 0) == spec_replicas
        and (st.available_replicas or 0) == spec_replicas
    )


def wait_deployment_ready(apps_api: k8s.AppsV1Api, ns: str, name: str, timeout: float = 30.0) -> Any:
    """Poll until the Deployment is rolled out; returns the V1Deployment, raises TimeoutError with its status."""
    deadline = time.monotonic() + timeout
    while True:
        dep = apps_api.read_namespaced_deployment(name, ns)
        if deployment_is_ready(dep):
            return dep
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Deployment {ns}/{name} not rolled out after {timeout:.0f}s: generation="
                f"{dep.metadata.generation} status={dep.status.to_dict() if dep.status else None}"
            )
        time.sleep(0.2)
