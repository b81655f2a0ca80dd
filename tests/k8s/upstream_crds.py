"""The upstream CRDs the test apiserver serves, pinned in `upstream-crds.txt` and fetched from Go module zips.

Each line of the list is `module@version  path-in-module  sha256  file`: the file at `path-in-module` in
the module's zip (as the Go module proxy serves it, checked by `go mod download` against the checksum
database) must hash to `sha256`, and is written as `file` into the CRD directory. That directory lives in
the machine's cache, keyed by the pins, so a changed pin fetches anew and an unchanged one is reused:

    python -m tests.k8s.upstream_crds         # `make crds`: fetch what is missing, print the directory

`crd_files()` is what the tests read: the listed files, in list order, each checked against its hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).parent / "upstream-crds.txt"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CrdsMissing(RuntimeError):
    """The pinned CRD files are not in the cache yet (`make crds` fetches them)."""


class CrdMismatch(RuntimeError):
    """A CRD file's bytes are not the ones pinned by their sha256."""


@dataclass(frozen=True)
class Pin:
    module: str
    version: str
    path: str
    sha256: str
    file: str

    @property
    def line(self) -> str:
        return f"{self.module}@{self.version}  {self.path}  {self.sha256}  {self.file}"


def parse_pins(text: str, source: str = "upstream-crds.txt") -> list[Pin]:
    """The pins of a list: one per line, `#` comments and blank lines skipped; a malformed line is an error."""
    pins: list[Pin] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            pins.append(_parse_line(line, f"{source}:{number}"))
    files = [p.file for p in pins]
    if dupes := sorted({f for f in files if files.count(f) > 1}):
        raise ValueError(f"{source}: file names listed twice: {', '.join(dupes)}")
    if not pins:
        raise ValueError(f"{source}: no pins")
    return pins


def _parse_line(line: str, where: str) -> Pin:
    fields = line.split()
    if len(fields) != 4:
        raise ValueError(f"{where}: expected `module@version  path-in-module  sha256  file`, got {line!r}")
    module_version, path, sha256, file = fields
    module, _, version = module_version.rpartition("@")
    if not module or not version.startswith("v"):
        raise ValueError(f"{where}: {module_version!r} is not module@version")
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{where}: {sha256!r} is not a lower-case hex sha256")
    if not _FILE.fullmatch(file) or path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"{where}: file {file!r} must be a plain name and {path!r} a path inside the module")
    return Pin(module, version, path, sha256, file)


def read_pins(path: Path = LIST) -> list[Pin]:
    return parse_pins(path.read_text(), path.name)


def cache_root() -> Path:
    return Path(os.environ.get("GRAYLANE_CACHE", "/var/cache/graylane"))


def crd_dir(pins: list[Pin]) -> Path:
    """Where the files of these pins live: keyed by the pins themselves (comments do not count)."""
    key = hashlib.sha256("\n".join(p.line for p in pins).encode()).hexdigest()[:16]
    return cache_root() / "crds" / key


def crd_files(pins: list[Pin] | None = None, directory: Path | None = None) -> list[Path]:
    """The pinned CRD files in list order; CrdsMissing if any is absent, CrdMismatch naming each that differs."""
    pins = read_pins() if pins is None else pins
    directory = crd_dir(pins) if directory is None else directory
    if missing := [p.file for p in pins if not (directory / p.file).is_file()]:
        raise CrdsMissing(
            f"upstream CRDs missing in {directory}: {', '.join(missing)}; run `make crds` "
            "(python -m tests.k8s.upstream_crds; cache dir from GRAYLANE_CACHE)"
        )
    wrong = []
    for pin in pins:
        actual = hashlib.sha256((directory / pin.file).read_bytes()).hexdigest()
        if actual != pin.sha256:
            wrong.append(
                f"{pin.file} ({pin.module}@{pin.version} {pin.path}): sha256 {actual}, pinned {pin.sha256}"
            )
    if wrong:
        raise CrdMismatch(
            f"CRD files in {directory} differ from tests/k8s/upstream-crds.txt: " + "; ".join(wrong)
        )
    return [directory / pin.file for pin in pins]


# -- fetching ------------------------------------------------------------------------------------------------


def module_zip(module: str, version: str) -> Path:
    """The module's zip in the shared Go module cache, downloaded (and checksum-verified) by `go mod download`."""
    root = cache_root()
    env = dict(
        os.environ,
        GOMODCACHE=str(root / "go" / "mod"),
        GOFLAGS="-modcacherw",
        GOTOOLCHAIN=os.environ.get("GOTOOLCHAIN", "local"),
    )
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not installed (needed to download the CRDs' Go modules)")
    with tempfile.TemporaryDirectory() as outside_any_module:
        done = subprocess.run(
            [go, "mod", "download", "-json", f"{module}@{version}"],
            cwd=outside_any_module,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    info = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    if done.returncode != 0 or "Error" in info or "Zip" not in info:
        raise RuntimeError(f"go mod download {module}@{version}: {info.get('Error') or done.stderr.strip()}")
    return Path(info["Zip"])


def extract(pin: Pin, archive: Path) -> bytes:
    """The pinned file's bytes out of the module zip, refused unless they hash to the pinned sha256."""
    with zipfile.ZipFile(archive) as zf:
        try:
            data = zf.read(f"{pin.module}@{pin.version}/{pin.path}")
        except KeyError:
            raise CrdMismatch(f"{pin.module}@{pin.version} has no {pin.path}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != pin.sha256:
        raise CrdMismatch(f"{pin.module}@{pin.version} {pin.path}: sha256 {actual}, pinned {pin.sha256}")
    return data


def fetch(pins: list[Pin], directory: Path) -> Path:
    """Write every pinned file into `directory` (staged beside it, then renamed into place); returns it."""
    staged = Path(tempfile.mkdtemp(prefix=".crds-", dir=directory.parent))
    try:
        zips: dict[tuple[str, str], Path] = {}
        for pin in pins:
            key = (pin.module, pin.version)
            if key not in zips:
                zips[key] = module_zip(*key)
            (staged / pin.file).write_bytes(extract(pin, zips[key]))
        staged.chmod(0o755)
        try:
            os.rename(staged, directory)
        except OSError:  # fetched meanwhile by another run: ensure() checks theirs
            pass
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return directory


def ensure(pins: list[Pin] | None = None) -> Path:
    """The CRD directory of the pins, fetched when missing, incomplete or altered."""
    pins = read_pins() if pins is None else pins
    directory = crd_dir(pins)
    try:
        crd_files(pins, directory)
    except (CrdsMissing, CrdMismatch):  # the module zips are the source of truth: fetch again
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        fetch(pins, directory)
        crd_files(pins, directory)
    return directory


def main() -> int:
    try:
        print(ensure())
    except (CrdMismatch, RuntimeError, ValueError) as err:
        print(f"upstream_crds: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
