"""Shared fixtures of the ChatOps and approval API tests: a policy with approvers, a release waiting at a
gate (driven by the real runner on a MemoryStore), a MemoryBus, an audit log and the gateway app."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import StarletteDeprecationWarning

from functions import catalog
from functions.approvals import Approvals
from functions.audit import MemoryAuditLog
from functions.bus import MemoryBus
from functions.core.events import RELEASE_COMMAND, ImagePushed
from functions.core.state import Version
from functions.gateway import GatewaySettings, build_app
from functions.policies import DirectoryPolicies
from functions.providers.recording import RecordingProviders
from functions.providers.stores import MemoryStore
from functions.runner import Runner

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

APP = "pro/flask"
REPO = "registry.example.com/team/flask"
POLICY = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: flask, namespace: pro}
spec:
  image: {repository: registry.example.com/team/flask}
  router: {provider: recording}
  approvers:
    default: {users: [ops-lead, U024BE7LH, manager4567, ou_ops, zhangsan, alice],
              channels: ["#releases", "cid-releases", "oc_releases", "wr-releases"]}
    gates: {promote: {users: [alice, U024BE7LH]}}
    actions: {rollback: {users: [oncall]}}
  stages:
    - approval: {name: go, params: [{name: weight, default: 10, min: 1, max: 50}]}
    - canary: {weightParam: weight}
    - approval: {name: promote}
"""
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class World:
    store: MemoryStore
    policies: DirectoryPolicies
    bus: MemoryBus
    audit: MemoryAuditLog
    approvals: Approvals
    runner: Runner

    def client(self, *extra: Any) -> TestClient:
        app = build_app(GatewaySettings(), {}, self.bus, self.policies, extra_routes=list(extra))
        return TestClient(app, raise_server_exceptions=False)

    def commands(self) -> list[Any]:
        events = self.bus.of_type(RELEASE_COMMAND)
        for event in events:
            catalog.validate(event)  # every published command matches the catalog schema
        return events

    def deliver(self) -> None:
        """Hand the published commands to the runner, as the broker would."""
        for event in self.commands():
            self.runner.handle_cloudevent(event)


def world(tmp: Path, waiting: bool = True) -> World:
    (tmp / "flask.yaml").write_text(POLICY)
    store, policies, bus, audit = MemoryStore(), DirectoryPolicies(str(tmp)), MemoryBus(), MemoryAuditLog()
    runner = Runner(store, policies, RecordingProviders(), clock=lambda: NOW)
    if waiting:
        for i, tag in enumerate(("v1.0.0", "v1.1.0")):
            runner.handle(
                ImagePushed(
                    id=f"push-{i}", app=APP, target=Version(tag, f"{REPO}:{tag}"), repository=REPO, tag=tag
                )
            )
    return World(
        store, policies, bus, audit, Approvals(store, policies, bus, audit, clock=lambda: NOW), runner
    )
