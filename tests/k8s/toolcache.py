"""Where `tests/k8s/tools/build.sh NAME` keeps a tool's binaries, found without building anything.

build.sh caches a build in $GRAYLANE_CACHE/tools/NAME-<key>/bin, where <key> is the first 12 hex digits of
the sha256 of `sha256sum` over the module directory's files (sorted, ./-relative) followed by the sha256
of build.sh itself. `tool_bin` computes the same key, so a test finds the binaries the current recipe
builds and never an older build (a changed recipe means `make` has not been run since: the test fails
with a hint instead of starting a long build). tests/real/test_istioctl_validate.py checks the key
against build.sh's own answer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TOOLS = Path(__file__).parent / "tools"


def cache_root() -> Path:
    return Path(os.environ.get("GRAYLANE_CACHE", "/var/cache/graylane"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_key(name: str) -> str:
    """build.sh's key for tools/NAME: `find . -type f ! -name '*~' | LC_ALL=C sort | xargs sha256sum`, then
    `sha256sum < build.sh`, all through sha256sum, first 12 digits."""
    src = TOOLS / name
    files = sorted(
        ("./" + str(p.relative_to(src))).encode()
        for p in src.rglob("*")
        if p.is_file() and not p.is_symlink() and not p.name.endswith("~")
    )
    lines = [f"{_sha256((src / f.decode()[2:]).read_bytes())}  {f.decode()}\n" for f in files]
    lines.append(f"{_sha256((TOOLS / 'build.sh').read_bytes())}  -\n")
    return _sha256("".join(lines).encode())[:12]


def tool_dir(name: str) -> Path:
    return cache_root() / "tools" / f"{name}-{build_key(name)}"


def tool_bin(name: str) -> Path | None:
    """The bin directory of the finished build of tools/NAME's current recipe, or None if not built."""
    out = tool_dir(name)
    return out / "bin" if (out / ".done").is_file() else None
