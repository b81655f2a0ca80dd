"""Compiled policies: read back equal to what the YAML parses to, keyed by content and parser, private."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import functions.policies as policies_module
import functions.policy_cache as policy_cache
from functions.cli import main
from functions.core.codec import from_plain, to_plain
from functions.core.policy import CanaryStage, PromoteStage, Stage
from functions.core.state import Release, Version
from functions.errors import PolicyError
from functions.policies import DirectoryPolicies, load_policy_file
from functions.policy_cache import PolicyCache
from tests.unit.test_policies import policy_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "infra" / "examples").glob("*.yaml"))


@pytest.fixture
def cache(tmp_path: Path) -> PolicyCache:
    return PolicyCache(tmp_path / "cache")


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make parsing YAML fail loudly; returns the sources that were parsed (none, on a cache hit)."""
    parsed: list[str] = []

    def refuse(text: str, source: str = "") -> list[object]:
        parsed.append(source)
        raise AssertionError(f"{source} was parsed, not read from the cache")

    monkeypatch.setattr(policies_module, "load_policy_text", refuse)
    return parsed


def entries(cache: PolicyCache) -> list[Path]:
    return sorted(cache.directory.glob("*.pickle")) if cache.directory.exists() else []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_reads_back_equal_from_the_cache(path: Path, cache: PolicyCache) -> None:
    parsed = load_policy_file(path, cache)
    assert len(entries(cache)) == 1
    assert PolicyCache(cache.directory).get(path.read_text()) == parsed


def test_a_second_directory_reads_compiled_policies_without_parsing(
    tmp_path: Path, cache: PolicyCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.yaml").write_text(policy_yaml("a", weight=30))
    first = DirectoryPolicies(tmp_path, cache=cache).get("team/a")
    parsed: list[str] = []
    monkeypatch.setattr(
        policies_module, "load_policy_text", lambda text, source="": parsed.append(source) or []
    )
    assert DirectoryPolicies(tmp_path, cache=PolicyCache(cache.directory)).get("team/a") == first
    assert parsed == []


def test_an_edited_file_misses_and_is_parsed_again(tmp_path: Path, cache: PolicyCache) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(policy_yaml("a", weight=30))
    load_policy_file(path, cache)
    path.write_text(policy_yaml("a", weight=70))
    [policy] = load_policy_file(path, cache)
    stage = policy.stages[0]
    assert isinstance(stage, CanaryStage) and stage.steps[0].weight == 70
    assert len(entries(cache)) == 2


def test_another_parser_version_misses(
    tmp_path: Path, cache: PolicyCache, no_parsing: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(policy_yaml("a"))
    cache.put(path.read_text(), [])  # what an older graylane stored for this text
    assert load_policy_file(path, cache) == []
    monkeypatch.setattr(policy_cache, "_parser_stamp", lambda: "graylane-next")
    with pytest.raises(AssertionError, match="was parsed"):
        load_policy_file(path, cache)


def test_the_parser_stamp_covers_the_model_and_parser_sources() -> None:
    stamp = policy_cache._parser_stamp()
    for name in ("policy.py", "policy_parse.py", "policy_stages.py", "images.py", "codec.py", "policies.py"):
        assert f"{name}:" in stamp


def test_a_corrupt_entry_is_parsed_again_and_rewritten(tmp_path: Path, cache: PolicyCache) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(policy_yaml("a"))
    good = load_policy_file(path, cache)
    [entry] = entries(cache)
    truncated = entry.read_bytes()[:40]
    for broken in (
        b"not a pickle",
        truncated,
        pickle.dumps((1, good)),
        pickle.dumps((policy_cache.FORMAT, ["x"])),
        pickle.dumps({"format": policy_cache.FORMAT}),
    ):
        entry.write_bytes(broken)
        assert load_policy_file(path, cache) == good
        assert pickle.loads(entry.read_bytes()) == (policy_cache.FORMAT, good)


def test_invalid_policies_are_never_cached(tmp_path: Path, cache: PolicyCache) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(policy_yaml("a", weight=130))
    with pytest.raises(PolicyError, match="weight"):
        load_policy_file(path, cache)
    assert entries(cache) == []


def test_an_entry_in_a_directory_others_can_write_is_not_trusted(tmp_path: Path, cache: PolicyCache) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(policy_yaml("a"))
    load_policy_file(path, cache)
    [entry] = entries(cache)
    assert cache.directory.stat().st_mode & 0o777 == 0o700 and entry.stat().st_mode & 0o777 == 0o600
    os.chmod(cache.directory, 0o777)
    assert cache.get(path.read_text()) is None
    os.chmod(cache.directory, 0o700)
    os.chmod(entry, 0o666)
    assert cache.get(path.read_text()) is None
    os.chmod(entry, 0o600)
    assert cache.get(path.read_text()) is not None


def test_an_unusable_cache_directory_only_costs_parsing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = PolicyCache(blocker / "cache")  # under a regular file: cannot be created
    path = tmp_path / "a.yaml"
    path.write_text(policy_yaml("a"))
    assert [p.app for p in load_policy_file(path, cache)] == ["team/a"]
    assert cache.get(path.read_text()) is None


def test_configured_cache_directory() -> None:
    assert PolicyCache.configured("off") is None
    assert PolicyCache.configured("/var/cache/x").directory == Path("/var/cache/x")  # type: ignore[union-attr]
    default = PolicyCache.configured("", env={"HOME": "/home/ops"})
    assert default is not None and default.directory == Path("/home/ops/.cache/graylane/policies")
    xdg = PolicyCache.configured("", env={"HOME": "/home/ops", "XDG_CACHE_HOME": "/xdg"})
    assert xdg is not None and xdg.directory == Path("/xdg/graylane/policies")


def test_a_user_without_a_home_gets_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert PolicyCache.configured("", env={}) is None


def test_validate_compile_fills_the_cache_and_a_fresh_process_never_imports_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRAYLANE_POLICY_CACHE", str(tmp_path / "cache"))
    assert main(["validate", "--compile", str(ROOT / "infra" / "examples")]) == 0
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == len(EXAMPLES)
    code = (
        "import sys; from functions.runtime import policies_from; ps = policies_from(sys.argv[1]); "
        "print(len(ps.all()), ps.errors, 'yaml' in sys.modules)"
    )
    env = {**os.environ, "GRAYLANE_POLICY_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "infra" / "examples")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(EXAMPLES)), "{}", "False"]


def test_codec_picks_a_stage_by_its_kind_and_keeps_other_kinds_as_data() -> None:
    stages = (PromoteStage(), CanaryStage())
    assert tuple(from_plain(Stage, to_plain(s)) for s in stages) == stages
    with pytest.raises(ValueError, match="kind 'launch'"):
        from_plain(Stage, {"kind": "launch"})
    rollback = Release(
        id="r",
        seq=1,
        target=Version("v1", "img:v1"),
        origin=Version("v2", "img:v2"),
        started_at="2026-11-23T08:00:00Z",
        kind="rollback",
    )
    assert from_plain(Release | None, to_plain(rollback)) == rollback
