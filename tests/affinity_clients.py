"""Many users with their own cookie jars, for the session-affinity tests on real proxies (`pytest -k affinity`).

    users = [User() for _ in range(1000)]
    phase = run(users, port, 20, version_header="X-Version", host="sticky.coding", canary="v2")
    phase.kept, phase.canary          # users whose 20 answers came from one version; of those, on the canary

Each user has its own keep-alive connection (for its requests of one phase) and its own jar (the cookies the proxy set for it: name=value, a
Max-Age of 0 or less deletes one; one host, path /), and sends its requests one after the other, as a browser
tab would. The users run on a small thread pool: the machine has 2 cores, shared with the proxy under test.
"""

from __future__ import annotations

import http.client
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie

WORKERS = 8


@dataclass
class User:
    jar: dict[str, str] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)  # the version of each answer of the last phase
    set_cookies: int = 0  # Set-Cookie headers received over the user's life
    _conn: http.client.HTTPConnection | None = None

    @property
    def version(self) -> str:
        """The one version that answered the last phase ("" when it was not one)."""
        return self.answers[0] if self.answers and len(set(self.answers)) == 1 else ""

    def get(self, port: int, host: str, version_header: str) -> str:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Host": host}
        if self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sorted(self.jar.items()))
        try:
            self._conn.request("GET", "/", headers=headers)
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        for line in resp.msg.get_all("Set-Cookie") or []:
            self.set_cookies += 1
            self._keep(line)
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        found = resp.getheader(version_header, "")
        return found if resp.status == 200 and found else f"status {resp.status}"

    def _keep(self, line: str) -> None:
        try:
            parsed = SimpleCookie(line)
        except CookieError:
            return
        for name, morsel in parsed.items():
            max_age = morsel["max-age"]
            if max_age and int(max_age) <= 0:
                self.jar.pop(name, None)
            else:
                self.jar[name] = morsel.value

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Phase:
    """What `run` saw: per user, whether every answer came from one version, and which."""

    users: int
    requests: int
    seconds: float
    kept: int  # users all of whose answers came from one version
    canary: int  # of those, the users on the canary
    failures: Counter[str]  # answers that were not a version (status codes, transport errors)

    @property
    def share(self) -> float:
        """Percent of the users on the canary."""
        return 100 * self.canary / self.users

    def __str__(self) -> str:
        return (
            f"{self.users} users x {self.requests // self.users} requests in {self.seconds:.1f} s "
            f"({self.requests / self.seconds:.0f}/s): {self.kept} kept one version, {self.canary} on the canary "
            f"({self.share:.1f} %), failures {dict(self.failures) or 0}"
        )


def run(
    users: list[User],
    port: int,
    requests: int,
    *,
    version_header: str,
    canary: str,
    host: str = "app",
    workers: int = WORKERS,
) -> Phase:
    """Every user sends `requests` requests (its jar as it stands); what each saw is in user.answers."""
    failures: Counter[str] = Counter()

    def one(user: User) -> None:
        user.answers = []
        try:
            for _ in range(requests):  # on one keep-alive connection, closed after (the jar stays)
                try:
                    user.answers.append(user.get(port, host, version_header))
                except (OSError, http.client.HTTPException) as err:
                    user.answers.append(f"error {type(err).__name__}")
        finally:
            user.close()

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, users))
    seconds = time.monotonic() - started
    for user in users:
        failures.update(a for a in user.answers if a.startswith(("status ", "error ")))
    kept = [u for u in users if u.version and not u.version.startswith(("status ", "error "))]
    return Phase(
        len(users),
        len(users) * requests,
        seconds,
        len(kept),
        sum(u.version == canary for u in kept),
        failures,
    )


def close(users: list[User]) -> None:
    for user in users:
        user.close()
