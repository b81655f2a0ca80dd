"""Fixtures of the real-cluster suite (`make e2e`): one World per Traefik version and module (tests/e2e/world.py).

A failing test gets the tails of every log (graylane's, Traefik's, the registry's, Alertmanager's, the release
history) appended to its report; `make e2e` ends with what it measured and which Traefik versions it drove.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.world import World

DRIVEN: dict[str, str] = {}  # Traefik version key -> "2.11.54 (traefik.containo.us)"
RESULTS: list[str] = []  # lines for the closing summary
_WORLDS: list[World] = []


def traefik_release(version: str) -> str:
    from tests.traefik.binaries import traefik_binary

    out = subprocess.run(
        [str(traefik_binary(version)), "version"], capture_output=True, text=True, timeout=30
    ).stdout
    found = re.search(r"Version:\s+(\S+)", out)
    return found[1] if found else "?"


def start_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, version: str
) -> Iterator[World]:
    from tests.traefik.conftest import need_traefik

    need_traefik(version)
    world = World(tmp_path_factory.mktemp(f"e2e-traefik-{version}"), traefik_version=version)
    _WORLDS.append(world)
    try:
        world.start()
    except BaseException as err:
        raise AssertionError(f"the e2e world did not start: {err}\n{world.logs()}") from err
    DRIVEN[version] = f"Traefik {traefik_release(version)} ({world.group})"
    RESULTS.append(
        f"[{version}] started in {sum(world.timings.values()):.0f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in world.timings.items())
    )
    try:
        yield world
    finally:
        _WORLDS.remove(world)
        world.stop()


@pytest.fixture(scope="module")
def world_v2(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from start_world(request, tmp_path_factory, "v2")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _WORLDS:
        for world in list(_WORLDS):
            try:
                report.sections.append((f"e2e logs (Traefik {world.traefik_version})", world.logs()))
            except Exception as err:  # the logs are a courtesy; the failure itself is what counts
                report.sections.append(("e2e logs", f"unavailable: {err!r}"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not DRIVEN and not RESULTS:
        return
    terminalreporter.section("graylane e2e")
    for line in RESULTS:
        terminalreporter.write_line(line)
    drove = ", ".join(DRIVEN[v] for v in sorted(DRIVEN)) or "none"
    terminalreporter.write_line(f"e2e drove: {drove}")
