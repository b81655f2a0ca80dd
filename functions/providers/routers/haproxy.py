"""HAProxy router: weights, A/B rules and protection through the runtime API on the admin socket.

Nothing here reloads HAProxy. The config (infra/local/haproxy.cfg.tmpl, written by `install_config`)
wires a fixed shape once; everything graylane changes later is runtime state:

- weights: `set server <backend>/stable|canary weight N` (the one that grows is set first, so there is
  never a moment with both at 0);
- A/B rules: map `rules.map` (key `rules`, plus `salt`), evaluated per request by infra/local/graylane.lua
  because header and cookie *names* are data too; replaced atomically with `prepare/add/commit map`;
- source ranges: ACL file `sources.acl`, matched natively with `src`, replaced with `prepare/add/commit acl`;
- protection: map `limits.map`: `rate` (requests per client address per window) and `breaker`
  (5xx permille of the backend that opens the circuit).
- session affinity (spec.sessionAffinity): keys `affinity` (the cookie's name) and `maxage` of `rules.map`
  while the split is weighted; the config's stick table `<backend>_affinity` pins each client's cookie (HAProxy
  makes one up for a client without) to the server it was first sent to, and graylane clears that table at
  every weight change (`clear table`), so every client is re-rolled at the new weight. Without the clearing a
  pinned client would stay even on a server at weight 0 (HAProxy's drain: persistence outlives the weight).

`get_routes` reads all of that back from the live process, so drift (someone ran `set server ... weight`
or cleared a map by hand) shows up as a different RoutePlan and the machine re-applies the plan.

Limits, by design of HAProxy 2.6: the rate limit is a sliding-window count per client address, so a
RateLimit's `burst` is not expressible (the window admits `average` per `period`); circuit breakers
are expressible only as a 5xx ratio (`ResponseCodeRatio(500, 600, 0, 600) > r`, and
`NetworkErrorRatio() > r` approximated by it): HAProxy keeps no latency distribution, so
`LatencyAtQuantileMS(...)` raises ConfigError. No compare-and-swap: HAProxy has no object version for
weights; the release state's CAS already makes the runner the single writer per app.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any, cast
from urllib.parse import quote, unquote

from functions.core.capabilities import FEATURES, latency_breakers
from functions.core.effects import STABLE_ONLY, Protection, RoutePlan
from functions.core.policy import CircuitBreaker, Match, MatchKind, Policy, RateLimit
from functions.core.routing import Need, Option, Owned, Problem, RouterMetrics, Versions, text_option
from functions.core.values import value
from functions.errors import ConfigError, NotFound, ProviderUnavailable
from functions.providers.routers.base import Cluster, RouteTarget

NAME = "haproxy"
OPTIONS = (
    Option(
        "socket", "text", "the HAProxy admin socket", "the local stack's (graylane serve --providers local)"
    ),
    Option("backend", "text", "the backend whose servers stable and canary graylane weighs", "be_app"),
    Option("frontend", "text", "the frontend that evaluates the A/B rules", "fe_app"),
    Option(
        "mapsDir", "text", "the directory of rules.map, sources.acl and limits.map", "the socket's directory"
    ),
    Option("period", "number", "the config's rate-limit counting window, in seconds", "1"),
)
CAPABILITIES = frozenset(FEATURES) - {
    "mirror"
}  # no request mirroring in HAProxy itself (it needs an SPOE agent)
METRICS = RouterMetrics(
    "haproxy_server_http_responses_total",
    ("proxy", "server"),
    "code",
    "5xx",
    duration_average="haproxy_server_response_time_average_seconds",
)
OWNS = (
    Owned("runtime", "set server <backend>/stable|canary weight", "the servers' weights"),
    Owned(
        "runtime", "set server <backend>/baseline weight|addr", "the fresh baseline's server (spec.baseline)"
    ),
    Owned(
        "runtime", "<mapsDir>/rules.map, sources.acl, limits.map", "the maps the config wires for graylane"
    ),
    Owned(
        "runtime",
        "clear table <backend>_affinity",
        "the clients session affinity pinned (at a weight change)",
    ),
)
PER_OPTIONS = True  # one router per admin socket (its options), not one per cluster


def check(options: Mapping[str, Any], needs: list[Need]) -> list[Problem]:
    return latency_breakers(needs, NAME, "it keeps no latency distribution")


def measured_by(options: Mapping[str, Any]) -> str:
    return NAME


def versions(policy: Policy) -> Versions:
    """HAProxy's series are per proxy (the backend) and server (stable, canary)."""
    backend = text_option(policy.router.options, "backend", f"{policy.namespace}-{policy.name}")
    e = re.escape
    return Versions(
        stable=(("proxy", e(backend)), ("server", "stable")),
        canary=(("proxy", e(backend)), ("server", "canary")),
        names={"stable": "stable", "canary": "canary", "baseline": "baseline"},
        baseline=(("proxy", e(backend)), ("server", "baseline")),
    )


