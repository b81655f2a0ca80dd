"""Cold start: process spawn -> first CloudEvent answered 200, per function, next to hello-world.

Each run spawns `functions-framework --target T --source FILE` on a free port and POSTs a binary-mode
CloudEvent every 5 ms until one is answered 200. The first event is real work, not a no-op: every run
starts from a copy of the same seeded state store (flask stable on v1.0.0; canary-demo at its first canary
step with the 2-minute pause over) and its event must move that state on (checked after each run):
release_start starts flask v1.1.0, release_tick advances canary-demo, release_command pauses it,
protection tightens flask's rate limit. Runs are interleaved (hello, f1, f2, ..., hello, ...) so machine
noise hits all of them alike; the verdict compares medians measured in this same run.

The functions read compiled policies from the policy cache, filled by the warm-up run as by any earlier
process (or `graylane validate --compile`). Two more rows are for information: release_tick with the cache
off (what the first cold start after a policy edit pays for parsing YAML), and release_command with its
state and policies in ConfigMaps of a real kube-apiserver, as on Knative (the official client's import).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from functions.internal_auth import attestation
from tests.bench.registry import suite

ROOT = Path(__file__).resolve().parents[2]
INTERNAL_TOKEN, EDGE_KEY = "bench-internal-token-0123456789", "bench-edge-key-0123456789"
FF = str(Path(sys.executable).parent / "functions-framework")
POLICIES = ROOT / "infra/examples"
TARGET_RATIO = 1.3
FLASK_REPO = "registry.example.com/coding/cd-production/flask"
DEMO_REPO = "docker.io/argoproj/rollouts-demo"

# name -> (source, CloudEvent type, subject, JSON data, the app whose state the event must change)
FUNCTIONS: dict[str, tuple[str, str, str, str, str]] = {
    "hello-world": (str(Path(__file__).with_name("hello.py")), "dev.example.hello", "x", "{}", ""),
    "release_tick": (
        str(ROOT / "functions/release_tick.py"),
        "dev.graylane.release.tick",
        "default/canary-demo",
        "{}",
        "default/canary-demo",
    ),
    "release_start": (
        str(ROOT / "functions/release_start.py"),
        "dev.graylane.image.pushed",
        "",
        json.dumps({"repository": FLASK_REPO, "tag": "v1.1.0", "source": "generic"}),
        "pro/flask",
    ),
    "release_command": (
        str(ROOT / "functions/release_command.py"),
        "dev.graylane.release.command",
        "default/canary-demo",
        '{"action": "pause", "actor": {"user": "alice", "via": "cli"}}',
        "default/canary-demo",
    ),
    "protection": (
        str(ROOT / "functions/protection.py"),
        "dev.graylane.alert.firing",
        "pro/flask",
        json.dumps(
            {
                "fingerprint": "abc",
                "alertname": "FlaskHighErrorRate",
                "status": "firing",
                "labels": {"service": "k8s-flask"},
                "annotations": {},
                "startsAt": "2026-11-23T08:00:00Z",
            }
        ),
        "pro/flask",
    ),
}
# row -> (function, backend, extra environment); the last two rows are for information
CASES: dict[str, tuple[str, str, dict[str, str]]] = {name: (name, "sqlite", {}) for name in FUNCTIONS}
UNCACHED = "release_tick, policy cache off"
KUBERNETES = "release_command, ConfigMap state + policies on a kube-apiserver"
CASES[UNCACHED] = ("release_tick", "sqlite", {"GRAYLANE_POLICY_CACHE": "off"})
CASES[KUBERNETES] = ("release_command", "kubernetes", {})
INFO = (UNCACHED, KUBERNETES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(store: Any, policies: Any) -> None:
    """The state every run starts from, written by the runner itself ten minutes in the past."""
    from functions.catalog import make_event
    from functions.providers.recording import RecordingProviders
    from functions.runner import Runner

    past = datetime.now(UTC) - timedelta(minutes=10)
    runner = Runner(store, policies, RecordingProviders(), None, clock=lambda: past)
    for repo, tag in ((FLASK_REPO, "v1.0.0"), (DEMO_REPO, "v1"), (DEMO_REPO, "v2")):
        data = {"repository": repo, "tag": tag, "source": "generic"}
        [outcome] = runner.handle_cloudevent(make_event("dev.graylane.image.pushed", "", data))
        if outcome.status != "transitioned":
            raise RuntimeError(f"seeding {repo}:{tag}: {outcome.status} {outcome.reason}")


class SqliteBackend:
    """The embedded default: each run gets a copy of one seeded SQLite file."""

    def __init__(self, workdir: Path) -> None:
        from functions.policies import DirectoryPolicies
        from functions.providers.stores.sqlite import SqliteStore

        self.workdir, self.template = workdir, workdir / "seeded.db"
        store = SqliteStore(self.template)
        seed(store, DirectoryPolicies(POLICIES))
        store.close()

    def prepare(self, name: str) -> dict[str, str]:
        self.db = self.workdir / f"{name}.db"
        shutil.copyfile(self.template, self.db)
        return {"GRAYLANE_STORE": f"sqlite:///{self.db}"}

    def state(self, app: str) -> dict[str, Any]:
        from functions.providers.stores.sqlite import SqliteStore

        store = SqliteStore(self.db)
        try:
            return json.loads(store.load(app)[0] or "{}")  # type: ignore[no-any-return]
        finally:
            store.close()


class KubernetesBackend:
    """State and policies in ConfigMaps of a real kube-apiserver (what Knative runs): each run restores the
    seeded state documents."""

    def __init__(self) -> None:
        from kubernetes import client

        from functions.providers.policysource import ConfigMapPolicies
        from functions.providers.stores.configmap import ConfigMapStore
        from tests.k8s.cluster import KubeCluster

        self.cluster = KubeCluster.start()
        self.api = self.cluster.api_client()
        core = client.CoreV1Api(self.api)
        for path in sorted(POLICIES.glob("*.yaml")):
            text = path.read_text()
            for ns in {
                line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("  namespace:")
            }:
                if ns not in {n.metadata.name for n in core.list_namespace().items}:
                    core.create_namespace({"metadata": {"name": ns}})
                core.create_namespaced_config_map(
                    ns,
                    {
                        "metadata": {
                            "name": f"policy-{path.stem}",
                            "labels": {"graylane.dev/role": "policy"},
                        },
                        "data": {"policy.yaml": text},
                    },
                )
        self.store = ConfigMapStore(self.api)
        seed(self.store, ConfigMapPolicies(self.api))
        self.seeded = {app: self.store.load(app)[0] for app in self.store.list_apps()}

    def prepare(self, name: str) -> dict[str, str]:
        for app, document in self.seeded.items():
            _, version = self.store.load(app)
            self.store.save(app, document or "{}", version)
        return {
            "GRAYLANE_STORE": f"configmap://?kubeconfig={self.cluster.kubeconfig}",
            "GRAYLANE_POLICIES": "configmap://",
            "KUBECONFIG": str(self.cluster.kubeconfig),
        }

    def state(self, app: str) -> dict[str, Any]:
        return json.loads(self.store.load(app)[0] or "{}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.api.close()
        self.cluster.stop()


def cold_start(case: str, env: dict[str, str], backends: dict[str, Any]) -> float:
    name, backend_name, extra = CASES[case]
    backend = backends[backend_name]
    source, ce_type, subject, data, app = FUNCTIONS[name]
    env = {**env, **backend.prepare(name), **extra}
    before = backend.state(app).get("generation", 0) if app else 0
    port = _free_port()
    event_id = f"bench-{name}-{port}-{time.monotonic_ns()}"
    headers = {
        "ce-specversion": "1.0",
        "ce-type": ce_type,
        "ce-source": "/bench",
        "ce-id": event_id,
        "Content-Type": "application/json",
        "Authorization": f"Bearer {INTERNAL_TOKEN}",
    }
    if subject:
        headers["ce-subject"] = subject
    # as the gateway would have made it (functions/internal_auth.py): the functions require the attestation
    headers["ce-graylaneedge"] = attestation(
        {
            "type": ce_type,
            "id": event_id,
            "subject": subject or "",
            "data": json.loads(data) if data.strip() else {},
        },
        EDGE_KEY,
    )
    target = "hello" if name == "hello-world" else name
    started = time.perf_counter()
    proc = subprocess.Popen(
        [FF, "--target", target, "--source", source, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        elapsed = _first_answer(name, port, data, headers, started)
    finally:
        proc.terminate()
        proc.wait(10)
    if app:  # the event did real work: it moved the app's state on
        state = backend.state(app)
        if state.get("generation", 0) <= before or event_id not in state.get("seen", []):
            raise RuntimeError(
                f"{case}: the first event did not change {app} (generation {before} -> "
                f"{state.get('generation')})"
            )
    return elapsed


def _first_answer(name: str, port: int, data: str, headers: dict[str, str], started: float) -> float:
    while time.perf_counter() - started < 30:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/", body=data, headers=headers)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.perf_counter() - started
            raise RuntimeError(f"{name} answered {status}")
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            time.sleep(0.005)
    raise RuntimeError(f"{name} did not answer within 30 s")


@suite("coldstart")
def bench_coldstart(args: argparse.Namespace) -> dict[str, Any]:
    runs = 3 if args.quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        backends: dict[str, Any] = {"sqlite": SqliteBackend(workdir), "kubernetes": KubernetesBackend()}
        env = {
            **os.environ,
            "GRAYLANE_POLICIES": str(POLICIES),
            "GRAYLANE_POLICY_CACHE": str(workdir / "policies"),
            "GRAYLANE_INTERNAL_TOKEN": INTERNAL_TOKEN,
            "GRAYLANE_EDGE_KEY": EDGE_KEY,
        }
        # byte-compiled like an installed image (pip compiles site-packages; our sources need it too)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "functions")], check=True)
        try:
            for case in CASES:  # warm-up: byte-code caches, the page cache, the policy cache
                cold_start(case, env, backends)
            samples: dict[str, list[float]] = {case: [] for case in CASES}
            for _ in range(runs):
                for case in CASES:
                    samples[case].append(cold_start(case, env, backends))
        finally:
            backends["kubernetes"].close()
    medians = {n: statistics.median(v) for n, v in samples.items()}
    base = medians["hello-world"]
    rows = []
    for name, med in medians.items():
        ratio = med / base
        verdict = (
            "-" if name == "hello-world" or name in INFO else ("ok" if ratio <= TARGET_RATIO else "MISS")
        )
        target = "baseline" if name == "hello-world" else "info" if name in INFO else f"<= {TARGET_RATIO}x"
        rows.append(
            (f"cold start {name} (median of {runs})", f"{med * 1000:.0f} ms ({ratio:.2f}x)", target, verdict)
        )
    return {
        "runs": runs,
        "samples_s": samples,
        "median_s": medians,
        "ratio": {n: m / base for n, m in medians.items()},
        "rows": rows,
    }
