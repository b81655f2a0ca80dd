"""Flagger `Canary` (+ its `MetricTemplate`s) -> a graylane policy. Pure.

What maps to what (anything else is reported as a `Note`):

- `analysis.stepWeight` / `maxWeight` (weights stepWeight, 2*stepWeight, ... until one reaches maxWeight,
  as Flagger's scheduler does) or `stepWeights`: canary steps, each held one `interval`; Flagger then
  promotes, so does graylane. `threshold` (failed checks before rollback) is `failureLimit`.
- `iterations` with `match`: an A/B test (`abtest`) of iterations x interval; each `match` entry is one
  graylane rule (entries are OR-ed in both), `headers` exact / regex / prefix / suffix; `iterations`
  without `match` (or provider `kubernetes`): blue/green (`bluegreen` with that preview time).
- `metrics`: the builtin `request-success-rate` (percent) becomes template success-rate with `min` / 100,
  `request-duration` (P99, ms) template latency (graylane's is the P95), a `templateRef` to a Prometheus
  `MetricTemplate` a custom `query:` with Flagger's variables (`name`, `namespace`, `target`, `service`,
  `ingress`, `interval`, `variables.*`) substituted; `thresholdRange` min / max; the metric `interval` is
  the query window.
- `provider` (spec.provider, else Flagger's default mesh, Istio): istio -> istio, nginx -> nginx
  (`ingressRef`), traefik -> traefik (the TraefikService Flagger names after the Service), gatewayapi ->
  gateway-api (the HTTPRoute named after the Service); others become gateway-api over the same Services,
  reported.
- webhooks: `confirm-rollout` becomes a gate `confirm-rollout` before traffic moves, `confirm-promotion`
  gate `promote` before promotion, `event` a `webhook` notifier; load tests and other hooks are reported.
- Flagger's target Deployment `<name>` is the canary and `<name>-primary` the stable, as in graylane's
  workload pair; the Services are `<service>-primary` and `<service>-canary`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from functions.core.policy import HOOK_TYPES
from functions.importers.common import (
    FALLBACK_ROUTER,
    Imported,
    Notes,
    compact,
    deployment_container,
    dns_label,
    duration,
    header_rule,
    image_repository,
    ingress_host,
    mapping,
    number,
    policy_document,
    seconds,
    seq,
    substitute,
    text,
    whole,
)

CANARY = "Canary"
METRIC_TEMPLATE = "MetricTemplate"
DEFAULT_INTERVAL = 60.0  # Flagger's analysis interval when none is set (and its minimum is 10 s)
_BUILTIN = {"request-success-rate": "success-rate", "request-duration": "latency"}


def convert(
    canary: Mapping[str, Any],
    templates: Mapping[tuple[str, str], Mapping[str, Any]],
    objects: Sequence[Mapping[str, Any]] = (),
) -> Imported:
    """The policy for one Canary; `templates` by (namespace, name); `objects` the other files' objects."""
    return _Canary(canary, templates, list(objects)).convert()


