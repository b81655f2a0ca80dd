"""Where `make traefik` (tests/k8s/tools/build.sh traefik-v2|traefik-v3) left the Traefik binaries.

`build.sh --cached NAME` prints the bin directory of the build of the current recipe, or fails without
building: a changed recipe is a missing binary (with the command that builds it), never a stale one,
and a test session never starts a 10-minute build by itself.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parents[1] / "k8s" / "tools" / "build.sh"
VERSIONS = {"v2": "traefik-v2", "v3": "traefik-v3"}  # test version -> build.sh tool name


class TraefikMissing(RuntimeError):
    """The Traefik binary for this recipe has not been built on this machine."""


@functools.cache
def traefik_binary(version: str) -> Path:
    """The built `traefik` of `version` ("v2" or "v3"); TraefikMissing says how to build it."""
    tool = VERSIONS[version]
    done = subprocess.run(["bash", str(BUILD), "--cached", tool], capture_output=True, text=True, timeout=60)
    binary = Path(done.stdout.strip() or "/nonexistent") / "traefik"
    if done.returncode != 0 or not binary.is_file():
        raise TraefikMissing(
            f"Traefik {version} is not built for this recipe: run `make traefik` (bash {BUILD} {tool}; "
            f"about 10 min once, cached under GRAYLANE_CACHE, default /var/cache/graylane). "
            f"build.sh --cached said: {done.stderr.strip()[-300:]}"
        )
    return binary
