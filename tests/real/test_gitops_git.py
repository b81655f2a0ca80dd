"""GitOps write-back against a real Git server (issue 14, item 6): bare repositories served by `git daemon` over
git:// on loopback, written by graylane's GitWriter through the git CLI, driven by the real runner.

A rollback (and, when the policy says so, a promotion) becomes one commit that changes the image tag of a
kustomization or a Helm values file and nothing else in it, with the release and the reason in its message.
A retried effect commits nothing twice; a push that loses to a concurrent one fetches, re-applies and
pushes again; commits go to a branch of their own unless the policy names the default branch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from functions.core.effects import Effect
from functions.core.events import Command, ImagePushed, MetricSample, Tick
from functions.core.policy import (
    Analysis,
    CanaryStage,
    CanaryStep,
    GitOps,
    ImageRule,
    MetricCheck,
    Policy,
    PromoteStage,
    RouterSpec,
)
from functions.core.state import Actor, AppState, Phase, Version
from functions.providers.gitops.git import GitWriter
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.real.gitserver import GitServer, git
from tests.support import StaticPolicies

pytestmark = pytest.mark.real
REPO = "registry.example.com/shop/web"
KUSTOMIZATION = """\
# overlays/prod: what Argo CD syncs for shop/web
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop
resources:
  - ../../base   # the Deployment, Service, HPA
images:
  - name: registry.example.com/shop/sidecar
    newTag: "1.4"
  - name: registry.example.com/shop/web   # the app
    newTag: "v1"        # written by graylane on rollback
commonLabels: {team: shop}
"""
VALUES = """\
replicaCount: 3
image:
  repository: registry.example.com/shop/web
  tag: v1   # graylane
  pullPolicy: IfNotPresent
