"""What a traffic router module declares, as data the policy parser, the capability check, the metric
templates and the docs read. Pure.

Each provider is one module under functions/providers/routers/ (Flagger's pkg/router shape) declaring:

    NAME          the `spec.router.provider` it serves
    OPTIONS       the router options it accepts (`Option`: name, kind, default, help), so `graylane validate`
                  refuses a misspelt or mistyped one at its field path and the README table is this data
    CAPABILITIES  the features of capabilities.FEATURES it can express, and `check(options, needs)` for
                  what it can express only under conditions
    WHY_NOT       (optional) feature -> why it cannot express a feature it lacks, said in the refusal
    METRICS       its own standard series (`RouterMetrics`), `measured_by(options)` whose series measure it
                  and `versions(policy)` the labels that name the stable and the canary in them
    OWNS          the paths it writes in the user's objects (`Owned`): everything else is the user's
    VERSION_SUBSETS  (optional, default False) whether it routes to a subset per version, as
                  `workload.model: per-version` needs (functions/core/slots.py)
    build(settings, cluster) -> Router, and the Router class

Core may not import providers, so the registry (functions/providers/routers/__init__.py) installs itself
here as the process default when it is imported, the way kopf's handlers land in its default registry;
`installed()` imports it by name the first time a catalog is needed (a plug-in lookup, like an entry
point: core has no import of it), and every function reading it also takes a catalog explicitly.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Literal, Protocol

from functions.core.values import value
from functions.errors import ConfigError

Problem = tuple[str, str]  # (field path, message)
Need = tuple[str, str, Any]  # (field path, feature, the policy node that needs it)
OptionKind = Literal[
    "name", "names", "text", "port", "integer", "number", "boolean", "choice", "mapping", "object-ref", "any"
]
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a Kubernetes object name (DNS-1123 subdomain)
_EXPECTED: dict[str, str] = {
    "name": "a Kubernetes object name (lower-case letters, digits, '-' and '.')",
    "names": "a list of non-empty strings",
    "text": "a non-empty string",
    "port": "a port number (1..65535) or a port name",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "mapping": "a mapping",
    "object-ref": "an object name, or a mapping with name (and namespace, sectionName)",
}


@value
class Option:
    """One router option: how the policy names it, what it holds, and what applies without it."""

    name: str
    kind: OptionKind
    help: str
    default: str = ""  # what applies when it is not set, as the docs say it ("" = nothing)
    choices: tuple[str, ...] = ()  # kind choice

    def problem(self, given: Any) -> str:
        """What is expected when `given` is not acceptable for this option ("" when it is)."""
        if self.kind == "choice":
            return "" if given in self.choices else "one of " + ", ".join(self.choices)
        accepts = _ACCEPTS.get(self.kind)
        return "" if accepts is None or accepts(given) else _EXPECTED[self.kind]

    @property
    def expected(self) -> str:
        return (
            "one of " + ", ".join(self.choices)
            if self.kind == "choice"
            else _EXPECTED.get(self.kind, "anything")
        )


def _integer(given: Any) -> bool:
    return isinstance(given, int) and not isinstance(given, bool)


def _object_ref(given: Any) -> bool:
    """An object's name, or a mapping naming it."""
    if isinstance(given, Mapping):
        return isinstance(given.get("name"), str) and given.get("name") != ""
    return isinstance(given, str) and given != ""


_ACCEPTS: dict[str, Callable[[Any], bool]] = {  # option kind -> is this value one? (every kind but choice)
    "name": lambda given: isinstance(given, str) and _NAME.fullmatch(given) is not None,
    "names": lambda given: isinstance(given, list) and all(isinstance(g, str) and g for g in given),
    "text": lambda given: isinstance(given, str) and given != "",
    "port": lambda given: (
        (_integer(given) and 0 < given <= 65535) or (isinstance(given, str) and given != "")
    ),
    "integer": _integer,
    "number": lambda given: _integer(given) or isinstance(given, float),
    "boolean": lambda given: isinstance(given, bool),
    "mapping": lambda given: isinstance(given, Mapping),
    "object-ref": _object_ref,
}


