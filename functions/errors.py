"""One error vocabulary for graylane: a base class and flat subclasses."""

from __future__ import annotations

MAX_MESSAGE = 1000  # characters of an error message that reach an answer or a log line


def brief(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, saying how much was left out: a rejected body is never echoed whole."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class GraylaneError(Exception):
    """Base of every error graylane raises on purpose."""


class ConfigError(GraylaneError):
    """Bad configuration or settings; the message names the key."""


class PolicyError(ConfigError):
    """A policy failed validation; `problems` lists every (path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(f"{path}: {msg}" for path, msg in problems))


class ConflictError(GraylaneError):
    """A compare-and-swap write lost: the stored version moved on."""


class NotFound(GraylaneError):
    """The named object does not exist."""


class ProviderUnavailable(GraylaneError):
    """A provider (Prometheus, the apiserver, a router) could not be reached or timed out."""


class Retry(GraylaneError):
    """Transient failure: ask the broker to redeliver after `delay` seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class Reject(GraylaneError):
    """Permanent failure for this event: acknowledge it and emit a rejection."""


class NotReady(GraylaneError):
    """An effect was applied but its outcome is not observable yet (pods not ready, weights not read back)."""


class EffectFailed(GraylaneError):
    """An effect failed for good (a migration Job failed): retrying cannot help, the release fails."""


class MissingObject(ConfigError, EffectFailed):
    """The object a policy names for graylane to drive (an IngressRoute, say) does not exist: retrying cannot
    help, so the effect fails for good and the release fails with this message in its history."""