def build(settings: Any, cluster: Cluster, options: Mapping[str, Any] = {}) -> HAProxyRouter:
    """On the admin socket the options name, else the one the deployment supplies (cluster.defaults)."""
    return HAProxyRouter.from_options({**cluster.defaults, **options})


INFRA = Path(__file__).resolve().parents[3] / "infra" / "local"
TEMPLATE = INFRA / "haproxy.cfg.tmpl"
LUA = INFRA / "graylane.lua"
RULES_MAP, SOURCES_ACL, LIMITS_MAP = "rules.map", "sources.acl", "limits.map"
_MATCH_FIELDS = ("kind", "name", "value", "regex", "digits", "percent", "salt", "cidrs")
_CLI_ERROR = re.compile(
    r"^(Unknown command|No such|Require|Missing|Invalid|Unable|'.*' expects|.* not found|"
    r"Permission denied|Can't|Cannot|Out of memory|.*: unknown)",
    re.IGNORECASE | re.MULTILINE,
)


class AdminSocket:
    """The HAProxy CLI over AF_UNIX: one command per connection, read until HAProxy closes it."""

    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def run(self, command: str) -> str:
        if "\n" in command or ";" in command:
            raise ConfigError(f"haproxy command {command!r} must be one line without ';'")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as err:
            raise ProviderUnavailable(f"haproxy admin socket {self.path}: '{command}' failed: {err}") from err
        return b"".join(chunks).decode(errors="replace")

    def check(self, command: str) -> str:
        """Run a command whose answer must not be one of HAProxy's error messages."""
        out = self.run(command)
        if _CLI_ERROR.search(out):
            raise ProviderUnavailable(
                f"haproxy admin socket {self.path}: '{command}' answered: {out.strip()}"
            )
        return out


def encode_match(m: Match) -> str:
    """One rule as graylane.lua reads it: percent-encoded fields joined by '|' (no spaces, ',' or '\\')."""
    fields = (
        m.kind,
        m.name,
        m.value,
        m.regex,
        ",".join(map(str, m.digits)),
        str(m.percent),
        m.salt,
        ",".join(m.cidrs),
    )
    return "|".join(quote(f, safe="") for f in fields)


def decode_match(text: str) -> Match:
    kind, name, value, regex, digits, percent, salt, cidrs = (unquote(f) for f in text.split("|"))
    return Match(
        kind=cast("MatchKind", kind),
        name=name,
        value=value,
        regex=regex,
        digits=tuple(int(d) for d in digits.split(",") if d),
        percent=int(percent),
        salt=salt,
        cidrs=tuple(c for c in cidrs.split(",") if c),
    )


def breaker_permille(breaker: CircuitBreaker) -> int:
    """The 5xx permille that opens the circuit, from a Traefik-style expression HAProxy can express."""
    expr = breaker.expression.replace(" ", "")
    found = re.fullmatch(
        r"(?:ResponseCodeRatio\(500,600,0,600\)|NetworkErrorRatio\(\))>(0?\.\d+|1(?:\.0*)?)", expr
    )
    if not found:
        raise ConfigError(
            f"circuit breaker {breaker.expression!r}: haproxy can express only "
            "'ResponseCodeRatio(500, 600, 0, 600) > R' or 'NetworkErrorRatio() > R' (no latency data)"
        )
    return round(float(found.group(1)) * 1000)


