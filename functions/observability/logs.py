"""Structured logs: one JSON object per line on the `graylane` logger hierarchy, with the event being handled.

The runner enters `log_context(event_id=..., app=..., event_type=...)` for each event and `bind()`s the
release id (the correlation id) once it knows it, so every line logged while the event is handled, in
any graylane module, carries them without passing them around. The context lives in a ContextVar, so
threads and asyncio tasks each see their own.

`configure_from_env()` reads GRAYLANE_LOG_FORMAT (`text` by default, `json` in containers) and
GRAYLANE_LOG_LEVEL (`INFO` by default).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from functions.errors import ConfigError

ROOT = "graylane"
CONTEXT_FIELDS = ("event_id", "correlation_id", "app", "event_type")
FORMATS = ("text", "json")

_context: ContextVar[dict[str, Any] | None] = ContextVar("graylane_log_context", default=None)
# attributes every LogRecord has: anything else on a record came from `extra=` and is logged as a field
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Add fields to every log line inside; nested contexts extend the outer one and restore it on exit."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(current)
    try:
        yield current
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Set fields on the innermost `log_context` (e.g. the correlation id once the state is loaded)."""
    current = _context.get()
    if current is not None:  # outside any context there is nothing to scope them to
        current.update({k: v for k, v in fields.items() if v is not None})


class ContextFilter(logging.Filter):
    """Copy the active log context onto each record (explicit `extra=` fields win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """ts, level, logger, msg, the context fields (always present, "" when unknown), then any extra."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            doc[key] = getattr(record, key, "")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual one-line format, with the context fields appended when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, ""))
        return f"{line} [{fields}]" if fields else line


def configure(level: str | int = "INFO", stream: IO[str] | None = None, fmt: str = "json") -> logging.Handler:
    """Install one handler with the chosen formatter on the `graylane` logger (replacing a previous one).

    The logger stops propagating to the root so a line is not written twice by a framework's own
    handler; `unconfigure()` undoes this.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"log format {fmt!r} is not allowed; expected one of {', '.join(FORMATS)}")
    logger = logging.getLogger(ROOT)
    try:
        logger.setLevel(level.upper() if isinstance(level, str) else level)
    except ValueError as err:
        raise ConfigError(f"log level {level!r} is not a logging level such as INFO or DEBUG") from err
    unconfigure()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.graylane = True  # type: ignore[attr-defined]  # marks the handler as ours for unconfigure()
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def unconfigure() -> None:
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if getattr(h, "graylane", False)]:
        logger.removeHandler(handler)
    logger.propagate = True


def configure_from_env(
    env: Mapping[str, str] | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    env = os.environ if env is None else env
    fmt = env.get("GRAYLANE_LOG_FORMAT", "text").strip().lower() or "text"
    if fmt not in FORMATS:
        raise ConfigError(f"GRAYLANE_LOG_FORMAT={fmt!r} is not allowed; expected one of {', '.join(FORMATS)}")
    level = env.get("GRAYLANE_LOG_LEVEL", "INFO").strip() or "INFO"
    try:
        return configure(level, stream, fmt)
    except ConfigError as err:
        raise ConfigError(f"GRAYLANE_LOG_LEVEL={level!r}: {err}") from err
