"""Istio's own validator (`istioctl validate`, tests/k8s/istio_validate.py) accepts what Istio accepts and
refuses what istiod's webhook refuses, and the Istio router's rendering passes it for every kind of plan.

The contract tests (tests/contract/test_router_istio.py) pass every object graylane writes through the
same helper after reading it back from the apiserver; this file shows the helper can fail.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from functions.core.effects import STABLE_ONLY, RoutePlan
from functions.core.policy import Match
from functions.errors import ConfigError
from functions.providers.routers import istio
from functions.providers.routers.base import RouteTarget
from tests.k8s.istio_validate import assert_istio_valid, istio_validate, istioctl

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]

# Seed 003 (CODING CD + TKE Mesh): the VirtualService template with the gate's canary ratio of 50 filled
# in, and Bookinfo's destination-rule-v1-v2 for reviews.
SEED_VS: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50},
                ]
            }
        ],
    },
}
SEED_DR: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {
        "host": "reviews",
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    },
}


def test_istioctl_is_the_pinned_build_found_where_build_sh_puts_it() -> None:
    recipe = (ROOT / "tests/k8s/tools/istioctl/recipe.sh").read_text()
    pinned = re.search(r"^ISTIO_VERSION=(\S+)$", recipe, re.M)
    assert pinned is not None
    out = subprocess.run(
        [str(istioctl()), "version", "--remote=false"], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == f"client version: {pinned.group(1)}"
    built = subprocess.run(
        ["bash", str(ROOT / "tests/k8s/tools/build.sh"), "istioctl"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )  # cached: prints the bin dir at once
    assert Path(built.stdout.strip()) / "istioctl" == istioctl()


def test_the_seed_objects_are_valid_at_every_version() -> None:
    assert_istio_valid([SEED_VS, SEED_DR])
    for version in ("v1beta1", "v1"):
        assert_istio_valid(
            [{**o, "apiVersion": f"networking.istio.io/{version}"} for o in (SEED_VS, SEED_DR)]
        )


def _route(vs: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return vs["spec"]["http"][0]["route"][i]


def _no_host(vs: dict[str, Any]) -> None:
    del _route(vs)["destination"]["host"]


def _negative(vs: dict[str, Any]) -> None:
    _route(vs)["weight"], _route(vs, 1)["weight"] = -10, 110


def _zero(vs: dict[str, Any]) -> None:
    _route(vs)["weight"] = _route(vs, 1)["weight"] = 0


def _regex(pattern: str) -> Any:
    def mutate(vs: dict[str, Any]) -> None:
        vs["spec"]["http"].insert(
            0,
            {
                "match": [{"headers": {"end-user": {"regex": pattern}}}],
                "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
            },
        )

    return mutate


def _misspelt(vs: dict[str, Any]) -> None:
    _route(vs)["wieght"] = _route(vs).pop("weight")


def _no_route(vs: dict[str, Any]) -> None:
    vs["spec"]["http"][0] = {"name": "empty"}


def _bad_subset(vs: dict[str, Any]) -> None:
    _route(vs)["destination"]["subset"] = "V1.0"


def _unreachable(vs: dict[str, Any]) -> None:  # a catch-all route before a match route: a warning
    vs["spec"]["http"].append(
        {
            "match": [{"headers": {"end-user": {"exact": "jason"}}}],
            "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
        }
    )


def _policy(policy: dict[str, Any]) -> Any:
    def mutate(dr: dict[str, Any]) -> None:
        dr["spec"]["trafficPolicy"] = policy

    return mutate


def _duplicate_subset(dr: dict[str, Any]) -> None:
    dr["spec"]["subsets"][1]["name"] = "v1"


BROKEN_VS = [
    ("destination-without-host", _no_host, r"empty domain name not allowed"),
    ("negative-weight", _negative, r"weight -10 < 0"),
    ("all-weights-zero", _zero, r"total destination weight = 0"),
    ("regex-lookahead-re2-refuses", _regex("^(?!bot).*$"), r"invalid or unsupported Perl syntax"),
    ("regex-unbalanced", _regex("^(cn-.*$"), r"missing closing \)"),
    ("misspelt-field", _misspelt, r"unknown field \"wieght\""),
    ("http-route-without-route", _no_route, r"HTTP route, redirect or direct_response is required"),
    ("subset-not-a-dns-label", _bad_subset, r"subset name is invalid: V1\.0"),
    ("unreachable-rule-warning", _unreachable, r"has warnings.*not used"),
]
BROKEN_DR = [
    ("duplicate-subset", _duplicate_subset, r"duplicate subset names: v1"),
    (
        "ejection-percent-150",
        _policy({"outlierDetection": {"consecutive5xxErrors": 5, "maxEjectionPercent": 150}}),
        r"percentage 150 is not in range 0\.\.100",
    ),
    (
        "interval-not-a-duration",
        _policy({"outlierDetection": {"consecutive5xxErrors": 5, "interval": "10 seconds"}}),
        r"cannot parse proto message",
    ),
    (
        "empty-connection-pool",
        _policy({"connectionPool": {}}),
        r"connection pool must have at least one field",
    ),
    (
        "negative-pending-requests",
        _policy({"connectionPool": {"http": {"http1MaxPendingRequests": -1}}}),
        r"http1 max pending requests must be non-negative",
    ),
]


@pytest.mark.parametrize(("broken", "expected"), [pytest.param(f, e, id=i) for i, f, e in BROKEN_VS])
def test_istioctl_refuses_a_broken_virtual_service(broken: Any, expected: str) -> None:
    vs = copy.deepcopy(SEED_VS)
    broken(vs)
    verdict = istio_validate([vs, SEED_DR])
    assert not verdict.ok and re.search(expected, verdict.output, re.S), verdict.output
    with pytest.raises(AssertionError, match=r"istioctl validate refused VirtualService/default/reviews"):
        assert_istio_valid([vs, SEED_DR], "in the test")


@pytest.mark.parametrize(("broken", "expected"), [pytest.param(f, e, id=i) for i, f, e in BROKEN_DR])
def test_istioctl_refuses_a_broken_destination_rule(broken: Any, expected: str) -> None:
    dr = copy.deepcopy(SEED_DR)
    broken(dr)
    verdict = istio_validate([SEED_VS, dr])
    assert not verdict.ok and re.search(expected, verdict.output, re.S), verdict.output
    with pytest.raises(AssertionError, match=expected):
        assert_istio_valid([SEED_VS, dr])


def test_weights_need_not_sum_to_100_for_istio_so_graylanes_tests_check_the_sum_themselves() -> None:
    vs = copy.deepcopy(SEED_VS)
    _route(vs)["weight"], _route(vs, 1)["weight"] = 80, 30  # Istio takes weights as relative shares
    assert istio_validate([vs]).ok


def test_the_helper_refuses_what_istioctl_would_pass_over_unchecked(tmp_path: Path) -> None:
    hostless = copy.deepcopy(SEED_VS)
    _no_host(hostless)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(json.dumps({**hostless, "apiVersion": "networking.istio.io/v2"}))
    out = subprocess.run(
        [str(istioctl()), "validate", "-f", str(unknown)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")},
    )
    assert out.returncode == 0 and "is valid" in out.stdout + out.stderr  # istioctl did not look at it
    for api_version, kind in (
        ("networking.istio.io/v2", "VirtualService"),
        ("v1", "ConfigMap"),
        ("networking.istio.io/v1", "HTTPRoute"),
    ):
        with pytest.raises(AssertionError, match="is not one istioctl validates"):
            istio_validate([{**hostless, "apiVersion": api_version, "kind": kind}])


def test_a_missing_istioctl_fails_with_the_hint_never_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRAYLANE_ISTIOCTL", str(tmp_path / "istioctl"))
    with pytest.raises(pytest.fail.Exception, match=r"make istioctl"):
        assert_istio_valid([SEED_VS])
    monkeypatch.delenv("GRAYLANE_ISTIOCTL")
    monkeypatch.setenv("GRAYLANE_CACHE", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"not built .*make istioctl"):
        assert_istio_valid([SEED_VS])


# --- the Istio router's pure rendering -------------------------------------------------------------------

OPTIONS = {
    "virtualService": "reviews",
    "destinationRule": "reviews",
    "host": "reviews",
    "stableSubset": "v1",
    "canarySubset": "v2",
    "stableLabels": {"version": "v1"},
    "canaryLabels": {"version": "v2"},
}
RULES = (
    Match("header", name="end-user", value="jason"),
    Match("header", name="X-Region", regex="^cn-.*$"),
    Match("cookie", name="canary", value="always"),
    Match("cookie", name="beta", regex="^(yes|1)$"),
    Match("user-id-digit", name="x-user-id", digits=(1, 3, 5, 7, 9)),
    Match("user-hash", name="x-user-id", percent=20),
)


def rendered(
    label: str, target: RouteTarget, plan: RoutePlan, outlier: str | None = None
) -> list[dict[str, Any]]:
    """The VirtualService and DestinationRule the router writes for plan (as `_ensure` and `set_routes` do),
    named `label` so istioctl's message says which case it refused."""
    s = istio._setup(target)
    istio._check_plan(s, plan)
    return objects(label, s, plan, outlier)


