"""Debian's Prometheus and Alertmanager around the e2e's Traefik, as an operator would wire them:

    Traefik metrics entry point ──► Prometheus (scrape 1 s; rule FlaskHighErrorRate on pro.coding's 5xx ratio)
        ──► Alertmanager (group_wait 0 s, send_resolved) ──► graylane's public POST /hooks/alertmanager (Bearer)

graylane's analysis queries the same Prometheus (GRAYLANE_PROMETHEUS). Prometheus gets its port before
graylane starts (graylane's setting names it); Alertmanager starts once graylane's port is known.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports
from tests.real.protection_stack import binary

ALERT = "FlaskHighErrorRate"  # the protection rule of infra/examples/traefik-pipeline.yaml
# Every backend of pro.coding in Traefik's service metrics: the weighted pair (<ns>-<svc>-8080), and a route
# with one service, whose load balancer Traefik names after the route (pro-k8s-flask-pro-<hash>).
PRO_SERVICES = 'service=~"pro-k8s-flask-.*@kubernetescrd"'
ERROR_RATIO = (
    f'sum(rate(traefik_service_requests_total{{{PRO_SERVICES},code=~"5.."}}[5s])) / '
    f"sum(rate(traefik_service_requests_total{{{PRO_SERVICES}}}[5s]))"
)
THRESHOLD = 0.3  # above a bad canary's share of errors at 50 % (35 % x 0.5): only a real burst fires it


@dataclass
class Process:
    name: str
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def spawn(self, argv: list[str]) -> None:
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.directory
        )
        out.close()

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                text = self.tail(60)
                if port_taken(text):
                    raise PortTaken(f"{self.name}: port taken")
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{text}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready at {url} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Monitoring:
    directory: Path
    traefik_metrics_port: int
    prometheus_port: int = field(default_factory=free_port)
    alertmanager_port: int = field(default_factory=free_port)
    prometheus: Process = field(init=False)
    alertmanager: Process = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prometheus = Process("prometheus", self.directory)
        self.alertmanager = Process("alertmanager", self.directory)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    # -- Prometheus (before graylane: graylane's GRAYLANE_PROMETHEUS names it) ----------------------------------
    def start_prometheus(self) -> None:
        rules = {
            "groups": [
                {
                    "name": "flask",
                    "interval": "1s",
                    "rules": [
                        {"record": "pro:flask_5xx_ratio:rate5s", "expr": ERROR_RATIO},
                        {
                            "alert": ALERT,
                            "expr": f"pro:flask_5xx_ratio:rate5s > {THRESHOLD}",
                            "for": "0s",
                            "labels": {"service": "k8s-flask", "severity": "critical"},
                            "annotations": {
                                "summary": "pro.coding answers {{ $value | humanizePercentage }} 5xx"
                            },
                        },
                    ],
                }
            ]
        }
        (self.directory / "rules.yml").write_text(json.dumps(rules, indent=1))
        exe = binary("prometheus")

        def start() -> None:
            config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": ["rules.yml"],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        "job_name": "traefik",
                        "static_configs": [{"targets": [f"127.0.0.1:{self.traefik_metrics_port}"]}],
                    }
                ],
            }
            (self.directory / "prometheus.yml").write_text(json.dumps(config, indent=1))
            self.prometheus.spawn(
                [
                    exe,
                    "--config.file=prometheus.yml",
                    f"--storage.tsdb.path={self.directory / 'prom'}",
                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                ]
            )
            self.prometheus.wait_ready(f"{self.prometheus_url}/-/ready")

        def reroll() -> None:
            self.prometheus_port = free_port()

        retry_on_fresh_ports("prometheus", start, reroll)

    # -- Alertmanager (after graylane: its receiver is graylane's port) -----------------------------------------
    def start_alertmanager(self, graylane_url: str, token: str) -> None:
        config = {
            "route": {
                "receiver": "graylane",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "graylane",
                    "webhook_configs": [
                        {
                            "url": f"{graylane_url}/hooks/alertmanager",
                            "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                        }
                    ],
                }
            ],
        }
        (self.directory / "alertmanager.yml").write_text(json.dumps(config, indent=1))
        exe = binary("prometheus-alertmanager", "alertmanager")
        # the port Prometheus was configured with is tried first; if someone took it, Prometheus is pointed
        # at the new one (a config reload)

        def start() -> None:
            self.alertmanager.spawn(
                [
                    exe,
                    "--config.file=alertmanager.yml",
                    f"--storage.path={self.directory / 'am'}",
                    f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                    "--cluster.listen-address=",
                ]
            )
            self.alertmanager.wait_ready(f"http://127.0.0.1:{self.alertmanager_port}/-/ready")

        def reroll() -> None:
            self.alertmanager_port = free_port()

        before = self.alertmanager_port
        retry_on_fresh_ports("alertmanager", start, reroll)
        if self.alertmanager_port != before:
            self.start_prometheus_again()

    def start_prometheus_again(self) -> None:
        self.prometheus.stop()
        self.start_prometheus()

    # -- queries ---------------------------------------------------------------------------------------------
    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as r:
            result: list[dict[str, Any]] = json.load(r)["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's active alerts."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.alertmanager_port}/api/v2/alerts", timeout=5
        ) as r:
            found: list[dict[str, Any]] = json.load(r)
        return found

    def firing(self, name: str = ALERT) -> bool:
        return any(
            a["labels"].get("alertname") == name and a["status"]["state"] == "active" for a in self.alerts()
        )

    def stop(self) -> None:
        self.alertmanager.stop()
        self.prometheus.stop()
