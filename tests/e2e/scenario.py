"""Seed 000 end to end on a World (tests/e2e/world.py), recording what it measured in a `Run`.

    push v1.0.0 (skopeo ─► docker-registry ─► /hooks/distribution)            ─► stable
    push v1.1.0 ─► preview (dev.coding) + migration Job ─► gate ab-test (the CronJob's tick, as rendered)
      ─► approve ─► A/B by header location: shenzhen (real requests) ─► gate canary-weight ─► approve weight=50
      ─► the split measured ─► gate promote ─► approve ─► promote ─► protect (rateLimit 500/1000, circuitBreaker)
    push v1.2.0 (35 % 5xx) ─► gate ab-test ─► approve ─► A/B ─► analysis on Traefik's metrics ─► rolled back
    error burst on v1.1.0 ─► Prometheus rule ─► Alertmanager ─► /hooks/alertmanager ─► rateLimit tightened
      (429s measured with hey) ─► errors stop ─► alert resolved ─► hold-down ─► relaxed (429s measured)

Every gate is opened by the policy's approvers with the CLI over the approval API (`graylane approve
--server --token`). Steps that the rest needs raise on failure (with the logs); what a step only observes is
recorded in `Run.checks` and asserted by the tests of test_seed_000.py one by one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from functions.core.state import Phase
from tests.e2e import deployed, seed_objects
from tests.e2e.world import World, wait_for

V0, V1, V2 = "v1.0.0", "v1.1.0", "v1.2.0"
BAD_ERROR_RATE = 0.35
SHENZHEN = {"location": "shenzhen"}
# Every version's pods take SERVICE_TIME to answer, like the seed's flask app behind its database: a p95 in
# the middle of one of Traefik's latency buckets (BUCKETS of tests/traefik/proxy.py: 50-75 ms), so the latency
# comparison judges the versions and not the noise of a 2-core machine at a bucket edge (a 5 ms backend put
# stable at 4.9 ms and a good canary at 6.7 ms: "worse by 0.37", a good v1.1.0 rolled back).
SERVICE_TIME = 0.055
# hey: each worker sends one request at a time (SERVICE_TIME each), so 40 workers at 11/s reach about 440/s
HEY_RPS, HEY_SECONDS, HEY_WORKERS = 440, 8, 40
PARALLEL = 10  # clients answers() spreads its requests over


@dataclass
class Run:
    """What the scenario saw: measurements for the report, observations for the tests."""

    world: World
    measured: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # monotonic times of the steps
    lines: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.lines.append(line)
        print(f"e2e: {line}", flush=True)

    def mark(self, name: str) -> float:
        self.marks[name] = time.monotonic()
        return self.marks[name]


# -- helpers ---------------------------------------------------------------------------------------------------


def release(w: World) -> Any:
    rel = w.state().release
    assert rel is not None, "no release in the state"
    return rel


def wait_gate(w: World, gate: str, timeout: float = 120.0, version: str = "") -> Any:
    """Wait for the release (of `version`, if given) to wait at `gate`; fail if it ends first. With `version`, the
    previous release, already ended, is not the one waited for: the registry's notification of the push may
    not have been handled yet."""

    def at_gate() -> Any:
        rel = w.state().release
        if rel is not None and version and rel.target.version != version:
            return None
        if rel is not None and not rel.active:
            raise AssertionError(
                f"release {rel.id} ended ({rel.phase.value}: {rel.reason}) before gate {gate}"
            )
        return rel if rel is not None and rel.phase == Phase.WAITING and rel.gate == gate else None

    return wait_for(f"release waiting at gate {gate}", at_gate, timeout=timeout, every=0.3, alive=w.alive)


def wait_phase(w: World, phases: set[Phase], what: str, timeout: float = 120.0) -> Any:
    return wait_for(
        what,
        lambda: (lambda r: r if r is not None and r.phase in phases else None)(w.state().release),
        timeout=timeout,
        every=0.2,
        alive=w.alive,
    )


def answers(
    w: World, n: int, headers: dict[str, str] | None = None, host: str = seed_objects.HOST
) -> Counter[str]:
    """Who answered n requests (exactly n: spread over up to PARALLEL keep-alive clients)."""
    from concurrent.futures import ThreadPoolExecutor

    def part(count: int) -> Counter[str]:
        client = w.client(host)
        try:
            return client.split(count, headers=headers)
        finally:
            client.close()

    k = max(1, min(PARALLEL, n // 10))
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    total: Counter[str] = Counter()
    with ThreadPoolExecutor(k) as pool:
        for seen in pool.map(part, counts):
            total.update(seen)
    return total


def steady(
    w: World,
    expected: dict[str, int],
    n: int = 20,
    headers: dict[str, str] | None = None,
    host: str = seed_objects.HOST,
    timeout: float = 60.0,
) -> None:
    """Until n requests in a row are answered exactly as `expected` ({version: count})."""
    last: list[Counter[str]] = []

    def check() -> bool:
        seen = answers(w, n, headers, host)
        last[:] = [seen]
        return dict(seen) == expected

    try:
        wait_for(
            f"{host} {headers or ''} answered {expected}", check, timeout=timeout, every=0.3, alive=w.alive
        )
    except AssertionError as err:
        raise AssertionError(f"{err}; last answers {last}") from None


def user_fields(route: dict[str, Any]) -> dict[str, Any]:
    """What the user wrote into k8s-flask-pro that is not graylane's: labels, annotations, the route's priority
    and Middlewares, and per backend namespace and passHostHeader."""
    meta = route["metadata"]
    mine = next(
        (r for r in route["spec"].get("routes") or [] if r.get("match") == f"Host(`{seed_objects.HOST}`)"), {}
    )
    return {
        "label": (meta.get("labels") or {}).get(seed_objects.USER_LABEL[0]),
        "annotation": (meta.get("annotations") or {}).get(seed_objects.USER_ANNOTATION[0]),
        "priority": mine.get("priority"),
        "middlewares": [m.get("name") for m in mine.get("middlewares") or []],
        "backends": sorted(
            (s.get("name"), s.get("namespace"), s.get("passHostHeader")) for s in mine.get("services") or []
        ),
    }


def user_header_seen(w: World) -> bool:
    """Does a plain answer of pro.coding carry the header the user's own Middleware adds?"""
    import http.client

    assert w.traefik is not None
    conn = http.client.HTTPConnection("127.0.0.1", w.traefik.port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": seed_objects.HOST})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader(seed_objects.USER_HEADER[0]) == seed_objects.USER_HEADER[1]
    finally:
        conn.close()


def hey(
    w: World, rps: int = HEY_RPS, seconds: int = HEY_SECONDS, workers: int = HEY_WORKERS
) -> dict[str, Any]:
    """`hey` against pro.coding at about `rps` for `seconds`, from 127.0.0.1: the status counts and the rate."""
    assert w.traefik is not None
    exe = shutil.which("hey")
    assert exe, "hey is not installed: run `make deps`"
    argv = [
        exe,
        "-z",
        f"{seconds}s",
        "-c",
        str(workers),
        "-q",
        str(rps // workers),
        "-t",
        "5",
        "-host",
        seed_objects.HOST,
        f"http://127.0.0.1:{w.traefik.port}/",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    assert done.returncode == 0, f"hey: {done.stderr[-500:]}"
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", done.stdout)}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    total = sum(codes.values())
    return {
        "codes": codes,
        "total": total,
        "429": codes.get(429, 0),
        "rps": float(rate[1]) if rate else 0.0,
        "seconds": seconds,
    }


def middleware_specs(w: World) -> dict[str, Any]:
    """name -> spec of every Middleware the pro route names (read back)."""
    return w.middlewares_of(w.route(seed_objects.PRO_ROUTE))


def rate_limit(w: World) -> dict[str, Any] | None:
    found = [s["rateLimit"] for s in middleware_specs(w).values() if "rateLimit" in s]
    return found[0] if len(found) == 1 else ({"several": found} if found else None)


def breaker(w: World) -> str | None:
    """The circuitBreaker expression on the pro route (None if no Middleware of it has one)."""
    found = [
        s["circuitBreaker"].get("expression") for s in middleware_specs(w).values() if "circuitBreaker" in s
    ]
    return found[0] if len(found) == 1 else (repr(found) if found else None)


def unavailable(w: World) -> tuple[float, float]:
    """Traefik's 503 counters (entry point web, every service): an entry-point 503 no service counted came from
    a middleware of the route, and the only one that answers 503 there is the protect stage's circuit breaker
    (the rate limit answers 429)."""
    assert w.monitoring is not None
    entry = w.monitoring.value('sum(traefik_entrypoint_requests_total{entrypoint="web",code="503"})') or 0.0
    services = w.monitoring.value('sum(traefik_service_requests_total{code="503"})') or 0.0
    return entry, services


def run_cronjob_tick(w: World, name: str) -> subprocess.CompletedProcess[str]:
    """The CronJob's Job, created from the stored CronJob (`kubectl create job --from=cronjob/graylane-tick`);
    its pod's container, as the apiserver stored it, run here with its environment resolved from the
    cluster like a kubelet does. Only GRAYLANE_TICK_URL's authority changes (no cluster DNS here)."""
    assert w.cluster is not None and w.graylane is not None
    deployed.kubectl(
        w.cluster, "-n", deployed.NAMESPACE, "create", "job", name, "--from=cronjob/graylane-tick"
    )

    def pod() -> Any:
        out = deployed.kubectl(
            w.cluster, "-n", deployed.NAMESPACE, "get", "pods", "-l", f"job-name={name}", "-o", "json"
        ).stdout
        items = json.loads(out)["items"]
        return items[0] if items else None

    found = wait_for(f"pod of Job {name}", pod, timeout=60, every=0.3)
    spec = found["spec"]
    assert spec.get("automountServiceAccountToken") is False  # the tick holds no API credentials
    container = spec["containers"][0]
    env = deployed.container_env(w.cluster, container)
    assert set(env) == {"GRAYLANE_TICK_URL", "GRAYLANE_INTERNAL_TOKEN"}, sorted(env)  # never the edge key
    env["GRAYLANE_TICK_URL"] = deployed.rewrite_authority(
        env["GRAYLANE_TICK_URL"], "127.0.0.1", w.graylane.internal_port
    )
    argv = list(container["command"]) + list(container.get("args") or [])
    assert argv[:2] == ["python", "-c"], argv
    argv[0] = sys.executable
    return subprocess.run(
        argv,
        env={**deployed.image_env(), **env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=90,
    )


def failed_hits(hits: list[Any]) -> Counter[str]:
    """Answers no backend gave (Traefik's own 404/502/503, transport errors): users saw an error page."""
    return Counter(f"status {h.status}" for h in hits if not h.version)


# -- the scenario ----------------------------------------------------------------------------------------------


def run(w: World) -> Run:
    r = Run(w)
    assert w.pods is not None
    for version in (seed_objects.OLD, V0, V1, V2):
        w.pods.set(version, delay=SERVICE_TIME)
    r.note(f"graylane serve as {w.account}: {' '.join(w.graylane.argv[1:]) if w.graylane else ''}")
    r.note(f"environment: {deployed.environment_summary(w.env)}; substituted: {w.overrides}")
    r.note("policy as run: infra/examples/traefik-pipeline.yaml with " + "; ".join(w.policy_changes))
    r.checks["before graylane"] = dict(answers(w, 20))
    r.checks["user fields before"] = user_fields(w.route(seed_objects.PRO_ROUTE))
    r.checks["user header before"] = user_header_seen(w)
    r.checks["ingressroutes before"] = {
        ns: w.names(f"ingressroutes.{w.group}", ns) for ns in (seed_objects.PRO, seed_objects.DEV)
    }
    w.start_traffic()
    step_first_version(r)
    step_release(r)
    step_bad_release(r)
    step_protection(r)
    step_account(r)
    return r


def step_first_version(r: Run) -> None:
    w = r.world
    pushed = w.push(V0)
    wait_for(f"{V0} stable", lambda: w.state().stable.version == V0, timeout=90, alive=w.alive)
    steady(w, {V0: 20})
    r.measured["v1.0.0 push to serving (s)"] = round(time.monotonic() - pushed, 1)
    w.in_force()
    r.note(
        f"{V0} pushed with skopeo -> registry notification -> stable, serving after "
        f"{r.measured['v1.0.0 push to serving (s)']} s"
    )


def step_release(r: Run) -> None:
    w = r.world
    r.mark("release")
    pushed = w.push(V1)
    rel = wait_gate(w, "ab-test", version=V1)
    r.measured["v1.1.0 push to gate ab-test (s)"] = round(time.monotonic() - pushed, 1)
    steady(w, {V1: 10}, n=10, host=seed_objects.DEV_HOST)  # the preview, through the seed's k8s-flask-dev
    job = w.read("job", f"migrate-db-{rel.id}")
    r.checks["migration job"] = (job or {}).get("status", {}).get("succeeded")
    r.note(
        f"{V1}: preview on dev.coding answers {V1}; migration Job migrate-db-{rel.id} succeeded="
        f"{r.checks['migration job']}; waiting at gate ab-test"
    )

    # the CronJob's tick, as rendered and stored, reaches the internal listener and is handled
    refused = _tick_with_wrong_token(r)
    tick = run_cronjob_tick(w, "graylane-tick-e2e")
    r.checks["cronjob tick"] = (tick.returncode, tick.stdout.strip()[:400], tick.stderr.strip()[-400:])
    r.checks["cronjob tick refused"] = refused
    r.note(
        f"CronJob graylane-tick (kubectl create job --from, pod env from the cluster): exit {tick.returncode}: "
        f"{tick.stdout.strip()[:160]}"
    )

    w.cli("approve", w.app, "--gate", "ab-test", user="ops-lead")
    wait_for("A/B stage", lambda: release(w).match, timeout=60, alive=w.alive)
    w.in_force()
    steady(w, {V1: 20}, headers=SHENZHEN, timeout=90)
    steady(w, {V0: 20})
    shenzhen, others = answers(w, 300, SHENZHEN), answers(w, 300)
    r.checks["ab shenzhen"], r.checks["ab others"] = dict(shenzhen), dict(others)
    r.checks["user fields during ab"] = user_fields(w.route(seed_objects.PRO_ROUTE))
    r.checks["user header during ab"] = user_header_seen(w)
    r.checks["ingressroutes during ab"] = {
        ns: w.names(f"ingressroutes.{w.group}", ns) for ns in (seed_objects.PRO, seed_objects.DEV)
    }
    r.note(
        f"A/B by header location: shenzhen: 300 shenzhen requests -> {dict(shenzhen)}, 300 others -> "
        f"{dict(others)}"
    )

    wait_gate(w, "canary-weight", timeout=120)
    w.cli("approve", w.app, "--gate", "canary-weight", "--param", "weight=50", user="product-owner")
    wait_for("canary at 50", lambda: release(w).weight == 50, timeout=60, alive=w.alive)
    w.in_force()
    wait_for(
        "the canary in Traefik's weighted service",
        lambda: len(answers(w, 10)) == 2,
        timeout=60,
        alive=w.alive,
    )
    split = answers(w, 1000)
    r.checks["split"] = dict(split)
    r.checks["user fields during canary"] = user_fields(w.route(seed_objects.PRO_ROUTE))
    r.note(f"canary weight 50 (gate canary-weight, product-owner): 1000 requests -> {dict(split)}")

    wait_gate(w, "promote")
    w.cli("approve", w.app, "--gate", "promote", user="ops-lead")
    done = wait_phase(
        w, {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.ABORTED}, f"{V1} released", timeout=180
    )
    assert done.phase == Phase.SUCCEEDED, f"{V1} ended {done.phase.value}: {done.reason}"
    assert w.state().stable.version == V1
    steady(w, {V1: 20})
    r.mark("released")
    r.measured["v1.1.0 push to succeeded (s)"] = round(time.monotonic() - pushed, 1)
    r.checks["shenzhen after promotion"] = dict(answers(w, 50, SHENZHEN))
    r.checks["failed during release"] = dict(failed_hits(w.hits(r.marks["release"], r.marks["released"])))
    w.in_force()
    r.checks["protection"] = middleware_specs(w)
    r.checks["user fields after"] = user_fields(w.route(seed_objects.PRO_ROUTE))
    r.checks["user header after"] = user_header_seen(w)
    r.checks["ingressroutes after"] = {
        ns: w.names(f"ingressroutes.{w.group}", ns) for ns in (seed_objects.PRO, seed_objects.DEV)
    }
    r.checks["traefikservices after"] = w.names(f"traefikservices.{w.group}")
    r.note(
        f"promoted: all on {V1}; protection Middlewares on k8s-flask-pro: {r.checks['protection']}; "
        f"requests no backend answered during the release: {r.checks['failed during release'] or 0}"
    )


def _tick_with_wrong_token(r: Run) -> int:
    """The rendered snippet with a wrong token fails the Job (exit != 0, 401)."""
    import urllib.error
    import urllib.request

    w = r.world
    assert w.graylane is not None
    request = urllib.request.Request(
        f"{w.graylane.internal_url}/tick",
        data=b"{}",
        method="POST",
        headers={"authorization": "Bearer not-the-token", "content-type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as err:
        return err.code
    return 200


def step_bad_release(r: Run) -> None:
    w = r.world
    assert w.pods is not None
    w.pods.set(V2, error_rate=BAD_ERROR_RATE)
    pushed = w.push(V2)
    wait_gate(w, "ab-test", version=V2)
    started = r.mark("bad release")
    unavailable_before = unavailable(w)
    w.cli("approve", w.app, "--gate", "ab-test", user="ops-lead")
    done = wait_phase(
        w, {Phase.ROLLED_BACK, Phase.FAILED, Phase.SUCCEEDED, Phase.ABORTED}, f"{V2} judged", timeout=240
    )
    detected = time.monotonic()
    assert done.phase == Phase.ROLLED_BACK, f"{V2} ended {done.phase.value}: {done.reason}"
    steady(w, {V1: 20}, headers=SHENZHEN, timeout=60)
    steady(w, {V1: 20})
    back = time.monotonic()
    hits = w.hits(started, back)
    bad = [h for h in hits if h.version == V2]
    first_bad = min((h.at for h in bad if h.status == 500), default=None)
    last_bad = max((h.at for h in bad), default=None)
    r.checks["bad release"] = {
        "phase": done.phase.value,
        "reason": done.reason,
        "stable": w.state().stable.version,
        "verdicts": [(v.verdict, v.reason[:200]) for v in done.verdicts],
    }
    r.measured["v1.2.0 first 5xx to rolled back (s)"] = round(detected - first_bad, 1) if first_bad else None
    r.measured["v1.2.0 last answer after first 5xx (s)"] = (
        round(last_bad - first_bad, 1) if first_bad and last_bad else None
    )
    r.measured["v1.2.0 requests answered / failed (5xx)"] = (len(bad), sum(h.status == 500 for h in bad))
    r.measured["v1.2.0 push to rolled back (s)"] = round(detected - pushed, 1)
    r.checks["failed during bad release"] = dict(failed_hits(hits))
    time.sleep(2.5)  # Prometheus scrapes Traefik every second: the counters now include every request above
    r.checks["503 during bad release (entry point, services)"] = tuple(
        after - before for after, before in zip(unavailable(w), unavailable_before, strict=True)
    )
    r.measured["v1.2.0 503s seen / counted at entry point, services"] = (
        r.checks["failed during bad release"].get("status 503", 0),
        *r.checks["503 during bad release (entry point, services)"],
    )
    r.note(
        f"{V2} ({BAD_ERROR_RATE:.0%} 5xx): {done.reason[:200]}; rolled back "
        f"{r.measured['v1.2.0 first 5xx to rolled back (s)']} s after its first 5xx; its answers "
        f"{r.measured['v1.2.0 requests answered / failed (5xx)']} (answered, 5xx)"
    )


def step_protection(r: Run) -> None:
    w = r.world
    assert w.pods is not None and w.monitoring is not None
    base = rate_limit(w)
    r.checks["rate limit base"] = base
    r.measured["429 at base 500/1000"] = hey(w)
    r.note(f"hey {HEY_RPS}/s for {HEY_SECONDS} s at rateLimit {base}: {r.measured['429 at base 500/1000']}")

    burst = r.mark("burst")
    w.pods.set(V1, error_rate=0.6)
    try:
        wait_for(
            "alert FlaskHighErrorRate firing in Alertmanager",
            w.monitoring.firing,
            timeout=90,
            every=0.3,
            alive=w.alive,
        )
        fired = time.monotonic()
        tightened = wait_for(
            "rateLimit tightened",
            lambda: (lambda rl: rl if rl and rl != base else None)(rate_limit(w)),
            timeout=60,
            every=0.3,
            alive=w.alive,
        )
        w.in_force()
        applied = time.monotonic()
        r.checks["rate limit tightened"] = tightened
        r.checks["breaker tightened"] = breaker(w)
        r.measured["error burst to alert firing (s)"] = round(fired - burst, 1)
        r.measured["alert firing to rateLimit in force (s)"] = round(applied - fired, 1)
        r.measured["429 tightened"] = hey(w)
    finally:
        w.pods.set(V1, error_rate=0.0)
    calm = time.monotonic()
    r.note(
        f"error burst: alert fired {r.measured['error burst to alert firing (s)']} s later, rateLimit "
        f"{tightened} in force {r.measured['alert firing to rateLimit in force (s)']} s after; hey: "
        f"{r.measured['429 tightened']}"
    )
    wait_for(
        "alert resolved in Alertmanager",
        lambda: not w.monitoring.firing(),
        timeout=120,
        every=0.5,
        alive=w.alive,
    )
    resolved = time.monotonic()
    relaxed = wait_for(
        "rateLimit relaxed",
        lambda: (lambda rl: rl if rl == base else None)(rate_limit(w)),
        timeout=120,
        every=0.5,
        alive=w.alive,
    )
    w.in_force()
    r.checks["rate limit relaxed"] = relaxed
    r.checks["breaker relaxed"] = breaker(w)
    r.measured["errors stopped to alert resolved (s)"] = round(resolved - calm, 1)
    r.measured["alert resolved to relaxed (s)"] = round(time.monotonic() - resolved, 1)
    r.measured["429 relaxed"] = hey(w)
    r.note(
        f"resolved {r.measured['errors stopped to alert resolved (s)']} s after the errors stopped, relaxed to "
        f"{relaxed} {r.measured['alert resolved to relaxed (s)']} s later (hold-down 10 s); hey: "
        f"{r.measured['429 relaxed']}"
    )
    r.checks["alerts in state"] = [a.fingerprint for a in w.state().alerts]


def step_account(r: Run) -> None:
    w = r.world
    assert w.cluster is not None
    calls = deployed.account_calls(w.cluster)
    r.checks["account calls"] = calls
    refused = sorted({(c.verb, c.group, c.resource, c.code) for c in calls if c.code in (401, 403)})
    used = sorted({(c.group, c.resource, c.verb) for c in calls})
    r.note(f"graylane's account made {len(calls)} API calls, {len(refused)} refused; kinds: {used}")