@value
class Owned:
    """A path graylane writes in an object it does not own. `{placeholders}` name which elements (the
    module's docstring and `owned_paths` say how they are found); everything not listed is the user's."""

    kind: str  # the object's kind, e.g. IngressRoute
    path: str  # a JSON pointer with {placeholders}, e.g. /spec/routes/{managed}/services/{stable}/weight
    why: str


@value
class RouterMetrics:
    """Where one router keeps its standard metrics (the series every built-in template reads)."""

    requests: str  # request counter
    identity: tuple[str, ...]  # labels that tell one version's series apart
    code_label: str  # status label of the counter
    error_codes: str  # regex over code_label values counted as errors (server side)
    duration_bucket: str = ""  # histogram buckets, if any
    to_ms: float = 1000.0  # multiply the duration unit by this to get milliseconds
    duration_average: str = ""  # gauge of the average duration (seconds), when there is no histogram
    fixed: str = ""  # matchers every query carries

    def code_is_error(self, code: str) -> bool:
        return re.fullmatch(self.error_codes, code) is not None


@value
class Versions:
    """The labels (label, regex) naming one release's stable and canary (and its fresh baseline) in the series
    that measure it, and their names for custom queries ({{stable}}, {{canary}}, {{baseline}})."""

    stable: tuple[tuple[str, str], ...]
    canary: tuple[tuple[str, str], ...]
    names: dict[str, str] = field(default_factory=dict)
    baseline: tuple[tuple[str, str], ...] = ()  # the fresh baseline's series (functions/core/baseline.py)


class RouterModule(Protocol):
    """What a module of functions/providers/routers/ declares (a module is an instance of this protocol)."""

    NAME: str
    OPTIONS: tuple[Option, ...]
    CAPABILITIES: frozenset[str]
    METRICS: RouterMetrics | None
    OWNS: tuple[Owned, ...]

    def measured_by(self, options: Mapping[str, Any]) -> str:
        """Whose standard series measure this router with these options ("" when no built-in template can)."""
        ...

    def versions(self, policy: Any) -> Versions:
        """The labels naming the stable and the canary of `policy` in those series."""
        ...

    def check(self, options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
        """Problems of features it has but cannot use with these options or in this combination."""
        ...


Catalog = Mapping[str, RouterModule]
_installed: list[Catalog] = []


def install(catalog: Catalog) -> None:
    """Make `catalog` the process default (functions.providers.routers does this when imported)."""
    _installed[:] = [catalog]


CATALOG_MODULE = "functions.providers.routers"  # installs its REGISTRY when imported


def installed() -> Catalog:
    """The process's router catalog: the one installed, else the one CATALOG_MODULE installs on import."""
    if not _installed:
        importlib.import_module(CATALOG_MODULE)
    if not _installed:
        raise ConfigError(f"no router catalog is installed: {CATALOG_MODULE} did not install one")
    return _installed[0]


def option_problems(module: RouterModule, options: Mapping[str, Any], path: str) -> list[Problem]:
    """Every router option the module does not declare, or whose value it does not accept."""
    declared = {o.name: o for o in module.OPTIONS}
    problems: list[Problem] = []
    for key, given in options.items():
        where = f"{path}.{key}"
        option = declared.get(key)
        if option is None:
            known = ", ".join(o.name for o in module.OPTIONS) or "none"
            problems.append((where, f"is not an option of router {module.NAME}; its options: {known}"))
        elif expected := option.problem(given):
            from functions.core.policy_reader import show

            problems.append((where, f"{show(given)} is not allowed; expected {expected}"))
    return problems


def text_option(options: Mapping[str, Any], key: str, default: str) -> str:
    """options[key] when it is a non-empty string, else default (for modules' pure declarations)."""
    found = options.get(key)
    return found if isinstance(found, str) and found else default
