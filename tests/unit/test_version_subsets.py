"""The per-version workload model (issue 12 item 7, `-k version_subsets`): one Deployment and one subset per
version, as Istio's Bookinfo runs `reviews` (reviews-v1, reviews-v2, each with its `version` label).

Promotion is a switch of the route to the new version's subset; the old version's Deployment stays warm for
keepPrevious, then is scaled down, never re-imaged; the next release creates the next version's Deployment.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from functions.core import slots
from functions.core.effects import STABLE_ONLY, Effect
from functions.core.policy import CanaryStage, CanaryStep, PromoteStage, RollbackMode, WorkloadSpec
from functions.core.policy_parse import parse_policy, problems, to_doc
from functions.core.state import AppState, Phase
from functions.providers.recording import RecordingProviders
from functions.providers.stores.memory import MemoryStore
from functions.runner import Runner
from tests.support import Clock, StaticPolicies, command, push, tick
from tests.unit.machine_helpers import FAIL, PASS, Driver, analysis, kinds, make_policy, version
from tests.unit.test_policy_parse import base

PER_VERSION = WorkloadSpec(
    name="reviews-v1", model="per-version", name_template="reviews-{version}", subset="v1"
)
STEPS = CanaryStage(steps=(CanaryStep(20, 60.0), CanaryStep(50, 60.0)))


def policy(keep_previous: float = 0.0, **changes: Any) -> Any:
    return make_policy(
        STEPS, PromoteStage(keep_previous=keep_previous), **{"workload": PER_VERSION, **changes}
    )


def started(keep_previous: float = 0.0, **changes: Any) -> Driver:
    d = Driver(policy(keep_previous, **changes))
    d.push("v1")  # the first image: what the user's reviews-v1 runs
    return d


def routed(e: Effect) -> tuple[str, str, int, int]:
    """(stable subset, canary subset or "", stable weight, canary weight) of a set-routes effect."""
    assert e.kind == "set-routes" and e.versions is not None and e.versions.stable is not None and e.routes
    canary = e.versions.canary.subset if e.versions.canary else ""
    return e.versions.stable.subset, canary, e.routes.stable, e.routes.canary


def workloads(effects: tuple[Effect, ...]) -> list[tuple[str, str]]:
    return [(e.kind, e.slot.workload) for e in effects if e.slot is not None]


def released(d: Driver, tag: str) -> None:
    """Push `tag` and run its canary steps to the promotion (and through keepPrevious when there is one)."""
    d.push(tag)
    d.tick(60)
    d.tick(60)
    d.tick(60)


# -- the machine ----------------------------------------------------------------------------------------------


def test_version_subsets_first_image_is_adopted_from_the_users_deployment_untouched() -> None:
    d = Driver(policy())

    out = d.push("v1")

    assert kinds(out.effects) == ["set-routes"] and routed(out.effects[0]) == ("v1", "", 100, 0)
    assert d.state.stable == version("v1")
    assert d.state.slots == (slots.Slot("v1", version("v1").image, "reviews-v1", "v1", "v1", owned=False),)


def test_version_subsets_release_creates_the_versions_deployment_and_moves_weight_between_subsets() -> None:
    d = started()

    out = d.push("v2")

    assert workloads(out.effects) == [("deploy-version", "reviews-v2")]
    deploy = out.effects[0]
    assert (deploy.source, deploy.image, deploy.slot.subset, deploy.slot.label) == (
        "reviews-v1",
        version("v2").image,
        "v2",
        "v2",
    )
    assert [routed(e) for e in out.effects[1:]] == [("v1", "v2", 100, 0), ("v1", "v2", 80, 20)]
    assert [s.subset for s in out.effects[-1].versions.subsets] == ["v1", "v2"]
    out = d.tick(60)
    assert [routed(e) for e in out.effects] == [("v1", "v2", 50, 50)]


def test_version_subsets_promotion_is_a_traffic_switch_and_the_old_deployment_is_scaled_down() -> None:
    d = started()
    d.push("v2")
    d.tick(60)

    out = d.tick(60)

    assert "promote-stable" not in kinds(out.effects) and "deploy-canary" not in kinds(out.effects)
    assert kinds(out.effects) == ["set-routes", "scale-down-version", "finalize-routes"]
    assert routed(out.effects[0]) == ("v2", "", 100, 0) and out.effects[1].slot.workload == "reviews-v1"
    assert d.state.stable == version("v2") and d.state.revisions == (version("v1"),)
    assert d.rel.phase == Phase.SUCCEEDED
    assert [s.workload for s in d.state.slots] == [
        "reviews-v2",
        "reviews-v1",
    ]  # v1 kept (at zero), retired last


def test_version_subsets_keep_previous_keeps_the_old_version_warm_on_the_route_then_scales_it_down() -> None:
    d = started(keep_previous=300)
    d.push("v2")
    d.tick(60)

    out = d.tick(60)

    assert kinds(out.effects) == ["set-routes"] and routed(out.effects[0]) == ("v2", "v1", 100, 0)
    assert d.rel.watching and d.state.warm == version("v1") and d.state.stable == version("v2")
    out = d.tick(300)
    assert kinds(out.effects) == ["set-routes", "scale-down-version", "finalize-routes"]
    assert routed(out.effects[0]) == ("v2", "", 100, 0) and out.effects[1].slot.workload == "reviews-v1"
    assert d.rel.phase == Phase.SUCCEEDED and d.state.warm is None


def test_version_subsets_next_release_creates_the_next_versions_deployment_from_the_stable_one() -> None:
    d = started()
    released(d, "v2")

    out = d.push("v3")

    deploy = out.effects[0]
    assert (deploy.kind, deploy.slot.workload, deploy.source) == (
        "deploy-version",
        "reviews-v3",
        "reviews-v2",
    )
    assert routed(out.effects[-1]) == ("v2", "v3", 80, 20)
    assert [s.subset for s in out.effects[-1].versions.subsets] == ["v2", "v1", "v3"]


def test_version_subsets_failed_analysis_returns_traffic_before_scaling_the_new_version_down() -> None:
    d = started(analysis=analysis())
    d.push("v2")
    d.tick(10, PASS)

    out = d.tick(10, FAIL)

    assert kinds(out.effects) == ["set-routes", "scale-down-version", "finalize-routes"]
    assert routed(out.effects[0]) == ("v1", "", 100, 0) and out.effects[1].slot.workload == "reviews-v2"
    assert d.rel.phase == Phase.ROLLED_BACK and d.state.stable == version("v1")
    assert "promote-stable" not in kinds(out.effects)


def test_version_subsets_rollback_during_the_watch_switches_to_the_warm_version() -> None:
    d = started(keep_previous=300)
    released(d, "v2")
    assert d.rel.watching

    out = d.command("rollback")

    assert kinds(out.effects) == [
        "set-routes",
        "scale-down-version",
        "finalize-routes",
    ]  # v1 still runs: no scale-up needed
    assert routed(out.effects[0]) == ("v1", "", 100, 0) and out.effects[1].slot.workload == "reviews-v2"
    assert d.state.stable == version("v1") and d.rel.phase == Phase.ROLLED_BACK


def test_version_subsets_rollback_after_the_release_scales_the_old_version_up_before_traffic_moves() -> None:
    d = started()
    released(d, "v2")

    out = d.command("rollback", version="v1")

    assert kinds(out.effects) == ["deploy-version", "set-routes", "scale-down-version", "finalize-routes"]
    assert out.effects[0].slot.workload == "reviews-v1" and not out.effects[0].slot.owned
    assert routed(out.effects[1]) == ("v1", "", 100, 0) and out.effects[2].slot.workload == "reviews-v2"
    assert d.state.stable == version("v1")


def test_version_subsets_roll_forward_keeps_the_new_deployment_and_sends_traffic_to_the_stable_subset() -> (
    None
):
    d = started(analysis=analysis(), rollback=RollbackMode.ROLL_FORWARD)
    d.push("v2")

    out = d.tick(10, FAIL)

    assert kinds(out.effects) == ["set-routes"] and routed(out.effects[0]) == ("v1", "v2", 100, 0)
    assert d.rel.phase == Phase.FROZEN
    out = d.push("v2.1")  # the fix: v2's Deployment goes, v2.1 gets its own
    assert workloads(out.effects) == [
        ("scale-down-version", "reviews-v2"),
        ("deploy-version", "reviews-v2-1"),
    ]


def test_version_subsets_retired_deployments_beyond_keep_retired_are_deleted_never_the_users() -> None:
    d = started(workload=replace(PER_VERSION, keep_retired=1))
    for tag in ("v2", "v3"):
        released(d, tag)
    assert [s.workload for s in d.state.slots] == ["reviews-v1", "reviews-v3", "reviews-v2"]  # by last use

    d.push("v4")
    d.tick(60)
    out = d.tick(60)

    assert workloads(out.effects) == [("scale-down-version", "reviews-v3"), ("delete-version", "reviews-v2")]
    assert [s.workload for s in d.state.slots] == ["reviews-v1", "reviews-v4", "reviews-v3"]
    assert [s.subset for s in d.state.routed.subsets] == ["v1", "v4", "v3"]  # the router drops subset v2
    assert d.state.history[-1].action == "succeeded" and "pruned" in [h.action for h in d.state.history]


def test_version_subsets_a_tag_the_users_deployment_runs_is_never_re_imaged() -> None:
    d = started()
    released(d, "v2")

    rebuilt = replace(version("v1"), image=version("v1").image + "@sha256:" + "a" * 64)
    out = d.send(replace(push("team-a/web", "v1"), id="rebuilt-v1", target=rebuilt))

    assert not out.effects and "never re-images" in out.events[0].data["reason"]


def test_version_subsets_a_push_of_the_stable_tag_during_a_release_ends_it_and_starts_none() -> None:
    """Found by the property test: it used to start a release from v2's Deployment to itself, whose rollback
    then scaled the stable version's Deployment down."""
    d = started()
    released(d, "v2")
    d.push("v3")

    out = d.push("v2")

    assert kinds(out.effects) == ["set-routes", "scale-down-version", "finalize-routes"]
    assert routed(out.effects[0]) == ("v2", "", 100, 0) and out.effects[1].slot.workload == "reviews-v3"
    assert d.rel.phase == Phase.SUPERSEDED and d.rel.target == version("v3") and d.state.seq == 2
    assert "the stable version, which keeps running in its own Deployment" in d.rel.reason


