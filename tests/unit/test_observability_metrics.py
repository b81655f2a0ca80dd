"""The metrics registry and its text exposition (format 0.0.4), parsed back by a small independent parser."""

from __future__ import annotations

import math
import re
import threading
from dataclasses import replace

import pytest

from functions.core.state import AppState, MetricResult, Phase, Release, VerdictRecord, Version
from functions.observability import metrics
from functions.observability.metrics import Registry
from tests.support import canary_policy

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """(TYPE per metric, value per (series name, labels)); fails on any line outside the format."""
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw_labels, raw_value = m.groups()
        labels: list[tuple[str, str]] = []
        if raw_labels:
            consumed = "".join(x.group(0) for x in _LABEL.finditer(raw_labels))
            assert consumed == raw_labels, f"bad labels in {line!r}"
            labels = [(k, _unescape(v)) for k, v in _LABEL.findall(raw_labels)]
        value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(raw_value)
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(raw_value) if value is None else value
    return types, samples


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_counter_gauge_histogram_render_and_parse_back() -> None:
    reg = Registry()
    c = reg.counter("t_requests_total", "Requests.", ("source", "status"))
    g = reg.gauge("t_queue", "Queue length.")
    h = reg.histogram("t_seconds", "Latency.", ("source",), buckets=(0.1, 1.0))
    c.inc(source="harbor", status="202")
    c.inc(2, source="harbor", status="202")
    c.inc(source="ghcr", status="401")
    g.set(7)
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v, source="harbor")
    types, samples = parse(reg.render())
    assert types == {"t_requests_total": "counter", "t_queue": "gauge", "t_seconds": "histogram"}
    assert samples[series("t_requests_total", source="harbor", status="202")] == 3
    assert samples[series("t_requests_total", source="ghcr", status="401")] == 1
    assert samples[series("t_queue")] == 7
    # buckets are cumulative and the +Inf bucket equals the count
    assert samples[series("t_seconds_bucket", source="harbor", le="0.1")] == 2
    assert samples[series("t_seconds_bucket", source="harbor", le="1.0")] == 3
    assert samples[series("t_seconds_bucket", source="harbor", le="+Inf")] == 4
    assert samples[series("t_seconds_count", source="harbor")] == 4
    assert samples[series("t_seconds_sum", source="harbor")] == pytest.approx(3.65)
    assert h.count(source="harbor") == 4 and h.count(source="other") == 0


def test_label_values_and_help_are_escaped() -> None:
    reg = Registry()
    c = reg.counter("t_total", 'Help with \\ and\nnewline "quoted".', ("v",))
    weird = 'a"b\\c\nd}{,='
    c.inc(v=weird)
    text = reg.render()
    assert '# HELP t_total Help with \\\\ and\\nnewline "quoted".' in text
    _, samples = parse(text)
    assert samples[series("t_total", v=weird)] == 1


def test_unlabelled_metrics_are_exposed_before_the_first_observation() -> None:
    reg = Registry()
    reg.counter("t_total", "x")
    reg.histogram("t_seconds", "y", buckets=(1.0,))
    _, samples = parse(reg.render())
    assert samples[series("t_total")] == 0
    assert samples[series("t_seconds_bucket", le="+Inf")] == 0 and samples[series("t_seconds_count")] == 0


def test_wrong_labels_duplicates_and_negative_increments_are_refused() -> None:
    reg = Registry()
    c = reg.counter("t_total", "x", ("kind",))
    with pytest.raises(ValueError, match="expected \\['kind'\\]"):
        c.inc(kind="a", extra="b")
    with pytest.raises(ValueError, match="only go up"):
        c.inc(-1, kind="a")
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("t_total", "again")
    with pytest.raises(ValueError, match="reserved"):
        reg.histogram("t_seconds", "x", ("le",))


def test_concurrent_increments_are_not_lost() -> None:
    reg = Registry()
    c = reg.counter("t_total", "x", ("k",))
    h = reg.histogram("t_seconds", "x", buckets=(0.5,))

    def work() -> None:
        for _ in range(2000):
            c.inc(k="a")
            h.observe(0.25)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.get(k="a") == 16000
    _, samples = parse(reg.render())
    assert samples[series("t_seconds_bucket", le="0.5")] == 16000
    assert samples[series("t_seconds_sum")] == pytest.approx(4000.0)


