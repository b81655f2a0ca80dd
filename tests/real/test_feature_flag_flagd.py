"""Feature-flag gray release end to end (issue 14, item 1): graylane's real runner rolls infra/examples/
feature-flag.yaml's flag out, writing flagd's format into a flag file that two real readers use:

- the real flagd v0.11.2 (tests/k8s/tools/flagd), answering evaluations over its API (Connect HTTP/JSON);
- the real OpenFeature Python SDK with its flagd provider, in-process on the same file.

The app is simulated on the test's clock: its users ask the SDK which variant they get, and their requests
are counted by variant (`http_requests_total{feature_flag_key, feature_flag_result_variant, code}` and a
latency histogram) into a real Prometheus by remote write, which graylane's analysis then queries.

At every step 5,000 users are evaluated by flagd and by the SDK: the share that gets the variant is within 2
points of the step, every user gets what graylane's flag_bucket predicts, a user who had it keeps it at the
next step, and the user's other flag in the document is never touched. A broken variant is rolled back: the
tick that judges it writes the flag off, and both flagd and the SDK serve off to everyone right after.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.core.events import ImagePushed, MetricSample, Tick
from functions.core.policy import FlagStage, Policy
from functions.core.policy_parse import parse_policy
from functions.core.state import TERMINAL, AppState, Phase, Release, Version
from functions.core.targeting import flag_variant
from functions.providers.flags.flagd import live_plans
from functions.providers.metrics.prometheus import PrometheusAnalysis
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.real.flagd import Flagd, Sdk, flagd_binary, until
from tests.real.promsynth import Labels, Prometheus
from tests.support import StaticPolicies

pytestmark = pytest.mark.real

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "examples" / "feature-flag.yaml"
USERS = [f"user-{i:04d}" for i in range(5000)]
FLAG = "new-checkout"
REQUESTS_PER_ROUND = 300  # requests of random users every ROUND seconds of the test's clock
ROUND = 15
TICK = 30
USER_DOC = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "theme": {
            "state": "ENABLED",
            "variants": {"dark": "dark", "light": "light"},
            "defaultVariant": "light",
        }
    },
}


@dataclass
class App:
    """The shop on the test's clock: each request is one user's, served the variant the SDK gives that user."""

    sdk: Sdk
    prometheus: Prometheus
    error_rate: dict[str, float]  # variant -> share of 5xx
    now: float
    rng: random.Random = field(default_factory=lambda: random.Random(14))
    counts: dict[Labels, float] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)

    def advance(self, until_ts: float) -> None:
        while self.now + ROUND <= until_ts:
            self.now += ROUND
            users = [self.rng.choice(USERS) for _ in range(REQUESTS_PER_ROUND)]
            got = self.sdk.variants(FLAG, users)
            for user in users:
                variant = got[user]
                self.served[variant] = self.served.get(variant, 0) + 1
                code = "500" if self.rng.random() < self.error_rate.get(variant, 0.0) else "200"
                self._add(("__name__", "http_requests_total"), variant, ("code", code))
                seconds = 0.04 if code == "200" else 0.3
                for le in ("0.05", "0.1", "0.25", "0.5", "+Inf"):
                    if le == "+Inf" or seconds <= float(le):
                        self._add(("__name__", "http_request_duration_seconds_bucket"), variant, ("le", le))
            ts = int(self.now * 1000)
            self.prometheus.write({labels: [(ts, v)] for labels, v in self.counts.items()})

    def _add(self, name: tuple[str, str], variant: str, extra: tuple[str, str]) -> None:
        labels = tuple(
            sorted(
                (
                    name,
                    ("feature_flag_key", FLAG),
                    ("feature_flag_result_variant", variant),
                    ("namespace", "web"),
                    ("job", "storefront"),
                    extra,
                )
            )
        )
        self.counts[labels] = self.counts.get(labels, 0.0) + 1


class Providers(RecordingProviders):
    def __init__(self, analysis: PrometheusAnalysis) -> None:
        super().__init__()
        self.analysis = analysis

    def measure(self, policy: Policy, release: Release) -> tuple[MetricSample, ...]:
        return self.analysis.measure(policy, release)

    def measure_many(self, pairs: list[tuple[Policy, Release]]) -> dict[str, tuple[MetricSample, ...]]:
        return self.analysis.measure_many(pairs)


@dataclass
class Rollout:
    flags: Path
    policy: Policy
    runner: Runner
    store: MemoryStore
    clock: list[datetime]
    app: App
    flagd: Flagd
    sdk: Sdk
    splits: list[dict[str, Any]] = field(default_factory=list)

    def state(self) -> AppState:
        doc, _ = self.store.load(self.policy.app)
        assert doc is not None
        return AppState.from_json(doc)

    def push(self, tag: str) -> None:
        repo = self.policy.image.repository
        self.runner.handle(
            ImagePushed(
                id=f"push-{tag}",
                app=self.policy.app,
                target=Version(tag, f"{repo}:{tag}"),
                repository=repo,
                tag=tag,
                source="generic",
            )
        )

    def tick(self, n: int) -> None:
        self.clock[0] += timedelta(seconds=TICK)
        self.app.advance(self.clock[0].timestamp())
        self.runner.handle(Tick(id=f"tick-{n}", app=self.policy.app))

    def readers_agree(self, percent: int, salt: str) -> dict[str, Any]:
        """Once flagd and the SDK serve the plan, 5,000 users each: the split, and who got the variant."""
        sample = USERS[:200]
        expected = {u: flag_variant(u, salt, percent, "on", "off") for u in sample}
        until(
            lambda: (
                self.flagd.variants(FLAG, sample) == expected and self.sdk.variants(FLAG, sample) == expected
            ),
            15,
            f"flagd and the SDK serving {percent}%",
        )
        by_flagd, by_sdk = self.flagd.variants(FLAG, USERS), self.sdk.variants(FLAG, USERS)
        predicted = {u: flag_variant(u, salt, percent, "on", "off") for u in USERS}
        assert by_flagd == predicted, [u for u in USERS if by_flagd[u] != predicted[u]][:10]
        assert by_sdk == predicted, [u for u in USERS if by_sdk[u] != predicted[u]][:10]
        on = {u for u, v in by_flagd.items() if v == "on"}
        split = {
            "step": percent,
            "flagd": round(100 * len(on) / len(USERS), 2),
            "sdk": round(100 * sum(v == "on" for v in by_sdk.values()) / len(USERS), 2),
            "on": on,
        }
        self.splits.append(split)
        return split


def rollout(tmp: Path, error_rate: dict[str, float]) -> Any:
    flags = tmp / "flags.flagd.json"
    flags.write_text(json.dumps(USER_DOC, indent=2) + "\n")
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["flags"] = {
        **{k: v for k, v in doc["spec"]["flags"].items() if k not in ("configMap", "key")},
        "file": str(flags),
    }  # this test's flag file instead of the ConfigMap
    policy = parse_policy(doc, source=str(EXAMPLE))
    prometheus = Prometheus().start()
    flagd = Flagd(flagd_binary(), flags, tmp / "flagd.log").start()
    sdk = Sdk(flags)
    assert policy.analysis is not None
    policy = replace(policy, analysis=replace(policy.analysis, prometheus=prometheus.url))
    clock = [datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)]
    analysis = PrometheusAnalysis(prometheus.url, timeout=5, retries=1, clock=lambda: clock[0].timestamp())
    store = MemoryStore()
    runner = Runner(store, StaticPolicies([policy]), Providers(analysis), clock=lambda: clock[0])
    app = App(sdk, prometheus, error_rate, now=clock[0].timestamp())
    return Rollout(flags, policy, runner, store, clock, app, flagd, sdk), prometheus


@pytest.fixture(name="healthy")
def healthy_fixture(tmp_path: Path) -> Any:
    r, prometheus = rollout(tmp_path, {"on": 0.005, "off": 0.005})
    yield r
    r.sdk.close()
    r.flagd.stop()
    prometheus.close()


@pytest.fixture(name="broken")
def broken_fixture(tmp_path: Path) -> Any:
    r, prometheus = rollout(tmp_path, {"on": 0.3, "off": 0.005})
    yield r
    r.sdk.close()
    r.flagd.stop()
    prometheus.close()


def test_feature_flag_rollout_5_25_50_100_with_flagd_and_the_sdk(healthy: Rollout) -> None:
    r = healthy
    theme = json.dumps(USER_DOC["flags"]["theme"], indent=2).replace("\n", "\n    ")
    r.push("2.0.0")  # the first version becomes stable
    r.push("2.1.0")
    state = r.state()
    rel = state.release
    assert rel is not None and rel.promoted and isinstance(r.policy.stages[rel.stage], FlagStage)
    previous: set[str] = set()
    seen = []
    for n in range(400):
        state = r.state()
        rel = state.release
        assert rel is not None
        if rel.phase in TERMINAL:
            break
        assert rel.phase == Phase.PROGRESSING, (rel.phase, rel.reason)
        percent = state.flags[0].percent
        if percent not in seen:
            seen.append(percent)
            split = r.readers_agree(percent, rel.id)
            assert abs(split["flagd"] - percent) <= 2 and abs(split["sdk"] - percent) <= 2, split
            assert previous <= split["on"], "a user lost the variant at the next step"
            previous = split["on"]
            assert theme in r.flags.read_text()  # the user's flag, byte for byte
        r.tick(n)
    assert rel.phase == Phase.SUCCEEDED, (rel.phase, rel.reason)
    assert seen == [5, 25, 50, 100]
    verdicts = [v for v in rel.verdicts if v.verdict == "pass"]
    assert verdicts and any("feature_flag_result_variant" in m.query for m in verdicts[-1].metrics)
    assert r.flagd.evaluate("theme", "user-0001", "String")["variant"] == "light"
    print("splits:", [{k: v for k, v in s.items() if k != "on"} for s in r.splits])  # noqa: T201 (the report)


def test_feature_flag_broken_variant_rolls_back_off_within_the_tick(broken: Rollout) -> None:
    r = broken
    r.push("2.0.0")
    r.push("2.1.0")
    state = r.state()
    assert state.flags[0].percent == 5
    split = r.readers_agree(5, state.release.id if state.release else "")
    had = split["on"]
    for n in range(60):
        r.tick(n)
        state = r.state()
        if state.release is not None and state.release.phase in TERMINAL:
            break
    rel = state.release
    assert rel is not None and rel.phase == Phase.ROLLED_BACK, rel.phase if rel else None
    assert "analysis failed" in rel.reason
    failed = [v for v in rel.verdicts if v.verdict == "fail"][-1]
    assert all(m.verdict != "inconclusive" for m in failed.metrics if m.verdict == "fail")
    print("failed verdict:", failed.reason[:300])  # noqa: T201
    # the tick that judged the variant wrote it off: the document already serves 0 %
    off = state.flags[0]
    assert off.percent == 0 and live_plans(r.flags.read_text(), (off,)) == (off,)
    started = time.monotonic()
    until(
        lambda: all(v == "off" for v in r.sdk.variants(FLAG, sorted(had)).values()), 10, "the SDK serving off"
    )
    sdk_seconds = time.monotonic() - started
    until(
        lambda: all(v == "off" for v in r.flagd.variants(FLAG, sorted(had)).values()), 10, "flagd serving off"
    )
    assert set(r.flagd.variants(FLAG, USERS).values()) == {"off"} and set(
        r.sdk.variants(FLAG, USERS).values()
    ) == {"off"}
    print(f"rolled back after {n + 1} ticks; the SDK served off {sdk_seconds:.2f} s after the tick")  # noqa: T201
