"""The local stack of the demo: HAProxy, Prometheus, Alertmanager and hey on 127.0.0.1, on free ports.

    traffic (hey) ──► HAProxy fe_app ──► be_app: stable / canary (functions.demo_service processes)
                        │ exporter
                        ▼
    Prometheus (1 s scrape and rules, infra/local/rules.yml) ──► Alertmanager ──► gateway /hooks/alertmanager

Everything lives in one work directory (configs, data, logs) and every process is a `procs.Proc` in its
own process group, stopped by `stop()` (and at exit whatever happens). Ports are chosen free, and a
component whose port was taken before it could bind it is started again on fresh ports
(`functions.local.ports`); HAProxy, then Alertmanager, then Prometheus, so each configuration names the
ports its peers actually listen on. The gateway's port must be bound by its server before `start()`. `ensure_packages()` installs the
Debian packages that are missing (prometheus, prometheus-alertmanager, haproxy, hey) when run as root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from functions.errors import ConfigError, NotReady
from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports
from functions.local.procs import Proc
from functions.local.providers import Behaviour, LocalConfig
from functions.providers.routers.haproxy import install_config

INFRA = Path(__file__).resolve().parents[2] / "infra" / "local"
PACKAGES = {
    "haproxy": ("haproxy",),
    "prometheus": ("prometheus",),
    "prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "hey": ("hey",),
}


def binary(package: str) -> str:
    for name in PACKAGES[package]:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    raise ConfigError(f"local stack: {package} is not installed; run `make deps` (Debian package {package})")


def missing_packages() -> list[str]:
    out = []
    for package in PACKAGES:
        try:
            binary(package)
        except ConfigError:
            out.append(package)
    return out


def ensure_packages(say: object = print) -> None:
    """apt-get install what is missing (root only); ConfigError naming the packages otherwise."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ConfigError(
            f"local stack: missing Debian packages {', '.join(missing)}; install them as root (make deps)"
        )
    if callable(say):
        say(f"installing {', '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(
                f"local stack: {' '.join(argv[:2])} failed ({done.returncode}): {done.stderr[-800:]}"
            )


def render(template: str, target: Path, **values: object) -> Path:
    target.write_text(
        Template((INFRA / template).read_text()).substitute(**{k: str(v) for k, v in values.items()})
    )
    return target


@dataclass
class Ports:
    haproxy: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    stable: int = field(default_factory=free_port)
    canary: int = field(default_factory=free_port)
    prometheus: int = field(default_factory=free_port)
    alertmanager: int = field(default_factory=free_port)
    gateway: int = field(default_factory=free_port)