def test_histogram_timer_observes_elapsed_time() -> None:
    reg = Registry()
    h = reg.histogram("t_seconds", "x", buckets=(10.0,))
    with h.time():
        pass
    assert h.count() == 1


def test_process_registry_exposes_graylane_metrics() -> None:
    types, samples = parse(metrics.render())
    assert types == {
        "graylane_releases": "gauge",
        "graylane_transitions_total": "counter",
        "graylane_decision_seconds": "histogram",
        "graylane_cycle_seconds": "histogram",
        "graylane_webhook_ignored_total": "counter",
        "graylane_webhook_requests_total": "counter",
        "graylane_webhook_seconds": "histogram",
        "graylane_verdicts_total": "counter",
        "graylane_effects_total": "counter",
    }
    assert {dict(labels)["phase"] for name, labels in samples if name == "graylane_releases"} == {
        p.value for p in Phase
    }


def _release(app_seq: int, phase: Phase = Phase.PROGRESSING) -> Release:
    return Release(
        id=f"web-{app_seq}",
        seq=app_seq,
        target=Version("v2"),
        origin=Version("v1"),
        started_at="2026-01-01T00:00:00Z",
        phase=phase,
    )


def test_releases_gauge_counts_the_latest_release_per_app() -> None:
    before = {p: metrics.RELEASES.get(phase=p) for p in ("progressing", "waiting", "succeeded")}
    metrics.release_seen("t-gauge/a", _release(1))
    metrics.release_seen("t-gauge/b", _release(1))
    assert metrics.RELEASES.get(phase="progressing") == before["progressing"] + 2
    metrics.release_seen("t-gauge/a", _release(1, Phase.WAITING))  # the same app moves: counted once
    metrics.release_seen("t-gauge/b", _release(2, Phase.SUCCEEDED))
    assert metrics.RELEASES.get(phase="progressing") == before["progressing"]
    assert metrics.RELEASES.get(phase="waiting") == before["waiting"] + 1
    assert metrics.RELEASES.get(phase="succeeded") == before["succeeded"] + 1
    metrics.release_seen("t-gauge/a", None)
    metrics.release_seen("t-gauge/b", None)
    assert {p: metrics.RELEASES.get(phase=p) for p in before} == before


def test_saved_verdicts_are_counted_once_per_metric_result_with_the_policys_judge() -> None:
    policy = canary_policy()  # one metric, success-rate, judged by threshold
    passed = VerdictRecord(at="t1", verdict="pass", metrics=(MetricResult("success-rate", "pass"),))
    failed = VerdictRecord(
        at="t2",
        verdict="fail",
        metrics=(MetricResult("success-rate", "fail"), MetricResult("gone-metric", "inconclusive")),
    )
    start = {
        (j, v): metrics.VERDICTS.get(judge=j, verdict=v)
        for j, v in (("threshold", "pass"), ("threshold", "fail"), ("unknown", "inconclusive"))
    }
    s0 = AppState(app="t-verdicts/web", release=_release(1))
    s1 = replace(s0, release=replace(s0.release, verdicts=(passed,)))
    s2 = replace(s1, release=replace(s1.release, verdicts=(passed, failed)))
    metrics.observe_saved(policy, s0, s1)
    metrics.observe_saved(policy, s1, s2)  # `passed` is already known: only `failed` counts
    metrics.observe_saved(policy, s2, s2)  # nothing new
    got = {k: metrics.VERDICTS.get(judge=k[0], verdict=k[1]) - n for k, n in start.items()}
    assert got == {("threshold", "pass"): 1, ("threshold", "fail"): 1, ("unknown", "inconclusive"): 1}
    # a new release (same records by coincidence) counts its own verdicts
    s3 = replace(s2, release=replace(_release(2), verdicts=(passed,)))
    metrics.observe_saved(policy, s2, s3)
    assert metrics.VERDICTS.get(judge="threshold", verdict="pass") - start[("threshold", "pass")] == 2
    metrics.release_seen("t-verdicts/web", None)
