"""Compiled policies: what a policy file parsed to, keyed by the file's content (cold start).

Importing PyYAML and parsing + validating the policies costs ~30 ms, a sixth of a function's cold start.
The first process that parses a file stores the policies it got here; later processes load them instead
(under a millisecond) and never import PyYAML. An entry is keyed by the SHA-256 of the file's text and a
stamp of the model's and parser's source files, so an edited policy or an upgraded graylane simply
misses. Only valid policies are stored; an entry that does not load is a miss.

Entries are pickles of the frozen policy values (JSON through the codec costs 8 ms, mostly evaluating
type hints). Like Python's own __pycache__, they are trusted only in a directory owned by this user and
writable by nobody else, and only when the entry file is too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from functions.core.policy import Policy

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the entry layout changes
OFF = "off"
_CORE = Path(__file__).parent / "core"


class PolicyCache:
    """Compiled policies in `directory` (created 0700 on first write; unwritable means no cache)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @classmethod
    def configured(cls, setting: str, env: Mapping[str, str] | None = None) -> PolicyCache | None:
        """The cache GRAYLANE_POLICY_CACHE names: a directory, "off", or "" for the user's cache directory."""
        if setting == OFF:
            return None
        if setting:
            return cls(setting)
        env = os.environ if env is None else env
        base = env.get("XDG_CACHE_HOME")
        if not base:
            try:
                base = str(Path(env.get("HOME") or Path.home()) / ".cache")
            except RuntimeError:  # a user without a home (no HOME, no passwd entry): no cache, just parsing
                return None
        return cls(Path(base) / "graylane" / "policies")

    def get(self, text: str) -> list[Policy] | None:
        """The policies `text` parsed to when it was stored, or None (a miss)."""
        path = self._entry(text)
        try:
            if not (_trusted(self.directory) and _trusted(path)):
                return None
            entry = pickle.loads(path.read_bytes())  # noqa: S301 (a private, trusted directory: see above)
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 (a truncated or foreign entry: any unpickling error)
            log.debug("policy cache entry %s unusable (%s): parsing the file", path, err)
            return None
        if not (
            isinstance(entry, tuple)
            and len(entry) == 2
            and entry[0] == FORMAT
            and isinstance(entry[1], list)
            and all(isinstance(p, Policy) for p in entry[1])
        ):
            return None
        return entry[1]

    def put(self, text: str, policies: list[Policy]) -> None:
        """Store what `text` parsed to; a failure (read-only file system, ...) only costs the next parse."""
        body = pickle.dumps((FORMAT, list(policies)), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _trusted(self.directory):
                log.warning("policy cache %s is not private to this user: not writing to it", self.directory)
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")  # created 0600
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            os.replace(tmp, self._entry(text))
        except OSError as err:
            log.debug("policy cache %s not written: %s", self.directory, err)

    def _entry(self, text: str) -> Path:
        digest = hashlib.sha256(f"{FORMAT}\0{_parser_stamp()}\0".encode() + text.encode("utf-8")).hexdigest()
        return self.directory / f"{digest}.pickle"


@cache
def _parser_stamp() -> str:
    """Names, sizes and modification times of the model and parser sources: changes with graylane."""
    parts = []
    for source in [*sorted(_CORE.glob("*.py")), _CORE.parent / "policies.py"]:
        st = source.stat()
        parts.append(f"{source.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def _trusted(path: Path) -> bool:
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022
