"""GitOps write-back with the git CLI: one commit setting the version in the team's repository.

    GitWriter(policy).write_back(effect)   # clone, edit the tag, commit, push; idempotent

- The commit goes to `gitops.branch` (default `graylane/<release id>`, a new branch from the default one, for
  a pull request) or, with `defaultBranch: true`, to the default branch itself (what Argo CD / Flux sync).
- Only the tag scalar of the file changes (functions/providers/gitops/yamledit.py), nothing else in it.
- Idempotent: the message carries `Graylane-Effect: <effect id>`; a retried effect whose commit is already on
  the branch, or a file already at the version, commits nothing.
- A push rejected because someone pushed meanwhile fetches again, re-applies the edit on the new tip and
  pushes again (a few times); the edit is re-done, never rebased blindly.
- Credentials come from the environment: for https, `gitops.secret` names a token (`GRAYLANE_SECRET_<NAME>`,
  `token` or `user:token`), sent as an `http.extraHeader` through git's environment (never on a command
  line, never logged); ssh uses the process's own keys (`GIT_SSH_COMMAND`). URLs are logged without userinfo.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from functions.core.effects import Effect
from functions.core.policy import GitOps, Policy
from functions.errors import ConfigError, EffectFailed, ProviderUnavailable
from functions.providers.gitops.yamledit import set_helm_value, set_kustomize_image

log = logging.getLogger("graylane.gitops")
PUSH_ATTEMPTS = 5
TIMEOUT = 60.0
EFFECT_TRAILER = "Graylane-Effect"


def safe_url(url: str) -> str:
    """The URL without its userinfo (a token may sit there)."""
    return re.sub(r"//[^/@]*@", "//", url)


class GitFailed(ProviderUnavailable):
    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class GitWriter:
    def __init__(
        self,
        policy: Policy,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        before_push: Callable[[int], None] | None = None,
    ) -> None:
        if policy.gitops is None:
            raise ConfigError(f"{policy.app}: no spec.gitops")
        self.policy = policy
        self.gitops: GitOps = policy.gitops
        self.env = os.environ if env is None else env
        self.workdir = workdir or self.env.get("GRAYLANE_GIT_WORKDIR") or None
        self.before_push = before_push  # tests: a concurrent push lands between our commit and our push
        self.pushes = 0

    # -- the effect ---------------------------------------------------------------------------------------
    def write_back(self, effect: Effect) -> str:
        """Commit the effect's version to the repository; the commit's id ("" when nothing was needed)."""
        with tempfile.TemporaryDirectory(prefix="graylane-git-", dir=self.workdir) as tmp:
            repo = Path(tmp) / "repo"
            self._git(
                None, "clone", "--quiet", "--no-tags", "--depth", "50", self.gitops.repository, str(repo)
            )
            default = self._git(repo, "symbolic-ref", "--short", "refs/remotes/origin/HEAD").strip()
            default = default.removeprefix("origin/") or "main"
            branch = default if self.gitops.default_branch else self._branch(effect)
            for attempt in range(1, PUSH_ATTEMPTS + 1):
                base = self._base(repo, branch, default)
                self._git(repo, "checkout", "--quiet", "-B", "graylane-work", base)
                if self._already(repo, effect):
                    log.info("git write-back %s: already on %s of %s", effect.id, branch, self._where())
                    return ""
                if not self._edit(repo, effect):
                    log.info(
                        "git write-back %s: %s already says %s", effect.id, self.gitops.file, effect.version
                    )
                    return ""
                self._commit(repo, effect)
                if self.before_push is not None:
                    self.before_push(attempt)
                try:
                    self._git(repo, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
                except GitFailed as err:
                    if attempt < PUSH_ATTEMPTS and _rejected(err.stderr):
                        log.info(
                            "git write-back %s: push to %s rejected (someone pushed first); again",
                            effect.id,
                            branch,
                        )
                        continue
                    raise
                self.pushes += 1
                return self._git(repo, "rev-parse", "HEAD").strip()
        raise ProviderUnavailable(f"git write-back to {self._where()}: pushes kept being rejected")

    # -- steps --------------------------------------------------------------------------------------------
    def _branch(self, effect: Effect) -> str:
        template = self.gitops.branch or "graylane/{release}"
        names = {
            "release": str(effect.notice.get("release", "")),
            "app": self.policy.name,
            "namespace": self.policy.namespace,
            "version": effect.version,
        }
        try:
            return template.format(**names)
        except (KeyError, IndexError, ValueError) as err:
            raise EffectFailed(f"gitops.branch {template!r}: unknown placeholder {err}") from err

    def _base(self, repo: Path, branch: str, default: str) -> str:
        """Fetch the branch's tip (or the default branch's, for a new branch) and return it."""
        for name in dict.fromkeys((branch, default)):
            try:
                self._git(
                    repo,
                    "fetch",
                    "--quiet",
                    "--depth",
                    "50",
                    "origin",
                    f"+refs/heads/{name}:refs/remotes/origin/{name}",
                )
                return f"refs/remotes/origin/{name}"
            except GitFailed as err:
                if "couldn't find remote ref" not in err.stderr and "not our ref" not in err.stderr:
                    raise
        raise EffectFailed(f"git write-back to {self._where()}: neither {branch} nor {default} exists")

    def _already(self, repo: Path, effect: Effect) -> bool:
        found = self._git(
            repo, "log", "-n", "200", "--format=%H", "-F", f"--grep={EFFECT_TRAILER}: {effect.id}"
        )
        return bool(found.strip())

    def _edit(self, repo: Path, effect: Effect) -> bool:
        path = (repo / self.gitops.file).resolve()
        if repo.resolve() not in path.parents:
            raise EffectFailed(f"gitops.file {self.gitops.file!r} is outside the repository")
        try:
            text = path.read_text()
        except FileNotFoundError as err:
            raise EffectFailed(f"git write-back: {self.gitops.file} is not in {self._where()}") from err
        version = effect.version
        try:
            if self.gitops.format == "kustomize":
                image = self.gitops.image or self.policy.image.repository
                digest = version if version.startswith("sha256:") else ""
                new = set_kustomize_image(
                    text, image, tag="" if digest else version, digest=digest, where=self.gitops.file
                )
            else:
                new = set_helm_value(text, self.gitops.key, version, where=self.gitops.file)
        except ConfigError as err:  # the file cannot say it: retrying cannot help
            raise EffectFailed(f"git write-back: {err}") from err
        if new == text:
            return False
        path.write_text(new)
        return True

    def _commit(self, repo: Path, effect: Effect) -> None:
        name, _, email = self.gitops.author.rpartition(" <")
        message = f"{effect.message}\n\n{EFFECT_TRAILER}: {effect.id}\n"
        self._git(repo, "add", "--", self.gitops.file)
        self._git(
            repo,
            "-c",
            f"user.name={name or 'graylane'}",
            "-c",
            f"user.email={email.rstrip('>')}",
            "commit",
            "--quiet",
            "--no-verify",
            "-F",
            "-",
            stdin=message,
        )

    # -- git --------------------------------------------------------------------------------------------
    def _where(self) -> str:
        return safe_url(self.gitops.repository)

    def _environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in self.env.items()
            if k in ("PATH", "HOME", "GIT_SSH_COMMAND", "SSH_AUTH_SOCK", "LANG", "TMPDIR")
        }
        env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
        env.setdefault("HOME", tempfile.gettempdir())
        token = self._token()
        if token:
            sep = ":" in token
            basic = base64.b64encode((token if sep else f"graylane:{token}").encode()).decode()
            env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="http.extraHeader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
            )
        return env

    def _token(self) -> str:
        ref = self.gitops.secret
        if not ref:
            return ""
        name = "GRAYLANE_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", ref).upper()
        value = self.env.get(ref) or self.env.get(name)
        if not value:
            raise ConfigError(f"gitops.secret {ref!r} is not set (nor {name})")
        return value.strip()

    def _git(self, repo: Path | None, *args: str, stdin: str | None = None) -> str:
        argv = ["git", *(["-C", str(repo)] if repo is not None else []), *args]
        shown = " ".join(safe_url(a) for a in args[:3])
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, env=self._environment()
            )
        except FileNotFoundError as err:
            raise ConfigError("git write-back needs the git CLI on PATH") from err
        except subprocess.TimeoutExpired as err:
            raise GitFailed(f"git {shown} ({self._where()}): no answer within {TIMEOUT:.0f} s") from err
        if done.returncode != 0:
            stderr = safe_url(done.stderr.strip())
            raise GitFailed(f"git {shown} ({self._where()}) failed: {stderr[-500:]}", stderr)
        return done.stdout


def _rejected(stderr: str) -> bool:
    return any(
        s in stderr
        for s in (
            "[rejected]",
            "non-fast-forward",
            "fetch first",
            "failed to update ref",
            "cannot lock ref",
            "stale info",
        )
    )
