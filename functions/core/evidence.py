"""The guard's statistics: anytime-valid e-processes on the canary's errors and latency, and the confidence
bounds that cap its exposure. Pure: counters in, evidence out.

**E-processes.** Between two readings of the raw counters (`Totals`), the canary served `Δcr` requests and
stable `Δsr`; the canary's share of that traffic is `s = Δcr / (Δcr + Δsr)`. If the canary is no worse than
stable, each "bad" request of the interval (an error; or, for latency, a request slower than a bound) is the
canary's with probability at most `s`; if the canary's rate is θ times stable's, with
`p(θ) = θs / (θs + 1 - s)`. The log-likelihood ratio of the interval's bad requests (`Δce` on the canary,
`Δse` on stable) is `Δce·log(p(θ)/s) + Δse·log((1-p(θ))/(1-s))`; summed over intervals per θ and averaged
over a grid of θ (`analysis.MIXTURE_EFFECTS`, 1.25x … 1,400x), `exp` of it is a non-negative supermartingale
under "no regression", whatever the weights did between intervals (each interval is judged at its own share;
within an interval a changing weight only makes the binomial model conservative). By Ville's inequality it
ever reaches `1/alpha` with probability at most `alpha`, however often it is looked at: the guard can look
at every tick from the canary's first request.

**Latency.** The bound is the largest histogram bucket bound with at least 5 % of the pooled (canary +
stable) requests of the first interval above it, i.e. the bucket bound at or below the p95. It is chosen from
pooled counts, which say nothing about which version a request went to, and pinned for the release, so the
test above stays valid for "slow" requests: a canary whose requests are more often slower than the
stable's p95 fails it, on Traefik's, Istio's and NGINX's histograms alike. HAProxy keeps no histogram
(averages only): there the guard watches errors only.

**Confidence bounds.** Robbins' mixture: with `k` bad requests in `n`, `{p : B(k+1, n-k+1) / (p^k (1-p)^(n-k))
< 1/alpha}` contains the true rate at every `n` with probability at least `1 - alpha`; its upper end is the
UCB the exposure cap uses (exposure.py).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

from functions.core.analysis import MIXTURE_EFFECTS as _JUDGE_EFFECTS
from functions.core.counters import Evidence, Totals
from functions.core.state import iso, parse_iso

# Rate ratios the guard's mixture averages over: 1.5x ... ~58x, a factor 1.5 apart. Narrower than the
# sequential judge's grid (analysis.MIXTURE_EFFECTS, up to 1,400x): one scrape of a 20x-or-worse regression
# already carries far more evidence than the bound needs, so those grid points only cost the mild
# regressions log(grid size) nats of evidence.
MIXTURE_EFFECTS = tuple(1.5 * 1.5**k for k in range(10))
assert _JUDGE_EFFECTS
LATENCY_SHARE = 0.05  # the latency bound: the bucket bound with >= this share of pooled requests above it
MIN_BOUND_REQUESTS = 50  # pooled requests an interval needs before the latency bound is chosen from it


def log_evidence(llrs: tuple[float, ...]) -> float:
    """log of the mixture e-value: the mean over effects of exp(llr); 0 before any evidence."""
    if not llrs:
        return 0.0
    top = max(llrs)
    return top + math.log(sum(math.exp(x - top) for x in llrs) / len(llrs))


def _increment(
    llrs: tuple[float, ...], canary_bad: float, stable_bad: float, share: float
) -> tuple[float, ...]:
    if not 0.0 < share < 1.0 or (canary_bad <= 0 and stable_bad <= 0):
        return llrs or tuple(0.0 for _ in MIXTURE_EFFECTS)
    base = llrs or tuple(0.0 for _ in MIXTURE_EFFECTS)
    out = []
    for llr, effect in zip(base, MIXTURE_EFFECTS, strict=True):
        p1 = effect * share / (effect * share + 1.0 - share)
        out.append(
            llr + canary_bad * math.log(p1 / share) + stable_bad * math.log((1.0 - p1) / (1.0 - share))
        )
    return tuple(out)


def _slow(buckets: tuple[tuple[float, float, float], ...], bound: float) -> tuple[float, float, float, float]:
    """(canary requests, canary slower than bound, stable requests, stable slower) from cumulative buckets."""
    total = buckets[-1]
    at = next((b for b in buckets if b[0] >= bound), total)
    return total[1], total[1] - at[1], total[2], total[2] - at[2]


def _choose_bound(delta: tuple[tuple[float, float, float], ...]) -> float:
    """The largest finite bucket bound with at least LATENCY_SHARE of the pooled requests above it (0: too few)."""
    total = delta[-1][1] + delta[-1][2]
    finite = [b for b in delta if math.isfinite(b[0])]
    if total < MIN_BOUND_REQUESTS or not finite:
        return 0.0
    above = [(le, (total - c - s) / total) for le, c, s in finite]
    ok = [le for le, share in above if share >= LATENCY_SHARE]
    return max(ok) if ok else finite[0][0]


def _bucket_delta(new: Totals, old: Totals) -> tuple[tuple[float, float, float], ...] | None:
    """Requests per bucket between two readings (None: no histogram, other buckets, or a reset)."""
    if not new.buckets or len(new.buckets) != len(old.buckets):
        return None
    if any(a[0] != b[0] for a, b in zip(new.buckets, old.buckets, strict=True)):
        return None
    out = tuple((a[0], a[1] - b[1], a[2] - b[2]) for a, b in zip(new.buckets, old.buckets, strict=True))
    return None if any(c < 0 or s < 0 for _, c, s in out) else out


def update(evidence: Evidence | None, totals: Totals, now: datetime, wave: int = 0) -> Evidence:
    """The evidence after reading `totals` at `now`; the same object when nothing new was served."""
    if totals.status != "ok":
        return evidence if evidence is not None else Evidence(wave=wave)
    if evidence is None or evidence.base is None or evidence.wave != wave:
        return Evidence(wave=wave, base=totals, at=iso(now))
    old = evidence.base
    if totals.read_at and old.read_at and totals.read_at <= old.read_at:
        return evidence  # read before the counters the evidence already has (a race, a retried batch)
    dcr, dce = totals.canary_requests - old.canary_requests, totals.canary_errors - old.canary_errors
    dsr, dse = totals.stable_requests - old.stable_requests, totals.stable_errors - old.stable_errors
    if dcr == 0 and dsr == 0 and totals.buckets == old.buckets:
        return evidence  # no scrape since the last reading
    seconds = max(0.0, (now - parse_iso(evidence.at)).total_seconds()) if evidence.at else 0.0
    moved = replace(evidence, base=totals, at=iso(now), interval=seconds or evidence.interval)
    if min(dcr, dce, dsr, dse) < 0 or dce > dcr or dse > dsr:
        return moved  # a counter reset (a restarted pod): start again from the new readings
    if totals.reference != old.reference:
        return moved  # the reference moved to (or from) a fresh baseline: its counters are other series
    share = dcr / (dcr + dsr) if dcr + dsr > 0 else 0.0
    out = replace(
        moved,
        rate=(dcr + dsr) / seconds if seconds > 0 else evidence.rate,
        canary_requests=evidence.canary_requests + dcr,
        canary_errors=evidence.canary_errors + dce,
        stable_requests=evidence.stable_requests + dsr,
        stable_errors=evidence.stable_errors + dse,
        errors=_increment(evidence.errors, dce, dse, share),
    )
    delta = _bucket_delta(totals, old)
    return out if delta is None else _count_slow(out, evidence, delta)


def _count_slow(out: Evidence, evidence: Evidence, delta: tuple[tuple[float, float, float], ...]) -> Evidence:
    """`out` with the slow requests among `delta` (requests per bucket since `evidence`) counted: those above
    the bound chosen from the first histogram read (kept after), when there is one."""
    bound = evidence.bound_ms or _choose_bound(delta)
    if not bound:
        return out
    lcr, lcs, lsr, lss = _slow(delta, bound)
    lshare = lcr / (lcr + lsr) if lcr + lsr > 0 else 0.0
    return replace(
        out,
        bound_ms=bound,
        slow_canary_requests=evidence.slow_canary_requests + lcr,
        slow_canary=evidence.slow_canary + lcs,
        slow_stable_requests=evidence.slow_stable_requests + lsr,
        slow_stable=evidence.slow_stable + lss,
        latency=_increment(evidence.latency, lcs, lss, lshare),
    )


def rate_ucb(bad: float, total: float, alpha: float) -> float:
    """Anytime-valid upper confidence bound of a rate from `bad` of `total` (Robbins' Beta(1, 1) mixture)."""
    if total <= 0:
        return 1.0
    bad = min(max(bad, 0.0), total)
    target = math.log(1.0 / alpha)
    mixture = math.lgamma(bad + 1) + math.lgamma(total - bad + 1) - math.lgamma(total + 2)

    def log_m(p: float) -> float:  # log of the mixture martingale against rate p
        like = (bad * math.log(p) if bad else 0.0) + ((total - bad) * math.log1p(-p) if total > bad else 0.0)
        return mixture - like

    lo, hi = bad / total, 1.0 - 1e-12
    if log_m(hi) < target:
        return 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if log_m(mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def excess_bounds(evidence: Evidence, alpha: float, latency: bool) -> tuple[float, float]:
    """Upper bounds of the canary's excess error rate and excess slow-request rate over stable's.

    Without latency data yet (bound not chosen) the slow-request bound is 1 when the router has a histogram
    (`latency`), else 0 (nothing to bound)."""
    e = evidence
    stable_errors = e.stable_errors / e.stable_requests if e.stable_requests else 0.0
    errors = rate_ucb(e.canary_errors, e.canary_requests, alpha) - stable_errors
    if not latency:
        return max(errors, 0.0), 0.0
    if not e.bound_ms:
        return max(errors, 0.0), 1.0
    stable_slow = e.slow_stable / e.slow_stable_requests if e.slow_stable_requests else 0.0
    slow = rate_ucb(e.slow_canary, e.slow_canary_requests, alpha) - stable_slow
    return max(errors, 0.0), max(slow, 0.0)
