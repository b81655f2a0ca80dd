"""What the console's tests share: a policy that analyses and waits at a gate, and a measure function for the
recording providers that gives verdicts believable values and the queries Prometheus would have been asked."""

from __future__ import annotations

import math
from typing import Any

from functions.core.events import MetricSample

APP = "team/web"
# alice may approve the promote gate and run everything else; bob may only pause (and so sees only Pause)
POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: web, namespace: team}
spec:
  image: {repository: docker.io/team/web}
  router: {provider: recording}
  analysis:
    interval: 10s
    metrics:
      - {name: success-rate, template: success-rate, judge: threshold, min: 0.95}
      - {name: latency, template: latency, judge: comparison, tolerance: 0.5, relative: true}
  approvers:
    default: {users: [alice]}
    gates: {promote: {users: [alice]}}
    actions: {pause: {users: [alice, bob]}}
  stages:
    - canary: {steps: [{weight: 20, pause: 20s}, {weight: 50, pause: 20s}]}
    - approval: {name: promote}
    - promote: {}
"""

QUERIES = {
    "success-rate": 'sum(rate(haproxy_server_http_responses_total{{proxy="web",server="{track}",code!="5xx"}}[1m])) / '
    'sum(rate(haproxy_server_http_responses_total{{proxy="web",server="{track}"}}[1m]))',
    "latency": 'avg(haproxy_server_response_time_average_seconds{{proxy="web",server="{track}"}}) * 1000',
}


def measure(policy: Any, release: Any) -> tuple[MetricSample, ...]:
    """Healthy but not flat: success rates around 99.6 % (stable) and 99.3 % (canary), latency near 40 ms."""
    n = len(release.verdicts)
    wobble = math.sin(n * 1.3)
    out = []
    for m in policy.analysis.metrics:
        if m.template == "success-rate":
            canary, stable = 0.993 + 0.003 * wobble, 0.996 + 0.001 * math.cos(n)
        elif m.template == "latency":
            canary, stable = 44.0 + 6.0 * wobble, 40.0 + 2.0 * math.cos(n * 0.7)
        else:
            canary = stable = 1.0
        query = QUERIES.get(m.template, "").format(track="web-canary") if m.template in QUERIES else m.query
        out.append(
            MetricSample(
                name=m.name,
                value=canary,
                stable_value=stable,
                canary_requests=5_000,
                canary_errors=int(5_000 * (1 - canary)) if m.template == "success-rate" else 0,
                stable_requests=20_000,
                stable_errors=80,
                query=query,
            )
        )
    return tuple(out)


def fast_policy() -> str:
    """POLICY with a release that reaches its gate in seconds (for a test against a real server)."""
    return POLICY.replace("interval: 10s", "interval: 1s").replace("pause: 20s", "pause: 3s")
