"""Chat text -> a release command. Pure: no I/O, every mistake answered with the usage line that fits.

/graylane approve pro/flask promote           approve gate "promote"
/graylane approve pro/flask canary-weight 30  approve with the gate's weight parameter
/graylane approve pro/flask weight=30         the gate being waited on, with a parameter
/graylane reject pro/flask ab-test -- not now  a reason follows `--`
/graylane approve pro/flask promote release=flask-7 version=v1.3.0
                                              pinned to a release (what notification buttons send);
                                              without it the command is for the release current when sent
/graylane weight pro/flask 30
/graylane rollback pro/flask v1.2.0
/graylane status pro/flask    /graylane history pro/flask 20
"""

from __future__ import annotations

import re
import shlex
from dataclasses import field, replace

from functions.catalog import is_app, is_release, is_tag
from functions.core.events import ACTIONS
from functions.core.values import value
from functions.errors import GraylaneError

_PIN = "[release=ID [version=TAG]]"
USAGE = {
    "status": "status APP",
    "history": "history APP [COUNT]",
    "approve": f"approve APP [GATE] [WEIGHT | NAME=VALUE ...] {_PIN} [-- REASON]",
    "reject": f"reject APP [GATE] {_PIN} [-- REASON]",
    "weight": f"weight APP PERCENT {_PIN}",
    "promote": f"promote APP {_PIN} [-- REASON]",
    "pause": f"pause APP {_PIN} [REASON]",
    "resume": f"resume APP {_PIN} [-- REASON]",
    "abort": f"abort APP {_PIN} [REASON]",
    "rollback": "rollback APP [VERSION] [release=ID] [-- REASON]",
}
HELP = (
    "commands (APP is namespace/name):\n"
    + "\n".join(f"  {u}" for u in USAGE.values())
    + "\nrelease=ID pins a command to one release; without it, it is for the release current when it is sent"
)
PREFIXES = ("/graylane", "graylane")
MAX_HISTORY = 200
_GATE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PARAM = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,63})=(-?[0-9]{1,9})")
_PINS = ("release", "version")  # keywords, never gate parameters


class UsageError(GraylaneError):
    """The text is not a command; the message says what is wrong and shows the usage."""


@value
class ParsedCommand:
    action: str
    app: str
    gate: str = ""
    weight: int | None = None
    params: dict[str, int] = field(default_factory=dict)
    version: str = ""  # rollback: where to go; any other action: the pinned release's target version
    reason: str = ""
    limit: int = 20  # history: how many entries
    release: str = ""  # the release it is for; empty: the one current when it is sent (resolved by the edge)


def tokens(text: str) -> list[str]:
    """Words of a chat message, without the command prefix and leading @mentions of the bot."""
    text = text.replace("\u00a0", " ").replace("\u201c", '"').replace("\u201d", '"').strip()
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote: take the words as typed
        words = text.split()
    while words and (words[0].startswith("@") or words[0].lower() in PREFIXES):
        words.pop(0)
    return words


def parse(text: str) -> ParsedCommand:
    """Parse chat text such as `approve pro/flask promote`; raise UsageError naming the problem."""
    words = tokens(text)
    if not words or words[0].lower() in ("help", "-h", "--help"):
        raise UsageError(HELP)
    action = words[0].lower()
    if action not in ACTIONS:
        raise UsageError(f"unknown command {words[0][:40]!r}; {HELP}")
    if len(words) < 2:
        raise UsageError(f"{action} needs an app; usage: {USAGE[action]}")
    app = words[1].lower()
    if not is_app(app):
        raise UsageError(
            f"{words[1][:80]!r} is not an app; expected namespace/name such as pro/flask; "
            f"usage: {USAGE[action]}"
        )
    rest, reason = _split_reason(words[2:])
    rest, release, version = _pinned(action, rest)
    parsed = _BUILDERS[action](action, app, rest, reason)
    return replace(parsed, release=release, version=version or parsed.version)