class LocalStack:
    """HAProxy + Prometheus + Alertmanager (+ hey streams) in `workdir`; the gateway runs in-process."""

    def __init__(
        self, workdir: Path, alert_token: str, backend: str = "be_app", frontend: str = "fe_app"
    ) -> None:
        self.dir = workdir
        self.alert_token = alert_token
        self.backend, self.frontend = backend, frontend
        self.ports = Ports()
        self.procs: dict[str, Proc] = {}
        self.traffic: list[Proc] = []
        self.socket = self.dir / "haproxy" / "admin.sock"

    # -- urls -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.haproxy}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def config(self, behaviours: dict[str, Behaviour]) -> LocalConfig:
        return LocalConfig(
            workdir=str(self.dir),
            socket=str(self.socket),
            stable_port=self.ports.stable,
            canary_port=self.ports.canary,
            prometheus=self.prometheus,
            behaviours=behaviours,
        )

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            retry_on_fresh_ports("haproxy", self._haproxy, lambda: self._reroll("haproxy", "metrics"))
            retry_on_fresh_ports("alertmanager", self._alertmanager, lambda: self._reroll("alertmanager"))
            retry_on_fresh_ports("prometheus", self._prometheus, lambda: self._reroll("prometheus"))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in [*reversed(self.traffic), *reversed(self.procs.values())]:
            proc.stop()
        self.traffic.clear()

    def pids(self) -> list[int]:
        return [p.pid for p in (*self.procs.values(), *self.traffic)]

    # -- components -------------------------------------------------------------------------------
    def _haproxy(self) -> None:
        p = self.ports
        cfg = install_config(
            self.dir / "haproxy",
            bind=f"127.0.0.1:{p.haproxy}",
            stable=f"127.0.0.1:{p.stable}",
            canary=f"127.0.0.1:{p.canary}",
            metrics_bind=f"127.0.0.1:{p.metrics}",
            backend=self.backend,
            frontend=self.frontend,
        )
        self._spawn(
            "haproxy", [binary("haproxy"), "-db", "-f", str(cfg)], f"http://127.0.0.1:{p.metrics}/metrics"
        )

    def _prometheus(self) -> None:
        p = self.ports
        rules = self.dir / "rules.yml"
        shutil.copyfile(INFRA / "rules.yml", rules)
        cfg = render(
            "prometheus.yml.tmpl",
            self.dir / "prometheus.yml",
            rules=rules,
            alertmanager=f"127.0.0.1:{p.alertmanager}",
            haproxy_metrics=f"127.0.0.1:{p.metrics}",
        )
        self._spawn(
            "prometheus",
            [
                binary("prometheus"),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{p.prometheus}",
            ],
            f"{self.prometheus}/-/ready",
        )

    def _alertmanager(self) -> None:
        p = self.ports
        cfg = render(
            "alertmanager.yml.tmpl",
            self.dir / "alertmanager.yml",
            gateway=self.gateway,
            token=self.alert_token,
        )
        self._spawn(
            "alertmanager",
            [
                binary("prometheus-alertmanager"),
                f"--config.file={cfg}",
                f"--storage.path={self.dir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{p.alertmanager}",
                "--cluster.listen-address=",
            ],  # no gossip port on every interface
            f"http://127.0.0.1:{p.alertmanager}/-/ready",
        )

    def _reroll(self, *names: str) -> None:
        for name in names:
            setattr(self.ports, name, free_port())

    def _spawn(self, name: str, argv: list[str], ready: str) -> None:
        log = self.dir / "logs" / f"{name}.log"
        seen = log.stat().st_size if log.exists() else 0  # a retry appends to the same log
        proc = Proc(name, argv, log, cwd=self.dir)
        self.procs[name] = proc
        try:
            proc.wait_http(ready)
        except NotReady as err:
            proc.stop()
            del self.procs[name]
            if port_taken(log.read_text(errors="replace")[seen:]):
                raise PortTaken(f"local process {name}: its address was already in use: {err}") from err
            raise

    def start_traffic(
        self, name: str, rps: int, seconds: int, headers: dict[str, str] | None = None, workers: int = 2
    ) -> Proc:
        """A hey stream of about `rps` requests per second (-q is per worker) for `seconds` at most."""
        argv = [binary("hey"), "-z", f"{seconds}s", "-c", str(workers), "-q", str(max(1, rps // workers))]
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
        # SIGINT: hey stops and prints its summary (status code distribution) before exiting
        proc = Proc(
            f"hey {name}",
            [*argv, f"{self.url}/"],
            self.dir / "logs" / f"hey-{name}.log",
            stop_signal=signal.SIGINT,
        )
        self.traffic.append(proc)
        return proc

    def stop_traffic(self) -> dict[str, dict[str, int]]:
        """Stop every hey stream; {stream: {status code: responses}} from their summaries."""
        out = {}
        for proc in self.traffic:
            proc.stop()
            out[proc.name.removeprefix("hey ")] = status_codes(proc.tail(20000))
        self.traffic.clear()
        return out


def status_codes(hey_output: str) -> dict[str, int]:
    """hey's "Status code distribution" section as {"200": n, "429": m}."""
    section = hey_output.split("Status code distribution:", 1)
    if len(section) < 2:
        return {}
    return {code: int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", section[1])}
