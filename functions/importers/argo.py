"""Argo Rollouts `Rollout` (+ its `AnalysisTemplate`s / `ClusterAnalysisTemplate`s) -> a graylane policy. Pure.

What maps to what (anything else is reported as a `Note`):

- canary `steps`: `setWeight` starts a step, `pause: {duration}` is its pause (several add up; a setWeight
  straight after another moves on at once), `pause: {}` (indefinite, resumed by `kubectl argo rollouts
  promote`) becomes an approval gate `pause-<n>` (`promote` when it is the last step) held at the current
  weight; `setHeaderRoute` with matchers becomes an `abtest` stage (Argo's OR-ed header matchers are
  graylane's OR-ed rules; `prefix` becomes a regex) lasting the pauses that follow, until the header route
  is removed or the next `setWeight`; after the last step the release is promoted, as in Argo.
- `analysis` (background) with `templates`, `args` and `startingStep`, and inline `analysis` steps: each
  template's Prometheus metrics become custom `query:` metrics (graylane runs them every interval from the
  step the analysis starts at), `{{args.*}}` substituted from the Rollout's args (literal values, the
  template's defaults, or the Rollout's own metadata); `successCondition` / `failureCondition` of the
  form `result[0] OP number` (joined with `&&`) become threshold `min` / `max`; `interval` the analysis
  interval; `failureLimit` N becomes `failureLimit: N+1` (Argo fails after more than N failures, graylane
  at N); `inconclusiveLimit` N the same. Steps before `startingStep` run without analysis.
- `trafficRouting`: nginx -> router nginx (`stableIngress`), istio -> istio (`virtualService`,
  `destinationRule` subsets), traefik -> traefik (`traefikService`), the Gateway API plugin -> gateway-api
  (`httpRoute`); SMI, ALB, Ambassador, APISIX, Kong, App Mesh, other plugins and no traffic routing at all
  become gateway-api over the same Services, reported, because graylane needs a router it has.
- `blueGreen`: `bluegreen` stage (`autoPromotionSeconds` as its preview), `autoPromotionEnabled: false`
  a preview deployment plus gate `promote` before the switch, pre/post-promotion analysis as above (post:
  `promote.keepPrevious` = `scaleDownDelaySeconds`).
- The Rollout's pod template gives the image repository and container; graylane runs it as two
  Deployments, `<name>` (stable) and `<name>-canary`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from functions.importers.common import (
    FALLBACK_ROUTER,
    Imported,
    Notes,
    compact,
    deployment_container,
    dns_label,
    duration,
    find,
    first_container,
    header_rule,
    image_repository,
    ingress_host,
    mapping,
    policy_document,
    seconds,
    seq,
    substitute,
    text,
    whole,
)

ROLLOUT = "Rollout"
TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")
GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"
_UNSUPPORTED_ROUTERS = ("smi", "alb", "ambassador", "apisix", "appMesh", "kong", "plugins")
_CONDITION = re.compile(r"\s*result(?:\[0\])?\s*(>=|<=|==|>|<)\s*(-?[0-9.]+(?:[eE]-?[0-9]+)?)\s*")


def convert(
    rollout: Mapping[str, Any],
    templates: Mapping[tuple[str, str], Mapping[str, Any]],
    objects: Sequence[Mapping[str, Any]] = (),
) -> Imported:
    """The policy for one Rollout; `templates` by (kind, name); `objects` the other files' objects (Ingresses...)."""
    return _Rollout(rollout, templates, list(objects)).convert()


