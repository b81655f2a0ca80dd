"""The pod runner: real backends for the pods the test cluster runs (kwok only pretends to run them).

For every Ready pod of the watched namespaces that has a pod IP (seen by a watch, resynced by a list every
0.1 s), it serves the demo service
(functions.demo_service) on `podIP:containerPort` for each port of the pod's first container, answering
`X-Version: <the image's tag>` and `X-Backend: <namespace>/<pod>`. When the pod stops being Ready or goes
away, its backend keeps answering for `drain` seconds (the preStop delay a real pod would have while the
EndpointSlice change reaches the proxy), then stops with every connection it holds (a pod's sockets die
with it: kwok may hand its IP to the next pod at once). So the Services' Endpoints and EndpointSlices that
kube-controller-manager computes from the ready pods lead to processes of exactly the version the
Deployment runs: a request answered by "v2" came through a route to a v2 pod.

Behaviour is per version (every pod of the version shares it) and can change while they run; a track's pods
(label graylane.dev/track, e.g. a fresh baseline of the stable's version) may have their own:

    runner = PodRunner(api_client, ["pro-1"]).start()
    runner.set("v2", error_rate=0.35, delay=0.02)
    runner.set("v1", delay=0.05, track="baseline")  # fresh v1 pods, slower than the warm stable's
    runner.serving("pro-1")            # {(ip, port): version} being served now
    runner.stop()
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from functions.demo_service import Behaviour, DemoServer

TRACK = "graylane.dev/track"


def image_version(image: str) -> str:
    """The tag of an image reference ("registry:5000/team/flask:v1.2@sha256:..." -> "v1.2"), or "latest"."""
    ref = image.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    return tag if name and "/" not in tag else "latest"


def pod_ready(pod: Any) -> bool:
    status = pod.status
    if status is None or pod.metadata.deletion_timestamp is not None or not status.pod_ip:
        return False
    return status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in status.conditions or []
    )


class _PodServer(DemoServer):
    """The demo service as a pod's process: when it stops, every connection it holds goes with it (a
    stopped pod's sockets do not outlive it; kwok may give its IP to the next pod at once). One process per
    pod address: no SO_REUSEPORT, so two pods' processes can never share one and split its connections."""

    allow_reuse_port = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def kill(self) -> None:
        self.draining = True
        self.shutdown()
        self.server_close()
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@dataclass
class _Served:
    version: str
    server: _PodServer
    thread: threading.Thread
    gone_at: float | None = None  # monotonic time the pod stopped being ready

    def stop(self) -> None:
        self.server.kill()
        self.thread.join(timeout=5)