"""


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[GitServer]:
    server = GitServer(tmp_path / "srv")
    server.root.mkdir()
    server.start()
    server.repository(
        "deploy.git",
        {
            "apps/web/kustomization.yaml": KUSTOMIZATION,
            "charts/web/values.yaml": VALUES,
            "README.md": "deploy repo\n",
        },
    )
    yield server
    server.stop()


def gitops(server: GitServer, **kw: Any) -> GitOps:
    return GitOps(**{"repository": server.url("deploy.git"), "file": "apps/web/kustomization.yaml", **kw})


def policy(g: GitOps, metric_min: float = 0.9) -> Policy:
    return Policy(
        name="web",
        namespace="shop",
        image=ImageRule(repository=REPO),
        router=RouterSpec(provider="recording"),
        stages=(CanaryStage(steps=(CanaryStep(20, 60.0),)), PromoteStage()),
        analysis=Analysis(
            interval=10.0,
            metrics=(MetricCheck(name="success-rate", template="success-rate", min=metric_min),),
        ),
        gitops=g,
    )


def show(server: GitServer, tmp: Path, ref: str = "main", path: str = "apps/web/kustomization.yaml") -> str:
    look = tmp / f"look-{ref.replace('/', '-')}-{datetime.now().timestamp()}"
    server.clone("deploy.git", look)
    git(look, "checkout", "--quiet", ref)
    return (look / path).read_text()


def log(server: GitServer, tmp: Path, ref: str = "main") -> list[str]:
    look = tmp / f"log-{ref.replace('/', '-')}-{datetime.now().timestamp()}"
    server.clone("deploy.git", look)
    return [
        m.strip("\n") + "\n" for m in git(look, "log", "--format=%B%x00", f"origin/{ref}").split("\x00")[:-1]
    ]


def bad(policy: Policy, release: Any) -> tuple[MetricSample, ...]:
    return (
        MetricSample(
            name="success-rate",
            value=0.5,
            stable_value=1.0,
            canary_requests=1000,
            canary_errors=500,
            stable_requests=1000,
            stable_errors=0,
        ),
    )


def good(policy: Policy, release: Any) -> tuple[MetricSample, ...]:
    return (
        MetricSample(
            name="success-rate",
            value=1.0,
            stable_value=1.0,
            canary_requests=1000,
            canary_errors=0,
            stable_requests=1000,
            stable_errors=0,
        ),
    )


class Run:
    def __init__(self, p: Policy) -> None:
        self.clock = [datetime(2026, 12, 1, 9, 0, tzinfo=UTC)]
        self.store = MemoryStore()
        self.providers = RecordingProviders(good)
        self.runner = Runner(self.store, StaticPolicies([p]), self.providers, clock=lambda: self.clock[0])
        self.n = 0

    def push(self, tag: str) -> None:
        self.runner.handle(
            ImagePushed(
                id=f"push-{tag}",
                app="shop/web",
                target=Version(tag, f"{REPO}:{tag}"),
                repository=REPO,
                tag=tag,
            )
        )

    def tick(self) -> Any:
        self.clock[0] += timedelta(seconds=10)
        self.n += 1
        return self.runner.handle(Tick(id=f"tick-{self.n}", app="shop/web"))[0]

    def state(self) -> AppState:
        doc, _ = self.store.load("shop/web")
        assert doc is not None
        return AppState.from_json(doc)


def only_tag_changed(before: str, after: str, old: str, new: str) -> None:
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(diff) == 1 and diff[0][0].replace(old, new) == diff[0][1], diff


def test_gitops_rollback_commits_the_stable_tag_to_the_default_branch(
    server: GitServer, tmp_path: Path
) -> None:
    # an image updater (Argo CD Image Updater, Flux image automation) wrote v2 into Git when v2 was pushed
    team = server.clone("deploy.git", tmp_path / "team")
    k = team / "apps/web/kustomization.yaml"
    k.write_text(KUSTOMIZATION.replace('newTag: "v1"', 'newTag: "v2"'))
    git(team, "commit", "--quiet", "-am", "image updater: web v2")
    git(team, "push", "--quiet", "origin", "main")
    r = Run(policy(gitops(server, default_branch=True)))
    r.providers.measure_fn = bad
    r.push("v1")
    r.push("v2")
    out = r.tick()  # the analysis fails: traffic back to v1, and Git told
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.ROLLED_BACK and out.pending == 0
    after = show(server, tmp_path)
    only_tag_changed(KUSTOMIZATION.replace('newTag: "v1"', 'newTag: "v2"'), after, '"v2"', '"v1"')
    message = log(server, tmp_path)[0]
    assert message.startswith("graylane: roll back shop/web to v1\n")
    assert (
        "Release: web-1 (v1 -> v2)" in message and "analysis failed: success-rate: 0.5 < min 0.9" in message
    )
    assert "Graylane-Effect: web-1/" in message
    assert r.tick().applied == []  # nothing left to write


def test_gitops_retried_effect_commits_once_and_an_unchanged_file_commits_nothing(
    server: GitServer, tmp_path: Path
) -> None:
    p = policy(gitops(server, default_branch=True))
    effect = Effect(
        id="web-3/7/4-git-write-back",
        kind="git-write-back",
        image=f"{REPO}:v0",
        version="v0",
        message="graylane: roll back shop/web to v0\n\nRelease: web-3",
        notice={"release": "web-3"},
    )
    writer = GitWriter(p)
    first = writer.write_back(effect)
    assert first and writer.write_back(effect) == ""  # the retry finds its commit (Graylane-Effect trailer)
    again = replace(effect, id="web-4/1/0-git-write-back")
    assert writer.write_back(again) == ""  # the file already says v0: no empty commit
    assert len(log(server, tmp_path)) == 2 and writer.pushes == 1


def test_gitops_push_that_loses_a_race_fetches_reapplies_and_pushes_again(
    server: GitServer, tmp_path: Path
) -> None:
    other = server.clone("deploy.git", tmp_path / "other")

    def someone_pushes(attempt: int) -> None:
        if attempt == 1:  # between graylane's commit and its push
            (other / "README.md").write_text("deploy repo\nnow with docs\n")
            git(other, "commit", "--quiet", "-am", "docs")
            git(other, "push", "--quiet", "origin", "main")

    p = policy(gitops(server, default_branch=True))
    writer = GitWriter(p, before_push=someone_pushes)
    effect = Effect(
        id="web-1/3/2-git-write-back",
        kind="git-write-back",
        version="v9",
        image=f"{REPO}:v9",
        message="graylane: roll back shop/web to v9",
        notice={"release": "web-1"},
    )
    assert writer.write_back(effect)
    messages = log(server, tmp_path)
    assert messages[0].startswith("graylane: roll back shop/web to v9") and messages[1].startswith("docs")
    assert show(server, tmp_path, path="README.md").endswith("now with docs\n")
    only_tag_changed(KUSTOMIZATION, show(server, tmp_path), '"v1"', '"v9"')


def test_gitops_promotion_goes_to_a_branch_of_its_own_in_a_helm_values_file(
    server: GitServer, tmp_path: Path
) -> None:
    g = gitops(server, file="charts/web/values.yaml", format="helm", on=("promotion", "rollback"))
    r = Run(policy(g))
    r.push("v1")
    r.push("v2")
    r.tick()
    r.tick()
    r.tick()
    r.tick()
    r.tick()
    r.tick()
    r.tick()  # noqa: E702 (a minute of ticks: the step's pause)
    rel = r.state().release
    assert rel is not None and rel.phase == Phase.SUCCEEDED
    assert (
        show(server, tmp_path) == KUSTOMIZATION
        and show(server, tmp_path, path="charts/web/values.yaml") == VALUES
    )
    branch = show(server, tmp_path, "origin/graylane/web-1", "charts/web/values.yaml")
    only_tag_changed(VALUES, branch, "v1", "v2")
    assert log(server, tmp_path, "graylane/web-1")[0].startswith("graylane: promote shop/web to v2")
    # a human rolls back to v1 by name: the default branch (where a new branch starts) already says v1, because
    # the promotion's branch was never merged; so there is nothing to commit and no branch for it
    out = r.runner.handle(
        Command(
            id="rb",
            app="shop/web",
            action="rollback",
            version="v1",
            release="web-1",
            actor=Actor("oncall", "cli"),
            reason="checkout errors",
        )
    )
    assert r.state().release.phase == Phase.ROLLED_BACK and out[0].pending == 0  # type: ignore[union-attr]
    assert "graylane/web-2" not in git(None, "ls-remote", server.url("deploy.git"))


def test_gitops_unreachable_git_never_holds_a_release_and_heals_later(
    server: GitServer, tmp_path: Path
) -> None:
    r = Run(policy(gitops(server, default_branch=True, on=("promotion",))))
    r.push("v1")
    server.stop()
    r.push("v2")
    for _ in range(8):
        r.tick()
    state = r.state()
    assert (
        state.release is not None and state.release.phase == Phase.SUCCEEDED
    )  # promoted, scaled down: all done
    assert [e.kind for e in state.pending] == ["git-write-back"]
    server.start()
    r.tick()
    assert r.state().pending == () and 'newTag: "v2"' in show(server, tmp_path)


def test_gitops_file_that_cannot_say_it_fails_for_good_and_is_recorded(
    server: GitServer, tmp_path: Path
) -> None:
    r = Run(
        policy(gitops(server, default_branch=True, on=("promotion",), image="registry.example.com/other"))
    )
    r.push("v1")
    r.push("v2")
    for _ in range(8):
        r.tick()
    state = r.state()
    assert state.release is not None and state.release.phase == Phase.SUCCEEDED and state.pending == ()
    failed = [h for h in state.history if h.action == "effect-failed"]
    assert failed and "no images entry named registry.example.com/other" in failed[-1].reason
