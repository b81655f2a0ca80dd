"""graylane as deployed: `infra/k8s/deployments` rendered by kustomize, applied to the test cluster, and the
Deployment's container run as a host process.

    render("deployments")                      kubectl kustomize (the built kubectl, kustomize v5.8)
    install(cluster, docs, secret_values)      kubectl apply --server-side as the admin, then the Secret's
                                               test values the way the README says (create --dry-run | apply)
    token = account_token(cluster)             TokenRequest for ServiceAccount graylane-system/graylane
    account_kubeconfig(cluster, token, path)   that token, the apiserver's CA (TLS verified), RBAC applies
    container = deployed_container(cluster)    the Deployment's container as the apiserver stored it
    env = container_env(cluster, container)    envFrom (graylane-settings, graylane-webhooks) and env, resolved
                                               from the cluster as a kubelet resolves them
    GraylaneProcess.start(container, env, ...) command + args of the container, only host/ports overridden

What a pod would have and a host process has not is substituted, and only that (`SUBSTITUTED`): the
in-cluster service account (a kubeconfig carrying the account's token), the image's filesystem (/app is
this checkout, the image's ENV taken from infra/Dockerfile), the pod's network (listeners on loopback on
free ports instead of 0.0.0.0:8080/8081, which the pods kwok runs here share with this machine), and the
cluster's DNS names (the in-cluster Prometheus URL becomes the test Prometheus).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.k8s.cluster import CONTEXT_NAME, KubeCluster, kubectl_path

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
NAMESPACE = "graylane-system"
ACCOUNT = "graylane"
ACCOUNT_USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
FIELD_MANAGER = "graylane-e2e"
# The Deployment's listener flags -> what the host process gets instead (port 0: a free port, printed)
LISTENER_FLAGS = {
    "--host": "127.0.0.1",
    "--port": "0",
    "--internal-host": "127.0.0.1",
    "--internal-port": "0",
}


class DeployFailed(AssertionError):
    """A kubectl step of the install failed; the message has its output."""


# -- kubectl --------------------------------------------------------------------------------------------------


def kubectl(
    cluster: KubeCluster | None, *args: str, stdin: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """The test cluster's kubectl as the admin (its kustomize renders infra/k8s); raises DeployFailed."""
    cmd = [str(kubectl_path()), *args]
    if cluster is not None:
        cmd += ["--kubeconfig", str(cluster.kubeconfig), "--context", CONTEXT_NAME]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        shown = " ".join(shlex.quote(a) for a in args)
        raise DeployFailed(f"kubectl {shown}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done


def render(overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize infra/k8s/<overlay>`: the objects exactly as they would be applied."""
    import yaml

    return [d for d in yaml.safe_load_all(kubectl(None, "kustomize", str(K8S / overlay)).stdout) if d]


def apply(cluster: KubeCluster, docs: list[dict[str, Any]] | str) -> str:
    """`kubectl apply --server-side` of objects (or YAML text) as the admin; returns kubectl's output."""
    import yaml

    text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs, sort_keys=False)
    return kubectl(
        cluster, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text
    ).stdout


def install(cluster: KubeCluster, docs: list[dict[str, Any]], secret_values: Mapping[str, str]) -> None:
    """Apply the rendered objects, then set the webhook Secret's values the way the README tells operators to:
    `kubectl create secret generic graylane-webhooks --from-literal=... --dry-run=client -o yaml | kubectl apply`."""
    apply(cluster, docs)
    literals = [f"--from-literal={k}={v}" for k, v in sorted(secret_values.items())]
    secret = kubectl(
        None,
        "-n",
        NAMESPACE,
        "create",
        "secret",
        "generic",
        "graylane-webhooks",
        *literals,
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    kubectl(
        cluster,
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}-secret",
        "-f",
        "-",
        stdin=secret,
    )


def get(cluster: KubeCluster, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    out = kubectl(cluster, "-n", namespace, "get", kind, name, "-o", "json").stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


# -- the ServiceAccount's credentials ----------------------------------------------------------------------------


def account_token(cluster: KubeCluster, duration: str = "2h") -> str:
    """A token of ServiceAccount graylane-system/graylane from the TokenRequest API (what the kubelet projects
    into the pod), signed with the apiserver's service-account key, audience the issuer."""
    return kubectl(
        cluster, "-n", NAMESPACE, "create", "token", ACCOUNT, f"--duration={duration}"
    ).stdout.strip()


def account_kubeconfig(cluster: KubeCluster, token: str, path: Path) -> Path:
    """A kubeconfig as the ServiceAccount: its token, and the apiserver's own CA bundle (TLS is verified)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "graylane",
        "clusters": [
            {
                "name": "test",
                "cluster": {"server": cluster.host, "certificate-authority": str(cluster.ca_cert)},
            }
        ],
        "users": [{"name": ACCOUNT_USER, "user": {"token": token}}],
        "contexts": [
            {"name": "graylane", "context": {"cluster": "test", "user": ACCOUNT_USER, "namespace": NAMESPACE}}
        ],
    }
    path.write_text(json.dumps(doc, indent=1))
    path.chmod(0o600)
    return path


def who_am_i(kubeconfig: Path) -> str:
    """The user the apiserver authenticates `kubeconfig` as (SelfSubjectReview)."""
    done = subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise DeployFailed(f"kubectl auth whoami: {done.stderr[-1000:]}")
    return str(json.loads(done.stdout)["status"]["userInfo"]["username"])


# -- the container as the apiserver stored it --------------------------------------------------------------------


def deployed_container(cluster: KubeCluster, name: str = "graylane") -> dict[str, Any]:
    """The first container of Deployment graylane-system/<name>, read back from the apiserver."""
    dep = get(cluster, "deployment", name)
    spec = dep["spec"]["template"]["spec"]
    assert spec.get("serviceAccountName") == ACCOUNT, spec.get("serviceAccountName")
    container: dict[str, Any] = spec["containers"][0]
    return container


def container_env(
    cluster: KubeCluster, container: Mapping[str, Any], namespace: str = NAMESPACE
) -> dict[str, str]:
    """The container's environment as a kubelet builds it: envFrom in order (ConfigMaps, Secrets decoded), then
    env (value, configMapKeyRef, secretKeyRef), later entries winning."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(get(cluster, "configmap", source["configMapRef"]["name"], namespace).get("data") or {})
        elif "secretRef" in source:
            data = get(cluster, "secret", source["secretRef"]["name"], namespace).get("data") or {}
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
        else:
            raise AssertionError(f"envFrom source not understood: {source}")
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]
        if "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[entry["name"]] = get(cluster, "configmap", key["name"], namespace)["data"][key["key"]]
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            raw = get(cluster, "secret", key["name"], namespace)["data"][key["key"]]
            env[entry["name"]] = base64.b64decode(raw).decode()
        else:
            raise AssertionError(f"env {entry['name']}: valueFrom not understood: {ref}")
    return env


def image_env() -> dict[str, str]:
    """infra/Dockerfile's ENV, with the image's /app being this checkout."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "infra" / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            for pair in shlex.split(line.strip()[4:]):
                key, _, value = pair.partition("=")
                env[key] = value.replace("/app", str(ROOT))
    return env


def with_listeners(argv: list[str], flags: Mapping[str, str] = LISTENER_FLAGS) -> list[str]:
    """argv with each listener flag's value replaced; every flag must be there (a changed manifest fails here)."""
    out = list(argv)
    for flag, value in flags.items():
        assert flag in out, f"the Deployment's command {argv} has no {flag}"
        out[out.index(flag) + 1] = value
    return out


def rewrite_authority(url: str, host: str, port: int) -> str:
    """`url` with its host:port replaced (no cluster DNS or Service IPs here), path and query kept."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


# -- the process ------------------------------------------------------------------------------------------------

_STARTED = re.compile(r"graylane serve on http://([\d.]+):(\d+) \(internal http://([\d.]+):(\d+);")


@dataclass
class GraylaneProcess:
    """`graylane serve` started from the Deployment's container; its output goes to `log`."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]
    port: int = 0
    internal_port: int = 0
    substituted: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        container: Mapping[str, Any],
        env: Mapping[str, str],
        kubeconfig: Path,
        home: Path,
        log: Path,
        overrides: Mapping[str, str],
        timeout: float = 60.0,
    ) -> GraylaneProcess:
        """Run the container's command + args (the image's `graylane` is the checkout's .venv one) with the
        container's environment plus `overrides`, as the ServiceAccount (`kubeconfig`)."""
        argv = [*container.get("command", []), *container.get("args", [])]
        assert argv[:2] == ["graylane", "serve"], argv
        argv = [str(Path(sys.executable).parent / "graylane"), *with_listeners(argv)[1:]]
        unknown = set(overrides) - set(env)
        assert not unknown, f"overriding settings the manifests do not set: {sorted(unknown)}"
        home.mkdir(parents=True, exist_ok=True)
        full = {
            **image_env(),
            **env,
            **overrides,
            "KUBECONFIG": str(kubeconfig),
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        }
        out = log.open("ab")
        process = subprocess.Popen(
            argv, env=full, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()
        proc = cls(argv, full, log, process, substituted=dict(overrides))
        proc._wait_started(timeout)
        return proc

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _STARTED.search(self.log_text())
            if found:
                self.port, self.internal_port = int(found[2]), int(found[4])
                return
            if self.process.poll() is not None:
                raise AssertionError(f"graylane serve exited with {self.process.returncode}:\n{self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"graylane serve printed no start line within {timeout:.0f} s:\n{self.tail()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"graylane serve died with {self.process.returncode}:\n{self.tail()}")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (as the kubelet stops a pod), SIGKILL after 20 s; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


# -- what the account did (the apiserver's audit log) -----------------------------------------------------------


@dataclass(frozen=True)
class Call:
    verb: str
    group: str
    resource: str  # with "/subresource"
    namespace: str
    name: str
    code: int


def account_calls(cluster: KubeCluster, user: str = ACCOUNT_USER) -> list[Call]:
    """Every request the apiserver audited for `user` (cluster started with audit_users=(user,))."""
    calls = []
    try:
        lines = cluster.audit_log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("user", {}).get("username") != user or event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        calls.append(
            Call(
                event.get("verb", ""),
                ref.get("apiGroup", ""),
                resource or event.get("requestURI", ""),
                ref.get("namespace", ""),
                ref.get("name", ""),
                int((event.get("responseStatus") or {}).get("code", 0)),
            )
        )
    return calls


def granted(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) the rendered ClusterRole grants."""
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "graylane"]
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def environment_summary(env: Mapping[str, str]) -> str:
    """The settings a process got, credentials masked (for the report and failure messages)."""
    secret = ("TOKEN", "KEY", "SECRET", "PASSWORD")
    return ", ".join(
        f"{k}={'***' if any(s in k for s in secret) and v else v}"
        for k, v in sorted(env.items())
        if k.startswith(("GRAYLANE_", "K_"))
    )


__all__ = [
    "ACCOUNT_USER",
    "NAMESPACE",
    "DeployFailed",
    "GraylaneProcess",
    "account_calls",
    "account_kubeconfig",
    "account_token",
    "apply",
    "container_env",
    "deployed_container",
    "environment_summary",
    "get",
    "granted",
    "install",
    "kubectl",
    "render",
    "rewrite_authority",
    "who_am_i",
]