class PodRunner:
    def __init__(
        self,
        api_client: Any,
        namespaces: Iterable[str] = (),
        interval: float = 0.1,
        drain: float = 2.0,
        resolve: Callable[[str], str] | None = None,
    ) -> None:
        """`resolve`: image reference -> the version its pods answer (default: the tag, image_version); the e2e
        reads a digest-pinned image's version from the registry it was pushed to, as a runtime pulls it."""
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._api_client = api_client
        self.namespaces: set[str] = set(namespaces)
        self.interval, self.drain = interval, drain
        self.resolve = resolve or image_version
        self.behaviours: dict[str, Behaviour] = {}
        self.errors: list[str] = []
        self._served: dict[tuple[str, str, int], _Served] = {}  # (namespace, pod uid, port)
        self._lock = threading.Lock()
        self._starting = threading.Lock()  # one thread at a time checks and binds a pod's backend
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-runner", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="pod-runner-watch", daemon=True)

    # -- control ---------------------------------------------------------------------------------------
    def start(self) -> PodRunner:
        self._thread.start()
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._watcher.join(10)
        with self._lock:
            served, self._served = list(self._served.values()), {}
        for s in served:
            s.stop()

    def watch(self, namespace: str) -> None:
        with self._lock:
            self.namespaces.add(namespace)

    def behaviour(self, version: str, track: str = "") -> Behaviour:
        with self._lock:
            return self.behaviours.setdefault(f"{version}@{track}" if track else version, Behaviour())

    def set(
        self, version: str, error_rate: float | None = None, delay: float | None = None, track: str = ""
    ) -> None:
        """Every pod of `version` (now and later) answers 500 with `error_rate` and `delay` s later; with `track`,
        only the pods of that track (set before they start)."""
        b = self.behaviour(version, track)
        if error_rate is not None:
            b.error_rate = error_rate
        if delay is not None:
            b.delay = delay

    def served(self, version: str) -> int:
        return self.behaviour(version).served

    def serving(self, namespace: str) -> dict[tuple[str, int], str]:
        """(pod IP, port) -> version of the backends of `namespace` that serve (draining ones included)."""
        with self._lock:
            return {
                (s.server.server_address[0], s.server.server_address[1]): s.version
                for (ns, _, _), s in self._served.items()
                if ns == namespace
            }

    def wait_serving(self, namespace: str, versions: dict[str, int], timeout: float = 30.0) -> None:
        """Until exactly `versions` ({version: number of ready pods}) are served in `namespace` and none drain."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                live = [s for (ns, _, _), s in self._served.items() if ns == namespace]
                counts: dict[str, int] = {}
                for s in live:
                    if s.gone_at is None:
                        counts[s.version] = counts.get(s.version, 0) + 1
                draining = any(s.gone_at is not None for s in live)
            if counts == versions and not draining:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pods of {namespace}: serving {counts} (draining: {draining}), "
                    f"wanted {versions}; runner errors {self.errors[-3:]}"
                )
            time.sleep(0.05)

    # -- the loops -------------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Start a pod's backend the moment it is reported Ready, as fast as the endpoint controllers learn
        of it (a kubelet would have the process up first): the proxy never meets a ready pod that refuses."""
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self._core.list_pod_for_all_namespaces, timeout_seconds=2, _request_timeout=10
                ):
                    pod = event["object"]
                    with self._lock:
                        wanted = pod.metadata.namespace in self.namespaces
                    if wanted and event["type"] in ("ADDED", "MODIFIED") and pod_ready(pod):
                        self._serve(pod.metadata.namespace, pod)
                    if self._stop.is_set():
                        return
            except Exception as err:  # the resync loop still serves every ready pod; try again
                self.errors.append(f"watch pods: {err!r}"[:300])
                self._stop.wait(0.5)

    def _run(self) -> None:
        """Resync: serve every ready pod (in case the watch missed one), retire those gone."""
        while not self._stop.is_set():
            with self._lock:
                namespaces = sorted(self.namespaces)
            seen: set[tuple[str, str, int]] = set()
            listed: set[str] = set()
            for ns in namespaces:
                try:
                    pods = self._core.list_namespaced_pod(ns).items
                except Exception as err:  # the namespace may be going away; keep serving what runs
                    self.errors.append(f"{ns}: list pods: {err!r}"[:300])
                    continue
                listed.add(ns)
                for pod in pods:
                    if pod_ready(pod):
                        seen.update(self._serve(ns, pod))
            self._retire(seen, listed)
            self._stop.wait(self.interval)

    def _serve(self, ns: str, pod: Any) -> list[tuple[str, str, int]]:
        with self._starting:
            return self._serve_pod(ns, pod)

    def _serve_pod(self, ns: str, pod: Any) -> list[tuple[str, str, int]]:
        container = pod.spec.containers[0]
        try:
            version = self.resolve(container.image or "")
        except Exception as err:  # an image that cannot be pulled: no process, as a kubelet would fail it
            if len(self.errors) < 1000:
                self.errors.append(f"{ns}/{pod.metadata.name}: image {container.image}: {err!r}"[:300])
            return []
        keys = []
        for port in container.ports or []:
            if (port.protocol or "TCP") != "TCP":
                continue
            key = (ns, pod.metadata.uid, int(port.container_port))
            keys.append(key)
            address = (pod.status.pod_ip, int(port.container_port))
            with self._lock:
                running = self._served.get(key)
                if running is not None:
                    running.gone_at = None  # ready again
                    continue
                # kwok gives a deleted pod's IP to the next pod at once: the old pod is gone, its process too
                previous = [k for k, v in self._served.items() if v.server.server_address[:2] == address]
                replaced = [self._served.pop(k) for k in previous]
            for old in replaced:
                old.stop()
            track = (pod.metadata.labels or {}).get(TRACK, "")
            with self._lock:
                own = bool(track) and f"{version}@{track}" in self.behaviours
            try:
                server = _PodServer(
                    f"{ns}/{pod.metadata.name}",
                    version,
                    int(port.container_port),
                    self.behaviour(version, track if own else ""),
                    host=pod.status.pod_ip,
                )
            except OSError as err:
                self.errors.append(
                    f"{ns}/{pod.metadata.name}: bind {pod.status.pod_ip}:{port.container_port}: {err}"
                )
                continue
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"pod-{pod.metadata.name}",
                daemon=True,
            )
            thread.start()
            with self._lock:
                self._served[key] = _Served(version, server, thread)
        return keys

    def _retire(self, seen: set[tuple[str, str, int]], listed: set[str]) -> None:
        now = time.monotonic()
        done = []
        with self._lock:
            for key, s in self._served.items():
                if key in seen or key[0] not in listed:
                    continue
                if s.gone_at is None:
                    s.gone_at = now
                elif now - s.gone_at >= self.drain:
                    done.append(key)
            stopped = [self._served.pop(key) for key in done]
        for s in stopped:
            s.stop()
