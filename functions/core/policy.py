"""The policy model: what a service owner declares for one app. Frozen values, no I/O.

A policy is YAML (see infra/examples/). `functions.core.policy_parse.parse_policy` turns a mapping
into a `Policy`, collecting every problem with its exact field path.
"""

from __future__ import annotations

from dataclasses import field
from enum import StrEnum
from typing import Any, Literal

from functions.core.values import value


class RollbackMode(StrEnum):
    ROLLBACK = "rollback"  # traffic back to stable, canary scaled down, release ends rolled back
    FREEZE = "freeze"  # hold everything exactly as it is and alert: a human decides
    ROLL_FORWARD = "roll-forward"  # traffic back to stable, canary kept, wait for a fixed image


MatchKind = Literal["header", "cookie", "user-id-digit", "user-hash", "source-ip"]


@value
class Match:
    """One targeting rule; a request matching any rule of a stage goes to the canary."""

    kind: MatchKind
    name: str = ""  # header/cookie name; for user-id-digit/user-hash: header carrying the user id
    value: str = ""  # exact value (header/cookie)
    regex: str = ""  # regular expression (header/cookie), alternative to value
    digits: tuple[int, ...] = ()  # user-id-digit: last decimal digits sent to the canary
    percent: int = 0  # user-hash: MurmurHash3(salt + user id) % 100 < percent goes to the canary
    salt: str = ""  # user-hash: per-release salt; empty means the release id
    cidrs: tuple[str, ...] = ()  # source-ip: client address ranges


JudgeKind = Literal["threshold", "comparison", "sequential"]


@value
class MetricCheck:
    """One metric the analysis looks at and how it is judged."""

    name: str
    template: str = ""  # built-in template: success-rate | error-rate | latency
    query: str = ""  # custom PromQL; {{namespace}} {{app}} {{stable}} {{canary}} {{window}} {{interval}}
    judge: JudgeKind = "threshold"
    min: float | None = None  # threshold: pass when min <= value <= max
    max: float | None = None
    tolerance: float = 0.0  # comparison: allowed canary-vs-stable difference (same unit as the metric)
    relative: bool = False  # comparison: tolerance is a ratio of the stable value


@value
class Analysis:
    interval: float = 10.0  # seconds between looks (ticks faster than this are no-ops for analysis)
    window: float = 60.0  # query window in seconds
    metrics: tuple[MetricCheck, ...] = ()
    start_step: int = 1  # 1-based canary step from which analysis runs (the Argo seed uses 2)
    failure_limit: int = 1  # failed verdicts before the release fails
    inconclusive_limit: int = 6  # consecutive inconclusive verdicts before the release pauses
    min_requests: int = 50  # minimum canary requests before a verdict other than inconclusive
    alpha: float = 0.01  # sequential judges and the guard: bound on the false-rollback probability
    prometheus: str = ""  # Prometheus URL; empty means the process default
    guard: bool = True  # anytime-valid error and latency tests on the canary from its first request
    exposure_budget: float = 5.0  # canary-caused failed requests in flight the weight may risk; 0: off
    probe_weight: int = 5  # percent a new canary starts at under adaptive exposure


@value
class MigrationJob:
    name: str
    command: tuple[str, ...] = ()
    image: str = ""  # empty means the release image


@value
class PreviewStage:
    kind: Literal["preview"] = "preview"
    environment: str = "preview"
    namespace: str = ""  # empty means the app namespace
    workload: str = ""  # preview Deployment name; empty means <app>-<environment>
    migration: MigrationJob | None = None


@value
class GateParam:
    name: str  # e.g. "weight"
    default: int | None = None
    min: int = 0
    max: int = 100


@value
class ApprovalStage:
    name: str
    kind: Literal["approval"] = "approval"
    params: tuple[GateParam, ...] = ()
    timeout: float | None = None  # seconds; None waits forever
    on_timeout: Literal["reject", "approve"] = "reject"


@value
class ABTestStage:
    kind: Literal["abtest"] = "abtest"
    match: tuple[Match, ...] = ()
    duration: float = 0.0  # seconds the test runs before the next stage
    analysis: bool = True


