"""Persisted transitions per second through the runner on the real kube-apiserver, 1,000 releases."""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from functions.providers.recording import RecordingProviders
from functions.runner import Runner
from tests.bench.registry import suite
from tests.support import Clock, StaticPolicies, canary_policy, push, tick

TARGET = 100.0  # persisted transitions/s from one process


def _transitions(runner_for: Any, events: list[Any], workers: int) -> tuple[int, float]:
    local = threading.local()

    def handle(event: Any) -> int:
        if not hasattr(local, "runner"):
            local.runner = runner_for()
        return sum(o.status == "transitioned" for o in local.runner.handle(event))

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(handle, events))
    return done, time.perf_counter() - started


@suite("store")
def bench_store(args: argparse.Namespace) -> dict[str, Any]:
    from kubernetes import client

    from functions.providers.stores.configmap import ConfigMapStore
    from tests.k8s.cluster import KubeCluster

    n = 200 if args.quick else 1000
    cluster = KubeCluster.start()
    try:
        ns = "bench"
        with cluster.api_client() as api:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        policies = StaticPolicies([canary_policy(name=f"app{i}", namespace=ns) for i in range(n)])
        clock, providers = Clock(), RecordingProviders()

        def runner_for() -> Runner:
            return Runner(
                ConfigMapStore(cluster.api_client(), namespaces=[ns]), policies, providers, clock=clock
            )

        apps = [p.app for p in policies.policies]
        _transitions(runner_for, [push(a, "v1") for a in apps], 4)  # setup: every app gets a stable version
        results: dict[str, Any] = {"releases": n}
        rows = []
        for workers, version in ((1, "v2"), (4, "v3")):
            done, secs = _transitions(runner_for, [push(a, version) for a in apps], workers)
            rate = done / secs
            results[f"start_{workers}_threads"] = {"transitions": done, "seconds": secs, "per_s": rate}
            rows.append(
                (
                    f"release start, persisted transitions/s ({workers} thread{'s' * (workers > 1)})",
                    f"{rate:,.0f}",
                    f">= {TARGET:.0f}",
                    "ok" if rate >= TARGET else "MISS",
                )
            )
        clock.advance(10)
        done, secs = _transitions(runner_for, [tick(a) for a in apps], 4)
        results["tick_4_threads"] = {"transitions": done, "seconds": secs, "per_s": done / secs}
        rows.append(
            (
                "analysis tick over 1,000 releases, transitions/s (4 threads)"
                if n == 1000
                else f"analysis tick over {n} releases, transitions/s (4 threads)",
                f"{done / secs:,.0f}",
                f">= {TARGET:.0f}",
                "ok" if done / secs >= TARGET else "MISS",
            )
        )
        results["rows"] = rows
        return results
    finally:
        cluster.stop()
