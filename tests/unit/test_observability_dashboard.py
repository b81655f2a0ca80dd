"""infra/dashboards/graylane.json: every panel queries only series and labels graylane's registry exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from functions.observability.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "dashboards" / "graylane.json"
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_CLAUSE = r"(?:by|without|on|ignoring|group_left|group_right)"  # followed by a list of labels


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def references(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, labels in matchers, labels in by/without) of a PromQL expression."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold any character
    grouping = {
        label.strip()
        for group in re.findall(rf"\b{_CLAUSE}\s*\(([^)]*)\)", expr)
        for label in group.split(",")
        if label.strip()
    }
    expr = re.sub(rf"\b{_CLAUSE}\s*\([^)]*\)", " ", expr)
    matchers: set[str] = set()
    for block in re.findall(r"\{([^}]*)\}", expr):
        matchers |= set(re.findall(rf"({_NAME})\s*(?:=~|!~|!=|=)", block))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    names = {
        m.group(1)
        for m in re.finditer(rf"(?<![\w:.])({_NAME})(?![\w:])(?!\s*\()", expr)
        if m.group(1).lower() not in KEYWORDS
    }
    return names, matchers, grouping


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_expression_reader_finds_names_and_labels() -> None:
    names, matchers, grouping = references(
        'histogram_quantile(0.95, sum by (le, source) (rate(x_bucket{job=~"$job",a!="}"}[5m]))) / on(a) y'
    )
    assert names == {"x_bucket", "y"} and grouping == {"le", "source", "a"} and matchers == {"job", "a"}


def test_the_dashboard_has_the_panels_and_a_datasource_variable() -> None:
    d = load()
    assert d["schemaVersion"] >= 36 and d["uid"] == "graylane"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    titles = {p["title"] for p in d["panels"]}
    for wanted in (
        "Releases by phase",
        "Transitions by type",
        "Decision latency",
        "Webhook requests by source and status",
        "Verdicts by judge and verdict",
        "Effects by outcome",
    ):
        assert wanted in titles
    decision = next(p for p in d["panels"] if p["title"] == "Decision latency")
    assert [re.match(r"histogram_quantile\((0\.\d+)", t["expr"]).group(1) for t in decision["targets"]] == [
        "0.5",
        "0.95",
    ]
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p[
            "title"
        ]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])


@pytest.mark.parametrize(
    ("title", "expr"), targets(load()), ids=[f"{t}:{e[:40]}" for t, e in targets(load())]
)
def test_every_query_uses_only_exposed_series_and_their_labels(title: str, expr: str) -> None:
    exposed = REGISTRY.sample_names()
    names, matchers, grouping = references(expr)
    assert names, f"{title}: no metric in {expr}"
    unknown = names - set(exposed)
    assert not unknown, f"{title}: {sorted(unknown)} are not exposed; exposed: {sorted(exposed)}"
    labels = set().union(*(exposed[n] for n in names)) | SCRAPE_LABELS
    assert matchers <= labels and grouping <= labels, f"{title}: labels {matchers | grouping} vs {labels}"


def test_variable_queries_use_exposed_series() -> None:
    exposed = REGISTRY.sample_names()
    for v in load()["templating"]["list"]:
        if v["type"] == "query":
            names = set(re.findall(r"label_values\((" + _NAME + r")", v["definition"]))
            assert names and names <= set(exposed), v["name"]