def test_version_subsets_two_tags_with_one_deployment_name_are_refused() -> None:
    d = started()
    released(d, "v2.0")

    out = d.push("v2-0")

    assert not out.effects
    assert (
        "would run in Deployment reviews-v2-0 with subset v2-0, which version v2.0 has"
        in out.events[0].data["reason"]
    )


def test_version_subsets_slug_and_label_value_follow_the_tag() -> None:
    assert [slots.slug(v) for v in ("v2", "v1.2.0", "1.17.0", "V2_rc")] == ["v2", "v1-2-0", "1-17-0", "v2-rc"]
    assert slots.label_value("v1.2.0") == "v1.2.0" and slots.label_value("sha256:ab") == "sha256-ab"
    long = "x" * 80
    assert len(slots.slug(long)) == 63 and slots.slug(long) != slots.slug(long + "y")
    assert slots.template_version("reviews-{version}", "reviews-v1") == "v1"
    assert slots.template_version("reviews-{version}", "ratings-v1") == ""


# -- the runner with the recording providers ------------------------------------------------------------------


def test_version_subsets_runner_never_re_images_a_deployment_and_routes_by_subset() -> None:
    pol = replace(
        policy(keep_previous=120),
        name="reviews",
        namespace="bookinfo",
        image=replace(policy().image, repository="registry.example.com/reviews"),
    )
    providers, store, clock = RecordingProviders(), MemoryStore(), Clock()
    runner = Runner(store, StaticPolicies([pol]), providers, clock=clock)

    def state() -> AppState:
        doc, _ = store.load(pol.app)
        return AppState.from_json(doc)

    runner.handle(push(pol.app, "v1"))
    for tag in ("v2", "v3"):
        runner.handle(push(pol.app, tag))
        for _ in range(4):
            clock.advance(121)
            runner.handle(tick(pol.app))
        assert state().release.phase == Phase.SUCCEEDED and not state().pending

    wl, key = providers.workloads_, "/bookinfo/reviews-"
    assert wl.images == {
        f"{key}v2": "",
        f"{key}v3": "registry.example.com/reviews:v3",
        f"{key}v1": "",
    } or wl.images == {f"{key}v1": "", f"{key}v2": "", f"{key}v3": "registry.example.com/reviews:v3"}
    assert "promote_stable" not in [c[0] for c in providers.log.calls]  # the pair model's re-image never runs
    deployed = [(c[1], c[2]) for c in providers.log.calls if c[0] == "deploy_version"]
    assert deployed == [
        (f"{key}v2", "registry.example.com/reviews:v2"),
        (f"{key}v3", "registry.example.com/reviews:v3"),
    ]
    versions = providers.router_.versions[f"/bookinfo/{pol.name}"]
    assert (versions.stable.subset, versions.canary) == ("v3", None)
    assert providers.router_.routes[f"/bookinfo/{pol.name}"] == STABLE_ONLY
    runner.handle(command(pol.app, "rollback", version="v2", release=state().release.id))
    assert state().stable.version == "v2" and wl.images[f"{key}v2"] == "registry.example.com/reviews:v2"
    assert wl.images[f"{key}v3"] == ""


