"""Structured logs: the JSON formatter, the per-event log context and the environment switch."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from functions.errors import ConfigError
from functions.observability import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("DEBUG", out, "json")
    try:
        yield out
    finally:
        logs.unconfigure()
        logging.getLogger(logs.ROOT).setLevel(logging.NOTSET)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_context_fields_and_extras(stream: io.StringIO) -> None:
    log = logging.getLogger("graylane.runner")
    with logs.log_context(event_id="push-1", app="prod/web", event_type="dev.graylane.image.pushed"):
        logs.bind(correlation_id="web-3")
        log.info("pushed %s", "v2", extra={"status": "transitioned", "pending": 2})
    log.warning("outside")
    inside, outside = lines(stream)
    assert (
        inside["msg"] == "pushed v2" and inside["level"] == "INFO" and inside["logger"] == "graylane.runner"
    )
    assert (inside["event_id"], inside["correlation_id"], inside["app"], inside["event_type"]) == (
        "push-1",
        "web-3",
        "prod/web",
        "dev.graylane.image.pushed",
    )
    assert inside["status"] == "transitioned" and inside["pending"] == 2
    assert inside["ts"].endswith("Z") and "T" in inside["ts"]
    assert outside["event_id"] == "" and outside["correlation_id"] == "" and outside["msg"] == "outside"


def test_nested_contexts_extend_and_restore(stream: io.StringIO) -> None:
    log = logging.getLogger("graylane.x")
    with logs.log_context(event_id="outer", app="a/b"):
        with logs.log_context(event_id="inner", correlation_id="b-1"):
            log.info("in")
        log.info("back")
    inner, back = lines(stream)
    assert (inner["event_id"], inner["app"], inner["correlation_id"]) == ("inner", "a/b", "b-1")
    assert (back["event_id"], back["app"], back["correlation_id"]) == ("outer", "a/b", "")


def test_context_is_per_thread(stream: io.StringIO) -> None:
    log = logging.getLogger("graylane.x")
    barrier = threading.Barrier(2)

    def worker(event_id: str) -> None:
        with logs.log_context(event_id=event_id):
            barrier.wait()  # both contexts are open at once
            log.info("work")

    threads = [threading.Thread(target=worker, args=(f"e{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(line["event_id"] for line in lines(stream)) == ["e0", "e1"]


def test_exceptions_and_unserialisable_extras_are_kept(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("graylane.x").exception("failed", extra={"obj": object()})
    (line,) = lines(stream)
    assert "ValueError: boom" in line["exc"] and line["obj"].startswith("<object object")


def test_only_the_graylane_hierarchy_is_formatted(stream: io.StringIO) -> None:
    logging.getLogger("other").warning("not ours")
    logging.getLogger("graylane").warning("ours")
    assert [line["msg"] for line in lines(stream)] == ["ours"]


def test_text_format_appends_the_context() -> None:
    out = io.StringIO()
    logs.configure("INFO", out, "text")
    try:
        with logs.log_context(event_id="tick-9", app="prod/web"):
            logging.getLogger("graylane.runner").info("hello")
        logging.getLogger("graylane.runner").debug("below the level")
    finally:
        logs.unconfigure()
        logging.getLogger(logs.ROOT).setLevel(logging.NOTSET)
    text = out.getvalue()
    assert text.count("\n") == 1 and "INFO graylane.runner: hello [event_id=tick-9 app=prod/web]" in text


def test_environment_selects_format_and_level() -> None:
    out = io.StringIO()
    try:
        logs.configure_from_env({"GRAYLANE_LOG_FORMAT": "json", "GRAYLANE_LOG_LEVEL": "warning"}, out)
        logging.getLogger("graylane.x").info("dropped")
        logging.getLogger("graylane.x").warning("kept")
        assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["kept"]
        handler = logs.configure_from_env({}, out)  # default: text, INFO
        assert isinstance(handler.formatter, logs.TextFormatter)
        assert len([h for h in logging.getLogger(logs.ROOT).handlers if getattr(h, "graylane", False)]) == 1
        with pytest.raises(ConfigError, match="GRAYLANE_LOG_FORMAT='xml'"):
            logs.configure_from_env({"GRAYLANE_LOG_FORMAT": "xml"})
        with pytest.raises(ConfigError, match="GRAYLANE_LOG_LEVEL='LOUD'"):
            logs.configure_from_env({"GRAYLANE_LOG_LEVEL": "LOUD"})
    finally:
        logs.unconfigure()
        logging.getLogger(logs.ROOT).setLevel(logging.NOTSET)
    assert logging.getLogger(logs.ROOT).propagate


def test_bind_outside_a_context_changes_nothing() -> None:
    logs.bind(event_id="nowhere")
    assert logs._context.get() is None
