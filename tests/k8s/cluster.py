"""A real Kubernetes for tests: etcd + kube-apiserver v1.37 (+ kube-controller-manager, and fake Nodes played
by kube-scheduler + kwok) on this machine.

The binaries come from `make kube` (tests/k8s/build-kube.sh: the Go tools modules of tests/k8s/tools, built
by tools/build.sh and cached under /var/cache/graylane/tools). The control plane listens on 127.0.0.1 with
ports picked at start; every process is stopped by its PID. Pods get IPs of POD_CIDR, which is made local
to this machine, so a test can bind a real process to a pod's IP and port (tests/k8s/README.md).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import ipaddress
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes import client as k8s

KUBE_VERSION = (
    "1.37.2"  # tests/k8s/tools/kube: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
)
ETCD_VERSION = "3.7.3"  # tests/k8s/tools/etcd
KWOK_VERSION = "0.8.0"  # tests/k8s/tools/kwok
CONTEXT_NAME = "graylane-test"
TOOLS_DIR = Path(__file__).parent / "tools"
# Pod IPs. The apiserver refuses loopback addresses in Endpoints, so pods get private addresses that this
# machine treats as its own (`ip route replace local POD_CIDR dev lo`, done by ensure_pod_network): every
# address of the range can be bound and connected to locally. Each running cluster claims one /22 of it
# (one /24 per fake Node), so two clusters, even of two test sessions, never hand out the same pod IP.
POD_CIDR = "10.244.0.0/16"
CLUSTER_POD_PREFIX = 22
NODE_POD_PREFIX = 24
SERVICE_CIDR = "10.96.0.0/24"
# Deployments roll out, Services get Endpoints and EndpointSlices of their ready pods, namespaces and owned
# objects are deleted, and Nodes lose their not-ready taint once kwok reports them Ready (node lifecycle).
DEFAULT_CONTROLLERS = ",".join(
    (
        "deployment-controller",
        "replicaset-controller",
        "namespace-controller",
        "garbage-collector-controller",
        "endpoints-controller",
        "endpointslice-controller",
        "node-lifecycle-controller",
    )
)
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"  # the Nodes kwok manages carry kwok.x-k8s.io/node=fake


class BinariesMissing(RuntimeError):
    """The Kubernetes test binaries are not built (for the current recipes) on this machine."""


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    controller_manager: Path
    scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    kwok_stages: Path  # kwok's default Stages (node initialize + heartbeat, pod ready/complete/delete)


def tool_bin_dir(name: str) -> Path | None:
    """The bin dir tools/build.sh built tools/NAME into for its current recipe, or None (nothing is built)."""
    done = subprocess.run(
        ["bash", str(TOOLS_DIR / "build.sh"), "--cached", name], capture_output=True, text=True, check=False
    )
    return Path(done.stdout.strip()) if done.returncode == 0 else None


@functools.cache
def find_binaries() -> KubeBinaries:
    """Locate every binary; the message tells how to get them. (A failure is not cached: retried next call.)"""
    dirs = {name: tool_bin_dir(name) for name in ("kube", "etcd", "kwok")}
    absent = [f"tests/k8s/tools/{name}" for name, where in dirs.items() if where is None]
    if absent:
        raise BinariesMissing(
            f"Kubernetes test binaries not built for the current recipe: {', '.join(absent)}; run `make kube` "
            "(tests/k8s/build-kube.sh, cached under /var/cache/graylane/tools or $GRAYLANE_CACHE/tools)"
        )
    kube, etcd, kwok = (dirs[name] or Path() for name in ("kube", "etcd", "kwok"))
    found = KubeBinaries(
        apiserver=kube / "kube-apiserver",
        controller_manager=kube / "kube-controller-manager",
        scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        etcd=etcd / "etcd",
        kwok=kwok / "kwok",
        kwok_stages=kwok / "kwok-stages.yaml",
    )
    broken = [str(p) for p in vars(found).values() if not p.is_file()]
    if broken:
        raise BinariesMissing(f"Kubernetes test binaries missing: {', '.join(broken)}; run `make kube`")
    return found


def kubectl_path() -> Path:
    """kubectl of the same release as the test apiserver (its built-in kustomize renders infra/k8s)."""
    return find_binaries().kubectl


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pod network -----------------------------------------------------------------------------------------


def _bindable(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def ensure_pod_network(cidr: str = POD_CIDR) -> None:
    """Make every address of `cidr` local to this machine (idempotent; needs root the first time after boot).

    An AnyIP route on lo: the kernel accepts any address of the range as its own, so a process can bind a
    pod's IP and others reach it, without one interface address per pod.
    """
    probe = str(ipaddress.ip_network(cidr)[-2])
    if _bindable(probe):
        return
    argv = ["ip", "route", "replace", "local", cidr, "dev", "lo"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        error = f"exit {done.returncode}: {done.stderr.strip()}"
    except FileNotFoundError as exc:  # no iproute2
        error = str(exc)
    if not _bindable(probe):
        raise RuntimeError(
            f"pod IPs ({cidr}) are not local on this machine and `{' '.join(argv)}` failed ({error}); "
            "run it as root (see tests/k8s/README.md, 'Pod network')"
        )


def _claim_pod_range() -> tuple[ipaddress.IPv4Network, IO[str]]:
    """The first /22 of POD_CIDR no other cluster on this machine holds; held until the lock file closes."""
    locks = Path(tempfile.gettempdir()) / "graylane-pod-cidrs"
    locks.mkdir(mode=0o777, exist_ok=True)
    for net in ipaddress.IPv4Network(POD_CIDR).subnets(new_prefix=CLUSTER_POD_PREFIX):
        lock = (locks / f"{net.network_address}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return net, lock
    raise RuntimeError(f"every /{CLUSTER_POD_PREFIX} of {POD_CIDR} is held by another test cluster ({locks})")


# -- clients ---------------------------------------------------------------------------------------------


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


# Stopped in this order: the clients of the apiserver first, etcd last.
_STOP_ORDER = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


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
    authorization_mode: str = (
        "AlwaysAllow"  # "RBAC" to test permissions (the admin token is in system:masters)
    )
    audit_users: tuple[str, ...] = ()  # users whose every request goes to `audit_log` (Metadata level)
    nodes: FakeNodes | None = None  # set by start_nodes()
    _procs: dict[str, _Proc] = field(default_factory=dict, repr=False)

    @classmethod
    def start(
        cls,
        ready_timeout: float = 60.0,
        authorization_mode: str = "AlwaysAllow",
        audit_users: tuple[str, ...] = (),
    ) -> KubeCluster:
        """etcd + kube-apiserver on loopback. `audit_users`: the apiserver's audit log (`audit_log`, one JSON
        event per line, level Metadata, stage ResponseComplete) records every request of these users, e.g.
        `system:serviceaccount:graylane-system:graylane`, with the verb, the object and the answer's code."""
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
            audit_users=tuple(audit_users),
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
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--data-dir",
                str(w / "etcd"),
                "--name",
                "default",
                "--listen-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--log-level",
                "error",
            ],
        )
        # --endpoint-reconciler-type=none: the `kubernetes` Service would get 127.0.0.1, which Endpoints refuse.
        # The ServiceAccount admission plugin is off: pods need no ServiceAccount object and no token.
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.apiserver),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={w / 'certs'}",
                f"--token-auth-file={w / 'tokens.csv'}",
                f"--authorization-mode={self.authorization_mode}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={w / 'sa.pub'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                "--disable-admission-plugins=ServiceAccount",
                *self._audit_flags(),
            ],
        )
        write_kubeconfig(self.kubeconfig, self.host, self.token)
        self._wait_ready(ready_timeout)

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit_users:
            return []
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "users": list(self.audit_users)}, {"level": "None"}],
        }
        (self.workdir / "audit-policy.json").write_text(json.dumps(policy))
        return [
            f"--audit-policy-file={self.workdir / 'audit-policy.json'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            "--audit-log-format=json",
        ]

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"{self.host}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive("start")
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

    def _check_alive(self, during: str) -> None:
        for proc in self._procs.values():
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode} during {during}:\n{_tail(proc.log)}"
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
        """Rollouts, Endpoints/EndpointSlices, garbage collection, namespace deletion, Node taints: as in a cluster."""
        if self.controller_running:
            return
        # --node-monitor-period=1s: a new fake Node loses its not-ready taint within a second, not five.
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={controllers}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=5",
                "--node-monitor-period=1s",
            ],
        )
        time.sleep(0.3)
        if proc.popen.poll() is not None:
            raise RuntimeError(f"kube-controller-manager exited at start:\n{_tail(proc.log)}")

    def stop_controller_manager(self) -> None:
        self.stop_nodes()
        proc = self._procs.pop("kube-controller-manager", None)
        if proc is not None:
            proc.stop()

    # -- fake Nodes: kube-scheduler + kwok -----------------------------------------------------------------

    def start_nodes(self, count: int = 2, timeout: float = 60.0) -> FakeNodes:
        """`count` fake Nodes that kube-scheduler binds pods to and kwok runs (starts the controller manager).

        kwok plays its default stages, as kwokctl configures them: a pod bound to one of its Nodes gets an IP
        of that Node's podCIDR and goes Running + Ready with every container ready; a deleted pod goes away.
        """
        if self.nodes is not None:
            return self.nodes
        self.start_controller_manager()
        ensure_pod_network()
        pod_range, lock = _claim_pod_range()
        subnets = list(pod_range.subnets(new_prefix=NODE_POD_PREFIX))[:count]
        if len(subnets) < count:
            lock.close()
            raise ValueError(f"at most {2 ** (NODE_POD_PREFIX - CLUSTER_POD_PREFIX)} fake Nodes per cluster")
        self.nodes = FakeNodes(self, [f"kwok-node-{i}" for i in range(count)], pod_range, lock)
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.scheduler),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.binaries.kwok_stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                f"--cidr={subnets[0]}",
                f"--node-ip={subnets[0][-2]}",
            ],
        )
        with self.api_client() as api:
            from kubernetes import client

            core = client.CoreV1Api(api)
            for name, subnet in zip(self.nodes.names, subnets, strict=True):
                core.create_node(_node(name, str(subnet)))
        self.nodes.wait_ready(timeout)
        return self.nodes

    def stop_nodes(self) -> None:
        """Stop kwok and the scheduler; the Node objects stay (NotReady once their leases run out)."""
        for name in ("kwok", "kube-scheduler"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        if self.nodes is not None:
            self.nodes.release()
            self.nodes = None

    # -- teardown ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process (clients of the apiserver first, etcd last), then remove the work dir."""
        atexit.unregister(self.stop)
        for name in _STOP_ORDER:
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        if self.nodes is not None:
            self.nodes.release()
            self.nodes = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, name: str = "kube-apiserver", lines: int = 30) -> str:
        return _tail(self.workdir / f"{name}.log", lines)


