"""A real Git server on loopback: bare repositories served by `git daemon` (Debian's git) over git://, with
pushes enabled (receive-pack), and helpers to look at and push to them with the git CLI."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports

ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
    "PATH": "/usr/bin:/bin",
    "GIT_AUTHOR_NAME": "Team",
    "GIT_AUTHOR_EMAIL": "team@example.com",
    "GIT_COMMITTER_NAME": "Team",
    "GIT_COMMITTER_EMAIL": "team@example.com",
}


def git(cwd: Path | None, *args: str) -> str:
    env = {**ENV, "HOME": str(cwd or Path("/tmp"))}
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout


@dataclass
class GitServer:
    root: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> GitServer:
        if shutil.which("git") is None:
            raise AssertionError("git is not installed: run `make deps` (apt-get install git)")

        def launch() -> GitServer:
            self.port = self.port or free_port()  # started again: on the same port (its URLs are in policies)
            logfile = self.root / "daemon.log"
            with logfile.open("ab") as out:
                self.process = subprocess.Popen(
                    [
                        "git",
                        "daemon",
                        "--reuseaddr",
                        "--export-all",
                        "--enable=receive-pack",
                        "--informative-errors",
                        f"--base-path={self.root}",
                        "--listen=127.0.0.1",
                        f"--port={self.port}",
                        str(self.root),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**ENV, "HOME": str(self.root)},
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    text = logfile.read_text(errors="replace")
                    if port_taken(text):
                        raise PortTaken(text)
                    raise AssertionError(f"git daemon exited: {text}")
                try:
                    subprocess.run(
                        ["git", "ls-remote", self.url("ready.git")],
                        capture_output=True,
                        timeout=5,
                        env={**ENV, "HOME": str(self.root)},
                    )
                    import socket

                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                except OSError:
                    time.sleep(0.05)
            raise AssertionError("git daemon did not listen within 10 s")

        def reroll() -> None:
            self.stop()
            self.port = 0

        return retry_on_fresh_ports("git daemon", launch, reroll)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def repository(self, name: str, files: dict[str, str], branch: str = "main") -> Path:
        """A bare repository `name` whose first commit on `branch` holds `files`."""
        bare = self.root / name
        git(None, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
        work = self.root / f"{name}-seed"
        git(None, "init", "--quiet", f"--initial-branch={branch}", str(work))
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "--quiet", "-m", "deploy: first")
        git(work, "push", "--quiet", str(bare), f"{branch}:{branch}")
        return bare

    def clone(self, name: str, into: Path) -> Path:
        git(None, "clone", "--quiet", self.url(name), str(into))
        return into