# -- the policy ------------------------------------------------------------------------------------------------

WORKLOAD = {"name": "reviews-v1", "model": "per-version", "nameTemplate": "reviews-{version}"}


def doc(workload: dict[str, Any], router: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return base(
        workload=workload, router=router or {"provider": "istio", "virtualService": "reviews"}, **spec
    )


def test_version_subsets_policy_round_trips_and_takes_the_first_subset_from_the_name() -> None:
    pol = parse_policy(doc(WORKLOAD))

    assert pol.workload == replace(PER_VERSION, subset="v1")
    assert parse_policy(to_doc(pol)) == pol


@pytest.mark.parametrize(
    ("workload", "router", "path", "says"),
    [
        (
            {**WORKLOAD, "canary": "reviews-v2"},
            None,
            "spec.workload.canary",
            "not allowed with model per-version",
        ),
        ({**WORKLOAD, "nameTemplate": "reviews"}, None, "spec.workload.nameTemplate", "with {version} once"),
        ({**WORKLOAD, "nameTemplate": "Reviews-{version}"}, None, "spec.workload.nameTemplate", "lower-case"),
        ({"name": "reviews-v1", "model": "per-version"}, None, "spec.workload.nameTemplate", "is required"),
        (
            {"model": "per-version", "nameTemplate": "reviews-{version}"},
            None,
            "spec.workload.name",
            "is required",
        ),
        (
            {**WORKLOAD, "name": "reviews"},
            None,
            "spec.workload.subset",
            "reviews is not named by nameTemplate",
        ),
        (
            {**WORKLOAD, "versionLabel": "not a key!"},
            None,
            "spec.workload.versionLabel",
            "a Kubernetes label key",
        ),
        ({**WORKLOAD, "keepRetired": 21}, None, "spec.workload.keepRetired", "0..20"),
        ({**WORKLOAD, "model": "per-subset"}, None, "spec.workload.model", "one of pair, per-version"),
        (
            {"name": "reviews-v1", "subset": "v1"},
            None,
            "spec.workload.subset",
            "only allowed with model per-version",
        ),
        (WORKLOAD, {"provider": "traefik"}, "spec.workload.model", "router traefik routes to fixed Services"),
        (WORKLOAD, {"provider": "istio", "canarySubset": "v2"}, "spec.router.canarySubset", "named after it"),
    ],
)
def test_version_subsets_policy_errors_name_the_field(
    workload: dict[str, Any], router: dict[str, Any] | None, path: str, says: str
) -> None:
    found = [p for p in problems(doc(workload, router)) if p[0] == path]
    assert found and says in found[0][1], problems(doc(workload, router))


def test_version_subsets_policy_refuses_waves() -> None:
    waves = [{"name": "one", "cluster": "a"}, {"name": "two", "cluster": "b"}]
    assert (
        "spec.waves",
        "is not supported with workload.model per-version yet; expected no waves",
    ) in problems(doc(WORKLOAD, waves=waves))


def test_version_subsets_seed_003_example_runs_one_deployment_per_version() -> None:
    from tests.unit.test_policy_parse import EXAMPLES

    bookinfo = next(p for p in EXAMPLES if p.name == "istio-bookinfo.yaml")
    import yaml

    pol = parse_policy(yaml.safe_load(bookinfo.read_text()))
    assert pol.workload.per_version and pol.workload.name == "reviews-v1" and pol.workload.subset == "v1"
    assert slots.workload_name(pol.workload.name_template, "v2") == "reviews-v2"


# -- the Kubernetes body of a version's Deployment -------------------------------------------------------------


def _source() -> dict[str, Any]:
    labels = {"app": "reviews", "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "reviews-v1",
            "namespace": "bookinfo",
            "labels": {**labels, "app.kubernetes.io/version": "v1"},
            "annotations": {"team": "web", "deployment.kubernetes.io/revision": "3"},
            "resourceVersion": "42",
            "uid": "u-1",
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "bookinfo-reviews",
                    "containers": [
                        {"name": "reviews", "image": "r:v1", "env": [{"name": "LOG_DIR", "value": "/tmp"}]},
                    ],
                },
            },
        },
        "status": {"replicas": 3},
    }


