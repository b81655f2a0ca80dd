"""A small mutation check (issue 11, item 9): each mutant below once passed every pure test; now the tests
named with it must fail.

A mutant is applied to a temporary copy of the repository (functions/, tests/, events/, infra/, pyproject),
located by the AST, not by text, so unrelated edits to a file do not break it. The copy's tests run in a
subprocess with the copy first on the path: first unmutated (the control: the selection passes there), then
once per mutant (every named test must fail). The runs go two at a time: about 15 s of CPU in all.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("functions", "tests", "events", "infra", "pyproject.toml", "README.md")
GUARDS = "tests/unit/test_mutation_guards.py"
FUZZ = "tests/unit/test_gateway.py::test_fuzz_never_answers_5xx"


# -- locating and rewriting code --------------------------------------------------------------------------


def _function(tree: ast.AST, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The function or method `qualname` ("Class.method", or "outer.inner" for a nested def)."""
    scope: list[ast.AST] = [tree]
    node: ast.AST | None = None
    for part in qualname.split("."):
        node = next(
            (
                n
                for s in scope
                for n in ast.walk(s)
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part
            ),
            None,
        )
        if node is None:
            raise LookupError(f"{qualname}: no {part}")
        scope = [node]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef), qualname
    return node


def _replace(source: str, first: ast.stmt, last: ast.stmt, lines: list[str]) -> str:
    """Replace the statements first..last with `lines`, at first's indentation."""
    text = source.splitlines(keepends=True)
    indent = " " * first.col_offset
    assert last.end_lineno is not None
    text[first.lineno - 1 : last.end_lineno] = [indent + line + "\n" for line in lines]
    return "".join(text)


def body_is_noop(qualname: str) -> Callable[[str], str]:
    def mutate(source: str) -> str:
        fn = _function(ast.parse(source), qualname)
        return _replace(source, fn.body[0], fn.body[-1], ["return None"])

    return mutate


def work_is_noop(qualname: str) -> Callable[[str], str]:
    """The function's last statement (the work it exists for) does nothing; what comes before (its caller's
    authentication) stays."""

    def mutate(source: str) -> str:
        fn = _function(ast.parse(source), qualname)
        return _replace(source, fn.body[-1], fn.body[-1], ["return None"])

    return mutate


def returns_early_without(qualname: str, parameter: str) -> Callable[[str], str]:
    """`if not <parameter>: return` as the function's first statement (accept what it should refuse)."""

    def mutate(source: str) -> str:
        fn = _function(ast.parse(source), qualname)
        assert parameter in [a.arg for a in fn.args.args], f"{qualname} has no parameter {parameter}"
        first = fn.body[0]
        text = source.splitlines(keepends=True)
        indent = " " * first.col_offset
        text[first.lineno - 1 : first.lineno - 1] = [
            f"{indent}if not {parameter}:\n",
            f"{indent}    return None\n",
        ]
        return "".join(text)

    return mutate


def handler_passes(qualname: str, exception: str) -> Callable[[str], str]:
    """The `except <exception>` handler in `qualname` does nothing: the code after the try carries on."""

    def mutate(source: str) -> str:
        fn = _function(ast.parse(source), qualname)
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.ExceptHandler)
                and isinstance(node.type, ast.Name)
                and node.type.id == exception
            ):
                return _replace(source, node.body[0], node.body[-1], ["pass"])
        raise LookupError(f"{qualname}: no except {exception}")

    return mutate


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file in the repository
    mutate: Callable[[str], str]
    caught_by: tuple[str, ...]  # test node ids (prefixes) that must fail with it


MUTANTS = (
    Mutant(
        "release_start does nothing",
        "functions/release_start.py",
        work_is_noop("release_start"),
        (f"{GUARDS}::test_mutation_release_start_starts_a_release",),
    ),
    Mutant(
        "release_tick does nothing",
        "functions/release_tick.py",
        work_is_noop("release_tick"),
        (f"{GUARDS}::test_mutation_release_tick_moves_a_release",),
    ),
    Mutant(
        "a delivery without its signature header is accepted",
        "functions/providers/sources/base.py",
        returns_early_without("check_hmac", "signature"),
        (f"{GUARDS}::test_mutation_a_delivery_without_its_signature_header_is_refused",),
    ),
    Mutant(
        "RoutePlan's sum-to-100 guard is gone",
        "functions/core/effects.py",
        body_is_noop("RoutePlan.__post_init__"),
        (
            f"{GUARDS}::test_mutation_route_plans_must_split_100_percent",
            f"{GUARDS}::test_mutation_canary_weights_outside_0_to_100_are_not_plans",
        ),
    ),
    Mutant(
        "the gateway lets an unauthenticated delivery through",
        "functions/gateway.py",
        handler_passes("hook_routes.hook", "Unauthenticated"),
        (FUZZ, f"{GUARDS}::test_mutation_an_unauthenticated_delivery_publishes_nothing"),
    ),
)


# -- running the copy -------------------------------------------------------------------------------------


def _copy(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "*.pyc", "results")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


@dataclass
class Run:
    returncode: int
    failed: set[str]
    output: str


def _pytest(repo: Path, selection: tuple[str, ...]) -> Run:
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *selection,
            "-q",
            "-rf",
            "--tb=no",
            "-p",
            "no:cacheprovider",
            "--hypothesis-seed=0",
            "--hypothesis-profile=mutation",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    failed = set(re.findall(r"^FAILED (\S+)", proc.stdout, re.MULTILINE))
    return Run(proc.returncode, failed, proc.stdout[-3000:] + proc.stderr[-2000:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """The control run and one run per mutant, two at a time."""
    base = tmp_path_factory.mktemp("mutation")
    jobs: dict[str, tuple[Path, tuple[str, ...]]] = {}
    # the control: the copy itself passes the guards (the fuzz test runs unmutated in the suite itself)
    jobs["control"] = (
        _copy(base / "control"),
        tuple(sorted({t for m in MUTANTS for t in m.caught_by} - {FUZZ})),
    )
    for i, mutant in enumerate(MUTANTS):
        repo = _copy(base / f"mutant-{i}")
        target = repo / mutant.path
        mutated = mutant.mutate(target.read_text())
        compile(mutated, str(target), "exec")  # a mutant is still valid Python
        assert mutated != target.read_text(), mutant.name
        target.write_text(mutated)
        jobs[mutant.name] = (repo, mutant.caught_by)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_pytest, repo, selection) for name, (repo, selection) in jobs.items()}
        yield {name: f.result() for name, f in futures.items()}


def test_mutation_check_the_unmutated_copy_passes_every_guard(runs: dict[str, Run]) -> None:
    control = runs["control"]
    assert control.returncode == 0 and not control.failed, control.output


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutation_check_every_mutant_is_caught(runs: dict[str, Run], mutant: Mutant) -> None:
    run = runs[mutant.name]
    assert run.returncode != 0, f"mutant survived: {mutant.name}\n{run.output}"
    for test in mutant.caught_by:
        assert any(f == test or f.startswith(test + "[") for f in run.failed), (
            f"{test} did not fail with mutant {mutant.name!r}; failed: {sorted(run.failed)}\n{run.output}"
        )