def objects(label: str, s: Any, plan: RoutePlan, outlier: str | None = None) -> list[dict[str, Any]]:
    """What the router renders for a setup, without its checks."""
    meta = {"name": label, "namespace": s.namespace}
    vs_spec: dict[str, Any] = {"hosts": [s.host], "http": istio._http(s, plan)}
    if s.gateways:
        vs_spec["gateways"] = list(s.gateways)
    subsets = [{"name": s.stable, "labels": s.stable_labels}, {"name": s.canary, "labels": s.canary_labels}]
    dr_spec: dict[str, Any] = {"host": s.host, "subsets": subsets}
    if outlier is not None:
        dr_spec["trafficPolicy"] = {"outlierDetection": istio._outlier_detection(outlier)}
        if s.connection_pool is not None:
            dr_spec["trafficPolicy"]["connectionPool"] = s.connection_pool
    return [
        {
            "apiVersion": istio.VIRTUAL_SERVICE.api_version,
            "kind": "VirtualService",
            "metadata": meta,
            "spec": vs_spec,
        },
        {
            "apiVersion": istio.DESTINATION_RULE.api_version,
            "kind": "DestinationRule",
            "metadata": meta,
            "spec": dr_spec,
        },
    ]


def test_the_router_writes_v1() -> None:
    assert istio.VIRTUAL_SERVICE.api_version == istio.DESTINATION_RULE.api_version == "networking.istio.io/v1"


