"""The traffic and the Prometheus of the detection benchmark: common random numbers, scraped counters, PromQL.

- `Traffic`: one run's requests, second by second, drawn once from the run's seed whoever routes them
  (common random numbers). Each request carries a routing draw `u` (it goes to the canary when
  `u < canary weight`), an error draw `e` (it fails on the canary when `e < canary error rate`, on stable
  when `e < stable error rate`: coupled, so a canary-caused failure is exactly a request that failed on the
  canary and would have succeeded on stable) and a latency draw (stable latency log-normal; the canary's is
  the same request's stable latency plus the scenario's shift). Every policy sees the same requests; only
  where they go depends on the policy.
- `Sim`: the counters a router exports (requests by version and status code, latency histogram buckets by
  version), advanced segment by segment at the weight in force, and scraped every `scrape_s` seconds (with a
  per-run phase) into a `TSDB`.
- `TSDB.query(promql, t)`: the subset of PromQL that graylane's templates and the anchors send, with
  Prometheus 2.x semantics: instant selectors with a 5-minute lookback, `increase`/`rate` over closed ranges
  with Prometheus' extrapolation (`extrapolatedRate`), `sum by`/`avg by`, `histogram_quantile` (linear
  interpolation inside a bucket), `* scalar` and `or`. An unsupported query raises: the benchmark must never
  answer a query it does not understand.

Modelling choices (documented in the README): a version's series exist, at 0, from before the release (the
canary Service served earlier releases), so no error is lost to a series created late; counters never reset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

RPS = 100.0  # total requests per second of the service
BASE_ERRORS = 0.005  # stable error rate
LAT_MEDIAN_S, LAT_SIGMA = 0.050, 0.5  # stable latency: log-normal
PRE = 600  # seconds of stable-only traffic before the release (counters and scrapes exist before it)
CHUNK = 120  # seconds of traffic drawn at a time (chunk k from seed (run seed, k): order-independent)
LOOKBACK = 300.0  # Prometheus' instant-vector lookback delta

# Default latency buckets (seconds, or ms for Istio) of each router's request-duration histogram.
BUCKETS: dict[str, tuple[float, ...]] = {
    "nginx": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),  # --time-buckets default
    "traefik": (0.1, 0.3, 1.2, 5.0),  # Traefik's default buckets
    "istio": (
        0.5,
        1,
        5,
        10,
        25,
        50,
        100,
        250,
        500,
        1000,
        2500,
        5000,
        10000,
        30000,
        60000,
        300000,
        600000,
        1800000,
        3600000,
    ),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_errors: float
    latency_shift_ms: float = 0.0
    lat_median_s: float = (
        LAT_MEDIAN_S  # stable latency (log-normal); the real stack's backends answer at once
    )
    lat_sigma: float = LAT_SIGMA
    buckets: tuple[float, ...] = ()  # the router's histogram bounds (s); () = the router's defaults (BUCKETS)
    # the stable's latency drawn from a measured histogram instead: (upper bound s, cumulative share), +Inf last
    lat_cdf: tuple[tuple[float, float], ...] = ()

    @property
    def healthy(self) -> bool:
        return self.canary_errors <= BASE_ERRORS and self.latency_shift_ms == 0


# -- traffic --------------------------------------------------------------------------------------


class _Chunk:
    __slots__ = ("offsets", "u", "err_c", "err_s", "lat_s")

    def __init__(self, seed: int, index: int, seconds: int, scenario: Scenario) -> None:
        rng = np.random.default_rng([seed, index])
        n = rng.poisson(RPS, size=seconds)
        self.offsets = np.concatenate([[0], np.cumsum(n)])
        total = int(self.offsets[-1])
        self.u = rng.random(total)
        e = rng.random(total)
        self.err_c = e < scenario.canary_errors
        self.err_s = e < BASE_ERRORS
        if scenario.lat_cdf:
            self.lat_s = draw_from_histogram(scenario.lat_cdf, rng.random(total))
        else:
            z = rng.standard_normal(total)
            self.lat_s = np.exp(math.log(scenario.lat_median_s) + scenario.lat_sigma * z)


def draw_from_histogram(cdf: tuple[tuple[float, float], ...], u: np.ndarray) -> np.ndarray:
    """Latencies with the histogram's bucket shares, spread linearly inside each bucket (as histogram_quantile
    reads it); a draw in the +Inf bucket gets twice the last finite bound (above it, as its bucket says)."""
    bounds = [0.0] + [b for b, _ in cdf if math.isfinite(b)]
    shares = [0.0] + [c for b, c in cdf if math.isfinite(b)]
    lat = np.interp(u, shares, bounds)
    lat[u > shares[-1]] = 2 * bounds[-1]
    return lat


class Traffic:
    """One run's requests from second -PRE on; `segment(a, b)` gives the requests of seconds [a, b)."""

    def __init__(self, seed: int, scenario: Scenario) -> None:
        self.seed, self.scenario = seed, scenario
        self._chunks: dict[int, _Chunk] = {}

    def _chunk(self, k: int) -> _Chunk:
        if k not in self._chunks:
            self._chunks[k] = _Chunk(self.seed, k, CHUNK, self.scenario)
        return self._chunks[k]

    def segments(self, a: int, b: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(u, err_c, err_s, stable latency s) slices covering seconds [a, b) (seconds count from -PRE)."""
        a, b = a + PRE, b + PRE
        while a < b:
            k, within = divmod(a, CHUNK)
            end = min(b - k * CHUNK, CHUNK)
            c = self._chunk(k)
            lo, hi = c.offsets[within], c.offsets[end]
            yield c.u[lo:hi], c.err_c[lo:hi], c.err_s[lo:hi], c.lat_s[lo:hi]
            a = k * CHUNK + end


# -- counters, scrapes and the TSDB ---------------------------------------------------------------


def version_labels(router: str, names: dict[str, str], version: str) -> dict[str, str]:
    """The labels a router puts on one version's series (names: templates.Target.names, + the port)."""
    ns, svc = names["namespace"], names[version]
    if router == "nginx":
        return {"namespace": ns, "service": svc, "ingress": names["app"]}
    if router == "traefik":
        from functions.providers.routers.traefik import service_label

        return {"service": service_label(ns, svc, names.get("port", "80"))}
    if router == "istio":
        return {"destination_workload_namespace": ns, "destination_workload": svc, "reporter": "destination"}
    raise ValueError(f"the detection simulator has no series for router {router}")


class Sim:
    """Counters of one run's stable and canary versions, scraped into a TSDB at the scrape interval."""

    def __init__(
        self, traffic: Traffic, scrape_s: int, phase: int, router: str, names: dict[str, str], horizon: int
    ) -> None:
        from functions.providers.metrics.templates import ROUTERS

        r = ROUTERS[router]
        self.traffic, self.scrape_s, self.phase = traffic, scrape_s, phase
        self.shift_s = traffic.scenario.latency_shift_ms / 1000.0
        self.le = traffic.scenario.buckets or BUCKETS[router]
        self.le_s = np.array(self.le) * r.to_ms / 1000.0  # bucket bounds in seconds
        k = len(self.le) + 1  # + Inf
        # per version: requests with code 200, with code 500, then cumulative buckets (le..., +Inf)
        labels: list[dict[str, str]] = []
        for version in ("stable", "canary"):
            base = version_labels(router, names, version)
            for code in ("200", "500"):
                labels.append({"__name__": r.requests, **base, r.code_label: code})
            for le in (*self.le, math.inf):
                labels.append({"__name__": r.duration_bucket, **base, "le": _fmt_le(le)})
        self.width = 2 + k
        self.counters = np.zeros(2 * self.width)
        self.tsdb = TSDB(labels, capacity=(PRE + horizon) // scrape_s + 2)
        self.t = -PRE
        self.weight = 0.0
        self.active = True
        # what the canary did while the release was under test (from t = 0 until it ended)
        self.canary_requests = 0
        self.caused_failures = 0  # failed on the canary, would have succeeded on stable
        self.canary_errors = 0
        self._next_scrape = self._first_scrape_after(-PRE)

    def _first_scrape_after(self, t: int) -> int:
        return t + (self.phase - t) % self.scrape_s

    def run_until(self, t: int) -> None:
        """Serve seconds [self.t, t) at the current weight, scraping on the way (a scrape at τ sees < τ)."""
        while self.t < t:
            if self._next_scrape <= self.t:
                self.tsdb.append(self.t, self.counters)
                self._next_scrape = self.t + self.scrape_s
            end = min(t, self._next_scrape)
            self._serve(self.t, end)
            self.t = end
        if self._next_scrape == self.t:
            self.tsdb.append(self.t, self.counters)
            self._next_scrape = self.t + self.scrape_s

    def _serve(self, a: int, b: int) -> None:
        w = self.weight if self.active else 0.0
        c, width = self.counters, self.width
        for u, err_c, err_s, lat in self.traffic.segments(a, b):
            canary = u < w
            nc = int(canary.sum())
            ns = len(u) - nc
            ce = int((err_c & canary).sum())
            se = int((err_s & ~canary).sum())
            c[0] += ns - se
            c[1] += se
            c[width] += nc - ce
            c[width + 1] += ce
            c[2:width] += _cum_buckets(lat[~canary], self.le_s)
            if nc:
                c[width + 2 : 2 * width] += _cum_buckets(lat[canary] + self.shift_s, self.le_s)
            if a >= 0 and self.active:
                self.canary_requests += nc
                self.canary_errors += ce
                self.caused_failures += int((err_c & ~err_s & canary).sum())

    def end(self) -> None:
        self.active = False


def _cum_buckets(lat: np.ndarray, le: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(le, lat, side="left")  # first bucket whose bound is >= the latency
    return np.cumsum(np.bincount(idx, minlength=len(le) + 1))


def _fmt_le(le: float) -> str:
    return "+Inf" if math.isinf(le) else f"{le:g}"


class TSDB:
    """Scraped samples of a fixed set of series: times[i] and values[i, series] (preallocated)."""

    def __init__(self, labels: list[dict[str, str]], capacity: int) -> None:
        self.labels = labels
        self._times = np.zeros(capacity)
        self._values = np.zeros((capacity, len(labels)))
        self.n = 0
        self._selected: dict[tuple[str, tuple[tuple[str, str, str], ...]], list[int]] = {}

    def append(self, t: float, values: np.ndarray) -> None:
        self._times[self.n] = t
        self._values[self.n] = values
        self.n += 1

    @property
    def times(self) -> np.ndarray:
        return self._times[: self.n]

    def select(self, name: str, matchers: list[tuple[str, str, str]]) -> list[int]:
        key = (name, tuple(matchers))
        hit = self._selected.get(key)
        if hit is None:
            hit = self._selected[key] = self._select(name, matchers)
        return hit

    def _select(self, name: str, matchers: list[tuple[str, str, str]]) -> list[int]:
        out = []
        for i, labels in enumerate(self.labels):
            if labels.get("__name__") != name:
                continue
            if all(_match(labels.get(k, ""), op, v) for k, op, v in matchers):
                out.append(i)
        return out

    def window(self, t: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """Sample times and rows in the closed range [t - seconds, t] (Prometheus 2.x)."""
        times = self.times
        lo = int(np.searchsorted(times, t - seconds, side="left"))
        hi = int(np.searchsorted(times, t, side="right"))
        return times[lo:hi], self._values[lo:hi]

    def increase(self, series: int, t: float, seconds: float) -> float | None:
        times, rows = self.window(t, seconds)
        if len(times) < 2:
            return None
        return extrapolated_increase(times, rows[:, series], t - seconds, t)

    def instant(self, series: int, t: float) -> float | None:
        times = self.times
        i = int(np.searchsorted(times, t, side="right")) - 1
        if i < 0 or times[i] < t - LOOKBACK:
            return None
        return float(self._values[i, series])

    # -- PromQL ---------------------------------------------------------------------------------------
    def query(self, promql: str, t: float) -> list[dict[str, Any]]:
        """The instant query's result in the HTTP API's shape: [{"metric": {...}, "value": [t, "v"]}]."""
        vector = _eval(self, _parse(promql), t)
        return [{"metric": labels, "value": [t, _fmt_value(v)]} for labels, v in vector]


_PARSED: dict[str, tuple[Any, ...]] = {}


def _parse(promql: str) -> tuple[Any, ...]:
    node = _PARSED.get(promql)
    if node is None:
        parser = _Parser(promql)
        node = parser.expr()
        parser.done()
        _PARSED[promql] = node
    return node


def extrapolated_increase(times: np.ndarray, values: np.ndarray, start: float, end: float) -> float:
    """Prometheus' extrapolatedRate for a counter (isCounter, not a rate): promql/functions.go."""
    result = float(values[-1] - values[0])
    drops = np.diff(values) < 0  # counter resets
    if drops.any():
        result += float(values[:-1][drops].sum())
    sampled = float(times[-1] - times[0])
    to_start, to_end = float(times[0] - start), float(end - times[-1])
    average = sampled / (len(times) - 1)
    if result > 0 and values[0] >= 0:
        to_zero = sampled * (float(values[0]) / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled)


def _match(value: str, op: str, pattern: str) -> bool:
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    hit = re.fullmatch(pattern, value) is not None
    return hit if op == "=~" else not hit


def _fmt_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


# -- a small PromQL parser --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?P<unit>s\b)?|"""
    r"""(?P<op>=~|!~|!=|=|\*|/|,|\(|\)|\{|\}|\[|\])|(?P<id>[A-Za-z_:][\w:]*))"""
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, Any]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"unsupported PromQL at {pos}: {text[pos : pos + 40]!r} in {text!r}")
            if m.group("str") is not None:
                raw = m.group("str")[1:-1]
                self.tokens.append(("str", re.sub(r"\\(.)", r"\1", raw)))
            elif m.group("num") is not None:
                self.tokens.append(("dur" if m.group("unit") else "num", float(m.group("num"))))
            elif m.group("op") is not None:
                self.tokens.append(("op", m.group("op")))
            else:
                self.tokens.append(("id", m.group("id")))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", None)

    def take(self, kind: str, value: Any = None) -> Any:
        k, v = self.peek()
        if k != kind or (value is not None and v != value):
            raise ValueError(f"unsupported PromQL: expected {value or kind}, got {v!r} in {self.text!r}")
        self.i += 1
        return v

    def done(self) -> None:
        if self.i != len(self.tokens):
            raise ValueError(f"unsupported PromQL: trailing {self.tokens[self.i :]} in {self.text!r}")

    def expr(self) -> tuple[Any, ...]:
        node = self.product()
        while self.peek() == ("id", "or"):
            self.take("id", "or")
            node = ("or", node, self.product())
        return node

    def product(self) -> tuple[Any, ...]:
        node = self.atom()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take("op")
            right = self.atom()
            node = (op, node, right)
        return node

    def atom(self) -> tuple[Any, ...]:
        kind, v = self.peek()
        if kind == "num":
            self.take("num")
            return ("num", v)
        if kind == "op" and v == "(":
            self.take("op", "(")
            node = self.expr()
            self.take("op", ")")
            return node
        name = self.take("id")
        if name in ("sum", "avg"):
            by: tuple[str, ...] = ()
            if self.peek() == ("id", "by"):
                self.take("id", "by")
                by = self._labels()
            self.take("op", "(")
            inner = self.expr()
            self.take("op", ")")
            return ("agg", name, by, inner)
        if name in ("increase", "rate"):
            self.take("op", "(")
            sel = self._selector(self.take("id"))
            self.take("op", "[")
            seconds = self.take("dur")
            self.take("op", "]")
            self.take("op", ")")
            return (name, sel, seconds)
        if name == "histogram_quantile":
            self.take("op", "(")
            q = self.take("num")
            self.take("op", ",")
            inner = self.expr()
            self.take("op", ")")
            return ("hq", q, inner)
        return ("sel", self._selector(name))

    def _labels(self) -> tuple[str, ...]:
        self.take("op", "(")
        out = [self.take("id")]
        while self.peek() == ("op", ","):
            self.take("op", ",")
            out.append(self.take("id"))
        self.take("op", ")")
        return tuple(out)

    def _selector(self, name: str) -> tuple[str, list[tuple[str, str, str]]]:
        matchers: list[tuple[str, str, str]] = []
        if self.peek() == ("op", "{"):
            self.take("op", "{")
            while self.peek() != ("op", "}"):
                label = self.take("id")
                op = self.take("op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise ValueError(f"unsupported matcher {op} in {self.text!r}")
                matchers.append((label, op, self.take("str")))
                if self.peek() == ("op", ","):
                    self.take("op", ",")
            self.take("op", "}")
        return name, matchers


Vector = list[tuple[dict[str, str], float]]


def _eval(db: TSDB, node: tuple[Any, ...], t: float) -> Vector:
    kind = node[0]
    if kind == "sel":
        name, matchers = node[1]
        out: Vector = []
        for i in db.select(name, matchers):
            v = db.instant(i, t)
            if v is not None:
                out.append((dict(db.labels[i]), v))
        return out
    if kind in ("increase", "rate"):
        (name, matchers), seconds = node[1], node[2]
        out = []
        for i in db.select(name, matchers):
            v = db.increase(i, t, seconds)
            if v is not None:
                labels = {k: x for k, x in db.labels[i].items() if k != "__name__"}
                out.append((labels, v / seconds if kind == "rate" else v))
        return out
    if kind == "agg":
        _, how, by, inner = node
        groups: dict[tuple[str, ...], list[float]] = {}
        for labels, v in _eval(db, inner, t):
            groups.setdefault(tuple(labels.get(k, "") for k in by), []).append(v)
        return [
            ({k: x for k, x in zip(by, key, strict=True) if x}, sum(vs) / (len(vs) if how == "avg" else 1))
            for key, vs in groups.items()
        ]
    if kind == "hq":
        _, q, inner = node
        groups2: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for labels, v in _eval(db, inner, t):
            key = tuple(sorted((k, x) for k, x in labels.items() if k not in ("le", "__name__")))
            groups2.setdefault(key, []).append((float(labels["le"]), v))
        return [(dict(key), bucket_quantile(q, sorted(b))) for key, b in groups2.items()]
    if kind in ("*", "/"):
        left, right = node[1], node[2]
        if right[0] != "num":
            raise ValueError("only vector * scalar is supported")
        k = right[1]
        return [
            ({a: b for a, b in labels.items() if a != "__name__"}, v * k if kind == "*" else v / k)
            for labels, v in _eval(db, left, t)
        ]
    if kind == "or":
        left = _eval(db, node[1], t)
        seen = {tuple(sorted(labels.items())) for labels, _ in left}
        return left + [
            (labels, v) for labels, v in _eval(db, node[2], t) if tuple(sorted(labels.items())) not in seen
        ]
    if kind == "num":
        raise ValueError("a bare scalar is not a supported query")
    raise ValueError(f"unsupported PromQL node {kind}")


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile: buckets sorted by upper bound, cumulative counts, +Inf last."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    counts = [c for _, c in buckets]
    for i in range(1, len(counts)):  # ensure monotonicity, as Prometheus does
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else math.nan
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end = (0.0, buckets[0][0]) if b == 0 else (buckets[b - 1][0], buckets[b][0])
    below = 0.0 if b == 0 else counts[b - 1]
    inside = counts[b] - below
    return start + (end - start) * ((rank - below) / inside if inside else 0.0)
