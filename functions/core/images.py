"""Which policy a pushed image belongs to: repository names, tag rules and semver ranges. Pure.

Ranges follow npm's grammar, the one most registries' users already know: space-separated
comparators are ANDed (`>=1.2.0 <2.0.0`), `||` ORs sets, and `^1.2`, `~1.2.3`, `1.x`, `*` and
exact versions are shorthands. A pre-release (`1.3.0-rc.1`) only matches a set that names a
pre-release of the same `major.minor.patch`, so `>=1.0.0` never picks up release candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from functions.core.policy import ImageRule, Policy
from functions.core.values import value

# Strings: re compiles (and caches) them on first use, so only semver rules pay for them (cold start).
_VERSION = (
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_X = r"(?:0|[1-9]\d*|[xX*])"
_PARTIAL = rf"(>=|<=|>|<|=|\^|~)?\s*v?({_X})(?:\.({_X})(?:\.({_X})(?:-([0-9A-Za-z.-]+))?)?)?"


@value
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def key(self) -> tuple[object, ...]:
        """Semver 2.0 precedence: a release sorts after its pre-releases; numeric ids before alphanumeric."""
        if not self.prerelease:
            return (*self.core, 1, ())
        ids = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (*self.core, 0, ids)

    def __str__(self) -> str:
        pre = "-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}"


def _prerelease(text: str | None) -> tuple[int | str, ...]:
    if not text:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def parse_version(text: str) -> Version:
    """Parse `1.2.3`, `v1.2.3-rc.1+build.5`; raise ValueError otherwise (build metadata is ignored)."""
    m = re.fullmatch(_VERSION, text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")
    return Version(int(m[1]), int(m[2]), int(m[3]), _prerelease(m[4]))


@value
class Comparator:
    op: str  # one of < <= > >= =
    version: Version

    def test(self, v: Version) -> bool:
        a, b = v.key(), self.version.key()
        return {
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
            "=": a == b,
        }[self.op]


Range = tuple[tuple[Comparator, ...], ...]  # OR of ANDs; an empty AND matches any release


def _is_x(part: str | None) -> bool:
    return part is None or part in ("x", "X", "*")


def _expand(op: str, major: str, minor: str | None, patch: str | None, pre: str | None) -> list[Comparator]:
    """Turn one (possibly partial or shorthand) comparator into plain ones."""
    if _is_x(major):
        return [] if op in ("", "=", ">=", "<=", "^", "~") else [Comparator("<", Version(0, 0, 0))]
    ma = int(major)
    mi = int(minor) if minor is not None and not _is_x(minor) else None
    pa = int(patch) if mi is not None and patch is not None and not _is_x(patch) else None
    low = Version(ma, mi or 0, pa or 0, _prerelease(pre) if pa is not None else ())
    if op == "^":
        return [Comparator(">=", low), Comparator("<", _floor(_caret_high(ma, mi, pa)))]
    if op == "~":
        high = Version(ma + 1, 0, 0) if mi is None else Version(ma, mi + 1, 0)
        return [Comparator(">=", low), Comparator("<", _floor(high))]
    if pa is not None:  # a full version: the operator applies as written
        return [Comparator(op or "=", low)]
    return _partial(op, low, _floor(Version(ma + 1, 0, 0) if mi is None else Version(ma, mi + 1, 0)))


def _caret_high(ma: int, mi: int | None, pa: int | None) -> Version:
    """The first version `^ma.mi.pa` leaves out: the next major; below 1.0.0 the next minor (below 0.1.0 the
    next patch), when given."""
    if ma > 0 or mi is None:
        return Version(ma + 1, 0, 0)
    if mi > 0 or pa is None:
        return Version(0, mi + 1, 0)
    return Version(0, 0, pa + 1)


def _partial(op: str, low: Version, high: Version) -> list[Comparator]:
    """A partial version under `op`: `1.2` stands for the whole 1.2.x range, from `low` to below `high`."""
    if op in ("", "="):
        return [Comparator(">=", low), Comparator("<", high)]
    if op == ">":
        return [Comparator(">=", high)]
    if op == ">=":
        return [Comparator(">=", low)]
    if op == "<":
        return [Comparator("<", _floor(low))]
    return [Comparator("<", high)]  # <=


def _floor(v: Version) -> Version:
    """The lowest version sharing v's core: `<2.0.0` must also exclude `2.0.0-rc.1`."""
    return Version(v.major, v.minor, v.patch, (0,))


def parse_range(text: str) -> Range:
    """Parse a range such as `>=1.2.0 <2.0.0 || ^3`; raise ValueError naming the bad part."""
    sets: list[tuple[Comparator, ...]] = []
    for alternative in text.split("||"):
        spec = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alternative.strip())
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", spec)
        if hyphen:  # `1.2.3 - 2.3.4` is `>=1.2.3 <=2.3.4`
            spec = f">={hyphen[1]} <={hyphen[2]}"
        comparators: list[Comparator] = []
        for part in spec.split():
            m = re.fullmatch(_PARTIAL, part)
            if not m:
                raise ValueError(f"{part!r} is not a version comparator (e.g. >=1.2.0, ^1.2, ~1.2.3, 1.x, *)")
            comparators += _expand(m[1] or "", m[2], m[3], m[4], m[5])
        if not spec and "||" in text:
            raise ValueError(f"{text!r} has an empty alternative around ||")
        sets.append(tuple(comparators))
    return tuple(sets)


def satisfies(version: Version, rng: Range) -> bool:
    for comparators in rng:
        if not all(c.test(version) for c in comparators):
            continue
        if not version.prerelease:
            return True
        # npm rule: pre-releases only match a set naming a pre-release with the same core
        if any(
            c.version.prerelease and c.version.prerelease != (0,) and c.version.core == version.core
            for c in comparators
        ):
            return True
    return False


def version_in_range(tag: str, rng: str) -> bool:
    """Whether tag (a semver, leading `v` allowed) is in rng; a tag that is not a semver never is."""
    try:
        return satisfies(parse_version(tag), parse_range(rng))
    except ValueError:
        return False


def tag_matches(rule: ImageRule, tag: str) -> bool:
    """The tag fully matches `rule.tags` (if set) and is a version in `rule.semver` (if set)."""
    if rule.tags:
        try:
            if re.fullmatch(rule.tags, tag) is None:
                return False
        except re.error:
            return False
    return not rule.semver or version_in_range(tag, rule.semver)


def push_matches(rule: ImageRule, tag: str) -> bool:
    """A tagged push must pass the tag rules; a push by digest only (no tag) matches only `byDigest` rules."""
    if not tag:
        return rule.by_digest
    return tag_matches(rule, tag)


_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def normalize_repository(repository: str) -> str:
    """Canonical repository name: lower case, no scheme, Docker Hub spelt `docker.io/library/<name>`."""
    name = repository.strip().lower().removeprefix("https://").removeprefix("http://").strip("/")
    first, _, rest = name.partition("/")
    is_host = "." in first or ":" in first or first == "localhost"
    if not rest or not is_host:
        first, rest = "docker.io", name
    elif first in _HUB_HOSTS:
        first = "docker.io"
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return f"{first}/{rest}"


def match_policy(policies: Iterable[Policy], repository: str, tag: str) -> Policy | None:
    """The first policy whose image rule accepts repository:tag (tag '' for a push by digest), or None."""
    wanted = normalize_repository(repository)
    for policy in policies:
        if normalize_repository(policy.image.repository) == wanted and push_matches(policy.image, tag):
            return policy
    return None