def _pinned(action: str, words: list[str]) -> tuple[list[str], str, str]:
    """The words without `release=ID` / `version=TAG`, and those two values."""
    rest, pins = [], {"release": "", "version": ""}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or name.lower() not in _PINS:
            rest.append(word)
            continue
        name = name.lower()
        if action in ("status", "history") or (name == "version" and action == "rollback"):
            what = (
                "give the version to return to as VERSION" if action == "rollback" else "it changes nothing"
            )
            raise _fail(action, f"{name}= is not used by {action} ({what})")
        if pins[name]:
            raise _fail(action, f"{name}= is given twice")
        if name == "release" and not is_release(value):
            raise _fail(action, f"{value[:80]!r} is not a release id such as flask-7")
        if name == "version" and not is_tag(value):
            raise _fail(action, f"{value[:80]!r} is not a version tag such as v1.2.0")
        pins[name] = value
    if pins["version"] and not pins["release"]:
        raise _fail(action, "version= pins a release: give release= too")
    return rest, pins["release"], pins["version"]


def _split_reason(words: list[str]) -> tuple[list[str], str]:
    if "--" in words:
        at = words.index("--")
        return words[:at], " ".join(words[at + 1 :])[:2048]
    return words, ""


def _fail(action: str, message: str) -> UsageError:
    return UsageError(f"{message}; usage: {USAGE[action]}")


def _int(action: str, word: str, what: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"-?[0-9]{1,9}%?", word):
        raise _fail(action, f"{what} {word[:40]!r} is not a number")
    value = int(word.rstrip("%"))
    if not lo <= value <= hi:
        raise _fail(action, f"{what} {value} is not allowed; expected {lo}..{hi}")
    return value


def _read(action: str, app: str, rest: list[str], reason: str) -> ParsedCommand:
    if action == "history" and rest:
        limit = _int(action, rest[0], "count", 1, MAX_HISTORY)
        rest = rest[1:]
        if not rest:
            return ParsedCommand(action, app, limit=limit)
    if rest:
        raise _fail(action, f"unexpected {' '.join(rest)[:80]!r}")
    return ParsedCommand(action, app)


def _gate(action: str, app: str, rest: list[str], reason: str) -> ParsedCommand:
    gate, weight, params = "", None, {}
    free: list[str] = []
    for i, word in enumerate(rest):
        param = _PARAM.fullmatch(word)
        if action == "approve" and param:
            params[param.group(1)] = int(param.group(2))
        elif action == "approve" and re.fullmatch(r"[0-9]{1,3}%?", word):
            weight = _int(action, word, "weight", 0, 100)
        elif i == 0 and _GATE.fullmatch(word):
            gate = word
        else:
            free.append(word)
    if free and action == "approve":
        raise _fail(action, f"unexpected {' '.join(free)[:80]!r} (a reason goes after --)")
    reason = reason or " ".join(free)[:2048]
    if "weight" in params:
        weight = params.pop("weight")
        if not 0 <= weight <= 100:
            raise _fail(action, f"weight {weight} is not allowed; expected 0..100")
    return ParsedCommand(action, app, gate=gate, weight=weight, params=params, reason=reason)


def _weight(action: str, app: str, rest: list[str], reason: str) -> ParsedCommand:
    if len(rest) != 1:
        raise _fail(action, "give exactly one weight" if rest else "the weight is missing")
    return ParsedCommand(action, app, weight=_int(action, rest[0], "weight", 0, 100), reason=reason)


def _free(action: str, app: str, rest: list[str], reason: str) -> ParsedCommand:
    if rest and action in ("promote", "resume"):
        raise _fail(action, f"unexpected {' '.join(rest)[:80]!r} (a reason goes after --)")
    return ParsedCommand(action, app, reason=reason or " ".join(rest)[:2048])


def _rollback(action: str, app: str, rest: list[str], reason: str) -> ParsedCommand:
    if len(rest) > 1:
        raise _fail(action, f"unexpected {' '.join(rest[1:])[:80]!r} (a reason goes after --)")
    version = rest[0] if rest else ""
    if version and not is_tag(version):
        raise _fail(action, f"{version[:80]!r} is not a version tag such as v1.2.0")
    return ParsedCommand(action, app, version=version, reason=reason)


_BUILDERS = {
    "status": _read,
    "history": _read,
    "approve": _gate,
    "reject": _gate,
    "weight": _weight,
    "promote": _free,
    "pause": _free,
    "resume": _free,
    "abort": _free,
    "rollback": _rollback,
}
