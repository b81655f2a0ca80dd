"""A flag stage's document in a ConfigMap (spec.flags.configMap) on the real apiserver, read by the real
OpenFeature SDK's flagd provider (in-process, on the key's text as the kubelet mounts it into a pod).

graylane changes only its flag: the key's other flags keep their bytes, and so do the ConfigMap's other keys,
labels and annotations. The write is an update carrying the resourceVersion read (graylane's RBAC grants no
patch on ConfigMaps), so a lost race is a ConflictError and the user's edit survives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from functions.core.effects import FlagPlan
from functions.core.policy import FlagSource
from functions.core.targeting import flag_variant
from functions.errors import ConflictError
from functions.providers.flags import flag_store
from functions.providers.flags.configmap import ConfigMapFlags
from functions.providers.flags.flagd import with_plan
from functions.providers.kube import client_from
from tests.real.flagd import Sdk, until

pytestmark = pytest.mark.k8s
USERS = [f"user-{i:04d}" for i in range(5000)]
# the user's document: their own flag, their own layout (two-space indent, a key order of their own)
USERS_DOC = """{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "theme": {
      "variants": {"light": "light", "dark": "dark"},
      "defaultVariant": "light",
      "state": "ENABLED"
    }
  }
}
"""


@pytest.fixture(name="api")
def api_fixture(kube: Any) -> Iterator[Any]:
    with client_from(kube.configuration) as api_client:
        yield api_client


def plan(percent: int) -> FlagPlan:
    return FlagPlan(
        key="new-checkout",
        variant="on",
        off="off",
        percent=percent,
        salt="new-checkout",
        release="shop-1",
        variants=(("on", True), ("off", False)),
    )


def test_feature_flag_configmap_changes_only_graylanes_flag_and_the_sdk_serves_each_step(
    api: Any, ns: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        ns,
        {
            "metadata": {"name": "flags", "labels": {"team": "shop"}, "annotations": {"owner": "shop-team"}},
            "data": {"flags.json": USERS_DOC, "other.yaml": "keep: me\n  # as it is\n"},
        },
    )
    store = flag_store(FlagSource(config_map="flags", key="flags.json"), ns, api)
    assert isinstance(store, ConfigMapFlags)
    mounted = tmp_path / "flags.json"  # what the kubelet puts in the pod's volume
    mounted.write_text(USERS_DOC)
    sdk = Sdk(mounted)
    try:
        text = USERS_DOC
        for percent in (5, 25, 50, 100, 0):  # 0: the rollback, the variant off for everyone
            store.set_flag(plan(percent))
            cm = core.read_namespaced_config_map("flags", ns)
            text, expected = cm.data["flags.json"], with_plan(text, plan(percent), "")
            assert text == expected  # exactly the file store's edit: the user's flag keeps its bytes
            assert '"theme": {\n      "variants": {"light": "light", "dark": "dark"},' in text
            assert cm.data["other.yaml"] == "keep: me\n  # as it is\n"
            assert cm.metadata.labels == {"team": "shop"} and cm.metadata.annotations == {
                "owner": "shop-team"
            }
            version = cm.metadata.resource_version
            store.set_flag(plan(percent))  # the retried effect: nothing written
            assert core.read_namespaced_config_map("flags", ns).metadata.resource_version == version
            mounted.write_text(text)
            want = {u: flag_variant(u, "new-checkout", percent, "on", "off") for u in USERS}

            def serves(want: dict[str, str] = want) -> dict[str, str] | None:
                got = sdk.variants("new-checkout", USERS)
                return got if got == want else None

            got = until(serves, 10, f"the SDK serving the {percent} % document")
            share = 100 * sum(v == "on" for v in got.values()) / len(USERS)
            assert abs(share - percent) <= 2, (percent, share)
            assert sdk.client.get_string_value("theme", "unset") == "light"  # the user's flag still serves
    finally:
        sdk.close()


def test_feature_flag_configmap_a_lost_race_is_a_conflict_and_a_missing_configmap_is_created(
    api: Any, ns: str
) -> None:
    core = client.CoreV1Api(api)
    store = ConfigMapFlags(api, ns, "flags", "flags.json")
    store.set_flag(plan(5))  # no ConfigMap yet: created, labelled graylane's
    cm = core.read_namespaced_config_map("flags", ns)
    assert cm.metadata.labels == {"app.kubernetes.io/managed-by": "graylane", "graylane.dev/role": "flags"}
    assert store.live((plan(5),)) == (plan(5),)

    read = store._get
    stale = read()

    def edited_meanwhile() -> dict[str, Any] | None:  # someone edits between graylane's read and its write
        core.patch_namespaced_config_map("flags", ns, {"data": {"notes.txt": "a user's edit"}})
        store._get = read  # type: ignore[method-assign]
        return stale

    store._get = edited_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="resourceVersion .* moved on"):
        store.set_flag(plan(25))
    cm = core.read_namespaced_config_map("flags", ns)
    assert cm.data["notes.txt"] == "a user's edit" and store.live((plan(5),)) == (plan(5),)
    store.set_flag(plan(25))  # the retry reads anew and keeps the user's edit
    cm = core.read_namespaced_config_map("flags", ns)
    assert cm.data["notes.txt"] == "a user's edit" and store.live((plan(25),)) == (plan(25),)
