"""Everything `make e2e` runs, started in order and stopped in reverse (`World.start()` / `World.stop()`):

    kube-apiserver v1.37 (RBAC, audit log of graylane's account) + etcd + kube-controller-manager (with the
      job controller: migration Jobs complete) + kube-scheduler + kwok (2 fake Nodes, pod IPs of POD_CIDR)
    infra/k8s/deployments rendered by kustomize and applied; graylane-webhooks filled with test values
    seed 000's objects applied as its user has them (tests/e2e/seed_objects.py), pods served by the pod runner
    Traefik v2.11 (traefik.containo.us) routing pro.coding / dev.coding by them
    Prometheus scraping Traefik ──► Alertmanager ──► graylane /hooks/alertmanager
    graylane serve: the Deployment's command and environment, as the graylane ServiceAccount (a host process)
    docker-registry (Distribution 2.8) notifying graylane /hooks/distribution; skopeo pushes
    the policy: infra/examples/traefik-pipeline.yaml in a policy ConfigMap of namespace pro

Logs of every process are in `World.dir`; `World.logs()` gives their tails for a failure message.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from functions.core.state import AppState
from tests.e2e import deployed, seed_objects
from tests.e2e.deployed import GraylaneProcess
from tests.e2e.monitoring import Monitoring
from tests.e2e.registry import Registry, oci_image
from tests.k8s.cluster import DEFAULT_CONTROLLERS, KubeCluster, install_crds, load_crds
from tests.traefik.binaries import traefik_binary
from tests.traefik.client import Client, Traffic
from tests.traefik.pods import PodRunner
from tests.traefik.proxy import Traefik

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "examples" / "traefik-pipeline.yaml"
REPOSITORY_PATH = "coding/cd-production/flask"  # the example's repository, on the test registry's host
TRAEFIK_GROUPS = {"v2": "traefik.containo.us", "v3": "traefik.io"}
CRD_GROUPS = ("traefik.containo.us", "traefik.io", "gateway.networking.k8s.io")
USERS = {"ops-lead": "ops-lead-e2e-token", "product-owner": "product-owner-e2e-token"}  # GRAYLANE_API_TOKENS


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 60.0,
    every: float = 0.2,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Poll `check` until truthy (returned); AssertionError naming `what` after `timeout` s. `alive` is called
    on every round (a dead process fails at once, with its log)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


class Notices:
    """The policy's webhook notifier's receiver: every notice graylane sends."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        notices = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with notices._lock:
                    notices.received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/graylane/flask"

    def types(self) -> list[str]:
        with self._lock:
            return [str(n.get("type", "")) for n in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def e2e_policy(example: dict[str, Any], repository: str, notify_url: str) -> tuple[dict[str, Any], list[str]]:
    """The example policy as the e2e runs it, and what was changed (printed with the results): the image on the
    test registry, the notifier to a local receiver, the Prometheus of the install (the deployment's
    GRAYLANE_PROMETHEUS) and minutes scaled to seconds."""
    doc = copy.deepcopy(example)
    spec = doc["spec"]
    changes = [f"spec.image.repository {spec['image']['repository']} -> {repository}"]
    spec["image"]["repository"] = repository
    analysis = spec.get("analysis") or {}
    if "prometheus" in analysis:
        changes.append(
            f"spec.analysis.prometheus {analysis.pop('prometheus')} removed (the install's "
            "GRAYLANE_PROMETHEUS)"
        )
    for key, value in (("interval", "5s"),):  # the window stays the example's 1m: enough samples for a p95
        if analysis.get(key) != value:
            changes.append(f"spec.analysis.{key} {analysis.get(key)} -> {value}")
            analysis[key] = value
    for stage in spec["stages"]:
        kind, body = next(iter(stage.items()))
        if kind == "abtest" and body.get("duration") != "20s":
            changes.append(f"abtest duration {body.get('duration')} -> 20s")
            body["duration"] = "20s"
        if kind == "promote" and body.get("keepPrevious"):
            changes.append(f"promote keepPrevious {body['keepPrevious']} -> 5s")
            body["keepPrevious"] = "5s"
    for rule in spec.get("protection") or []:
        if rule.get("holdDown") != "10s":
            changes.append(f"protection {rule['alert']} holdDown {rule.get('holdDown')} -> 10s")
            rule["holdDown"] = "10s"
    spec["notify"] = [{"kind": "webhook", "url": notify_url}]
    changes.append(f"spec.notify -> webhook {notify_url}")
    return doc, changes


@dataclass
class World:
    dir: Path
    traefik_version: str = "v2"
    cluster: KubeCluster | None = None
    pods: PodRunner | None = None
    traefik: Traefik | None = None
    monitoring: Monitoring | None = None
    graylane: GraylaneProcess | None = None
    registry: Registry | None = None
    notices: Notices | None = None
    docs: list[dict[str, Any]] = field(default_factory=list)
    secret_values: dict[str, str] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    policy_changes: list[str] = field(default_factory=list)
    traffic: list[Traffic] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _stoppers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def group(self) -> str:
        return TRAEFIK_GROUPS[self.traefik_version]

    @property
    def app(self) -> str:
        return f"{self.policy['metadata']['namespace']}/{self.policy['metadata']['name']}"

    # -- start ---------------------------------------------------------------------------------------------
    def start(self) -> World:
        try:
            self._timed("cluster", self._start_cluster)
            self._timed("install", self._install)
            self._timed("seed objects", self._seed)
            self._timed("traefik", self._start_traefik)
            self._timed("prometheus", self._start_prometheus)
            self._timed("graylane", self._start_graylane)
            self._timed("alertmanager + registry", self._start_edges)
            self._timed("policy", self._apply_policy)
        except BaseException:
            self.stop()
            raise
        return self

    def _timed(self, what: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        step()
        self.timings[what] = time.monotonic() - started

    def _start_cluster(self) -> None:
        traefik_binary(self.traefik_version)  # a missing build fails before anything starts
        self.cluster = KubeCluster.start(authorization_mode="RBAC", audit_users=(deployed.ACCOUNT_USER,))
        self._stoppers.append(self._stop_cluster)
        with self.cluster.api_client() as api:
            install_crds(api, [c for c in load_crds() if c["spec"]["group"] in CRD_GROUPS])
        # the job controller too: the release's migration Job completes once kwok has run its pod
        self.cluster.start_controller_manager(DEFAULT_CONTROLLERS + ",job-controller")
        self.cluster.start_nodes(count=2)

    def _stop_cluster(self) -> None:
        assert self.cluster is not None
        for name in ("kube-apiserver", "kube-controller-manager", "kwok"):
            log = self.cluster.workdir / f"{name}.log"
            if log.exists():
                (self.dir / f"{name}.log").write_bytes(log.read_bytes()[-2_000_000:])
        if self.cluster.audit_log.exists():
            (self.dir / "audit.log").write_bytes(self.cluster.audit_log.read_bytes())
        self.cluster.stop()

    def _install(self) -> None:
        assert self.cluster is not None
        self.docs = deployed.render("deployments")
        self.secret_values = {
            "GRAYLANE_HOOK_TOKEN_DISTRIBUTION": secrets.token_hex(16),
            "GRAYLANE_ALERTMANAGER_TOKEN": secrets.token_hex(16),
            "GRAYLANE_API_TOKENS": ",".join(f"{user}:{token}" for user, token in USERS.items()),
            "GRAYLANE_INTERNAL_TOKEN": secrets.token_hex(16),
            "GRAYLANE_EDGE_KEY": secrets.token_hex(16),
        }
        deployed.install(self.cluster, self.docs, self.secret_values)

    def _seed(self) -> None:
        assert self.cluster is not None
        self.notices = Notices()
        self._stoppers.append(self.notices.stop)
        self.pods = PodRunner(
            self.cluster.api_client(), [seed_objects.PRO, seed_objects.DEV], resolve=self.image_version
        ).start()
        self._stoppers.append(self.pods.stop)
        self.registry_dir = self.dir / "registry"
        # the registry's port is needed for the images' names: started here, its notifications wait for graylane
        self.kubectl_user("apply", "-f", "-", stdin=seed_objects.namespaces())
        self.kubectl_user("apply", "-f", "-", stdin=seed_objects.workloads(self.repository_placeholder))
        self.kubectl_user("apply", "-f", "-", stdin=seed_objects.routing(self.group))
        self.pods.wait_serving(seed_objects.PRO, {seed_objects.OLD: 3}, timeout=90)
        self.pods.wait_serving(seed_objects.DEV, {seed_objects.OLD: 1}, timeout=90)

    def image_version(self, image: str) -> str:
        """What a pod of `image` runs: read from the registry for the images pushed there (by digest)."""
        from tests.traefik.pods import image_version

        return self.registry.version_of(image) if self.registry is not None else image_version(image)

    @property
    def repository_placeholder(self) -> str:
        """The image the seed's Deployments start with (pushed before graylane was installed: never notified)."""
        return f"{self.registry_host}/{REPOSITORY_PATH}"

    @property
    def registry_host(self) -> str:
        if not hasattr(self, "_registry_port"):
            from functions.local.ports import free_port

            self._registry_port = free_port()
        return f"127.0.0.1:{self._registry_port}"

    def kubectl_user(self, *args: str, stdin: str | None = None) -> str:
        """kubectl as the app's user (client-side apply, the way the seed's pipeline applies its files)."""
        assert self.cluster is not None
        return deployed.kubectl(self.cluster, *args, stdin=stdin).stdout

    def _start_traefik(self) -> None:
        assert self.cluster is not None
        self.traefik = Traefik.start(
            self.traefik_version,
            self.dir / "traefik",
            self.cluster.kubeconfig,
            [seed_objects.PRO, seed_objects.DEV],
            access_log=False,
        )
        self._stoppers.append(self.traefik.stop)
        for name, ns in (
            (seed_objects.PRO_ROUTE, seed_objects.PRO),
            (seed_objects.ABTEST_ROUTE, seed_objects.PRO),
            (seed_objects.DEV_ROUTE, seed_objects.DEV),
        ):
            self.in_force(name, ns)

    def _start_prometheus(self) -> None:
        assert self.traefik is not None
        self.monitoring = Monitoring(self.dir / "monitoring", self.traefik.metrics_port)
        self._stoppers.append(self.monitoring.stop)
        self.monitoring.start_prometheus()

    def _start_graylane(self) -> None:
        assert self.cluster is not None and self.monitoring is not None
        token = deployed.account_token(self.cluster)
        self.kubeconfig = deployed.account_kubeconfig(self.cluster, token, self.dir / "graylane-kubeconfig")
        self.account = deployed.who_am_i(self.kubeconfig)
        self.container = deployed.deployed_container(self.cluster)
        self.env = deployed.container_env(self.cluster, self.container)
        # the in-cluster DNS name of Prometheus does not resolve here: the test Prometheus instead
        self.overrides = {"GRAYLANE_PROMETHEUS": self.monitoring.prometheus_url}
        self.graylane = GraylaneProcess.start(
            self.container,
            self.env,
            self.kubeconfig,
            self.dir / "home",
            self.dir / "graylane.log",
            self.overrides,
        )
        self._stoppers.append(self._stop_graylane)

    def _stop_graylane(self) -> None:
        assert self.graylane is not None
        self.graylane_exit = self.graylane.stop()

    def _start_edges(self) -> None:
        assert self.monitoring is not None and self.graylane is not None
        self.monitoring.start_alertmanager(
            self.graylane.url, self.secret_values["GRAYLANE_ALERTMANAGER_TOKEN"]
        )
        self.registry = Registry.start(
            self.registry_dir,
            f"{self.graylane.url}/hooks/distribution",
            self.secret_values["GRAYLANE_HOOK_TOKEN_DISTRIBUTION"],
            port=self._registry_port,
        )
        self._stoppers.append(self.registry.stop)

    def _apply_policy(self) -> None:
        assert self.notices is not None and self.registry is not None
        example = yaml.safe_load(EXAMPLE.read_text())
        self.policy, self.policy_changes = e2e_policy(
            example, f"{self.registry.host}/{REPOSITORY_PATH}", self.notices.url
        )
        self.apply_policy(self.policy, "flask-release-policy")

    def apply_policy(self, policy: dict[str, Any], configmap: str) -> None:
        """The policy in a ConfigMap labelled graylane.dev/role=policy in its namespace, applied by its user."""
        doc = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap,
                "namespace": policy["metadata"]["namespace"],
                "labels": {"graylane.dev/role": "policy"},
            },
            "data": {"policy.yaml": yaml.safe_dump(policy, sort_keys=False)},
        }
        self.kubectl_user("apply", "-f", "-", stdin=json.dumps(doc))

    # -- stop ------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        for client in self.traffic:
            client.stop()
        self.traffic.clear()
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception as err:  # stop the rest regardless; the error is kept in the directory
                with (self.dir / "stop-errors.log").open("a") as out:
                    out.write(f"{stop}: {err!r}\n")
        self._stoppers.clear()

    # -- what the scenario uses -------------------------------------------------------------------------------
    def alive(self) -> None:
        for proc in (self.graylane, self.traefik):
            if proc is not None:
                proc.alive()

    def api(self) -> Any:
        assert self.cluster is not None
        return self.cluster.api_client()

    def read(self, kind: str, name: str, namespace: str = seed_objects.PRO) -> dict[str, Any] | None:
        """An object as stored (None if it does not exist), read as the admin."""
        assert self.cluster is not None
        done = subprocess.run(
            [
                str(deployed.kubectl_path()),
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "-n",
                namespace,
                "get",
                kind,
                name,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            if "NotFound" in done.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name}: {done.stderr[-500:]}")
        obj: dict[str, Any] = json.loads(done.stdout)
        return obj

    def names(self, kind: str, namespace: str = seed_objects.PRO) -> dict[str, str]:
        """name -> uid of every object of `kind` in `namespace` (read as the admin)."""
        assert self.cluster is not None
        out = deployed.kubectl(self.cluster, "-n", namespace, "get", kind, "-o", "json").stdout
        return {i["metadata"]["name"]: i["metadata"]["uid"] for i in json.loads(out)["items"]}

    def route(self, name: str, ns: str = seed_objects.PRO) -> dict[str, Any]:
        found = self.read(f"ingressroutes.{self.group}", name, ns)
        assert found is not None, f"IngressRoute {ns}/{name} does not exist"
        return found

    def middlewares_of(self, route: dict[str, Any]) -> dict[str, Any]:
        ns = route["metadata"]["namespace"]
        names = {m["name"] for r in route["spec"].get("routes") or [] for m in r.get("middlewares") or []}
        out = {}
        for n in sorted(names):
            mw = self.read(f"middlewares.{self.group}", n, ns)
            assert mw is not None, (
                f"IngressRoute {ns}/{route['metadata']['name']} names Middleware {n}: missing"
            )
            out[n] = mw["spec"]
        return out

    def in_force(
        self, name: str = seed_objects.PRO_ROUTE, ns: str = seed_objects.PRO, timeout: float = 30.0
    ) -> None:
        """Until Traefik routes by the IngressRoute as stored and the Middlewares it names."""
        assert self.traefik is not None
        route = self.route(name, ns)
        self.traefik.wait_route(route, self.middlewares_of(route), timeout=timeout)

    def client(self, host: str = seed_objects.HOST, source: str = "127.0.0.1") -> Client:
        assert self.traefik is not None
        return Client(self.traefik.port, host, source)

    def state(self) -> AppState:
        """The release state graylane keeps (ConfigMap graylane-<app> in the app's namespace), read as the admin."""
        ns, name = self.app.split("/")
        cm = self.read("configmap", f"graylane-{name}", ns)
        if cm is None:
            return AppState(app=self.app)
        return AppState.from_json(cm["data"]["state.json"])

    def cli(
        self, *args: str, user: str = "ops-lead", timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """`graylane <args> --server <public url> --token <user's API token>`, as that user runs it."""
        assert self.graylane is not None
        import sys

        argv = [
            str(Path(sys.executable).parent / "graylane"),
            *args,
            "--server",
            self.graylane.url,
            "--token",
            USERS[user],
            "-o",
            "json",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if done.returncode != 0:
            raise AssertionError(
                f"graylane {' '.join(args)} as {user}: exit {done.returncode}\n{done.stdout}\n"
                f"{done.stderr}\ngraylane log:\n{self.graylane.tail(30)}"
            )
        return done

    def push(self, version: str) -> float:
        """Build the version's image and push it with skopeo; returns when skopeo finished (monotonic)."""
        assert self.registry is not None
        layout = oci_image(self.dir / "images" / version, version)
        self.registry.push(layout, REPOSITORY_PATH, version)
        return time.monotonic()

    def start_traffic(self, rps: float = 15.0, shenzhen_rps: float = 8.0) -> list[Traffic]:
        """Background users of pro.coding: two plain clients and one from shenzhen, each from its own address."""
        assert self.traefik is not None
        started = [
            Traffic(self.traefik.port, seed_objects.HOST, rps=rps, source="127.0.0.11").start(),
            Traffic(self.traefik.port, seed_objects.HOST, rps=rps, source="127.0.0.12").start(),
            Traffic(
                self.traefik.port,
                seed_objects.HOST,
                rps=shenzhen_rps,
                source="127.0.0.13",
                headers={"location": "shenzhen"},
            ).start(),
        ]
        self.traffic.extend(started)
        return started

    def hits(self, since: float = 0.0, until: float = float("inf")) -> list[Any]:
        return [h for c in self.traffic for h in c.since(since, until)]

    def logs(self, lines: int = 40) -> str:
        """The tails of every log, for a failure message."""
        parts = []
        if self.graylane is not None:
            parts.append(f"--- graylane serve ({self.graylane.log})\n{self.graylane.tail(lines)}")
        if self.traefik is not None:
            parts.append(f"--- Traefik {self.traefik_version}\n{self.traefik.log_tail(lines)}")
        if self.registry is not None:
            parts.append(f"--- docker-registry\n{self.registry.tail(lines)}")
        if self.monitoring is not None:
            parts.append(f"--- alertmanager\n{self.monitoring.alertmanager.tail(15)}")
            parts.append(f"--- prometheus\n{self.monitoring.prometheus.tail(10)}")
        if self.pods is not None and self.pods.errors:
            parts.append(f"--- pod runner errors\n{self.pods.errors[-5:]}")
        if self.cluster is not None:
            parts.append(
                f"--- kube-controller-manager\n{self.cluster.log_tail('kube-controller-manager', 10)}"
            )
        try:
            state = self.state()
            parts.append(
                "--- release history\n"
                + "\n".join(f"{h.at} {h.action}: {h.reason}" for h in state.history[-25:])
            )
        except Exception as err:  # the cluster may be the thing that failed
            parts.append(f"--- release history unavailable: {err!r}")
        return "\n".join(parts) + f"\n(all logs in {self.dir})"
