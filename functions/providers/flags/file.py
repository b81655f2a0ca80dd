"""A flag document in a file: read, edit one flag (functions/providers/flags/flagd.py), replace atomically.

Writers take an exclusive lock on `<file>.lock`, so two graylane processes never lose each other's edit; the
new text goes to a temporary file in the same directory, is fsynced and renamed over the old one, so a reader
(flagd's file sync, the OpenFeature SDK's in-process file provider) sees the old document or the new one,
never half of one. An unchanged document is not written at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from functions.core.effects import FlagPlan
from functions.errors import NotReady, ProviderUnavailable
from functions.providers.flags.flagd import live_plans, with_plan


class FileFlags:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.writes = 0  # documents written (tests: an idempotent retry writes nothing)

    def set_flag(self, plan: FlagPlan) -> None:
        with self._locked():
            text = self._read()
            new = with_plan(text, plan, str(self.path))
            if new != text:
                self._write(new)
        if plan not in self.live((plan,)):
            raise NotReady(f"flag file {self.path}: flag {plan.key} does not read back as written")

    def live(self, plans: tuple[FlagPlan, ...]) -> tuple[FlagPlan, ...]:
        return live_plans(self._read(), plans)

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""
        except OSError as err:
            raise ProviderUnavailable(f"flag file {self.path}: cannot read it: {err}") from err

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
            self.writes += 1
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ProviderUnavailable(f"flag file {self.path}: cannot write it: {err}") from err

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