@value
class MirrorStage:
    """Copy `percent` % of the live requests to the canary and discard its answers (Argo Rollouts'
    setMirrorRoute, Flagger's mirror + mirrorWeight): every client is answered by the stable, the canary is
    analysed on the copies. No live traffic is answered by it."""

    kind: Literal["mirror"] = "mirror"
    percent: int = 100  # share of the live requests copied to the canary (1..100)
    duration: float = 0.0  # seconds mirrored before the next stage; 0 waits for a human (resume)
    analysis: bool = True


@value
class CanaryStep:
    weight: int
    pause: float | None = None  # seconds; None waits for a resume/promote command


@value
class LinearSchedule:
    start: int
    end: int
    increment: int
    every: float  # seconds


@value
class CanaryStage:
    kind: Literal["canary"] = "canary"
    mode: Literal["steps", "manual", "linear"] = "steps"
    steps: tuple[CanaryStep, ...] = ()
    weight_param: str = "weight"  # manual: gate parameter holding the weight
    weight: int | None = None  # manual: weight when no gate parameter was given
    hold: float = 0.0  # manual: seconds to hold the weight before the next stage
    linear: LinearSchedule | None = None
    analysis: bool = True
    baseline: bool | None = None  # a fresh baseline beside the canary (None: the policy's spec.baseline)


LOAD_TEST_IMAGE = "docker.io/williamyeh/hey:latest"  # its entrypoint is hey


