"""tests/k8s/tools/build.sh: one build per recipe and Go version, found again with --cached without building.

A fake `go` on PATH stands in for the toolchain: `go build -o DIR/ PKG...` writes one file per package and
counts its calls, `go env GOVERSION` answers $FAKE_GO_VERSION.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BUILD_SH = Path(__file__).resolve().parents[1] / "k8s" / "tools" / "build.sh"
FAKE_GO = """#!/bin/sh
case "$1" in
  env) echo "$FAKE_GO_VERSION" ;;
  build) echo x >> "$FAKE_GO_CALLS"
         while [ "$1" != "-o" ]; do shift; done; out=$2; shift 2
         for pkg in "$@"; do echo "built $pkg" > "$out/${pkg##*/}"; done ;;
esac
"""


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    root = tmp_path / "tools"
    (root / "demo").mkdir(parents=True)
    shutil.copy(BUILD_SH, root / "build.sh")
    (root / "demo" / "go.mod").write_text("module demo\n")
    (root / "demo" / "recipe.sh").write_text("PACKAGES=(example.com/cmd/demo)\n")
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "go").write_text(FAKE_GO)
    (bin_dir / "go").chmod(0o755)
    return root


def run(tools: Path, *args: str, version: str = "go1.26.8") -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PATH=f"{tools.parent / 'fakebin'}:{os.environ['PATH']}",
        FAKE_GO_VERSION=version,
        FAKE_GO_CALLS=str(tools.parent / "calls"),
        GRAYLANE_CACHE=str(tools.parent / "cache"),
    )
    return subprocess.run(["bash", str(tools / "build.sh"), *args], env=env, capture_output=True, text=True)


def builds(tools: Path) -> int:
    calls = tools.parent / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_cached_finds_a_build_without_building_and_a_changed_recipe_or_go_builds_anew(tools: Path) -> None:
    missing = run(tools, "--cached", "demo")
    assert missing.returncode == 1 and "not built" in missing.stderr and builds(tools) == 0

    built = run(tools, "demo")
    assert built.returncode == 0, built.stderr
    bin_dir = Path(built.stdout.strip())
    assert (bin_dir / "demo").read_text() == "built example.com/cmd/demo\n" and builds(tools) == 1
    assert run(tools, "--cached", "demo").stdout.strip() == str(bin_dir)
    assert run(tools, "demo").stdout.strip() == str(bin_dir) and builds(tools) == 1  # reused

    assert run(tools, "--cached", "demo", version="go1.27.0").returncode == 1  # another toolchain
    (tools / "demo" / "recipe.sh").write_text("PACKAGES=(example.com/cmd/demo)\nLDFLAGS=-X=a.b=c\n")
    assert run(tools, "--cached", "demo").returncode == 1  # another recipe
    rebuilt = run(tools, "demo")
    assert Path(rebuilt.stdout.strip()) != bin_dir and builds(tools) == 2