class _Canary:
    def __init__(
        self,
        canary: Mapping[str, Any],
        templates: Mapping[tuple[str, str], Mapping[str, Any]],
        objects: list[Mapping[str, Any]],
    ) -> None:
        meta = mapping(canary.get("metadata"))
        self.name = text(meta.get("name")) or "canary"
        self.namespace = text(meta.get("namespace")) or "default"
        self.spec = mapping(canary.get("spec"))
        self.target = text(mapping(self.spec.get("targetRef")).get("name")) or self.name
        self.service = mapping(self.spec.get("service"))
        self.service_name = text(self.service.get("name")) or self.target
        self.ingress = text(mapping(self.spec.get("ingressRef")).get("name"))
        self.analysis = mapping(self.spec.get("analysis") or self.spec.get("canaryAnalysis"))
        self.templates = templates
        self.objects = objects
        self.notes = Notes()
        self.interval = max(10.0, seconds(self.analysis.get("interval")) or DEFAULT_INTERVAL)

    def convert(self) -> Imported:
        provider = text(self.spec.get("provider"))
        if not provider:
            provider = "istio"
            self.notes.add("spec.provider", "not set: Flagger's default mesh provider, istio, is assumed")
        spec: dict[str, Any] = {
            "image": {"repository": self._image()},
            "workload": self._workload(),
            "router": self._router(provider),
        }
        spec["analysis"] = self._analysis()
        spec["stages"] = self._stages(provider)
        spec["hooks"], spec["notify"] = self._webhooks(bool(spec["analysis"]))
        if "sessionAffinity" in self.analysis:
            affinity = self._affinity(mapping(self.analysis["sessionAffinity"]), spec)
            if affinity:
                spec["sessionAffinity"] = affinity
        for key, why in (
            ("skipAnalysis", "graylane always analyses when the policy has an analysis"),
            ("progressDeadlineSeconds", "graylane waits for workloads on every tick, without a deadline"),
            (
                "autoscalerRef",
                "not needed: the canary gets an HPA derived from the one scaling the stable "
                "Deployment, its bounds scaled to its traffic share",
            ),
            ("suspend", "use graylane pause / resume"),
            ("revertOnDeletion", "not expressed"),
        ):
            if key in self.spec:
                self.notes.add(f"spec.{key}", why)
        for key in (
            "trafficPolicy",
            "retries",
            "timeout",
            "corsPolicy",
            "headers",
            "rewrite",
            "match",
            "delegation",
            "backends",
            "apex",
            "primary",
            "canary",
            "mirror",
        ):
            if key in self.service:
                self.notes.add(
                    f"spec.service.{key}",
                    "not expressed: graylane writes only the weights and A/B rules of the route",
                )
        return Imported(
            f"Canary {self.namespace}/{self.name}",
            policy_document(self.name, self.namespace, spec, self.notes),
            tuple(self.notes.items),
        )

    # -- workload and image ----------------------------------------------------------------------------------
    def _image(self) -> str:
        image = text(deployment_container(self.objects, self.target).get("image"))
        if image:
            return image_repository(image)
        repository = f"registry.example.com/{self.namespace}/{self.target}"
        self.notes.add(
            "spec.targetRef",
            f"Deployment {self.target} was not among the files: spec.image.repository is "
            f"the placeholder {repository}, set it",
        )
        return repository

    def _workload(self) -> dict[str, Any]:
        container = text(deployment_container(self.objects, self.target).get("name"))
        return compact({"name": f"{self.target}-primary", "canary": self.target, "container": container})

    # -- router ------------------------------------------------------------------------------------------------
    def _router(self, provider: str) -> dict[str, Any]:
        kind = provider.split(":", 1)[0].split(".", 1)[0]
        services = {
            "stableService": f"{self.service_name}-primary",
            "canaryService": f"{self.service_name}-canary",
        }
        port = self.service.get("port")
        with_port = {"port": port} if isinstance(port, int) and not isinstance(port, bool) else {}
        hosts = [h for h in seq(self.service.get("hosts")) if isinstance(h, str) and h]
        if kind == "istio":
            gateways = [g for g in seq(self.service.get("gateways")) if isinstance(g, str) and g]
            self.notes.add(
                "spec.provider",
                f"graylane's istio router splits host {self.service_name} between "
                "DestinationRule subsets stable and canary (labels app: <workload>), where "
                f"Flagger splits between Services {services['stableService']} and "
                f"{services['canaryService']}; graylane creates the DestinationRule "
                f"{self.service_name} if it is missing, and the Service "
                f"{self.service_name} must select both versions' pods (Flagger points it "
                "at the primary's only)",
            )
            if len(hosts) > 1 or (hosts and hosts[0] != self.service_name):
                self.notes.add(
                    "spec.service.hosts",
                    "graylane's VirtualService routes the Service host; the extra "
                    f"hosts {', '.join(hosts)} are not expressed",
                )
            return compact(
                {
                    "provider": "istio",
                    "virtualService": self.service_name,
                    "destinationRule": self.service_name,
                    "host": self.service_name,
                    "gateways": gateways,
                }
            )
        if kind == "nginx":
            ingress = self.ingress or self.target
            return compact(
                {
                    "provider": "nginx",
                    "stableIngress": ingress,
                    **services,
                    **with_port,
                    "host": ingress_host(self.objects, ingress),
                }
            )
        if kind == "traefik":
            return compact(
                {"provider": "traefik", "traefikService": self.service_name, **services, **with_port}
            )
        if kind == "gatewayapi":
            refs = [mapping(r) for r in seq(self.service.get("gatewayRefs"))]
            parent = (
                compact({"name": text(refs[0].get("name")), "namespace": text(refs[0].get("namespace"))})
                if refs
                else {}
            )
            if len(refs) > 1:
                self.notes.add(
                    "spec.service.gatewayRefs", "graylane attaches the HTTPRoute to one Gateway: the first"
                )
            return compact(
                {
                    "provider": "gateway-api",
                    "httpRoute": self.service_name,
                    **services,
                    **with_port,
                    "parentRef": parent or None,
                    "host": hosts[0] if hosts else "",
                }
            )
        what = (
            "blue/green by Service selectors (provider kubernetes)"
            if kind == "kubernetes"
            else f"provider {provider}"
        )
        self.notes.add(
            "spec.provider",
            f"{what}: graylane needs a traffic router it has (traefik, istio, gateway-api, "
            f"nginx, haproxy); the policy uses {FALLBACK_ROUTER} with an HTTPRoute "
            f"{self.service_name} over the same Services: change it to yours",
        )
        return compact({"provider": FALLBACK_ROUTER, "httpRoute": self.service_name, **services, **with_port})

    # -- stages ------------------------------------------------------------------------------------------------
    def _stages(self, provider: str) -> list[dict[str, Any]]:
        a, path = self.analysis, "spec.analysis"
        pause = duration(self.interval)
        iterations = a.get("iterations")
        iterations = (
            iterations
            if isinstance(iterations, int) and not isinstance(iterations, bool) and iterations > 0
            else 0
        )
        matches = seq(a.get("match"))
        stages: list[dict[str, Any]] = []
        if matches and iterations:
            rules = []
            for i, m in enumerate(matches):
                rule = self._match(mapping(m), f"{path}.match[{i}]")
                if rule:
                    rules.append(rule)
            if rules:
                stages.append({"abtest": {"match": rules, "duration": duration(self.interval * iterations)}})
            else:
                self.notes.add(
                    f"{path}.match",
                    "no match condition could be expressed: the A/B test becomes a blue/green preview",
                )
                stages.append({"bluegreen": {"preview": duration(self.interval * iterations)}})
            for key in ("stepWeight", "maxWeight", "stepWeights"):
                if key in a:
                    self.notes.add(f"{path}.{key}", "ignored with match, as Flagger does")
        elif iterations and a.get("mirror") is True and provider.split(".")[0] == "istio":
            # Flagger's blue/green with traffic mirroring (Istio): the iterations mirror mirrorWeight % (default
            # 100) of the requests to green, whose answers are discarded; then the switch, graylane's promotion
            weight = a.get("mirrorWeight", 100)
            if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
                self.notes.add(
                    f"{path}.mirrorWeight", f"{weight!r} is not a percentage 1..100: 100 is mirrored"
                )
                weight = 100
            stages.append({"mirror": {"percent": weight, "duration": duration(self.interval * iterations)}})
        elif iterations or provider == "kubernetes":
            stages.append({"bluegreen": {"preview": duration(self.interval * max(iterations, 1))}})
            if a.get("mirror") is True:
                self.notes.add(
                    f"{path}.mirror",
                    "graylane mirrors on routers istio, traefik and gateway-api; this "
                    "one gets none: green gets no traffic before the switch",
                )
        else:
            weights = self._weights()
            stages.append({"canary": {"steps": [{"weight": w, "pause": pause} for w in weights]}})
            if a.get("mirror") is True:
                self.notes.add(
                    f"{path}.mirror",
                    "not expressed: graylane mirrors in a mirror stage (no live traffic on "
                    "the canary); add one before the canary stage",
                )
        if "stepWeightPromotion" in a and a.get("stepWeightPromotion") not in (0, 100):
            self.notes.add(
                f"{path}.stepWeightPromotion",
                "graylane promotes in one switch (stable workload first, then all traffic)",
            )
        for key in ("primaryReadyThreshold", "canaryReadyThreshold", "alerts"):
            if key in a:
                self.notes.add(
                    f"{path}.{key}", "not expressed" + (": use spec.notify" if key == "alerts" else "")
                )
        return stages

    def _affinity(self, given: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """Flagger's sessionAffinity (cookieName, maxAge) as spec.sessionAffinity, where the router can pin clients."""
        from functions.core import capabilities

        path = "spec.analysis.sessionAffinity"
        cookie: dict[str, Any] = {"name": text(given.get("cookieName")) or "graylane-affinity"}
        max_age = given.get("maxAge", 86400)  # Flagger's default
        if isinstance(max_age, int) and not isinstance(max_age, bool) and max_age > 0:
            cookie["maxAge"] = max_age
        wanted = {"cookie": cookie}
        doc = {"spec": {**spec, "sessionAffinity": wanted}}
        refused = [
            m
            for p, m in capabilities.unsupported(text(spec["router"].get("provider")), doc)
            if p.startswith("spec.sessionAffinity")
        ]
        if refused:
            self.notes.add(path, "not expressed: " + "; ".join(refused))
            return {}
        if not any("canary" in stage for stage in spec.get("stages") or []):
            self.notes.add(
                path, "not expressed: graylane pins clients while a canary stage weighs the traffic"
            )
            return {}
        self.notes.add(
            path,
            "graylane pins stable and canary clients alike (primaryCookieName is not needed) and "
            "re-rolls every client at each weight change, where Flagger keeps canary clients on "
            "the canary (see the README's Session affinity)",
        )
        return wanted

    def _weights(self) -> list[int]:
        a, path = self.analysis, "spec.analysis"
        listed = [
            w
            for w in seq(a.get("stepWeights"))
            if isinstance(w, int) and not isinstance(w, bool) and 0 < w <= 100
        ]
        if seq(a.get("stepWeights")):
            if len(listed) != len(seq(a.get("stepWeights"))):
                self.notes.add(f"{path}.stepWeights", "weights outside 1..100 were left out")
            return sorted(set(listed)) or [100]
        step = a.get("stepWeight")
        step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 0
        top = a.get("maxWeight")
        top = top if isinstance(top, int) and not isinstance(top, bool) and 0 < top <= 100 else 100
        if not step:
            self.notes.add(f"{path}.stepWeight", "not set: one step at maxWeight")
            return [top]
        weights, weight = [], 0
        while weight < top:  # Flagger's scheduler: add stepWeight until the weight reaches maxWeight
            weight = min(100, weight + step)
            weights.append(weight)
        return weights

    def _match(self, match: Mapping[str, Any], path: str) -> dict[str, Any] | None:
        headers = mapping(match.get("headers"))
        others = sorted(set(match) - {"headers"})
        if others:
            self.notes.add(path, f"{', '.join(others)} matching is not expressed: the condition is left out")
            return None
        if len(headers) != 1:
            self.notes.add(
                path,
                "several headers that must all match (AND) are not expressed: graylane's rules "
                "are alternatives; the condition is left out"
                if headers
                else "an empty condition",
            )
            return None
        ((name, matcher),) = headers.items()
        return header_rule(str(name), mapping(matcher), f"{path}.headers.{name}", self.notes)

    # -- analysis ----------------------------------------------------------------------------------------------
    def _analysis(self) -> dict[str, Any]:
        a = self.analysis
        metrics: list[dict[str, Any]] = []
        windows: list[float] = []
        addresses: list[str] = []
        for i, metric in enumerate(seq(a.get("metrics"))):
            metric, path = mapping(metric), f"spec.analysis.metrics[{i}]"
            check, window, address = self._metric(metric, path, {m["name"] for m in metrics})
            if check is not None:
                metrics.append(check)
                if window:
                    windows.append(window)
                if address:
                    addresses.append(address)
        if not metrics:
            return {}
        out: dict[str, Any] = {"interval": duration(self.interval), "metrics": metrics}
        threshold = a.get("threshold")
        out["failureLimit"] = (
            threshold
            if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold > 0
            else 1
        )
        if windows:
            out["window"] = duration(max(windows))
            if len(set(windows)) > 1:
                self.notes.add(
                    "spec.analysis.metrics",
                    "metric intervals (query windows) differ: graylane's built-in "
                    f"templates use one window, {duration(max(windows))}",
                )
        if addresses:
            out["prometheus"] = addresses[0]
            if len(set(addresses)) > 1:
                self.notes.add(
                    "spec.analysis.metrics",
                    f"several Prometheus addresses: graylane asks one, {addresses[0]}",
                )
        return out

    def _metric(
        self, metric: Mapping[str, Any], path: str, taken: set[str]
    ) -> tuple[dict[str, Any] | None, float, str]:
        name = text(metric.get("name"))
        window = seconds(metric.get("interval")) or 0.0
        label = dns_label(name)
        while label in taken:
            label = f"{label[:60]}-2"
        if label != name:
            self.notes.add(path, f"metric {name!r} is named {label} (graylane metric names are DNS labels)")
        bounds = self._range(mapping(metric.get("thresholdRange")), path, name)
        if bounds is None:
            return None, 0.0, ""
        ref = mapping(metric.get("templateRef"))
        if not ref:
            found = self._builtin_metric(name, label, bounds, path)
            return (found, window, "") if found is not None else (None, 0.0, "")
        if metric.get("query"):
            self.notes.add(f"{path}.query", "the inline query is ignored: templateRef wins, as in Flagger")
        found, address = self._template_metric(metric, ref, name, label, bounds, path)
        return (found, window, address) if found is not None else (None, 0.0, "")

    def _builtin_metric(
        self, name: str, label: str, bounds: dict[str, float], path: str
    ) -> dict[str, Any] | None:
        """One of Flagger's builtin metrics as graylane's template of it (None, noted, for any other name)."""
        builtin = _BUILTIN.get(name)
        if builtin is None:
            self.notes.add(path, f"metric {name!r} is neither a builtin nor has a templateRef: not imported")
            return None
        if builtin == "success-rate":
            bounds = {k: whole(round(v / 100, 6)) for k, v in bounds.items()}
        else:
            self.notes.add(
                path, "request-duration is Flagger's P99; graylane's latency template is the P95 (ms)"
            )
        return {"name": label, "template": builtin, "judge": "threshold", **bounds}

    def _template_metric(
        self,
        metric: Mapping[str, Any],
        ref: Mapping[str, Any],
        name: str,
        label: str,
        bounds: dict[str, float],
        path: str,
    ) -> tuple[dict[str, Any] | None, str]:
        """A metric of a MetricTemplate as a graylane query metric, and the template's Prometheus address (None,
        noted, when the template is missing, not Prometheus, or its query cannot be resolved)."""
        key = (text(ref.get("namespace")) or self.namespace, text(ref.get("name")))
        template = self.templates.get(key) or self.templates.get(("", key[1]))
        if template is None:
            self.notes.add(
                f"{path}.templateRef",
                f"MetricTemplate {key[0]}/{key[1]} was not among the files: metric {name!r} is not imported",
            )
            return None, ""
        spec = mapping(template.get("spec"))
        provider = mapping(spec.get("provider"))
        if text(provider.get("type")) != "prometheus":
            self.notes.add(
                f"{path}.templateRef",
                f"MetricTemplate {key[1]}: provider {text(provider.get('type')) or '?'} "
                "is not expressed (graylane reads Prometheus)",
            )
            return None, ""
        values = {
            "name": self.name,
            "namespace": self.namespace,
            "target": self.target,
            "service": self.service_name,
            "ingress": self.ingress,
            "interval": text(metric.get("interval")) or duration(self.interval),
        }
        values |= {f"variables.{k}": str(v) for k, v in mapping(metric.get("templateVariables")).items()}
        query, missing = substitute(text(spec.get("query")), values)
        if missing or not query:
            what = ", ".join("{{ " + m + " }}" for m in missing) or "an empty query"
            self.notes.add(
                f"{path}.templateRef", f"MetricTemplate {key[1]}: {what} cannot be resolved: not imported"
            )
            return None, ""
        if "secretRef" in provider:
            self.notes.add(
                f"{path}.templateRef",
                f"MetricTemplate {key[1]}: provider.secretRef (Prometheus credentials) is not expressed",
            )
        query = re.sub(r"[ \t]+\n", "\n", query).strip() + "\n"
        return {"name": label, "query": query, "judge": "threshold", **bounds}, text(provider.get("address"))

    def _range(self, rng: Mapping[str, Any], path: str, name: str) -> dict[str, float] | None:
        bounds = {k: number(rng[k]) for k in ("min", "max") if k in rng}
        if not bounds or any(v is None for v in bounds.values()):
            self.notes.add(
                f"{path}.thresholdRange", f"metric {name!r} has no readable thresholdRange: not imported"
            )
            return None
        out = {k: whole(v) for k, v in bounds.items() if v is not None}
        if "min" in out and "max" in out and out["min"] > out["max"]:
            self.notes.add(f"{path}.thresholdRange", f"metric {name!r}: min > max: not imported")
            return None
        return out

    # -- webhooks ----------------------------------------------------------------------------------------------
    def _webhooks(self, analysed: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Flagger's webhooks as graylane's release hooks (the same types and points), its `event` webhooks as
        webhook notifiers, and a `hey` run through Flagger's load tester as graylane's own load hook."""
        hooks: list[dict[str, Any]] = []
        notify: list[dict[str, Any]] = []
        names: set[str] = set()
        for i, hook in enumerate(seq(self.analysis.get("webhooks"))):
            hook, path = mapping(hook), f"spec.analysis.webhooks[{i}]"
            kind, name, url = (
                text(hook.get("type")) or "rollout",
                text(hook.get("name")),
                text(hook.get("url")),
            )
            if not url.startswith(("http://", "https://")):
                self.notes.add(path, f"webhook {name!r}: no http(s) url; not expressed")
                continue
            if kind == "event":
                notify.append({"kind": "webhook", "url": url})
                self.notes.add(
                    path,
                    f"webhook {name!r} (event) became a webhook notifier: graylane posts its own "
                    "notice JSON (X-Graylane-Event), not Flagger's payload",
                )
                continue
            if kind not in HOOK_TYPES:
                self.notes.add(
                    path, f"webhook {name!r}: type {kind!r} is not one graylane has; not expressed"
                )
                continue
            if kind in ("rollout", "rollback") and not analysed:
                self.notes.add(
                    path,
                    f"webhook {name!r} ({kind}): graylane asks it with each analysis, and this "
                    "Canary has none that graylane could import; not expressed",
                )
                continue
            label = dns_label(name, f"hook-{i}")
            while label in names:
                label = dns_label(f"{label}-{i}", f"hook-{i}")
            names.add(label)
            metadata = {str(k): str(v) for k, v in mapping(hook.get("metadata")).items()}
            load = load_test(metadata.get("cmd", "")) if kind == "rollout" else None
            if load is not None and not any("loadTest" in h for h in hooks):
                hooks.append({"name": label, "type": "rollout", "loadTest": load})
                self.notes.add(
                    path,
                    f"webhook {name!r} (Flagger's load tester running hey) became graylane's load "
                    f"hook: hey against {load['url']} at {load['rps']} rps while the release is "
                    "analysed",
                )
                continue
            entry: dict[str, Any] = {"name": label, "type": kind, "url": url}
            timeout = seconds(hook.get("timeout"))
            if timeout:
                entry["timeout"] = duration(timeout)
            if isinstance(hook.get("retries"), int) and 0 <= hook["retries"] <= 10:
                entry["retries"] = hook["retries"]
            if metadata:
                entry["metadata"] = metadata
            hooks.append(entry)
            self.notes.add(
                path,
                f"webhook {name!r} ({kind}) became release hook {label!r}: graylane's JSON carries "
                "name, namespace, phase and metadata as Flagger's does (phase values are "
                "graylane's); 2xx means yes, as in Flagger",
            )
        return hooks, notify


_HEY_FLAGS = {"-z": "duration", "-q": "rate", "-c": "workers"}


def load_test(cmd: str) -> dict[str, Any] | None:
    """`hey -z 1m -q 10 -c 2 URL` (Flagger's load tester's command) as graylane's loadTest, or None when the
    command is something else (another tool, or options graylane's load hook would not send)."""
    words = cmd.split()
    if not words or words[0] != "hey":
        return None
    found: dict[str, str] = {}
    rest = words[1:]
    while len(rest) > 1 and rest[0] in _HEY_FLAGS:
        found[_HEY_FLAGS[rest[0]]], rest = rest[1], rest[2:]
    if len(rest) != 1 or not rest[0].startswith(("http://", "https://")):
        return None
    try:
        rate, workers = float(found.get("rate", "0")), int(found.get("workers", "50"))  # hey's defaults
    except ValueError:
        return None
    if rate <= 0:
        return None  # hey without -q sends as fast as it can: no rate to keep
    load: dict[str, Any] = {"url": rest[0], "rps": whole(rate * workers)}
    window = seconds(found.get("duration"))
    if window:
        load["duration"] = duration(window)
    return load