@value
class Layout:
    """Where one app's runtime state lives inside a running HAProxy."""

    backend: str
    frontend: str
    maps_dir: Path

    def file(self, name: str) -> str:
        return str(self.maps_dir / name)


class HAProxyRouter:
    """Router over one HAProxy admin socket; RouteTarget.options may override backend/frontend/mapsDir."""

    def __init__(
        self,
        socket_path: str | Path,
        backend: str = "be_app",
        frontend: str = "fe_app",
        maps_dir: str | Path | None = None,
        period: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.cli = AdminSocket(socket_path, timeout)
        self.backend, self.frontend, self.period = backend, frontend, period
        self.maps_dir = Path(maps_dir) if maps_dir else Path(socket_path).resolve().parent

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> HAProxyRouter:
        """From a policy's `router:` options: socket (required), backend, frontend, mapsDir, period."""
        if not options.get("socket"):
            raise ConfigError("router.socket: the haproxy provider needs the admin socket path")
        return cls(
            options["socket"],
            options.get("backend", "be_app"),
            options.get("frontend", "fe_app"),
            options.get("mapsDir"),
            float(options.get("period", 1.0)),
        )

    # -- Router protocol ---------------------------------------------------------------------------

    def reconcile(self, target: RouteTarget) -> None:
        """The config creates everything; check that it is there (servers, maps) and change nothing."""
        lay = self._layout(target)
        for server in ("stable", "canary"):
            self._weight(lay, server, target)
        loaded = self.cli.check("show map") + self.cli.check("show acl")
        for name in (RULES_MAP, LIMITS_MAP, SOURCES_ACL):
            if lay.file(name) not in loaded:
                raise NotFound(
                    f"haproxy route of {target.namespace}/{target.app}: reconcile found no "
                    f"{lay.file(name)} loaded; render the config with install_config()"
                )
        if target.affinity is not None and f"table: {lay.backend}_affinity," not in self.cli.check(
            "show table"
        ):
            raise NotFound(
                f"haproxy route of {target.namespace}/{target.app}: session affinity needs stick table "
                f"{lay.backend}_affinity, which this HAProxy has not; render the config with "
                "install_config()"
            )

    def set_routes(self, target: RouteTarget, plan: RoutePlan) -> None:
        if (
            plan.mirror
        ):  # validation refuses a mirror stage on haproxy; a plan that has one anyway is never half-applied
            raise ConfigError(
                f"haproxy router for {target.namespace}/{target.app}: traffic mirroring is not supported"
            )
        lay = self._layout(target)
        rules = ",".join(encode_match(m) for m in plan.match)
        cidrs = sorted({c for m in plan.match if m.kind == "source-ip" for c in m.cidrs})
        for cidr in cidrs:
            _check_cidr(cidr, target)
        try:
            live = (self._weight(lay, "stable", target), self._weight(lay, "canary", target))
            self._replace(
                "map",
                lay.file(RULES_MAP),
                [f"rules {rules}"] * bool(rules)
                + [f"salt {quote(plan.salt, safe='')}"] * bool(plan.salt)
                + affinity_entries(target, plan),
            )
            self._replace("acl", lay.file(SOURCES_ACL), cidrs)
            # Grow first, then shrink: never both servers at weight 0 in between (that would be a 503).
            order = [("canary", plan.canary), ("stable", plan.stable)]
            if plan.canary < self._weight(lay, "canary", target):
                order.reverse()
            if target.baseline:  # a fresh baseline's server too (the config's third): growing ones first
                order = sorted(
                    [*order, ("baseline", plan.baseline)],
                    key=lambda sw: sw[1] - self._weight(lay, sw[0], target),
                    reverse=True,
                )
            elif plan.baseline:
                raise ConfigError(
                    f"haproxy route of {target.namespace}/{target.app}: a plan with a baseline needs "
                    "the policy's spec.baseline"
                )
            for server, weight in order:
                self.cli.check(f"set server {lay.backend}/{server} weight {weight}")
            if target.affinity is not None and live != (plan.stable, plan.canary):
                self.cli.check(
                    f"clear table {lay.backend}_affinity"
                )  # re-roll every client at the new weight
        except ProviderUnavailable as err:
            raise ProviderUnavailable(
                f"haproxy route of {target.namespace}/{target.app}: set routes "
                f"{plan.stable}/{plan.canary} failed: {err}"
            ) from err

    def get_routes(self, target: RouteTarget) -> RoutePlan:
        lay = self._layout(target)
        stable, canary = self._weight(lay, "stable", target), self._weight(lay, "canary", target)
        if stable + canary == 0:
            raise ProviderUnavailable(
                f"haproxy route of {target.namespace}/{target.app}: get routes found "
                f"both servers of {lay.backend} at weight 0"
            )
        live = self._show(f"show map {lay.file(RULES_MAP)}")
        match = tuple(decode_match(r) for r in live.get("rules", "").split(",") if r)
        sources = set(self._show(f"show acl {lay.file(SOURCES_ACL)}"))
        if sources != {c for m in match if m.kind == "source-ip" for c in m.cidrs}:
            # The ACL drifted from the rules: report what really matches so the plan is re-applied.
            match = tuple(m for m in match if m.kind != "source-ip")
            match += (Match(kind="source-ip", cidrs=tuple(sorted(sources))),) if sources else ()
        baseline = self._weight(lay, "baseline", target) if target.baseline else 0
        total = stable + canary + baseline
        weight = round(100 * canary / total)
        fresh = min(round(100 * baseline / total), 100 - weight)
        return RoutePlan(
            stable=100 - weight - fresh,
            canary=weight,
            baseline=fresh,
            match=match,
            salt=unquote(live.get("salt", "")),
        )

    def set_protection(self, target: RouteTarget, protection: Protection) -> None:
        lay = self._layout(target)
        entries = []
        if protection.rate_limit is not None:
            entries.append(f"rate {self.rate_threshold(protection.rate_limit)}")
        if protection.circuit_breaker is not None:
            entries.append(f"breaker {breaker_permille(protection.circuit_breaker)}")
        try:
            self._replace("map", lay.file(LIMITS_MAP), entries)
        except ProviderUnavailable as err:
            raise ProviderUnavailable(
                f"haproxy route of {target.namespace}/{target.app}: set protection failed: {err}"
            ) from err

    def get_protection(self, target: RouteTarget) -> dict[str, int]:
        """The live thresholds: {'rate': requests per window per client, 'breaker': 5xx permille}."""
        return {k: int(v) for k, v in self._show(f"show map {self._layout(target).file(LIMITS_MAP)}").items()}

    def survey(self, target: RouteTarget) -> tuple[str, ...]:
        """Nothing of the user's to meet: the limits map graylane writes is its own (the config's rules read it)."""
        return ()

    def finalize(self, target: RouteTarget) -> tuple[str, ...]:
        """Weights back on stable and the rules map emptied: the config's objects are not graylane's to remove."""
        self.set_routes(target, STABLE_ONLY)
        return ()

    # -- helpers -----------------------------------------------------------------------------------

    def rate_threshold(self, limit: RateLimit) -> int:
        """RateLimit.average per its period, scaled to the config's fixed counting window."""
        return max(1, math.ceil(limit.average * self.period / limit.period))

    def pid(self) -> int:
        """The HAProxy process id (tests use it to prove nothing reloaded)."""
        found = re.search(r"^Pid: (\d+)$", self.cli.check("show info"), re.MULTILINE)
        if not found:
            raise ProviderUnavailable(f"haproxy admin socket {self.cli.path}: 'show info' has no Pid")
        return int(found.group(1))

    def _layout(self, target: RouteTarget) -> Layout:
        opts = target.options
        lay = Layout(
            opts.get("backend", self.backend),
            opts.get("frontend", self.frontend),
            Path(opts.get("mapsDir", self.maps_dir)),
        )
        if re.search(r"\s", f"{lay.backend}{lay.frontend}{lay.maps_dir}"):
            raise ConfigError(
                f"haproxy route of {target.namespace}/{target.app}: backend, frontend and "
                f"mapsDir must not contain spaces, got {lay}"
            )
        return lay

    def _weight(self, lay: Layout, server: str, target: RouteTarget) -> int:
        out = self.cli.run(f"get weight {lay.backend}/{server}")
        found = re.match(r"(\d+) \(initial \d+\)", out)
        if not found:
            raise NotFound(
                f"haproxy route of {target.namespace}/{target.app}: reading the weight of "
                f"{lay.backend}/{server} answered {out.strip()!r}"
            )
        return int(found.group(1))

    def _replace(self, kind: str, file: str, entries: list[str]) -> None:
        """Swap a map's or ACL's whole content in one commit, so requests never see half of it."""
        out = self.cli.check(f"prepare {kind} {file}")
        found = re.search(r"New version created: (\d+)", out)
        if not found:
            raise ProviderUnavailable(
                f"haproxy admin socket {self.cli.path}: 'prepare {kind} {file}' answered {out.strip()!r}"
            )
        version = found.group(1)
        for entry in entries:
            self.cli.check(f"add {kind} @{version} {file} {entry}")
        self.cli.check(f"commit {kind} @{version} {file}")

    def _show(self, command: str) -> dict[str, str]:
        """`show map|acl FILE` as {key: value} (an ACL's patterns map to '')."""
        out: dict[str, str] = {}
        for line in self.cli.check(command).splitlines():
            parts = line.split(" ", 2)
            if len(parts) >= 2 and parts[0].startswith("0x"):
                out[parts[1]] = parts[2] if len(parts) == 3 else ""
        return out


def affinity_entries(target: RouteTarget, plan: RoutePlan) -> list[str]:
    """rules.map entries naming the affinity cookie while the split is weighted (the config pins by it)."""
    a = target.affinity
    if a is None or not 0 < plan.canary < 100:
        return []
    return [f"affinity {a.cookie}"] + ([f"maxage {a.max_age}"] if a.max_age is not None else [])


def _check_cidr(cidr: str, target: RouteTarget) -> None:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as err:
        raise ConfigError(
            f"haproxy route of {target.namespace}/{target.app}: source-ip {cidr!r} is not an address or CIDR"
        ) from err


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(
    *,
    socket_path: str | Path,
    maps_dir: str | Path,
    bind: str,
    stable: str,
    canary: str,
    baseline: str = "127.0.0.1:9",
    frontend: str = "fe_app",
    backend: str = "be_app",
    period: float = 1.0,
    metrics_bind: str | None = None,
    pidfile: str | Path | None = None,
    lua: str | Path = LUA,
    breaker_min: int = 20,
    probe_percent: int = 10,
    template: str | Path = TEMPLATE,
    affinity_expire: str = "1d",
) -> str:
    """The HAProxy config for one app: `bind`/`stable`/`canary` are host:port; paths must be absolute."""
    metrics = ""
    if metrics_bind:
        metrics = (
            f"\nfrontend fe_metrics\n    bind {metrics_bind}\n    no log\n"
            "    http-request use-service prometheus-exporter if { path /metrics }\n"
        )
    maps = Path(maps_dir).resolve()
    return Template(Path(template).read_text()).substitute(
        socket=Path(socket_path).resolve(),
        maps_dir=maps,
        lua=Path(lua).resolve(),
        bind=bind,
        stable=stable,
        canary=canary,
        baseline=baseline,
        frontend=frontend,
        backend=backend,
        period=_duration(period),
        metrics=metrics,
        pidfile=Path(pidfile).resolve() if pidfile else maps / "haproxy.pid",
        breaker_min=breaker_min,
        probe=probe_percent,
        affinity_expire=affinity_expire,
    )


def install_config(directory: str | Path, *, bind: str, stable: str, canary: str, **options: Any) -> Path:
    """Write haproxy.cfg plus empty rules.map, sources.acl and limits.map into `directory`.

    The admin socket is `directory/admin.sock`; pass the returned path to `haproxy -db -f`.
    """
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    for name in (RULES_MAP, SOURCES_ACL, LIMITS_MAP):
        (d / name).touch()
    options.setdefault("socket_path", d / "admin.sock")
    cfg = d / "haproxy.cfg"
    cfg.write_text(render_config(maps_dir=d, bind=bind, stable=stable, canary=canary, **options))
    return cfg