def _node(name: str, pod_cidr: str) -> dict[str, Any]:
    """A Node as kwok's docs declare one: kwok manages it by the annotation and reports its status."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }


@dataclass
class FakeNodes:
    """The fake Nodes of one cluster. Pods of every namespace are scheduled onto them and become Ready.

    `cordon()` (or `with nodes.cordoned():`) marks them unschedulable, as an operator would: new pods stay
    Pending until `uncordon()`, while the running ones stay Ready. That is how a test holds a rollout.
    """

    cluster: KubeCluster
    names: list[str]
    pod_range: ipaddress.IPv4Network  # this cluster's slice of POD_CIDR; Node i has its i-th /24
    _lock: IO[str] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _core(self, api: k8s.ApiClient) -> k8s.CoreV1Api:
        from kubernetes import client

        return client.CoreV1Api(api)

    def _set_unschedulable(self, value: bool) -> None:
        with self.cluster.api_client() as api:
            for name in self.names:
                self._core(api).patch_node(name, {"spec": {"unschedulable": value or None}})

    def cordon(self) -> None:
        self._set_unschedulable(True)

    def uncordon(self) -> None:
        self._set_unschedulable(False)

    @contextlib.contextmanager
    def cordoned(self) -> Iterator[FakeNodes]:
        self.cordon()
        try:
            yield self
        finally:
            self.uncordon()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until kwok reported every Node Ready and the node lifecycle controller lifted the not-ready taint."""
        deadline = time.monotonic() + timeout
        with self.cluster.api_client() as api:
            while True:
                self.cluster._check_alive("node start")
                waiting = [
                    n.metadata.name
                    for n in self._core(api).list_node().items
                    if n.metadata.name in self.names and not _node_is_ready(n)
                ]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"fake Nodes not ready after {timeout:.0f}s: {waiting}\n{self.cluster.log_tail('kwok')}"
                    )
                time.sleep(0.2)


def _node_is_ready(node: Any) -> bool:
    conditions = (node.status.conditions or []) if node.status else []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    tainted = any(t.key == "node.kubernetes.io/not-ready" for t in (node.spec.taints or []))
    return ready and not tainted


def pod_is_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return (
        pod.status is not None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in conditions)
    )


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


# -- rollouts ------------------------------------------------------------------------------------------------


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
