"""infra/k8s against the real kube-apiserver: both overlays build, every object passes a server-side dry-run
apply (Knative types through Knative's upstream CRDs, tests/k8s/upstream-crds.txt), a wrong field is refused,
and the graylane ClusterRole grants exactly what the providers call.

The RBAC tests start a second apiserver with --authorization-mode=RBAC, apply the base for real, and run
every Kubernetes provider (state store, policy source, flag documents, the four Kubernetes routers, workloads
and the canary's HPA) as the
ServiceAccount by impersonation, recording each request: a call the role does not grant fails the
provider, and a grant no provider uses fails the comparison.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from functions.core import events as event_types
from functions.errors import ConfigError, NotReady
from functions.providers.routers._common import holds
from tests.k8s.cluster import (
    CONTEXT_NAME,
    BinariesMissing,
    KubeCluster,
    install_crds,
    kubectl_path,
    load_crds,
)
from tests.k8s.istio_validate import assert_istio_valid

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
NAMESPACE = "graylane-system"
SA_USER = f"system:serviceaccount:{NAMESPACE}:graylane"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]
# Granted ahead of their call sites: transition Events are being added to the runner (core or events.k8s.io).
PLANNED = {("", "events", "create"), ("events.k8s.io", "events", "create")}
# Function target -> the CloudEvent types it accepts (read from its `expect=`), wired by Triggers.
FUNCTIONS = ("release_start", "release_tick", "release_command", "protection")


# -- kubectl -------------------------------------------------------------------------------------------------


def kubectl(
    *args: str, kubeconfig: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl of the test apiserver's release (tests/k8s/tools/kube): its kustomize renders infra/k8s."""
    try:
        exe = kubectl_path()
    except BinariesMissing as exc:
        pytest.fail(f"kubectl (needed for kustomize and server-side apply): {exc}", pytrace=False)
    cmd = [str(exe), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig), "--context", CONTEXT_NAME]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


def build(overlay: str) -> list[dict[str, Any]]:
    done = kubectl("kustomize", str(K8S / overlay))
    assert done.returncode == 0, f"kubectl kustomize {overlay}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def retarget(docs: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    """The objects moved from graylane-system into the test's namespace (the Namespace object becomes it)."""
    out = copy.deepcopy(docs)
    for doc in out:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace" and meta["name"] == NAMESPACE:
            meta["name"] = ns
        if meta.get("namespace") == NAMESPACE:
            meta["namespace"] = ns
        for subject in doc.get("subjects") or []:
            if subject.get("namespace") == NAMESPACE:
                subject["namespace"] = ns
    return out


def apply(
    kube: KubeCluster, docs: list[dict[str, Any]], *flags: str, dry_run: bool = True
) -> subprocess.CompletedProcess[str]:
    text = yaml.safe_dump_all(docs, sort_keys=False)
    args = ["apply", "--server-side", "--field-manager=graylane-test", "-f", "-", "-o", "json", *flags]
    if dry_run:
        args.append("--dry-run=server")
    return kubectl(*args, kubeconfig=kube.kubeconfig, stdin=text)


def applied(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    out = json.loads(done.stdout)
    return list(out["items"]) if out.get("kind") == "List" else [out]


def key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


# -- both overlays on the apiserver --------------------------------------------------------------------------


EXPECTED_KINDS = {
    "knative": {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Broker",
        "Trigger",
        "PingSource",
    },
    "deployments": {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "CronJob",
        "NetworkPolicy",
    },
}


@pytest.mark.parametrize("overlay", ["knative", "deployments"])
def test_every_object_of_the_overlay_passes_a_server_side_dry_run(
    kube: KubeCluster, ns: str, overlay: str
) -> None:
    docs = retarget(build(overlay), ns)
    assert {d["kind"] for d in docs} == EXPECTED_KINDS[overlay]
    done = apply(kube, docs)
    assert done.returncode == 0, f"dry-run apply of {overlay}:\n{done.stderr}"
    answers = {key(d): d for d in applied(done)}
    assert set(answers) == {key(d) for d in docs}
    for doc in docs:  # the server kept every field we wrote: nothing was pruned as unknown
        answer = answers[key(doc)]
        for part in ("spec", "data", "stringData", "rules", "roleRef", "subjects"):
            if part == "stringData" and part in doc:
                assert set(answer["data"]) == set(doc[part]), key(doc)
            elif part in doc:
                assert holds(answer.get(part), doc[part]), (
                    f"{key(doc)} {part}: sent {doc[part]}, kept {answer.get(part)}"
                )


def knative_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in build("knative") if d["kind"] == kind}