def test_the_routers_rendering_is_valid_for_every_weight_rule_and_protection() -> None:
    t = RouteTarget("bookinfo", "reviews", "reviews-v1", "reviews-v2", options=OPTIONS)
    objs = [o for w in range(0, 101, 5) for o in rendered(f"weight-{w}", t, RoutePlan.canary_at(w))]
    objs += rendered("stable-only", t, STABLE_ONLY)
    for i, rule in enumerate(RULES):  # each rule alone, then all of them
        objs += rendered(f"rule-{i}-{rule.kind}", t, RoutePlan.canary_at(0, (rule,), salt="reviews-3"))
    objs += rendered("all-rules", t, RoutePlan.canary_at(30, RULES, salt="reviews-3"))
    for percent in (1, 9, 10, 11, 50, 99, 100):
        hashed = (Match("user-hash", name="x-user-id", percent=percent),)
        objs += rendered(f"user-hash-{percent}", t, RoutePlan.canary_at(0, hashed))
    pool = {
        "tcp": {"maxConnections": 100},
        "http": {"http1MaxPendingRequests": 100, "maxRequestsPerConnection": 10},
    }
    pooled = RouteTarget(
        "bookinfo", "reviews", "reviews-v1", "reviews-v2", options={**OPTIONS, "connectionPool": pool}
    )
    for i, expression in enumerate(
        (
            "NetworkErrorRatio() > 0.30",
            "ResponseCodeRatio(500, 600, 0, 600) > 0.25",
            "NetworkErrorRatio() > 0.1 || ResponseCodeRatio(500, 600, 0, 600) > 0.25",
        )
    ):
        objs += rendered(f"breaker-{i}", pooled, STABLE_ONLY, expression)
    gateway = RouteTarget(
        "bookinfo",
        "reviews",
        "reviews-v1",
        "reviews-v2",
        options={**OPTIONS, "gateways": ["bookinfo-gateway", "mesh"]},
    )
    objs += rendered("gateways", gateway, RoutePlan.canary_at(20, RULES[:1]))
    defaults = RouteTarget(
        "bookinfo", "reviews", "reviews-v1", "reviews-v2"
    )  # subsets stable/canary, app labels
    objs += rendered("default-options", defaults, RoutePlan.canary_at(50))
    assert_istio_valid(objs)


def unchecked(options: dict[str, Any]) -> Any:
    """The router's setup from options as they are, none of its checks applied."""
    o = {**OPTIONS, **options}
    return istio._Setup(
        namespace="bookinfo",
        virtual_service="reviews",
        destination_rule="reviews",
        host=o["host"],
        stable=o["stableSubset"],
        canary=o["canarySubset"],
        gateways=tuple(o.get("gateways", [])),
        stable_labels=o["stableLabels"],
        canary_labels=o["canaryLabels"],
        connection_pool=o.get("connectionPool"),
    )


def header(regex: str) -> RoutePlan:
    return RoutePlan.canary_at(0, (Match("header", name="user-agent", regex=regex),))


