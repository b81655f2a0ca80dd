"""`kubectl graylane` (the kubectl-graylane console script) against the real kube-apiserver: the CLI's commands on
the cluster's ConfigMap store, with kubectl's view of where it is (--kubeconfig, KUBECONFIG, --context, -n, the
context's namespace), and through a real `kubectl` that finds the plugin on PATH.

A release is seeded by the runner itself on ConfigMaps (state and audit) from a labelled policy ConfigMap, and
waits at its promote gate; the plugin runs as a separate process, as kubectl would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.core.events import ImagePushed, Tick
from functions.core.state import AppState, Phase, Version
from functions.providers.kube import client_from
from functions.providers.policysource import ConfigMapPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.stores.configmap import ConfigMapStore
from functions.runner import Runner
from tests.console_support import fast_policy, measure
from tests.k8s.cluster import BinariesMissing, kubectl_path

pytestmark = pytest.mark.k8s

BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-graylane"


@dataclass
class Seeded:
    ns: str
    other: str  # a second namespace, the "elsewhere" context's
    kubeconfig: Path
    store: ConfigMapStore

    def state(self, ns: str = "") -> AppState:
        doc, _ = self.store.load(f"{ns or self.ns}/web")
        assert doc is not None
        return AppState.from_json(doc)


def kubeconfig(path: Path, host: str, token: str, namespaces: dict[str, str], current: str) -> Path:
    """Contexts (name -> namespace) on the test apiserver; `current` is the current-context."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": "test", "cluster": {"server": host, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": "test", "user": "admin", **({"namespace": ns} if ns else {})},
            }
            for name, ns in namespaces.items()
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def seed(api: Any, ns: str) -> None:
    """A policy ConfigMap in `ns` and a release of web that waits at its promote gate (state in ConfigMaps)."""
    from kubernetes import client

    text = fast_policy().replace("namespace: team", f"namespace: {ns}")
    client.CoreV1Api(api).create_namespaced_config_map(
        ns,
        {
            "metadata": {"name": "web-policy", "labels": {"graylane.dev/role": "policy"}},
            "data": {"policy.yaml": text},
        },
    )
    clock = [datetime(2026, 11, 23, 9, 0, tzinfo=UTC)]
    runner = Runner(
        ConfigMapStore(api),
        ConfigMapPolicies(api, namespaces=[ns]),
        RecordingProviders(measure=measure),
        clock=lambda: clock[0],
    )
    app = f"{ns}/web"
    for n, tag in enumerate(("v1.0.0", "v2.0.0")):
        runner.handle(
            ImagePushed(
                id=f"push-{ns}-{n}",
                app=app,
                target=Version(tag, f"docker.io/team/web:{tag}"),
                repository="docker.io/team/web",
                tag=tag,
            )
        )
    for n in range(20):
        clock[0] += timedelta(seconds=1)
        runner.handle(Tick(id=f"tick-{ns}-{n}", app=app))
        doc, _ = runner.store.load(app)
        if AppState.from_json(doc).release.phase is Phase.WAITING:  # type: ignore[union-attr]
            return
    raise AssertionError("the seeded release never reached its gate")


@pytest.fixture
def seeded(kube: Any, ns: str, tmp_path: Path) -> Iterator[Seeded]:
    from kubernetes import client

    api = client_from(configuration=kube.configuration)
    other = f"{ns[:50]}-b"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": other}})
    seed(api, ns)
    seed(api, other)
    path = kubeconfig(
        tmp_path / "kubeconfig",
        kube.host,
        kube.token,
        {"here": ns, "elsewhere": other, "bare": ""},
        current="here",
    )
    try:
        yield Seeded(ns, other, path, ConfigMapStore(api))
    finally:
        try:
            client.CoreV1Api(api).delete_namespace(other)
        except client.ApiException:
            pass
        api.close()


