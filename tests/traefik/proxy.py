"""A real Traefik (v2.11 or v3, built from its Go module) reading the test apiserver, on loopback.

    proxy = Traefik.start("v3", workdir, kubeconfig, namespaces=["pro-x"], gateway=True)
    proxy.port             # the `web` entry point: 127.0.0.1:<port> (IngressRoutes name entryPoints [web])
    proxy.metrics_port     # Prometheus metrics (`metrics` entry point, services labels on)
    proxy.raw()            # /api/rawdata: the dynamic configuration Traefik is running with
    proxy.wait_route(ir)   # until an IngressRoute as stored is what Traefik routes by
    proxy.stop()

The static configuration is a file (`traefik.yaml`): entry points `web`, `metrics` and `traefik` (the
API, insecure, for rawdata) on free loopback ports; the kubernetesCRD provider (and for v3 the
kubernetesGateway provider) restricted to the given namespaces; the apiserver comes from KUBECONFIG
(the test kubeconfig: its token, TLS unverified: the apiserver's certificate is self-signed), which both
versions' providers read before any endpoint option. Traefik v2.11's CRD provider reads core/v1
Endpoints, v3's reads EndpointSlices; both are what kube-controller-manager maintains for the Services.

A port taken between picking and binding (Traefik exits: "bind: address already in use") is retried on
fresh ports (functions.local.ports); any other early exit fails with the log's tail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.local.ports import free_port, port_taken
from tests.traefik.binaries import traefik_binary

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
CRD, GATEWAY = "kubernetescrd", "kubernetesgateway"


class TraefikFailed(AssertionError):
    """Traefik exited, or did not get ready in time; the message has its log's tail."""


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def static_config(
    version: str,
    ports: Mapping[str, int],
    namespaces: Iterable[str],
    gateway: bool,
    access_log: Path | None = None,
) -> dict[str, Any]:
    """Traefik's static configuration (the same keys in v2.11 and v3, plus the Gateway provider on v3)."""
    ns = sorted(namespaces)
    crd: dict[str, Any] = {"namespaces": ns, "allowCrossNamespace": True}
    config: dict[str, Any] = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "INFO", "noColor": True} if version == "v3" else {"level": "INFO"},
        "entryPoints": {name: {"address": f"127.0.0.1:{port}"} for name, port in ports.items()},
        "api": {"insecure": True, "dashboard": False},
        "ping": {"entryPoint": "traefik"},
        "metrics": {
            "prometheus": {
                "entryPoint": "metrics",
                "addServicesLabels": True,
                "addEntryPointsLabels": True,
                "addRoutersLabels": True,
                "buckets": list(BUCKETS),
            }
        },
        "providers": {"providersThrottleDuration": "100ms", "kubernetesCRD": crd},
    }
    if gateway:
        if version != "v3":
            raise ValueError("the Kubernetes Gateway provider is run on Traefik v3 only")
        config["providers"]["kubernetesGateway"] = {"namespaces": ns, "statusAddress": {"ip": "127.0.0.1"}}
    if access_log is not None:
        config["accessLog"] = {"filePath": str(access_log), "format": "json"}
    return config