# (options, plan, whether Istio refuses): the router's checks must agree with istioctl on each
OPTION_CASES = [
    ("subset-with-a-dot", {"canarySubset": "v2.0"}, None, True),
    ("subset-upper-case", {"stableSubset": "V1"}, None, False),
    ("subset-64-characters", {"stableSubset": "v" * 64}, None, True),
    ("the-same-subset-twice", {"canarySubset": "v1"}, None, True),
    ("host-with-underscore", {"host": "reviews_v1"}, None, True),
    ("host-star", {"host": "*"}, None, True),
    ("host-numeric-tld", {"host": "reviews.123"}, None, True),
    ("host-fqdn", {"host": "reviews.bookinfo.svc.cluster.local"}, None, False),
    ("host-wildcard", {"host": "*.bookinfo.svc.cluster.local"}, None, False),
    ("host-trailing-dot", {"host": "Reviews.bookinfo."}, None, False),
    ("gateway-with-space", {"gateways": ["bad gateway"]}, None, True),
    ("gateway-without-name", {"gateways": ["istio-system/"]}, None, True),
    ("gateway-namespaced", {"gateways": ["istio-system/ingress", "mesh"]}, None, False),
    ("label-value-with-space", {"stableLabels": {"version": "v1 beta"}}, None, True),
    ("label-key-leading-dash", {"canaryLabels": {"-version": "v2"}}, None, True),
    (
        "label-prefixed-key-empty-value",
        {"stableLabels": {"app.kubernetes.io/version": "1.0_rc-1", "track": ""}},
        None,
        False,
    ),
    ("empty-connection-pool", {"connectionPool": {}}, None, True),
    ("connection-pool-unknown-field", {"connectionPool": {"udp": {"maxConnections": 1}}}, None, True),
    ("connection-pool-tcp", {"connectionPool": {"tcp": {"maxConnections": 10}}}, None, False),
    ("regex-lookahead", {}, header("^(?!bot).*$"), True),
    ("regex-lookbehind", {}, header("(?<=a)b"), True),
    ("regex-backreference", {}, header(r"^(a)\1$"), True),
    ("regex-python-end-of-string", {}, header(r"^bot\Z"), True),
    ("regex-verbose-flag", {}, header("(?x) ^ bot $"), True),
    ("regex-repeat-1001", {}, header("^a{1001}$"), True),
    ("regex-possessive", {}, header("^a++$"), True),
    ("regex-atomic", {}, header("^(?>a|ab)c$"), True),
    ("regex-unicode-escape", {}, header(r"^\u0041$"), True),
    ("regex-over-1024", {}, header("^" + "a" * 1024 + "$"), True),
    (
        "cookie-regex-lookahead",
        {},
        RoutePlan.canary_at(0, (Match("cookie", name="beta", regex="^(?!no)"),)),
        True,
    ),
    ("regex-case-insensitive", {}, header("(?i)^Mozilla/.*$"), False),
    ("regex-class-and-digits", {}, header(r"^[a-z]+-\d{3}$"), False),
    ("regex-dot-all-group", {}, header("(?s:.)+"), False),
    ("regex-escaped-backslash-u", {}, header(r"^a\\u$"), False),
]


@pytest.mark.parametrize(
    ("options", "plan", "istio_refuses"), [pytest.param(o, p, r, id=i) for i, o, p, r in OPTION_CASES]
)
def test_the_routers_checks_refuse_exactly_what_istio_refuses(
    options: dict[str, Any], plan: RoutePlan | None, istio_refuses: bool
) -> None:
    plan = plan or RoutePlan.canary_at(20)
    outlier = "NetworkErrorRatio() > 0.3" if "connectionPool" in options else None
    verdict = istio_validate(objects("reviews", unchecked(options), plan, outlier))
    assert verdict.ok is not istio_refuses, verdict.output
    t = RouteTarget("bookinfo", "reviews", "reviews-v1", "reviews-v2", options={**OPTIONS, **options})
    if istio_refuses:
        with pytest.raises(
            ConfigError, match="^istio router for bookinfo/reviews: .*router option|RE2 refuses"
        ):
            rendered("reviews", t, plan, outlier)
    else:
        assert_istio_valid(rendered("reviews", t, plan, outlier))


def test_a_repeated_rule_is_written_once_as_istio_warns_about_an_unused_match() -> None:
    jason = Match("header", name="end-user", value="jason")
    plan = RoutePlan.canary_at(0, (jason, Match("header", name="End-User", value="jason"), jason))
    s = unchecked({})
    twice = objects("reviews", s, plan)
    twice[0]["spec"]["http"][0]["match"] *= 2  # what the router wrote before it dropped repeats
    verdict = istio_validate(twice)
    assert not verdict.ok and "is not used (duplicate/overlapping match" in verdict.output, verdict.output
    written = rendered(
        "reviews", RouteTarget("bookinfo", "reviews", "reviews-v1", "reviews-v2", options=OPTIONS), plan
    )
    assert written[0]["spec"]["http"][0]["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert_istio_valid(written)