class _Rollout:
    def __init__(
        self,
        rollout: Mapping[str, Any],
        templates: Mapping[tuple[str, str], Mapping[str, Any]],
        objects: list[Mapping[str, Any]],
    ) -> None:
        self.obj = rollout
        self.meta = mapping(rollout.get("metadata"))
        self.name = text(self.meta.get("name")) or "rollout"
        self.namespace = text(self.meta.get("namespace")) or "default"
        self.spec = mapping(rollout.get("spec"))
        self.templates = templates
        self.objects = objects
        self.notes = Notes()
        self.metrics: list[dict[str, Any]] = []
        self.analysis: dict[str, Any] = {}
        self.intervals: list[float] = []
        self.failure_limits: list[int] = []
        self.inconclusive_limits: list[int] = []
        self.addresses: list[str] = []
        self.start_step = 1  # spec.analysis.startStep
        self.baseline = False  # an experiment step ran the stable's spec beside the canary's

    # -- the whole Rollout ---------------------------------------------------------------------------------
    def convert(self) -> Imported:
        strategy = mapping(self.spec.get("strategy"))
        spec: dict[str, Any] = {"image": {"repository": self._image()}, "workload": self._workload()}
        if "canary" in strategy:
            canary = mapping(strategy.get("canary"))
            spec["router"] = self._router(canary)
            spec["stages"] = self._canary(canary, spec["router"])
        elif "blueGreen" in strategy:
            spec["router"], spec["stages"] = self._blue_green(mapping(strategy.get("blueGreen")))
        else:
            self.notes.add(
                "spec.strategy", "no canary or blueGreen strategy: a one-step canary to 100% is assumed"
            )
            spec["router"] = self._fallback_router({}, "no traffic routing")
            spec["stages"] = [{"canary": {"steps": [{"weight": 100, "pause": "0s"}]}}]
        spec["analysis"] = self._analysis_section()
        if self.baseline:
            spec["baseline"] = True
        history = self.spec.get("revisionHistoryLimit")
        if isinstance(history, int) and not isinstance(history, bool) and 0 <= history <= 100:
            spec["revisionHistory"] = history
        return Imported(
            f"Rollout {self.namespace}/{self.name}",
            policy_document(self.name, self.namespace, spec, self.notes),
            tuple(self.notes.items),
        )

    def _image(self) -> str:
        template = mapping(self.spec.get("template"))
        image = text(first_container(template).get("image"))
        if self.spec.get("workloadRef") is not None:
            ref = mapping(self.spec.get("workloadRef"))
            image = image or text(deployment_container(self.objects, text(ref.get("name"))).get("image"))
        repository = image_repository(image)
        if not repository:
            repository = f"registry.example.com/{self.namespace}/{self.name}"
            self.notes.add(
                "spec.template.spec.containers[0].image",
                f"no image found: spec.image.repository is the placeholder {repository}, set it",
            )
        return repository

    def _workload(self) -> dict[str, Any]:
        container = text(first_container(mapping(self.spec.get("template"))).get("name"))
        self.notes.add(
            "spec",
            f"graylane runs the pod template as two Deployments, {self.name} (stable) and "
            f"{self.name}-canary, instead of the Rollout's ReplicaSets: replace the Rollout "
            "with a Deployment of the same template",
        )
        return compact({"name": self.name, "canary": f"{self.name}-canary", "container": container})

    # -- traffic routing -------------------------------------------------------------------------------------
    def _router(self, canary: Mapping[str, Any]) -> dict[str, Any]:
        routing = mapping(canary.get("trafficRouting"))
        stable, canary_svc = text(canary.get("stableService")), text(canary.get("canaryService"))
        services = compact({"stableService": stable, "canaryService": canary_svc})
        path = "spec.strategy.canary.trafficRouting"
        for key in ("managedRoutes",):
            if key in routing:
                self.notes.add(
                    f"{path}.{key}",
                    "graylane manages its own routes (graylane-match, graylane-primary): "
                    "the named routes are not used",
                )
        if "nginx" in routing:
            nginx = mapping(routing["nginx"])
            ingress = text(nginx.get("stableIngress")) or next(iter(seq(nginx.get("stableIngresses"))), "")
            for key in ("additionalIngressAnnotations", "annotationPrefix", "canaryIngressAnnotations"):
                if key in nginx:
                    self.notes.add(
                        f"{path}.nginx.{key}",
                        "not expressed: graylane writes the canary Ingress's annotations itself",
                    )
            if len(seq(nginx.get("stableIngresses"))) > 1:
                self.notes.add(
                    f"{path}.nginx.stableIngresses", "graylane steers one Ingress: only the first is used"
                )
            return compact(
                {
                    "provider": "nginx",
                    "stableIngress": ingress,
                    **services,
                    "host": ingress_host(self.objects, ingress),
                }
            )
        if "istio" in routing:
            return self._istio(mapping(routing["istio"]), stable, canary_svc, f"{path}.istio")
        if "traefik" in routing:
            traefik = mapping(routing["traefik"])
            return compact(
                {
                    "provider": "traefik",
                    "traefikService": text(traefik.get("weightedTraefikServiceName")),
                    **services,
                }
            )
        plugins = mapping(routing.get("plugins"))
        if GATEWAY_PLUGIN in plugins:
            gateway = mapping(plugins[GATEWAY_PLUGIN])
            route = text(gateway.get("httpRoute")) or text(
                mapping(next(iter(seq(gateway.get("httpRoutes"))), {})).get("name")
                if seq(gateway.get("httpRoutes"))
                else ""
            )
            return compact({"provider": "gateway-api", "httpRoute": route or self.name, **services})
        used = next((k for k in _UNSUPPORTED_ROUTERS if k in routing), "")
        if used == "smi":
            smi = mapping(routing["smi"])
            split = text(smi.get("trafficSplitName")) or self.name
            self.notes.add(
                f"{path}.smi",
                f"SMI TrafficSplit is not a graylane router (SMI's successor is the Gateway "
                f"API): the policy uses router gateway-api with an HTTPRoute {split} over "
                "the same Services; create it, or change the router",
            )
            return compact({"provider": "gateway-api", "httpRoute": split, **services})
        return self._fallback_router(
            services, f"traffic router {used}" if used else "no trafficRouting", path
        )

    def _fallback_router(
        self, services: dict[str, Any], what: str, path: str = "spec.strategy"
    ) -> dict[str, Any]:
        self.notes.add(
            path,
            f"{what}: graylane needs a traffic router it has (traefik, istio, gateway-api, nginx, "
            f"haproxy); the policy uses {FALLBACK_ROUTER} with an HTTPRoute {self.name} over the "
            "same Services: change it to yours",
        )
        return compact({"provider": FALLBACK_ROUTER, "httpRoute": self.name, **services})

    def _istio(self, istio: Mapping[str, Any], stable: str, canary: str, path: str) -> dict[str, Any]:
        vs = mapping(istio.get("virtualService"))
        if not vs and seq(istio.get("virtualServices")):
            vs = mapping(seq(istio.get("virtualServices"))[0])
            if len(seq(istio.get("virtualServices"))) > 1:
                self.notes.add(
                    f"{path}.virtualServices", "graylane steers one VirtualService: only the first is used"
                )
        name = text(vs.get("name")) or self.name
        if seq(vs.get("routes")) or seq(vs.get("tlsRoutes")) or seq(vs.get("tcpRoutes")):
            self.notes.add(
                f"{path}.virtualService.routes",
                "graylane writes its own HTTP routes graylane-primary "
                "(and graylane-match) first in the VirtualService: the "
                "named routes are left as they are",
            )
        rule = mapping(istio.get("destinationRule"))
        host = stable or self._service_for(name) or self.name
        router: dict[str, Any] = {"provider": "istio", "virtualService": name, "host": host}
        if rule:
            router |= compact(
                {
                    "destinationRule": text(rule.get("name")),
                    "stableSubset": text(rule.get("stableSubsetName")),
                    "canarySubset": text(rule.get("canarySubsetName")),
                }
            )
        else:
            self.notes.add(
                path,
                f"host-level splitting between Services {stable or '?'} and {canary or '?'} is not "
                f"expressed: graylane's istio router splits one host ({host}) between DestinationRule "
                "subsets stable and canary (labels app: <workload>); set destinationRule and the "
                "subsets",
            )
        gateways = self._vs_gateways(name)
        if gateways:
            router["gateways"] = gateways
        return router

    def _vs_gateways(self, name: str) -> list[str]:
        return [
            g
            for g in seq(find(self.objects, "VirtualService", name).get("gateways"))
            if isinstance(g, str) and g
        ]

    def _service_for(self, vs_name: str) -> str:
        for route in seq(find(self.objects, "VirtualService", vs_name).get("http")):
            for dest in seq(mapping(route).get("route")):
                host = text(mapping(mapping(dest).get("destination")).get("host"))
                if host:
                    return host
        return ""

    # -- canary steps --------------------------------------------------------------------------------------
    def _canary(self, canary: Mapping[str, Any], router: Mapping[str, Any]) -> list[dict[str, Any]]:
        steps = seq(canary.get("steps"))
        background = mapping(canary.get("analysis"))
        start = len(steps) + 1  # the step index (0-based, in Argo's list) analysis starts at; none: never
        if background:
            self._templates(background, "spec.strategy.canary.analysis")
            raw = background.get("startingStep", 0)
            start = raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0
        for key in (
            "maxSurge",
            "maxUnavailable",
            "dynamicStableScale",
            "scaleDownDelaySeconds",
            "antiAffinity",
            "canaryMetadata",
            "stableMetadata",
            "abortScaleDownDelaySeconds",
            "minPodsPerReplicaSet",
        ):
            if key in canary:
                self.notes.add(
                    f"spec.strategy.canary.{key}",
                    "not expressed: graylane scales the canary Deployment like the stable one",
                )
        if not steps:
            self.notes.add(
                "spec.strategy.canary.steps", "no steps: Argo goes straight to 100 %; so does this policy"
            )
            return [{"canary": {"steps": [{"weight": 100, "pause": "0s"}], "analysis": start == 0}}]
        return _Steps(self, steps, start, router).stages()

    # -- blue-green ----------------------------------------------------------------------------------------
    def _blue_green(self, bg: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        path = "spec.strategy.blueGreen"
        services = compact(
            {"stableService": text(bg.get("activeService")), "canaryService": text(bg.get("previewService"))}
        )
        router = self._fallback_router(
            services, "blue-green switches Service selectors, not a traffic router", path
        )
        pre, post = mapping(bg.get("prePromotionAnalysis")), mapping(bg.get("postPromotionAnalysis"))
        if pre:
            self._templates(pre, f"{path}.prePromotionAnalysis")
            self.notes.add(
                f"{path}.prePromotionAnalysis",
                "graylane's checks read the router's traffic to green: before "
                "the switch it gets none, so send test traffic through the "
                "canary Service for them to pass",
            )
        stages: list[dict[str, Any]] = []
        auto = bg.get("autoPromotionEnabled", True) is not False
        wait = seconds(bg.get("autoPromotionSeconds")) or 0.0
        if not auto:
            stages += [{"preview": {"environment": "preview"}}, {"approval": {"name": "promote"}}]
            self.notes.add(
                f"{path}.autoPromotionEnabled",
                f"the preview runs as its own Deployment {self.name}-preview "
                "(point the preview Service at it) and the switch waits at "
                "gate promote",
            )
        stages.append(
            {
                "bluegreen": compact(
                    {"preview": duration(wait) if wait else None, "analysis": None if pre else False}
                )
            }
        )
        if post:
            self._templates(post, f"{path}.postPromotionAnalysis")
            delay = seconds(bg.get("scaleDownDelaySeconds"))
            keep = delay if delay is not None else 30.0
            stages.append({"promote": {"keepPrevious": duration(keep)}})
            self.notes.add(
                f"{path}.postPromotionAnalysis",
                f"runs as graylane's post-promotion watch for {duration(keep)} "
                "(scaleDownDelaySeconds) with the previous version kept warm",
            )
        for key in (
            "previewReplicaCount",
            "antiAffinity",
            "scaleDownDelayRevisionLimit",
            "previewMetadata",
            "activeMetadata",
            "abortScaleDownDelaySeconds",
        ):
            if key in bg:
                self.notes.add(f"{path}.{key}", "not expressed")
        return router, stages

    # -- analysis --------------------------------------------------------------------------------------------
    def _templates(self, analysis: Mapping[str, Any], path: str) -> None:
        """Read the analysis templates an analysis (background, inline or blue-green) names into metrics."""
        args = self._args(seq(analysis.get("args")), f"{path}.args")
        for i, ref in enumerate(seq(analysis.get("templates"))):
            ref = mapping(ref)
            where = f"{path}.templates[{i}]"
            kind = "ClusterAnalysisTemplate" if ref.get("clusterScope") is True else "AnalysisTemplate"
            name = text(ref.get("templateName"))
            template = self.templates.get((kind, name))
            if template is None:
                self.notes.add(
                    where, f"{kind} {name!r} was not among the files: its metrics are not imported"
                )
                continue
            self._template(template, args, f"{kind} {name}")
        for key in ("dryRun", "measurementRetention"):
            if key in analysis:
                self.notes.add(f"{path}.{key}", "not expressed")

    def _args(self, items: list[Any], path: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i, item in enumerate(items):
            item = mapping(item)
            name = text(item.get("name"))
            if "value" in item:
                out[name] = str(item["value"])
                continue
            source = mapping(item.get("valueFrom"))
            field = text(mapping(source.get("fieldRef")).get("fieldPath"))
            resolved = self._field(field) if field else None
            if resolved is None:
                what = f"fieldRef {field}" if field else next(iter(source), "no value")
                self.notes.add(
                    f"{path}[{i}]",
                    f"argument {name} comes from {what}, which graylane cannot supply: "
                    "metrics using it are not imported",
                )
            out[name] = resolved
        return out

    def _field(self, field: str) -> str | None:
        if field == "metadata.name":
            return self.name
        if field == "metadata.namespace":
            return self.namespace
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field)
        if m:
            found = mapping(self.meta.get(m.group(1))).get(m.group(2))
            return str(found) if found is not None else None
        return None

    def _template(self, template: Mapping[str, Any], args: Mapping[str, str | None], source: str) -> None:
        spec = mapping(template.get("spec"))
        values: dict[str, str | None] = {}
        for item in seq(spec.get("args")):
            item = mapping(item)
            if "value" in item:
                values[text(item.get("name"))] = str(item["value"])
        values |= {k: v for k, v in args.items()}
        known = {f"args.{k}": v for k, v in values.items() if v is not None}
        for i, metric in enumerate(seq(spec.get("metrics"))):
            self._metric(mapping(metric), known, f"{source}: spec.metrics[{i}]")
        if seq(spec.get("dryRun")):
            self.notes.add(
                f"{source}: spec.dryRun", "graylane has no dry-run metrics: those metrics judge for real"
            )

    def _metric(self, metric: Mapping[str, Any], known: Mapping[str, str], path: str) -> None:
        name = text(metric.get("name"))
        provider = mapping(metric.get("provider"))
        prometheus = mapping(provider.get("prometheus"))
        if not prometheus:
            kinds = ", ".join(sorted(provider)) or "none"
            self.notes.add(
                path, f"metric {name!r}: provider {kinds} is not expressed (graylane reads Prometheus)"
            )
            return
        query = self._query(name, prometheus, known, path)
        if query is None:
            return
        bounds = self._bounds(metric, path, name)
        if bounds is None:
            return
        address, _ = substitute(text(prometheus.get("address")), known)
        if address:
            self.addresses.append(address)
        for key in ("authentication", "headers", "timeout", "insecure", "rangeQuery"):
            if key in prometheus:
                self.notes.add(f"{path}.provider.prometheus.{key}", "not expressed")
        self._stable_ingress_query(query, path, name)
        if any(
            m["query"] == query and all(m.get(k) == bounds.get(k) for k in ("min", "max"))
            for m in self.metrics
        ):
            return  # the same check named twice (pre- and post-promotion, background and inline)
        check = {"name": self._unique(dns_label(name)), "query": query, "judge": "threshold", **bounds}
        self.metrics.append(check)
        self._metric_settings(metric, path, name)

    def _query(
        self, name: str, prometheus: Mapping[str, Any], known: Mapping[str, str], path: str
    ) -> str | None:
        """The metric's query with the template's arguments substituted (None, noted, when it cannot be)."""
        query, missing = substitute(text(prometheus.get("query")), known)
        if not query:
            self.notes.add(path, f"metric {name!r} has no query")
            return None
        if missing:
            self.notes.add(
                path,
                f"metric {name!r}: {', '.join('{{' + m + '}}' for m in missing)} cannot be "
                "resolved: the metric is not imported",
            )
            return None
        return query

    def _metric_settings(self, metric: Mapping[str, Any], path: str, name: str) -> None:
        """The metric's interval and limits (the analysis takes the least of each), notes for the rest."""
        interval = seconds(metric.get("interval"))
        if interval:
            self.intervals.append(interval)
        for key, limits in (
            ("failureLimit", self.failure_limits),
            ("inconclusiveLimit", self.inconclusive_limits),
        ):
            raw = metric.get(key)
            if raw is not None:
                limit = int(raw) if str(raw).isdigit() else None
                if limit is None:
                    self.notes.add(f"{path}.{key}", f"{raw!r} is not expressed (not a number)")
                else:
                    limits.append(limit)
        if "count" in metric:
            self.notes.add(
                f"{path}.count",
                f"metric {name!r}: graylane measures every interval while the stage runs, not a fixed count",
            )
        for key in ("initialDelay", "consecutiveErrorLimit", "consecutiveSuccessLimit"):
            if key in metric:
                self.notes.add(
                    f"{path}.{key}",
                    f"metric {name!r}: not expressed (graylane's minRequests and "
                    "inconclusiveLimit guard a thin or failing measurement)",
                )

    def _stable_ingress_query(self, query: str, path: str, name: str) -> None:
        """ingress-nginx labels requests by Ingress: a query on the stable Ingress measures stable traffic."""
        routing = mapping(mapping(mapping(self.spec.get("strategy")).get("canary")).get("trafficRouting"))
        stable = text(mapping(routing.get("nginx")).get("stableIngress"))
        if stable and re.search(r'ingress\s*=\s*"' + re.escape(stable) + '"', query):
            self.notes.add(
                path,
                f'metric {name!r} selects ingress="{stable}", the stable Ingress: graylane\'s canary '
                f"Ingress is {stable}-canary (Argo's is another one too), so as written it measures "
                "the stable version; the built-in template success-rate measures the canary",
            )

    def _unique(self, name: str) -> str:
        taken = {m["name"] for m in self.metrics}
        candidate, n = name, 2
        while candidate in taken:
            candidate = f"{name[:60]}-{n}"
            n += 1
        return candidate

    def _bounds(self, metric: Mapping[str, Any], path: str, name: str) -> dict[str, float] | None:
        """min/max of a threshold judge from the metric's conditions; None (noted) when not expressible."""
        success, failure = text(metric.get("successCondition")), text(metric.get("failureCondition"))
        if success:
            found = _condition(success, pass_when=True)
            if found is None:
                self.notes.add(
                    f"{path}.successCondition",
                    f"metric {name!r}: {success!r} is not expressed (graylane "
                    "judges result[0] against a min and a max): not imported",
                )
                return None
            bounds, remarks = found
            if failure:
                self.notes.add(
                    f"{path}.failureCondition",
                    f"metric {name!r}: graylane judges by the successCondition "
                    "alone; values that are neither (Argo's inconclusive) fail",
                )
        elif failure:
            found = _condition(failure, pass_when=False)
            if found is None:
                self.notes.add(
                    f"{path}.failureCondition", f"metric {name!r}: {failure!r} is not expressed: not imported"
                )
                return None
            bounds, remarks = found
        else:
            self.notes.add(path, f"metric {name!r} has no successCondition or failureCondition: not imported")
            return None
        for remark in remarks:
            self.notes.add(path, f"metric {name!r}: {remark}")
        return bounds

    def _analysis_section(self) -> dict[str, Any]:
        if not self.metrics:
            return {}
        analysis: dict[str, Any] = {"metrics": self.metrics}
        if self.start_step > 1:
            analysis["startStep"] = self.start_step
        if self.intervals:
            analysis["interval"] = duration(min(self.intervals))
            if len(set(self.intervals)) > 1:
                self.notes.add(
                    "",
                    f"metric intervals differ ({', '.join(duration(i) for i in sorted(set(self.intervals)))}): "
                    f"graylane looks at every metric every {duration(min(self.intervals))}",
                )
        if self.failure_limits:
            analysis["failureLimit"] = min(self.failure_limits) + 1
            if len(set(self.failure_limits)) > 1:
                self.notes.add(
                    "",
                    "failureLimits differ per metric: graylane counts failed verdicts of all metrics "
                    f"together and uses the smallest ({min(self.failure_limits)})",
                )
        if self.inconclusive_limits:
            analysis["inconclusiveLimit"] = min(self.inconclusive_limits) + 1
            self.notes.add(
                "",
                "inconclusiveLimit: graylane pauses after that many inconclusive verdicts in a row "
                "(Argo counts them in total)",
            )
        if self.addresses:
            analysis["prometheus"] = self.addresses[0]
            if len(set(self.addresses)) > 1:
                self.notes.add("", f"several Prometheus addresses: graylane asks one, {self.addresses[0]}")
        return analysis


class _Steps:
    """Argo's canary steps -> graylane stages (canary step lists, gates, A/B tests)."""

    def __init__(self, rollout: _Rollout, steps: list[Any], start: int, router: Mapping[str, Any]) -> None:
        self.r = rollout
        self.steps = steps
        self.start = start
        self.router = router
        self.out: list[dict[str, Any]] = []
        self.current: list[dict[str, Any]] = []  # the canary steps being collected
        self.current_analysed = False
        self.weight = 0
        self.header: dict[str, Any] | None = None  # the open A/B stage
        self.gates = 0

    def stages(self) -> list[dict[str, Any]]:
        for i, step in enumerate(self.steps):
            step, path = mapping(step), f"spec.strategy.canary.steps[{i}]"
            analysed = i >= self.start
            if "setWeight" in step:
                self._close_header(path, weighted=True)
                weight = step["setWeight"]
                if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                    self.r.notes.add(f"{path}.setWeight", f"{weight!r} is not a weight 0..100: step skipped")
                    continue
                if self.current and analysed != self.current_analysed:
                    self._close_canary()
                self.current_analysed = analysed
                self.weight = weight
                self.current.append({"weight": weight, "pause": 0.0})
            elif "pause" in step:
                self._pause(mapping(step.get("pause")) if step.get("pause") is not None else {}, path, i)
            elif "setHeaderRoute" in step:
                self._header(mapping(step["setHeaderRoute"]), path, analysed)
            elif "experiment" in step and self._baseline(mapping(step["experiment"]), f"{path}.experiment"):
                pass
            elif "analysis" in step:
                self.r._templates(mapping(step["analysis"]), f"{path}.analysis")
                self.r.notes.add(
                    f"{path}.analysis",
                    "the inline analysis runs as graylane's continuous analysis of the "
                    "steps from here on, not as a blocking run",
                )
                self.start = min(self.start, i)
            else:
                kind = next(iter(step), "?")
                what = {
                    "setCanaryScale": "graylane scales the canary like the stable Deployment",
                    "setMirrorRoute": "not expressed: graylane mirrors in a mirror stage, with no live traffic on the "
                    "canary and no match rules, not beside weights",
                    "experiment": "graylane runs no experiments (baseline/canary ReplicaSets)",
                    "plugin": "step plugins are not expressed",
                }.get(kind, "not expressed")
                self.r.notes.add(f"{path}.{kind}", what)
        self._close_header("spec.strategy.canary.steps", weighted=False)
        self._close_canary()
        if not any("canary" in s or "abtest" in s for s in self.out):
            self.out.append({"canary": {"steps": [{"weight": 100, "pause": "0s"}]}})
        stages, self.r.start_step = _with_start_step(self.out)
        return stages

    def _baseline(self, experiment: Mapping[str, Any], path: str) -> bool:
        """An experiment running the stable's spec (`specRef: stable`) beside the canary's is a fresh baseline:
        graylane's spec.baseline (where the router can split three ways), compared with the canary by
        spec.analysis; the experiment's own duration, weights and analyses are not expressed."""
        from functions.core.capabilities import table

        refs = [text(mapping(t).get("specRef")) for t in seq(experiment.get("templates"))]
        provider = text(self.router.get("provider"))
        if "stable" not in refs or "baseline" not in table().get(provider, frozenset()):
            return False
        self.r.baseline = True
        self.r.notes.add(
            path,
            "the template with specRef stable became graylane's fresh baseline (spec.baseline): a "
            "Deployment of the stable's image beside the canary in every canary stage, at the "
            "canary's weight, which spec.analysis compares the canary with; the experiment's "
            "duration, template weights and analyses are not expressed",
        )
        return True

    def _pause(self, pause: Mapping[str, Any], path: str, i: int) -> None:
        raw = pause.get("duration")
        last = i == len(self.steps) - 1
        if raw is None:  # indefinite: wait for a person
            self.gates += 1
            name = "promote" if last else f"pause-{self.gates}"
            self._close_header(path, weighted=False, gate=name)
            if not self.current and not self.out:
                self.current.append({"weight": self.weight, "pause": 0.0})
            self._close_canary()
            self.out.append({"approval": {"name": name}})
            return
        value_s = seconds(raw)
        if value_s is None:
            self.r.notes.add(f"{path}.pause.duration", f"{raw!r} is not a duration: pause skipped")
            return
        if self.header is not None:
            self.header["duration"] = self.header.get("duration", 0.0) + value_s
        elif self.current:
            self.current[-1]["pause"] += value_s
        else:  # a pause before any weight: hold at 0 %
            self.current.append({"weight": 0, "pause": value_s})

    def _header(self, route: Mapping[str, Any], path: str, analysed: bool) -> None:
        matches = seq(route.get("match"))
        if not matches:  # removes the header route
            self._close_header(path, weighted=False)
            return
        if self.router.get("provider") == "traefik" and not self.router.get("ingressRoute"):
            self.r.notes.add(
                path,
                "header routing needs graylane's traefik router to own an IngressRoute (router "
                "option ingressRoute; a TraefikService only weighs): the header route is not "
                "expressed",
            )
            return
        rules = []
        for j, m in enumerate(matches):
            m = mapping(m)
            rule = header_rule(
                text(m.get("headerName")), mapping(m.get("headerValue")), f"{path}.match[{j}]", self.r.notes
            )
            if rule:
                rules.append(rule)
        if not rules:
            return
        self._close_canary()
        if self.weight:
            self.r.notes.add(
                path,
                f"during the header route Argo keeps {self.weight} % of the other traffic on the "
                "canary; graylane's A/B stage sends only the matching requests there",
            )
        self.header = {"match": rules, "analysis": analysed}

    def _close_header(self, path: str, weighted: bool, gate: str = "") -> None:
        if self.header is None:
            return
        body = self.header
        wait = body.pop("duration", 0.0)
        body["duration"] = duration(wait) if wait else "1s"
        if not wait and gate:
            self.r.notes.add(
                path, f"the A/B stage lasts 1s, then its routes stay while the release waits at gate {gate}"
            )
        elif not wait:
            self.r.notes.add(path, "the header route has no timed pause: the A/B stage lasts 1s")
        if weighted:
            self.r.notes.add(
                path,
                "Argo keeps the header route while the weights change; graylane's canary steps "
                "clear the A/B rules",
            )
        self.out.append({"abtest": body})
        self.header = None

    def _close_canary(self) -> None:
        if not self.current:
            return
        steps = [{"weight": s["weight"], "pause": duration(s["pause"])} for s in self.current]
        self.out.append({"canary": {"steps": steps, "analysis": self.current_analysed}})
        self.current = []
        self.current_analysed = False


def _with_start_step(stages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Merge an unanalysed canary stage into the analysed one right after it as `startStep`, when that is the
    policy's only analysed canary stage and its last canary stage (startStep counts in every canary stage)."""
    canaries = [i for i, s in enumerate(stages) if "canary" in s]
    analysed = [i for i in canaries if stages[i]["canary"].get("analysis") is not False]
    if len(analysed) != 1 or analysed[0] != canaries[-1] or analysed[0] - 1 not in canaries:
        for i in canaries:  # graylane's default: a stage is analysed when the policy has an analysis
            if stages[i]["canary"].get("analysis") is True:
                del stages[i]["canary"]["analysis"]
        return stages, 1
    first, second = stages[analysed[0] - 1]["canary"], stages[analysed[0]]["canary"]
    for i in canaries:
        if stages[i]["canary"].get("analysis") is True:
            del stages[i]["canary"]["analysis"]
    merged = {"canary": {"steps": first["steps"] + second["steps"]}}
    return [*stages[: analysed[0] - 1], merged, *stages[analysed[0] + 1 :]], len(first["steps"]) + 1


def _condition(condition: str, pass_when: bool) -> tuple[dict[str, float], list[str]] | None:
    """Threshold bounds of `result[0] > 0.9 && result[0] < 2` (a success, or with pass_when=False a failure condition)."""
    remarks: list[str] = []
    body = condition.strip()
    empty_ok = re.match(
        r"^\s*(len\(result\)\s*==\s*0|isNaN\(result(?:\[0\])?\)|isInf\(result(?:\[0\])?\))\s*\|\|\s*", body
    )
    if empty_ok:
        remarks.append(
            f"{empty_ok.group(1)} passes in Argo; in graylane no data is inconclusive, never a pass"
        )
        body = body[empty_ok.end() :]
    parts = [p.strip().strip("()") for p in body.split("&&")] if pass_when else [body.strip().strip("()")]
    if not pass_when and "||" in body:
        parts = [p.strip().strip("()") for p in body.split("||")]
    bounds: dict[str, float] = {}
    for part in parts:
        m = _CONDITION.fullmatch(part)
        if not m:
            return None
        written, value = m.group(1), whole(float(m.group(2)))
        op = written if pass_when else {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!="}[written]
        key = {">": "min", ">=": "min", "<": "max", "<=": "max"}.get(op)
        if key:
            bounds[key] = (
                max(bounds.get(key, value), value) if key == "min" else min(bounds.get(key, value), value)
            )
            if op in (">", "<"):  # graylane's bounds are inclusive
                remarks.append(
                    f"{'passing' if pass_when else 'failing'} at result[0] {written} {value:g} became "
                    f"{key} {value:g}: graylane's bounds are inclusive, so exactly {value:g} passes"
                )
        elif op == "==":
            bounds["min"], bounds["max"] = value, value
        else:
            return None
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        return None
    return bounds, remarks
