"""Providers for one machine: HAProxy routes, workloads as local processes, Prometheus analysis, printed notices.

`LocalProviders` implements runner.Providers for `graylane serve --providers local` and the demo:

- router: the policy's router module (HAProxy on the admin socket `router.socket` names, else the local stack's);
- workloads: `ProcessWorkloads`, one `functions.demo_service` process per workload on 127.0.0.1:
  stable and canary on the ports HAProxy's config points at (a process whose port was taken meanwhile
  is started on a fresh one and HAProxy's server is re-addressed over the admin socket), previews on free
  ports, migration jobs as local commands. A version's behaviour (error rate, delay) comes from `LocalConfig.behaviours`
  keyed by tag: that is how the demo ships a bad v3;
- measure: `PrometheusAnalysis` against the local Prometheus;
- notifier: `PrintNotifier`, one line per notice to a callable (the terminal, or the live view).

`LocalConfig` is what the stack hands over (also as JSON, `graylane serve --local-stack FILE`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from functions.core.counters import Totals
from functions.core.events import MetricSample
from functions.core.policy import Policy
from functions.core.slots import Slot
from functions.core.state import Release
from functions.core.values import value
from functions.errors import ConfigError, GraylaneError, NotReady
from functions.local.ports import ATTEMPTS, free_port, port_taken
from functions.local.procs import Proc
from functions.providers.routers.base import Router
from functions.providers.workloads.base import WorkloadTarget


@value
class Behaviour:
    error_rate: float = 0.0
    delay: float = 0.0  # seconds


@value
class LocalConfig:
    workdir: str  # logs of the processes started here
    socket: str  # HAProxy admin socket
    stable_port: int  # the ports HAProxy's stable and canary servers point at
    canary_port: int
    prometheus: str = "http://127.0.0.1:9090"
    behaviours: Mapping[str, Behaviour] = field(default_factory=dict)  # version tag -> behaviour
    backend: str = "be_app"  # the HAProxy backend whose servers `stable` and `canary` point at the ports

    def behaviour(self, version: str) -> Behaviour:
        return self.behaviours.get(version, Behaviour())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_file(cls, path: str | Path) -> LocalConfig:
        try:
            raw = json.loads(Path(path).read_text())
            behaviours = {k: Behaviour(**v) for k, v in raw.pop("behaviours", {}).items()}
            return cls(**raw, behaviours=behaviours)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"local stack file {path}: cannot read it: {err}") from err


def version_of(image: str) -> str:
    """The tag of `repo:tag` (or the short digest of `repo@sha256:...`): what the demo service reports."""
    if "@" in image:
        return image.rsplit(":", 1)[-1][:12]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


__all__ = ["Behaviour", "LocalConfig", "LocalProviders", "ProcessWorkloads", "free_port", "version_of"]


@dataclass
class Running:
    proc: Proc
    image: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ProcessWorkloads:
    """Workloads as `functions.demo_service` processes; every call is idempotent and thread-safe."""

    def __init__(
        self,
        config: LocalConfig,
        ready_timeout: float = 15.0,
        moved: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        self.ready_timeout = ready_timeout
        self.moved = moved if moved is not None else self._readdress  # stable/canary took a fresh port
        self.running: dict[str, Running] = {}  # "stable" | "canary" | "preview/<workload>"
        self.jobs: dict[tuple[str, str], str] = {}  # (job, image) -> output, for the jobs that succeeded
        self.load_tests: dict[str, subprocess.Popen[bytes]] = {}  # name -> the hey process started for it
        self._lock = threading.RLock()

    # -- Workloads protocol ------------------------------------------------------------------------
    def deploy_canary(self, target: WorkloadTarget, image: str) -> None:
        with self._lock:
            if self._runs("canary", image):
                return
            self._stop("canary")
            self._start("canary", image, self.config.canary_port, target)

    def promote_stable(self, target: WorkloadTarget, image: str) -> None:
        """Start the new version beside the old one on the same port (SO_REUSEPORT), then retire the old."""
        with self._lock:
            if self._runs("stable", image):
                return
            old = self.running.pop("stable", None)
            self._start("stable", image, self.config.stable_port, target)
            if old is not None:
                old.proc.stop()

    def scale_down_canary(self, target: WorkloadTarget) -> None:
        with self._lock:
            self._stop("canary")

    def deploy_baseline(self, target: WorkloadTarget, image: str) -> None:
        """A fresh process of the stable's image on a free port, and HAProxy's `baseline` server pointed at it."""
        from functions.providers.routers.haproxy import AdminSocket

        with self._lock:
            if not self._runs("baseline", image):
                self._stop("baseline")
                self._start("baseline", image, free_port(), target)
            port = self.running["baseline"].port
            AdminSocket(self.config.socket).check(
                f"set server {self.config.backend}/baseline addr 127.0.0.1 port {port}"
            )

    def remove_baseline(self, target: WorkloadTarget) -> None:
        """The baseline's process stops (its server left the route already: weight 0)."""
        with self._lock:
            self._stop("baseline")

    def scale_canary(self, target: WorkloadTarget, share: int | None) -> None:
        """One process per workload here: there is no autoscaler to size."""

    def deploy_version(self, target: WorkloadTarget, slot: Slot, source: str) -> None:
        raise ConfigError(
            f"{target.namespace}/{target.app}: workload.model per-version needs Kubernetes "
            "Deployments and Istio subsets; the local providers run a stable/canary pair"
        )

    def scale_down_version(self, target: WorkloadTarget, slot: Slot) -> None:
        self.deploy_version(target, slot, "")

    def delete_version(self, target: WorkloadTarget, slot: Slot) -> None:
        self.deploy_version(target, slot, "")

    def deploy_preview(
        self, target: WorkloadTarget, image: str, environment: str, namespace: str, workload: str
    ) -> None:
        key = f"preview/{workload or f'{target.app}-{environment}'}"
        with self._lock:
            if self._runs(key, image):
                return
            self._stop(key)
            self._start(key, image, free_port(), target)

    def run_job(self, target: WorkloadTarget, name: str, image: str, command: tuple[str, ...]) -> None:
        """Run `command` here with GRAYLANE_IMAGE/GRAYLANE_JOB set; a failure is retried by the next event."""
        with self._lock:
            if (name, image) in self.jobs:
                return
            env = {
                "GRAYLANE_IMAGE": image,
                "GRAYLANE_JOB": name,
                "GRAYLANE_APP": f"{target.namespace}/{target.app}",
            }
            try:
                done = subprocess.run(
                    list(command) or ["true"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env={**os.environ, **env},
                    cwd=self.config.workdir,
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise GraylaneError(
                    f"local job {name} of {target.namespace}/{target.app}: run {command!r} failed: {err}"
                ) from err
            if done.returncode != 0:
                raise GraylaneError(
                    f"local job {name} of {target.namespace}/{target.app}: {command!r} exited "
                    f"{done.returncode}: {(done.stderr or done.stdout)[-500:]}"
                )
            self.jobs[(name, image)] = done.stdout

    def start_load_test(self, target: WorkloadTarget, name: str, image: str, args: tuple[str, ...]) -> None:
        """Debian's hey here, in the background (the image is Kubernetes' concern); once per name."""
        with self._lock:
            if name in self.load_tests:
                return
            binary = shutil.which("hey")
            if binary is None:
                raise GraylaneError(
                    f"local load test {name} of {target.namespace}/{target.app}: hey is not "
                    "installed (apt-get install hey)"
                )
            log = Path(self.config.workdir) / "logs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as out:
                self.load_tests[name] = subprocess.Popen(
                    [binary, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )

    # -- for the demo and the stack ------------------------------------------------------------------
    def version(self, key: str) -> str:
        with self._lock:
            r = self.running.get(key)
            return version_of(r.image) if r is not None and r.proc.alive() else ""

    def url(self, key: str) -> str:
        with self._lock:
            r = self.running.get(key)
            return r.url if r is not None else ""

    def pids(self) -> list[int]:
        with self._lock:
            return [r.proc.pid for r in self.running.values()]

    def stop_all(self) -> None:
        with self._lock:
            for key in list(self.running):
                self._stop(key)
            for proc in self.load_tests.values():
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=5)

    # -- helpers ------------------------------------------------------------------------------------
    def _runs(self, key: str, image: str) -> bool:
        r = self.running.get(key)
        return r is not None and r.image == image and r.proc.alive()

    def _stop(self, key: str) -> None:
        r = self.running.pop(key, None)
        if r is not None:
            r.proc.stop()

    def _start(self, key: str, image: str, port: int, target: WorkloadTarget) -> None:
        """Start the process on `port`; if that port was taken meanwhile, on a fresh one (stable and canary: and
        point HAProxy's server there)."""
        version = version_of(image)
        b = self.config.behaviour(version)
        name = key.rsplit("/", 1)[-1]
        log = Path(self.config.workdir) / "logs" / f"{name}-{version}.log"
        for attempt in range(1, ATTEMPTS + 1):
            argv = [
                sys.executable,
                "-m",
                "functions.demo_service",
                "--name",
                name,
                "--version",
                version,
                "--port",
                str(port),
                "--error-rate",
                str(b.error_rate),
                "--delay",
                str(b.delay),
            ]
            proc = Proc(
                f"{target.namespace}/{target.app} {key} {version}", argv, log, env={"PYTHONPATH": _root()}
            )
            self.running[key] = Running(proc, image, port)
            try:
                self._wait_started(proc, version, port)
                return
            except NotReady:
                proc.stop()
                self.running.pop(key, None)
                if attempt == ATTEMPTS or not port_taken(proc.tail(4000)):
                    raise
            port = free_port()
            if key in ("stable", "canary"):
                self.moved(key, port)

    def _readdress(self, key: str, port: int) -> None:
        """Point HAProxy's `key` server at 127.0.0.1:port and remember it (the config's stable/canary port)."""
        from dataclasses import replace

        from functions.providers.routers.haproxy import AdminSocket

        AdminSocket(self.config.socket).check(
            f"set server {self.config.backend}/{key} addr 127.0.0.1 port {port}"
        )
        self.config = (
            replace(self.config, stable_port=port)
            if key == "stable"
            else replace(self.config, canary_port=port)
        )

    def _wait_started(self, proc: Proc, version: str, port: int) -> None:
        # The banner is printed once the socket serves; /healthz could be answered by the old stable.
        deadline = time.monotonic() + self.ready_timeout
        while f"{version} on http://127.0.0.1:{port}" not in proc.tail(4000):
            if not proc.alive():
                raise NotReady(
                    f"local workload {proc.name} exited with {proc.popen.returncode}: {proc.tail()}"
                )
            if time.monotonic() > deadline:
                raise NotReady(
                    f"local workload {proc.name} did not start within {self.ready_timeout} s: {proc.tail()}"
                )
            time.sleep(0.02)


def _root() -> str:
    """The directory holding the `functions` package, so `python -m functions.demo_service` finds it."""
    return str(Path(__file__).resolve().parents[2])


class PrintNotifier:
    """Each notice as one line to `out` (the terminal, or the live view's notice area)."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.sent: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(self, notice: dict[str, Any]) -> None:
        with self._lock:
            self.sent.append(notice)
        self.out(f"notice {notice.get('app', '')}: {notice.get('message') or notice.get('type', '')}")


class LocalProviders:
    """runner.Providers on one machine (see the module docstring)."""

    def __init__(self, config: LocalConfig, out: Callable[[str], None] = print, analysis: Any = None) -> None:
        self.config = config
        self.workloads_ = ProcessWorkloads(config)
        self.notifier_ = PrintNotifier(out)
        if analysis is None:
            from functions.providers.metrics.prometheus import PrometheusAnalysis

            analysis = PrometheusAnalysis(config.prometheus, timeout=2.0, retries=1)
        self.analysis = analysis
        self._routers: dict[str, Router] = {}
        self._lock = threading.Lock()

    def router(self, policy: Policy, cluster: str) -> Router:
        """The policy's router, built by its module like everywhere else (functions.providers.routers);
        this machine has no Kubernetes, and supplies the local stack's HAProxy admin socket."""
        from functions.providers.routers import make_router, per_options
        from functions.providers.routers.base import Cluster

        provider, options = policy.router.provider, policy.router.options
        key = json.dumps([provider, options if per_options(provider) else {}], sort_keys=True, default=str)
        place = Cluster(name="local", defaults={"socket": self.config.socket})
        with self._lock:
            if key not in self._routers:
                self._routers[key] = make_router(provider, place, None, options)
            return self._routers[key]

    def workloads(self, policy: Policy, cluster: str) -> ProcessWorkloads:
        return self.workloads_

    def notifier(self, policy: Policy) -> PrintNotifier:
        return self.notifier_

    def flags(self, policy: Policy, cluster: str) -> Any:
        """Flags in the file spec.flags names (flagd or the SDK's file provider reads it)."""
        from functions.providers.flags import flag_store

        return flag_store(policy.flags, policy.namespace)

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        samples: tuple[MetricSample, ...] = self.analysis.measure(policy, release)
        return samples

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        batched: dict[str, tuple[MetricSample, ...]] = self.analysis.measure_many(pairs)
        return batched

    def totals_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, Totals]:
        batched: dict[str, Totals] = self.analysis.totals_many(pairs)
        return batched

    def close(self) -> None:
        self.workloads_.stop_all()
