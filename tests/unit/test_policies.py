"""Loading policy files and watching a policy directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from functions.errors import NotFound, PolicyError
from functions.policies import DirectoryPolicies, load_policy_file, load_policy_text

ROOT = Path(__file__).resolve().parents[2]


def policy_yaml(
    name: str, repository: str = "registry.example.com/team/app", weight: int = 10, semver: str = ""
) -> str:
    rule = f", semver: '{semver}'" if semver else ""
    return f"""\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: {name}, namespace: team}}
spec:
  image: {{repository: {repository}{rule}}}
  router: {{provider: recording}}
  stages:
    - canary: {{steps: [{{weight: {weight}}}]}}
"""


def touch_later(path: Path, text: str) -> None:
    """Rewrite path so its mtime surely differs, even on coarse-grained file systems."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_load_policy_file_reads_every_document(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(policy_yaml("a") + "---\n" + policy_yaml("b"))
    assert [p.app for p in load_policy_file(path)] == ["team/a", "team/b"]


def test_load_policy_file_names_the_source(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(policy_yaml("a", weight=500))
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert caught.value.source == str(path)
    assert caught.value.problems == [
        ("spec.stages[0].canary.steps[0].weight", "500 is not allowed; expected an integer 0..100")
    ]


def test_load_policy_text_reports_yaml_errors_with_a_line() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text("a: [1,\nb: {", "inline")
    ((where, message),) = caught.value.problems
    assert where.startswith("line ")
    assert message.startswith("invalid YAML")


def test_examples_load() -> None:
    for path in sorted((ROOT / "infra" / "examples").glob("*.yaml")):
        assert load_policy_file(path)


def test_directory_get_all_and_for_image(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(policy_yaml("a", "registry.example.com/team/a", semver=">=1.0.0 <2.0.0"))
    (tmp_path / "b.yml").write_text(policy_yaml("b", "nginx"))
    (tmp_path / "README.md").write_text("not a policy")
    policies = DirectoryPolicies(tmp_path)
    assert sorted(p.app for p in policies.all()) == ["team/a", "team/b"]
    assert policies.get("team/a").image.repository == "registry.example.com/team/a"
    assert policies.for_image("registry.example.com/team/a", "v1.2.3") is policies.get("team/a")
    assert policies.for_image("registry.example.com/team/a", "v2.0.0") is None
    assert policies.for_image("docker.io/library/nginx", "1.25") is policies.get("team/b")
    with pytest.raises(NotFound, match="ReleasePolicy team/c not found"):
        policies.get("team/c")


def test_directory_sees_edits_new_and_removed_files(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text(policy_yaml("a", weight=10))
    policies = DirectoryPolicies(tmp_path)
    assert policies.get("team/a").stages[0].steps[0].weight == 10  # type: ignore[union-attr]
    touch_later(a, policy_yaml("a", weight=30))
    assert policies.get("team/a").stages[0].steps[0].weight == 30  # type: ignore[union-attr]
    (tmp_path / "b.yaml").write_text(policy_yaml("b"))
    assert policies.get("team/b").name == "b"
    a.unlink()
    with pytest.raises(NotFound):
        policies.get("team/a")


def test_a_broken_edit_keeps_the_last_good_policy(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text(policy_yaml("a", weight=10))
    policies = DirectoryPolicies(tmp_path)
    policies.get("team/a")
    touch_later(a, policy_yaml("a", weight=1000))
    assert policies.get("team/a").stages[0].steps[0].weight == 10  # type: ignore[union-attr]
    assert [p for p, _ in policies.errors[str(a)].problems] == ["spec.stages[0].canary.steps[0].weight"]
    touch_later(a, policy_yaml("a", weight=40))
    assert policies.get("team/a").stages[0].steps[0].weight == 40  # type: ignore[union-attr]
    assert policies.errors == {}


def test_a_file_broken_from_the_start_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: Nope\n")
    policies = DirectoryPolicies(tmp_path)
    assert policies.all() == []
    with pytest.raises(NotFound, match="files with problems: .*bad.yaml"):
        policies.get("team/a")


def test_duplicate_apps_first_file_wins(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(policy_yaml("web", weight=10))
    (tmp_path / "b.yaml").write_text(policy_yaml("web", weight=20))
    policies = DirectoryPolicies(tmp_path)
    assert policies.get("team/web").stages[0].steps[0].weight == 10  # type: ignore[union-attr]
    assert "already declared by" in str(policies.errors[str(tmp_path / "b.yaml")])
    (tmp_path / "b.yaml").unlink()
    assert policies.errors == {}


def test_check_interval_throttles_rescans(tmp_path: Path) -> None:
    now = [100.0]
    a = tmp_path / "a.yaml"
    a.write_text(policy_yaml("a", weight=10))
    policies = DirectoryPolicies(tmp_path, check_interval=5.0, clock=lambda: now[0])
    policies.get("team/a")
    touch_later(a, policy_yaml("a", weight=20))
    now[0] += 1.0
    assert policies.get("team/a").stages[0].steps[0].weight == 10  # type: ignore[union-attr]
    now[0] += 5.0
    assert policies.get("team/a").stages[0].steps[0].weight == 20  # type: ignore[union-attr]


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="could not be listed"):
        DirectoryPolicies(tmp_path / "nope").all()
