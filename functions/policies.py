"""Policies from YAML files: one file, or a directory watched for edits (a mounted ConfigMap works).

Thin I/O around `functions.core.policy_parse`; every problem becomes a `PolicyError` naming the file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.core import images
from functions.core.policy import Policy
from functions.errors import NotFound, PolicyError

if TYPE_CHECKING:
    from functions.policy_cache import PolicyCache

POLICY_SUFFIXES = (".yaml", ".yml")


def yaml_documents(text: str) -> list[Any]:
    """The non-empty documents of a YAML text, with libyaml's C loader when available (10x faster).

    PyYAML and the parser are imported when a policy is first read, not when the module is: a tick sweep
    over apps without releases never needs them (cold start)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if d is not None]  # noqa: S506 (a safe loader)


def load_policy_text(text: str, source: str = "") -> list[Policy]:
    """Every policy in a (possibly multi-document) YAML text; raise PolicyError listing all problems."""
    import yaml

    from functions.core.policy_parse import parse_policy, problems

    try:
        docs = yaml_documents(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        reason = getattr(err, "problem", None) or str(err)
        raise PolicyError([(where, f"invalid YAML: {reason}")], source) from err
    if not docs:
        raise PolicyError([("(document)", "no policy found; expected a ReleasePolicy document")], source)
    found: list[tuple[str, str]] = []
    for i, doc in enumerate(docs):
        prefix = f"documents[{i}]." if len(docs) > 1 else ""
        found += [(prefix + path, message) for path, message in problems(doc)]
    if found:
        raise PolicyError(found, source)
    return [parse_policy(doc, source) for doc in docs]


def load_policy_file(path: str | os.PathLike[str], cache: PolicyCache | None = None) -> list[Policy]:
    """Every policy in the YAML file at path; raise PolicyError naming the file (unreadable files too).
    With a cache, a file parsed before (same text, same graylane) is read from its compiled form."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise PolicyError([("(file)", f"cannot read: {reason}")], str(path)) from err
    compiled = cache.get(text) if cache is not None else None
    if compiled is not None:
        return compiled
    policies = load_policy_text(text, str(path))
    if cache is not None:
        cache.put(text, policies)
    return policies


Signature = tuple[int, int, int]  # mtime_ns, size, inode: a ConfigMap update swaps the inode


class DirectoryPolicies:
    """The policies in every *.yaml / *.yml file of a directory, reloaded when a file changes.

    A file that stops parsing keeps its last good policies (a typo must not stop running releases);
    its error stays in `errors` until it is fixed. When two files declare the same app, the first in
    name order wins and the other is reported in `errors`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        check_interval: float = 0.0,
        clock: Callable[[], float] | None = None,
        cache: PolicyCache | None = None,
    ) -> None:
        self.path = Path(path)
        self.cache = cache
        self.check_interval = check_interval
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._seen: dict[Path, Signature] = {}
        self._by_file: dict[Path, list[Policy]] = {}
        self._by_app: dict[str, Policy] = {}
        self._errors: dict[str, PolicyError] = {}  # files that do not parse
        self._duplicates: dict[str, PolicyError] = {}  # files declaring an app another file declared first
        self._checked_at: float | None = None

    @property
    def errors(self) -> dict[str, PolicyError]:
        """Problems of the current files, by file path."""
        self._refresh()
        return {**self._duplicates, **self._errors}

    def get(self, app: str) -> Policy:
        """The policy of app ("namespace/name"); raise NotFound."""
        self._refresh()
        policy = self._by_app.get(app)
        if policy is None:
            bad = sorted({*self._errors, *self._duplicates})
            broken = f"; files with problems: {', '.join(bad)}" if bad else ""
            raise NotFound(f"ReleasePolicy {app} not found in {self.path}{broken}")
        return policy

    def all(self) -> list[Policy]:
        self._refresh()
        return list(self._by_app.values())

    def for_image(self, repository: str, tag: str) -> Policy | None:
        """The first policy (in file name order) whose image rule accepts repository:tag."""
        return images.match_policy(self.all(), repository, tag)

    def _files(self) -> dict[Path, Signature]:
        try:
            entries = sorted(
                p for p in self.path.iterdir() if p.suffix in POLICY_SUFFIXES and not p.name.startswith(".")
            )
        except OSError as err:
            raise NotFound(f"policy directory {self.path} could not be listed: {err.strerror}") from err
        out = {}
        for p in entries:
            try:
                st = p.stat()
            except OSError:
                continue  # removed (or a dangling symlink) between listing and stat
            if p.is_file():
                out[p] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def _refresh(self) -> None:
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self.check_interval:
                return
            self._checked_at = now
            files = self._files()
            if files == self._seen:
                return
            for p in set(self._by_file) - set(files):
                del self._by_file[p]
            self._errors = {k: v for k, v in self._errors.items() if Path(k) in files}
            for p, sig in files.items():
                if self._seen.get(p) != sig:
                    self._load(p)
            self._seen = files
            self._index()

    def _load(self, p: Path) -> None:
        try:
            self._by_file[p] = load_policy_file(p, self.cache)
            self._errors.pop(str(p), None)
        except PolicyError as err:
            self._errors[str(p)] = err  # keep the last good policies of p, if any

    def _index(self) -> None:
        by_app: dict[str, Policy] = {}
        owner: dict[str, Path] = {}
        self._duplicates = {}
        for p in sorted(self._by_file):
            for policy in self._by_file[p]:
                if policy.app in by_app:
                    self._duplicates[str(p)] = PolicyError(
                        [("metadata.name", f"{policy.app} is already declared by {owner[policy.app]}")],
                        str(p),
                    )
                    continue
                by_app[policy.app], owner[policy.app] = policy, p
        self._by_app = by_app