def _target() -> Any:
    from functions.providers.workloads.base import WorkloadTarget

    return WorkloadTarget(
        "bookinfo", "reviews", "reviews-v1", "", container="reviews", version_label="version"
    )


def test_version_subsets_version_deployment_is_the_stable_spec_with_the_new_image_and_version() -> None:
    from functions.providers.workloads.kubernetes import version_deployment

    source = _source()
    before = copy.deepcopy(source)
    body = version_deployment(source, slots.new_slot("reviews-{version}", "v2.1", "r:v2.1"), _target(), 3)

    assert source == before  # the stable's object is not touched
    meta, spec = body["metadata"], body["spec"]
    assert (meta["name"], meta["namespace"]) == ("reviews-v2-1", "bookinfo") and "resourceVersion" not in meta
    assert meta["labels"] == {
        "app": "reviews",
        "version": "v2.1",
        "app.kubernetes.io/version": "v2.1",
        "graylane.dev/app": "reviews",
        "app.kubernetes.io/managed-by": "graylane",
    }
    assert meta["annotations"] == {
        "team": "web",
        "graylane.dev/derived-from": "reviews-v1",
        "graylane.dev/version": "v2.1",
    }
    assert spec["selector"] == {"matchLabels": {"app": "reviews", "version": "v2.1"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "reviews", "version": "v2.1"}
    assert spec["template"]["spec"] == {
        "serviceAccountName": "bookinfo-reviews",
        "containers": [{"name": "reviews", "image": "r:v2.1", "env": [{"name": "LOG_DIR", "value": "/tmp"}]}],
    }
    assert spec["replicas"] == 3 and "status" not in body


def test_version_subsets_a_stable_selector_without_the_version_label_is_refused() -> None:
    from functions.errors import ConfigError
    from functions.providers.workloads.kubernetes import version_deployment

    source = _source()
    source["spec"]["selector"] = {"matchLabels": {"app": "reviews"}}

    with pytest.raises(
        ConfigError, match=r"selector .* has no version label; each version's Deployment must"
    ):
        version_deployment(source, slots.new_slot("reviews-{version}", "v2", "r:v2"), _target(), 1)


def test_version_subsets_kubernetes_events_are_about_the_versions_deployment() -> None:
    from functions.core import events as ev
    from functions.core.state import Release
    from functions.observability.kube_events import KubeEventRecorder

    slot = slots.new_slot("reviews-{version}", "v2", "r:v2")
    release = Release(
        id="reviews-2", seq=2, target=version("v2"), origin=version("v1"), started_at="x", target_slot=slot
    )
    recorder = KubeEventRecorder(api_client=None, instance="pod-1")
    body = recorder.body(
        policy(), release, ev.RELEASE_PROMOTED, "ReleasePromoted", "ok", generation=3, index=0
    )

    assert body["involvedObject"]["name"] == "reviews-v2" and body["metadata"]["name"].startswith(
        "reviews-v2."
    )
