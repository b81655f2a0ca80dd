"""GitOps write-back (issue 14, item 6), the pure part: when decide() asks for a commit and what it says, the
byte-preserving YAML edits, the policy syntax, and the runner never letting Git hold a release up. The commits
themselves, to a real Git server, are in tests/real/test_gitops_git.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from functions.core.policy import CanaryStage, CanaryStep, GitOps, PromoteStage
from functions.core.policy_parse import parse_policy, problems, to_doc
from functions.core.state import Phase
from functions.errors import ConfigError, ProviderUnavailable
from functions.providers.gitops.git import safe_url
from functions.providers.gitops.yamledit import get_helm_value, set_helm_value, set_kustomize_image
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, push, tick
from tests.unit.machine_helpers import FAIL, PASS, Driver, analysis, kinds, make_policy

GITOPS = GitOps(repository="git://git.example.com/deploy.git", file="apps/web/kustomization.yaml")
STAGES = (CanaryStage(steps=(CanaryStep(20, 60.0),)), PromoteStage())


def writes(effects: tuple[Any, ...]) -> list[Any]:
    return [e for e in effects if e.kind == "git-write-back"]


def test_gitops_rollback_asks_for_one_commit_of_the_version_now_stable_last() -> None:
    d = Driver.with_stable(make_policy(*STAGES, analysis=analysis(), gitops=GITOPS))
    d.push("v2")
    out = d.tick(10, FAIL)
    (w,) = writes(out.effects)
    assert d.rel.phase == Phase.ROLLED_BACK and (w.version, w.image) == (
        "v1",
        "registry.example.com/team-a/web:v1",
    )
    assert w.message.startswith(
        "graylane: roll back team-a/web to v1\n\nRelease: web-1 (v1 -> v2)\nReason: web-1 "
        "rolled-back: analysis failed: error-rate: 0.3 > max 0.05"
    )
    assert w.notice == {"release": "web-1", "app": "team-a/web", "on": "rollback"}
    assert kinds(out.effects).index("git-write-back") > kinds(out.effects).index("scale-down-canary")


def test_gitops_promotion_only_when_asked_and_aborts_record_the_origin() -> None:
    d = Driver.with_stable(make_policy(*STAGES, analysis=analysis(), gitops=GITOPS))
    d.push("v2")
    d.tick(10, PASS)
    assert writes(d.tick(60).effects) == []  # promoted, but the policy records rollbacks only
    d = Driver.with_stable(
        make_policy(*STAGES, analysis=analysis(), gitops=replace(GITOPS, on=("promotion",)))
    )
    d.push("v2")
    d.tick(10, PASS)
    (w,) = writes(d.tick(60).effects)
    assert w.version == "v2" and w.message.startswith("graylane: promote team-a/web to v2")
    d = Driver.with_stable(make_policy(*STAGES, analysis=analysis(), gitops=GITOPS))
    d.push("v2")
    (w,) = writes(d.command("abort", reason="wrong build").effects)
    assert w.version == "v1" and "aborted by alice via cli: wrong build" in w.message


KUSTOMIZATION = """\
# prod
images:
  - name: registry.example.com/web   # the app
    newTag: 'v1'   # quoted on purpose
  - {name: registry.example.com/side, newTag: v3}
  - name: registry.example.com/plain
