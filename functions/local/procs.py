"""Local processes the demo starts: each in its own process group, all stopped by their own handles.

Every `Proc` registers itself in a module-wide registry; `stop_all()` runs at interpreter exit (atexit)
and from the demo's finally/signal handlers, so nothing started here outlives the command, even on
Ctrl-C or an error. Stopping sends SIGTERM to the group, waits, then SIGKILLs the group.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from functions.errors import NotReady, ProviderUnavailable

_lock = threading.Lock()
_running: dict[int, Proc] = {}
_started: list[int] = []  # every pid ever started here, for the demo's "nothing left running" check


class Proc:
    """One child process in a new session (its own process group); output goes to `log`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,
                )
            except OSError as err:
                raise ProviderUnavailable(
                    f"local process {name}: start {self.argv[0]} failed: {err}"
                ) from err
        self.pid = self.popen.pid
        with _lock:
            _running[self.pid] = self
            _started.append(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Signal the group (SIGTERM unless told otherwise), then SIGKILL it after `timeout` s; idempotent."""
        if self.alive():
            _signal_group(self.pid, self.stop_signal)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        _signal_group(self.pid, signal.SIGKILL)  # whatever the leader left behind in its group
        with _lock:
            _running.pop(self.pid, None)

    def wait_http(self, url: str, timeout: float = 15.0) -> None:
        """Until `url` answers 200; NotReady naming the process (and its log) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise NotReady(
                    f"local process {self.name} exited with {self.popen.returncode}: {self.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NotReady(
                    f"local process {self.name}: {url} not ready within {timeout} s: {self.tail()}"
                )
            time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def started_pids() -> list[int]:
    with _lock:
        return list(_started)


def stop_all() -> None:
    """Stop every process still running, newest first (traffic before the proxy before the backends)."""
    with _lock:
        procs = list(reversed(_running.values()))
    for proc in procs:
        proc.stop()


atexit.register(stop_all)
