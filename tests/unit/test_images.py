"""Semver ranges, tag rules and picking the policy of a pushed image."""

from __future__ import annotations

import pytest

from functions.core import images
from functions.core.images import (
    Version,
    match_policy,
    normalize_repository,
    parse_range,
    parse_version,
    tag_matches,
)
from functions.core.policy import ImageRule, Policy, PromoteStage, RouterSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", Version(1, 2, 3)),
        ("v1.2.3", Version(1, 2, 3)),
        ("0.0.0", Version(0, 0, 0)),
        ("1.2.3-rc.1", Version(1, 2, 3, ("rc", 1))),
        ("1.2.3-alpha+build.7", Version(1, 2, 3, ("alpha",))),
        ("10.20.30", Version(10, 20, 30)),
    ],
)
def test_parse_version(text: str, expected: Version) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["1.2", "01.2.3", "1.2.3.4", "latest", "v", "1.2.3-", "1.2.3-01", ""])
def test_parse_version_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        parse_version(text)


def test_precedence_follows_semver() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
    ]
    keys = [parse_version(v).key() for v in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("rng", "tag", "expected"),
    [
        (">=1.2.0 <2.0.0", "1.2.0", True),
        (">=1.2.0 <2.0.0", "1.9.99", True),
        (">=1.2.0 <2.0.0", "2.0.0", False),
        (">=1.2.0 <2.0.0", "1.1.9", False),
        (">= 1.2.0  < 2.0.0", "1.5.0", True),
        ("^1.2", "1.2.0", True),
        ("^1.2", "1.99.0", True),
        ("^1.2", "2.0.0", False),
        ("^1.2", "1.1.0", False),
        ("^0.2.3", "0.2.9", True),
        ("^0.2.3", "0.3.0", False),
        ("^0.0.3", "0.0.3", True),
        ("^0.0.3", "0.0.4", False),
        ("~1.2.3", "1.2.3", True),
        ("~1.2.3", "1.2.10", True),
        ("~1.2.3", "1.3.0", False),
        ("~1.2.3", "1.2.2", False),
        ("~1", "1.9.0", True),
        ("1.x", "1.0.0", True),
        ("1.x", "v1.7.3", True),
        ("1.x", "2.0.0", False),
        ("1.2.x", "1.2.5", True),
        ("1.2.x", "1.3.0", False),
        ("*", "0.0.1", True),
        ("*", "99.0.0", True),
        ("", "3.1.4", True),
        ("1.2.3", "1.2.3", True),
        ("1.2.3", "1.2.4", False),
        ("=1.2.3", "v1.2.3", True),
        (">1.2", "1.2.9", False),
        (">1.2", "1.3.0", True),
        ("<=1.2", "1.2.9", True),
        ("<=1.2", "1.3.0", False),
        ("<1.2", "1.1.9", True),
        ("<1.2", "1.2.0", False),
        ("1.2.3 - 2.3", "2.3.9", True),
        ("1.2.3 - 2.3", "2.4.0", False),
        ("^1 || ^3", "3.2.0", True),
        ("^1 || ^3", "2.2.0", False),
        # pre-releases match only a comparator naming a pre-release of the same version
        (">=1.0.0", "1.3.0-rc.1", False),
        ("^1.2", "2.0.0-rc.1", False),
        (">=1.3.0-rc.0", "1.3.0-rc.1", True),
        (">=1.3.0-rc.0", "1.4.0-rc.1", False),
        (">=1.3.0-rc.0", "1.4.0", True),
        # a tag that is not a version never matches a range
        ("*", "latest", False),
        (">=1.0.0", "1.0", False),
    ],
)
def test_version_in_range(rng: str, tag: str, expected: bool) -> None:
    assert images.version_in_range(tag, rng) is expected


@pytest.mark.parametrize("rng", [">=banana", "1.2.3.4", "^", "~>1.0", ">=1.0.0 ||", "1.2.3-"])
def test_parse_range_rejects(rng: str) -> None:
    with pytest.raises(ValueError, match=r"comparator|empty alternative"):
        parse_range(rng)


def test_tag_regex_is_a_full_match() -> None:
    rule = ImageRule("r/app", tags=r"v\d+")
    assert tag_matches(rule, "v12")
    assert not tag_matches(rule, "v12-debug")
    assert not tag_matches(rule, "xv12")


def test_tag_rule_combines_regex_and_semver() -> None:
    rule = ImageRule("r/app", tags=r"v.*", semver=">=1.0.0 <2.0.0")
    assert tag_matches(rule, "v1.4.0")
    assert not tag_matches(rule, "1.4.0")  # regex fails
    assert not tag_matches(rule, "v2.0.0")  # range fails
    assert tag_matches(ImageRule("r/app"), "anything-goes")


def test_tag_rule_with_a_broken_regex_matches_nothing() -> None:
    assert not tag_matches(ImageRule("r/app", tags="(["), "v1")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("library/nginx", "index.docker.io/library/nginx"),
        ("Docker.io/Team/App", "team/app"),
        ("registry-1.docker.io/team/app", "docker.io/team/app"),
        ("https://ghcr.io/Org/App/", "ghcr.io/org/app"),
        ("localhost:5000/app", "LOCALHOST:5000/app"),
    ],
)
def test_normalize_repository_equal(a: str, b: str) -> None:
    assert normalize_repository(a) == normalize_repository(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("ghcr.io/org/app", "docker.io/org/app"),
        ("team/app", "team/app2"),
        ("registry.example.com/app", "app"),
    ],
)
def test_normalize_repository_different(a: str, b: str) -> None:
    assert normalize_repository(a) != normalize_repository(b)


def _policy(name: str, repository: str, tags: str = "", semver: str = "") -> Policy:
    return Policy(
        name=name,
        namespace="ns",
        image=ImageRule(repository, tags, semver),
        router=RouterSpec("recording"),
        stages=(PromoteStage(),),
    )


def test_match_policy_picks_the_first_matching_rule() -> None:
    stable = _policy("stable", "registry.example.com/team/flask", semver=">=1.0.0 <2.0.0")
    next_major = _policy("next", "registry.example.com/team/flask", semver=">=2.0.0")
    catch_all = _policy("any", "registry.example.com/team/flask")
    other = _policy("other", "nginx")
    policies = [other, stable, next_major, catch_all]
    assert match_policy(policies, "registry.example.com/team/flask", "v1.4.0") is stable
    assert match_policy(policies, "Registry.Example.com/team/flask", "2.1.0") is next_major
    assert match_policy(policies, "registry.example.com/team/flask", "latest") is catch_all
    assert match_policy(policies, "docker.io/library/nginx", "1.25") is other
    assert match_policy(policies, "registry.example.com/team/other", "1.0.0") is None
    assert match_policy([stable], "registry.example.com/team/flask", "latest") is None