resources: [../base]
"""


def test_gitops_kustomize_edit_changes_the_tag_scalar_only_in_its_style() -> None:
    out = set_kustomize_image(KUSTOMIZATION, "registry.example.com/web", tag="v2")
    assert out == KUSTOMIZATION.replace("newTag: 'v1'", "newTag: 'v2'")
    out = set_kustomize_image(KUSTOMIZATION, "registry.example.com/side", tag="1.10")
    assert out == KUSTOMIZATION.replace(
        "newTag: v3}", 'newTag: "1.10"}'
    )  # a plain 1.10 would read as a float
    out = set_kustomize_image(KUSTOMIZATION, "registry.example.com/plain", tag="v7")
    assert out == KUSTOMIZATION.replace(
        "  - name: registry.example.com/plain\n", "  - name: registry.example.com/plain\n    newTag: v7\n"
    )
    out = set_kustomize_image(KUSTOMIZATION, "registry.example.com/web", digest="sha256:" + "a" * 64)
    assert yaml.safe_load(out)["images"][0] == {
        "name": "registry.example.com/web",
        "newTag": "v1",
        "digest": "sha256:" + "a" * 64,
    }
    assert out == KUSTOMIZATION.replace("# the app\n", "# the app\n    digest: sha256:" + "a" * 64 + "\n")
    with pytest.raises(ConfigError, match="no images entry named registry.example.com/nope"):
        set_kustomize_image(KUSTOMIZATION, "registry.example.com/nope", tag="v1")


def test_gitops_helm_values_edit() -> None:
    values = 'image:\n  repository: r/web\n  tag: "v1"  # graylane\nreplicas: 2\n'
    out = set_helm_value(values, "image.tag", "v2")
    assert out == values.replace('"v1"', '"v2"') and get_helm_value(out, "image.tag") == "v2"
    assert set_helm_value("image: {tag: v1}\n", "image.tag", "yes") == 'image: {tag: "yes"}\n'
    with pytest.raises(ConfigError, match="has no image.version"):
        set_helm_value(values, "image.version", "v2")


def test_gitops_policy_syntax() -> None:
    doc = {
        "apiVersion": "graylane.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "web"},
        "spec": {
            "image": {"repository": "r/web"},
            "router": {"provider": "recording"},
            "stages": [{"canary": {"steps": [{"weight": 10}]}}],
            "gitops": {
                "repository": "https://git.example.com/deploy.git",
                "file": "apps/web/values.yaml",
                "when": ["rollback", "promotion"],
                "branch": "graylane/{app}-{release}",
            },
        },
    }
    policy = parse_policy(doc)
    assert (
        policy.gitops is not None
        and policy.gitops.format == "helm"
        and policy.gitops.on == ("rollback", "promotion")
    )
    assert parse_policy(to_doc(policy)) == policy
    doc["spec"]["gitops"] |= {
        "file": "../x",
        "when": ["sometimes"],
        "defaultBranch": True,
        "author": "nobody",
    }
    assert {p for p, _ in problems(doc)} >= {
        "spec.gitops.file",
        "spec.gitops.when",
        "spec.gitops.branch",
        "spec.gitops.author",
    }


def test_gitops_urls_are_shown_without_credentials() -> None:
    assert safe_url("https://bot:tok3n@git.example.com/deploy.git") == "https://git.example.com/deploy.git"


class DownGit:
    def __init__(self) -> None:
        self.calls = 0

    def write_back(self, effect: Any) -> str:
        self.calls += 1
        raise ProviderUnavailable("git://git.example.com/deploy.git: connection refused")


def test_gitops_down_never_holds_the_release_and_later_write_backs_wait_their_turn() -> None:
    policy = replace(
        make_policy(*STAGES, analysis=analysis(), gitops=replace(GITOPS, on=("promotion", "rollback"))),
        namespace="prod",
    )
    providers = RecordingProviders()
    git = DownGit()
    providers.gitops = lambda p: git  # type: ignore[attr-defined]
    clock = Clock()
    runner = Runner(MemoryStore(), StaticPolicies([policy]), providers, clock=clock)
    runner.handle(push(policy.app, "v1", repo=policy.image.repository))
    runner.handle(push(policy.app, "v2", repo=policy.image.repository))
    for _ in range(8):
        clock.advance(10)
        runner.handle(tick(policy.app))
    doc, _ = runner.store.load(policy.app)
    from functions.core.state import AppState

    state = AppState.from_json(doc)
    assert state.release is not None and state.release.phase == Phase.SUCCEEDED
    assert [e.kind for e in state.pending] == ["git-write-back"] and git.calls >= 1


def test_gitops_the_canary_does_not_carry_argo_cds_tracking_id_of_the_stable() -> None:
    from functions.providers.workloads.base import WorkloadTarget
    from functions.providers.workloads.kubernetes import derived_deployment

    tracking = "argocd.argoproj.io/tracking-id"
    stable = {
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "labels": {"app": "web"},
            "annotations": {tracking: "web:apps/Deployment:prod/web", "team": "shop"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "r/web:v1"}]},
            },
        },
    }
    target = WorkloadTarget("prod", "web", "web", "web-canary", container="web")
    canary = derived_deployment(stable, "prod", "web-canary", "canary", "r/web:v2", 1, target, {})
    annotations = canary["metadata"]["annotations"]
    assert tracking not in annotations and annotations["team"] == "shop"
    assert (
        stable["metadata"]["annotations"][tracking] == "web:apps/Deployment:prod/web"
    )  # the stable's is its own