@dataclass
class Traefik:
    version: str  # "v2" | "v3"
    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    metrics_port: int
    api_port: int
    namespaces: tuple[str, ...]
    gateway: bool
    _log: Any = field(default=None, repr=False)

    # -- lifecycle -------------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        version: str,
        directory: Path,
        kubeconfig: Path,
        namespaces: Iterable[str],
        gateway: bool = False,
        access_log: bool = False,
        attempts: int = 3,
        timeout: float = 30.0,
    ) -> Traefik:
        binary = traefik_binary(version)  # TraefikMissing: how to build it
        directory.mkdir(parents=True, exist_ok=True)
        last = ""
        for attempt in range(attempts):
            ports = {"web": free_port(), "metrics": free_port(), "traefik": free_port()}
            config = static_config(
                version, ports, namespaces, gateway, directory / "access.log" if access_log else None
            )
            path = directory / "traefik.yaml"
            path.write_text(json.dumps(config, indent=1))  # JSON is YAML
            log_path = directory / "traefik.log"
            log = log_path.open("ab")
            log.write(f"--- start {attempt + 1}: {json.dumps(ports)}\n".encode())
            log.flush()
            env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
            env["KUBECONFIG"] = str(kubeconfig)
            process = subprocess.Popen(
                [str(binary), f"--configFile={path}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
                env=env,
            )
            proxy = cls(
                version,
                process,
                directory,
                ports["web"],
                ports["metrics"],
                ports["traefik"],
                tuple(sorted(namespaces)),
                gateway,
                log,
            )
            try:
                proxy._wait_up(timeout)
                return proxy
            except TraefikFailed as err:
                proxy.stop()
                last = str(err)
                if not port_taken(tail(log_path, 200)):
                    raise
        raise TraefikFailed(f"Traefik {version}: no free ports after {attempts} attempts: {last}")

    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TraefikFailed(
                    f"Traefik {self.version} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/ping", timeout=0.5) as r:
                    if r.status == 200 and self._listening(self.port) and self._listening(self.metrics_port):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TraefikFailed(f"Traefik {self.version} not up within {timeout:.0f} s:\n{self.log_tail()}")

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise TraefikFailed(
                f"Traefik {self.version} died ({self.process.returncode}):\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.directory / "traefik.log", lines)

    @property
    def log_text(self) -> str:
        return (self.directory / "traefik.log").read_text(errors="replace")

    # -- what Traefik runs -----------------------------------------------------------------------------
    def raw(self) -> dict[str, Any]:
        """/api/rawdata: routers, services and middlewares of the dynamic configuration in force."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/rawdata", timeout=2) as r:
            data: dict[str, Any] = json.load(r)
        return data

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def series(self, name: str) -> list[dict[str, Any]]:
        """The samples of metric `name` on Traefik's metrics endpoint, shaped like a Prometheus instant
        vector ({"metric": labels, "value": [0, "<value>"]})."""
        out = []
        for line in self.metrics().splitlines():
            match = _SAMPLE.fullmatch(line)
            if match and match["name"] == name:
                labels = dict(_LABEL.findall(match["labels"] or ""))
                out.append({"metric": labels, "value": [0, match["value"]]})
        return out

    def wait(self, what: str, check: Callable[[dict[str, Any]], Any], timeout: float = 20.0) -> Any:
        """Poll rawdata until `check(raw)` is truthy (returned); TraefikFailed with the log tail if not."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.alive()
            try:
                raw = self.raw()
                found = check(raw)
                if found:
                    return found
                last = raw
            except (OSError, urllib.error.URLError, ValueError) as err:
                last = repr(err)
            if time.monotonic() > deadline:
                dump = self.directory / "rawdata-at-failure.json"
                dump.write_text(json.dumps(last, indent=1, default=str))
                summary: Any = last
                if isinstance(last, dict):
                    summary = {k: sorted(v) for k, v in last.items() if isinstance(v, dict)}
                    summary["errors"] = {
                        name: obj.get("error")
                        for kind in ("routers", "services", "middlewares")
                        for name, obj in last.get(kind, {}).items()
                        if obj.get("error")
                    }
                raise TraefikFailed(
                    f"Traefik {self.version}: {what}: not within {timeout} s\n"
                    f"rawdata ({dump}): {json.dumps(summary, indent=1)[-3000:]}\n"
                    f"log:\n{self.log_tail(25)}"
                )
            time.sleep(0.05)

    def wait_route(
        self, ingress_route: Mapping[str, Any], middlewares: Mapping[str, Any] = {}, timeout: float = 20.0
    ) -> None:
        """Until Traefik routes by the IngressRoute as stored: a router per route with its rule, weights and
        middlewares, and the stored spec of each Middleware it names (by name, from `middlewares`)."""
        self.wait(
            f"IngressRoute {_name(ingress_route)} in force",
            lambda raw: route_in_force(raw, ingress_route, middlewares),
            timeout,
        )

    def wait_http_route(self, http_route: Mapping[str, Any], timeout: float = 20.0) -> None:
        """Until Traefik's Gateway provider routes by the HTTPRoute as stored (rules, matches, weights)."""
        self.wait(
            f"HTTPRoute {_name(http_route)} in force",
            lambda raw: http_route_in_force(raw, http_route),
            timeout,
        )

    def wait_servers(self, service: str, urls: set[str], provider: str = CRD, timeout: float = 20.0) -> None:
        """Until Traefik's load balancer `service` (e.g. "pro-k8s-flask-8080") has exactly these server URLs."""

        def check(raw: dict[str, Any]) -> bool:
            lb = raw.get("services", {}).get(f"{service}@{provider}", {}).get("loadBalancer", {})
            return {s.get("url") for s in lb.get("servers") or []} == urls

        self.wait(f"servers of {service}@{provider} = {sorted(urls)}", check, timeout)


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _strip(name: str) -> str:
    return name.split("@", 1)[0]


def route_in_force(
    raw: Mapping[str, Any], ingress_route: Mapping[str, Any], middlewares: Mapping[str, Any]
) -> bool:
    """Whether Traefik's rawdata implements the stored IngressRoute (and the Middlewares it names)."""
    ns, name = ingress_route["metadata"]["namespace"], ingress_route["metadata"]["name"]
    prefix = f"{ns}-{name}-"
    routers = {
        k: v for k, v in raw.get("routers", {}).items() if k.startswith(prefix) and k.endswith(f"@{CRD}")
    }
    routes = ingress_route["spec"].get("routes") or []
    if sorted(r.get("rule", "") for r in routers.values()) != sorted(r["match"] for r in routes):
        return False
    by_rule = {r.get("rule"): {**r, "_name": k} for k, r in routers.items()}
    services = raw.get("services", {})
    for route in routes:
        router = by_rule[route["match"]]
        if router.get("status", "enabled") != "enabled":
            return False
        wanted_mw = [f"{ns}-{m['name']}" for m in route.get("middlewares") or []]
        if [_strip(m) for m in router.get("middlewares") or []] != wanted_mw:
            return False
        svc = services.get(f"{_strip(router['service'])}@{CRD}", {})
        refs = route.get("services") or []
        if len(refs) > 1:  # Traefik weighs a route's services only when there are several
            weighted = [
                (_strip(s["name"]), s.get("weight", 1)) for s in svc.get("weighted", {}).get("services", [])
            ]
            wanted = [
                (
                    f"{s.get('namespace', ns)}-{s['name']}"
                    + ("" if s.get("kind") == "TraefikService" else f"-{s['port']}"),
                    s.get("weight", 1),
                )
                for s in refs
            ]  # a TraefikService (graylane's mirroring one) is named <ns>-<name>
            if weighted != wanted:
                return False
        elif refs and refs[0].get("kind", "Service") == "Service":  # the route's own load balancer
            if _strip(router["service"]) != _strip(router_name(router)) or not svc.get(
                "loadBalancer", {}
            ).get("servers"):
                return False
    for mw_name, spec in middlewares.items():
        live = raw.get("middlewares", {}).get(f"{ns}-{mw_name}@{CRD}")
        if live is None or not _holds(live, spec):
            return False
    return True


def router_name(router: Mapping[str, Any]) -> str:
    return str(router.get("_name", ""))


def _holds(actual: Any, expected: Any) -> bool:
    """`actual` (rawdata, may add defaults) has every value of `expected` (a stored Middleware spec)."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _holds(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list) and len(actual) == len(expected) and all(map(_holds, actual, expected))
        )
    if isinstance(expected, str) and isinstance(
        actual, (int, float)
    ):  # "1s" periods are nanoseconds in rawdata
        return True
    return bool(actual == expected)


def _go_quote(text: str) -> str:
    """Go's %q of a printable ASCII string (how the Gateway provider quotes rule arguments)."""
    return json.dumps(text)


def gateway_rule(hostnames: list[str], match: Mapping[str, Any]) -> str:
    """The rule Traefik v3's Gateway provider builds for one HTTPRoute match (exact hosts, prefix `/` or an
    exact path, header matches), as pkg/provider/kubernetes/gateway/httproute.go buildMatchRule."""
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    if path.get("type") == "Exact":
        parts = [f"Path({_go_quote(path['value'])})"]
    elif path.get("value", "/") == "/":
        parts = ['PathPrefix("/")']
    else:
        value = path["value"].rstrip("/")
        parts = [f"(Path({_go_quote(value)}) || PathPrefix({_go_quote(value + '/')}))"]
    for h in match.get("headers") or []:
        func = "HeaderRegexp" if h.get("type") == "RegularExpression" else "Header"
        parts.append(f"{func}({_go_quote(h['name'])},{_go_quote(h['value'])})")
    rule = " && ".join(parts)
    hosts = [f"Host({_go_quote(h)})" for h in hostnames]
    if not hosts:
        return rule
    host = hosts[0] if len(hosts) == 1 else "(" + " || ".join(hosts) + ")"
    return f"{host} && {rule}"


def http_route_in_force(raw: Mapping[str, Any], http_route: Mapping[str, Any]) -> bool:
    """Whether the Gateway provider's routers and weighted services implement the stored HTTPRoute."""
    ns, name = http_route["metadata"]["namespace"], http_route["metadata"]["name"]
    prefix = f"httproute-{ns}-{name}-gw-"
    routers = {
        k: v for k, v in raw.get("routers", {}).items() if k.startswith(prefix) and k.endswith(f"@{GATEWAY}")
    }
    rules = http_route["spec"].get("rules") or []
    hostnames = list(http_route["spec"].get("hostnames") or [])
    wanted = {gateway_rule(hostnames, m): rule for rule in rules for m in rule.get("matches") or [{}]}
    by_rule = {r.get("rule"): r for r in routers.values()}
    if set(by_rule) != set(wanted) or len(routers) != len(wanted):
        return False
    services = raw.get("services", {})
    for text, rule in wanted.items():
        router = by_rule[text]
        if router.get("status", "enabled") != "enabled":
            return False
        svc = services.get(f"{_strip(router.get('service', ''))}@{GATEWAY}", {})
        weighted = [
            (_strip(s["name"]), s.get("weight", 1), s.get("status"))
            for s in svc.get("weighted", {}).get("services", [])
        ]
        refs = [
            (f"{b.get('namespace', ns)}-{b['name']}-http-{b['port']}", b.get("weight", 1), None)
            for b in rule.get("backendRefs") or []
        ]
        if weighted != refs:  # a status means Traefik could not load that backend (it answers 500)
            return False
    return True