def accepted_types(target: str) -> set[str]:
    """The CloudEvent types functions/<target>.py hands the runner as `expect=`."""
    tree = ast.parse((ROOT / "functions" / f"{target}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "expect" and isinstance(node.value, ast.Tuple):
            return {getattr(event_types, elt.id) for elt in node.value.elts if isinstance(elt, ast.Name)}
    raise AssertionError(f"functions/{target}.py passes no expect=(...) to the runner")


def test_one_knative_service_per_function_target_and_triggers_deliver_exactly_the_types_each_accepts() -> (
    None
):
    services = knative_objects("Service")
    assert set(services) == {f"graylane-{t.replace('_', '-')}" for t in FUNCTIONS} | {"graylane-gateway"}
    for target in FUNCTIONS:
        container = services[f"graylane-{target.replace('_', '-')}"]["spec"]["template"]["spec"][
            "containers"
        ][0]
        argv = container["command"]
        assert argv[0] == "functions-framework" and argv[argv.index("--target") + 1] == target
        source = argv[argv.index("--source") + 1]
        assert source == f"/app/functions/{target}.py" and (ROOT / source.removeprefix("/app/")).is_file()
        assert container["image"] == "graylane:latest"
    gateway = services["graylane-gateway"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert gateway[:3] == ["uvicorn", "--factory", "functions.gateway:create_app"]
    delivered: dict[str, set[str]] = {}
    for trigger in knative_objects("Trigger").values():
        spec = trigger["spec"]
        assert spec["broker"] == "default" and set(spec["filter"]["attributes"]) == {"type"}
        delivered.setdefault(spec["subscriber"]["ref"]["name"], set()).add(
            spec["filter"]["attributes"]["type"]
        )
    # the PingSource posts straight to the tick service (its type cannot be chosen), Triggers do the rest
    direct = {"graylane-release-tick": {"dev.knative.sources.ping"}}
    assert delivered == {
        f"graylane-{t.replace('_', '-')}": accepted_types(t)
        - direct.get(f"graylane-{t.replace('_', '-')}", set())
        for t in FUNCTIONS
    }
    assert set(knative_objects("Broker")) == {"default"}
    settings = knative_objects("ConfigMap")["graylane-settings"]["data"]
    assert settings["K_SINK"].endswith(f"/{NAMESPACE}/default")  # the broker-ingress path of Broker default
    ping = knative_objects("PingSource")["graylane-tick"]["spec"]
    assert ping["sink"]["ref"]["name"] == "graylane-release-tick" and json.loads(ping["data"]) == {}


# Upstream's Trigger keeps unknown fields under spec and in filter.attributes (Knative's webhook checks them,
# not the CRD), so a misspelt filter is caught by the wiring test above, which reads spec.filter.attributes.
BAD_FIELDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "Trigger spec.broker not a string": lambda d: d["spec"].update(broker=["default"]),
    "Trigger spec.subscriber.ref.name not a string": lambda d: d["spec"]["subscriber"]["ref"].update(name=5),
    "PingSource spec.schedule not a string": lambda d: d["spec"].update(schedule=5),
    "PingSource spec.sink.reference (misspelt)": lambda d: d["spec"]["sink"].update(
        reference=d["spec"]["sink"].pop("ref")
    ),
    "Service containers[0].comand (misspelt)": lambda d: d["spec"]["template"]["spec"]["containers"][
        0
    ].update(comand=["x"]),
    "Service containers[0].ports[0].containerPort not a number": lambda d: d["spec"]["template"]["spec"][
        "containers"
    ][0]["ports"][0].update(containerPort="http"),
    "Broker spec.delivery.retry not a number": lambda d: d["spec"]["delivery"].update(retry="five"),
}
BAD_KIND = {name: name.split()[0] for name in BAD_FIELDS}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_the_knative_schemas_refuse_a_wrong_field(kube: KubeCluster, ns: str, case: str) -> None:
    doc = next(d for d in retarget(build("knative"), ns) if d["kind"] == BAD_KIND[case])
    assert apply(kube, [doc]).returncode == 0  # as shipped, the object is fine
    BAD_FIELDS[case](doc)
    client_side = apply(kube, [doc])  # kubectl validates against the CRD's published schema first
    assert client_side.returncode != 0, f"{case} passed kubectl validation"
    server_side = apply(kube, [doc], "--validate=false")  # and the apiserver refuses or prunes it on its own
    if server_side.returncode != 0:
        assert re.search(
            r"not declared in schema|expected (string|numeric|integer|map)|Invalid value|must be of type",
            server_side.stderr,
        ), server_side.stderr
    else:  # inside an atomic list (containers) the typed patch does not look; the structural schema prunes
        [answer] = applied(server_side)
        assert not holds(answer["spec"], doc["spec"]), f"{case}: the apiserver kept it: {answer['spec']}"


# -- the tick without Knative ----------------------------------------------------------------------------------


def rendered(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in build(overlay) if d["kind"] == kind}


def test_cronjob_the_deployment_serves_two_listeners_and_only_the_public_one_is_exposed() -> None:
    deployment = rendered("deployments", "Deployment")["graylane"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"]
    assert argv[:2] == ["graylane", "serve"]
    # the cluster's settings come from graylane-settings (serve reads the environment), not from flags
    assert not {"--store", "--policies", "--providers", "--prometheus"} & set(argv)
    assert {"configMapRef": {"name": "graylane-settings"}} in container["envFrom"]
    assert {"secretRef": {"name": "graylane-webhooks"}} in container["envFrom"]
    settings = rendered("deployments", "ConfigMap")["graylane-settings"]["data"]
    assert (settings["GRAYLANE_PROVIDERS"], settings["GRAYLANE_STORE"], settings["GRAYLANE_POLICIES"]) == (
        "kubernetes",
        "configmap://",
        "configmap://",
    )
    assert settings["GRAYLANE_PROMETHEUS"].startswith("http")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": int(argv[argv.index("--port") + 1]),
        "internal": int(argv[argv.index("--internal-port") + 1]),
    }
    services = rendered("deployments", "Service")
    assert [p["targetPort"] for p in services["graylane"]["spec"]["ports"]] == ["http"]
    assert [(p["port"], p["targetPort"]) for p in services["graylane-internal"]["spec"]["ports"]] == [
        (ports["internal"], "internal")
    ]
    assert services["graylane-internal"]["spec"].get("type", "ClusterIP") == "ClusterIP"
    backends = {
        (path["backend"]["service"]["name"], path["backend"]["service"]["port"]["name"])
        for rule in rendered("deployments", "Ingress")["graylane"]["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {("graylane", "http")}
    secret = rendered("deployments", "Secret")["graylane-webhooks"]["stringData"]
    assert {"GRAYLANE_INTERNAL_TOKEN", "GRAYLANE_EDGE_KEY"} <= set(secret)


TICK_POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: web, namespace: team}
spec:
  image: {repository: registry.example.com/team/web}
  router: {provider: recording}
  stages:
    - canary: {steps: [{weight: 30, pause: 1s}]}
    - approval: {name: promote}
    - promote: {}
"""


def test_cronjob_the_rendered_tick_snippet_ticks_a_real_graylane_serve(tmp_path: Path) -> None:
    import os
    import signal
    import time
    import urllib.request

    from functions.core.state import AppState
    from functions.providers.stores.sqlite import SqliteStore

    cron = rendered("deployments", "CronJob")["graylane-tick"]
    assert cron["spec"]["schedule"] == "* * * * *"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["GRAYLANE_TICK_URL"] == {
        "configMapKeyRef": {"name": "graylane-settings", "key": "GRAYLANE_TICK_URL"}
    }
    assert env["GRAYLANE_INTERNAL_TOKEN"] == {
        "secretKeyRef": {"name": "graylane-webhooks", "key": "GRAYLANE_INTERNAL_TOKEN"}
    }
    assert "envFrom" not in container  # the Job holds the internal token only, never GRAYLANE_EDGE_KEY
    url = urlsplit(rendered("deployments", "ConfigMap")["graylane-settings"]["data"]["GRAYLANE_TICK_URL"])
    internal = rendered("deployments", "Service")["graylane-internal"]
    assert url.hostname == f"graylane-internal.{NAMESPACE}.svc.cluster.local"
    assert url.port == internal["spec"]["ports"][0]["port"] and url.path == "/tick"

    # a real `graylane serve`, configured from its environment as in the Deployment (on loopback, free ports)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(TICK_POLICY)
    token, hook = secrets.token_hex(16), secrets.token_hex(16)
    serve_env = {
        **os.environ,
        "GRAYLANE_STORE": f"sqlite:///{tmp_path / 'graylane.db'}",
        "GRAYLANE_POLICIES": str(policies),
        "GRAYLANE_PROVIDERS": "recording",
        "GRAYLANE_TICK_INTERVAL": "60m",  # only the CronJob ticks during the test
        "GRAYLANE_INTERNAL_TOKEN": token,
        "GRAYLANE_HOOK_TOKEN_GENERIC": hook,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "functions.cli", "serve", "--port", "0", "--internal-port", "0"],
        env=serve_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(ROOT),
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        found = re.search(r"on http://127\.0\.0\.1:(\d+) \(internal http://127\.0\.0\.1:(\d+);", line)
        assert found, (
            f"graylane serve did not start: {line}{proc.stdout.read() if proc.poll() is not None else ''}"
        )
        public, internal_port = (int(g) for g in found.groups())
        for tag in ("v1.0.0", "v2.0.0"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{public}/hooks/generic",
                method="POST",
                data=json.dumps({"repository": "registry.example.com/team/web", "tag": tag}).encode(),
                headers={"authorization": f"Bearer {hook}", "content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 202
        time.sleep(1.2)  # the canary step's pause is due

        def run_snippet(with_token: str) -> subprocess.CompletedProcess[str]:
            job_env = {
                "GRAYLANE_TICK_URL": f"http://127.0.0.1:{internal_port}{url.path}",
                "GRAYLANE_INTERNAL_TOKEN": with_token,
                "PATH": "/usr/bin:/bin",
            }
            return subprocess.run(
                [sys.executable, "-c", command[2]], env=job_env, capture_output=True, text=True, timeout=30
            )

        store = SqliteStore(str(tmp_path / "graylane.db"))

        def release() -> Any:
            doc, _ = store.load("team/web")
            return AppState.from_json(doc).release

        refused = run_snippet("not-the-internal-token")
        assert refused.returncode != 0 and "401" in refused.stderr  # the Job fails, visibly
        assert release().gate == ""  # nothing ticked
        done = run_snippet(token)
        assert done.returncode == 0, done.stderr
        assert re.match(r"tick \d{4}-\d\d-\d\dT\d\d:\d\d:00Z 200 ", done.stdout), done.stdout
        assert '"status":"transitioned"' in done.stdout.replace(" ", "")
        assert release().gate == "promote"  # the tick was handled: the due pause moved the release on
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""


# -- the image -------------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of infra/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "infra" / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_copies_what_exists_runs_unprivileged_and_starts_the_gateway() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    for instruction, args in steps:
        if instruction == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE" not in env and "PYTHONPATH=/app" in env
    runs = [a for i, a in steps if i == "RUN"]
    assert any("pip install ." in r and "[test]" not in r for r in runs)
    assert any("python -m compileall" in r and "functions" in r for r in runs)
    assert dict(steps)["WORKDIR"] == "/app"
    user = [a for i, a in steps if i == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    assert json.loads(dict(steps)["CMD"])[:3] == ["uvicorn", "--factory", "functions.gateway:create_app"]
    ignored = (ROOT / "infra" / "Dockerfile.dockerignore").read_text()
    assert "!functions/" in ignored and "!events/" in ignored and "!infra/examples/" in ignored


# -- RBAC ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rbac_kube() -> Iterator[KubeCluster]:
    """A second apiserver that authorizes with RBAC, the base (namespace, account, role) applied for real."""
    cluster = KubeCluster.start(authorization_mode="RBAC")
    try:
        with cluster.api_client() as api:
            install_crds(api, load_crds())
        done = apply(cluster, build("base"), dry_run=False)
        assert done.returncode == 0, done.stderr
        yield cluster
    finally:
        cluster.stop()


def granted() -> set[tuple[str, str, str]]:
    [role] = [d for d in build("base") if d["kind"] == "ClusterRole"]
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def request_verb(method: str, url: str) -> tuple[str, str, str]:
    """(API group, resource[/subresource], RBAC verb) of one REST call."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    group, rest = ("", segments[2:]) if segments[0] == "api" else (segments[1], segments[3:])
    if rest and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
    if method == "GET":
        verb = "get" if name else ("watch" if parse_qs(parts.query).get("watch") == ["true"] else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(
            method, "delete" if name else "deletecollection"
        )
    return group, f"{resource}/{sub}" if sub else resource, verb


class Recorder:
    """Every request an ApiClient sends, with the answer's status."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, str, str], int]] = []

    def attach(self, api_client: Any) -> Any:
        rest = api_client.rest_client
        send = rest.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            response = send(method, url, *args, **kwargs)
            self.calls.append((request_verb(method, url), response.status))
            return response

        rest.request = request
        return api_client

    @property
    def made(self) -> set[tuple[str, str, str]]:
        return {call for call, _ in self.calls}


@pytest.fixture
def as_graylane(rbac_kube: KubeCluster) -> Iterator[tuple[Any, Recorder]]:
    """A graylane client (providers.kube.client_from) acting as the graylane ServiceAccount."""
    from functions.providers.kube import client_from

    recorder = Recorder()
    with client_from(rbac_kube.configuration) as api:
        api.set_default_header("Impersonate-User", SA_USER)  # the apiserver adds the account's groups
        yield recorder.attach(api), recorder


@pytest.fixture
def app_ns(rbac_kube: KubeCluster) -> Iterator[str]:
    from kubernetes import client

    name = f"shop-{secrets.token_hex(3)}"
    with rbac_kube.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name


def stable_deployment(rbac_kube: KubeCluster, ns: str) -> None:
    from kubernetes import client

    labels = {"app": "k8s-flask"}
    body = {
        "metadata": {"name": "k8s-flask", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "flask", "image": "registry.example.com/flask:v1"}]},
            },
        },
    }
    with rbac_kube.api_client() as api:
        client.AppsV1Api(api).create_namespaced_deployment(ns, body)


def stable_hpa(rbac_kube: KubeCluster, ns: str) -> None:
    from kubernetes import client

    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "k8s-flask"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "k8s-flask"},
            "minReplicas": 2,
            "maxReplicas": 6,
        },
    }
    with rbac_kube.api_client() as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "autoscaling", "v2", ns, "horizontalpodautoscalers", body
        )


def policy_configmap(rbac_kube: KubeCluster, ns: str) -> str:
    """The seed's Traefik policy, moved to `ns`, in a ConfigMap labelled as a policy; returns its app id."""
    from kubernetes import client

    doc = yaml.safe_load((ROOT / "infra" / "examples" / "traefik-pipeline.yaml").read_text())
    doc["metadata"]["namespace"] = ns
    body = {
        "metadata": {"name": "flask-policy", "labels": {"graylane.dev/role": "policy"}},
        "data": {"policy.yaml": yaml.safe_dump(doc)},
    }
    with rbac_kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_config_map(ns, body)
    return f"{ns}/{doc['metadata']['name']}"


def pending(call: Callable[[], None]) -> None:
    """Run a workload call that cannot finish here (no controller): NotReady means every request went through."""
    try:
        call()
    except NotReady:
        pass


def exercise_providers(api: Any, rbac_kube: KubeCluster, ns: str, preview_ns: str) -> None:
    """Every Kubernetes provider path graylane has, as the ServiceAccount."""
    from kubernetes import client

    from functions.core.effects import STABLE_ONLY, FlagPlan, Protection, RoutePlan
    from functions.core.policy import CircuitBreaker, Match, RateLimit
    from functions.providers.flags.configmap import ConfigMapFlags
    from functions.providers.policysource import ConfigMapPolicies
    from functions.providers.routers import make_router
    from functions.providers.routers.base import RouteTarget
    from functions.providers.stores.configmap import ConfigMapStore
    from functions.providers.workloads.base import WorkloadTarget
    from functions.providers.workloads.kubernetes import KubernetesWorkloads

    app = policy_configmap(rbac_kube, ns)
    policies = ConfigMapPolicies(api)  # all namespaces, as GRAYLANE_POLICIES=configmap:// builds it
    assert [p.app for p in policies.all()] == [app] and policies.get(app).app == app
    store = ConfigMapStore(api)
    version = store.save(app, '{"releases": []}', None)
    assert store.load(app) == ('{"releases": []}', version)
    store.save(app, '{"releases": [1]}', version)
    assert store.list_apps() == [app]

    ab = RoutePlan.canary_at(20, (Match("header", name="location", value="shenzhen"),))
    for group in ("traefik.io", "traefik.containo.us"):
        router = make_router("traefik", api)
        t = RouteTarget(
            ns,
            "flask",
            "k8s-flask",
            "k8s-flask-canary",
            options={
                "ingressRoute": f"flask-{group.split('.')[1]}",
                "traefikService": f"flask-wrr-{group.split('.')[1]}",
                "host": "pro.coding",
                "port": 8080,
                "group": group,
                "create": True,
            },
        )
        router.set_routes(t, RoutePlan.canary_at(20))
        router.set_routes(t, ab)
        assert router.get_routes(t) == ab
        router.set_protection(
            t, Protection(RateLimit(500, 1000), CircuitBreaker("LatencyAtQuantileMS(50.0) > 100"))
        )
        router.set_protection(t, Protection(RateLimit(250, 500), None))  # one patched, one deleted
        router.finalize(t)

    istio = make_router("istio", api)
    t = RouteTarget(
        ns,
        "reviews",
        "reviews-v1",
        "reviews-v2",
        options={
            "virtualService": "reviews",
            "destinationRule": "reviews",
            "host": "reviews",
            "stableSubset": "v1",
            "canarySubset": "v2",
            "stableLabels": {"version": "v1"},
            "canaryLabels": {"version": "v2"},
            "create": True,
        },
    )
    istio.set_routes(t, ab)
    istio.set_protection(t, Protection(None, CircuitBreaker("NetworkErrorRatio() > 0.3")))
    istio.finalize(t)
    with (
        rbac_kube.api_client() as admin
    ):  # Istio's validation of what was written (read as admin: unrecorded)
        co = client.CustomObjectsApi(admin)
        assert_istio_valid(
            [
                co.get_namespaced_custom_object("networking.istio.io", "v1", ns, plural, "reviews")
                for plural in ("virtualservices", "destinationrules")
            ],
            "written as the ServiceAccount",
        )

    gateway = make_router("gateway-api", api)
    t = RouteTarget(
        ns,
        "shop",
        "shop-blue",
        "shop-green",
        options={
            "httpRoute": "shop",
            "stableService": "shop-blue",
            "canaryService": "shop-green",
            "port": 8080,
            "parentRef": "public",
            "host": "shop.example.com",
            "create": True,
        },
    )
    gateway.set_routes(t, ab)
    gateway.finalize(t)

    nginx = make_router("nginx", api)
    t = RouteTarget(
        ns,
        "canary-demo",
        "canary-demo",
        "canary-demo-canary",
        options={
            "stableIngress": "canary-demo",
            "stableService": "canary-demo",
            "canaryService": "canary-demo-canary",
            "host": "progressive.auto",
            "create": True,
        },
    )
    nginx.set_routes(t, RoutePlan.canary_at(20))
    nginx.set_protection(t, Protection(RateLimit(500, 1000), None))
    nginx.set_routes(t, STABLE_ONLY)
    nginx.finalize(t)  # deletes the canary Ingress

    flags = ConfigMapFlags(api, ns, "flags", "flags.json")  # a flag stage's document: created, then updated
    for percent in (5, 25):
        flags.set_flag(FlagPlan(key="new-checkout", percent=percent, salt="new-checkout", release="flask-1"))

    stable_deployment(rbac_kube, ns)
    workloads = KubernetesWorkloads(api)
    w = WorkloadTarget(ns, "flask", "k8s-flask", "k8s-flask-canary", container="flask")
    stable_hpa(rbac_kube, ns)
    pending(lambda: workloads.deploy_canary(w, "registry.example.com/flask:v2"))
    pending(
        lambda: workloads.scale_canary(w, 20)
    )  # the canary's HPA, from the stable's: created, then resized
    pending(lambda: workloads.scale_canary(w, 50))
    pending(lambda: workloads.promote_stable(w, "registry.example.com/flask:v2"))
    workloads.scale_down_canary(w)  # deletes it
    pending(lambda: workloads.deploy_preview(w, "registry.example.com/flask:v3", "dev", preview_ns, ""))
    pending(
        lambda: workloads.run_job(
            w, "migrate-db", "registry.example.com/flask:v3", ("flask", "db", "upgrade")
        )
    )


def test_the_cluster_role_grants_exactly_what_the_providers_call(
    as_graylane: tuple[Any, Recorder], rbac_kube: KubeCluster, app_ns: str
) -> None:
    from kubernetes import client

    api, recorder = as_graylane
    preview_ns = f"{app_ns}-dev"
    with rbac_kube.api_client() as admin:
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": preview_ns}})
    exercise_providers(api, rbac_kube, app_ns, preview_ns)
    forbidden = sorted({call for call, status in recorder.calls if status in (401, 403)})
    assert not forbidden, f"graylane's account was refused: {forbidden}"
    missing = recorder.made - granted()
    assert not missing, f"called but not granted by infra/k8s/base/rbac.yaml: {sorted(missing)}"
    unused = granted() - PLANNED - recorder.made
    assert not unused, f"granted but never called by any provider (least privilege): {sorted(unused)}"


def access(rbac_kube: KubeCluster, group: str, resource: str, verb: str, ns: str = "any-app") -> bool:
    from kubernetes import client

    resource, _, sub = resource.partition("/")
    attrs = {"group": group, "resource": resource, "subresource": sub, "verb": verb, "namespace": ns}
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": SA_USER, "groups": SA_GROUPS, "resourceAttributes": attrs},
    }
    with rbac_kube.api_client() as api:
        return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


def test_every_grant_holds_in_any_namespace_and_events_can_be_created(rbac_kube: KubeCluster) -> None:
    refused = sorted(g for g in granted() if not access(rbac_kube, *g))
    assert not refused, f"the binding does not give the account: {refused}"
    assert PLANNED <= granted()


DENIED = [
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "configmaps", "delete"),
    ("", "configmaps", "watch"),
    ("", "configmaps", "patch"),
    ("", "pods", "list"),
    ("", "pods/exec", "create"),
    ("", "services", "update"),
    ("", "serviceaccounts/token", "create"),
    ("", "namespaces", "delete"),
    ("apps", "deployments", "delete"),
    ("apps", "deployments", "update"),
    ("apps", "deployments", "list"),
    ("apps", "deployments/scale", "update"),
    ("batch", "jobs", "delete"),
    ("autoscaling", "horizontalpodautoscalers", "update"),
    ("networking.k8s.io", "ingresses", "watch"),
    ("traefik.io", "ingressroutes", "delete"),
    ("networking.istio.io", "virtualservices", "delete"),
    ("gateway.networking.k8s.io", "httproutes", "delete"),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "create"),
    ("rbac.authorization.k8s.io", "roles", "escalate"),
    ("", "users", "impersonate"),
]


@pytest.mark.parametrize(("group", "resource", "verb"), DENIED, ids=["/".join(d).lstrip("/") for d in DENIED])
def test_what_graylane_never_does_is_denied(
    rbac_kube: KubeCluster, group: str, resource: str, verb: str
) -> None:
    assert not access(rbac_kube, group, resource, verb)


def test_a_refused_call_is_a_config_error_naming_rbac(as_graylane: tuple[Any, Recorder], app_ns: str) -> None:
    from kubernetes import client

    from functions.providers.routers._common import Kind, Objects

    api, recorder = as_graylane
    with pytest.raises(client.ApiException) as raw:
        client.CoreV1Api(api).list_namespaced_secret(app_ns)
    assert raw.value.status == 403
    deployments = Objects(api, Kind("apps", "v1", "deployments", "Deployment"))
    gone = {"metadata": {"namespace": app_ns, "name": "k8s-flask", "resourceVersion": "1"}}
    with pytest.raises(ConfigError, match=rf"Deployment {app_ns}/k8s-flask delete: 403 .*RBAC"):
        deployments.delete(gone)
    assert [status for _, status in recorder.calls] == [403, 403]
