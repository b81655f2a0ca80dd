"""The import contracts (pyproject.toml, [tool.importlinter]) can fail (issue 16, item 2).

Each case commits one deliberate violation to a temporary copy of the package and runs `lint-imports` there:
the contract it names must break, and the unmodified copy must keep every contract (the control, which also
shows the copy, not the installed tree, is the one analysed). The contracts list modules by name, so the
last tests check that the lists name every top-level module of `functions` and every kind of provider: a new
module cannot slip past the core's purity contract by being missing from the list.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PROVIDERS = ROOT / "functions" / "providers"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]

# (contract id, module file, the line appended to it, what the line brings in)
VIOLATIONS = [
    ("core-pure", "functions/core/machine.py", "import time", "a clock"),
    ("core-pure", "functions/core/policy.py", "import os", "the environment"),
    ("core-pure", "functions/core/targeting.py", "import random", "randomness"),
    ("core-pure", "functions/core/analysis.py", "import urllib.request", "the network"),
    ("core-pure", "functions/core/analysis.py", "import socket", "the network"),
    ("core-pure", "functions/core/state.py", "from pathlib import Path", "files"),
    ("core-pure", "functions/core/state.py", "import subprocess", "processes"),
    ("core-pure", "functions/core/stages.py", "import threading", "threads"),
    ("core-pure", "functions/core/stages.py", "import functions.settings", "a non-core graylane module"),
    ("core-pure", "functions/core/stages.py", "from functions.providers import kube", "a provider"),
    ("core-pure", "functions/errors.py", "import os", "the environment, through errors"),
    ("kube-in-providers", "functions/gateway.py", "import kubernetes", "the Kubernetes client"),
    ("kube-in-providers", "functions/runner.py", "from kubernetes import client", "the Kubernetes client"),
    (
        "providers-independent",
        "functions/providers/routers/_common.py",
        "from functions.providers.stores import memory",
        "a store, from a router",
    ),
    (
        "providers-independent",
        "functions/providers/notifiers/slack.py",
        "from functions.providers.metrics import prometheus",
        "metrics, from a notifier",
    ),
    ("functions-thin", "functions/release_tick.py", "from functions.core.machine import decide", "the core"),
    (
        "functions-thin",
        "functions/release_start.py",
        "from functions.catalog import to_domain",
        "the catalog",
    ),
    ("functions-thin", "functions/release_command.py", "import functions.providers.factory", "providers"),
    ("importers-pure", "functions/importers/common.py", "import functions.runner", "the runner"),
]


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "functions", root / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy first: the installed (editable) tree is not read
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo", *(f"--contract={c}" for c in contracts)]
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_unmodified_copy_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint_imports(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("contract", "module", "line", "what"),
    VIOLATIONS,
    ids=[f"{c}-{Path(m).stem}-{ln.split()[-1]}" for c, m, ln, _ in VIOLATIONS],
)
def test_a_violation_breaks_its_contract(
    tmp_path: Path, contract: str, module: str, line: str, what: str
) -> None:
    root = _copy(tmp_path)
    with (root / module).open("a") as f:
        f.write(f"\n{line}  # the deliberate violation: {what}\n")
    done = _lint_imports(root, contract)
    assert done.returncode == 1, f"{module} importing {what} kept {contract}:\n{done.stdout}{done.stderr}"
    assert "0 kept, 1 broken." in done.stdout, done.stdout
    assert module.removesuffix(".py").replace("/", ".") in done.stdout  # the report names the importer


def _contract(contract_id: str) -> dict[str, Any]:
    return next(c for c in CONFIG["contracts"] if c["id"] == contract_id)


def _top_level_modules() -> set[str]:
    names = {p.stem for p in (ROOT / "functions").glob("*.py")} | {
        p.parent.name for p in (ROOT / "functions").glob("*/__init__.py")
    }
    return {f"functions.{n}" for n in names - {"__init__"}}


def _graylane(modules: list[str]) -> set[str]:
    return {m for m in modules if m.startswith("functions.")}


def test_core_forbids_every_other_graylane_module() -> None:
    contract = _contract("core-pure")
    allowed = set(contract["source_modules"])
    assert allowed == {"functions.core", "functions.errors"}
    assert _graylane(contract["forbidden_modules"]) == _top_level_modules() - allowed


def test_only_providers_may_import_kubernetes() -> None:
    sources = set(_contract("kube-in-providers")["source_modules"])
    assert sources == _top_level_modules() - {"functions.providers"}


def test_the_functions_may_import_only_the_runtime() -> None:
    functions = {"functions.release_command", "functions.release_start", "functions.release_tick"}
    contract = _contract("functions-thin")
    assert set(contract["source_modules"]) == functions
    allowed = {"functions.runtime", "functions.runner", "functions.internal_auth"}
    assert _graylane(contract["forbidden_modules"]) == _top_level_modules() - allowed - functions


def test_every_kind_of_provider_is_independent() -> None:
    kinds = {f"functions.providers.{p.parent.name}" for p in PROVIDERS.glob("*/*.py")}  # a package or not
    assert set(_contract("providers-independent")["modules"]) == kinds