@value
class LoadTest:
    """A test load graylane starts against the preview (hey): `rps` requests per second for `duration`."""

    url: str  # the app's entry through its router (gateway, ingress): the preview route matches there
    rps: int = 10
    duration: float = 0.0  # seconds; 0 means the stage's preview duration
    image: str = LOAD_TEST_IMAGE  # Kubernetes: the Job's image (its entrypoint runs hey with the arguments)
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (e.g. the A/B test's header)


PREVIEW_HEADER = "x-graylane-preview"


@value
class PreviewTraffic:
    """How the green version gets traffic to analyse while blue serves the users: requests carrying
    `header: <release id>` are routed to green; `load_test`, when set, sends such requests at a fixed rate."""

    header: str = PREVIEW_HEADER
    load_test: LoadTest | None = None


@value
class BlueGreenStage:
    kind: Literal["bluegreen"] = "bluegreen"
    preview: float = 0.0  # seconds the green version is analysed before the switch
    analysis: bool = True
    preview_traffic: PreviewTraffic | None = None  # what the analysis measures on green (None: no traffic)


@value
class PromoteStage:
    kind: Literal["promote"] = "promote"
    keep_previous: float = 0.0  # seconds the previous version stays warm (watched) after promotion


@value
class RateLimit:
    average: int
    burst: int
    period: float = 1.0


@value
class CircuitBreaker:
    expression: str  # Traefik syntax, e.g. "LatencyAtQuantileMS(50.0) > 100" or "NetworkErrorRatio() > 0.3"


@value
class ProtectStage:
    kind: Literal["protect"] = "protect"
    rate_limit: RateLimit | None = None
    circuit_breaker: CircuitBreaker | None = None


FLAG_VARIANTS = (("off", False), ("on", True))  # sorted by name, as the parser keeps them


@value
class FlagStage:
    """Roll a feature flag's `variant` out to a share of users: the canary's steps, manual weight or linear
    schedule, but the exposure is the flag (flagd's `fractional` targeting) instead of a route. It runs after
    the promote stage: the code behind the flag is in the stable workload, dark, when the flag goes out."""

    key: str  # the flag's key in the flag document
    kind: Literal["flag"] = "flag"
    variant: str = "on"  # the variant rolled out
    off: str = "off"  # the variant every other user gets
    variants: tuple[tuple[str, Any], ...] = FLAG_VARIANTS  # a flag graylane creates: its variants
    mode: Literal["steps", "manual", "linear"] = "steps"
    steps: tuple[CanaryStep, ...] = ()
    weight_param: str = "weight"  # manual: gate parameter holding the percentage
    weight: int | None = None  # manual: percentage when no gate parameter was given
    hold: float = 0.0  # manual: seconds to hold the percentage before the next stage
    linear: LinearSchedule | None = None
    analysis: bool = True
    salt: str = ""  # bucket salt ("salt:user id" is hashed); empty means the release id, as for userHash


Stage = (
    PreviewStage
    | ApprovalStage
    | ABTestStage
    | CanaryStage
    | BlueGreenStage
    | PromoteStage
    | ProtectStage
    | FlagStage
    | MirrorStage
)


@value
class Wave:
    name: str
    cluster: str = ""  # kubeconfig context; empty means the current one
    approval: bool = False  # wait for gate "wave-<name>" before this wave starts


@value
class Allow:
    users: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()  # empty: any channel


@value
class Approvers:
    default: Allow = Allow()
    gates: tuple[tuple[str, Allow], ...] = ()  # gate name -> who may approve/reject it
    actions: tuple[tuple[str, Allow], ...] = ()  # command action -> who may run it
    # which rule governs a command: functions.chatops.authz.rule_for (the one lookup)


@value
class ProtectionRule:
    """An alert matching `match` tightens protection while it fires."""

    alert: str  # alertname
    match: tuple[tuple[str, str], ...] = ()  # extra label equality matchers
    rate_limit_factor: float = 1.0  # multiply the average (and burst) by this while firing
    floor: int = 1  # never tighten the average below this
    circuit_breaker: CircuitBreaker | None = None  # armed while firing
    hold_down: float = 60.0  # seconds after resolution before relaxing


@value
class ImageRule:
    repository: str  # e.g. registry.example.com/team/flask
    tags: str = ""  # regular expression the tag must fully match; empty: any
    semver: str = ""  # semver range such as ">=1.2.0 <2.0.0"; empty: any
    by_digest: bool = False  # a push without a tag releases repository@sha256:... (tag rules do not apply)


WorkloadModel = Literal["pair", "per-version"]


@value
class WorkloadSpec:
    """Where versions run. `pair`: a stable and a canary Deployment, the stable re-imaged on promotion.
    `per-version`: one Deployment per version (Istio subsets, see functions/core/slots.py): promotion
    moves traffic to the new version's subset and the previous Deployment is scaled down, never re-imaged."""

    kind: Literal["Deployment"] = "Deployment"
    name: str = (
        ""  # stable workload (per-version: the first Deployment, the user's); empty means the app name
    )
    canary: str = ""  # canary workload; empty means <name>-canary (pair model only)
    container: str = ""  # container whose image changes; empty means the first
    replicas: int | None = None  # canary replicas; None copies the stable's
    model: WorkloadModel = "pair"
    name_template: str = ""  # per-version: each version's Deployment, e.g. "reviews-{version}"
    version_label: str = "version"  # per-version: the pod label naming the version (the subsets select on it)
    subset: str = ""  # per-version: the first Deployment's subset and version label value
    keep_retired: int = 2  # per-version: retired Deployments graylane created kept scaled to zero

    @property
    def per_version(self) -> bool:
        return self.model == "per-version"


@value
class RouterSpec:
    provider: str  # traefik | istio | gateway-api | nginx | haproxy | recording
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific (object names, host, ...)


@value
class NotifySpec:
    kind: str  # slack | dingtalk | feishu | wecom | webhook
    url: str = ""  # or a secret reference resolved by the notifier
    secret: str = ""


@value
class VariantMetrics:
    """Where the app counts requests by flag variant (the analysis of a flag stage reads these)."""

    requests: str = "http_requests_total"  # request counter
    code: str = "code"  # its status-code label
    errors: str = "5.."  # regex over code values counted as errors
    duration: str = "http_request_duration_seconds_bucket"  # latency histogram ("" when there is none)
    to_ms: float = 1000.0  # multiply the histogram's unit by this to get milliseconds
    flag_label: str = "feature_flag_key"  # label naming the flag (OpenTelemetry's feature_flag.key)
    variant_label: str = "feature_flag_result_variant"  # label naming the variant served
    selector: str = ""  # more matchers every query carries, e.g. namespace="shop",job="web"


@value
class FlagSource:
    """Where the flag definitions live, in flagd's format (one document with the user's other flags)."""

    provider: Literal["flagd"] = "flagd"
    config_map: str = ""  # Kubernetes: the ConfigMap (in the app's namespace) holding the document
    key: str = "flags.flagd.json"  # its data key
    file: str = ""  # or a file (`graylane serve --providers local`, a flagd/SDK file source)
    metrics: VariantMetrics = VariantMetrics()


HOOK_TYPES = (
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
)
HookType = Literal[
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
]


@value
class Hook:
    """A release hook: a signed POST at one point of the release (or, with `load_test`, graylane's own load
    generator keeping an analysed canary or preview fed)."""

    name: str
    type: HookType
    url: str = ""
    timeout: float = 5.0  # seconds per attempt
    retries: int = 2  # more attempts after a failed one (connection refused, timeout, 408/425/429/5xx)
    secret: str = ""  # signing key reference (GRAYLANE_SECRET_<NAME>), as the webhook notifier's
    metadata: tuple[tuple[str, str], ...] = ()  # sent with every call
    load_test: LoadTest | None = None  # type rollout only: hey while the release is analysed


@value
class GitOps:
    """Record versions in the team's Git repository (a kustomization's image tag or a Helm values key)."""

    repository: str  # git://, https://, ssh:// or file:// URL
    file: str  # path in the repository
    format: Literal["kustomize", "helm"] = "kustomize"
    image: str = ""  # kustomize: the images[] entry's name; empty means spec.image.repository
    key: str = "image.tag"  # helm: the dotted path of the tag
    branch: str = ""  # the branch commits go to; empty means graylane/<release id> (from the default branch)
    default_branch: bool = False  # commit straight to the default branch
    on: tuple[Literal["rollback", "promotion"], ...] = ("rollback",)
    secret: str = ""  # https credential reference (GRAYLANE_SECRET_<NAME>: a token, or user:token)
    author: str = "graylane <graylane@graylane.invalid>"


AFFINITY_COOKIE = "graylane-affinity"


@value
class SessionAffinity:
    """Keep each client on the version (stable or canary) it was sent to while the canary's weight holds.

    The router pins a client by a cookie (`cookie`, a Max-Age of `max_age` seconds, or a session cookie).
    A weight change re-rolls every client at the new weight (each router's "generation": Traefik's cookie
    name carries the weight, HAProxy's stick table is cleared), so the share of clients on the canary is
    the weight at every step, and a lowered weight or a rollback really takes clients off the canary."""

    cookie: str = AFFINITY_COOKIE
    max_age: int | None = None  # seconds; None: a session cookie (no Max-Age)


@value
class Policy:
    name: str  # the app
    namespace: str
    image: ImageRule
    router: RouterSpec
    stages: tuple[Stage, ...]
    workload: WorkloadSpec = WorkloadSpec()
    analysis: Analysis | None = None
    rollback: RollbackMode = RollbackMode.ROLLBACK
    approvers: Approvers = Approvers()
    waves: tuple[Wave, ...] = ()
    protection: tuple[ProtectionRule, ...] = ()
    notify: tuple[NotifySpec, ...] = ()
    revision_history: int = 10  # previously stable versions kept for `rollback <version>`
    flags: FlagSource | None = None  # where flag stages write (flagd)
    hooks: tuple[Hook, ...] = ()
    gitops: GitOps | None = None
    session_affinity: SessionAffinity | None = None  # sticky clients per weight (spec.sessionAffinity)
    baseline: bool = False  # spec.baseline: canary stages run a fresh baseline (functions/core/baseline.py)

    @property
    def app(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def stable_workload(self) -> str:
        return self.workload.name or self.name

    @property
    def canary_workload(self) -> str:
        return self.workload.canary or f"{self.stable_workload}-canary"

    @property
    def baseline_workload(self) -> str:
        """The baseline's Deployment and Service (graylane creates and removes both)."""
        return f"{self.stable_workload}-baseline"