def run(
    *args: str, kubeconfig: Path | None = None, exe: Path | str = PLUGIN, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GRAYLANE_SERVER", "GRAYLANE_TOKEN", "KUBECONFIG"))
    }
    base |= {
        "HOME": str(Path(kubeconfig).parent) if kubeconfig else os.environ.get("HOME", "/root"),
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "GRAYLANE_PROVIDERS": "recording",
        **env,
    }
    if kubeconfig is not None:
        base["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([str(exe), *args], env=base, capture_output=True, text=True, timeout=60)


def test_status_uses_the_current_context_and_its_namespace(seeded: Seeded) -> None:
    done = run("status", "web", "-o", "json", kubeconfig=seeded.kubeconfig)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["app"] == f"{seeded.ns}/web"
    assert (status["release"]["phase"], status["release"]["gate"]) == ("waiting", "promote")
    table = run("status", "web", kubeconfig=seeded.kubeconfig)
    assert table.returncode == 0 and "waiting" in table.stdout and seeded.ns in table.stdout


def test_context_namespace_and_kubeconfig_flags_anywhere_on_the_line(seeded: Seeded, tmp_path: Path) -> None:
    elsewhere = run("status", "--context", "elsewhere", "web", "-o", "yaml", kubeconfig=seeded.kubeconfig)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert yaml.safe_load(elsewhere.stdout)["app"] == f"{seeded.other}/web"
    # -n beats the context's namespace; --kubeconfig beats KUBECONFIG (which here names nothing useful)
    broken = tmp_path / "nothing.yaml"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    flagged = run(
        "-n",
        seeded.other,
        "status",
        "web",
        f"--kubeconfig={seeded.kubeconfig}",
        "-o",
        "json",
        kubeconfig=broken,
    )
    assert flagged.returncode == 0, flagged.stderr
    assert json.loads(flagged.stdout)["app"] == f"{seeded.other}/web"
    short = run("status", "web", f"-n{seeded.other}", "-o", "json", kubeconfig=seeded.kubeconfig)
    assert json.loads(short.stdout)["app"] == f"{seeded.other}/web"
    # a context without a namespace means `default`, as for kubectl
    bare = run("status", "web", "--context", "bare", kubeconfig=seeded.kubeconfig)
    assert bare.returncode == 1 and "default/web" in bare.stderr
    explicit = run(
        "status", f"{seeded.other}/web", "--context", "bare", "-o", "json", kubeconfig=seeded.kubeconfig
    )
    assert explicit.returncode == 0 and json.loads(explicit.stdout)["app"] == f"{seeded.other}/web"


def test_list_is_namespaced_unless_all_namespaces(seeded: Seeded) -> None:
    here = run("list", "-o", "json", kubeconfig=seeded.kubeconfig)
    assert here.returncode == 0, here.stderr
    assert {(r["namespace"], r["app"], r["phase"]) for r in json.loads(here.stdout)} == {
        (seeded.ns, "web", "waiting")
    }
    every = run("list", "-A", "-o", "yaml", kubeconfig=seeded.kubeconfig)
    assert every.returncode == 0, every.stderr
    namespaces = {r["namespace"] for r in yaml.safe_load(every.stdout)}
    assert {seeded.ns, seeded.other} <= namespaces
    table = run("list", kubeconfig=seeded.kubeconfig)
    assert table.stdout.splitlines()[0].split()[:4] == ["NAMESPACE", "APP", "RELEASE", "PHASE"]


def test_approve_moves_the_release_on_in_the_configmap_and_is_recorded(seeded: Seeded) -> None:
    done = run(
        "approve",
        "web",
        "--gate",
        "promote",
        "--reason",
        "from kubectl",
        "-o",
        "json",
        kubeconfig=seeded.kubeconfig,
        USER="carol",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "accepted"
    state = seeded.state()
    assert state.release is not None and state.release.phase is Phase.SUCCEEDED
    approved = [h for h in state.history if h.action == "approved"][-1]
    assert approved.by is not None and (approved.by.user, approved.by.via) == ("carol", "cli")
    assert seeded.state(seeded.other).release.phase is Phase.WAITING  # type: ignore[union-attr]  # other namespace
    history = run("history", "web", "-o", "json", kubeconfig=seeded.kubeconfig)
    assert any(h["action"] == "approved" and h["by"]["user"] == "carol" for h in json.loads(history.stdout))


def test_mistakes_are_usage_errors_naming_them(seeded: Seeded) -> None:
    unknown = run("status", "web", "--context", "nope", kubeconfig=seeded.kubeconfig)
    assert unknown.returncode == 2 and 'context "nope" does not exist' in unknown.stderr
    clash = run("status", f"{seeded.other}/web", "-n", seeded.ns, kubeconfig=seeded.kubeconfig)
    assert clash.returncode == 2 and "names namespace" in clash.stderr
    every = run("status", "web", "-A", kubeconfig=seeded.kubeconfig)
    assert every.returncode == 2 and "list only" in every.stderr
    dangling = run("status", "web", "-n", kubeconfig=seeded.kubeconfig)
    assert dangling.returncode == 2 and "needs an argument" in dangling.stderr
    missing = run("status", "nothing-here", kubeconfig=seeded.kubeconfig)
    assert missing.returncode == 1 and f"{seeded.ns}/nothing-here" in missing.stderr
    helped = run("--help", kubeconfig=seeded.kubeconfig)
    assert helped.returncode == 0 and "usage: kubectl graylane" in helped.stdout
    assert "approve" in helped.stdout and "    serve" not in helped.stdout and "    demo" not in helped.stdout


def test_a_real_kubectl_finds_the_plugin_on_path(seeded: Seeded) -> None:
    try:  # the test cluster's own kubectl (tests/k8s/tools/kube), of the apiserver's release
        exe = str(kubectl_path())
    except BinariesMissing as missing:
        pytest.fail(f"kubectl: {missing}", pytrace=False)
    listed = run("plugin", "list", kubeconfig=seeded.kubeconfig, exe=exe)
    assert str(PLUGIN) in listed.stdout, listed.stdout + listed.stderr
    status = run("graylane", "status", "web", "-o", "json", kubeconfig=seeded.kubeconfig, exe=exe)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["release"]["phase"] == "waiting"
    other = run(
        "graylane",
        "status",
        "web",
        "-n",
        seeded.other,
        "-o",
        "json",
        "--kubeconfig",
        str(seeded.kubeconfig),
        exe=exe,
    )
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["app"] == f"{seeded.other}/web"
